"""The resolution pyramid of a run's images, read lazily without dask.

:meth:`niche3d.io.Run.pyramid` gives one :class:`Level` per stored resolution of a field,
the tissue, the niche-site map or the occupancy image; each level's :class:`LazyArray` is
a (t, z, y, x) array of the committed records that reads only the chunks a slice touches.
It has what napari asks of layer data (``shape``, ``dtype``, ``ndim``, ``size``, basic
indexing, ``__array__``), so a viewer shows a plane of a femur-sized run without loading
the run, and without importing dask (whose import and per-slice graph cost most of a
cold first frame; ``benchmarks/bench_viewer.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from niche3d.io._format import StoreError

__all__ = ["LazyArray", "Level"]


def _norm_index(key: Any, ndim: int) -> tuple[Any, ...]:
    """``key`` as a tuple of ``ndim`` ints and slices (Ellipsis expanded); anything else is
    refused with an IndexError naming it."""
    if not isinstance(key, tuple):
        key = (key,)
    dots = [i for i, k in enumerate(key) if k is Ellipsis]
    if len(dots) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if dots:
        i = dots[0]
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    if len(key) > ndim:
        raise IndexError(f"too many indices for a {ndim}-dimensional array: {len(key)} were given")
    key = key + (slice(None),) * (ndim - len(key))
    for k in key:
        if not (isinstance(k, slice) or (isinstance(k, int | np.integer) and not isinstance(k, bool))):
            raise IndexError(
                f"a run's lazy arrays take integers, slices and '...' only (basic indexing), got "
                f"{type(k).__name__} {k!r}; index np.asarray(array[...]) for other selections")
    return key


class LazyArray:
    """A (t, z, y, x) view of one channel of a stored image; nothing is read until the
    values are asked for.

    Indexing with integers, slices and ``...`` returns another lazy view (so a viewer's
    ``data[:, :, y0:y1, x0:x1]`` before it picks its plane reads nothing); the values are
    read by ``np.asarray(view)`` (only the chunks the view covers) or when every axis is
    indexed by an integer (a scalar).

    Parameters
    ----------
    arr
        The zarr array (``(t, c, z, y, x)`` for the root image, ``(t, z, y, x)`` for labels).
    root
        The store path (named in read errors).
    n_records
        Committed records: the view's length along t (records beyond it are not shown).
    channel
        The channel of a ``(t, c, z, y, x)`` array; None for labels.

    Notes
    -----
    A damaged data file (truncated or corrupted) raises :class:`~niche3d.io.StoreError`
    naming the store, the array and the index, as the dask arrays of :class:`Run` do.
    """

    def __init__(self, arr: Any, root: Path, n_records: int, channel: int | None = None) -> None:
        if channel is not None and not 0 <= channel < arr.shape[1]:
            raise ValueError(f"channel must be in 0..{arr.shape[1] - 1}, got {channel}")
        if not 0 <= n_records <= arr.shape[0]:
            raise ValueError(f"n_records must be in 0..{arr.shape[0]}, got {n_records}")
        self._arr, self._root, self._channel = arr, Path(root), channel
        space = arr.shape[2:] if channel is not None else arr.shape[1:]
        # what the view selects along each stored axis but c: an int (axis dropped) or a range
        self._sel: tuple[int | range, ...] = (range(int(n_records)), *(range(int(n)) for n in space))
        self.dtype = np.dtype(arr.dtype)

    def _view(self, sel: tuple[int | range, ...]) -> LazyArray:
        out = object.__new__(LazyArray)
        out._arr, out._root, out._channel, out.dtype = self._arr, self._root, self._channel, self.dtype
        out._sel = sel
        return out

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(r) for r in self._sel if isinstance(r, range))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        ch = "" if self._channel is None else f", channel {self._channel}"
        return f"<LazyArray {self._root.name}/{self._arr.path}{ch} shape={self.shape} dtype={self.dtype}>"

    def __getitem__(self, key: Any) -> Any:
        key = _norm_index(key, self.ndim)
        sel: list[int | range] = []
        it = iter(key)
        for r in self._sel:
            if not isinstance(r, range):
                sel.append(r)
                continue
            k = next(it)
            if isinstance(k, slice):
                sel.append(r[k])
            else:
                i = int(k)
                if not -len(r) <= i < len(r):
                    raise IndexError(f"index {i} is out of range for an axis of length {len(r)}"
                                     + (" (committed records)" if len(sel) == 0 else ""))
                sel.append(r[i])
        view = self._view(tuple(sel))
        return view if view.ndim else view.__array__()[()]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        def stored(r: int | range) -> int | slice:
            if isinstance(r, int):
                return r
            if r.step > 0 or len(r) == 0:
                return slice(r.start, r.stop if r.step > 0 else r.start, r.step)
            # a reversed range: read it forwards, flip below
            return slice(r[-1], r.start + 1, -r.step)

        key = [stored(r) for r in self._sel]
        if self._channel is not None:
            key.insert(1, self._channel)
        if any(isinstance(r, range) and len(r) == 0 for r in self._sel):
            out = np.zeros(self.shape, dtype=self.dtype)
        else:
            try:
                out = np.asarray(self._arr[tuple(key)])
            except Exception as exc:  # noqa: BLE001 - any decoding failure is damage
                raise StoreError(
                    f"{self._root}: {self._arr.path} cannot be read at {key[0]} "
                    f"({type(exc).__name__}: {exc}); the store is damaged") from None
            flips = tuple(slice(None, None, -1) if r.step < 0 else slice(None)
                          for r in self._sel if isinstance(r, range))
            out = out[flips]
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass(frozen=True)
class Level:
    """One resolution of an image.

    Attributes
    ----------
    array
        The (t, z, y, x) :class:`LazyArray` of the committed records.
    factor
        Downsampling factor (z, y, x) relative to level 0.
    voxel_um
        Voxel edge (z, y, x) in µm at this level.
    origin_um
        Centre (z, y, x) of voxel 0 in µm: a coarse voxel is centred on the block of fine
        voxels it summarises.
    """

    array: LazyArray
    factor: tuple[int, int, int]
    voxel_um: tuple[float, float, float]
    origin_um: tuple[float, float, float]
