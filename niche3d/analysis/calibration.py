"""The calibration targets of shared/BIOLOGY.md section 6, measured on a run.

:func:`calibration_table` returns one row per target with the simulated value, the
target range and whether it is met; localisation rows carry the random-placement null
of the same geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from niche3d.analysis.localisation import localisation_table
from niche3d.tissue.lattice import Lattice

__all__ = ["Target", "TARGETS", "calibration_table", "hsc_positions", "division_intervals"]

HSC_STATES = ("dormant", "active_g0", "active_g1", "active_sg2m")
CYCLING = ("active_g1", "active_sg2m")


@dataclass(frozen=True)
class Target:
    """One calibration target: a range of acceptable values and where it comes from."""

    key: str
    low: float
    high: float
    unit: str
    source: str


TARGETS: dict[str, Target] = {
    t.key: t
    for t in (
        Target("perisinusoidal_share", 0.75, 0.95, "-", "~85 % within 10 µm of a sinusoid (Acar 2015)"),
        Target("perisinusoidal_enrichment", 1.0, math.inf, "x null", "HSCs closer to sinusoids than random"),
        Target("dividing_vs_resting_sinusoid_p", 0.01, 1.0, "p", "dividing and resting HSCs placed alike (Acar 2015)"),
        Target("dormant_endosteal_enrichment", 1.0, math.inf, "x active", "label-retaining HSCs enriched at endosteum"),
        Target("sg2m_fraction", 0.03, 0.06, "-", "4-5 % of HSCs in S/G2/M"),
        Target("g0_fraction", 0.55, 0.75, "-", "60-70 % in G0"),
        Target("dormant_fraction", 0.12, 0.30, "-", "~20 % dormant (Foudi 2009)"),
        Target("dormant_residence_days", 90.0, 250.0, "day", "dormant division interval ~145 d (Wilson 2008)"),
        Target("active_division_interval_days", 7.0, 40.0, "day", "active HSCs divide every ~9-36 d (Wilson 2008)"),
        Target("hsc_drift_per_30d", -0.10, 0.10, "-", "stable HSC number (relative change per 30 days)"),
        Target("mpp_output_days_share", 0.95, 1.0, "-", "continuous MPP output (share of days with output)"),
    )
}


def hsc_positions(cells: pd.DataFrame, voxel_um: float, states: tuple[str, ...] = HSC_STATES) -> np.ndarray:
    """Integer voxel indices of on-lattice cells in ``states`` (from a cells table in µm)."""
    sel = cells[cells["state"].isin(states) & cells["z"].notna()]
    return np.round(sel[["z", "y", "x"]].to_numpy() / voxel_um - 0.5).astype(np.int64)


def division_intervals(metrics: pd.DataFrame) -> dict[str, float]:
    """Mean division interval and dormant residence from cumulative counters (days).

    Uses HSC-days per state integrated over the records (trapezoid) and the cumulative
    ``total_divisions`` and ``total_activations`` counters; an interval is
    ``state-days / events`` (the maximum-likelihood estimate for exponential waiting).
    """
    m = metrics.sort_values("t")
    days = m["t"].to_numpy() / 24.0
    if len(days) < 2:
        raise ValueError("need at least two records to measure intervals")
    active = sum(m[f"n_{s}"].to_numpy() for s in ("active_g0", "active_g1", "active_sg2m"))
    dormant = m["n_dormant"].to_numpy()
    act_days = float(np.trapezoid(active, days))
    dor_days = float(np.trapezoid(dormant, days))
    out: dict[str, float] = {}
    div = float(m["total_divisions"].iloc[-1] - m["total_divisions"].iloc[0])
    out["active_division_interval_days"] = act_days / div if div > 0 else math.inf
    if "total_activations" in m:
        acts = float(m["total_activations"].iloc[-1] - m["total_activations"].iloc[0])
        out["dormant_residence_days"] = dor_days / acts if acts > 0 else math.inf
    return out


def calibration_table(run: Any, *, skip_days: float = 7.0) -> pd.DataFrame:
    """Measure the section-6 targets on a run.

    Parameters
    ----------
    run
        A :class:`niche3d.io.Run` of a homeostasis scenario.
    skip_days
        Records before this time are a burn-in and are not used for fractions.

    Returns
    -------
    pandas.DataFrame
        Index ``target``; columns ``simulated``, ``low``, ``high``, ``unit``, ``met``,
        ``null`` (random placement, localisation rows only) and ``source``.
    """
    cells = run.cells
    metrics = run.metrics
    if len(metrics) < 2:
        raise ValueError(f"{run.path}: need at least two records, found {len(metrics)}")
    t_end = float(metrics["t"].max())
    lattice = Lattice(np.asarray(run.tissue.isel(t=-1).values), run.voxel_um)
    late = cells[cells["t"] >= min(skip_days * 24.0, t_end)]
    values: dict[str, float] = {}
    nulls: dict[str, float] = {}

    # 1. localisation, pooled over records after burn-in
    pos = hsc_positions(late, run.voxel_um)
    loc = localisation_table(lattice, pos, within_um=10.0)
    if "sinusoid" in loc.index:
        values["perisinusoidal_share"] = float(loc.loc["sinusoid", "observed"])
        nulls["perisinusoidal_share"] = float(loc.loc["sinusoid", "null"])
        values["perisinusoidal_enrichment"] = float(loc.loc["sinusoid", "enrichment"])
        cyc = localisation_table(lattice, hsc_positions(late, run.voxel_um, CYCLING), within_um=10.0)
        rest = localisation_table(
            lattice, hsc_positions(late, run.voxel_um, ("dormant", "active_g0")), within_um=10.0
        )
        a, b = cyc.loc["sinusoid"], rest.loc["sinusoid"]
        if a.n and b.n:
            ka, kb = round(a.observed * a.n), round(b.observed * b.n)
            table = [[ka, a.n - ka], [kb, b.n - kb]]
            values["dividing_vs_resting_sinusoid_p"] = float(stats.fisher_exact(table).pvalue)
    # 2. dormant vs active near the endosteum
    if "endosteum" in loc.index:
        thr = 30.0
        d = localisation_table(lattice, hsc_positions(late, run.voxel_um, ("dormant",)), within_um=thr)
        act = localisation_table(
            lattice, hsc_positions(late, run.voxel_um, HSC_STATES[1:]), within_um=thr
        )
        if d.loc["endosteum", "n"] and act.loc["endosteum", "n"] and act.loc["endosteum", "observed"] > 0:
            values["dormant_endosteal_enrichment"] = float(
                d.loc["endosteum", "observed"] / act.loc["endosteum", "observed"]
            )
    # 3. cycling fractions (pooled over records after burn-in) and intervals
    hsc = late[late["state"].isin(HSC_STATES)]
    if len(hsc):
        counts = hsc["state"].value_counts()
        n = float(len(hsc))
        values["sg2m_fraction"] = counts.get("active_sg2m", 0) / n
        values["g0_fraction"] = (counts.get("dormant", 0) + counts.get("active_g0", 0)) / n
        values["dormant_fraction"] = counts.get("dormant", 0) / n
    values.update(division_intervals(metrics))
    # 4. stability and continuous output
    m = metrics[metrics["t"] >= min(skip_days * 24.0, t_end)]
    if len(m) >= 3:
        days = m["t"].to_numpy() / 24.0
        n_hsc = m["hsc_total"].to_numpy(dtype=float)
        slope = stats.linregress(days, n_hsc).slope
        values["hsc_drift_per_30d"] = float(slope * 30.0 / max(np.mean(n_hsc), 1.0))
        # MPPs leaving the niche into the lineage compartments (cumulative counter)
        out = m["total_exits"].to_numpy(dtype=float) if "total_exits" in m else None
        if out is not None:
            values["mpp_output_days_share"] = float(np.mean(np.diff(out) > 0))
    rows = []
    for key, tgt in TARGETS.items():
        v = values.get(key, math.nan)
        rows.append(
            {
                "target": key,
                "simulated": v,
                "low": tgt.low,
                "high": tgt.high,
                "unit": tgt.unit,
                "met": bool(tgt.low <= v <= tgt.high) if math.isfinite(v) or v == math.inf else False,
                "null": nulls.get(key, math.nan),
                "source": tgt.source,
            }
        )
    return pd.DataFrame(rows).set_index("target")
