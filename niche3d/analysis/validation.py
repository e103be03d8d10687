"""``niche3d validate``: every target of BIOLOGY.md sections 3, 6 and 7 beside a run.

:func:`validate` measures every target of ``targets.toml``
(:func:`niche3d.analysis.calibration.load_targets`) on one or more run stores and gives each
a status: ``pass`` (the value inside the range, ends inclusive), ``fail``, or ``not
measured`` (the runs are not the experiment it needs, or hold too little of it; the note
says why and which run would measure it). A homeostasis run (no interventions) measures
the steady-state targets, pooled over its replicates (same scenario and geometry, other
``run.seed``); homeostasis runs differing only in ``cells.hsc_per_mm3`` over a 4-fold span
the seeding-density convergence; a G-CSF run the mobilisation targets; transplant runs
the seeding efficiency and the donor chimerism. docs/validation.md gives every estimator.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from niche3d.analysis.experiments import (
    DEFAULT_SKIP_DAYS,
    FAIL,
    NOT_MEASURED,
    NUMBERS,
    PASS,
    Measure,
    ValidationError,
    average_measures,
    experiments_of,
    group_runs,
    measure_convergence,
    measure_gcsf,
    measure_homeostasis,
    measure_transplant,
    open_one,
    status,
    validation_targets,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Validation", "ValidationError", "validate", "validation_targets", "status",
           "add_parser", "cmd_validate", "PASS", "FAIL", "NOT_MEASURED"]

# ------------------------------------------------------------------------------ the result
def _jnum(v: Any) -> Any:
    """A JSON-safe number: NaN -> null, +-inf -> "inf" / "-inf"."""
    v = float(v)
    if math.isnan(v):
        return None
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else v


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.3g}"


def _range(low: float, high: float, unit: str) -> str:
    text = (f">= {_fmt(low)}" if math.isinf(high) and not math.isinf(low) else
            f"<= {_fmt(high)}" if math.isinf(low) and not math.isinf(high) else
            f"{_fmt(low)} to {_fmt(high)}")
    return text if unit in ("", "-") else f"{text} {unit}"


@dataclass
class Validation:
    """What :func:`validate` found.

    Attributes
    ----------
    table
        One row per target, indexed by ``key``: ``item``, ``description``, ``simulated``,
        ``ci_low``, ``ci_high``, ``low``, ``high``, ``unit``, ``status`` (``pass``,
        ``fail``, ``not measured``), ``source``, ``note``.
    runs
        Per run: ``path``, ``seed``, ``code_version``, ``scenario``, ``experiments`` (the
        kinds of target it can measure) and ``failure`` (a runtime guard's stop, or None).
    skip_days, confidence
        The burn-in (days) and the level of the intervals.
    """

    table: pd.DataFrame
    runs: list[dict[str, Any]]
    skip_days: float
    confidence: float

    def keys_with(self, st: str) -> list[str]:
        """Keys of the targets with status ``st``."""
        return [str(k) for k in self.table.index[self.table["status"] == st]]

    @property
    def passed(self) -> list[str]:
        """Keys of the targets met."""
        return self.keys_with(PASS)

    @property
    def failed(self) -> list[str]:
        """Keys of the targets measured outside their range."""
        return self.keys_with(FAIL)

    def summary(self) -> str:
        """``"15 pass, 4 fail, 7 not measured"``."""
        return ", ".join(f"{len(self.keys_with(s))} {s}" for s in (PASS, FAIL, NOT_MEASURED))

    def to_dict(self) -> dict[str, Any]:
        """Everything in plain JSON types (NaN as null, infinities as ``"inf"``/``"-inf"``)."""
        from niche3d._version import code_version

        rows = []
        for key, r in self.table.iterrows():
            t = validation_targets()[str(key)]
            rows.append({"key": str(key), **{c: _jnum(v) if c in NUMBERS else v for c, v in r.items()},
                         "experiment": t.experiment, "range_note": t.range_note})
        return {"schema": "niche3d-validation/1", "validated_with": code_version(), "runs": self.runs,
                "skip_days": self.skip_days, "confidence": self.confidence,
                "summary": {s: len(self.keys_with(s)) for s in (PASS, FAIL, NOT_MEASURED)},
                "targets": rows}

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def format(self) -> str:
        """A text table for the terminal (value with interval, range, status, source), the
        notes of the rows that did not pass, and the summary line."""
        lines = [f"run {r['path']}: scenario {r['scenario']!r}, seed {r['seed']}, niche3d "
                 f"{r['code_version']}; measures {', '.join(r['experiments']) or 'nothing'}"
                 + (f"; FAILED: {r['failure'].get('message')}" if r["failure"] else "")
                 for r in self.runs]
        lines.append(f"burn-in {self.skip_days:g} days; intervals at {self.confidence:.0%}")
        rows = [("item", "target", f"simulated ({self.confidence:.0%} interval)", "range", "status",
                 "source")]
        for key, r in self.table.iterrows():
            sim = _fmt(r["simulated"])
            if not (math.isnan(r["ci_low"]) or math.isnan(r["ci_high"])):
                sim += f" ({_fmt(r['ci_low'])}-{_fmt(r['ci_high'])})"
            st = r["status"] if r["status"] == NOT_MEASURED else r["status"].upper()
            rows.append((r["item"], str(key), sim, _range(r["low"], r["high"], r["unit"]), st, r["source"]))
        w = [max(len(x[i]) for x in rows) for i in range(5)]
        lines += ["  ".join(c.ljust(n) for c, n in zip(row, w, strict=False)) + "  " + row[5] for row in rows]
        notes = [f"  {r['item']} {k} ({r['status']}): {r['note']}" for k, r in self.table.iterrows()
                 if r["status"] != PASS and r["note"]]
        return "\n".join([*lines, *(["", "notes:", *notes] if notes else []), "", self.summary()])


def validate(run_or_runs: Any, *, skip_days: float = DEFAULT_SKIP_DAYS,
             confidence: float = 0.95) -> Validation:
    """Measure every target of BIOLOGY.md sections 3, 6 and 7 on one or more runs.

    Parameters
    ----------
    run_or_runs
        A run store path, a :class:`niche3d.io.Run`, a :class:`niche3d.Simulation` that
        writes a store, or a list of them. The homeostasis targets are measured on the
        first homeostasis run and its replicates.
    skip_days
        Burn-in of the homeostasis targets in days (>= 0).
    confidence
        Level of the intervals, in (0, 1).

    Returns
    -------
    Validation

    Raises
    ------
    ValidationError
        A bad ``skip_days`` or ``confidence``, or a homeostasis run too short for the burn-in.
    niche3d.io.StoreError
        A path that is not a readable run store.
    """
    import pandas as pd

    if not (isinstance(skip_days, int | float) and math.isfinite(skip_days) and skip_days >= 0):
        raise ValidationError(f"skip_days = {skip_days!r} must be a finite number >= 0")
    if not (isinstance(confidence, int | float) and 0 < confidence < 1):
        raise ValidationError(f"confidence = {confidence!r} must be in (0, 1)")
    items = list(run_or_runs) if isinstance(run_or_runs, list | tuple) else [run_or_runs]
    if not items:
        raise ValidationError("no runs given")
    # a store given twice is one run, not two replicates
    runs = list({os.path.realpath(r.path): r for r in map(open_one, items)}.values())
    exps = [experiments_of(r) for r in runs]
    found: dict[str, Measure] = {}
    homeo = [r for r, e in zip(runs, exps, strict=True) if "homeostasis" in e]
    if homeo:
        found.update(measure_homeostasis(group_runs(homeo, density=False), skip_days, confidence))
        series = group_runs(homeo, density=True)
        if len({float(r.scenario.cells.hsc_per_mm3) for r in series}) > 1:
            found["seeding_convergence_z"] = measure_convergence(series, skip_days)
    per_run = [(r, measure_gcsf(r)) for r, e in zip(runs, exps, strict=True) if "gcsf" in e]
    per_run += [(r, measure_transplant(r, e)) for r, e in zip(runs, exps, strict=True) if "transplant" in e]
    found.update(average_measures(per_run))
    rows = []
    for key, t in validation_targets().items():
        m = found.get(key) or Measure(note=t.needs)
        st = status(m.value, t.low, t.high)
        notes = [m.note]
        if st == FAIL and (m.lo <= t.high and m.hi >= t.low):
            notes.append(f"the {confidence:.0%} interval overlaps the range: not a clear miss at this "
                         "sample size")
        if st == FAIL and t.known_issue:
            notes.append(f"known: {t.known_issue}")
        rows.append({"key": key, "item": t.item, "description": t.description, "simulated": m.value,
                     "ci_low": m.lo, "ci_high": m.hi, "low": t.low, "high": t.high, "unit": t.unit,
                     "status": st, "source": t.source, "note": "; ".join(n for n in notes if n)})
    info = [{"path": str(r.path), "seed": r.seed, "code_version": r.code_version,
             "scenario": r.scenario.name, "experiments": sorted(e), "failure": r.failure}
            for r, e in zip(runs, exps, strict=True)]
    return Validation(pd.DataFrame(rows).set_index("key"), info, float(skip_days), float(confidence))


# ------------------------------------------------------------------------------ command line
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``niche3d validate`` to ``niche3d``'s sub-parsers (made with their ``parser_class``)."""
    p = sub.add_parser(
        "validate", help="every BIOLOGY.md calibration target beside runs, with pass/fail",
        description="Measure every target of BIOLOGY.md sections 3, 6 and 7 on run stores: the "
        "simulated value with its interval, the range with its source, and pass, fail or not "
        "measured (with the run that would measure it); docs/validation.md.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run store (*.zarr)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a target fails (not measured does not fail)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the result as JSON to PATH; '-' writes it to stdout instead of the table")
    p.add_argument("--skip-days", type=float, default=DEFAULT_SKIP_DAYS, metavar="D",
                   help=f"burn-in of the homeostasis targets in days (default {DEFAULT_SKIP_DAYS:g})")
    p.add_argument("--confidence", type=float, default=0.95, metavar="C",
                   help="level of the intervals, in (0, 1) (default 0.95)")
    return p


def cmd_validate(a: argparse.Namespace) -> int:
    """``niche3d validate``: the exit status (2 bad input, 1 a failed target under
    ``--strict``, else 0); errors are one line on stderr."""
    from niche3d.io import StoreError

    try:
        v = validate(a.runs, skip_days=a.skip_days, confidence=a.confidence)
    except (ValidationError, StoreError, FileNotFoundError) as exc:
        print(f"niche3d validate: error: {exc}", file=sys.stderr)
        return 2
    if a.json == "-":
        sys.stdout.write(v.to_json() + "\n")
    else:
        print(v.format())
        if a.json:
            try:
                with open(a.json, "w", encoding="utf-8") as f:
                    f.write(v.to_json() + "\n")
            except OSError as exc:
                print(f"niche3d validate: error: cannot write {a.json}: {exc.strerror or exc}",
                      file=sys.stderr)
                return 2
    return 1 if a.strict and v.failed else 0
