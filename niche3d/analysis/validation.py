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
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from niche3d.analysis.calibration import Target

__all__ = ["Validation", "ValidationError", "validate", "validation_targets", "status",
           "add_parser", "cmd_validate", "PASS", "FAIL", "NOT_MEASURED"]

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"
#: burn-in of the homeostasis targets (days), calibration_table's default
DEFAULT_SKIP_DAYS = 7.0
#: the donor chimerism is read at the end of a run lasting this long after the transplant
#: (days; the engraftment test's 15-day run with the injection at day 1)
ENGRAFT_DAYS = 14.0
_NUMBERS = ("simulated", "ci_low", "ci_high", "low", "high")


class ValidationError(ValueError):
    """The runs cannot be validated (too short for the burn-in, bad arguments)."""


@cache
def validation_targets() -> dict[str, Target]:
    """Every target of ``targets.toml`` (calibration and validation-only), by key."""
    from niche3d.analysis.calibration import load_targets

    return load_targets()


@dataclass
class _M:
    """One measurement: value with interval (NaN = not measured) and a note."""

    value: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    note: str = ""


def status(value: float, low: float, high: float) -> str:
    """``pass`` when ``low <= value <= high``, ``fail`` outside, ``not measured`` for NaN."""
    if value is None or math.isnan(value):
        return NOT_MEASURED
    return PASS if low <= value <= high else FAIL


# ------------------------------------------------------------------------------ runs
def _open(x: Any) -> Any:
    from niche3d.io import open_run

    if isinstance(x, str | os.PathLike):
        return open_run(x)
    sim = sys.modules.get("niche3d.simulation")
    if sim is not None and isinstance(x, sim.Simulation):
        if x.out is None:
            raise TypeError("validate reads run stores: this Simulation writes none (give it one: "
                            "Simulation(scenario, 'run.zarr'))")
        return open_run(x.out)
    if all(hasattr(x, a) for a in ("metrics", "cells", "tissue", "voxel_um", "scenario", "path")):
        return x
    raise TypeError(f"expected a run store path, a niche3d Run or a Simulation writing a store, "
                    f"got {type(x).__name__}")


def _experiments(run: Any) -> set[str]:
    """Which experiments a run is, from its scenario's interventions."""
    ivs = list(run.scenario.interventions)
    kinds = {iv.kind for iv in ivs}
    if not ivs:
        return {"homeostasis"}
    if kinds == {"gcsf"} and len(ivs) == 1:
        return {"gcsf"}
    if "transplant" not in kinds:
        return set()
    day = max(iv.day for iv in ivs if iv.kind == "transplant")
    if kinds == {"transplant"}:
        return {"transplant", "transplant_unconditioned"}
    if kinds == {"transplant", "irradiation"} and any(
            iv.kind == "irradiation" and iv.dose_gy > 0 and iv.day <= day for iv in ivs):
        return {"transplant", "transplant_conditioned"}
    return {"transplant"}


def _design(run: Any, *, density: bool) -> str:
    """The scenario without what replicates may vary (seed, length, output, names)."""
    d = run.scenario.model_dump(mode="json")
    for k in ("name", "description", "output"):
        d.pop(k, None)
    for k in ("seed", "days", "threads"):
        d["run"].pop(k, None)
    if density:
        d["cells"].pop("hsc_per_mm3", None)
    return json.dumps(d, sort_keys=True)


def _group(runs: list[Any], *, density: bool) -> list[Any]:
    """The first run and those of the same design and geometry."""
    ref = runs[0]
    lab = np.asarray(ref.tissue.isel(t=-1).values)
    return [r for r in runs if r is ref or (
        _design(r, density=density) == _design(ref, density=density) and r.voxel_um == ref.voxel_um
        and np.array_equal(np.asarray(r.tissue.isel(t=-1).values), lab))]


def _late(run: Any, skip_days: float) -> pd.DataFrame:
    m = run.metrics.sort_values("t")
    return m[m["t"] >= skip_days * 24.0]


def _summary(v: Any, confidence: float, note: str = "") -> _M:
    """Mean of the finite values with their central ``confidence`` range."""
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return _M(note="fewer than two records after the burn-in")
    q = (1.0 - confidence) / 2.0
    return _M(float(v.mean()), float(np.quantile(v, q)), float(np.quantile(v, 1.0 - q)), note)


# ------------------------------------------------------------------------------ homeostasis
def _homeostasis(runs: list[Any], skip_days: float, confidence: float) -> dict[str, _M]:
    from niche3d.analysis.calibration import calibration_table

    for r in runs:
        if int((r.metrics["t"] >= skip_days * 24.0).sum()) < 2:
            end = float(r.metrics["t"].max()) / 24.0 if len(r.metrics) else 0.0
            raise ValidationError(
                f"{r.path}: the run ends at day {end:g}, too short for the {skip_days:g}-day "
                "burn-in (--skip-days): fewer than two records after it, nothing to measure; "
                "give a smaller --skip-days or a longer run")
    try:
        tab = calibration_table(runs if len(runs) > 1 else runs[0], skip_days=skip_days,
                                confidence=confidence)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    pooled = f"pooled over {len(runs)} replicate runs" if len(runs) > 1 else ""
    none = "no value: too few cells or events after the burn-in for this statistic"
    out = {str(k): _M(r["simulated"], r["ci_low"], r["ci_high"],
                      none if math.isnan(r["simulated"]) else pooled) for k, r in tab.iterrows()}
    lates = [_late(r, skip_days).set_index("t") for r in runs]
    times = sorted(set.intersection(*(set(m.index) for m in lates)))

    def stack(col: str) -> np.ndarray | None:
        if not all(col in m for m in lates):
            return None
        return np.stack([m.loc[times, col].to_numpy(np.float64) for m in lates])

    blood, free, sites = stack("blood_hsc_per_mouse"), stack("niche_sites_free"), stack("niche_sites")
    if blood is not None:  # per mouse: the mean over replicates
        out["blood_hsc_per_mouse"] = _summary(blood.mean(axis=0), confidence, pooled)
    if free is None or sites is None:
        out["free_niche_share"] = _M(note="the store has no niche-site metrics")
    else:  # sites add up over replicate blocks
        s = sites.sum(axis=0)
        share = np.where(s > 0, free.sum(axis=0) / np.maximum(s, 1.0), np.nan)
        out["free_niche_share"] = _summary(share, confidence, pooled)
    return out


def _convergence(runs: list[Any], skip_days: float) -> _M:
    """Largest |mean HSCs at a density - at 1x| in standard errors of the difference."""
    means: dict[float, list[float]] = {}
    noise: dict[float, float] = {}
    for r in runs:
        y = _late(r, skip_days)["hsc_total"].to_numpy(np.float64)
        if y.size < 3:
            return _M(note=f"{r.path}: fewer than three records after the burn-in")
        d = float(r.scenario.cells.hsc_per_mm3)
        means.setdefault(d, []).append(float(y.mean()))
        e = y - y.mean()
        r1 = float(np.corrcoef(e[:-1], e[1:])[0, 1]) if e[:-1].std() > 0 and e[1:].std() > 0 else 0.0
        r1 = min(max(r1, 0.0), 0.99)
        noise[d] = float(y.std(ddof=1) / math.sqrt(y.size) * math.sqrt((1 + r1) / (1 - r1)))
    dens = sorted(means)
    if dens[-1] < 4.0 * dens[0]:
        return _M(note=f"seeding densities {dens} per mm³ span less than the 4-fold (0.5x-2x) "
                       "of the target")
    ref = min(dens, key=lambda d: abs(math.log(d / math.sqrt(dens[0] * dens[-1]))))
    m = {d: float(np.mean(v)) for d, v in means.items()}
    se = {d: float(np.std(v, ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else noise[d]
          for d, v in means.items()}
    z = 0.0
    for d in dens:
        diff, den = abs(m[d] - m[ref]), math.hypot(se[d], se[ref])
        z = max(z, diff / den if den > 0 else (math.inf if diff > 0 else 0.0))
    parts = ", ".join(f"{d:g}/mm³: {m[d]:.1f}" + ("" if d == ref else f" ({m[d] / m[ref] - 1:+.0%})")
                      for d in dens)
    src = ("replicates" if any(len(v) > 1 for v in means.values()) else
           "each run's record-to-record noise (replicates per density give the seed-to-seed noise)")
    return _M(z, note=f"mean HSCs after the burn-in {parts}; standard errors from {src}")


# ------------------------------------------------------------------------------ interventions
def _gcsf(run: Any) -> dict[str, _M]:
    iv = next(iv for iv in run.scenario.interventions if iv.kind == "gcsf")
    m = run.metrics.sort_values("t")
    keys = ("gcsf_cxcl12_falling_days_share", "gcsf_blood_hsc_fold_rise", "gcsf_blood_peak_course_day")
    if not {"cxcl12_mean", "blood_hsc_per_mouse"} <= set(m.columns):
        return dict.fromkeys(keys, _M(note="the store lacks the cxcl12_mean or blood_hsc_per_mouse metric"))
    day = m["t"].to_numpy(np.float64) / 24.0 - iv.start_day  # days since the first dose
    cx, blood = m["cxcl12_mean"].to_numpy(np.float64), m["blood_hsc_per_mouse"].to_numpy(np.float64)
    windows = [(day >= k - 1) & (day < k) for k in range(iv.doses + 1)]  # 0: the day before
    if not windows[0].any():
        return dict.fromkeys(keys, _M(note="no record in the day before the first dose"))
    if not all(w.any() for w in windows):
        return dict.fromkeys(keys, _M(note=f"the run ends before the {iv.doses}-day course does"))
    cm = [float(cx[w].mean()) for w in windows]
    falls = sum(b < a for a, b in zip(cm, cm[1:], strict=False)) / iv.doses
    out = {keys[0]: _M(falls, note="daily mean marrow CXCL12 over the day before the course: "
                       + ", ".join(f"{v / cm[0]:.2f}" for v in cm[1:]))}
    base = float(blood[windows[0]].mean())
    i = int(np.argmax(np.where(day >= 0, blood, -np.inf)))
    peak = math.floor(day[i]) + 1
    out[keys[1]] = (_M(blood[i] / base, note=f"{base:.3g} HSCs per mouse in blood the day before "
                       f"the course, {blood[i]:.3g} at the peak (course day {peak})") if base > 0
                    else _M(note="no HSCs in blood before the course"))
    if iv.doses not in (4, 5):
        out[keys[2]] = _M(note=f"the target is for a 4-5 day course; this run gives {iv.doses} doses")
    elif day[-1] < iv.doses:
        out[keys[2]] = _M(note="the run must last a day past the last dose to place the peak")
    else:
        out[keys[2]] = _M(float(peak), note=f"peak {day[i] * 24:.0f} h after the first dose")
    return out


def _transplant(run: Any, exps: set[str]) -> dict[str, _M]:
    tps = [iv for iv in run.scenario.interventions if iv.kind == "transplant"]
    dose, t_tx = float(sum(iv.cells for iv in tps)), max(iv.day for iv in tps) * 24.0
    m = run.metrics.sort_values("t")
    after = m[m["t"] >= t_tx + 24.0]
    if len(after):
        homed = float(after["mouse_donor_homed_total"].iloc[0])
        out = {"seeding_efficiency": _M(homed / dose, note=f"{homed:.4g} of {dose:g} donor HSCs "
                                        "lodged in the mouse's marrow within a day")}
    else:
        out = {"seeding_efficiency": _M(note="the run ends less than a day after the transplant")}
    last = m.iloc[-1]
    waited = (float(last["t"]) - t_tx) / 24.0
    for exp in exps & {"transplant_unconditioned", "transplant_conditioned"}:
        key = exp.replace("transplant", "donor_chimerism")
        out[key] = (_M(note=f"the run ends {waited:g} d after the transplant; the chimerism is "
                       f"read >= {ENGRAFT_DAYS:g} days after it") if waited < ENGRAFT_DAYS else
                    _M(float(last["donor_chimerism"]), note=f"{last['hsc_donor']:g} donor of "
                       f"{last['hsc_total']:g} HSCs in the block at day {float(last['t']) / 24:g}"))
    return out


def _average(per_run: list[tuple[Any, dict[str, _M]]]) -> dict[str, _M]:
    """One value per key: the run's own, or the mean of several runs (listed in the note)."""
    out = {}
    for k in {k for _, d in per_run for k in d}:
        got = [(r, d[k]) for r, d in per_run if k in d]
        vals = [(r, x) for r, x in got if not math.isnan(x.value)]
        if len(got) == 1 or not vals:
            out[k] = got[0][1]
            continue
        listed = "; ".join(f"{r.path.name}: {x.value:.4g}" for r, x in vals)
        out[k] = _M(float(np.mean([x.value for _, x in vals])), note=f"mean of {len(vals)} runs ({listed})")
    return out


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
            rows.append({"key": str(key), **{c: _jnum(v) if c in _NUMBERS else v for c, v in r.items()},
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
    runs = list({os.path.realpath(r.path): r for r in map(_open, items)}.values())
    exps = [_experiments(r) for r in runs]
    found: dict[str, _M] = {}
    homeo = [r for r, e in zip(runs, exps, strict=True) if "homeostasis" in e]
    if homeo:
        found.update(_homeostasis(_group(homeo, density=False), skip_days, confidence))
        series = _group(homeo, density=True)
        if len({float(r.scenario.cells.hsc_per_mm3) for r in series}) > 1:
            found["seeding_convergence_z"] = _convergence(series, skip_days)
    per_run = [(r, _gcsf(r)) for r, e in zip(runs, exps, strict=True) if "gcsf" in e]
    per_run += [(r, _transplant(r, e)) for r, e in zip(runs, exps, strict=True) if "transplant" in e]
    found.update(_average(per_run))
    rows = []
    for key, t in validation_targets().items():
        m = found.get(key) or _M(note=t.needs)
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
