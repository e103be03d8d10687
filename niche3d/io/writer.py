"""Write a run store: OME-Zarr 0.5 fields, tissue and niche sites, tables, checkpoints.

The layout and the crash-safety rules are described in ``docs/store.md``. In short: every
object is written with temp file + :func:`os.replace` (:class:`AtomicLocalStore`), data
for record *k* is written first and the root attribute ``niche3d.n_records_written`` (with
the committed row count of every table) is updated last, in one atomic write of the root
``zarr.json``. Readers use only committed records and rows, so a run killed at any
instant leaves a store that opens and holds every record it had reported as written.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import BitRound
from zarr.codecs import BloscCodec

from niche3d.io import _atomic, _layout, _parquet, _shard
from niche3d.io._atomic import AtomicLocalStore, remove_stale_temp_files
from niche3d.io._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    NICHE_LABEL,
    NICHE_SITE_DESCRIPTIONS,
    NICHE_SITE_NAMES,
    POSITION_COLUMNS,
    TABLES,
    StoreError,
    column_unit,
    encode_columns,
    is_finite_number,
    tables_attrs,
)

__all__ = ["RunWriter", "read_checkpoint", "CHECKPOINT_DIR"]

#: colours of field channels, in channel order (cycled), as OMERO hex strings.
FIELD_COLORS: tuple[str, ...] = (
    "FF00FF",  # magenta
    "00FF00",  # green
    "00FFFF",  # cyan
    "FFFF00",  # yellow
    "FF8000",  # orange
    "0080FF",  # azure
    "FF0000",  # red
    "FFFFFF",  # white
)
OCCUPANCY_CHANNEL = "cells"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.npz"
_META_KEY = "__niche3d_meta_json__"
_POS_KEY = "__niche3d_store_position_json__"

#: Layout of the image and label arrays (niche3d.io._layout): one shard (one data file) per
#: record and pyramid level, holding every channel, cut into spatial inner chunks so a
#: viewer decodes only the part of a big lattice it shows. A record therefore never
#: rewrites anything but its own files (zarr rewrites a whole shard on a partial write:
#: shards of several records cost 2-100x write amplification).
#: Fast lossless codecs (measured on CXCL12/SCF records, 2 cores: zstd level 1 with
#: bit-shuffle compresses float32 fields 1.40x in 5 ms per 3.5 MB, zstd level 5 with
#: byte-shuffle 1.55x in 48 ms; lz4 1.34x in 3 ms). Stores written with other codecs
#: read as before: zarr takes the codecs from each array's metadata.
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")
_LABEL_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")
_RESERVED_CELL_COLUMNS = ("t", "record")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _is_niche3d_store(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("attributes", {}).get("niche3d"), dict)


def _check_pos(name: str, value: Any) -> float:
    if not is_finite_number(value) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


class _Table:
    """Writer-side state of one table: its schema (saved in the ``tables`` group's
    attributes) and the rows written so far (committed ones are in the root attributes)."""

    def __init__(self, name: str, directory: Path, schema: dict[str, Any], n_rows: int) -> None:
        self.name = name
        self.dir = directory  # tables/<name>/: the Parquet parts, nothing else
        self.schema = schema
        self.n_rows = n_rows

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.schema["columns"]]


class RunWriter:
    """Writes one run store; create with :meth:`create`, reopen with :meth:`open_append`.

    Records are written in order with :meth:`write_record`; each call returns only after
    the record is on disk and committed. Events may be appended at any time with
    :meth:`append_events` (also committed on return).
    """

    def __init__(self, path: Path, group: zarr.Group) -> None:  # use create/open_append
        self.path = path
        self._root = group
        # the root metadata document, kept to rewrite on each commit (_commit)
        self._root_doc: dict[str, Any] = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
        self._attrs: dict[str, Any] = dict(group.attrs["niche3d"])  # type: ignore[arg-type]
        # every image is a list of its pyramid levels (s0 first; one level for a small
        # lattice and for stores written before pyramids)
        self._image: list[zarr.Array] = _levels(group, "")
        self._tissue: list[zarr.Array] = _levels(group, "labels/tissue/")
        # niche-site labels: only in stores created with niche=True (None in older stores)
        self._niche: list[zarr.Array] | None = (
            _levels(group, f"labels/{NICHE_LABEL}/") if NICHE_LABEL in _listed_labels(group) else None
        )
        self._shape: tuple[int, int, int] = tuple(int(n) for n in self._attrs["shape"])  # type: ignore[assignment]
        self._voxel = float(self._attrs["voxel_um"])
        self._field_names: list[str] = [f["name"] for f in self._attrs["fields"]]
        self._occupancy = self._attrs["image"] == "occupancy"
        self._n_written = int(self._attrs["n_records_written"])
        rows = self._attrs["rows"]
        self._tables_group: zarr.Group = group["tables"]  # type: ignore[assignment]
        schemas = dict(self._tables_group.attrs["niche3d"])["schemas"]  # type: ignore[arg-type]
        self._tables: dict[str, _Table] = {
            t: _Table(t, path / "tables" / t, dict(schemas[t]), int(rows[t])) for t in TABLES
        }
        idx = self._n_written - 1 if self._n_written > 0 else 0
        self._last_labels = np.asarray(self._tissue[0][idx])
        self._last_sites: np.ndarray | None = None  # the niche map of the last record
        last_t = self._attrs.get("last_t_hours")
        self._last_t: float | None = None if last_t is None else float(last_t)
        # what readers were shown before a rewind (see _rewound): the commit never shows
        # fewer records or rows until the replay has written them again
        self._shown: tuple[int, dict[str, int], float | None] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        scenario: Any,
        labels: np.ndarray,
        voxel_um: float,
        record_hours: float,
        n_records: int,
        fields: Sequence[tuple[str, str, tuple[float, float]]],
        seed: int,
        code_version: str,
        dt_hours: float,
        overwrite: bool = False,
        niche: bool = False,
        keepbits: int | None = None,
    ) -> RunWriter:
        """Create a new run store.

        Parameters
        ----------
        path
            Directory of the store (conventionally ``*.zarr``).
        scenario
            The full :class:`~niche3d.scenario.Scenario`; stored as TOML text.
        labels
            uint8 (z, y, x) tissue codes at the start of the run.
        voxel_um
            Voxel edge in µm.
        record_hours
            Time between records in hours (the OME time scale).
        n_records
            Number of records the arrays are sized for (grow with :meth:`extend`).
        fields
            ``(name, unit, (lo, hi))`` per stored field, in channel order. Empty when the
            scenario stores no fields (``output.fields = false``): the image then holds one
            uint8 channel ``cells`` (1 where a cell sits), so the root stays a valid image.
        seed
            Master seed of the run.
        code_version
            niche3d version string.
        dt_hours
            Cell time step in hours.
        overwrite
            Replace an existing niche3d store at ``path``. A directory that is not a
            niche3d store (and not empty) is never deleted.
        niche
            Also create the niche-site label image ``labels/niche`` (uint8 (t, z, y, x),
            codes :data:`~niche3d.io._format.NICHE_SITE_NAMES`), filled by the ``niche``
            argument of :meth:`write_record`. :class:`~niche3d.simulation.Simulation`
            always asks for it; without it the store has the tissue labels only.
        keepbits
            Lossy display copies: the stored fields keep this many (1..23) mantissa bits
            (``numcodecs.BitRound``, round half to even; relative error at most
            ``2**-(keepbits + 1)``); None stores them exactly. Recorded in the attributes
            as ``field_keepbits``.

        Raises
        ------
        StoreError
            ``path`` exists (without ``overwrite``), or is something that is not ours.
        ValueError
            A parameter is out of range.
        """
        from niche3d.scenario import Scenario

        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a niche3d.scenario.Scenario, got {type(scenario).__name__}")
        labels = np.asarray(labels)
        if labels.ndim != 3 or labels.dtype != np.uint8 or min(labels.shape) < 1:
            raise ValueError(
                f"labels must be a non-empty 3D uint8 array (z, y, x), got shape {labels.shape} "
                f"dtype {labels.dtype}"
            )
        voxel_um = _check_pos("voxel_um", voxel_um)
        record_hours = _check_pos("record_hours", record_hours)
        dt_hours = _check_pos("dt_hours", dt_hours)
        n_records = _check_int("n_records", n_records, 1)
        seed = _check_int("seed", seed, 0)
        if not isinstance(code_version, str):
            raise ValueError(f"code_version must be a string, got {code_version!r}")
        field_meta = _check_fields(fields)
        if keepbits is not None:
            keepbits = _check_int("keepbits", keepbits, 1)
            if keepbits > 23:
                raise ValueError(f"keepbits must be 1..23 (float32 has 23 mantissa bits), got {keepbits}")
        p = Path(path)
        _prepare_path(p, overwrite=bool(overwrite))

        shape = tuple(int(n) for n in labels.shape)
        store = AtomicLocalStore(p)
        root = zarr.open_group(store, mode="w", zarr_format=3)
        occupancy = not field_meta
        channels = field_meta or [
            {"name": OCCUPANCY_CHANNEL, "unit": "1", "window": [0.0, 1.0], "color": "FFFFFF"}
        ]
        attrs: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "scenario": scenario.to_toml(),
            "scenario_name": scenario.name,
            "seed": seed,
            "code_version": code_version,
            "voxel_um": voxel_um,
            "record_hours": record_hours,
            "dt_hours": dt_hours,
            "units": {"time": "hour", "space": "micrometer"},
            "shape": list(shape),
            "image": "occupancy" if occupancy else "fields",
            "fields": field_meta,
            "n_records": n_records,
            "n_records_written": 0,
            "rows": {t: 0 for t in TABLES},
            "last_t_hours": None,
            "created": _now(),
            "updated": _now(),
            "checkpoint": None,
            "field_keepbits": keepbits,
            # until the arrays and tables exist: readers say "being created", not "damaged"
            "creating": True,
        }
        # root first: a store killed while being created is recognisably ours (and truncated)
        root.update_attributes({"ome": _layout.image_ome(channels, shape, voxel_um, record_hours, occupancy=occupancy),
                                "niche3d": attrs})

        # one array per pyramid level (s0 = the lattice; s1, s2, ... for a big lattice)
        c = len(channels)
        levels = _layout.level_shapes(shape)
        for k, lshape in enumerate(levels):
            inner = _layout.inner_chunk(lshape, 1 if occupancy else 4)
            root.create_array(
                f"s{k}",
                shape=(n_records, c, *lshape),
                dtype=np.uint8 if occupancy else np.float32,
                chunks=(1, 1, *inner),
                shards=(1, c, *_layout.cover(lshape, inner)),
                fill_value=0 if occupancy else np.nan,
                compressors=_COMPRESSOR,
                dimension_names=["t", "c", "z", "y", "x"],
            )
        label_names = ["tissue", NICHE_LABEL] if niche else ["tissue"]
        lab_root = root.create_group("labels", attributes={"ome": {"version": "0.5", "labels": label_names}})
        tissue = lab_root.create_group("tissue", attributes={"ome": _layout.label_ome(shape, voxel_um, record_hours)})

        def label_arrays(group: zarr.Group, attributes: dict[str, Any] | None = None) -> None:
            for k, lshape in enumerate(levels):
                inner = _layout.inner_chunk(lshape, 1)
                group.create_array(
                    f"s{k}",
                    shape=(n_records, *lshape),
                    dtype=np.uint8,
                    chunks=(1, *inner),
                    shards=(1, *_layout.cover(lshape, inner)),
                    fill_value=0,
                    compressors=_LABEL_COMPRESSOR,
                    dimension_names=["t", "z", "y", "x"],
                    attributes=attributes,
                )

        label_arrays(tissue)
        if niche:
            # same layout, chunks, shards and compression as the tissue; written with every
            # record (zeros when write_record is given no niche map)
            nsites = lab_root.create_group(
                NICHE_LABEL, attributes={"ome": _layout.niche_label_ome(shape, voxel_um, record_hours)}
            )
            label_arrays(nsites, attributes=_NICHE_ARRAY_ATTRS)
        root.create_group("tables", attributes={"niche3d": tables_attrs(
            {t: {"columns": [], "categories": {}} for t in TABLES})})
        for t in TABLES:
            (p / "tables" / t).mkdir()
        w = cls(p, root)
        # record 0's tissue (every level) unless write_record gives other labels
        w._put_levels(w._tissue, 0, labels, _layout.downsample_mode)
        w._last_labels = labels.copy()
        del w._attrs["creating"]
        w._commit()
        return w

    @classmethod
    def open_append(cls, path: str | os.PathLike[str]) -> RunWriter:
        """Reopen an existing store to continue or resume a run.

        Rows and records written after the last commit (by a killed run) are discarded:
        writing continues at ``n_records_written``.
        """
        from niche3d.io.reader import check_store
        from niche3d.io.upgrade import upgrade_tables

        p = Path(path)
        check_store(p)
        remove_stale_temp_files(p)
        # a store of an earlier format is upgraded to this one first (lossless and
        # crash-safe: niche3d.io.upgrade), so that one writer code path appends to it
        upgrade_tables(p)
        root = zarr.open_group(AtomicLocalStore(p), mode="r+", zarr_format=3)
        w = cls(p, root)
        w._drop_uncommitted_parts()
        return w

    # ------------------------------------------------------------------ properties
    @property
    def n_records(self) -> int:
        """Capacity of the time axis (records the arrays can hold)."""
        return int(self._attrs["n_records"])

    @property
    def n_records_written(self) -> int:
        """Committed records."""
        return self._n_written

    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of the stored fields (empty for an occupancy image)."""
        return tuple(self._field_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Lattice shape (z, y, x)."""
        return self._shape

    @property
    def has_niche(self) -> bool:
        """Whether the store has the niche-site label image ``labels/niche``."""
        return self._niche is not None

    def flush(self) -> None:
        """Nothing to do: every call returns once its data is committed (the same method as
        :class:`~niche3d.io.background.BackgroundWriter`, so either can be used)."""

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    # ------------------------------------------------------------------ records
    def write_record(
        self,
        index: int,
        t_hours: float,
        *,
        fields: Mapping[str, np.ndarray] | None,
        labels: np.ndarray | None,
        cells: Mapping[str, np.ndarray],
        metrics: Mapping[str, float],
        niche: np.ndarray | None = None,
    ) -> None:
        """Write record ``index`` (time ``t_hours``) and commit it.

        Parameters
        ----------
        index
            Must equal :attr:`n_records_written` (records are written in order) and be
            below :attr:`n_records` (call :meth:`extend` to grow).
        t_hours
            Simulated time of the record in hours; increases strictly from record to record.
        fields
            Field name -> (z, y, x) array for every stored field; ``None`` when the store
            keeps no fields, or to leave this record's fields unrecorded (stored as NaN,
            for ``output.fields_every_records``).
        labels
            uint8 (z, y, x) tissue at this record, or ``None`` when unchanged.
        cells
            Columns of the cell snapshot (equal-length 1D arrays). Integer ``z, y, x`` are
            voxel indices (``-1`` = circulating) and are stored as µm voxel centres (NaN
            when circulating). The writer adds ``record`` and ``t`` (hours).
        metrics
            Metric name -> number; stored as one row with ``record`` and ``t``.
        niche
            uint8 (z, y, x) niche-site map at this record (0 not a site, 1 free, 2 held by
            an HSC, 3 taken by another cell; ``CellModel.niche_sites()``), stored in
            ``labels/niche``. ``None`` writes zeros there (nothing else is recorded). Only
            for stores with a niche label image (:attr:`has_niche`).
        """
        index = _check_int("index", index, 0)
        if index != self._n_written:
            raise ValueError(
                f"index must be the next record, {self._n_written} (records are written in order), got {index}"
            )
        if index >= self.n_records:
            raise ValueError(
                f"index {index} is beyond the store's n_records={self.n_records}; call extend() first"
            )
        if not is_finite_number(t_hours):
            raise ValueError(f"t_hours must be a finite number, got {t_hours!r}")
        t_hours = float(t_hours)
        if self._last_t is not None and not t_hours > self._last_t:
            raise ValueError(
                f"t_hours must increase from record to record: got {t_hours} after {self._last_t}"
            )
        cell_vals, cell_types, n_cells = self._cell_columns(cells)
        image = self._image_block(fields, cells)
        if labels is not None:
            lab = np.asarray(labels)
            if lab.shape != self._shape or lab.dtype != np.uint8:
                raise ValueError(
                    f"labels must be uint8 with shape {self._shape}, got {lab.dtype} {lab.shape}"
                )
        else:
            lab = self._last_labels
        sites = self._niche_block(niche)
        metric_vals, metric_types = self._metric_columns(metrics)

        # data first ...
        self._put_levels(self._image, index, image, _image_down(self._occupancy))
        # Label images are encoded only when they change: an unchanged record's data file
        # is a hard link to the previous record's (every record still has its file, so
        # any OME-Zarr reader sees the tissue at every time point).
        same = np.array_equal(lab, self._last_labels)
        stored = index == 0 and same  # create() stored record 0's tissue
        if not stored and not (index > 0 and same and self._link_records(self._tissue, index)):
            self._put_levels(self._tissue, index, lab, _layout.downsample_mode)
        if self._niche is not None:
            if not (index > 0 and self._last_sites is not None
                    and np.array_equal(sites, self._last_sites)
                    and self._link_records(self._niche, index)):
                self._put_levels(self._niche, index, sites, _niche_down)
            self._last_sites = sites
        rec = np.full(n_cells, index, dtype=np.int64)
        cell_vals = {"record": rec.astype(np.float64), "t": np.full(n_cells, t_hours), **cell_vals}
        cell_types = {"record": "int64", "t": "float64", **cell_types}
        self._append("cells", cell_vals, cell_types, n_cells)
        metric_vals = {"record": np.array([float(index)]), "t": np.array([t_hours]), **metric_vals}
        metric_types = {"record": "int64", "t": "float64", **metric_types}
        self._append("metrics", metric_vals, metric_types, 1)
        # ... then the commit
        self._last_labels = lab
        self._last_t = t_hours
        self._n_written = index + 1
        self._commit()

    def append_events(self, events: Mapping[str, np.ndarray]) -> None:
        """Append event rows (equal-length columns, including ``t_hours``) and commit them.

        Integer ``z, y, x`` (and ``other_z, other_y, other_x``, the second cell of an
        event) columns are voxel indices and are stored as µm voxel centres (NaN for -1).
        The column set is fixed by the first call.
        """
        vals, types, n = encode_columns("events", events)
        if "t_hours" not in vals:
            raise ValueError(f"events must include a 't_hours' column; got columns {sorted(vals)}")
        vals, types = self._positions(vals, types, events)
        self._append("events", vals, types, n)
        self._commit()

    def set_categories(self, table: str, column: str, names: Sequence[str]) -> None:
        """Record the code -> name map of an integer column (code ``i`` is ``names[i]``).

        Readers decode the column to a pandas Categorical with these names.
        """
        if table not in TABLES:
            raise ValueError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty string, got {column!r}")
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be a sequence of non-empty strings, got {names!r}")
        names = list(names)
        if len(set(names)) != len(names):
            raise ValueError(f"names must be unique, got {names!r}")
        tab = self._tables[table]
        if tab.n_rows:
            # parts already written hold the column as plain codes; a reader could not
            # give the column one type (the names must be known before the first row)
            raise ValueError(f"{table} already has {tab.n_rows} rows; set the categories of "
                             f"{column!r} before the first row is written")
        tab.schema["categories"] = {**tab.schema.get("categories", {}), column: names}
        self._save_schemas()

    def extend(self, n_more: int) -> None:
        """Grow the time axis by ``n_more`` records (so a run can be continued)."""
        n_more = _check_int("n_more", n_more, 1)
        n = self.n_records + n_more
        for arr in [*self._image, *self._tissue, *(self._niche or [])]:
            arr.resize((n, *arr.shape[1:]))
        self._attrs["n_records"] = n
        self._commit()

    # ------------------------------------------------------------------ checkpoints
    def write_checkpoint(self, state: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Replace the checkpoint with ``state`` (arrays) and ``meta`` (JSON-able) atomically.

        Both go into one ``.npz`` file written to a temporary name and renamed into place,
        so a kill at any instant leaves the previous checkpoint or the new one, complete.
        """
        position = {
            "n_records_written": self._n_written,
            "rows": {t: self._tables[t].n_rows for t in TABLES},
            "last_t_hours": self._last_t,
        }
        _write_checkpoint(self.path, state, meta, position)
        self._attrs["checkpoint"] = {"record": self._n_written, "written": _now()}
        self._commit()

    def rewind_to_checkpoint(self, *, keep_shown: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Roll the store back to the last checkpoint and return its ``(state, meta)``.

        With ``keep_shown`` (for a replay that is bit-identical: the same code) readers
        keep seeing the records committed before until the replay has rewritten them;
        without it (a replay that may differ) the store shows the checkpoint's position at
        once.

        For ``--resume``: records and table rows committed after the checkpoint are
        dropped (they are rewritten as the simulation replays from the checkpoint), so the
        store and the restored state agree exactly.

        Raises
        ------
        StoreError
            The store has no checkpoint.
        """
        state, meta, pos = _read_checkpoint(self.path)
        if keep_shown:
            self._rewound()
        n = int(pos["n_records_written"])
        if n > self._n_written:
            raise StoreError(
                f"{self.path}: checkpoint is at record {n} but only {self._n_written} records are "
                "committed; the store and its checkpoint disagree"
            )
        self._n_written = n
        for t in TABLES:
            self._tables[t].n_rows = int(pos["rows"][t])
        self._last_t = pos["last_t_hours"]
        self._last_labels = np.asarray(self._tissue[0][max(n - 1, 0)])
        self._last_sites = None
        # labels/niche needs nothing here: like the fields, each record's niche map is
        # written whole by write_record, so records past the checkpoint are simply
        # rewritten as the simulation replays (readers never see uncommitted ones)
        self._commit()
        if not keep_shown:
            self._drop_uncommitted_parts()
        return state, meta

    def write_failure(self, diagnostic: Mapping[str, Any]) -> None:
        """Record why the run stopped (``failure`` in the root attributes: what, where,
        when), committed after every record written before."""
        try:
            doc = json.loads(json.dumps(dict(diagnostic), default=_json_default))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"diagnostic must be JSON-serialisable: {exc}") from None
        self._attrs["failure"] = doc
        self._commit()

    @property
    def rows(self) -> dict[str, int]:
        """Committed rows per table."""
        return {t: self._tables[t].n_rows for t in TABLES}

    @property
    def initial_labels(self) -> np.ndarray:
        """The tissue labels of record 0 (stored when the store was created)."""
        return np.asarray(self._tissue[0][0])

    @property
    def has_checkpoint(self) -> bool:
        """Whether the store's attributes record a checkpoint."""
        return self._attrs.get("checkpoint") is not None

    def rewind_to_start(self, *, keep_shown: bool = True) -> None:
        """Roll the store back to no records at all (record 0's tissue, stored at
        creation, stays), for a ``--resume`` of a run killed before its first checkpoint:
        the simulation is set up again from the stored scenario and seed and rewrites
        every record, bit-identically (``keep_shown``: as in :meth:`rewind_to_checkpoint`)."""
        if keep_shown:
            self._rewound()
        self._n_written = 0
        for t in TABLES:
            self._tables[t].n_rows = 0
        self._last_t = None
        self._last_labels = self.initial_labels
        self._last_sites = None
        self._commit()
        if not keep_shown:
            self._drop_uncommitted_parts()

    # ------------------------------------------------------------------ internals
    def _drop_uncommitted_parts(self) -> None:
        """Delete table parts that no commit shows (a killed run's last batch, or what a
        rewind dropped), so that a reader without niche3d, which reads every part in a
        table's directory, sees the committed rows only. Only after the commit: readers
        never need them."""
        shown = self._attrs["rows"]
        for t in TABLES:
            _parquet.remove_parts_from(self._tables[t].dir, int(shown[t]))

    def _save_schemas(self) -> None:
        """Write every table's schema into the ``tables`` group's attributes (atomic)."""
        self._tables_group.attrs["niche3d"] = tables_attrs({t: self._tables[t].schema for t in TABLES})

    def _put_record(self, arr: zarr.Array, index: int, block: np.ndarray | None) -> None:
        """Write one record of an image or label array: its shard built directly
        (``_shard``: no zarr event loop, the GIL released while compressing) when the
        layout allows, through zarr otherwise (stores of earlier layouts). ``None`` is a
        record of the array's fill value."""
        if _shard.can_write(arr):
            _shard.write_record_shard(arr, self.path, index, block)
        elif block is None:
            arr[index] = np.full(arr.shape[1:], arr.fill_value, dtype=arr.dtype)
        else:
            arr[index] = block

    def _put_levels(self, levels: list[zarr.Array], index: int, block: np.ndarray | None,
                    down: Any) -> None:
        """Write record ``index`` of an image at every pyramid level: ``block`` at ``s0``,
        then each coarser level made from the one before by ``down``
        (:mod:`niche3d.io._layout`); ``None`` (fields not recorded) at every level."""
        for k, arr in enumerate(levels):
            if k > 0 and block is not None:
                block = down(block)
            self._put_record(arr, index, block)

    def _link_records(self, levels: list[zarr.Array], index: int) -> bool:
        """:meth:`_link_record` at every level; False (the caller encodes the record) unless
        every level could link."""
        return all(self._link_record(arr, index) for arr in levels)

    def _link_record(self, arr: zarr.Array, index: int) -> bool:
        """Make record ``index`` of a label array share record ``index - 1``'s data file.

        Only for arrays whose shard is one whole record (stores from this version on);
        False (the caller encodes the record) when the layout differs or the previous
        file is missing."""
        shards = arr.shards
        if shards is None or shards[0] != 1 or any(s < n for s, n in zip(shards[1:], arr.shape[1:], strict=True)):
            return False
        enc = arr.metadata.chunk_key_encoding  # type: ignore[union-attr]
        if getattr(enc, "name", "") != "default" or getattr(enc, "separator", "/") != "/":
            return False
        sep = "/"
        tail = sep.join(["0"] * (arr.ndim - 1))
        base = self.path / arr.path
        src = base / "c" / str(index - 1) / tail
        if not src.is_file():
            return False
        _atomic.atomic_link(src, base / "c" / str(index) / tail)
        return True

    def _rewound(self) -> None:
        """Remember what readers are shown before a rewind. A resumed run recomputes the
        records after its checkpoint bit for bit (counter-based random streams), so the
        records and rows already committed stay valid while they are rewritten: commits
        keep showing them until the replay is past them, and a reader never sees the
        committed count go backwards."""
        shown = (self._n_written, {t: self._tables[t].n_rows for t in TABLES}, self._last_t)
        if self._shown is None or shown[0] > self._shown[0]:
            self._shown = shown

    def _commit(self) -> None:
        a = self._attrs
        a["n_records_written"] = self._n_written
        a["rows"] = {t: self._tables[t].n_rows for t in TABLES}
        a["last_t_hours"] = self._last_t
        if self._shown is not None:
            n, rows, last_t = self._shown
            if self._n_written >= n:
                self._shown = None  # the replay is past what was shown
            else:
                a["n_records_written"] = n
                a["rows"] = {t: max(a["rows"][t], rows[t]) for t in TABLES}
                a["last_t_hours"] = last_t
        a["updated"] = _now()
        # The commit is one atomic rewrite of the root zarr.json, done here rather than
        # through zarr (whose event loop would hold the GIL the simulation needs while
        # the background writer commits); the document keeps every other key as read.
        doc = self._root_doc
        doc["attributes"]["niche3d"] = a
        _atomic.atomic_write_bytes(self.path / "zarr.json", json.dumps(doc, indent=2).encode())

    def _niche_block(self, niche: np.ndarray | None) -> np.ndarray | None:
        """The checked niche map to store, zeros when ``niche`` is None; None without labels/niche."""
        if self._niche is None:
            if niche is not None:
                raise ValueError(
                    f"{self.path}: this store has no niche-site label image (created without "
                    "niche=True, or written before niche sites were recorded); pass niche=None"
                )
            return None
        if niche is None:
            return np.zeros(self._shape, dtype=np.uint8)
        sites = np.asarray(niche)
        if sites.shape != self._shape or sites.dtype != np.uint8:
            raise ValueError(f"niche must be uint8 with shape {self._shape}, got {sites.dtype} {sites.shape}")
        top = int(sites.max(initial=0))
        if top > max(NICHE_SITE_NAMES):
            raise ValueError(
                f"niche holds code {top}; niche-site codes are {NICHE_SITE_NAMES} (0..{max(NICHE_SITE_NAMES)})"
            )
        return sites

    def _image_block(self, fields: Mapping[str, np.ndarray] | None, cells: Mapping[str, np.ndarray]) -> np.ndarray | None:
        if self._occupancy:
            if fields:
                raise ValueError(
                    f"this store keeps no fields (created with fields=[]), got fields {sorted(fields)}"
                )
            occ = np.zeros((1, *self._shape), dtype=np.uint8)
            if all(k in cells for k in ("z", "y", "x")):
                z, y, x = (np.asarray(cells[k]) for k in ("z", "y", "x"))
                if all(np.issubdtype(a.dtype, np.integer) for a in (z, y, x)):
                    inside = (z >= 0) & (y >= 0) & (x >= 0)
                    occ[0, z[inside], y[inside], x[inside]] = 1
            return occ
        if fields is None:  # not recorded at this record (output.fields_every_records):
            return None  # a record of fill values (NaN), nothing encoded
        if not isinstance(fields, Mapping):
            raise ValueError(f"fields must map each stored field {self._field_names} to a (z, y, x) array")
        missing = [n for n in self._field_names if n not in fields]
        extra = [n for n in fields if n not in self._field_names]
        if missing or extra:
            raise ValueError(
                f"fields must have exactly the store's fields {self._field_names}; "
                f"missing {missing}, unknown {extra}"
            )
        block = np.empty((len(self._field_names), *self._shape), dtype=np.float32)
        for i, n in enumerate(self._field_names):
            a = np.asarray(fields[n])
            if a.shape != self._shape:
                raise ValueError(f"field {n!r} must have shape {self._shape}, got {a.shape}")
            block[i] = a
        keep = self._attrs.get("field_keepbits")
        if keep is not None and int(keep) < 23:  # lossy display copy, by request
            block = np.asarray(BitRound(int(keep)).encode(block)).view(np.float32).reshape(block.shape)
        return block

    def _positions(
        self, vals: dict[str, np.ndarray], types: dict[str, str], src: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        for k in POSITION_COLUMNS:
            if k in vals and np.issubdtype(np.dtype(types[k]), np.integer):
                v = np.asarray(src[k])
                lim = self._shape["zyx".index(k[-1])]
                if v.size and (v.max() >= lim):
                    raise ValueError(f"column {k!r} holds voxel index {int(v.max())} outside 0..{lim - 1}")
                um = (v.astype(np.float64) + 0.5) * self._voxel
                um[v < 0] = np.nan
                vals[k] = um
                types[k] = "float64"
        return vals, types

    def _cell_columns(self, cells: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
        vals, types, n = encode_columns("cells", cells)
        bad = [c for c in _RESERVED_CELL_COLUMNS if c in vals]
        if bad:
            raise ValueError(f"cells must not contain the columns {bad}; the writer adds them")
        vals, types = self._positions(vals, types, cells)
        return vals, types, n

    def _metric_columns(self, metrics: Mapping[str, float]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of name -> number, got {type(metrics).__name__}")
        for k, v in metrics.items():
            if np.ndim(v) != 0:
                raise ValueError(f"metric {k!r} must be a single number, got shape {np.shape(v)}")
            if k in ("t", "record"):
                raise ValueError(f"metrics must not contain {k!r}; the writer adds it")
        vals, types, _ = encode_columns("metrics", metrics, allow_scalars=True)
        return vals, types

    def _append(self, table: str, vals: dict[str, np.ndarray], types: dict[str, str], n: int) -> None:
        tab = self._tables[table]
        cols = tab.schema["columns"]
        changed = False
        if not cols:
            for name in vals:
                cols.append({"name": name, "dtype": types[name], "unit": column_unit(name)})
            changed = True
        else:
            known = tab.names
            missing = [c for c in known if c not in vals]
            extra = [c for c in vals if c not in known]
            if table != "metrics" and (missing or extra):
                raise ValueError(
                    f"{table}: the column set is fixed by the first write {known}; "
                    f"missing {missing}, unknown {extra}"
                )
            for c in cols:
                if c["name"] in types and _kindof(types[c["name"]]) != _kindof(c["dtype"]):
                    if table == "metrics":
                        c["dtype"] = "float64"
                        changed = True
                    else:
                        raise ValueError(
                            f"{table}: column {c['name']!r} was {c['dtype']} and is now {types[c['name']]}"
                        )
            for name in extra:
                cols.append({"name": name, "dtype": types[name], "unit": column_unit(name)})
                changed = True
        if changed:
            self._save_schemas()
        if n == 0:
            return
        _parquet.write_part(tab.dir, table, tab.schema, vals, tab.n_rows, n)
        tab.n_rows += n


def _levels(group: zarr.Group, prefix: str) -> list[zarr.Array]:
    """The pyramid levels of the image whose multiscales are at ``group[prefix]``: the
    arrays its OME ``datasets`` list, in order (``s0`` alone in stores before pyramids)."""
    node = group[prefix.rstrip("/")] if prefix else group
    try:
        paths = [str(d["path"]) for d in node.attrs["ome"]["multiscales"][0]["datasets"]]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        paths = ["s0"]
    return [_dense(group[prefix + p]) for p in paths]


def _image_down(occupancy: bool) -> Any:
    """How the root image's levels are made: field means, or for the occupancy image (1
    where a cell sits) "a cell somewhere in the block"."""
    return _niche_down if occupancy else _layout.downsample_mean


def _niche_down(block: np.ndarray) -> np.ndarray:
    return _layout.downsample_mode(block, ignore_zero=True)


def _dense(node: Any) -> zarr.Array:
    """The array with ``write_empty_chunks`` on: every committed record has its data file.

    (zarr skips chunks equal to the fill value by default; the truncation check of the
    reader relies on every committed shard existing.)
    """
    if not isinstance(node, zarr.Array):
        raise StoreError(f"expected a zarr array, found {type(node).__name__}")
    return node.with_config({"write_empty_chunks": True})


def _kindof(dtype: str) -> str:
    d = np.dtype(dtype)
    if d == np.bool_:
        return "bool"
    return "int" if np.issubdtype(d, np.integer) else "float"


def _check_fields(fields: Any) -> list[dict[str, Any]]:
    if isinstance(fields, str | bytes) or not isinstance(fields, Sequence):
        raise ValueError(f"fields must be a sequence of (name, unit, (lo, hi)), got {fields!r}")
    out: list[dict[str, Any]] = []
    for i, f in enumerate(fields):
        try:
            name, unit, window = f
            lo, hi = window
        except (TypeError, ValueError):
            raise ValueError(f"fields[{i}] must be (name, unit, (lo, hi)), got {f!r}") from None
        if not isinstance(name, str) or not name:
            raise ValueError(f"fields[{i}] name must be a non-empty string, got {name!r}")
        if any(o["name"] == name for o in out):
            raise ValueError(f"fields[{i}] name {name!r} is repeated; field names must be unique")
        if not isinstance(unit, str):
            raise ValueError(f"fields[{i}] ({name}) unit must be a string, got {unit!r}")
        if not (is_finite_number(lo) and is_finite_number(hi) and float(lo) < float(hi)):
            raise ValueError(f"fields[{i}] ({name}) window must be finite (lo, hi) with lo < hi, got {window!r}")
        out.append(
            {
                "name": name,
                "unit": unit,
                "window": [float(lo), float(hi)],
                "color": FIELD_COLORS[i % len(FIELD_COLORS)],
            }
        )
    return out


def check_target(p: str | os.PathLike[str], *, overwrite: bool) -> bool:
    """Whether a new run store may be made at ``p`` (raises :class:`StoreError` if not):
    it does not exist or is an empty directory (False), or it is a niche3d run store and
    ``overwrite`` is set (True: :meth:`RunWriter.create` will replace it). Changes
    nothing, so a run can check its output before its set-up."""
    p = Path(p)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise StoreError(f"{p}: exists and is not a directory; choose another path for the run store")
        if any(p.iterdir()):
            if not overwrite:
                raise StoreError(f"{p}: already exists; pass overwrite=True to replace a niche3d run store")
            if not _is_niche3d_store(p):
                raise StoreError(
                    f"{p}: exists and is not a niche3d run store (no 'niche3d' attributes in "
                    "zarr.json); refusing to delete it even with overwrite=True"
                )
            return True
    return False


def first_records_bytes(shape: Sequence[int], n_fields: int) -> int:
    """Bytes a run store needs for record 0 and the checkpoint written with it, at worst
    (nothing compressed): per voxel 4 B per stored field, 2 B of labels (tissue, niche
    sites), and a checkpoint of 6 B per field (float32 value, int16 extension), 8 B of
    niche signal and 1 B of labels."""
    n = math.prod(int(k) for k in shape)
    return n * (4 * n_fields + 2 + 6 * n_fields + 8 + 1) + 2**20


def check_free_space(p: str | os.PathLike[str], needed: int) -> None:
    """Raise :class:`StoreError` if the file system that will hold the store at ``p`` has
    less than ``needed`` bytes free (measured at its nearest existing ancestor)."""
    q = Path(p).absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    try:
        free = shutil.disk_usage(q).free
    except OSError:
        return  # cannot tell: the writes themselves will say
    if free < needed:
        raise StoreError(
            f"{p}: the run store needs about {needed / 2**20:,.0f} MB for its first records "
            f"and checkpoint, and {q} has {free / 2**20:,.0f} MB free; free some space or "
            "choose an --out on another disk")


def _prepare_path(p: Path, *, overwrite: bool) -> None:
    if check_target(p, overwrite=overwrite):
        shutil.rmtree(p)
    p.mkdir(parents=True, exist_ok=True)


#: attributes of the ``labels/niche/s0`` array: what its values mean, and their unit
_NICHE_ARRAY_ATTRS: dict[str, Any] = {
    "values": {str(k): v for k, v in NICHE_SITE_DESCRIPTIONS.items()},
    "names": {str(k): v for k, v in NICHE_SITE_NAMES.items()},
    "unit": "1",
    "description": (
        "niche-site map of each record (niche3d.cells.CellModel.niche_sites): one site per "
        "voxel, a category code per voxel (dimensionless); t in hours, z, y, x in micrometers "
        "as in the image"
    ),
}


def _listed_labels(root: zarr.Group) -> list[str]:
    """Names in the OME ``labels`` list of the store's ``labels`` group (never raises)."""
    try:
        names = root["labels"].attrs["ome"]["labels"]  # type: ignore[index]
    except (KeyError, TypeError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


# ---------------------------------------------------------------------- checkpoints
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray) and obj.ndim <= 1 and obj.size <= 4096:
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _write_checkpoint(
    store_path: str | os.PathLike[str],
    state: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    position: Mapping[str, Any],
) -> None:
    """Atomically replace ``<store>/checkpoint/state.npz`` with ``state`` and ``meta``."""
    import io

    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not k or k.startswith("__niche3d"):
            raise ValueError(f"state keys must be non-empty strings not starting with '__niche3d', got {k!r}")
        a = np.asarray(v)
        if a.dtype.hasobject:
            raise ValueError(f"state[{k!r}] has dtype object; checkpoints hold numeric/bool arrays only")
        arrays[k] = a
    try:
        text = json.dumps(dict(meta), default=_json_default, allow_nan=True)
    except TypeError as exc:
        raise ValueError(f"meta must be JSON-serialisable: {exc}") from None
    arrays[_META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    arrays[_POS_KEY] = np.frombuffer(json.dumps(dict(position)).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    cdir = Path(store_path) / CHECKPOINT_DIR
    if not (cdir / "zarr.json").exists():
        # a zarr group so that listing the root shows no foreign object
        desc = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "niche3d_checkpoint": {
                    "file": CHECKPOINT_FILE,
                    "format": "numpy .npz; JSON meta in the uint8 entry " + _META_KEY,
                }
            },
        }
        _atomic.atomic_write_bytes(cdir / "zarr.json", json.dumps(desc, indent=2).encode())
    _atomic.atomic_write_bytes(cdir / CHECKPOINT_FILE, buf.getbuffer())


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the checkpoint of the run store at ``path``: (state arrays, meta).

    Raises
    ------
    StoreError
        No checkpoint, or an unreadable one.
    """
    state, meta, _ = _read_checkpoint(path)
    return state, meta


def _read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    f = Path(path) / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not f.is_file():
        raise StoreError(f"{path}: no checkpoint ({CHECKPOINT_DIR}/{CHECKPOINT_FILE} is missing)")
    try:
        with np.load(f, allow_pickle=False) as z:
            for key in (_META_KEY, _POS_KEY):
                if key not in z.files:
                    raise StoreError(f"{f}: checkpoint lacks its entry {key!r}; it is damaged")
            state = {k: z[k] for k in z.files if not k.startswith("__niche3d")}
            meta = json.loads(bytes(z[_META_KEY]).decode("utf-8"))
            pos = json.loads(bytes(z[_POS_KEY]).decode("utf-8"))
    except StoreError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{f}: unreadable checkpoint: {exc}") from None
    return state, meta, pos
