"""Open a run store: :func:`open_run` -> :class:`Run` (lazy xarray fields, pandas tables)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import LocalStore

from niche3d.io import _parquet
from niche3d.io._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    NICHE_LABEL,
    NICHE_SITE_COLORS,
    NICHE_SITE_DESCRIPTIONS,
    NICHE_SITE_NAMES,
    PARQUET_FORMAT,
    TABLES,
    StoreError,
    decode_table,
)
from niche3d.io._layout import halve
from niche3d.tissue.codes import TISSUE_COLORS, TISSUE_NAMES

if TYPE_CHECKING:  # dask, xarray and pandas are imported when first needed (fast CLI start)
    import pandas as pd
    import pyarrow.dataset as pads
    import xarray as xr

__all__ = ["Run", "open_run", "check_store"]

_REQUIRED_ATTRS = (
    "format_version",
    "scenario",
    "seed",
    "code_version",
    "voxel_um",
    "record_hours",
    "dt_hours",
    "shape",
    "image",
    "fields",
    "n_records",
    "n_records_written",
    "rows",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_pos(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _check_attrs(nz: dict[str, Any], root: Path) -> None:
    """The types and ranges of the niche3d root attributes a reader relies on."""
    problems = []
    for key in ("seed", "n_records", "n_records_written"):
        if not _is_int(nz[key]) or nz[key] < 0:
            problems.append(f"{key} = {nz[key]!r} (an integer >= 0)")
    if not problems and nz["n_records_written"] > nz["n_records"]:
        problems.append(f"n_records_written = {nz['n_records_written']} > n_records = {nz['n_records']}")
    for key in ("voxel_um", "record_hours", "dt_hours"):
        if not _is_pos(nz[key]):
            problems.append(f"{key} = {nz[key]!r} (a positive number)")
    sh = nz["shape"]
    if not (isinstance(sh, list) and len(sh) == 3 and all(_is_int(s) and 1 <= s <= 4096 for s in sh)):
        problems.append(f"shape = {sh!r} (3 integers 1..4096)")
    for key in ("scenario", "code_version"):
        if not isinstance(nz[key], str):
            problems.append(f"{key} is not text")
    if nz["image"] not in ("fields", "occupancy"):
        problems.append(f"image = {nz['image']!r} ('fields' or 'occupancy')")
    f = nz["fields"]
    if not (isinstance(f, list) and all(
            isinstance(x, dict) and isinstance(x.get("name"), str) and isinstance(x.get("unit"), str)
            and isinstance(x.get("window"), list) and len(x["window"]) == 2
            and isinstance(x.get("color"), str) for x in f)):
        problems.append(f"fields = {f!r} (a list of {{name, unit, window, color}})")
    rows = nz["rows"]
    if not (isinstance(rows, dict) and all(_is_int(rows.get(t, 0)) and rows.get(t, 0) >= 0
                                           for t in TABLES)):
        problems.append(f"rows = {rows!r} (an integer >= 0 per table {', '.join(TABLES)})")
    elif _is_int(nz["n_records_written"]) and rows.get("metrics", 0) != nz["n_records_written"]:
        problems.append(f"rows.metrics = {rows.get('metrics', 0)!r} but n_records_written = "
                        f"{nz['n_records_written']} (one metrics row per record)")
    last = nz.get("last_t_hours")
    if last is not None and not (isinstance(last, int | float) and not isinstance(last, bool)
                                 and math.isfinite(last)):
        problems.append(f"last_t_hours = {last!r} (a number or null)")
    for key in ("checkpoint", "failure"):
        if nz.get(key) is not None and not isinstance(nz[key], dict):
            problems.append(f"{key} = {nz[key]!r} (an object or null)")
    if problems:
        raise StoreError(f"{root}: zarr.json has bad niche3d attributes: {'; '.join(problems)}; "
                         "the store is damaged")


class _Guarded:
    """A zarr array for dask whose read errors (a truncated or corrupted data file: zarr
    raises several exception types) become a StoreError naming the store, the array and
    the records."""

    def __init__(self, arr: Any, root: Path) -> None:
        self._arr, self._root = arr, root
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._arr[key]
        except Exception as exc:  # noqa: BLE001 - any decoding failure is damage
            first = key[0] if isinstance(key, tuple) and key else key
            raise StoreError(
                f"{self._root}: {self._arr.path} cannot be read at {first} "
                f"({type(exc).__name__}: {exc}); the store is damaged") from None


def _dask(arr: Any, root: Path) -> Any:
    import dask.array as da

    return da.from_array(_Guarded(arr, root), chunks=arr.chunks, name=False, lock=False,
                         asarray=True, fancy=False, inline_array=True)


def _read_json(path: Path, what: str, root: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StoreError(f"{root}: not a complete niche3d run store: {what} ({path.relative_to(root)}) is missing")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{root}: {path.relative_to(root)} is not readable JSON ({exc}); the store is damaged") from None
    if not isinstance(doc, dict):
        raise StoreError(f"{root}: {path.relative_to(root)} does not hold a JSON object; the store is damaged")
    return doc


def check_store(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that ``path`` is a complete niche3d run store and return its ``niche3d`` attributes.

    Checks the root metadata and format version, every array and group the format
    requires, array shapes against the attributes, and that the data files (shards) of
    every committed record and table row exist.

    Raises
    ------
    StoreError
        With a message naming the path and what is missing or wrong.
    """
    root = Path(path)
    if not root.exists():
        raise StoreError(f"{root}: does not exist")
    if not root.is_dir():
        raise StoreError(f"{root}: is not a directory, so it is not a run store")
    zj = root / "zarr.json"
    if not zj.is_file():
        raise StoreError(f"{root}: not a zarr v3 store (no zarr.json), so not a niche3d run store")
    doc = _read_json(zj, "root metadata", root)
    attrs = doc.get("attributes", {})
    nz = attrs.get("niche3d") if isinstance(attrs, dict) else None
    if not isinstance(nz, dict) or nz.get("format") != FORMAT_NAME:
        raise StoreError(f"{root}: a zarr store but not a niche3d run store (no 'niche3d' run attributes)")
    if nz.get("creating"):
        raise StoreError(f"{root}: is being created (a run is setting it up, or its creation "
                         "was interrupted); open it again in a moment, or make it again with "
                         "--overwrite")
    missing = [k for k in _REQUIRED_ATTRS if k not in nz]
    if missing:
        raise StoreError(f"{root}: niche3d attributes lack {missing}; the store is damaged")
    _check_attrs(nz, root)
    ver = nz["format_version"]
    if not isinstance(ver, int) or ver > FORMAT_VERSION or ver < 1:
        raise StoreError(
            f"{root}: store format version {ver!r} is not supported by this niche3d "
            f"(reads versions 1..{FORMAT_VERSION}); upgrade niche3d"
        )
    if "ome" not in attrs:
        raise StoreError(f"{root}: root zarr.json lacks the 'ome' image metadata; the store is damaged")
    n = int(nz["n_records_written"])
    shape = tuple(int(s) for s in nz["shape"])
    channels = max(1, len(nz["fields"]))
    arrays = {
        "s0": ("field image", (channels, *shape)),
        "labels/tissue/s0": ("tissue labels", shape),
    }
    groups = [("labels", "labels group"), ("labels/tissue", "tissue label group"), ("tables", "tables group")]
    if NICHE_LABEL in _listed_labels(_read_json(root / "labels" / "zarr.json", "labels group", root)):
        # optional (stores written before niche sites were recorded lack it), but required
        # and checked like the tissue once the labels list names it
        groups.append((f"labels/{NICHE_LABEL}", "niche-site label group"))
        arrays[f"labels/{NICHE_LABEL}/s0"] = ("niche-site labels", shape)
    for sub, what in groups:
        _read_json(root / sub / "zarr.json", what, root)
    # coarser pyramid levels (big lattices): every level the OME multiscales lists
    for key in list(arrays):
        what, tail = arrays[key]
        base = key[: -len("s0")]
        doc = attrs if not base else _read_json(root / base / "zarr.json", what, root).get("attributes", {})
        lshape = shape
        for k, path in enumerate(_level_paths(doc, root, base)[1:], start=1):
            if path != f"s{k}" or max(lshape) == 1:
                raise StoreError(f"{root}: {base or 'the root image'} lists a pyramid level {path!r} "
                                 f"where s{k} of the lattice {list(shape)} belongs; the store is damaged")
            lshape = halve(lshape)
            arrays[f"{base}{path}"] = (f"{what} (level {k})", (*tail[:-3], *lshape))
    for key, (what, tail) in arrays.items():
        meta = _read_json(root / key / "zarr.json", what, root)
        ashape = tuple(meta.get("shape", ()))
        if ashape[1:] != tail or ashape[0] < n:
            raise StoreError(
                f"{root}: {key} has shape {list(ashape)}, expected [>= {n}, {', '.join(map(str, tail))}]; "
                "the store is damaged"
            )
        _check_shards(root, key, meta, n)
    rows = nz["rows"]
    if ver >= PARQUET_FORMAT:
        _check_parquet_tables(root, rows)
        return nz
    for t in TABLES:
        gmeta = _read_json(root / "tables" / t / "zarr.json", f"table {t}", root)
        schema = gmeta.get("attributes", {}).get("niche3d_table")
        if not isinstance(schema, dict):
            raise StoreError(f"{root}: tables/{t} has no schema attribute 'niche3d_table'; the store is damaged")
        nr = int(rows.get(t, 0))
        if nr > 0:
            meta = _read_json(root / "tables" / t / "rows" / "zarr.json", f"table {t} rows", root)
            if meta["shape"][0] < nr or meta["shape"][1] < len(schema["columns"]):
                raise StoreError(
                    f"{root}: tables/{t}/rows has shape {meta['shape']} but {nr} rows x "
                    f"{len(schema['columns'])} columns are committed; the store is damaged"
                )
            _check_shards(root, f"tables/{t}/rows", meta, nr)
    return nz


def _table_schemas(root: Path) -> dict[str, dict[str, Any]]:
    """The schemas of a format-3 store's tables (from the ``tables`` group's attributes)."""
    tdoc = _read_json(root / "tables" / "zarr.json", "tables group", root)
    nz = tdoc.get("attributes", {}).get("niche3d")
    schemas = nz.get("schemas") if isinstance(nz, dict) else None
    if not isinstance(schemas, dict) or any(
            not isinstance(schemas.get(t), dict) or not isinstance(schemas[t].get("columns"), list)
            for t in TABLES):
        raise StoreError(f"{root}: tables/zarr.json lacks the table schemas ('niche3d' -> "
                         "'schemas'); the store is damaged")
    return {t: schemas[t] for t in TABLES}


def _check_parquet_tables(root: Path, rows: dict[str, Any]) -> None:
    """Every committed row of every table is in a whole part file on the chain."""
    _table_schemas(root)
    for t in TABLES:
        _parquet.committed_parts(root / "tables" / t, int(rows.get(t, 0)), check_files=True)


def _listed_labels(labels_doc: dict[str, Any]) -> list[str]:
    """Names in the OME ``labels`` list of a ``labels/zarr.json`` document (never raises)."""
    attrs = labels_doc.get("attributes")
    ome = attrs.get("ome") if isinstance(attrs, dict) else None
    names = ome.get("labels") if isinstance(ome, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def _level_paths(attrs: Any, root: Path, base: str) -> list[str]:
    """Paths of the levels listed in an image's OME multiscales (``["s0"]`` when none)."""
    try:
        dsets = attrs["ome"]["multiscales"][0]["datasets"]
        return [str(d["path"]) for d in dsets]
    except (KeyError, TypeError, IndexError):
        raise StoreError(f"{root}: {base or 'the root image'} has no OME multiscales datasets; "
                         "the store is damaged") from None


def _check_shards(root: Path, key: str, meta: dict[str, Any], n_lead: int) -> None:
    """Every data file covering the first ``n_lead`` entries along axis 0 must exist."""
    if n_lead == 0:
        return
    try:
        grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
        enc = meta.get("chunk_key_encoding", {})
        sep = enc.get("configuration", {}).get("separator", "/")
        shape = meta["shape"]
    except (KeyError, TypeError):
        raise StoreError(f"{root}: {key}/zarr.json lacks a regular chunk grid; the store is damaged") from None
    ndim = len(shape)
    for i in range(-(-n_lead // grid[0])):
        # the first data file of each block of records (all channels / columns share it)
        parts = [str(i)] + ["0"] * (ndim - 1)
        rel = ("c" + sep + sep.join(parts)) if enc.get("name", "default") == "default" else ".".join(parts)
        f = root / key / rel
        if not f.is_file() or f.stat().st_size == 0:
            raise StoreError(
                f"{root}: data file {key}/{rel} of committed records is missing or empty; "
                "the store is truncated"
            )


class _SnapshotStore(LocalStore):
    """Read-only LocalStore that serves every data file (shard) from one snapshot of it.

    zarr reads a shard's index and its chunks with separate opens; a writer replacing
    the shard in between (a run being viewed while it is written) would pair an old
    index with new bytes. Here a file up to WHOLE_BYTES is read whole, once, and its byte
    ranges are served from that copy (a small LRU cache also makes scrubbing through
    neighbouring time points cheap); a bigger file (a femur record: 150 MB of which a
    plane needs 3 MB) is opened once and its ranges read from that open file, which keeps
    the version it opened when a writer renames a new one into place.
    """

    #: files up to this size are read whole; bigger ones are read by range from an open file
    WHOLE_BYTES = 16 * 2**20
    #: open files kept (the least recently used is closed beyond)
    MAX_OPEN = 64

    def __init__(self, root: Path | str, *, max_bytes: int = 512 * 2**20) -> None:
        super().__init__(root, read_only=True)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._max_bytes = max_bytes
        self._open: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (fd, size)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        for fd, _ in getattr(self, "_open", {}).values():
            with contextlib.suppress(OSError):  # already closed: nothing to release
                os.close(fd)

    def with_read_only(self, read_only: bool = False) -> LocalStore:
        """A plain LocalStore when write access is asked for; this store otherwise."""
        return self if read_only else LocalStore(self.root, read_only=False)

    def _whole(self, key: str) -> bytes | None:
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                return data
        try:
            data = (self.root / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        with self._lock:
            if key not in self._cache:
                self._cache[key] = data
                self._cached_bytes += len(data)
                while self._cached_bytes > self._max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached_bytes -= len(old)
            return self._cache[key]

    def _ranged(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        """A range of a big file, read from the file as it was when first opened here;
        None when the file is small (read whole instead) or missing."""
        with self._lock:
            entry = self._open.get(key)
            if entry is None and key in self._cache:
                return None  # a small file, already read whole
            if entry is None:
                with self._lock_free():
                    try:
                        size = (self.root / key).stat().st_size
                    except (FileNotFoundError, NotADirectoryError):
                        return None
                    if size <= self.WHOLE_BYTES:
                        return None
                    try:
                        fd = os.open(self.root / key, os.O_RDONLY)
                    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                        return None
                entry = (fd, os.fstat(fd).st_size)
                if key in self._open:  # another thread opened it meanwhile
                    os.close(fd)
                    entry = self._open[key]
                self._open[key] = entry
                while len(self._open) > self.MAX_OPEN:
                    _, (old, _) = self._open.popitem(last=False)
                    os.close(old)
            self._open.move_to_end(key)
            fd, size = entry
            if byte_range is None:
                start, stop = 0, size
            elif isinstance(byte_range, RangeByteRequest):
                start, stop = byte_range.start, min(byte_range.end, size)
            elif isinstance(byte_range, OffsetByteRequest):
                start, stop = byte_range.offset, size
            elif isinstance(byte_range, SuffixByteRequest):
                start, stop = max(0, size - byte_range.suffix), size
            else:
                raise TypeError(f"unexpected byte range {byte_range!r}")
            # read under the lock: an evicted file is closed only between reads
            return os.pread(fd, max(0, stop - start), start)

    @contextlib.contextmanager
    def _lock_free(self) -> Iterator[None]:
        """Release the lock around slow file-system calls (re-taken on leaving)."""
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()

    def _slice(self, key: str, prototype: BufferPrototype | None, byte_range: ByteRequest | None) -> Buffer | None:
        if prototype is None:
            prototype = default_buffer_prototype()
        if key.endswith("zarr.json"):
            return super().get_sync(key, prototype=prototype, byte_range=byte_range)
        part = self._ranged(key, byte_range)
        if part is not None:
            return prototype.buffer.from_bytes(part)
        data = self._whole(key)
        if data is None:
            return None
        if byte_range is None:
            part = data
        elif isinstance(byte_range, RangeByteRequest):
            part = data[byte_range.start : byte_range.end]
        elif isinstance(byte_range, OffsetByteRequest):
            part = data[byte_range.offset :]
        elif isinstance(byte_range, SuffixByteRequest):
            part = data[max(0, len(data) - byte_range.suffix) :]
        else:
            raise TypeError(f"unexpected byte range {byte_range!r}")
        return prototype.buffer.from_bytes(part)

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """Bytes of ``key`` (a range of them) from a whole-file snapshot."""
        return await asyncio.to_thread(self._slice, key, prototype, byte_range)

    def get_sync(
        self, key: str, *, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """Synchronous :meth:`get`."""
        return self._slice(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Any
    ) -> list[Buffer | None]:
        """Several ranges, each from the snapshot of its file."""
        return [await self.get(k, prototype, r) for k, r in key_ranges]


class Run:
    """A run store opened for reading; see :func:`open_run`.

    Attributes
    ----------
    path
        Store directory.
    attrs
        The ``niche3d`` attributes (scenario TOML, seed, code version, units, ...).
    """

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path = path
        self.attrs: dict[str, Any] = attrs
        self._group = zarr.open_group(_SnapshotStore(path), mode="r", zarr_format=3)

    def __repr__(self) -> str:
        return (
            f"<Run {str(self.path)!r}: {self.n_records} records every {self.record_hours:g} h, "
            f"lattice {tuple(self.shape)} at {self.voxel_um:g} µm, fields {list(self.field_names)}>"
        )

    # ------------------------------------------------------------------ scalars
    @property
    def seed(self) -> int:
        """Master seed of the run."""
        return int(self.attrs["seed"])

    @property
    def code_version(self) -> str:
        """niche3d version that wrote the run."""
        return str(self.attrs["code_version"])

    @property
    def voxel_um(self) -> float:
        """Voxel edge in µm."""
        return float(self.attrs["voxel_um"])

    @property
    def record_hours(self) -> float:
        """Nominal time between records in hours."""
        return float(self.attrs["record_hours"])

    @property
    def dt_hours(self) -> float:
        """Cell time step in hours."""
        return float(self.attrs["dt_hours"])

    @property
    def n_records(self) -> int:
        """Committed (complete) records."""
        return int(self.attrs["n_records_written"])

    @property
    def failure(self) -> dict[str, Any] | None:
        """Why the run stopped, when a runtime guard stopped it (``niche3d.guards``):
        ``what``, ``where`` (a voxel or None), ``t_hours``, ``day``, ``step``,
        ``message``; None for a run that did not fail."""
        f = self.attrs.get("failure")
        return dict(f) if isinstance(f, dict) else None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Lattice shape (z, y, x)."""
        return tuple(int(s) for s in self.attrs["shape"])  # type: ignore[return-value]

    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of the stored fields (empty when the run stored none)."""
        return tuple(f["name"] for f in self.attrs["fields"])

    @property
    def scenario_toml(self) -> str:
        """The full scenario as stored (TOML text)."""
        return str(self.attrs["scenario"])

    @cached_property
    def scenario(self) -> Any:
        """The run's :class:`~niche3d.scenario.Scenario`.

        Raises
        ------
        StoreError
            The stored TOML does not validate with this niche3d (see :attr:`scenario_toml`).
        """
        from niche3d.scenario import Scenario, ScenarioError

        try:
            return Scenario.from_toml_text(self.scenario_toml, source=f"{self.path} scenario")
        except ScenarioError as exc:
            raise StoreError(
                f"{self.path}: the stored scenario does not validate with this niche3d "
                f"(written by {self.code_version}; its records and tables still read with "
                f"open_run, and it resumes with the niche3d that wrote it): {exc}"
            ) from None

    @cached_property
    def times_h(self) -> np.ndarray:
        """Time of each committed record in hours."""
        m = self.metrics
        return m["t"].to_numpy(dtype=np.float64) if "t" in m else np.zeros(0)

    # ------------------------------------------------------------------ coordinates
    def _space_coords(self) -> dict[str, Any]:
        import xarray as xr

        v = self.voxel_um
        out: dict[str, Any] = {}
        for name, n in zip("zyx", self.shape, strict=True):
            out[name] = xr.Variable(name, (np.arange(n) + 0.5) * v, attrs={"units": "micrometer"})
        return out

    def _t_coord(self) -> xr.Variable:
        import xarray as xr

        return xr.Variable("t", self.times_h, attrs={"units": "hour"})

    # ------------------------------------------------------------------ arrays
    @cached_property
    def fields(self) -> xr.Dataset:
        """One dask-backed (t, z, y, x) variable per field; coords in hours and µm."""
        import xarray as xr

        arr = _dask(self._group["s0"], self.path)[: self.n_records]
        coords = {"t": self._t_coord(), **self._space_coords()}
        data_vars = {}
        for i, f in enumerate(self.attrs["fields"]):
            data_vars[f["name"]] = xr.Variable(
                ("t", "z", "y", "x"),
                arr[:, i],
                attrs={"units": f["unit"], "window": tuple(f["window"]), "color": f["color"]},
            )
        return xr.Dataset(data_vars, coords=coords, attrs={"voxel_um": self.voxel_um})

    # ------------------------------------------------------------------ pyramid
    @property
    def levels(self) -> int:
        """Number of stored resolutions of the images (1, or more for a big lattice: see
        :mod:`niche3d.io._layout`)."""
        return len(self._datasets(""))

    def _datasets(self, prefix: str) -> list[tuple[str, tuple[int, int, int]]]:
        """(path, factor) of each level listed in the OME multiscales at ``prefix``."""
        node = self._group[prefix.rstrip("/")] if prefix else self._group
        try:
            dsets = node.attrs["ome"]["multiscales"][0]["datasets"]  # type: ignore[index]
        except (KeyError, TypeError, IndexError):
            return [("s0", (1, 1, 1))]
        out = []
        v = self.voxel_um
        for d in dsets:
            scale = next((t["scale"] for t in d.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
            fac = (1, 1, 1) if scale is None else tuple(max(1, round(float(s) / v)) for s in scale[-3:])
            out.append((str(d["path"]), fac))
        return out  # type: ignore[return-value]

    def pyramid(self, name: str) -> list[Any]:
        """Every stored resolution of one image, finest first, read lazily without dask.

        Parameters
        ----------
        name
            A field name (:attr:`field_names`), ``"tissue"``, ``"niche"`` (the niche-site
            map, when :attr:`has_niche`) or ``"cells"`` (the occupancy image of a run that
            stored no fields).

        Returns
        -------
        list of niche3d.io.pyramid.Level
            Each with a (t, z, y, x) :class:`~niche3d.io.pyramid.LazyArray` of the committed
            records, its downsampling factor, voxel size and the centre of voxel 0 (µm).
            One level for a small lattice or a store written before pyramids.

        Raises
        ------
        KeyError
            ``name`` is not one of the run's images.
        """
        from niche3d.io.pyramid import LazyArray, Level

        if name in ("tissue", NICHE_LABEL) and (name == "tissue" or self.has_niche):
            prefix, channel = f"labels/{name}/", None
        elif name in self.field_names or (name == "cells" and self.attrs["image"] == "occupancy"):
            prefix = ""
            channel = self.field_names.index(name) if self.field_names else 0
        else:
            images = [*self.field_names, "tissue", *([NICHE_LABEL] if self.has_niche else []),
                      *(["cells"] if self.attrs["image"] == "occupancy" else [])]
            raise KeyError(f"{name!r} is not an image of this run; its images are {images}")
        v = self.voxel_um
        out = []
        for path, fac in self._datasets(prefix):
            arr = LazyArray(self._group[prefix + path], self.path, self.n_records, channel)
            size = tuple(v * f for f in fac)
            out.append(Level(arr, fac, size, tuple(s / 2 for s in size)))  # type: ignore[arg-type]
        return out

    @cached_property
    def occupancy(self) -> xr.DataArray | None:
        """(t, z, y, x) uint8 cell occupancy, for runs stored without fields; else None."""
        import xarray as xr

        if self.attrs["image"] != "occupancy":
            return None
        arr = _dask(self._group["s0"], self.path)[: self.n_records, 0]
        return xr.DataArray(
            arr, dims=("t", "z", "y", "x"), coords={"t": self._t_coord(), **self._space_coords()}, name="cells"
        )

    @cached_property
    def tissue(self) -> xr.DataArray:
        """(t, z, y, x) uint8 tissue codes, dask-backed; attrs ``names`` and ``colors``."""
        import xarray as xr

        arr = _dask(self._group["labels/tissue/s0"], self.path)[: self.n_records]
        return xr.DataArray(
            arr,
            dims=("t", "z", "y", "x"),
            coords={"t": self._t_coord(), **self._space_coords()},
            name="tissue",
            attrs={"names": dict(TISSUE_NAMES), "colors": {int(k): tuple(v) for k, v in TISSUE_COLORS.items()}},
        )

    @property
    def has_niche(self) -> bool:
        """Whether the store holds the niche-site label image ``labels/niche``."""
        return NICHE_LABEL in _listed_labels({"attributes": dict(self._group["labels"].attrs)})

    @cached_property
    def niche(self) -> xr.DataArray | None:
        """(t, z, y, x) uint8 niche-site map of every record, dask-backed; None for a store
        without one (written before niche sites were recorded).

        Codes (attrs ``names``, ``descriptions``, ``colors``): 0 not a niche site, 1 free
        site, 2 site held by an HSC, 3 site taken by another cell (an MPP); dimensionless
        (``units = "1"``), one site per voxel. The count of codes > 0 in a record is that
        record's ``niche_sites`` metric, of 1 ``niche_sites_free``, of 2 ``niche_sites_hsc``.
        """
        import xarray as xr

        if not self.has_niche:
            return None
        arr = _dask(self._group[f"labels/{NICHE_LABEL}/s0"], self.path)[: self.n_records]
        return xr.DataArray(
            arr,
            dims=("t", "z", "y", "x"),
            coords={"t": self._t_coord(), **self._space_coords()},
            name=NICHE_LABEL,
            attrs={
                "names": dict(NICHE_SITE_NAMES),
                "descriptions": dict(NICHE_SITE_DESCRIPTIONS),
                "colors": {int(k): tuple(v) for k, v in NICHE_SITE_COLORS.items()},
                "units": "1",
            },
        )

    # ------------------------------------------------------------------ tables
    @property
    def format_version(self) -> int:
        """The store's format version (3: Parquet tables; ``niche3d upgrade`` converts 1 and 2)."""
        return int(self.attrs["format_version"])

    def _check_table_name(self, name: str) -> None:
        if name not in TABLES:
            raise ValueError(f"table must be one of {', '.join(TABLES)}, got {name!r}")

    def dataset(self, table: str) -> pads.Dataset:
        """The committed rows of a table as a lazy :class:`pyarrow.dataset.Dataset`.

        Nothing is read until it is scanned, and a scan reads only the columns and row
        groups it needs, so a query on a multi-GB run does not load the table::

            import pyarrow.dataset as ds
            hsc = run.dataset("cells").to_table(
                columns=["record", "state", "z"], filter=ds.field("record") == 30)

        DuckDB queries it in place too (``duckdb.sql("select ... from d")`` with
        ``d = run.dataset("cells")``). Columns keep their stored types (categories as
        dictionaries of names; metrics as float64); :meth:`read_table` returns the same
        DataFrame types as :attr:`cells`. A store of format 1 or 2 gives an in-memory
        dataset (run ``niche3d upgrade`` for lazy scans).

        Raises
        ------
        ValueError
            ``table`` is not one of cells, events, metrics.
        StoreError
            A table part is missing or unreadable.
        """
        import pyarrow as pa
        import pyarrow.dataset as pads

        self._check_table_name(table)
        if self.format_version < PARQUET_FORMAT:
            return pads.dataset(pa.Table.from_pandas(self._table(table), preserve_index=False))
        return _parquet.dataset(self.path / "tables" / table, table, self._schemas[table],
                                int(self.attrs["rows"].get(table, 0)))

    def read_table(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pd.DataFrame:
        """Read part of a table: only ``columns`` (all if None), only rows matching
        ``filter`` (a :mod:`pyarrow.dataset` expression such as
        ``pyarrow.dataset.field("record") >= 10``), as :attr:`cells` types them.

        Raises
        ------
        ValueError
            Unknown table or column.
        """
        self._check_table_name(table)
        schema = self._schemas[table] if self.format_version >= PARQUET_FORMAT else None
        known = [c["name"] for c in schema["columns"]] if schema is not None else list(self._table(table).columns)
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
                raise ValueError(f"columns must be a list of column names, got {columns!r}")
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise ValueError(f"{table} has no columns {unknown}; it has {known}")
        if schema is None:
            df = self._table(table)
            if filter is not None:
                import pyarrow as pa
                import pyarrow.dataset as pads

                # filter through Arrow, keep the rows (and their pandas types) it selects
                tagged = pa.Table.from_pandas(df.assign(__row__=np.arange(len(df))), preserve_index=False)
                keep = pads.dataset(tagged).to_table(columns=["__row__"], filter=filter)
                units = df.attrs.get("units", {})
                df = df.iloc[keep.column("__row__").to_numpy()].reset_index(drop=True)
                df.attrs["units"] = units
            return df[columns] if columns is not None else df
        tab = self.dataset(table).to_table(columns=columns, filter=filter)
        return _parquet.to_pandas(tab, schema)

    @cached_property
    def _schemas(self) -> dict[str, dict[str, Any]]:
        return _table_schemas(self.path)

    def _table(self, name: str) -> pd.DataFrame:
        if self.format_version >= PARQUET_FORMAT:
            try:
                return self.read_table(name)
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged part, whatever pyarrow raises
                raise StoreError(f"{self.path}: tables/{name} cannot be read ({type(exc).__name__}: "
                                 f"{exc}); the store is damaged") from None
        try:
            g = self._group[f"tables/{name}"]
            schema = dict(g.attrs["niche3d_table"])
            n = int(self.attrs["rows"].get(name, 0))
            # (existence from the file system: listing the group's members would warn about
            # Parquet parts an interrupted upgrade left beside the array)
            if n == 0 or not (self.path / "tables" / name / "rows" / "zarr.json").is_file():
                return decode_table(np.zeros((0, len(schema["columns"]))), schema)
            rows = np.asarray(g["rows"][:n, :])
            df = decode_table(rows, schema)
            df.attrs["units"] = {c["name"]: c["unit"] for c in schema["columns"]}
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged table, whatever zarr raises
            raise StoreError(f"{self.path}: tables/{name} cannot be read ({type(exc).__name__}: "
                             f"{exc}); the store is damaged") from None
        return df

    @cached_property
    def cells(self) -> pd.DataFrame:
        """Cell snapshots, one row per cell and record (``record``, ``t`` in h, ``z, y, x`` in µm)."""
        return self._table("cells")

    @cached_property
    def events(self) -> pd.DataFrame:
        """Events (``t_hours``, ``kind``, ...)."""
        return self._table("events")

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per record: ``record``, ``t`` (h) and the metric columns."""
        return self._table("metrics")


def open_run(path: str | os.PathLike[str]) -> Run:
    """Open a niche3d run store for reading.

    Parameters
    ----------
    path
        Store directory.

    Returns
    -------
    Run
        Lazy fields, tissue and niche sites (dask), tables as pandas DataFrames, the scenario.

    Raises
    ------
    StoreError
        ``path`` is not a niche3d run store, is truncated, or has an unsupported version.
    """
    p = Path(path)
    attrs = check_store(p)
    return Run(p, attrs)
