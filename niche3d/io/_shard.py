"""Write one record's data file (a whole zarr v3 shard) without zarr's async machinery.

A record of an image or label array is exactly one shard (``writer.py``: shards of one
time point holding every channel and the whole volume). zarr writes it through its event
loop, a thread pool and a few thousand Python-level steps per record; in the background
writer that Python work competes with the simulation for the GIL, and it cost as much
as it saved (``benchmarks/bench_store.py``). This module builds the same shard directly:
each inner chunk is encoded with the array's own Blosc codec (numcodecs, which releases
the GIL while it compresses), the shard index is ``(offset, nbytes)`` uint64 pairs in
little-endian order followed by its CRC32C, at the end of the file, as the zarr v3
sharding spec and the array's metadata say; the file is written atomically.

Only this layout is handled (:func:`can_write`); anything else falls back to zarr.
Chunks are written in C order rather than zarr's Morton order: the index gives every
chunk's place, so readers do not depend on the order.
"""

from __future__ import annotations

import itertools
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from niche3d.io import _atomic

__all__ = ["can_write", "write_record_shard"]


def _sharding(arr: zarr.Array) -> ShardingCodec | None:
    codecs = getattr(arr.metadata, "codecs", ())
    return codecs[0] if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec) else None


def can_write(arr: zarr.Array) -> bool:
    """Whether records of ``arr`` are single shards this module can build."""
    sh = _sharding(arr)
    if sh is None or arr.shards is None or arr.shards[0] != 1:
        return False
    if any(s < n for s, n in zip(arr.shards[1:], arr.shape[1:], strict=True)):
        return False
    enc = arr.metadata.chunk_key_encoding  # type: ignore[union-attr]
    if getattr(enc, "name", "") != "default" or getattr(enc, "separator", "/") != "/":
        return False
    inner = sh.codecs
    ok_inner = (len(inner) == 2 and isinstance(inner[0], BytesCodec) and isinstance(inner[1], BloscCodec)
                and _value(inner[0].endian) in (None, "little"))
    ok_index = (len(sh.index_codecs) == 2 and isinstance(sh.index_codecs[0], BytesCodec)
                and _value(sh.index_codecs[0].endian) in (None, "little")
                and isinstance(sh.index_codecs[1], Crc32cCodec))
    return bool(ok_inner and ok_index and _value(sh.index_location) == "end")


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def write_record_shard(arr: zarr.Array, root: Any, index: int, block: np.ndarray | None) -> None:
    """Write record ``index`` of ``arr`` (``block`` has shape ``arr.shape[1:]``) as its
    shard file under the store directory ``root``, atomically.

    Inner chunks that hold only the fill value are not encoded: their index entry is the
    sharding spec's empty chunk (offset and size ``2**64 - 1``), which every zarr reader
    reads as the fill value. ``block=None`` is a record of fill values (a field not
    recorded at this record: the file is the index alone). Chunks are tested for the fill
    value only when it is 0 (label images: most of a niche map is 0); a NaN-filled image
    chunk with data is always encoded. Edge chunks are padded with the fill value one
    chunk at a time (no padded copy of the record).

    The caller checks :func:`can_write` first.
    """
    sh = _sharding(arr)
    assert sh is not None
    dtype = np.dtype(arr.dtype).newbyteorder("<")
    shard_shape = tuple(int(s) for s in arr.shards[1:])  # type: ignore[index]
    chunk = tuple(int(c) for c in sh.chunk_shape[1:])
    grid = [s // c for s, c in zip(shard_shape, chunk, strict=True)]
    index_arr = np.full((int(np.prod(grid)), 2), np.iinfo(np.uint64).max, dtype="<u8")
    parts: list[bytes] = []
    if block is not None:
        data = np.asarray(block, dtype=dtype)
        if data.shape != tuple(arr.shape[1:]):
            raise ValueError(f"record of {arr.path} must have shape {tuple(arr.shape[1:])}, got {data.shape}")
        fill = arr.fill_value
        zero_fill = fill is not None and not np.isnan(fill) and fill == 0
        blosc = sh.codecs[1]._blosc_codec  # type: ignore[union-attr]
        offset = 0
        for k, pos in enumerate(itertools.product(*(range(g) for g in grid))):
            sl = tuple(slice(p * c, min((p + 1) * c, n))
                       for p, c, n in zip(pos, chunk, data.shape, strict=True))
            piece = data[sl]
            if piece.size == 0 or (zero_fill and not piece.any()):
                continue  # empty: read as the fill value
            if piece.shape != chunk:  # an edge chunk is stored whole, padded with the fill
                padded = np.full(chunk, fill, dtype=dtype)
                padded[tuple(slice(0, n) for n in piece.shape)] = piece
                piece = padded
            enc = bytes(blosc.encode(np.ascontiguousarray(piece)))
            parts.append(enc)
            index_arr[k] = (offset, len(enc))
            offset += len(enc)
    index_bytes = index_arr.tobytes()
    crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    key = "/".join(["c", str(int(index)), *(["0"] * (arr.ndim - 1))])
    _atomic.atomic_write_bytes(root / arr.path / key, b"".join([*parts, index_bytes, crc]))
