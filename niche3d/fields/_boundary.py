"""Boundary kinds of the six lattice faces: the one copy of their codes.

Every array of per-face kinds (``bk``/``bkind``) and values (``bv``/``bvalue``) has the
face order of :data:`niche3d.fields.config.FACES`: zmin, zmax, ymin, ymax, xmin, xmax.
The kernels read these module constants as compile-time constants.
"""

from __future__ import annotations

__all__ = ["NOFLUX", "VALUE", "PERIODIC", "KINDS"]

NOFLUX = 0  # no flux crosses the face
VALUE = 1  # fixed value: the face is half a voxel from the centre, coefficient 2 D
PERIODIC = 2  # the face joins the opposite face

#: kind code per scenario name (``[fields.diffusible.<name>.boundary]``)
KINDS = {"noflux": NOFLUX, "value": VALUE, "periodic": PERIODIC}
