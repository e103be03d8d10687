"""Build the lattice a scenario asks for: the procedural generator or an imported image."""

from __future__ import annotations

from niche3d.tissue.config import TissueConfig
from niche3d.tissue.generator import generate_marrow
from niche3d.tissue.importer import load_label_image
from niche3d.tissue.lattice import Lattice

__all__ = ["build_lattice"]


def build_lattice(
    shape: tuple[int, int, int], voxel_um: float, config: TissueConfig, seed: int,
    *, cache: bool = True,
) -> Lattice:
    """Build the lattice a scenario asks for.

    Parameters
    ----------
    shape
        Domain shape (z, y, x) in voxels (``domain.shape``).
    voxel_um
        Voxel edge in µm (``domain.voxel_um``).
    config
        The ``[tissue]`` section. ``config.source`` selects the procedural generator
        (:func:`generate_marrow`) or the import of a segmented image
        (:func:`load_label_image`).
    seed
        Run seed; used when ``config.seed`` is None (a fixed ``config.seed`` shares one
        geometry across replicates).
    cache
        Reuse a procedural lattice generated before with the same shape, voxel size,
        ``[tissue]`` section, seed and code (:mod:`niche3d.tissue.cache`; bit-identical
        to generating it again).

    Returns
    -------
    Lattice

    Notes
    -----
    For ``source = "image"`` the image defines the lattice: it is resampled to
    ``voxel_um``, and its resulting shape wins over ``shape``. A difference is not an
    error; it is reported on the returned lattice's ``import_report`` attribute
    (``shape_requested`` and ``shape``), which ``niche3d geometry`` and the run log print.
    """
    if not isinstance(config, TissueConfig):
        raise TypeError(f"config must be a TissueConfig, got {type(config).__name__}")
    use_seed = config.seed if config.seed is not None else seed
    if config.source == "procedural":
        if not cache:
            return generate_marrow(shape, voxel_um, config, use_seed)
        from niche3d.tissue.cache import cached_labels, lattice_key

        shp = (int(shape[0]), int(shape[1]), int(shape[2]))
        key = lattice_key(shp, voxel_um, config.model_dump_json(), use_seed)
        labels = cached_labels(key, shp, lambda: generate_marrow(shape, voxel_um, config, use_seed).labels)
        return Lattice(labels, voxel_um)
    if config.source == "image":
        if config.image is None:  # the config validator prevents this; keep the message
            raise ValueError("tissue.source = 'image' needs a [tissue.image] table with a path")
        return load_label_image(config, voxel_um, shape_requested=shape, seed=use_seed)
    raise ValueError(
        f"tissue.source = {config.source!r} is not supported; allowed: 'procedural', 'image'"
    )
