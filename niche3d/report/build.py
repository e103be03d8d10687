"""``niche3d report``: one self-contained HTML page of a run, built from the analysis
functions (:mod:`niche3d.analysis`), their figures (:mod:`niche3d.report.figures`) and
the validation (:func:`niche3d.analysis.validate`).

A section whose analysis does not apply to the run (no fields stored, a store written
before niche sites, a run too short for the burn-in of the validation) says why in one
line instead of a figure; everything else is drawn from the run itself.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from niche3d.report.html import Plot, Section, figure_png, render_page, table_html

__all__ = ["make_report", "intervention_marks", "check_report_args"]


def intervention_marks(scenario: Any) -> list[tuple[float, str]]:
    """``(day, kind)`` of every dose, start or event of the scenario's interventions (the
    ``day``, ``*_day`` and ``*_days`` values of each; a course of ``doses`` daily doses from
    ``start_day`` gives one mark a day), for the dotted lines on time plots."""
    marks: list[tuple[float, str]] = []
    for iv in getattr(scenario, "interventions", []) or []:
        doc = iv.model_dump()
        kind = str(doc.get("kind", type(iv).__name__))
        for key, value in doc.items():
            if isinstance(value, bool):
                continue
            if (key == "day" or key.endswith("_day")) and isinstance(value, int | float):
                if key == "start_day" and isinstance(doc.get("doses"), int):
                    marks.extend((float(value) + i, kind) for i in range(doc["doses"]))
                else:
                    marks.append((float(value), kind))
            elif key.endswith("_days") and isinstance(value, list):
                marks.extend((float(v), kind) for v in value if isinstance(v, int | float))
    return sorted(set(marks))


def check_report_args(run: Any, out: str | os.PathLike[str], *, skip_days: float, n_random: int) -> Path:
    """Check what :func:`make_report` is given before any work; returns the output path.

    Raises
    ------
    ValueError
        Naming the argument, the value and what is allowed.
    """
    dest = Path(out)
    if dest.is_dir():
        raise ValueError(f"{dest} is a directory; give the HTML file to write (e.g. {dest / 'report.html'})")
    if not dest.parent.is_dir():
        raise ValueError(f"{dest.parent} does not exist; make it first or write the report elsewhere")
    if isinstance(skip_days, bool) or not (isinstance(skip_days, int | float) and math.isfinite(skip_days)
                                           and skip_days >= 0):
        raise ValueError(f"skip_days must be a number >= 0, got {skip_days!r}")
    if isinstance(n_random, bool) or not (isinstance(n_random, int) and n_random >= 10):
        raise ValueError(f"n_random must be an integer >= 10, got {n_random!r}")
    if run.n_records < 2:
        raise ValueError(f"{run.path} has {run.n_records} record(s); a report needs at least 2 "
                         "(a time course)")
    return dest


def _guarded(section: Section, build: Callable[[Section], None]) -> Section:
    """Fill ``section`` with ``build``; an analysis that does not apply to this run (a
    ValueError from :mod:`niche3d.analysis`) leaves one line saying why."""
    try:
        build(section)
    except ValueError as exc:
        section.figures.clear()
        section.tables.clear()
        section.notes.append(f"Not available for this run: {exc}")
    return section


def _fmt_table(df: Any, **kw: Any) -> str:
    return table_html(df.reset_index(), **kw)


def make_report(
    run: Any,
    out: str | os.PathLike[str],
    *,
    skip_days: float = 7.0,
    n_random: int = 1000,
    seed: int = 0,
) -> Path:
    """Write the HTML report of a run store to ``out`` (atomically) and return its path.

    Parameters
    ----------
    run
        A run store path or :class:`niche3d.io.Run`.
    out
        The HTML file to write (its directory must exist).
    skip_days
        Burn-in of the validation's homeostasis targets (days).
    n_random
        Random sets of the localisation null band and random voxels of the field sampling.
    seed
        Seed of those random draws (the report is the same for the same run and seed).

    Raises
    ------
    niche3d.io.StoreError
        ``run`` is not a readable run store.
    ValueError
        ``out``'s directory does not exist or is a directory, or a parameter is out of range.

    Examples
    --------
    >>> from niche3d.report import make_report
    >>> make_report("runs/homeostasis.zarr", "report.html")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from niche3d.io import Run, open_run
    from niche3d.io._atomic import atomic_write_bytes
    from niche3d.report import figures as F

    if not isinstance(run, Run):
        run = open_run(run)
    dest = check_report_args(run, out, skip_days=skip_days, n_random=n_random)
    marks = intervention_marks(run.scenario)
    with plt.rc_context(F._RC):
        sections = _sections(run, marks, skip_days=skip_days, n_random=n_random, seed=seed)
    sc = run.scenario
    meta = {
        "run store": str(run.path),
        "scenario": f"{sc.name}: {sc.description}".rstrip(": "),
        "seed": run.seed,
        "code version": run.code_version,
        "store format": run.format_version,
        "lattice": f"{' x '.join(map(str, run.shape))} voxels of {run.voxel_um:g} µm",
        "records": f"{run.n_records}, every {run.record_hours:g} h (day 0 to "
                   f"{float(run.times_h[-1]) / 24:.4g})",
        "interventions": ", ".join(iv.kind for iv in sc.interventions) or "none",
        "report written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if run.failure is not None:
        meta["FAILED"] = str(run.failure.get("message", run.failure))
    page = render_page(f"niche3d run report: {sc.name}", "Every figure and table below is computed "
                       "from the run store by niche3d.analysis; docs/analysis.md explains each.",
                       meta, sections)
    atomic_write_bytes(dest, page.encode("utf-8"))
    return dest


def _sections(run: Any, marks: list[tuple[float, str]], *, skip_days: float, n_random: int,
              seed: int) -> list[Section]:
    from niche3d.analysis import (
        circulating_counts,
        clone_sizes,
        distance_distributions,
        division_modes,
        field_at_cells,
        lineage_tree,
        state_fractions,
    )
    from niche3d.report import figures as F

    out: list[Section] = []

    def localisation(s: Section) -> None:
        dd = distance_distributions(run, records="last", n_random=n_random, seed=seed)
        s.figures.append(Plot("fig-localisation", "Cumulative distance of the HSCs of the last "
                              "record to each structure's wall, against uniform placement on the "
                              "marrow voxels of the same geometry (exact, dashed) and its 95 % band "
                              "for random sets of as many points.", figure_png(F.fig_distances(dd))))
        cols = [c for c in ("present", "n_cells", "median_um", "null_median_um", "ks_statistic", "p_value",
                            "share_within", "null_share_within", "enrichment") if c in dd.summary.columns]
        s.tables.append(_fmt_table(dd.summary[cols], text_columns=("structure",)))

    out.append(_guarded(Section("localisation", "Localisation against random placement"), localisation))

    def fractions(s: Section) -> None:
        by = ["state", "phase", "zone"] + (["location"] if run.has_niche else [])
        fr = state_fractions(run, by=tuple(by))
        s.figures.append(Plot("fig-fractions", "Fractions of the HSCs in the block by state, cycle "
                              "phase, location and nearest structure, with Wilson 95 % intervals.",
                              figure_png(F.fig_fractions(fr))))

    out.append(_guarded(Section("fractions", "State and cycle fractions over time"), fractions))

    def divisions(s: Section) -> None:
        dm = division_modes(run)
        if int(dm.overall["count"].sum()) == 0:
            raise ValueError("no HSC divided in this run")
        s.figures.append(Plot("fig-divisions", "Divisions by outcome (both daughters' fates) per "
                              "record interval, and their shares over the run.",
                              figure_png(F.fig_division_modes(dm))))
        s.tables.append(_fmt_table(dm.overall, text_columns=("mode",)))

    out.append(_guarded(Section("divisions", "Division modes"), divisions))

    def occupancy(s: Section) -> None:
        s.figures.append(Plot("fig-occupancy", "Niche sites held by HSCs, taken by other cells or "
                              "free, and the share of each site kind held by an HSC.",
                              figure_png(F.fig_niche_occupancy(run.metrics, marks))))

    out.append(_guarded(Section("occupancy", "Niche occupancy"), occupancy))

    def blood(s: Section) -> None:
        cc = circulating_counts(run)
        s.figures.append(Plot("fig-blood", "HSCs in the blood of the whole mouse and their flows "
                              "(egress, homing, clearance), with the egress and homing events of the "
                              "block; dotted lines: intervention days.",
                              figure_png(F.fig_circulating(cc, marks))))

    out.append(_guarded(Section("blood", "Mobilization and blood"), blood))

    def lineage(s: Section) -> None:
        s.figures.append(Plot("fig-output", "MPP output of the niche and mature output per lineage.",
                              figure_png(F.fig_lineage_output(run.metrics, marks))))
        cs = clone_sizes(run)
        s.figures.append(Plot("fig-clones", "Clone sizes of the founders at the last record, and the "
                              "share of founders whose clone still holds an HSC.",
                              figure_png(F.fig_clone_sizes(cs))))
        tree = lineage_tree(run)
        size = tree.nodes.groupby("founder").size().rename("tracks").reset_index()
        big = [int(f) for f in size.sort_values(["tracks", "founder"], ascending=[False, True]).founder[:3]]
        if big:
            s.figures.append(Plot("fig-lineage", "Track trees of the founders with the most tracks.",
                                  figure_png(F.fig_lineage(tree, big, float(run.times_h[-1])))))

    out.append(_guarded(Section("lineage", "Lineage output and clones"), lineage))

    def fields(s: Section) -> None:
        names = [n for n in run.field_names]
        if not names:
            raise ValueError("the run stored no fields (output.fields = false)")
        samples = {n: field_at_cells(run, n, n_random=n_random, seed=seed) for n in names}
        s.figures.append(Plot("fig-fields", "Each field at the HSCs against random marrow voxels: "
                              "median and interquartile range per record, and the distributions at "
                              "the last record.", figure_png(F.fig_fields(samples))))

    out.append(_guarded(Section("fields", "Field profiles at HSCs against random points"), fields))

    def geometry(s: Section) -> None:
        import pandas as pd

        from niche3d.tissue.lattice import Lattice
        from niche3d.tissue.stats import geometry_report

        lattice = Lattice(np.asarray(run.tissue[0]), run.voxel_um)
        rows = geometry_report(lattice, run.scenario.tissue)
        df = pd.DataFrame(rows, columns=["statistic", "measured", "target", "unit"])
        s.tables.append(table_html(df, text_columns=("statistic", "unit")))
        s.intro = "The tissue of the first record, measured beside the scenario's [tissue] targets."

    out.append(_guarded(Section("geometry", "Geometry statistics"), geometry))

    def validation(s: Section) -> None:
        from niche3d.analysis import validate

        v = validate(run, skip_days=skip_days)
        t = v.table.reset_index()
        cols = [c for c in ("key", "item", "simulated", "ci_low", "ci_high", "low", "high", "unit", "status",
                            "source", "note") if c in t.columns]
        s.intro = f"Every calibration target of BIOLOGY.md sections 6 and 7: {v.summary()}."
        s.tables.append(table_html(t[cols], text_columns=("key", "item", "unit", "status", "source", "note"),
                                   row_class="status", status_column="status"))

    out.append(_guarded(Section("validation", "Validation against the calibration targets"), validation))

    scen = Section("scenario", "Scenario and code version")
    scen.intro = (f"niche3d {run.code_version}, seed {run.seed}. The full scenario as stored in the run "
                  "(rerun it with: niche3d run SCENARIO.toml):")
    scen.tables.append(f"<pre>{html.escape(run.scenario_toml)}</pre>")
    out.append(scen)
    return out
