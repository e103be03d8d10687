"""Upgrade a run store of an earlier format to the current one (``niche3d upgrade RUN``).

Formats 1 and 2 kept each table as one 2D float64 zarr array; format 3 keeps Parquet part
files (:mod:`niche3d.io._parquet`). Nothing else differs for a reader (format 2's int16
checkpoint is read whatever the version says), so an upgrade rewrites the tables only.

Crash safety: the parts are written first (a format-2 reader ignores them), then the
``tables`` group's attributes gain the schemas, then one atomic rewrite of the root
``zarr.json`` sets ``format_version`` to 3 (the commit), and only then are the old
``rows`` arrays deleted. A kill at any instant leaves a store that opens, as format 2
before the commit and as format 3 after it; running the upgrade again finishes the job.

The events' ``other_z, other_y, other_x`` become µm voxel centres (formats 1-2 kept
voxel indices there) and ``other_state`` gets the state names, as format 3 writes them.

Parts are cut where a resumed run may rewind to: at every record (cells) and at the
checkpoint's row position (events, metrics), so that the parts a resumed run writes
continue the chain (a part never straddles the checkpoint).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from niche3d.io import _atomic, _parquet
from niche3d.io._format import (
    FORMAT_VERSION,
    PARQUET_FORMAT,
    POSITION_COLUMNS,
    TABLES,
    StoreError,
    tables_attrs,
)

__all__ = ["add_levels", "upgrade", "upgrade_tables"]

#: rows per part when nothing else cuts a table (events and metrics of upgraded stores)
_MAX_PART_ROWS = 1_000_000


def _root_doc(path: Path) -> dict[str, Any]:
    return json.loads((path / "zarr.json").read_text(encoding="utf-8"))


def _checkpoint_rows(path: Path) -> dict[str, int]:
    """Row counts of the checkpoint's position ({} without a checkpoint)."""
    from niche3d.io.writer import CHECKPOINT_DIR, CHECKPOINT_FILE, _read_checkpoint

    if not (path / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file():
        return {}
    _, _, pos = _read_checkpoint(path)
    rows = pos.get("rows", {})
    return {t: int(rows[t]) for t in TABLES if t in rows}


def _cuts(table: str, rows: np.ndarray, schema: dict[str, Any], n: int, ckpt: int | None) -> list[int]:
    """Row positions where a part ends (the last is ``n``)."""
    cuts = {n}
    if ckpt is not None and 0 < ckpt < n:
        cuts.add(ckpt)
    names = [c["name"] for c in schema["columns"]]
    if table == "cells" and "record" in names and n:
        rec = rows[:n, names.index("record")]
        cuts.update((np.flatnonzero(np.diff(rec) != 0) + 1).tolist())
    edges = sorted(cuts)
    out = []
    prev = 0
    for e in edges:
        while e - prev > _MAX_PART_ROWS:
            prev += _MAX_PART_ROWS
            out.append(prev)
        out.append(e)
        prev = e
    return out


def _old_positions(schema: dict[str, Any]) -> list[str]:
    """The events' ``other_z, other_y, other_x`` columns that formats 1-2 kept as voxel
    indices; their schema entries become µm floats, and ``other_state`` gets the names of
    ``state`` (as format 3 writes them)."""
    names = []
    for col in schema["columns"]:
        if col["name"] in POSITION_COLUMNS[3:] and np.issubdtype(np.dtype(col["dtype"]), np.integer):
            col["dtype"], col["unit"] = "float64", "micrometer"
            names.append(col["name"])
    cats = schema["categories"]
    if "state" in cats and "other_state" not in cats and any(c["name"] == "other_state" for c in schema["columns"]):
        cats["other_state"] = list(cats["state"])
    return names


def _clean_old_layout(path: Path) -> None:
    """Delete the format-2 table arrays left in a format-3 store (after the commit)."""
    for t in TABLES:
        d = path / "tables" / t
        (d / "zarr.json").unlink(missing_ok=True)
        if (d / "rows").exists():
            shutil.rmtree(d / "rows")


def upgrade_tables(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Convert the tables of the store at ``path`` to Parquet parts, if they are not yet.

    The caller holds the store's writer lock (or knows nobody writes it). Returns what was
    done (``from``, ``to``, rows and parts per table) or None when the store is current.
    """
    import zarr

    p = Path(path)
    doc = _root_doc(p)
    nz = doc["attributes"]["niche3d"]
    version = int(nz["format_version"])
    if version >= PARQUET_FORMAT:
        _clean_old_layout(p)
        return None
    root = zarr.open_group(_atomic.AtomicLocalStore(p), mode="r+", zarr_format=3)
    ckpt = _checkpoint_rows(p)
    schemas: dict[str, dict[str, Any]] = {}
    done: dict[str, dict[str, int]] = {}
    for t in TABLES:
        g = root[f"tables/{t}"]
        schema = dict(g.attrs["niche3d_table"])
        schema = {"columns": list(schema.get("columns", [])), "categories": dict(schema.get("categories", {}) or {})}
        schemas[t] = schema
        n = int(nz["rows"][t])
        directory = p / "tables" / t
        positions = _old_positions(schema) if t == "events" else []
        _parquet.remove_parts_from(directory, 0)  # a previous, interrupted upgrade's parts
        parts = 0
        if n:
            rows = np.asarray(g["rows"][:n, :])  # type: ignore[index]
            start = 0
            for stop in _cuts(t, rows, schema, n, ckpt.get(t)):
                block = rows[start:stop]
                vals = {c["name"]: block[:, j] for j, c in enumerate(schema["columns"]) if j < block.shape[1]}
                for name in positions:  # voxel index -> µm voxel centre, as format 3 writes
                    v = vals[name]
                    vals[name] = np.where(v < 0, np.nan, (v + 0.5) * float(nz["voxel_um"]))
                _parquet.write_part(directory, t, schema, vals, start, stop - start)
                parts += 1
                start = stop
        done[t] = {"rows": n, "parts": parts}
    # the schemas, then the commit (format_version), then the old arrays go
    tables_doc_path = p / "tables" / "zarr.json"
    tdoc = json.loads(tables_doc_path.read_text(encoding="utf-8"))
    tdoc.setdefault("attributes", {})["niche3d"] = tables_attrs(schemas)
    _atomic.atomic_write_bytes(tables_doc_path, json.dumps(tdoc, indent=2).encode())
    doc = _root_doc(p)
    nz = doc["attributes"]["niche3d"]
    nz["format_version"] = FORMAT_VERSION
    nz.setdefault("upgraded", []).append({
        "from": version, "to": FORMAT_VERSION,
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    })
    _atomic.atomic_write_bytes(p / "zarr.json", json.dumps(doc, indent=2).encode())
    _clean_old_layout(p)
    return {"from": version, "to": FORMAT_VERSION, "tables": done}


def add_levels(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, int, int]]]:
    """Give a big lattice's store written before resolution pyramids its coarser levels.

    For every image (fields, tissue, niche sites) whose OME multiscales lists ``s0`` alone
    while the lattice calls for levels (:func:`niche3d.io._layout.level_shapes`), the
    levels are made from each committed record as a run writes them (an unchanged label
    record hard-linked to the previous one at every level), and only then listed in the
    image's metadata: a kill before that leaves arrays no reader looks at, and running
    it again rewrites them. The caller holds the writer lock.

    Returns
    -------
    dict
        Image path (``""`` for the root image) -> the shapes of the levels added; empty
        when nothing was missing.
    """
    import zarr

    from niche3d.io import _layout, _shard
    from niche3d.io.writer import (
        _COMPRESSOR,
        _LABEL_COMPRESSOR,
        _dense,
        _image_down,
        _listed_labels,
        _niche_down,
    )

    p = Path(path)
    root = zarr.open_group(_atomic.AtomicLocalStore(p), mode="r+", zarr_format=3)
    nz = dict(root.attrs["niche3d"])  # type: ignore[arg-type]
    shapes = _layout.level_shapes(nz["shape"])
    n = int(nz["n_records_written"])
    images = [("", _image_down(nz["image"] == "occupancy")), ("labels/tissue", _layout.downsample_mode)]
    if "niche" in _listed_labels(root):
        images.append(("labels/niche", _niche_down))
    added: dict[str, list[tuple[int, int, int]]] = {}
    if len(shapes) == 1:
        return added
    for prefix, down in images:
        node = root[prefix] if prefix else root
        ome = dict(node.attrs["ome"])  # type: ignore[arg-type]
        if len(ome["multiscales"][0]["datasets"]) > 1:
            continue
        s0 = _dense(node["s0"])
        image = s0.ndim == 5
        arrays = []
        for k, lshape in enumerate(shapes[1:], start=1):
            inner = _layout.inner_chunk(lshape, s0.dtype.itemsize)
            lead = (s0.shape[0], s0.shape[1]) if image else (s0.shape[0],)
            arrays.append(_dense(node.create_array(
                f"s{k}", shape=(*lead, *lshape), dtype=s0.dtype, chunks=(1,) * len(lead) + inner,
                shards=(1, *lead[1:], *_layout.cover(lshape, inner)), fill_value=s0.fill_value,
                compressors=_COMPRESSOR if image else _LABEL_COMPRESSOR,
                dimension_names=list(s0.metadata.dimension_names or ()) or None,  # type: ignore[union-attr]
                attributes=dict(s0.attrs), overwrite=True)))
        tail = "/".join(["0"] * (s0.ndim - 1))
        for t in range(n):
            f0 = p / s0.path / "c" / str(t) / tail
            prev = p / s0.path / "c" / str(t - 1) / tail
            if t > 0 and prev.is_file() and f0.is_file() and os.path.samefile(f0, prev):
                for arr in arrays:  # a hard-linked label record: link every level too
                    base = p / arr.path / "c"
                    _atomic.atomic_link(base / str(t - 1) / tail, base / str(t) / tail)
                continue
            block: np.ndarray | None = np.asarray(s0[t])
            if block is not None and block.dtype.kind == "f" and np.isnan(block).all():
                block = None  # fields not recorded at this record: fill values at every level
            for arr in arrays:
                block = None if block is None else down(block)
                _shard.write_record_shard(arr, p, t, block)
        # the image's multiscales as a run of today writes it (every level listed)
        shape, voxel, rh = tuple(nz["shape"]), float(nz["voxel_um"]), float(nz["record_hours"])
        made = (_layout.image_ome([], shape, voxel, rh, occupancy=nz["image"] == "occupancy") if not prefix
                else _layout.label_ome(shape, voxel, rh) if prefix.endswith("tissue")
                else _layout.niche_label_ome(shape, voxel, rh))
        ome["multiscales"] = [made["multiscales"][0]]
        node.update_attributes({"ome": ome})  # the commit of this image's levels
        added[prefix] = shapes[1:]
    return added


def upgrade(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Upgrade the run store at ``path`` to the current format, in place.

    Takes the store's writer lock first, so a run that is writing the store is never
    upgraded under it.

    Returns
    -------
    dict or None
        ``from`` and ``to`` versions and, per table, the rows converted and the part files
        written; None when the store is already of the current format.

    Raises
    ------
    StoreError
        ``path`` is not a readable run store (the message says why), or a run is writing
        it (:class:`~niche3d.io.lock.StoreLocked`).
    """
    from niche3d.io.lock import WriterLock
    from niche3d.io.reader import check_store

    p = Path(path)
    check_store(p)
    lock = WriterLock(p).acquire()
    try:
        _atomic.remove_stale_temp_files(p)
        out = upgrade_tables(p)
        levels = add_levels(p)
        if levels:
            out = {**(out or {"from": FORMAT_VERSION, "to": FORMAT_VERSION, "tables": {}}), "levels": levels}
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"{p}: could not be upgraded ({type(exc).__name__}: {exc}); nothing "
                         "committed was lost (run the upgrade again)") from None
    finally:
        lock.release()
    check_store(p)
    return out
