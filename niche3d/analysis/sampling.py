"""Field values where the cells are, beside uniformly random marrow voxels.

:func:`field_at_cells` reads a field (CXCL12, SCF: nM) at the voxels of the selected
cells, and at ``n_random`` voxels drawn uniformly from the enterable voxels (marrow and
stroma, where a cell could be) of the same geometry with
``numpy.random.default_rng(seed)``. The value at a cell's voxel is what the cell senses
(cells are sinks of the chemokine, so it includes their own uptake).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from niche3d.analysis._common import check_choices, check_int
from niche3d.analysis.calibration import HSC_STATES, hsc_positions
from niche3d.analysis.source import SourceLike, as_source

__all__ = ["FieldSample", "field_at_cells"]

_POSITIONED = (*HSC_STATES, "mpp")


@dataclass(frozen=True)
class FieldSample:
    """Result of :func:`field_at_cells`.

    Attributes
    ----------
    summary
        One row per record: ``record``, ``t_hours``, ``field``, ``unit``, ``recorded``
        (False where the store holds no field at that record: NaN statistics),
        ``n_cells``, ``cells_median``, ``cells_q25``, ``cells_q75``, ``cells_mean``,
        ``n_random``, ``random_median``, ``random_q25``, ``random_q75``, ``random_mean``,
        ``marrow_median`` and ``marrow_mean`` (exact, over every enterable voxel),
        ``median_ratio`` (cells / random), ``mwu_statistic`` (Mann-Whitney U of the cells
        against the random voxels), ``prob_cells_higher`` (U / (n_cells n_random): the
        chance a cell's value exceeds a random voxel's, ties counted half),
        ``mwu_p_value`` (two-sided), ``ks_statistic`` and ``ks_p_value`` (two-sample KS).
        Values in ``unit`` (nM for the default fields).
    values
        Long table of the samples: ``record``, ``t_hours``, ``group`` (``cells`` or
        ``random``), ``track_id`` (-1 for random voxels), ``state`` (None for random),
        ``z_um``, ``y_um``, ``x_um`` (voxel centre) and ``value`` (in ``unit``).
    """

    summary: pd.DataFrame
    values: pd.DataFrame


def _quant(v: np.ndarray) -> tuple[float, float, float, float]:
    if not v.size:
        return (math.nan,) * 4
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return float(med), float(q25), float(q75), float(np.mean(v, dtype=np.float64))


def field_at_cells(
    src: SourceLike,
    field: str = "cxcl12",
    *,
    states: str | Iterable[str] = HSC_STATES,
    records: int | Iterable[int] | str = "all",
    n_random: int = 1000,
    seed: int | None = 0,
) -> FieldSample:
    """A field at the cells' voxels versus at uniformly random marrow voxels, per record.

    Parameters
    ----------
    src
        A Run, a run-store path, a live Simulation or a Source.
    field
        A field of the source, case ignored (``"CXCL12"`` or ``"cxcl12"``; ``"scf"``).
    states
        Cell states sampled: HSC states (default: all four) and/or ``"mpp"``.
    records
        ``"all"`` (default), ``"last"``, a record index or a list.
    n_random
        Random enterable voxels per record (>= 1), drawn with replacement.
    seed
        Seed of ``numpy.random.default_rng``; a given seed gives identical results.

    Returns
    -------
    FieldSample
        ``summary`` (one row per record, with the Mann-Whitney and KS tests) and
        ``values`` (every sampled value).

    Raises
    ------
    ValueError
        An unknown field or state, a record out of range, a source without fields.

    Examples
    --------
    >>> from niche3d.analysis import field_at_cells
    >>> fs = field_at_cells("runs/homeostasis.zarr", "CXCL12", records="last")   # doctest: +SKIP
    >>> fs.summary[["cells_median", "random_median", "prob_cells_higher", "mwu_p_value"]]  # doctest: +SKIP
    """
    s = as_source(src)
    names = s.field_names
    if not names:
        raise ValueError(f"field = {field!r}: {s.label} holds no fields (output.fields = false)")
    if not isinstance(field, str):
        raise ValueError(f"field = {field!r}: give one of {', '.join(names)}")
    name = {n.lower(): n for n in names}.get(field.strip().lower())
    if name is None:
        raise ValueError(f"field = {field!r}: unknown; {s.label} holds {', '.join(names)}")
    sts = check_choices(states, _POSITIONED, "states")
    recs = s.records(records)
    n_random = check_int(n_random, "n_random", 1)
    if seed is not None:
        check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    unit = s.field_unit(name)
    v = s.voxel_um
    rows, vals = [], []
    for r in recs:
        r = int(r)
        t = float(s.times_h[r])
        lat = s.lattice(r)
        enter = np.flatnonzero(lat.enterable.ravel())
        # drawn at every record, recorded or not: the same seed gives the same voxels
        pick = enter[rng.integers(0, enter.size, n_random)] if enter.size else np.zeros(0, np.int64)
        arr = s.field(name, r)
        c = s.cells_at(r)
        c = c[c["state"].isin(sts) & c["z"].notna()]
        pos = hsc_positions(c, v, sts)
        row: dict[str, object] = {"record": r, "t_hours": t, "field": name, "unit": unit,
                                  "recorded": arr is not None, "n_cells": len(pos),
                                  "n_random": int(pick.size)}
        if arr is None:
            rows.append(row)
            continue
        a = np.asarray(arr, dtype=np.float64)
        xc = a[pos[:, 0], pos[:, 1], pos[:, 2]] if len(pos) else np.zeros(0)
        xr = a.ravel()[pick]
        marrow = a.ravel()[enter]
        for key, x in (("cells", xc), ("random", xr)):
            med, q25, q75, mean = _quant(x)
            row.update({f"{key}_median": med, f"{key}_q25": q25, f"{key}_q75": q75,
                        f"{key}_mean": mean})
        row["marrow_median"], _, _, row["marrow_mean"] = _quant(marrow)
        rm = row["random_median"]
        row["median_ratio"] = row["cells_median"] / rm if isinstance(rm, float) and rm > 0 else math.nan
        if xc.size and xr.size:
            u = stats.mannwhitneyu(xc, xr, alternative="two-sided")
            ks = stats.ks_2samp(xc, xr)
            row.update(mwu_statistic=float(u.statistic), mwu_p_value=float(u.pvalue),
                       prob_cells_higher=float(u.statistic) / (xc.size * xr.size),
                       ks_statistic=float(ks.statistic), ks_p_value=float(ks.pvalue))
        rows.append(row)
        rz, ry, rx = np.unravel_index(pick, lat.shape)
        vals.append(pd.DataFrame({
            "record": r, "t_hours": t, "group": ["cells"] * len(pos) + ["random"] * pick.size,
            "track_id": np.concatenate([c["track_id"].to_numpy(), np.full(pick.size, -1)]),
            "state": np.concatenate([c["state"].astype(object).to_numpy(),
                                     np.full(pick.size, None, dtype=object)]),
            "z_um": np.concatenate([c["z"].to_numpy(), (rz + 0.5) * v]),
            "y_um": np.concatenate([c["y"].to_numpy(), (ry + 0.5) * v]),
            "x_um": np.concatenate([c["x"].to_numpy(), (rx + 0.5) * v]),
            "value": np.concatenate([xc, xr])}))
    cols = ["record", "t_hours", "field", "unit", "recorded", "n_cells", "cells_median", "cells_q25",
            "cells_q75", "cells_mean", "n_random", "random_median", "random_q25", "random_q75",
            "random_mean", "marrow_median", "marrow_mean", "median_ratio", "mwu_statistic",
            "prob_cells_higher", "mwu_p_value", "ks_statistic", "ks_p_value"]
    summary = pd.DataFrame(rows).reindex(columns=cols)
    vcols = ["record", "t_hours", "group", "track_id", "state", "z_um", "y_um", "x_um", "value"]
    values = pd.concat(vals, ignore_index=True) if vals else pd.DataFrame(columns=vcols)
    summary.attrs["units"] = {"t_hours": "hour", **{c: unit for c in cols if c.startswith(
        ("cells_", "random_", "marrow_")) and not c.endswith("higher")}}
    values.attrs["units"] = {"t_hours": "hour", "z_um": "micrometer", "y_um": "micrometer",
                             "x_um": "micrometer", "value": unit}
    for df in (summary, values):
        df.attrs["source"] = s.label
    return FieldSample(summary, values)
