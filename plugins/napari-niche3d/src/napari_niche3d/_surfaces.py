"""Smooth surfaces of the vessels and the bone for the 3D view (marching cubes).

In 3D a label image of the whole block is a dense wall of voxel cubes that hides the
cells; the structures a biologist orients by (sinusoids with their endothelium, arterioles,
trabecular bone) read better as smooth semi-transparent surfaces with the cells inside.
They are computed lazily when a run is opened, from its first record's tissue: a mask of
the structure, smoothed by a Gaussian of one voxel (keeping every voxel of the structure
inside, so thin vessels stay), cut at one half by scikit-image's marching cubes, on a coarser grid for big lattices (``step_size``) so opening stays quick.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["SURFACE_TISSUES", "MAX_SURFACE_VOXELS", "tissue_surface", "tissue_surfaces"]

#: surface name -> tissue names inside it (a sinusoid's surface is its endothelium's outside)
SURFACE_TISSUES: dict[str, tuple[str, ...]] = {
    "sinusoids": ("sinusoid", "endothelium"),
    "arterioles": ("arteriole",),
    "bone": ("bone",),
}
#: lattices with more voxels are meshed on a grid coarser by the cube root of the ratio
MAX_SURFACE_VOXELS = 8_000_000


def tissue_surface(mask: np.ndarray, *, smooth_voxels: float = 1.0,
                   step: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface of a 3D boolean ``mask``: ``(vertices, faces, values)`` in voxel
    coordinates (voxel centres at integers), for a napari Surface layer.

    Parameters
    ----------
    mask
        (z, y, x) boolean array.
    smooth_voxels
        Gaussian sigma (voxels) applied to the mask before the surface is cut at 0.5 (0: the
        voxel staircase).
    step
        Marching-cubes step (voxels); 2 meshes an 8 times smaller grid.

    Returns
    -------
    vertices (n, 3) float32, faces (m, 3) int32, values (n,) float32
        Empty arrays (0 rows) when the mask is empty.
    """
    from scipy import ndimage as ndi
    from skimage.measure import marching_cubes

    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x), got shape {m.shape}")
    if not (isinstance(step, int) and step >= 1):
        raise ValueError(f"step must be a whole number >= 1, got {step!r}")
    if not (math.isfinite(smooth_voxels) and smooth_voxels >= 0):
        raise ValueError(f"smooth_voxels must be >= 0, got {smooth_voxels!r}")
    empty = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.float32))
    if not m.any():
        return empty
    # pad by one voxel of background so a structure touching the block's faces is closed
    field = np.pad(m.astype(np.float32), 1)
    if smooth_voxels > 0:
        # smoothed, but every voxel of the structure stays inside the surface: a vessel one
        # voxel across would otherwise be smoothed below the cut and vanish
        field = np.maximum(ndi.gaussian_filter(field, smooth_voxels, mode="constant"), 0.6 * field)
    if field.max() <= 0.5 or min(field.shape) < 2:
        return empty
    verts, faces, _normals, _ = marching_cubes(field, level=0.5, step_size=step, allow_degenerate=False)
    verts -= 1.0  # undo the padding
    values = np.ones(len(verts), np.float32)
    return verts.astype(np.float32), faces.astype(np.int32), values


def tissue_surfaces(labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every surface of :data:`SURFACE_TISSUES` present in ``labels`` (uint8 tissue codes,
    (z, y, x)), by name; structures the lattice lacks are left out."""
    from niche3d.tissue.codes import tissue_code

    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {lab.shape}")
    step = max(1, math.ceil((lab.size / MAX_SURFACE_VOXELS) ** (1 / 3)))
    out: dict[str, Any] = {}
    for name, tissues in SURFACE_TISSUES.items():
        mask = np.isin(lab, [tissue_code(t) for t in tissues])
        surf = tissue_surface(mask, step=step)
        if len(surf[1]):
            out[name] = surf
    return out
