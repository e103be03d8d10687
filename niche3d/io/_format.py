"""Constants, the error type and table encoding shared by the store writer and reader.

Tables (``tables/cells``, ``tables/events``, ``tables/metrics``) are, from store format
3 on, directories of Parquet part files (:mod:`niche3d.io._parquet`), with every table's
schema (columns with their numpy dtype and unit, category names) in the ``tables``
group's attributes (:func:`tables_attrs`). Formats 1 and 2 kept each table as ONE 2D
float64 zarr array ``rows`` with its schema in the table group's attributes; they are
still read (:func:`decode_table`) and ``niche3d upgrade`` converts them
(:mod:`niche3d.io.upgrade`). Values pass through float64 on the write path in both
(:func:`encode_columns`), which holds every integer up to 2**53 exactly; larger integers
are refused at write time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "StoreError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "NICHE_LABEL",
    "NICHE_SITE_COLORS",
    "NICHE_SITE_DESCRIPTIONS",
    "NICHE_SITE_NAMES",
    "TABLES",
    "POSITION_COLUMNS",
    "column_unit",
    "encode_columns",
    "decode_table",
    "tables_attrs",
    "is_run_store",
    "records_written",
]

FORMAT_NAME = "niche3d-run"
#: 2: the checkpoint holds a field's low part as int16 (``field_lo.<name>``; format 1: float32)
#: Not bumped for the niche-site label image ``labels/niche`` (issue 14): it is an optional
#: addition, listed in the OME ``labels`` list when present. Stores without it (every store
#: written before it, and stores of ``RunWriter.create(niche=False)``) still read, with
#: ``Run.niche = None``, and a reader that predates it ignores it; nothing an older reader
#: needs has changed, so the version stays 2.
#: 2: the checkpoint holds a field's low part as int16 (``field_lo.<name>``; format 1: float32)
#: 3: tables are Parquet part files (``tables/<name>/part-*.parquet``) with their schemas
#: in the ``tables`` group's attributes; formats 1 and 2 kept one float64 zarr array per
#: table (still read; ``niche3d upgrade`` converts them, and a resumed run does it first).
#: Not bumped for the niche-site label image ``labels/niche`` (issue 14): it is an optional
#: addition, listed in the OME ``labels`` list when present; stores without it read with
#: ``Run.niche = None``.
FORMAT_VERSION = 3
#: the first format whose tables are Parquet parts
PARQUET_FORMAT = 3
TABLES: tuple[str, ...] = ("cells", "events", "metrics")
#: integer voxel-index columns the writer stores as µm voxel centres (NaN for -1); the
#: ``other_*`` ones from format 3 on (formats 1 and 2 kept them as voxel indices, which
#: ``niche3d upgrade`` converts)
POSITION_COLUMNS: tuple[str, ...] = ("z", "y", "x", "other_z", "other_y", "other_x")
MAX_EXACT_INT = 2**53

#: name of the niche-site label image (``labels/niche``)
NICHE_LABEL = "niche"
#: niche-site codes of ``labels/niche`` (``niche3d.cells.CellModel.niche_sites``)
NICHE_SITE_NAMES: dict[int, str] = {0: "none", 1: "free", 2: "hsc", 3: "other"}
NICHE_SITE_DESCRIPTIONS: dict[int, str] = {
    0: "not a niche site",
    1: "free niche site",
    2: "niche site held by an HSC",
    3: "niche site taken by another cell (an MPP)",
}
#: RGBA in 0..1: 0 transparent, free light green, HSC-held magenta, taken by another cell grey
NICHE_SITE_COLORS: dict[int, tuple[float, float, float, float]] = {
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.6, 1.0, 0.6, 1.0),
    2: (1.0, 0.0, 1.0, 1.0),
    3: (0.6, 0.6, 0.6, 1.0),
}


def _run_attrs(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The root ``niche3d`` run attributes of a store, or None; never raises."""
    try:
        meta_path = Path(path) / "zarr.json"
        if not meta_path.is_file():
            return None
        with open(meta_path, "rb") as fh:
            meta = json.load(fh)
    except (OSError, ValueError, TypeError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    run = attrs.get("niche3d") if isinstance(attrs, dict) else None
    # the root's run attributes; sub-groups (tables/) carry a "niche3d" dict too, without it
    if isinstance(run, dict) and "n_records_written" in run:
        return run
    return None


def is_run_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a niche3d run store (its root ``zarr.json`` has run attributes).

    Reads one small JSON file with the standard library (no zarr), so a napari reader can
    ask it of every path it is offered; never raises. A store this returns True for may
    still be damaged: :func:`niche3d.io.check_store` checks it whole.
    """
    return _run_attrs(path) is not None


def records_written(path: str | os.PathLike[str]) -> int:
    """Records committed to the run store at ``path`` so far; -1 if it is not a run store.

    Cheap (one small JSON file), for polling a store that another process is writing.
    """
    run = _run_attrs(path)
    if run is None:
        return -1
    try:
        return int(run["n_records_written"])
    except (TypeError, ValueError):
        return -1


#: units of well-known columns; others are derived from a name suffix or are dimensionless.
_KNOWN_UNITS: dict[str, str] = {
    "t": "hour",
    "t_hours": "hour",
    "z": "micrometer",
    "y": "micrometer",
    "x": "micrometer",
    "other_z": "micrometer",
    "other_y": "micrometer",
    "other_x": "micrometer",
}
_SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_um", "micrometer"),
    ("_hours", "hour"),
    ("_h", "hour"),
    ("_days", "day"),
    ("_per_mm3", "1/mm^3"),
    ("_nM", "nM"),
    ("_ng_ml", "ng/mL"),
)


class StoreError(ValueError):
    """A path that is not a readable niche3d run store; the message names path and problem."""


def column_unit(name: str) -> str:
    """Unit recorded for a table column (UDUNITS-style name, ``"1"`` if dimensionless)."""
    if name in _KNOWN_UNITS:
        return _KNOWN_UNITS[name]
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return "1"


def _kind(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    return "other"


def encode_columns(
    table: str,
    columns: Mapping[str, Any],
    *,
    allow_scalars: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Check a mapping of columns and convert each to float64.

    Parameters
    ----------
    table
        Table name, used in error messages.
    columns
        Column name -> 1D array (or a scalar when ``allow_scalars``).
    allow_scalars
        Accept scalars (one-row tables such as metrics).

    Returns
    -------
    values, dtypes, n_rows
        float64 columns, the original numpy dtype name of each column and the row count.
    """
    if not isinstance(columns, Mapping):
        raise TypeError(f"{table}: columns must be a mapping of name -> array, got {type(columns).__name__}")
    values: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    n_rows: int | None = None
    for name, col in columns.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{table}: column names must be non-empty strings, got {name!r}")
        arr = np.asarray(col)
        if allow_scalars and arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ValueError(f"{table}: column {name!r} must be 1D, got shape {arr.shape}")
        kind = _kind(arr.dtype)
        if kind == "other":
            raise ValueError(
                f"{table}: column {name!r} has dtype {arr.dtype}; allowed: bool, integer or float "
                "(encode text as integer codes and call set_categories)"
            )
        if n_rows is None:
            n_rows = arr.shape[0]
        elif arr.shape[0] != n_rows:
            raise ValueError(
                f"{table}: column {name!r} has {arr.shape[0]} rows but earlier columns have {n_rows}"
            )
        if kind == "int" and arr.size and int(np.max(np.abs(arr.astype(np.float64)))) > MAX_EXACT_INT:
            raise ValueError(
                f"{table}: column {name!r} holds integers beyond 2**53, which float64 storage "
                "cannot keep exactly"
            )
        values[name] = arr.astype(np.float64)
        dtypes[name] = str(arr.dtype)
    return values, dtypes, int(n_rows or 0)


def tables_attrs(schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The ``niche3d`` attributes of a format-3 ``tables`` group: the layout and the
    schema of every table (``columns``: name, numpy dtype, unit; ``categories``)."""
    return {
        "tables": list(TABLES),
        "layout": "parquet-parts",
        "parts": "tables/<name>/part-<first row>-<end row>.parquet, 12 digits each; rows "
                 "count once the root attribute rows[<name>] commits them",
        "schemas": {t: dict(schemas[t]) for t in TABLES},
    }


def decode_table(
    rows: np.ndarray,
    schema: Mapping[str, Any],
) -> pd.DataFrame:
    """Turn the stored float64 rows back into a typed DataFrame.

    Integers become int64 (nullable ``Int64`` where a row has no value), bools bool (or
    ``boolean``), columns with a category map pandas Categoricals with the stored names.
    """
    import pandas as pd

    columns = list(schema.get("columns", []))
    categories: Mapping[str, Sequence[str]] = schema.get("categories", {}) or {}
    data: dict[str, Any] = {}
    for j, col in enumerate(columns):
        name = col["name"]
        v = rows[:, j] if rows.ndim == 2 and rows.shape[1] > j else np.full(rows.shape[0], np.nan)
        kind = _kind(np.dtype(col["dtype"]))
        missing = np.isnan(v)
        if name in categories:
            names = list(categories[name])
            codes = np.where(missing, -1, v).astype(np.int64)
            extra = sorted({int(c) for c in codes if c >= len(names) or c < -1})
            cats = names + [f"unknown_{c}" for c in extra]
            remap = codes.copy()
            for k, c in enumerate(extra):
                remap[codes == c] = len(names) + k
            data[name] = pd.Categorical.from_codes(remap, categories=_unique(cats))
        elif kind == "int":
            if missing.any():
                arr = pd.array(np.where(missing, 0, v).astype(np.int64), dtype="Int64")
                arr[missing] = pd.NA
                data[name] = arr
            else:
                data[name] = v.astype(np.int64)
        elif kind == "bool":
            if missing.any():
                arr_b = pd.array(np.where(missing, 0, v).astype(bool), dtype="boolean")
                arr_b[missing] = pd.NA
                data[name] = arr_b
            else:
                data[name] = v != 0
        else:
            data[name] = v.astype(np.float64)
    return pd.DataFrame(data, columns=[c["name"] for c in columns])


def _unique(names: list[str]) -> list[str]:
    """Make category names unique (pandas requires it) by suffixing repeats with their code."""
    seen: set[str] = set()
    out = []
    for code, nm in enumerate(names):
        if nm in seen:
            nm = f"{nm}_{code}"
        seen.add(nm)
        out.append(nm)
    return out


def is_finite_number(x: Any) -> bool:
    """True for a finite real number (bools excluded)."""
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and math.isfinite(float(x))
