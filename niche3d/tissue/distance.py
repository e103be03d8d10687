"""Distance maps of a lattice: exact Euclidean distance transforms and bounded zones.

* :func:`squared_edt` / :func:`edt`: the exact Euclidean distance from every voxel to the
  nearest feature voxel, by three 1D lower-envelope passes (Felzenszwalb & Huttenlocher
  2012) in parallel numba: 10-20x faster than ``scipy.ndimage.distance_transform_edt``
  and without its three int32 index arrays.
* :func:`within`: the voxels within a distance of a feature, by a bounded dilation (the
  features OR-ed over the offsets of a ball): its cost grows with the ball, not the
  lattice's depth, and it needs no float64 map. It is exactly ``distance <= r`` of
  :meth:`~niche3d.tissue.lattice.Lattice.distance_um` (the ball is chosen by the same
  float32 comparison), which is what a zone such as the OPN band asks.

Distances are not periodic: a feature across a periodic face does not count (as in
scipy).
"""

from __future__ import annotations

import numba
import numpy as np

from niche3d._jit import jit

__all__ = ["edt", "squared_edt", "distance_from_squared", "within", "ball_offsets"]

_BIG = 1e30  # "no feature yet" in the squared-distance passes
_ROWS_MAX = 400  # row offsets of a ball beyond which within() thresholds the whole map


@jit(parallel=True)
def _edt_last_axis(f: np.ndarray) -> None:  # pragma: no cover - numba
    """In-place 1D squared Euclidean distance transform along the last axis.

    Lower envelope of parabolas (Felzenszwalb & Huttenlocher 2012); ``f`` holds squared
    distances so far (0 at features, a large number elsewhere).
    """
    nz, ny, n = f.shape
    for z in numba.prange(nz):
        v = np.empty(n, dtype=np.int64)
        zb = np.empty(n + 1, dtype=np.float64)
        g = np.empty(n, dtype=np.float64)
        for y in range(ny):
            for i in range(n):
                g[i] = f[z, y, i]
            k = 0
            v[0] = 0
            zb[0] = -1e30
            zb[1] = 1e30
            for q in range(1, n):
                if g[q] >= 1e29:
                    continue
                while True:
                    p = v[k]
                    sx = ((g[q] + q * q) - (g[p] + p * p)) / (2.0 * (q - p))
                    if g[p] >= 1e29:
                        sx = -1e30
                    if sx <= zb[k] and k > 0:
                        k -= 1
                        continue
                    if sx <= zb[k]:
                        # replace the only (infinite) parabola
                        v[0] = q
                        zb[0] = -1e30
                        zb[1] = 1e30
                        break
                    k += 1
                    v[k] = q
                    zb[k] = sx
                    zb[k + 1] = 1e30
                    break
            if g[v[0]] >= 1e29:
                continue  # no feature on this line: leave as is
            k = 0
            for q in range(n):
                while zb[k + 1] < q:
                    k += 1
                p = v[k]
                f[z, y, q] = (q - p) * (q - p) + g[p]



def squared_edt(features: np.ndarray) -> np.ndarray:
    """Squared distance in voxel edges (float64, exact integers) from every voxel to the
    nearest True voxel of ``features`` (3D); ``inf`` everywhere when there is none."""
    features = np.asarray(features, dtype=bool)
    if features.ndim != 3:
        raise ValueError(f"features must be 3D (z, y, x), got shape {features.shape}")
    if not features.any():
        return np.full(features.shape, np.inf)
    f = np.where(features, 0.0, _BIG)
    _edt_last_axis(f)
    f = np.ascontiguousarray(f.transpose(0, 2, 1))
    _edt_last_axis(f)
    f = np.ascontiguousarray(f.transpose(2, 1, 0))  # (y, x, z): last axis is z
    _edt_last_axis(f)
    return np.ascontiguousarray(f.transpose(2, 0, 1))


def distance_from_squared(sq: np.ndarray, voxel_um: float) -> np.ndarray:
    """float32 distance in µm from squared voxel distances: ``sqrt(k * v**2)`` in float64,
    as scipy's ``distance_transform_edt(..., sampling=v)`` computes it (identical values
    for integer voxel sizes; ``inf`` stays ``inf``)."""
    v = float(voxel_um)
    return np.sqrt(sq * (v * v)).astype(np.float32)


def edt(features: np.ndarray, voxel_um: float = 1.0) -> np.ndarray:
    """Exact Euclidean distance (µm, float32) from every voxel to the nearest feature voxel.

    A parallel numba replacement for ``scipy.ndimage.distance_transform_edt(~features)``
    (about 10-20x faster on 256^3 with 2 threads); ``inf`` everywhere if there is no
    feature voxel. (The procedural generator's distance: ``sqrt(k)`` scaled in float32;
    :func:`distance_from_squared` is scipy's rounding.)
    """
    d = np.sqrt(squared_edt(features)).astype(np.float32)
    if voxel_um != 1.0:
        d *= np.float32(voxel_um)
    return np.ascontiguousarray(d)


def ball_offsets(r_um: float, voxel_um: float,
                 extent: tuple[int, int, int] | None = None) -> np.ndarray:
    """Offsets (dz, dy, dx), int64 (n, 3), of the voxels whose distance in µm, rounded as
    :func:`distance_from_squared` rounds it, is <= ``r_um`` (compared in float32, as a
    float32 distance map is compared with a Python number); with ``extent`` (a lattice
    shape) only offsets that fit in it (``|dz| < nz``, ...)."""
    if not (np.isfinite(r_um) and r_um >= 0):
        raise ValueError(f"r_um must be a finite number >= 0, got {r_um!r}")
    if not (np.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    n = int(np.floor(r_um / voxel_um)) + 1
    lim = [n] * 3 if extent is None else [min(n, int(e) - 1) for e in extent]
    if min(lim) < 0:
        raise ValueError(f"extent must be a shape of positive sizes, got {extent!r}")
    dz, dy, dx = np.meshgrid(*(np.arange(-m, m + 1) for m in lim), indexing="ij")
    k = (dz * dz + dy * dy + dx * dx).astype(np.float64)
    keep = distance_from_squared(k, voxel_um) <= np.float32(r_um)
    return np.stack([dz[keep], dy[keep], dx[keep]], axis=1).astype(np.int64)


@jit(parallel=True)
def _or_rows(rows, which, dzs, dys, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``out[z, y] |= rows[which[i], z + dz[i], y + dy[i]]`` over the row offsets i of the
    ball (uint8 0/1 arrays: one vectorised OR per row); parallel over output planes."""
    nz, ny, nx = out.shape
    for z in numba.prange(nz):
        for i in range(dzs.shape[0]):
            sz = z + dzs[i]
            if sz < 0 or sz >= nz:
                continue
            k = which[i]
            for y in range(ny):
                sy = y + dys[i]
                if sy < 0 or sy >= ny:
                    continue
                src = rows[k, sz, sy]
                dst = out[z, y]
                for x in range(nx):
                    dst[x] |= src[x]


def within(features: np.ndarray, r_um: float, voxel_um: float) -> np.ndarray:
    """Boolean map of the voxels within ``r_um`` of a True voxel of ``features`` (3D):
    exactly ``distance_from_squared(squared_edt(features), voxel_um) <= r_um``, by a
    bounded dilation with the ball of :func:`ball_offsets`, taken as rows: the features
    are dilated along x once per row half-width, then each row offset (dz, dy) of the
    ball is one OR of whole rows."""
    features = np.ascontiguousarray(features, dtype=bool)
    if features.ndim != 3:
        raise ValueError(f"features must be 3D (z, y, x), got shape {features.shape}")
    # a ball of more rows than this costs about the whole transform (femur lattice, 2
    # threads: the 20 µm OPN zone's 21 rows 0.044 s, the transform 1.0-1.6 s): threshold
    # the exact map instead (the same result)
    rows_est = np.pi * (r_um / voxel_um) ** 2 if np.isfinite(r_um) else np.inf
    if rows_est > _ROWS_MAX:
        if not (np.isfinite(voxel_um) and voxel_um > 0):
            raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
        if not (r_um >= 0):
            raise ValueError(f"r_um must be a finite number >= 0, got {r_um!r}")
        return distance_from_squared(squared_edt(features), voxel_um) <= np.float32(r_um)
    offs = ball_offsets(r_um, voxel_um, features.shape)
    half: dict[tuple[int, int], int] = {}
    for dz, dy, dx in offs.tolist():
        half[(dz, dy)] = max(half.get((dz, dy), 0), abs(dx))
    keys = sorted(half)
    widths = sorted(set(half.values()))
    out = np.zeros(features.shape, dtype=np.uint8)
    if not features.any():
        return out.view(bool)
    f = features.view(np.uint8)
    rows = np.zeros((len(widths), *features.shape), np.uint8)
    for j, w in enumerate(widths):  # the features dilated along x by w voxels
        r = rows[j]
        r[...] = f
        for dx in range(1, w + 1):
            r[..., dx:] |= f[..., :-dx]
            r[..., :-dx] |= f[..., dx:]
    _or_rows(rows, np.array([widths.index(half[k]) for k in keys], np.int64),
             np.array([k[0] for k in keys], np.int64), np.array([k[1] for k in keys], np.int64),
             out)
    return out.view(bool)
