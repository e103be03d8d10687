"""Figures and docs/analysis.md: every niche3d.analysis function on a full-size default run.

Runs the default homeostasis scenario (scenarios/homeostasis.toml: 384 x 768 x 768 µm,
30 days; seconds to a minute on 2 cores) into a run store under /tmp, or opens an existing store
with ``--store``, then calls each analysis function on it and writes

* ``docs/img/analysis_distances.png`` (:func:`distance_distributions`),
* ``docs/img/analysis_fractions.png`` (:func:`state_fractions`),
* ``docs/img/analysis_division_modes.png`` (:func:`division_modes`),
* ``docs/img/analysis_clone_sizes.png`` (:func:`clone_sizes`),
* ``docs/img/analysis_lineage_tree.png`` (:func:`lineage_tree`),
* ``docs/img/analysis_circulating.png`` (:func:`circulating_counts`),
* ``docs/img/analysis_field_at_cells.png`` (:func:`field_at_cells`),

and ``docs/analysis.md`` with each call, the first rows of its table and its figure.

Usage::

    NICHE3D_CACHE_DIR=/tmp/femur-cache .venv/bin/python tools/analysis_figures.py
    .venv/bin/python tools/analysis_figures.py --store /tmp/niche3d-analysis/homeostasis.zarr
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from niche3d.analysis.dynamics import (  # noqa: E402
    circulating_counts,
    division_modes,
    state_fractions,
)
from niche3d.analysis.lineage import clone_sizes, lineage_tree  # noqa: E402
from niche3d.analysis.sampling import field_at_cells  # noqa: E402
from niche3d.analysis.source import as_source  # noqa: E402
from niche3d.analysis.spatial import distance_distributions  # noqa: E402
from niche3d.io import open_run  # noqa: E402
from niche3d.report import figures as F  # noqa: E402

plt.rcParams.update(F._RC)


def run_default(out: Path) -> float:
    """The default homeostasis scenario (as ``niche3d run scenarios/homeostasis.toml``)."""
    from niche3d.scenario import load_scenario
    from niche3d.simulation import Simulation

    sc = load_scenario(ROOT / "scenarios" / "homeostasis.toml")
    t0 = time.perf_counter()
    with Simulation(sc, out, overwrite=True) as sim:
        sim.run(progress=True)
    return time.perf_counter() - t0


def md_table(df: pd.DataFrame, *, index: bool = False, digits: int = 3) -> str:
    """A small markdown table (numbers to ``digits`` significant digits)."""
    if index:
        df = df.reset_index()

    def fmt(v: object) -> str:
        if isinstance(v, bool | np.bool_):
            return str(bool(v))
        if isinstance(v, int | np.integer):
            return str(int(v))
        if isinstance(v, float | np.floating):
            if not math.isfinite(v):
                return "nan" if math.isnan(v) else str(v)
            return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


# ----------------------------------------------------------------------------- figures
def save(fig, path: Path) -> None:
    """Write one of niche3d.report.figures' figures (the HTML report draws the same)."""
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="an existing run store (default: run one)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/niche3d-analysis/homeostasis.zarr"),
                    help="where to write the run when --store is not given")
    ap.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "analysis.md")
    a = ap.parse_args(argv)
    store = a.store
    if store is None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        print(f"running scenarios/homeostasis.toml into {a.out} ...", flush=True)
        print(f"ran in {run_default(a.out):.0f} s")
        store = a.out
    run = open_run(store)
    a.img_dir.mkdir(parents=True, exist_ok=True)
    img = {k: a.img_dir / f"analysis_{k}.png" for k in
           ("distances", "fractions", "division_modes", "clone_sizes", "lineage_tree",
            "circulating", "field_at_cells")}
    timing = {}

    def timed(key: str, fn, *args, **kw):
        """``fn(src, ...)`` on a freshly opened store, timed: tables read from disk."""
        t0 = time.perf_counter()
        out = fn(open_run(store), *args, **kw)
        timing[key] = time.perf_counter() - t0
        return out

    dd = timed("distance_distributions", distance_distributions, records="last", seed=0)
    save(F.fig_distances(dd), img["distances"])
    fr = timed("state_fractions", state_fractions, by=("state", "phase", "location", "zone"))
    save(F.fig_fractions(fr), img["fractions"])
    dm = timed("division_modes", division_modes)
    save(F.fig_division_modes(dm), img["division_modes"])
    cs = timed("clone_sizes", clone_sizes)
    save(F.fig_clone_sizes(cs), img["clone_sizes"])
    tree = timed("lineage_tree", lineage_tree)
    # the three founders with the most tracks (daughters that died or left included)
    size = tree.nodes.groupby("founder").size().rename("tracks").reset_index()
    big = [int(f) for f in size.sort_values(["tracks", "founder"], ascending=[False, True]).founder[:3]]
    save(F.fig_lineage(tree, big, float(run.times_h[-1])), img["lineage_tree"])
    sub = lineage_tree(run, root=big[0])
    cc = timed("circulating_counts", circulating_counts)
    save(F.fig_circulating(cc), img["circulating"])
    fs = {"cxcl12": timed("field_at_cells", field_at_cells, "CXCL12", seed=0),
          "scf": field_at_cells(run, "SCF", seed=0)}
    save(F.fig_fields(fs), img["field_at_cells"])
    write_doc(a.doc, run=run, src=as_source(run), dd=dd, fr=fr, dm=dm, cs=cs, big=big, sub=sub, cc=cc, fs=fs,
              timing=timing, img=img)
    for k, v in timing.items():
        print(f"{k:24s} {v:6.2f} s")
    print(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in img.values())} and {a.doc}")
    return 0


def write_doc(path: Path, *, run, src, dd, fr, dm, cs, big, sub, cc, fs, timing, img) -> None:
    """docs/analysis.md from the results (numbers in the text come from this run)."""
    rel = {k: f"img/{p.name}" for k, p in img.items()}
    s = dd.summary
    last_r = int(src.n_records - 1)
    f_last = fr[fr.record == last_r]
    phase = f_last[f_last["by"] == "phase"].set_index("category")
    loc = f_last[f_last["by"] == "location"].set_index("category")
    o = dm.overall
    cl = cs[cs.record == last_r]
    c = fs["cxcl12"].summary.iloc[-1]
    sc = fs["scf"].summary.iloc[-1]
    days = float(src.times_h[-1]) / 24
    n_hsc = int(s.loc["sinusoid", "n_cells"])
    cols_dd = ["present", "n_cells", "median_um", "null_median_um", "median_ratio", "ks_statistic",
               "p_value", "share_within", "null_share_within", "enrichment"]
    ecdf = dd.ecdf[dd.ecdf.structure == "sinusoid"].head(4)
    txt = f"""# Analysis functions

`niche3d.analysis` measures runs the way the biology is measured: where the HSCs sit
against random placement, which states and places they are in over time, how they divide,
which founders' clones persist, how many circulate, and which signals they sit in. Every
function takes a run store (`niche3d.open_run(path)` or the path itself), a live
`niche3d.Simulation`, or a `Source` made from arrays (`Source.from_arrays(lattice, cells,
...)`, e.g. segmented imaging), and returns pandas tables with units in the column names
(`_um`, `_hours`, `_per_day`, ...) and in `df.attrs["units"]`.

Every table and figure below comes from the default homeostasis run
(`scenarios/homeostasis.toml`: a 384 x 768 x 768 µm block, {src.n_records} daily records,
{days:.0f} days; {n_hsc} HSCs at the end), regenerated by

```bash
NICHE3D_CACHE_DIR=/tmp/femur-cache .venv/bin/python tools/analysis_figures.py
```

(`--store RUN` to use an existing run). Each function took under
{math.ceil(max(timing.values()))} s on this run, reading the store from disk.

## Runs, live simulations and time points

A run store gives one time point per record. A live `Simulation` with a store gives its
committed records, plus its current state as one more time point when it is between
records; on a record (after `sim.run()`) it gives exactly what `open_run(path)` gives. An
in-memory `Simulation` (no store) is one time point, its current state, but it keeps
every event since set-up, so division modes, clones and lineage trees cover its whole
run. Reading a live simulation never drains its pending events (the store still gets them).
`records=` takes `"all"`, `"last"`, an index (negative from the end) or a list; a wrong
structure, state, field, grouping or record is a `ValueError` naming the argument, what
is allowed and what was given. A record without HSCs gives counts of 0 and NaN fractions.

## Distances to sinusoids, endosteum and arterioles

```python
from niche3d.analysis import distance_distributions
dd = distance_distributions(run, records="last", n_random=1000, seed=0)
dd.summary        # one row per structure: medians, KS statistic and p-value, shares within 10 µm
dd.ecdf           # ECDF of the HSCs, exact null CDF and its 95 % band, for plotting
dd.histogram      # the same as shares per bin; dd.distances: one row per cell
```

The distance is from the cell's centre to the structure's wall (the surface of its
nearest voxel), as in `localisation_table` and the calibration. The null is uniform
placement on the enterable (marrow and stroma) voxels of the same geometry: its CDF is
exact, and its band is the pointwise 95 % envelope of the ECDFs of `n_random` random
sets of as many points as there are HSCs per record. `p_value` is a Monte-Carlo KS test
(the share of random sets at least as far from the null as the HSCs, exact with the
lattice's tied distances); with several records pooled the sample counts as one record's
worth of cells.

{md_table(s[cols_dd], index=True)}

{md_table(ecdf)}

![HSC distance ECDFs against the random-placement null]({rel["distances"]})

{s.loc["sinusoid", "share_within"]:.0%} of the HSCs sit within 10 µm of a sinusoid wall,
against {s.loc["sinusoid", "null_share_within"]:.0%} of random marrow voxels: a median of
{s.loc["sinusoid", "median_um"]:.0f} µm against {s.loc["sinusoid", "null_median_um"]:.0f} µm,
KS D = {s.loc["sinusoid", "ks_statistic"]:.2f}, p = {s.loc["sinusoid", "p_value"]:.2g}{
" (the smallest p 1000 random sets can give: none was as far from the null)"
if s.loc["sinusoid", "p_value"] <= 1 / 1000 else ""}. To the endosteum the difference is
smaller (median {s.loc["endosteum", "median_um"]:.0f} µm against
{s.loc["endosteum", "null_median_um"]:.0f} µm, KS p = {s.loc["endosteum", "p_value"]:.2g}).

## Fractions by state, phase and place over time

```python
from niche3d.analysis import state_fractions
fr = state_fractions(run, by=("state", "phase", "location", "zone"))
fr.pivot(index="t_hours", columns="category", values="fraction")   # one grouping at a time
```

One row per record, grouping and category with `count`, `total`, `fraction` and its
Wilson interval. `phase` counts dormant HSCs as G0; `location` splits niche sites (the
store's niche-site map) from off-site marrow and the blood (the block's share of the
mouse's blood HSCs, `block_fraction * blood_pool`, an expected number); `zone` is the
nearest of sinusoid, endosteum and arteriole within 10 µm; `binding` (bound/unbound) is
also available.

{md_table(f_last.head(10))}

![HSC fractions over time]({rel["fractions"]})

At day {days:.0f}: {phase.loc["G0", "fraction"]:.0%} of the HSCs in G0 and
{phase.loc["S/G2/M", "fraction"]:.0%} in S/G2/M (one snapshot of {n_hsc} cells: the
Wilson intervals are wide), {loc.loc["niche_site", "fraction"]:.0%} on niche sites.

## Division modes

```python
from niche3d.analysis import division_modes
dm = division_modes(run)
dm.overall      # per mode: count, fraction (Wilson CI), same-side / border split
dm.by_record    # the same per record interval; dm.divisions: one row per division
```

A division event carries both daughters' fates: two HSCs is symmetric renewal, an HSC and
an MPP asymmetric, two MPPs symmetric differentiation. Whether the daughters sat on two
sides of a niche border comes from the model's counters (`total_*_divisions_border`),
per record interval; per mode the event counts equal the counters.

{md_table(o, index=True)}

![Division modes]({rel["division_modes"]})

{o.loc["asymmetric", "border_share"]:.0%} of the asymmetric outcomes straddled a niche
border ({int(o.loc["asymmetric", "border"])} of {int(o.loc["asymmetric", "count"])}; BIOLOGY.md
target 9: most of them should), and no symmetric renewal did.

## Clone sizes

```python
from niche3d.analysis import clone_sizes
cs = clone_sizes(run)                       # one row per record x founder (extinct included)
cs[cs.record == cs.record.max()].n_cells.value_counts()
```

Founders are the seeded HSCs and every HSC that homed in from the blood; a clone is a
founder and its descendants in the block (a division keeps the mother's track id, the
daughter gets a new one). `n_<state>` counts the living clone by state; per record the
clone sizes add up to the cells in the snapshot.

{md_table(cl.sort_values("n_cells", ascending=False).head(6))}

![Clone sizes]({rel["clone_sizes"]})

At day {days:.0f}, {int((cl.n_hsc > 0).sum())} of {len(cl)} founders still have an HSC in
their clone; the largest clone has {int(cl.n_cells.max())} cells.

## Lineage trees

```python
from niche3d.analysis import lineage_tree
tree = lineage_tree(run, root={big[0]})    # root=None: every founder's tree
tree.edges      # parent -> child, division time, the mother's and the daughter's fates
tree.nodes      # one row per track: founder, generation, birth, end (death/exit/egress), alive
tree.children({big[0]}), tree.descendants({big[0]})
```

Plain tables (no graph library): `nodes` and `edges`, with `children`, `descendants`
and `living()`.

{md_table(sub.edges.head(6))}

![Lineage trees of the largest clones]({rel["lineage_tree"]})

## Circulating HSCs

```python
from niche3d.analysis import circulating_counts
cc = circulating_counts(run)
cc.plot(x="t_hours", y=["blood_hsc_per_mouse", "mouse_egress_per_day"])
```

From the metrics: the mouse's blood HSCs (per mouse and per µL with the scenario's blood
volume, {cc.blood_volume_ul.iloc[0]:g} µL) and the whole mouse's egress, homing and
clearance per day; from the events: the block's own egress and homing events per record
interval.

{md_table(cc[["record", "t_hours", "blood_hsc_per_mouse", "blood_hsc_per_ul",
              "blood_residence_minutes", "mouse_egress_per_day", "mouse_homed_per_day",
              "block_egress_events", "block_homing_events"]].tail(5))}

![HSCs in blood and the traffic]({rel["circulating"]})

At day {days:.0f} the mouse's blood holds {cc.blood_hsc_per_mouse.iloc[-1]:.2g} HSCs:
the inflow of {cc.mouse_egress_per_day.iloc[-1]:.0f} HSCs per day times a residence of
{cc.blood_residence_minutes.iloc[-1]:.1f} minutes
({cc.mouse_egress_per_day.iloc[-1] * cc.blood_residence_minutes.iloc[-1] / 1440:.2g}). That
is what ~1 % of the marrow pool per day and minutes in blood imply, and far below the
100-400 per mouse that BIOLOGY.md section 7 also quotes.

## Fields at the cells against random marrow

```python
from niche3d.analysis import field_at_cells
fs = field_at_cells(run, "CXCL12", records="all", n_random=1000, seed=0)
fs.summary      # per record: medians and IQRs at HSCs, at random voxels, exact marrow; tests
fs.values       # every sampled value with its position
```

The value at an HSC's voxel (nM) is what the cell senses, its own uptake included;
random voxels are drawn uniformly from the enterable voxels. The tests are the
Mann-Whitney U (`prob_cells_higher` = U / (n_cells n_random), the chance that an HSC's
value exceeds a random voxel's) and the two-sample KS test.

{md_table(fs["cxcl12"].summary[["record", "t_hours", "n_cells", "cells_median", "cells_q25",
                               "cells_q75", "random_median", "marrow_median",
                               "prob_cells_higher", "mwu_p_value"]].tail(4))}

![CXCL12 and SCF at HSCs and at random voxels]({rel["field_at_cells"]})

At day {days:.0f} HSCs sit at a median CXCL12 of {c.cells_median:.1f} nM against
{c.random_median:.1f} nM at random (P(HSC > random) = {c.prob_cells_higher:.2f}), and SCF
{sc.cells_median:.1f} nM against {sc.random_median:.1f} nM.
"""
    path.write_text(txt, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
