"""Argument checks and the cell and event table layout shared by the analysis modules."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from niche3d.cells.codes import EVENT_NAMES, STATE_NAMES

__all__ = ["check_choices", "check_int", "check_number", "normalise_cells", "normalise_events",
           "EVENT_COLUMNS"]

_BOOL_CELL_COLUMNS = ("bound", "donor")
_CELL_COLUMNS = ("record", "t", "track_id", "parent", "generation", "state", "z", "y", "x",
                 "bound", "donor", "divisions", "birth_hours", "phase_hours_left")
#: columns of an event table (``CellModel.drain_events``, ``Run.events``)
EVENT_COLUMNS = ("t_hours", "kind", "cell", "other", "z", "y", "x", "state",
                 "other_z", "other_y", "other_x", "other_state")


def check_choices(value: str | Iterable[str], allowed: Sequence[str], name: str) -> tuple[str, ...]:
    """``value`` (one name or several) as a tuple, each name one of ``allowed``.

    Raises
    ------
    ValueError
        Naming the argument, the allowed values and what was given.
    """
    vals = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Iterable) else None
    if vals is None or not vals or not all(isinstance(v, str) for v in vals):
        raise ValueError(f"{name} = {value!r}: give one or more of {', '.join(allowed)}")
    bad = [v for v in vals if v not in allowed]
    if bad:
        raise ValueError(f"{name} = {value!r}: unknown {', '.join(map(repr, bad))}; "
                         f"allowed: {', '.join(allowed)}")
    return tuple(dict.fromkeys(vals))


def check_int(value: Any, name: str, low: int = 0) -> int:
    """An integer >= ``low`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} = {value!r} must be an integer >= {low}")
    return int(value)


def check_number(value: Any, name: str, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = True, high_open: bool = False) -> float:
    """A finite real number in the given interval (bools refused)."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} = {value!r} must be a finite number in {lo}{low:g}, {high:g}{hi}")
    return float(value)


# ----------------------------------------------------------------------------- tables
def _states(values: Any) -> pd.Categorical:
    """State names (from names, a categorical or int codes; -1 and unknown -> NaN)."""
    s = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        names = s.astype(object).where(s.notna(), None)
    else:
        codes = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        table = np.array(STATE_NAMES + (None,), dtype=object)
        idx = np.where(np.isfinite(codes) & (codes >= 0) & (codes < len(STATE_NAMES)),
                       np.nan_to_num(codes, nan=-1), len(STATE_NAMES)).astype(np.int64)
        names = table[idx]
    return pd.Categorical(np.asarray(names, dtype=object), categories=list(STATE_NAMES))


def _um(values: Any, voxel_um: float) -> np.ndarray:
    """Voxel indices (-1: none) to µm at voxel centres (NaN: none)."""
    v = np.asarray(values, dtype=np.float64)
    out = (v + 0.5) * voxel_um
    out[~(v >= 0)] = np.nan
    return out


def _int64(values: Any, fill: int = -1) -> np.ndarray:
    s = pd.Series(values)
    return pd.to_numeric(s, errors="coerce").fillna(fill).to_numpy().astype(np.int64)


def normalise_cells(cells: Mapping[str, Any] | pd.DataFrame, voxel_um: float, *,
                    voxels: bool, record: int | None = None, t_hours: float | None = None
                    ) -> pd.DataFrame:
    """Cells in the ``Run.cells`` layout with fixed dtypes.

    ``voxels=True``: ``z, y, x`` are voxel indices (a snapshot; -1 in blood), converted to
    µm at voxel centres; else they are µm already. Missing optional columns get defaults
    (ids 0.., founders, generation 0, unbound, host, times 0).
    """
    df = pd.DataFrame({k: np.asarray(v) for k, v in cells.items()}) if not isinstance(
        cells, pd.DataFrame) else cells
    n = len(df)
    missing = {"state", "z", "y", "x"} - set(df.columns)
    if missing:
        raise ValueError(f"cells lack the columns {sorted(missing)}")
    out: dict[str, Any] = {}
    out["record"] = (np.full(n, record, np.int64) if record is not None
                     else _int64(df["record"], 0) if "record" in df else np.zeros(n, np.int64))
    out["t"] = (np.full(n, float(t_hours)) if t_hours is not None
                else df["t"].to_numpy(np.float64) if "t" in df else np.zeros(n))
    out["track_id"] = _int64(df["track_id"]) if "track_id" in df else np.arange(n, dtype=np.int64)
    out["parent"] = _int64(df["parent"]) if "parent" in df else np.full(n, -1, np.int64)
    out["generation"] = _int64(df["generation"], 0) if "generation" in df else np.zeros(n, np.int64)
    out["state"] = _states(df["state"])
    for k in "zyx":
        out[k] = _um(df[k], voxel_um) if voxels else df[k].to_numpy(dtype=np.float64)
    for k in _BOOL_CELL_COLUMNS:
        out[k] = (pd.Series(df[k]).fillna(False).to_numpy().astype(bool) if k in df
                  else np.zeros(n, bool))
    out["divisions"] = _int64(df["divisions"], 0) if "divisions" in df else np.zeros(n, np.int64)
    for k in ("birth_hours", "phase_hours_left"):
        out[k] = df[k].to_numpy(dtype=np.float64) if k in df else np.zeros(n)
    res = pd.DataFrame(out, columns=list(_CELL_COLUMNS))
    res.attrs["units"] = {"t": "hour", "z": "micrometer", "y": "micrometer", "x": "micrometer",
                          "birth_hours": "hour", "phase_hours_left": "hour"}
    return res


def normalise_events(events: Mapping[str, Any] | pd.DataFrame, voxel_um: float, *,
                     voxels: bool) -> pd.DataFrame:
    """Events in the ``Run.events`` layout: kinds and both states as names, every position
    in µm (``other_*`` converted from voxel indices whenever they are integers)."""
    df = pd.DataFrame({k: np.asarray(v) for k, v in events.items()}) if not isinstance(
        events, pd.DataFrame) else events
    missing = set(EVENT_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"events lack the columns {sorted(missing)}")
    out: dict[str, Any] = {"t_hours": df["t_hours"].to_numpy(dtype=np.float64)}
    kind = df["kind"]
    if not pd.api.types.is_numeric_dtype(kind.dtype):
        kinds = np.asarray(kind.astype(object), dtype=object)
    else:
        kinds = np.array(EVENT_NAMES, dtype=object)[kind.to_numpy().astype(np.int64)]
    out["kind"] = pd.Categorical(kinds, categories=list(EVENT_NAMES))
    out["cell"] = _int64(df["cell"])
    out["other"] = _int64(df["other"])
    for k in ("z", "y", "x", "other_z", "other_y", "other_x"):
        col = df[k]
        as_index = voxels or (k.startswith("other_") and pd.api.types.is_integer_dtype(col.dtype))
        out[k] = _um(_int64(col), voxel_um) if as_index else col.to_numpy(dtype=np.float64)
    out["state"] = _states(df["state"])
    out["other_state"] = _states(df["other_state"])
    res = pd.DataFrame(out, columns=list(EVENT_COLUMNS))
    res.attrs["units"] = {"t_hours": "hour", **dict.fromkeys(
        ("z", "y", "x", "other_z", "other_y", "other_x"), "micrometer")}
    return res
