"""The static world: tissue codes, the voxel lattice, the procedural marrow generator,
import of segmented images and geometry statistics.

Names load lazily (see :mod:`niche3d._lazy`): the scenario schema imports
``niche3d.tissue.config`` without paying for scipy and numba.

Examples
--------
>>> from niche3d.tissue import TissueConfig, build_lattice, geometry_report
>>> lat = build_lattice((32, 32, 32), 10.0, TissueConfig(), seed=1)
>>> lat.shape
(32, 32, 32)
"""

from __future__ import annotations

from niche3d._lazy import lazy_exports

_EXPORTS = {
    "Tissue": "niche3d.tissue.codes",
    "TISSUE_NAMES": "niche3d.tissue.codes",
    "TISSUE_COLORS": "niche3d.tissue.codes",
    "TISSUE_DESCRIPTIONS": "niche3d.tissue.codes",
    "tissue_code": "niche3d.tissue.codes",
    "color_table": "niche3d.tissue.codes",
    "Lattice": "niche3d.tissue.lattice",
    "TissueConfig": "niche3d.tissue.config",
    "ImageConfig": "niche3d.tissue.config",
    "ImportReport": "niche3d.tissue.importer",
    "build_lattice": "niche3d.tissue.build",
    "generate_marrow": "niche3d.tissue.generator",
    "load_label_image": "niche3d.tissue.importer",
    "read_label_image": "niche3d.tissue.importer",
    "check_label_image": "niche3d.tissue.importer",
    "LabelImageError": "niche3d.tissue.errors",
    "geometry_stats": "niche3d.tissue.stats",
    "geometry_report": "niche3d.tissue.stats",
    "format_geometry_report": "niche3d.tissue.stats",
    "local_thickness": "niche3d.tissue.stats",
    **dict.fromkeys(
        ("neighbour_sum", "neighbour_mean", "tissue_neighbour_mean", "contact_maps", "ang1_map"),
        "niche3d.tissue.contact",
    ),
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
