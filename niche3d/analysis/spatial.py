"""Distances of cells to the niche structures, beside uniform random placement.

:func:`distance_distributions` measures, for each structure (sinusoid, endosteum,
arteriole), the distance from every selected cell's centre to the structure's wall, the
same distance :mod:`niche3d.analysis.localisation` and the calibration use (centre to the
*surface* of the nearest voxel of the structure: centre-to-centre distance minus half a
voxel). The null is uniform placement on the enterable voxels (marrow and stroma) of the
same geometry: its distribution is exact (every enterable voxel), and its sampling band
comes from random sets of the same size as the cell sample, drawn with
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from niche3d.analysis._common import check_choices, check_int, check_number
from niche3d.analysis.calibration import HSC_STATES, hsc_positions
from niche3d.analysis.localisation import COMPARTMENTS, wall_distance_um, wilson_interval
from niche3d.analysis.source import SourceLike, as_source

__all__ = ["DistanceDistributions", "distance_distributions", "STRUCTURES", "POSITIONED_STATES"]

#: structures a distance can be measured to (the compartments of localisation.py)
STRUCTURES: tuple[str, ...] = tuple(COMPARTMENTS)
#: states of cells that sit on the lattice (the HSC states and MPPs)
POSITIONED_STATES: tuple[str, ...] = (*HSC_STATES, "mpp")
#: most points of an ECDF table (a lattice has at most this many distinct distances
#: below a few hundred µm; beyond, the grid is quantile-spaced)
_MAX_GRID = 600


@dataclass(frozen=True)
class DistanceDistributions:
    """Result of :func:`distance_distributions` (all distances in µm).

    Attributes
    ----------
    summary
        One row per structure (index ``structure``): ``present`` (the geometry has it),
        ``n_cells`` (pooled over the records), ``n_records``, ``n_eff`` (cells per record:
        the size of the random sets and of the effective sample), ``median_um``,
        ``null_median_um``, ``median_ratio`` (cells / null), ``ks_statistic`` (largest
        distance between the cells' ECDF and the exact null CDF), ``p_value`` (Monte-Carlo,
        two-sided: the share of ``n_random`` random sets of ``n_eff`` points at least as far
        from the null, with the +1 correction; exact for lattice ties), ``within_um``,
        ``share_within`` with its Wilson interval ``share_ci_low``/``share_ci_high`` (on
        ``n_eff``), ``null_share_within`` and ``enrichment`` (share / null share).
    ecdf
        Long table: ``structure``, ``distance_um``, ``cells`` (ECDF of the cells), ``null``
        (exact CDF of uniform placement), ``null_low``, ``null_high`` (pointwise
        ``confidence`` envelope of the ECDF of random sets of ``n_eff`` points).
    histogram
        Long table: ``structure``, ``bin_low_um``, ``bin_high_um``, ``cells``, ``null``,
        ``null_low``, ``null_high`` (shares of points per bin, same meanings).
    distances
        One row per cell and structure: ``record``, ``t_hours``, ``track_id``, ``state``,
        ``structure``, ``distance_um``.
    """

    summary: pd.DataFrame
    ecdf: pd.DataFrame
    histogram: pd.DataFrame
    distances: pd.DataFrame


def _ecdf(sorted_values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if sorted_values.size == 0:
        return np.full(grid.shape, np.nan)
    return np.searchsorted(sorted_values, grid, side="right") / sorted_values.size


def _ks_to(sorted_values: np.ndarray, grid: np.ndarray, cdf: np.ndarray) -> float:
    """sup |ECDF - CDF| for right-continuous step functions that jump only on ``grid`` (its
    first point the smallest value): constant between grid points, so exact on them."""
    diff = np.abs(_ecdf(sorted_values, grid) - cdf)
    return float(diff.max()) if diff.size else math.nan


def distance_distributions(
    src: SourceLike,
    structures: str | Iterable[str] = STRUCTURES,
    *,
    states: str | Iterable[str] = HSC_STATES,
    records: int | Iterable[int] | str = "last",
    n_random: int = 1000,
    seed: int | None = 0,
    within_um: float = 10.0,
    bin_um: float | None = None,
    confidence: float = 0.95,
) -> DistanceDistributions:
    """Distances of cells to sinusoids, endosteum and arterioles against random placement.

    Parameters
    ----------
    src
        A :class:`niche3d.io.Run`, a run-store path, a live
        :class:`~niche3d.simulation.Simulation` or a :class:`~niche3d.analysis.source.Source`.
    structures
        One or more of ``"sinusoid"`` (lumen and endothelium), ``"endosteum"`` (endosteum
        and SNOs), ``"arteriole"``. A structure the geometry lacks gets a summary row with
        ``present = False`` and NaN statistics.
    states
        Cell states pooled as "the cells": HSC states (default: all four) and/or ``"mpp"``.
    records
        ``"last"`` (default: one snapshot), ``"all"``, a record index or a list. Several
        records are pooled; the effective sample size is the mean number of cells per
        record (successive records see largely the same cells), which sets the size of
        the random sets, the p-value's reference and the interval.
    n_random
        Random sets drawn for the band and the p-value (0: no band, NaN p-value).
    seed
        Seed of ``numpy.random.default_rng``; a given seed gives identical results.
    within_um
        Threshold of the ``share_within`` columns (µm, > 0; 10 µm as Acar 2015).
    bin_um
        Histogram bin width in µm (default: one voxel).
    confidence
        Level of the null envelope and of the share's interval, in (0, 1).

    Returns
    -------
    DistanceDistributions
        ``summary``, ``ecdf``, ``histogram`` and ``distances`` tables (units in
        ``df.attrs['units']`` and in the ``_um`` column names).

    Raises
    ------
    ValueError
        An unknown structure or state, a record out of range, a bad number; the records
        span more than one geometry.

    Examples
    --------
    >>> from niche3d.analysis import distance_distributions
    >>> dd = distance_distributions("runs/homeostasis.zarr", records="last")  # doctest: +SKIP
    >>> dd.summary[["n_cells", "median_um", "null_median_um", "ks_statistic", "p_value"]]  # doctest: +SKIP
    >>> d = dd.ecdf[dd.ecdf.structure == "sinusoid"]                              # doctest: +SKIP
    >>> plt.step(d.distance_um, d.cells); plt.fill_between(d.distance_um, d.null_low, d.null_high)  # doctest: +SKIP
    """
    s = as_source(src)
    structs = check_choices(structures, STRUCTURES, "structures")
    sts = check_choices(states, POSITIONED_STATES, "states")
    recs = s.records(records)
    n_random = check_int(n_random, "n_random", 0)
    within_um = check_number(within_um, "within_um")
    conf = check_number(confidence, "confidence", high=1.0, high_open=True)
    if seed is not None:
        check_int(seed, "seed", 0)
    lat = s.lattice(int(recs[0]))
    for r in recs[1:]:
        if s.lattice(int(r)) is not lat:
            raise ValueError(f"records = {records!r} span more than one tissue geometry "
                             f"(records {int(recs[0])} and {int(r)} differ); analyse them separately")
    bin_um = lat.voxel_um if bin_um is None else check_number(bin_um, "bin_um")
    cells = s.cells[s.cells["record"].isin(recs)]
    sel = cells[cells["state"].isin(sts) & cells["z"].notna()]
    pos = hsc_positions(sel, s.voxel_um, sts)
    n = len(pos)
    n_eff = int(round(n / len(recs))) if n else 0
    rng = np.random.default_rng(seed)
    enter = lat.enterable
    rows, ecdfs, hists, dists = [], [], [], []
    lo_q, hi_q = (1 - conf) / 2, (1 + conf) / 2
    for name in structs:
        row: dict[str, object] = {"structure": name, "present": False, "n_cells": n,
                                  "n_records": len(recs), "n_eff": n_eff}
        if not lat.mask(*COMPARTMENTS[name]).any():
            rows.append(row)
            continue
        row["present"] = True
        d_map = wall_distance_um(lat, name)
        null = np.sort(d_map[enter])
        obs = d_map[pos[:, 0], pos[:, 1], pos[:, 2]] if n else np.zeros(0)
        obs_sorted = np.sort(obs)
        dists.append(pd.DataFrame({"record": sel["record"].to_numpy(), "t_hours": sel["t"].to_numpy(),
                                   "track_id": sel["track_id"].to_numpy(),
                                   "state": sel["state"].astype(str).to_numpy(), "structure": name,
                                   "distance_um": obs}))
        # every distinct value either distribution jumps at: KS is exact on this grid
        full = np.unique(np.concatenate([null, obs]))
        null_cdf = _ecdf(null, full)
        ks = _ks_to(obs_sorted, full, null_cdf) if n else math.nan
        grid = full if full.size <= _MAX_GRID else np.unique(np.quantile(full, np.linspace(0, 1, _MAX_GRID)))
        edges = bin_um * np.arange(max(math.ceil(float(full[-1]) / bin_um), 1) + 1)
        band = np.full((2, grid.size), np.nan)
        hband = np.full((2, edges.size - 1), np.nan)
        p = math.nan
        if n_random and n_eff and null.size:
            draws = np.sort(null[rng.integers(0, null.size, size=(n_random, n_eff))], axis=1)
            e = np.stack([_ecdf(row_, grid) for row_ in draws])
            band = np.quantile(e, [lo_q, hi_q], axis=0)
            h = np.stack([np.histogram(row_, edges)[0] for row_ in draws]) / n_eff
            hband = np.quantile(h, [lo_q, hi_q], axis=0)
            if n:
                d_rand = np.array([_ks_to(row_, full, null_cdf) for row_ in draws])
                p = float((1 + np.sum(d_rand >= ks - 1e-12)) / (n_random + 1))
        ecdfs.append(pd.DataFrame({"structure": name, "distance_um": grid,
                                   "cells": _ecdf(obs_sorted, grid), "null": _ecdf(null, grid),
                                   "null_low": band[0], "null_high": band[1]}))
        hists.append(pd.DataFrame({
            "structure": name, "bin_low_um": edges[:-1], "bin_high_um": edges[1:],
            "cells": np.histogram(obs, edges)[0] / n if n else np.nan,
            "null": np.histogram(null, edges)[0] / null.size,
            "null_low": hband[0], "null_high": hband[1]}))
        med = float(np.median(obs)) if n else math.nan
        null_med = float(np.median(null))
        k = int(np.sum(obs <= within_um))
        null_share = float(np.mean(null <= within_um))
        share = k / n if n else math.nan
        ci = wilson_interval(share * n_eff, n_eff, conf) if n_eff else (math.nan, math.nan)
        row.update(median_um=med, null_median_um=null_med,
                   median_ratio=med / null_med if null_med > 0 else math.nan,
                   ks_statistic=ks, p_value=p, within_um=within_um, share_within=share,
                   share_ci_low=ci[0], share_ci_high=ci[1], null_share_within=null_share,
                   enrichment=share / null_share if null_share > 0 else math.nan)
        rows.append(row)
    cols = ["present", "n_cells", "n_records", "n_eff", "median_um", "null_median_um",
            "median_ratio", "ks_statistic", "p_value", "within_um", "share_within",
            "share_ci_low", "share_ci_high", "null_share_within", "enrichment"]
    summary = pd.DataFrame(rows).set_index("structure").reindex(columns=cols)
    summary["present"] = summary["present"].astype(bool)
    um = {c: "micrometer" for c in ("median_um", "null_median_um", "within_um", "distance_um",
                                    "bin_low_um", "bin_high_um")}
    out = []
    for parts, columns in (
            (ecdfs, ["structure", "distance_um", "cells", "null", "null_low", "null_high"]),
            (hists, ["structure", "bin_low_um", "bin_high_um", "cells", "null", "null_low", "null_high"]),
            (dists, ["record", "t_hours", "track_id", "state", "structure", "distance_um"])):
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
        out.append(df)
    for df in (summary, *out):
        df.attrs["units"] = {k: v for k, v in {**um, "t_hours": "hour"}.items() if k in df.columns}
        df.attrs["source"] = s.label
    return DistanceDistributions(summary, *out)
