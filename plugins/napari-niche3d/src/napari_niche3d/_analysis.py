"""Pure functions behind the widgets (no Qt): cell histories, lineages, local fields,
intervention schedules. Tested without a display.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ACTIVE_FRACTION",
    "cell_history",
    "cell_lineage",
    "field_values_at",
    "intervention_schedule",
    "nearest_record",
]

#: an intervention whose effect decays is drawn as acting until its effect falls below
#: this fraction of the value right after the dose.
ACTIVE_FRACTION: float = 0.01


def _check_track(cells: pd.DataFrame, track_id: int) -> int:
    if "track_id" not in cells.columns:
        raise ValueError(f"cells table lacks a track_id column; it has {list(cells.columns)}")
    try:
        tid = int(track_id)
    except (TypeError, ValueError):
        raise ValueError(f"track_id must be an integer cell id, got {track_id!r}") from None
    if not (cells["track_id"].to_numpy() == tid).any():
        raise ValueError(f"track_id {tid} is not in this run's cells table")
    return tid


def cell_history(cells: pd.DataFrame, track_id: int) -> pd.DataFrame:
    """Every record of one cell, in time order.

    Parameters
    ----------
    cells
        A run's cells table (columns track_id, t, z, y, x, state, ...).
    track_id
        The cell.

    Returns
    -------
    pandas.DataFrame
        The cell's rows sorted by ``t`` with a fresh index.

    Raises
    ------
    ValueError
        If ``track_id`` is not an integer present in ``cells``.
    """
    tid = _check_track(cells, track_id)
    rows = cells[cells["track_id"].to_numpy() == tid]
    return rows.sort_values("t", kind="stable").reset_index(drop=True)


def cell_lineage(cells: pd.DataFrame, track_id: int) -> dict[str, Any]:
    """Ancestors, daughters and descendants of one cell from the ``parent`` column.

    Parameters
    ----------
    cells
        A run's cells table with ``track_id`` and ``parent`` (-1 = founder).
    track_id
        The cell.

    Returns
    -------
    dict
        ``ancestors``: list of ids from the mother up to the founder; ``daughters``: sorted
        ids whose parent is the cell; ``descendants``: number of cells in its subtree
        (daughters, granddaughters, ...); ``generation``: len(ancestors).

    Raises
    ------
    ValueError
        If ``track_id`` is absent or ``cells`` lacks a ``parent`` column.
    """
    tid = _check_track(cells, track_id)
    if "parent" not in cells.columns:
        raise ValueError(f"cells table lacks a parent column; it has {list(cells.columns)}")
    pairs = cells[["track_id", "parent"]].drop_duplicates("track_id")
    parent_of = dict(zip(pairs["track_id"].astype(np.int64).tolist(), pairs["parent"].astype(np.int64).tolist(), strict=True))
    children: dict[int, list[int]] = {}
    for child, parent in parent_of.items():
        if parent >= 0:
            children.setdefault(parent, []).append(child)
    ancestors: list[int] = []
    seen = {tid}
    cur = parent_of.get(tid, -1)
    while cur >= 0 and cur not in seen:  # a malformed cycle cannot loop forever
        ancestors.append(cur)
        seen.add(cur)
        cur = parent_of.get(cur, -1)
    n_desc = 0
    stack = list(children.get(tid, []))
    visited: set[int] = set()
    while stack:
        c = stack.pop()
        if c in visited:
            continue
        visited.add(c)
        n_desc += 1
        stack.extend(children.get(c, []))
    return {
        "ancestors": ancestors,
        "daughters": sorted(children.get(tid, [])),
        "descendants": n_desc,
        "generation": len(ancestors),
    }


def nearest_record(times_h: np.ndarray, t_hours: float) -> int:
    """Index of the record nearest to ``t_hours``.

    Raises
    ------
    ValueError
        If there are no records or ``t_hours`` is not finite.
    """
    times = np.asarray(times_h, dtype=float)
    if times.size == 0:
        raise ValueError("times_h is empty: the run has no records")
    if not math.isfinite(float(t_hours)):
        raise ValueError(f"t_hours must be a finite number of hours, got {t_hours!r}")
    return int(np.argmin(np.abs(times - float(t_hours))))


def field_values_at(fields: Any, t_hours: float, z_um: float, y_um: float, x_um: float) -> dict[str, float]:
    """Value of every field in the voxel containing (z, y, x) µm at the record nearest t.

    Parameters
    ----------
    fields
        A run's ``fields`` Dataset (dims t, z, y, x; coords in hours and µm voxel centres).
    t_hours, z_um, y_um, x_um
        Time and position.

    Returns
    -------
    dict
        field name -> value (its stored units); empty if the run stores no fields.

    Raises
    ------
    ValueError
        If the position is not finite (e.g. a circulating cell) or outside the lattice.
    """
    out: dict[str, float] = {}
    if len(fields.data_vars) == 0:
        return out
    pos = {"z": z_um, "y": y_um, "x": x_um}
    idx: dict[str, int] = {"t": nearest_record(fields["t"].values, t_hours)}
    for dim, value in pos.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"{dim}_um must be finite (a cell on the lattice), got {value!r}")
        c = np.asarray(fields[dim].values, dtype=float)
        step = float(c[1] - c[0]) if c.size > 1 else 1.0
        i = int(np.argmin(np.abs(c - float(value))))
        if abs(c[i] - float(value)) > 0.5 * abs(step) + 1e-9:
            raise ValueError(
                f"{dim}_um = {value} is outside the lattice ({c[0] - step / 2:g}..{c[-1] + step / 2:g} µm)"
            )
        idx[dim] = i
    for name in fields.data_vars:
        out[str(name)] = float(fields[name].isel(idx).values)
    return out


def intervention_schedule(scenario: Any, t_end_hours: float) -> pd.DataFrame:
    """When each intervention of a scenario acts, from its configuration.

    Knockouts act from ``start_day`` to the end of the run. AMD3100 doses block CXCR4 with
    first-order elimination, so each dose acts until the blockade falls below
    :data:`ACTIVE_FRACTION` of its peak (``half_life * log2(1/ACTIVE_FRACTION)`` after the
    dose); overlapping dose windows merge. A G-CSF course gives daily doses from
    ``start_day`` and its protease activity relaxes with ``protease_half_life_hours``, so it
    acts from the first dose to the same 1 % point after the last. 5-FU doses act like
    AMD3100 doses (their cytotoxic hazard halves every ``half_life_hours``); a transplant
    and an irradiation are instants, shown as a one-hour mark.

    Parameters
    ----------
    scenario
        A ``niche3d.scenario.Scenario``.
    t_end_hours
        End of the run (h); intervals are clipped to it.

    Returns
    -------
    pandas.DataFrame
        One row per interval: ``row`` (intervention index), ``label``, ``kind``,
        ``start_h``, ``end_h``, and ``doses_h`` (tuple of dose times inside the interval).

    Raises
    ------
    ValueError
        If ``t_end_hours`` is not a finite number >= 0.
    """
    t_end = float(t_end_hours)
    if not (math.isfinite(t_end) and t_end >= 0):
        raise ValueError(f"t_end_hours must be a finite number >= 0, got {t_end_hours!r}")
    decay_halves = math.log2(1.0 / ACTIVE_FRACTION)
    rows: list[dict[str, Any]] = []
    for i, iv in enumerate(scenario.interventions):
        kind = str(iv.kind)
        if kind == "knockout":
            srcs = ", ".join(f"{k}×{v:g}" for k, v in iv.sources.items())
            label = f"{i}: knockout {iv.field} ({srcs})"
            intervals = [(iv.start_day * 24.0, t_end, ())]
        elif kind == "amd3100":
            label = f"{i}: AMD3100 ({len(iv.dose_days)} dose{'s' if len(iv.dose_days) != 1 else ''})"
            span = iv.half_life_hours * decay_halves
            intervals = _merge([(d * 24.0, d * 24.0 + span, (d * 24.0,)) for d in iv.dose_days])
        elif kind == "gcsf":
            label = f"{i}: G-CSF ({iv.doses} daily doses)"
            doses = tuple(iv.start_day * 24.0 + 24.0 * k for k in range(iv.doses))
            intervals = [(doses[0], doses[-1] + iv.protease_half_life_hours * decay_halves, doses)]
        elif kind == "5fu":
            label = f"{i}: 5-FU ({len(iv.dose_days)} dose{'s' if len(iv.dose_days) != 1 else ''})"
            span = iv.half_life_hours * decay_halves
            intervals = _merge([(d * 24.0, d * 24.0 + span, (d * 24.0,)) for d in iv.dose_days])
        elif kind in ("transplant", "irradiation"):
            # instantaneous events: a one-hour mark with its tick
            t = iv.day * 24.0
            what = f"transplant ({iv.cells} HSCs per mouse)" if kind == "transplant" \
                else f"irradiation ({iv.dose_gy:g} Gy)"
            label = f"{i}: {what}"
            intervals = [(t, t + 1.0, (t,))]
        else:
            raise ValueError(f"unknown intervention kind {kind!r}; allowed: knockout, amd3100, "
                             "gcsf, 5fu, transplant, irradiation")
        for start, end, doses_h in intervals:
            if start > t_end:
                continue
            rows.append(
                {
                    "row": i,
                    "label": label,
                    "kind": kind,
                    "start_h": float(start),
                    "end_h": float(min(end, t_end)),
                    "doses_h": tuple(float(d) for d in doses_h if d <= t_end),
                }
            )
    return pd.DataFrame(rows, columns=["row", "label", "kind", "start_h", "end_h", "doses_h"])


def _merge(intervals: list[tuple[float, float, tuple[float, ...]]]) -> list[tuple[float, float, tuple[float, ...]]]:
    out: list[tuple[float, float, tuple[float, ...]]] = []
    for s, e, d in sorted(intervals):
        if out and s <= out[-1][1]:
            ps, pe, pd_ = out[-1]
            out[-1] = (ps, max(pe, e), pd_ + d)
        else:
            out.append((s, e, d))
    return out
