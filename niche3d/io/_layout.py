"""Layout of a run store's images: inner chunks, the resolution pyramid, OME metadata.

Every image and label array holds one record per data file (shard) cut into spatial inner
chunks (:func:`inner_chunk`). A lattice of more than :data:`PYRAMID_MIN_VOXELS` voxels
also gets coarser copies, levels ``s1, s2, ...`` beside ``s0``, each halving every axis
longer than one voxel (:func:`level_shapes`), written with every record by the writer so
that a viewer shows a zoomed-out plane or a 3D view of a femur-sized run from a few MB
rather than the whole lattice. Fields are averaged over each 2x2x2 block
(:func:`downsample_mean`); label images take the block's most frequent code
(:func:`downsample_mode`). The OME multiscales metadata lists the levels with their own
voxel size and offset (a coarse voxel is centred on the block it summarises).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from niche3d.io._format import (
    NICHE_LABEL,
    NICHE_SITE_COLORS,
    NICHE_SITE_DESCRIPTIONS,
    NICHE_SITE_NAMES,
)
from niche3d.tissue.codes import TISSUE_COLORS, TISSUE_DESCRIPTIONS, TISSUE_NAMES

__all__ = [
    "IMAGE_CHUNK_BYTES",
    "PYRAMID_MIN_VOXELS",
    "SLAB_DEPTH",
    "cover",
    "downsample_mean",
    "downsample_mode",
    "halve",
    "image_ome",
    "inner_chunk",
    "label_ome",
    "level_factors",
    "level_shapes",
    "niche_label_ome",
]

#: Inner chunks of at most this many bytes: a lattice that fits is one chunk per record
#: (the default 48x64x64 lattice: one chunk per field), a bigger one is cut (below).
IMAGE_CHUNK_BYTES = 4 * 2**20
#: A big lattice is cut into slabs of at most this many z planes (then halved along the
#: longer of y and x until a chunk fits IMAGE_CHUNK_BYTES): a viewer shows y-x planes, and
#: a plane decodes only the slab holding it (8 planes) instead of the whole depth. On the
#: 144x144x1248 femur the earlier longest-axis cut (144x144x39 chunks) decoded all 104 MB
#: of a field to show one 0.7 MB plane.
SLAB_DEPTH = 8
#: A lattice with more voxels than this (2**22: a 160^3 block, 16 MB per float32 field)
#: gets coarser levels, added while the last level is still bigger than this; smaller
#: lattices (the default one has 2*10^5 voxels) keep one level.
PYRAMID_MIN_VOXELS = 2**22


def inner_chunk(shape: Sequence[int], itemsize: int) -> tuple[int, int, int]:
    """Spatial inner chunk (z, y, x): the whole lattice when it fits IMAGE_CHUNK_BYTES, else
    slabs of at most SLAB_DEPTH planes, halved along the longer of y and x until they fit."""
    c = [int(n) for n in shape]
    if int(np.prod(c)) * itemsize <= IMAGE_CHUNK_BYTES:
        return (c[0], c[1], c[2])
    c[0] = min(c[0], SLAB_DEPTH)
    while int(np.prod(c)) * itemsize > IMAGE_CHUNK_BYTES and max(c[1], c[2]) > 1:
        i = 1 if c[1] >= c[2] else 2
        c[i] = -(-c[i] // 2)
    while int(np.prod(c)) * itemsize > IMAGE_CHUNK_BYTES and c[0] > 1:
        c[0] = -(-c[0] // 2)
    return (c[0], c[1], c[2])


def cover(shape: Sequence[int], inner: Sequence[int]) -> tuple[int, int, int]:
    """The smallest multiple of ``inner`` covering ``shape`` (a shard holds whole chunks)."""
    z, y, x = (-(-int(n) // int(k)) * int(k) for n, k in zip(shape, inner, strict=True))
    return (z, y, x)


# ---------------------------------------------------------------------- pyramid
def halve(shape: Sequence[int]) -> tuple[int, int, int]:
    """The next level's shape: every axis longer than one voxel halved (rounded up)."""
    z, y, x = (-(-int(n) // 2) if int(n) > 1 else int(n) for n in shape)
    return (z, y, x)


def level_factors(shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """Downsampling factor (z, y, x) of each level relative to ``s0``, level 0 first.

    Levels are added while the last one has more than :data:`PYRAMID_MIN_VOXELS` voxels;
    each halves every axis that is still longer than one voxel (:func:`halve`).

    Parameters
    ----------
    shape
        The lattice (z, y, x).

    Returns
    -------
    list of (fz, fy, fx)
        ``[(1, 1, 1)]`` for a lattice that needs no pyramid.
    """
    dims = tuple(int(n) for n in shape)
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape must be three positive lengths (z, y, x), got {tuple(shape)}")
    factors = [(1, 1, 1)]
    cur = dims
    while math.prod(cur) > PYRAMID_MIN_VOXELS and max(cur) > 1:
        f = factors[-1]
        factors.append((f[0] * (2 if cur[0] > 1 else 1), f[1] * (2 if cur[1] > 1 else 1),
                        f[2] * (2 if cur[2] > 1 else 1)))
        cur = halve(cur)
    return factors


def level_shapes(shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """Shape (z, y, x) of each level (see :func:`level_factors`)."""
    out = [(int(shape[0]), int(shape[1]), int(shape[2]))]
    for _ in level_factors(shape)[1:]:
        out.append(halve(out[-1]))
    return out


def downsample_mean(block: np.ndarray) -> np.ndarray:
    """The next pyramid level of a float block (..., z, y, x): the mean of each 2x2x2 block
    of voxels (axes of length 1 stay), in float32.

    An odd length's last voxel is paired with itself, so the last coarse voxel summarises
    the one fine voxel at the edge. Sums are taken in a fixed order (pairs along z, then
    y, then x), so the result does not depend on the machine; NaN (a record whose fields
    were not stored) stays NaN. A numba kernel (:mod:`niche3d.io._downsample`).
    """
    from niche3d.io._downsample import mean_2x

    return mean_2x(np.asarray(block))


def downsample_mode(block: np.ndarray, *, ignore_zero: bool = False) -> np.ndarray:
    """The next pyramid level of a label block (..., z, y, x) of uint8 codes: the most
    frequent code of each 2x2x2 block (axes of length 1 stay; an odd length's last voxel
    counts twice, with itself); a tie goes to the higher code (tissue structures win a tie
    against marrow, code 1).

    Parameters
    ----------
    block
        uint8 label codes.
    ignore_zero
        Count only codes > 0, so that a coarse voxel is 0 only when its whole block is:
        sparse labels (the niche-site map: one site per voxel at vessel and bone walls)
        stay visible at coarse levels instead of vanishing under the zeros around them.
    """
    from niche3d.io._downsample import mode_2x

    a = np.asarray(block)
    if a.dtype != np.uint8:
        raise ValueError(f"label block must be uint8, got {a.dtype}")
    return mode_2x(a, ignore_zero)


# ---------------------------------------------------------------------- OME metadata
def _axes(with_c: bool) -> list[dict[str, str]]:
    ax = [{"name": "t", "type": "time", "unit": "hour"}]
    if with_c:
        ax.append({"name": "c", "type": "channel"})
    ax += [{"name": n, "type": "space", "unit": "micrometer"} for n in ("z", "y", "x")]
    return ax


def _transforms(voxel: float, record_hours: float, with_c: bool,
                factor: Sequence[int] = (1, 1, 1)) -> list[dict[str, Any]]:
    """Scale and translation of one level: a level-k voxel of edge ``voxel * f`` is centred
    on the block of ``f`` fine voxels it summarises, at ``(i + 0.5) * voxel * f`` µm."""
    size = [voxel * int(f) for f in factor]
    scale = [record_hours] + ([1.0] if with_c else []) + size
    shift = [0.0] + ([0.0] if with_c else []) + [s / 2 for s in size]
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


def _datasets(shape: Sequence[int], voxel: float, rh: float, with_c: bool) -> list[dict[str, Any]]:
    return [{"path": f"s{k}", "coordinateTransformations": _transforms(voxel, rh, with_c, f)}
            for k, f in enumerate(level_factors(shape))]


def _rgba255(rgba: Sequence[float]) -> list[int]:
    return [int(round(255 * float(c))) for c in rgba]


def image_ome(
    channels: list[dict[str, Any]], shape: tuple[int, ...], voxel: float, rh: float, *, occupancy: bool
) -> dict[str, Any]:
    """The root image's ``ome`` attributes: multiscales (one dataset per level) and omero."""
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": "occupancy" if occupancy else "fields",
                "axes": _axes(True),
                "datasets": _datasets(shape, voxel, rh, True),
                **({} if len(level_factors(shape)) == 1 else {
                    "type": "mean",
                    "metadata": {"description": "each level averages 2x2x2 blocks of the level above "
                                 "(niche3d.io._layout.downsample_mean)"}}),
            }
        ],
        "omero": {
            "channels": [
                {
                    "label": ch["name"],
                    "color": ch["color"],
                    "active": True,
                    "coefficient": 1.0,
                    "family": "linear",
                    "inverted": False,
                    "window": {
                        "start": ch["window"][0],
                        "end": ch["window"][1],
                        "min": ch["window"][0],
                        "max": ch["window"][1],
                    },
                }
                for ch in channels
            ],
            "rdefs": {"model": "color", "defaultT": 0, "defaultZ": int(shape[0]) // 2},
        },
    }


def _labels_multiscale(name: str, shape: tuple[int, ...], voxel: float, rh: float, rule: str) -> dict[str, Any]:
    ms: dict[str, Any] = {"name": name, "axes": _axes(False), "datasets": _datasets(shape, voxel, rh, False)}
    if len(ms["datasets"]) > 1:
        ms["type"] = "mode"
        ms["metadata"] = {"description": rule}
    return ms


def label_ome(shape: tuple[int, ...], voxel: float, rh: float) -> dict[str, Any]:
    """``ome`` attributes of ``labels/tissue``: image-label (colours, names) and multiscales."""
    codes = sorted(TISSUE_NAMES)
    return {
        "version": "0.5",
        "image-label": {
            "version": "0.5",
            "colors": [{"label-value": c, "rgba": _rgba255(TISSUE_COLORS[c])} for c in codes],
            "properties": [
                {
                    "label-value": c,
                    "name": TISSUE_NAMES[c],
                    "description": TISSUE_DESCRIPTIONS[TISSUE_NAMES[c]],
                }
                for c in codes
            ],
            "source": {"image": "../../"},
        },
        "multiscales": [_labels_multiscale(
            "tissue", shape, voxel, rh,
            "each level takes the most frequent code of 2x2x2 blocks of the level above, a tie "
            "to the higher code (niche3d.io._layout.downsample_mode)")],
    }


def niche_label_ome(shape: tuple[int, ...], voxel: float, rh: float) -> dict[str, Any]:
    """``ome`` attributes of ``labels/niche``: image-label (colours, names) and multiscales."""
    codes = sorted(NICHE_SITE_NAMES)
    return {
        "version": "0.5",
        "image-label": {
            "version": "0.5",
            "colors": [{"label-value": c, "rgba": _rgba255(NICHE_SITE_COLORS[c])} for c in codes],
            "properties": [
                {"label-value": c, "name": NICHE_SITE_NAMES[c], "description": NICHE_SITE_DESCRIPTIONS[c]}
                for c in codes
            ],
            "source": {"image": "../../"},
        },
        "multiscales": [_labels_multiscale(
            NICHE_LABEL, shape, voxel, rh,
            "each level takes the most frequent site code > 0 of 2x2x2 blocks of the level above "
            "(0 only where the whole block is no site; niche3d.io._layout.downsample_mode)")],
    }
