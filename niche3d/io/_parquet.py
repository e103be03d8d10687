"""Tables as Parquet part files inside a run store (store format 3).

Each table is a directory ``tables/<name>/`` holding only Parquet files, one immutable
part per written batch (a record's cells, a record's metrics row, the events drained
before a record). A part is named after the half-open row range it holds,
``part-<start>-<stop>.parquet`` (12 digits each), and is written under a hidden temporary
name and renamed into place (:mod:`niche3d.io._atomic`), so a part is either absent or
whole. Rows count as written only once the root attributes commit them (``rows[name]``,
updated after the part is on disk), exactly as before: niche3d's reader follows the chain
of parts from row 0 to the committed count, and ignores any part beyond it (a batch of a
killed run, which the next writer deletes).

Any Arrow reader opens a table without niche3d: ``pyarrow.dataset.dataset(dir)``,
``pandas.read_parquet(dir)``, DuckDB's ``read_parquet('dir/*.parquet')`` or polars.
Hidden temporary files start with ``.`` and are skipped by those readers. Columns keep
their numpy dtype (metrics excepted: every metric is float64, so that one part's integer
counter and another's fraction never disagree for a reader that infers its schema from
one file); columns with category names are Arrow dictionaries of their names; each field
carries its unit in its Arrow metadata (``unit``), and every part carries the table's
niche3d schema in its key-value metadata (``niche3d_table``).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from niche3d.io import _atomic
from niche3d.io._format import StoreError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as pads

__all__ = [
    "PART_RE",
    "part_name",
    "list_parts",
    "committed_parts",
    "remove_parts_from",
    "arrow_schema",
    "write_part",
    "dataset",
    "to_pandas",
]

PART_RE = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")
#: Parquet's magic bytes, at the start and the end of every whole file
_MAGIC = b"PAR1"
#: zstd at a low level: parts are small and written on the simulation's path
_COMPRESSION = "zstd"
_COMPRESSION_LEVEL = 3


def part_name(start: int, stop: int) -> str:
    """File name of the part holding rows ``start`` (inclusive) to ``stop`` (exclusive)."""
    if not (0 <= start < stop < 10**12):
        raise ValueError(f"a part holds rows start..stop with 0 <= start < stop < 1e12, got {start}..{stop}")
    return f"part-{start:012d}-{stop:012d}.parquet"


def list_parts(table_dir: Path) -> list[tuple[int, int, Path]]:
    """Every part file in ``table_dir`` as ``(start, stop, path)``, sorted; [] if no directory."""
    try:
        names = os.listdir(table_dir)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = PART_RE.match(name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), table_dir / name))
    out.sort()
    return out


def committed_parts(table_dir: Path, n_rows: int, *, check_files: bool = False) -> list[Path]:
    """The chain of parts holding rows 0..``n_rows``, in order.

    Parts beyond ``n_rows`` (uncommitted) are left out; a part that does not start where
    the previous one stopped is not on the chain (a stale part of a rewound run) unless the
    chain needs it.

    Raises
    ------
    StoreError
        The parts on disk do not cover exactly rows 0..``n_rows`` (a part is missing), or,
        with ``check_files``, a part is not a whole Parquet file (truncated).
    """
    by_start: dict[int, list[tuple[int, Path]]] = {}
    for start, stop, path in list_parts(table_dir):
        by_start.setdefault(start, []).append((stop, path))
    chain: list[Path] = []
    at = 0
    while at < n_rows:
        nexts = [(stop, p) for stop, p in by_start.get(at, []) if stop <= n_rows]
        if not nexts:
            raise StoreError(
                f"{table_dir}: no part starts at row {at} (rows 0..{n_rows} are committed); "
                "a table part is missing and the store is damaged")
        stop, path = max(nexts)  # the longest batch that fits (only one in a sound store)
        if check_files:
            _check_part_file(path)
        chain.append(path)
        at = stop
    return chain


def _check_part_file(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except OSError as exc:
        raise StoreError(f"{path}: a table part cannot be read ({exc}); the store is damaged") from None
    if size < 12 or head != _MAGIC or tail != _MAGIC:
        raise StoreError(f"{path}: a table part is truncated ({size} bytes, not a whole Parquet "
                         "file); the store is damaged")


def remove_parts_from(table_dir: Path, n_rows: int) -> int:
    """Delete every part that starts at or beyond row ``n_rows`` (rows no commit shows);
    returns how many were deleted."""
    gone = 0
    for start, _stop, path in list_parts(table_dir):
        if start >= n_rows:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def _arrow_type(dtype: str, categorical: bool, table: str) -> pa.DataType:
    import pyarrow as pa

    if categorical:
        return pa.dictionary(pa.int32(), pa.string())
    if table == "metrics" and dtype not in ("int64",):
        return pa.float64()
    return pa.from_numpy_dtype(np.dtype(dtype))


def arrow_schema(table: str, schema: Mapping[str, Any]) -> pa.Schema:
    """The Arrow schema of a table's niche3d schema (columns in order, units in the
    field metadata, categories as string dictionaries).

    Metrics are float64 but for ``record`` (int64); other tables keep each column's dtype.
    """
    import pyarrow as pa

    cats = schema.get("categories", {}) or {}
    fields = []
    for col in schema.get("columns", []):
        name = col["name"]
        dtype = col["dtype"]
        if table == "metrics":
            dtype = "int64" if name == "record" else "float64"
        fields.append(pa.field(name, _arrow_type(dtype, name in cats, table), nullable=True,
                               metadata={"unit": col.get("unit", "1"), "dtype": col["dtype"]}))
    return pa.schema(fields, metadata={"niche3d_table": json.dumps({"name": table, **dict(schema)})})


def _column(values: np.ndarray, field: pa.Field, names: Sequence[str] | None) -> pa.Array:
    """One Arrow column from the writer's float64 values (integers exact below 2**53)."""
    import pyarrow as pa

    if names is not None:
        codes = np.where(np.isnan(values), -1, values).astype(np.int64)
        extra = sorted({int(c) for c in np.unique(codes) if c >= len(names) or c < -1})
        dictionary = [*names, *(f"unknown_{c}" for c in extra)]
        remap = codes.copy()
        for k, c in enumerate(extra):
            remap[codes == c] = len(names) + k
        mask = remap == -1
        idx = pa.array(np.where(mask, 0, remap).astype(np.int32), mask=mask)
        return pa.DictionaryArray.from_arrays(idx, pa.array(_unique(dictionary), pa.string()))
    mask = np.isnan(values)
    typ = field.type
    if pa.types.is_floating(typ):
        return pa.array(values.astype(typ.to_pandas_dtype()))
    # integers and bools: NaN means no value (a column the batch did not have)
    filled = np.where(mask, 0, values)
    arr = filled.astype(bool) if pa.types.is_boolean(typ) else filled.astype(typ.to_pandas_dtype())
    return pa.array(arr, type=typ, mask=mask if mask.any() else None)


def _unique(names: list[str]) -> list[str]:
    from niche3d.io._format import _unique as unique

    return unique(names)


def write_part(
    table_dir: Path,
    table: str,
    schema: Mapping[str, Any],
    values: Mapping[str, np.ndarray],
    start: int,
    n: int,
) -> Path:
    """Write rows ``start..start + n`` of a table as one part file, atomically.

    ``values`` holds float64 columns (as :func:`~niche3d.io._format.encode_columns` makes
    them); columns of the schema that the batch lacks are written as nulls.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sch = arrow_schema(table, schema)
    cats = schema.get("categories", {}) or {}
    cols = []
    for field in sch:
        v = values.get(field.name)
        if v is None:
            cols.append(pa.nulls(n, type=field.type))
        else:
            cols.append(_column(np.asarray(v, dtype=np.float64), field, cats.get(field.name)))
    tab = pa.Table.from_arrays(cols, schema=sch)
    buf = io.BytesIO()
    pq.write_table(tab, buf, compression=_COMPRESSION, compression_level=_COMPRESSION_LEVEL,
                   write_statistics=True)
    path = table_dir / part_name(start, start + n)
    table_dir.mkdir(parents=True, exist_ok=True)
    _atomic.atomic_write_bytes(path, buf.getbuffer())
    return path


def dataset(table_dir: Path, table: str, schema: Mapping[str, Any], n_rows: int) -> pads.Dataset:
    """A lazy pyarrow dataset of the committed rows (nothing is read until it is scanned).

    Its schema is the table's whole schema: columns a part lacks (metrics that appeared
    later in the run) read as nulls.
    """
    import pyarrow.dataset as pads

    files = [str(p) for p in committed_parts(table_dir, n_rows)]
    return pads.dataset(files, schema=arrow_schema(table, schema), format="parquet")


def to_pandas(tab: pa.Table, schema: Mapping[str, Any]) -> pd.DataFrame:
    """An Arrow table of a niche3d table as the DataFrame ``Run.cells`` etc. return.

    Integer columns become int64 (nullable ``Int64`` where a row has no value), bools bool
    (``boolean`` with missing values), dictionary columns pandas Categoricals, floats
    float64: the same DataFrame whatever the store format.
    """
    import pandas as pd

    df = tab.to_pandas()
    kinds = {c["name"]: c["dtype"] for c in schema.get("columns", [])}
    cats = schema.get("categories", {}) or {}
    for name in df.columns:
        if name in cats or name not in kinds:
            continue
        dt = np.dtype(kinds[name])
        col = df[name]
        if dt == np.bool_:
            df[name] = col.astype(bool) if not col.isna().any() else col.astype("boolean")
        elif np.issubdtype(dt, np.integer):
            df[name] = col.astype(np.int64) if not col.isna().any() else pd.array(col, dtype="Int64")
        else:
            df[name] = col.astype(np.float64)
    for name, names in cats.items():
        if name not in df.columns:
            continue
        col = df[name] if isinstance(df[name].dtype, pd.CategoricalDtype) else df[name].astype("category")
        # every stored name in code order, even those no row has (an empty table too), then
        # any unknown_<code> a part had to add: the categories decode_table gives
        present = [str(c) for c in col.cat.categories]
        full = _unique([*names, *(c for c in present if c not in names)])
        df[name] = col.astype(str).where(col.notna()).astype(pd.CategoricalDtype(full))
    df.attrs["units"] = {c["name"]: c.get("unit", "1") for c in schema.get("columns", [])}
    return df
