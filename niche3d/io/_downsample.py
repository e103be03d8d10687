"""numba kernels of the pyramid levels (:mod:`niche3d.io._layout`): one pass over the fine
block, no temporaries.

The numpy formulation (pairwise sums of strided views) allocates three intermediate
arrays of up to 100 MB per femur record; their first touch in a VM made it vary from 0.03
to 0.9 s a record. These kernels write the coarse block directly, in the same order of
additions (pairs along z, then y, then x), serially (the background writer runs them in
its own thread, the GIL released) and so bit for bit the same on any machine.

Imported only by the writer: a reader never loads numba for a pyramid.
"""

from __future__ import annotations

import numpy as np

from niche3d._jit import jit

__all__ = ["mean_2x", "mode_2x"]


@jit
def _pair(i: int, n: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """The two fine indices of coarse index ``i`` on an axis of ``n`` voxels: ``2i`` and
    ``2i + 1`` (the last one paired with itself at an odd end); ``i, i`` when the axis has
    one voxel and is not halved."""
    if n == 1:
        return i, i
    lo = 2 * i
    return lo, min(lo + 1, n - 1)


@jit(finite_checks=True)
def _mean_kernel(a: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n_c, nz, ny, nx = a.shape
    _, mz, my, mx = out.shape
    for c in range(n_c):
        for k in range(mz):
            z0, z1 = _pair(k, nz)
            for j in range(my):
                y0, y1 = _pair(j, ny)
                for i in range(mx):
                    x0, x1 = _pair(i, nx)
                    # an axis that is not halved pairs each voxel with itself: every sum
                    # doubles exactly, and the factor 1/8 undoes it exactly
                    s = ((a[c, z0, y0, x0] + a[c, z1, y0, x0]) + (a[c, z0, y1, x0] + a[c, z1, y1, x0])) + (
                        (a[c, z0, y0, x1] + a[c, z1, y0, x1]) + (a[c, z0, y1, x1] + a[c, z1, y1, x1]))
                    out[c, k, j, i] = s * np.float32(0.125)


@jit
def _mode_kernel(a: np.ndarray, out: np.ndarray, ignore_zero: bool) -> None:  # pragma: no cover
    n_c, nz, ny, nx = a.shape
    _, mz, my, mx = out.shape
    counts = np.zeros(256, dtype=np.int32)
    vals = np.zeros(8, dtype=np.uint8)
    for c in range(n_c):
        for k in range(mz):
            z0, z1 = _pair(k, nz)
            for j in range(my):
                y0, y1 = _pair(j, ny)
                for i in range(mx):
                    x0, x1 = _pair(i, nx)
                    vals[0] = a[c, z0, y0, x0]
                    vals[1] = a[c, z1, y0, x0]
                    vals[2] = a[c, z0, y1, x0]
                    vals[3] = a[c, z1, y1, x0]
                    vals[4] = a[c, z0, y0, x1]
                    vals[5] = a[c, z1, y0, x1]
                    vals[6] = a[c, z0, y1, x1]
                    vals[7] = a[c, z1, y1, x1]
                    best = 0
                    best_n = 0
                    for v in vals:
                        if ignore_zero and v == 0:
                            continue
                        counts[v] += 1
                        n = counts[v]
                        if n > best_n or (n == best_n and v > best):
                            best, best_n = v, n
                    for v in vals:
                        counts[v] = 0
                    out[c, k, j, i] = best


def _coarse(block: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``block`` as (c, z, y, x) and the coarse shape (every axis > 1 halved, rounded up)."""
    if block.ndim < 3:
        raise ValueError(f"block must have at least 3 dimensions (..., z, y, x), got shape {block.shape}")
    lead = block.shape[:-3]
    a = np.ascontiguousarray(block).reshape((int(np.prod(lead)), *block.shape[-3:]))
    return a, tuple(-(-n // 2) if n > 1 else n for n in block.shape[-3:])


def mean_2x(block: np.ndarray) -> np.ndarray:
    """Mean of every 2x2x2 block of a float32 (..., z, y, x) block (see ``_layout``)."""
    a, small = _coarse(np.asarray(block, dtype=np.float32))
    out = np.empty((a.shape[0], *small), dtype=np.float32)
    _mean_kernel(a, out)
    return out.reshape(block.shape[:-3] + small)


def mode_2x(block: np.ndarray, ignore_zero: bool) -> np.ndarray:
    """Most frequent code of every 2x2x2 block of a uint8 (..., z, y, x) block."""
    a, small = _coarse(block)
    out = np.empty((a.shape[0], *small), dtype=np.uint8)
    _mode_kernel(a, out, bool(ignore_zero))
    return out.reshape(block.shape[:-3] + small)
