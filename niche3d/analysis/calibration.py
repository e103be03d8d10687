"""The calibration targets of shared/BIOLOGY.md sections 6 and 7, measured on a run.

:func:`calibration_table` returns one row per target with the simulated value, its
confidence interval, the target range, whether it is met, and for localisation rows the
random-placement null of the same geometry. :func:`calibration_series` gives the same
quantities record by record (for time-series plots and drift checks).

Statistics and effective sample sizes
-------------------------------------
Shares and fractions are pooled over all records after the burn-in, which averages out
the fluctuations of a single snapshot. Successive daily records of the same cells are
strongly correlated (a bound HSC stays put for days, a dormant one is dormant for months),
so the records are *not* independent samples. Every interval and test in this module
therefore uses a conservative effective sample size: the mean number of cells per record
(one snapshot's worth), not the pooled row count. Division intervals are rates with a
Poisson count of events; their interval is the exact (chi-square) one. The HSC drift is a
least-squares slope with its standard error inflated by the lag-1 autocorrelation of the
residuals (``sqrt((1 + r) / (1 - r))``).

Targets
-------
1. ``perisinusoidal_share``: share of HSCs within 10 µm of a sinusoid (cell centre to the
   vessel wall, :mod:`niche3d.analysis.localisation`), ~85 % (Acar 2015);
   ``perisinusoidal_enrichment`` the same over the uniform-placement null;
   ``dividing_vs_resting_sinusoid_p`` a two-sided Fisher test that cycling (G1, S/G2/M)
   and resting (dormant, G0) HSCs are equally perisinusoidal (Acar 2015: "distributed
   alike"); met when the test does not reject at the 1 % level.
2. ``dormant_endosteal_enrichment``: share of dormant (label-retaining) HSCs within 10 µm
   of the endosteal wall over the same share of active HSCs (:data:`ENDOSTEAL_UM`); its
   ``p_value`` is a one-sided Fisher test of enrichment, its interval the Katz log
   interval of a ratio of proportions.
3. ``sg2m_fraction``, ``g0_fraction`` (dormant + active G0), ``dormant_fraction``;
   ``dormant_residence_days`` (dormant HSC-days per activation, the dormant division
   interval) and ``active_division_interval_days`` (active HSC-days per division).
4. ``hsc_drift_per_30d`` (relative change of the HSC number per 30 days),
   ``mpp_output_weeks_share`` (share of whole 7-day windows after the burn-in in which
   MPPs left the niche into the lineage compartments) and ``mpp_zero_days_excess``
   (days without MPP output minus the upper 99.9 % bound of that count for Poisson
   output at the observed mean rate; <= 0 means no interruption beyond chance). A block
   of 0.16 mm³ at physiological density releases only a few MPPs per day, so single
   days without output are Poisson sampling, not an arrest of haematopoiesis.
5. Section 7 and section 3, from the metrics after the burn-in (mean, with the 2.5-97.5 %
   quantiles of the records as the interval): ``marrow_exchange_per_day`` (HSCs entering
   the blood per day over the mouse's marrow pool), ``blood_residence_minutes``,
   ``hsc_per_mouse``, ``hsc_per_mm3`` (HSCs per mm³ of marrow, marrow and stroma voxels);
   ``asymmetric_border_share`` from the division counters (asymmetric divisions that
   straddle a niche border over all asymmetric divisions in the window, Wilson interval).

The ranges, units and sources are data: ``niche3d/analysis/targets.toml`` (package data,
:func:`load_targets`). :data:`TARGETS` holds the ones above (``calibration = true``); the
file also holds the targets that need another experiment (G-CSF, seeding densities,
transplants) or that the default model does not meet (the blood count, the free niche
share), which :mod:`niche3d.analysis.validation` measures and reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from niche3d.analysis.localisation import (
    COMPARTMENTS,
    localisation_table,
    wall_distance_um,
    wilson_interval,
)
from niche3d.tissue.lattice import Lattice

__all__ = [
    "Target",
    "TARGETS",
    "load_targets",
    "HSC_STATES",
    "CYCLING",
    "RESTING",
    "ENDOSTEAL_UM",
    "PERISINUSOIDAL_UM",
    "calibration_table",
    "calibration_series",
    "hsc_positions",
    "division_intervals",
]

#: HSC states on the lattice (MPPs and circulating cells excluded)
HSC_STATES: tuple[str, ...] = ("dormant", "active_g0", "active_g1", "active_sg2m")
#: cycling HSCs (Ki-67 positive)
CYCLING: tuple[str, ...] = ("active_g1", "active_sg2m")
#: resting HSCs (G0)
RESTING: tuple[str, ...] = ("dormant", "active_g0")
#: distance from the endosteal wall within which dormant vs active HSCs are compared (µm):
#: the same "within 10 µm of the wall" as for sinusoids, i.e. the HSCs in contact with the
#: endosteum that Kiel 2005 counts as endosteal (~14 %). A wider band (30 µm) holds half of
#: all marrow in trabecular geometry and dilutes any contact effect into the null.
ENDOSTEAL_UM = 10.0
#: distance from a sinusoid wall that counts as perisinusoidal (µm, Acar 2015)
PERISINUSOIDAL_UM = 10.0


@dataclass(frozen=True)
class Target:
    """One calibration target: a range of acceptable values and where it comes from.

    ``key``, ``low``, ``high`` (inclusive), ``unit`` and ``source`` (the citation as
    BIOLOGY.md gives it); the rest describe it for :mod:`niche3d.analysis.validation`:
    ``item`` (BIOLOGY.md item, e.g. ``"6.3"``), ``description``, ``experiment`` (the kind
    of run that measures it), ``calibration`` (part of :data:`TARGETS`), ``range_note``,
    ``known_issue`` and ``needs`` (the run that would measure it).
    """

    key: str
    low: float
    high: float
    unit: str
    source: str
    item: str = ""
    description: str = ""
    experiment: str = "homeostasis"
    calibration: bool = True
    range_note: str = ""
    known_issue: str = ""
    needs: str = ""


_TARGET_KEYS = {"key", "item", "description", "low", "high", "unit", "source", "experiment",
                "calibration", "range_note", "known_issue"}


def load_targets(text: str | None = None) -> dict[str, Target]:
    """Every target of BIOLOGY.md sections 3, 6 and 7 from ``targets.toml``.

    Parameters
    ----------
    text
        TOML text to read instead of the package's ``niche3d/analysis/targets.toml``.

    Returns
    -------
    dict of str to Target
        In the file's order, keyed by ``Target.key``.

    Raises
    ------
    ValueError
        A malformed entry (missing or unknown keys, an empty source, ``low > high``, an
        experiment not in the file's ``[experiments]`` table, a duplicate key).
    """
    import tomllib
    from importlib import resources

    if text is None:
        text = resources.files("niche3d.analysis").joinpath("targets.toml").read_text("utf-8")
    doc = tomllib.loads(text)
    experiments = doc.get("experiments", {})
    out: dict[str, Target] = {}
    for i, e in enumerate(doc.get("target", [])):
        where = f"targets.toml target {i} ({e.get('key', '?')})"
        need = _TARGET_KEYS - {"range_note", "known_issue"}
        if set(e) - _TARGET_KEYS or need - set(e):
            raise ValueError(f"{where}: unknown keys {sorted(set(e) - _TARGET_KEYS)}, "
                             f"missing {sorted(need - set(e))}")
        low, high = float(e["low"]), float(e["high"])
        if not (low <= high and str(e["source"]).strip() and e["experiment"] in experiments):
            raise ValueError(f"{where}: needs low <= high, a source and one of the experiments "
                             f"{sorted(experiments)}")
        if e["key"] in out:
            raise ValueError(f"{where}: duplicate key")
        out[e["key"]] = Target(e["key"], low, high, str(e["unit"]), str(e["source"]),
                               item=str(e["item"]), description=str(e["description"]),
                               experiment=str(e["experiment"]), calibration=bool(e["calibration"]),
                               range_note=str(e.get("range_note", "")),
                               known_issue=str(e.get("known_issue", "")),
                               needs=str(experiments[e["experiment"]].get("needs", "")))
    return out


#: the homeostasis targets the default scenario is calibrated to (``calibration = true`` in
#: targets.toml): the rows of :func:`calibration_table`, in the file's order
TARGETS: dict[str, Target] = {k: t for k, t in load_targets().items() if t.calibration}


def _check_states(states: tuple[str, ...]) -> None:
    allowed = (*HSC_STATES, "mpp", "circulating")
    bad = [s for s in states if s not in allowed]
    if bad or not states:
        raise ValueError(f"states = {states!r}: each must be one of {allowed} (at least one)")


def hsc_positions(cells: pd.DataFrame, voxel_um: float, states: tuple[str, ...] = HSC_STATES) -> np.ndarray:
    """Integer voxel indices (z, y, x) of on-lattice cells in ``states``.

    Parameters
    ----------
    cells
        A cells table (``Run.cells``: columns ``state`` and ``z, y, x`` in µm, voxel
        centres; circulating cells have NaN coordinates and are left out).
    voxel_um
        Voxel edge in µm (> 0).
    states
        State names to keep.

    Returns
    -------
    numpy.ndarray
        (n, 3) int64.
    """
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um = {voxel_um!r} must be a finite number > 0")
    _check_states(tuple(states))
    missing = {"state", "z", "y", "x"} - set(cells.columns)
    if missing:
        raise ValueError(f"cells table lacks columns {sorted(missing)}")
    sel = cells[cells["state"].isin(states) & cells["z"].notna()]
    return np.round(sel[["z", "y", "x"]].to_numpy(dtype=np.float64) / voxel_um - 0.5).astype(np.int64)


def division_intervals(metrics: pd.DataFrame, *, confidence: float = 0.95) -> dict[str, float]:
    """Mean division interval and dormant residence from cumulative counters (days).

    Uses HSC-days per state integrated over the records (trapezoid) and the cumulative
    ``total_divisions`` and ``total_activations`` counters; an interval is
    ``state-days / events``, the maximum-likelihood estimate for exponential waiting,
    with the exact Poisson (chi-square) interval on the event count.

    Parameters
    ----------
    metrics
        ``Run.metrics`` (or a slice of it): ``t`` in hours, ``n_<state>`` and the
        cumulative counters.
    confidence
        Level of the intervals, in (0, 1).

    Returns
    -------
    dict
        ``active_division_interval_days`` and, if activations are counted,
        ``dormant_residence_days``; each with ``_low`` and ``_high`` keys (inf when no
        event was seen).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r} must be in (0, 1)")
    need = {"t", "n_dormant", "n_active_g0", "n_active_g1", "n_active_sg2m", "total_divisions"}
    missing = need - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)}")
    m = metrics.sort_values("t")
    days = m["t"].to_numpy(dtype=np.float64) / 24.0
    if len(days) < 2:
        raise ValueError(f"need at least two records to measure intervals, got {len(days)}")
    active = sum(m[f"n_{s}"].to_numpy(dtype=np.float64) for s in ("active_g0", "active_g1", "active_sg2m"))
    dormant = m["n_dormant"].to_numpy(dtype=np.float64)
    out: dict[str, float] = {}

    def put(key: str, exposure: float, counter: str) -> None:
        k = float(m[counter].iloc[-1] - m[counter].iloc[0])
        alpha = 1.0 - confidence
        out[key] = exposure / k if k > 0 else math.inf
        # exact Poisson interval on the count, inverted for the interval (days/event)
        k_lo = stats.chi2.ppf(alpha / 2, 2 * k) / 2 if k > 0 else 0.0
        k_hi = stats.chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2
        out[f"{key}_low"] = exposure / k_hi
        out[f"{key}_high"] = exposure / k_lo if k_lo > 0 else math.inf

    put("active_division_interval_days", float(np.trapezoid(active, days)), "total_divisions")
    if "total_activations" in m:
        put("dormant_residence_days", float(np.trapezoid(dormant, days)), "total_activations")
    return out


def _check_run(run: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    for attr in ("cells", "metrics", "tissue", "voxel_um"):
        if not hasattr(run, attr):
            raise TypeError(f"run must be a niche3d Run (open_run), got {type(run).__name__} without .{attr}")
    metrics = run.metrics
    if len(metrics) < 2:
        raise ValueError(f"{getattr(run, 'path', 'run')}: need at least two records, found {len(metrics)}")
    return run.cells, metrics


def calibration_series(run: Any, *, within_um: float = PERISINUSOIDAL_UM) -> pd.DataFrame:
    """The section-6 quantities record by record.

    Parameters
    ----------
    run
        A :class:`niche3d.io.Run`.
    within_um
        Perisinusoidal / endosteal distance threshold (cell centre to wall, µm, > 0).

    Returns
    -------
    pandas.DataFrame
        Index ``record``; columns ``t_days``, ``n_<state>`` for the HSC states and
        ``n_mpp``, ``hsc_total``, ``frac_sg2m``, ``frac_g0``, ``frac_dormant``,
        ``perisinusoidal_share`` and ``endosteal_share`` (HSCs within ``within_um``),
        ``perisinusoidal_null`` and ``endosteal_null`` (uniform placement on enterable
        voxels), ``mpp_output_per_day`` (MPPs that left the niche into the lineage
        compartments per day since the previous record, NaN for the first) and
        ``divisions_per_day``.
    """
    if not (isinstance(within_um, int | float) and math.isfinite(within_um) and within_um > 0):
        raise ValueError(f"within_um = {within_um!r} must be a finite number > 0")
    cells, metrics = _check_run(run)
    lattice = Lattice(np.asarray(run.tissue.isel(t=-1).values), run.voxel_um)
    enter = lattice.enterable
    m = metrics.sort_values("t").set_index("record")
    out = pd.DataFrame(index=m.index)
    out["t_days"] = m["t"].to_numpy(dtype=np.float64) / 24.0
    hsc = cells[cells["state"].isin(HSC_STATES)]
    counts = (
        cells.groupby(["record", "state"]).size().unstack(fill_value=0).reindex(index=m.index, fill_value=0)
    )
    for s in (*HSC_STATES, "mpp"):
        out[f"n_{s}"] = counts[s].to_numpy() if s in counts else 0
    n = out[[f"n_{s}" for s in HSC_STATES]].sum(axis=1).astype(np.float64)
    out["hsc_total"] = n
    safe = n.where(n > 0)
    out["frac_sg2m"] = out["n_active_sg2m"] / safe
    out["frac_g0"] = (out["n_dormant"] + out["n_active_g0"]) / safe
    out["frac_dormant"] = out["n_dormant"] / safe
    pos = hsc_positions(hsc, run.voxel_um)
    on = hsc[hsc["z"].notna()]
    for comp, col in (("sinusoid", "perisinusoidal"), ("endosteum", "endosteal")):
        if not lattice.mask(*COMPARTMENTS[comp]).any():
            out[f"{col}_share"] = math.nan
            out[f"{col}_null"] = math.nan
            continue
        d = wall_distance_um(lattice, comp)
        near = d[pos[:, 0], pos[:, 1], pos[:, 2]] <= within_um
        share = pd.Series(near, index=on.index).groupby(on["record"]).mean()
        out[f"{col}_share"] = share.reindex(m.index)
        out[f"{col}_null"] = float(np.mean(d[enter] <= within_um))
    days = out["t_days"].to_numpy()
    for counter, col in (("total_exits", "mpp_output_per_day"), ("total_divisions", "divisions_per_day")):
        if counter in m:
            c = m[counter].to_numpy(dtype=np.float64)
            rate = np.full(len(c), math.nan)
            rate[1:] = np.diff(c) / np.diff(days)
            out[col] = rate
    return out


def _additive(col: str) -> bool:
    """Metrics that add up over replicate blocks (counts and cumulative counters); every
    other metric (fractions, rates per cell, per-mouse estimates) is averaged."""
    return col.startswith(("n_", "total_", "niche_sites")) or col in ("hsc_total", "donor_cells")


def _pool(runs: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame, Lattice, int]:
    """Cells and metrics of replicate runs of one geometry as one population.

    Cells get distinct record numbers per replicate; metrics are aligned on the record
    times present in every run, counts summed and the rest averaged.
    """
    if not runs:
        raise ValueError("no runs given")
    frames = [_check_run(r) for r in runs]
    lab0 = np.asarray(runs[0].tissue.isel(t=-1).values)
    for r in runs[1:]:
        if r.voxel_um != runs[0].voxel_um or not np.array_equal(np.asarray(r.tissue.isel(t=-1).values), lab0):
            raise ValueError(
                "replicate runs must share one geometry (same tissue and voxel size): fix "
                "tissue.seed and vary run.seed"
            )
    lattice = Lattice(lab0, runs[0].voxel_um)
    if len(runs) == 1:
        cells, metrics = frames[0]
        return cells, metrics, lattice, 1
    offset = 0
    parts = []
    for cells, _ in frames:
        c = cells.copy()
        c["record"] = c["record"] + offset
        offset += int(cells["record"].max()) + 1 if len(cells) else 1
        parts.append(c)
    times = set(frames[0][1]["t"])
    for _, m in frames[1:]:
        times &= set(m["t"])
    ms = [m[m["t"].isin(times)].sort_values("t").reset_index(drop=True) for _, m in frames]
    pooled = ms[0].copy()
    for col in pooled.columns:
        if col in ("t", "record") or not np.issubdtype(pooled[col].dtype, np.number):
            continue
        stack = np.stack([m[col].to_numpy(dtype=np.float64) for m in ms])
        if _additive(col):
            pooled[col] = stack.sum(axis=0)
        else:  # the mean of the finite values (NaN where no replicate has one)
            ok = np.isfinite(stack)
            n = ok.sum(axis=0)
            pooled[col] = np.where(n > 0, np.where(ok, stack, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    return pd.concat(parts, ignore_index=True), pooled, lattice, len(runs)


def calibration_table(
    run: Any, *, skip_days: float = 7.0, confidence: float = 0.95
) -> pd.DataFrame:
    """Measure the section-6 and section-7 targets on a run or on replicate runs.

    Parameters
    ----------
    run
        A :class:`niche3d.io.Run` of a homeostasis scenario, or a sequence of replicate
        runs of one geometry (same ``tissue.seed``, different ``run.seed``): their cells
        are pooled (one snapshot of each replicate is the effective sample), counts and
        counters summed and the other metrics averaged record by record.
    skip_days
        Records before this time are a burn-in and are not used (>= 0; if the run is
        shorter, only the last record's state is used for shares).
    confidence
        Level of the ``ci_low``/``ci_high`` intervals, in (0, 1).

    Returns
    -------
    pandas.DataFrame
        Index ``target``; columns ``simulated``, ``ci_low``, ``ci_high`` (interval on the
        simulated value with the effective sample sizes of the module docstring),
        ``low``, ``high``, ``unit``, ``met``, ``null`` (random placement, localisation
        rows only), ``p_value`` (the row's test: binomial against the null for the
        localisation share and enrichment, Fisher for the comparisons), ``n_eff`` and
        ``source``.
    """
    if not (isinstance(skip_days, int | float) and math.isfinite(skip_days) and skip_days >= 0):
        raise ValueError(f"skip_days = {skip_days!r} must be a finite number >= 0")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r} must be in (0, 1)")
    runs = list(run) if isinstance(run, list | tuple) else [run]
    cells, metrics, lattice, n_runs = _pool(runs)
    voxel_um = runs[0].voxel_um
    t_end = float(metrics["t"].max())
    t0 = min(skip_days * 24.0, t_end)
    late = cells[cells["t"] >= t0]
    # records per replicate: counts / n_rec are one snapshot of every replicate together
    n_rec = max(int(late["record"].nunique()) // n_runs, 1)
    rows: dict[str, dict[str, float]] = {}

    def row(key: str, value: float, **kw: float) -> None:
        rows[key] = {"simulated": float(value), **{k: float(v) for k, v in kw.items()}}

    def eff_counts(states: tuple[str, ...], comp: str, thr: float) -> tuple[float, float]:
        """(cells within thr, cells) per record on average: one snapshot's worth."""
        pos = hsc_positions(late, voxel_um, states)
        if not len(pos):
            return 0.0, 0.0
        d = wall_distance_um(lattice, comp)[pos[:, 0], pos[:, 1], pos[:, 2]]
        return float(np.sum(d <= thr)) / n_rec, len(pos) / n_rec

    # 1. localisation, pooled over records after burn-in
    pos = hsc_positions(late, voxel_um)
    loc = localisation_table(lattice, pos, within_um=PERISINUSOIDAL_UM)
    if "sinusoid" in loc.index and len(pos):
        null = float(loc.loc["sinusoid", "null"])
        k, n = eff_counts(HSC_STATES, "sinusoid", PERISINUSOIDAL_UM)
        share = k / n
        lo, hi = wilson_interval(k, n, confidence)
        ki, ni = round(k), max(round(n), 1)
        p = float(stats.binomtest(min(ki, ni), ni, null).pvalue) if 0 < null < 1 else math.nan
        row("perisinusoidal_share", share, ci_low=lo, ci_high=hi, null=null, p_value=p, n_eff=n)
        row("perisinusoidal_enrichment", share / null, ci_low=lo / null, ci_high=hi / null, null=1.0,
            p_value=p, n_eff=n)
        ka, na = eff_counts(CYCLING, "sinusoid", PERISINUSOIDAL_UM)
        kb, nb = eff_counts(RESTING, "sinusoid", PERISINUSOIDAL_UM)
        if na >= 1 and nb >= 1:
            ka_, na_, kb_, nb_ = round(ka), round(na), round(kb), round(nb)
            table = [[ka_, na_ - ka_], [kb_, nb_ - kb_]]
            row("dividing_vs_resting_sinusoid_p", float(stats.fisher_exact(table).pvalue),
                n_eff=na + nb, p_value=float(stats.fisher_exact(table).pvalue))
    # 2. dormant vs active near the endosteum
    if "endosteum" in loc.index:
        kd, nd = eff_counts(("dormant",), "endosteum", ENDOSTEAL_UM)
        ka, na = eff_counts(HSC_STATES[1:], "endosteum", ENDOSTEAL_UM)
        if nd > 0 and na > 0 and ka > 0:
            ratio = (kd / nd) / (ka / na)
            kd_, nd_, ka_, na_ = round(kd), max(round(nd), 1), round(ka), max(round(na), 1)
            table = [[kd_, nd_ - kd_], [ka_, na_ - ka_]]
            p = float(stats.fisher_exact(table, alternative="greater").pvalue)
            # Katz log interval of a ratio of two proportions
            z = stats.norm.ppf(0.5 + confidence / 2)
            if kd_ > 0 and ka_ > 0:
                se = math.sqrt(1 / kd_ - 1 / nd_ + 1 / ka_ - 1 / na_)
                lo, hi = ratio * math.exp(-z * se), ratio * math.exp(z * se)
            else:
                lo, hi = 0.0, math.inf
            row("dormant_endosteal_enrichment", ratio, ci_low=lo, ci_high=hi, p_value=p, n_eff=nd + na)
    # 3. cycling fractions (pooled over records after burn-in) and intervals
    hsc = late[late["state"].isin(HSC_STATES)]
    if len(hsc):
        counts = hsc["state"].value_counts()
        n = len(hsc) / n_rec
        for key, k in (
            ("sg2m_fraction", counts.get("active_sg2m", 0)),
            ("g0_fraction", counts.get("dormant", 0) + counts.get("active_g0", 0)),
            ("dormant_fraction", counts.get("dormant", 0)),
        ):
            share = float(k) / len(hsc)
            lo, hi = wilson_interval(share * n, n, confidence)
            row(key, share, ci_low=lo, ci_high=hi, n_eff=n)
    mlate = metrics[metrics["t"] >= t0] if (metrics["t"] >= t0).sum() >= 2 else metrics
    iv = division_intervals(mlate, confidence=confidence)
    for key in ("active_division_interval_days", "dormant_residence_days"):
        if key in iv:
            row(key, iv[key], ci_low=iv[f"{key}_low"], ci_high=iv[f"{key}_high"])
    # 4. stability and continuous output
    m = metrics[metrics["t"] >= t0].sort_values("t")
    if len(m) >= 3:
        days = m["t"].to_numpy(dtype=np.float64) / 24.0
        n_hsc = m["hsc_total"].to_numpy(dtype=np.float64)
        fit = stats.linregress(days, n_hsc)
        resid = n_hsc - (fit.intercept + fit.slope * days)
        r1 = float(np.corrcoef(resid[:-1], resid[1:])[0, 1]) if len(resid) > 3 and resid.std() > 0 else 0.0
        r1 = min(max(r1, 0.0), 0.99)
        se = fit.stderr * math.sqrt((1 + r1) / (1 - r1))
        scale = 30.0 / max(float(np.mean(n_hsc)), 1.0)
        z = stats.t.ppf(0.5 + confidence / 2, max(len(m) - 2, 1))
        row("hsc_drift_per_30d", fit.slope * scale, ci_low=(fit.slope - z * se) * scale,
            ci_high=(fit.slope + z * se) * scale, n_eff=len(m))
        if "total_exits" in m:
            out = m["total_exits"].to_numpy(dtype=np.float64)
            n_weeks = int((days[-1] - days[0]) // 7.0)
            if n_weeks >= 1:
                edges = days[0] + 7.0 * np.arange(n_weeks + 1)
                cum = np.interp(edges, days, out)
                row("mpp_output_weeks_share", float(np.mean(np.diff(cum) > 0)), n_eff=n_weeks)
            per = np.diff(out)
            dt = np.diff(days)
            if per.size and np.allclose(dt, dt[0]):
                lam = float(per.mean())
                p0 = math.exp(-lam)
                bound = float(stats.binom.ppf(0.999, per.size, p0))
                row("mpp_zero_days_excess", float(np.sum(per == 0)) - bound, n_eff=per.size,
                    null=per.size * p0)
    # section 7 and 3: trafficking, border asymmetry and HSC density from the metrics
    m7 = metrics[metrics["t"] >= t0].sort_values("t")
    if len(m7) >= 2:
        for key in ("marrow_exchange_per_day", "blood_residence_minutes", "hsc_per_mouse"):
            if key in m7:
                v = m7[key].to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                if v.size:
                    row(key, float(v.mean()), ci_low=float(np.quantile(v, 0.025)),
                        ci_high=float(np.quantile(v, 0.975)), n_eff=v.size)
        if {"total_asymmetric_divisions_border", "total_asymmetric_divisions_same_side"} <= set(m7):
            b = float(m7["total_asymmetric_divisions_border"].iloc[-1]
                      - m7["total_asymmetric_divisions_border"].iloc[0])
            a = b + float(m7["total_asymmetric_divisions_same_side"].iloc[-1]
                          - m7["total_asymmetric_divisions_same_side"].iloc[0])
            if a > 0:
                lo, hi = wilson_interval(b, a, confidence)
                row("asymmetric_border_share", b / a, ci_low=lo, ci_high=hi, n_eff=a)
        marrow_mm3 = float(lattice.enterable.sum()) * lattice.voxel_volume_mm3
        if marrow_mm3 > 0:
            v = m7["hsc_total"].to_numpy(dtype=np.float64) / (marrow_mm3 * n_runs)
            row("hsc_per_mm3", float(v.mean()), ci_low=float(np.quantile(v, 0.025)),
                ci_high=float(np.quantile(v, 0.975)), n_eff=len(v))
    result = []
    for key, tgt in TARGETS.items():
        r = rows.get(key, {})
        v = r.get("simulated", math.nan)
        result.append(
            {
                "target": key,
                "simulated": v,
                "ci_low": r.get("ci_low", math.nan),
                "ci_high": r.get("ci_high", math.nan),
                "low": tgt.low,
                "high": tgt.high,
                "unit": tgt.unit,
                "met": bool(not math.isnan(v) and tgt.low <= v <= tgt.high),
                "null": r.get("null", math.nan),
                "p_value": r.get("p_value", math.nan),
                "n_eff": r.get("n_eff", math.nan),
                "source": tgt.source,
            }
        )
    return pd.DataFrame(result).set_index("target")
