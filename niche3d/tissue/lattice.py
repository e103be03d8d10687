"""The static world: a labelled voxel lattice with its physical voxel size."""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy import ndimage

from niche3d.tissue.codes import TISSUE_NAMES, Tissue, tissue_code

__all__ = ["Lattice"]


class Lattice:
    """Tissue labels on a cubic lattice, axes (z, y, x).

    Parameters
    ----------
    labels
        3D uint8 array of :class:`~niche3d.tissue.codes.Tissue` codes.
    voxel_um
        Voxel edge in µm.

    Derived maps (distances in µm, masks) are computed once on first use and cached.

    The lattice keeps its own read-only copy of ``labels``: the cached maps here, the
    field solver's geometry (pockets, fjords, coarse faces; recognised by the identity
    of this array) and the cells' contact maps are all derived from it once, so an
    in-place edit would silently leave them stale. A changed tissue is a new Lattice.
    """

    def __init__(self, labels: np.ndarray, voxel_um: float) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be 3D (z, y, x), got shape {labels.shape}")
        if labels.dtype != np.uint8:
            raise ValueError(f"labels must be uint8 tissue codes, got dtype {labels.dtype}")
        bad = np.setdiff1d(np.unique(labels), np.array(list(TISSUE_NAMES), dtype=np.uint8))
        if bad.size:
            raise ValueError(
                f"labels contain unknown tissue codes {bad.tolist()}; allowed: "
                + ", ".join(f"{c}={n}" for c, n in TISSUE_NAMES.items())
            )
        if not (np.isfinite(voxel_um) and voxel_um > 0):
            raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
        frozen = np.array(labels, dtype=np.uint8, order="C", copy=True)
        frozen.flags.writeable = False
        self.labels: np.ndarray = frozen
        self.voxel_um: float = float(voxel_um)

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, int, int]:
        """Lattice shape (z, y, x) in voxels."""
        return tuple(int(n) for n in self.labels.shape)  # type: ignore[return-value]

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(self.labels.size)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return (self.voxel_um * 1e-3) ** 3

    def mask(self, *tissues: Tissue | int | str) -> np.ndarray:
        """Boolean mask of voxels whose code is any of ``tissues`` (codes or names)."""
        codes = [tissue_code(t) if isinstance(t, str) else int(t) for t in tissues]
        lut = np.zeros(256, dtype=bool)
        lut[codes] = True
        return lut[self.labels]

    def counts(self) -> dict[str, int]:
        """Voxel count per tissue name."""
        n = np.bincount(self.labels.ravel(), minlength=256)
        return {name: int(n[code]) for code, name in TISSUE_NAMES.items()}

    def fractions(self) -> dict[str, float]:
        """Volume fraction per tissue name (of the whole lattice)."""
        total = max(self.size, 1)
        return {k: v / total for k, v in self.counts().items()}

    # ------------------------------------------------------------------ derived maps
    def distance_um(self, *tissues: Tissue | int | str) -> np.ndarray:
        """Euclidean distance in µm from every voxel to the nearest voxel of ``tissues``.

        Voxels of those tissues are at distance 0. If the lattice has none of them the
        result is +inf everywhere.
        """
        key = tuple(sorted(tissue_code(t) if isinstance(t, str) else int(t) for t in tissues))
        cache = self._distance_cache
        if key not in cache:
            target = self.mask(*key)
            if not target.any():
                cache[key] = np.full(self.shape, np.inf, dtype=np.float32)
            else:
                d = ndimage.distance_transform_edt(~target, sampling=self.voxel_um)
                cache[key] = d.astype(np.float32)
        return cache[key]

    @cached_property
    def _distance_cache(self) -> dict[tuple[int, ...], np.ndarray]:
        return {}

    @property
    def dist_sinusoid_um(self) -> np.ndarray:
        """Distance to the sinusoid wall or lumen (µm)."""
        return self.distance_um(Tissue.SINUSOID, Tissue.ENDOTHELIUM)

    @property
    def dist_endosteum_um(self) -> np.ndarray:
        """Distance to the endosteal lining, SNOs included (µm)."""
        return self.distance_um(Tissue.ENDOSTEUM, Tissue.SNO)

    @property
    def dist_arteriole_um(self) -> np.ndarray:
        """Distance to an arteriole (µm)."""
        return self.distance_um(Tissue.ARTERIOLE)

    @property
    def enterable(self) -> np.ndarray:
        """Voxels a haematopoietic cell may occupy: marrow and the reticular stroma.

        Lining layers (endosteum, SNO, endothelium) and lumens are niche cells or
        blood: an HSC touches them from a neighbouring voxel, and enters the sinusoid
        lumen only by the egress rule (transendothelial crossing into the blood pool).
        CAR/LepR+ stroma is a reticular mesh that envelops HSCs, so it is enterable.
        """
        return self.mask(Tissue.MARROW, Tissue.STROMA)

    def __repr__(self) -> str:
        z, y, x = self.shape
        return f"Lattice({z}x{y}x{x} voxels, {self.voxel_um:g} µm)"
