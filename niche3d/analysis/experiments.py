"""The measurements behind ``niche3d validate`` (:mod:`niche3d.analysis.validation`):
which experiment a run is, and each kind of run's estimators: the homeostasis targets
(through :func:`niche3d.analysis.calibration.calibration_table`), the seeding-density
convergence, the G-CSF course and the transplants. docs/validation.md gives every
estimator."""

from __future__ import annotations

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

__all__ = ["PASS", "FAIL", "NOT_MEASURED", "DEFAULT_SKIP_DAYS", "ENGRAFT_DAYS", "NUMBERS", "Measure",
           "ValidationError", "validation_targets", "status", "open_one", "experiments_of", "group_runs",
           "measure_homeostasis", "measure_convergence", "measure_gcsf", "measure_transplant",
           "average_measures"]

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"
#: burn-in of the homeostasis targets (days), calibration_table's default
DEFAULT_SKIP_DAYS = 7.0
#: the donor chimerism is read at the end of a run lasting this long after the transplant
#: (days; the engraftment test's 15-day run with the injection at day 1)
ENGRAFT_DAYS = 14.0
NUMBERS = ("simulated", "ci_low", "ci_high", "low", "high")


class ValidationError(ValueError):
    """The runs cannot be validated (too short for the burn-in, bad arguments)."""


@cache
def validation_targets() -> dict[str, Target]:
    """Every target of ``targets.toml`` (calibration and validation-only), by key."""
    from niche3d.analysis.calibration import load_targets

    return load_targets()


@dataclass
class Measure:
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
def open_one(x: Any) -> Any:
    """A run store path, ``Run`` or store-writing ``Simulation`` as an open ``Run``."""
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


def experiments_of(run: Any) -> set[str]:
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


def group_runs(runs: list[Any], *, density: bool) -> list[Any]:
    """The first run and those of the same design and geometry."""
    ref = runs[0]
    lab = np.asarray(ref.tissue.isel(t=-1).values)
    return [r for r in runs if r is ref or (
        _design(r, density=density) == _design(ref, density=density) and r.voxel_um == ref.voxel_um
        and np.array_equal(np.asarray(r.tissue.isel(t=-1).values), lab))]


def _late(run: Any, skip_days: float) -> pd.DataFrame:
    m = run.metrics.sort_values("t")
    return m[m["t"] >= skip_days * 24.0]


def _summary(v: Any, confidence: float, note: str = "") -> Measure:
    """Mean of the finite values with their central ``confidence`` range."""
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return Measure(note="fewer than two records after the burn-in")
    q = (1.0 - confidence) / 2.0
    return Measure(float(v.mean()), float(np.quantile(v, q)), float(np.quantile(v, 1.0 - q)), note)


# ------------------------------------------------------------------------------ homeostasis
def measure_homeostasis(runs: list[Any], skip_days: float, confidence: float) -> dict[str, Measure]:
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
    out = {str(k): Measure(r["simulated"], r["ci_low"], r["ci_high"],
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
        out["free_niche_share"] = Measure(note="the store has no niche-site metrics")
    else:  # sites add up over replicate blocks
        s = sites.sum(axis=0)
        share = np.where(s > 0, free.sum(axis=0) / np.maximum(s, 1.0), np.nan)
        out["free_niche_share"] = _summary(share, confidence, pooled)
    return out


def measure_convergence(runs: list[Any], skip_days: float) -> Measure:
    """Largest |mean HSCs at a density - at 1x| in standard errors of the difference."""
    means: dict[float, list[float]] = {}
    noise: dict[float, float] = {}
    for r in runs:
        y = _late(r, skip_days)["hsc_total"].to_numpy(np.float64)
        if y.size < 3:
            return Measure(note=f"{r.path}: fewer than three records after the burn-in")
        d = float(r.scenario.cells.hsc_per_mm3)
        means.setdefault(d, []).append(float(y.mean()))
        e = y - y.mean()
        r1 = float(np.corrcoef(e[:-1], e[1:])[0, 1]) if e[:-1].std() > 0 and e[1:].std() > 0 else 0.0
        r1 = min(max(r1, 0.0), 0.99)
        noise[d] = float(y.std(ddof=1) / math.sqrt(y.size) * math.sqrt((1 + r1) / (1 - r1)))
    dens = sorted(means)
    if dens[-1] < 4.0 * dens[0]:
        return Measure(note=f"seeding densities {dens} per mm³ span less than the 4-fold (0.5x-2x) "
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
    return Measure(z, note=f"mean HSCs after the burn-in {parts}; standard errors from {src}")


# ------------------------------------------------------------------------------ interventions
def measure_gcsf(run: Any) -> dict[str, Measure]:
    iv = next(iv for iv in run.scenario.interventions if iv.kind == "gcsf")
    m = run.metrics.sort_values("t")
    keys = ("gcsf_cxcl12_falling_days_share", "gcsf_blood_hsc_fold_rise", "gcsf_blood_peak_course_day")
    if not {"cxcl12_mean", "blood_hsc_per_mouse"} <= set(m.columns):
        return dict.fromkeys(keys, Measure(note="the store lacks the cxcl12_mean or blood_hsc_per_mouse metric"))
    day = m["t"].to_numpy(np.float64) / 24.0 - iv.start_day  # days since the first dose
    cx, blood = m["cxcl12_mean"].to_numpy(np.float64), m["blood_hsc_per_mouse"].to_numpy(np.float64)
    windows = [(day >= k - 1) & (day < k) for k in range(iv.doses + 1)]  # 0: the day before
    if not windows[0].any():
        return dict.fromkeys(keys, Measure(note="no record in the day before the first dose"))
    if not all(w.any() for w in windows):
        return dict.fromkeys(keys, Measure(note=f"the run ends before the {iv.doses}-day course does"))
    cm = [float(cx[w].mean()) for w in windows]
    falls = sum(b < a for a, b in zip(cm, cm[1:], strict=False)) / iv.doses
    out = {keys[0]: Measure(falls, note="daily mean marrow CXCL12 over the day before the course: "
                       + ", ".join(f"{v / cm[0]:.2f}" for v in cm[1:]))}
    base = float(blood[windows[0]].mean())
    i = int(np.argmax(np.where(day >= 0, blood, -np.inf)))
    peak = math.floor(day[i]) + 1
    out[keys[1]] = (Measure(blood[i] / base, note=f"{base:.3g} HSCs per mouse in blood the day before "
                       f"the course, {blood[i]:.3g} at the peak (course day {peak})") if base > 0
                    else Measure(note="no HSCs in blood before the course"))
    if iv.doses not in (4, 5):
        out[keys[2]] = Measure(note=f"the target is for a 4-5 day course; this run gives {iv.doses} doses")
    elif day[-1] < iv.doses:
        out[keys[2]] = Measure(note="the run must last a day past the last dose to place the peak")
    else:
        out[keys[2]] = Measure(float(peak), note=f"peak {day[i] * 24:.0f} h after the first dose")
    return out


def measure_transplant(run: Any, exps: set[str]) -> dict[str, Measure]:
    tps = [iv for iv in run.scenario.interventions if iv.kind == "transplant"]
    dose, t_tx = float(sum(iv.cells for iv in tps)), max(iv.day for iv in tps) * 24.0
    m = run.metrics.sort_values("t")
    after = m[m["t"] >= t_tx + 24.0]
    if len(after):
        homed = float(after["mouse_donor_homed_total"].iloc[0])
        out = {"seeding_efficiency": Measure(homed / dose, note=f"{homed:.4g} of {dose:g} donor HSCs "
                                        "lodged in the mouse's marrow within a day")}
    else:
        out = {"seeding_efficiency": Measure(note="the run ends less than a day after the transplant")}
    last = m.iloc[-1]
    waited = (float(last["t"]) - t_tx) / 24.0
    for exp in exps & {"transplant_unconditioned", "transplant_conditioned"}:
        key = exp.replace("transplant", "donor_chimerism")
        out[key] = (Measure(note=f"the run ends {waited:g} d after the transplant; the chimerism is "
                       f"read >= {ENGRAFT_DAYS:g} days after it") if waited < ENGRAFT_DAYS else
                    Measure(float(last["donor_chimerism"]), note=f"{last['hsc_donor']:g} donor of "
                       f"{last['hsc_total']:g} HSCs in the block at day {float(last['t']) / 24:g}"))
    return out


def average_measures(per_run: list[tuple[Any, dict[str, Measure]]]) -> dict[str, Measure]:
    """One value per key: the run's own, or the mean of several runs (listed in the note)."""
    out = {}
    for k in {k for _, d in per_run for k in d}:
        got = [(r, d[k]) for r, d in per_run if k in d]
        vals = [(r, x) for r, x in got if not math.isnan(x.value)]
        if len(got) == 1 or not vals:
            out[k] = got[0][1]
            continue
        listed = "; ".join(f"{r.path.name}: {x.value:.4g}" for r, x in vals)
        out[k] = Measure(float(np.mean([x.value for _, x in vals])), note=f"mean of {len(vals)} runs ({listed})")
    return out
