"""The names every layer shares: tissue codes and names, and the signal names.

This module is a leaf: it imports nothing from niche3d (and nothing outside the standard
library), so the scenario schema, the tissue, field and cell packages, the run store and
the napari plugin can all import it without import cycles or start-up cost.

Examples
--------
>>> from niche3d.names import MEMBRANE_SCF, TISSUE_NAMES, Tissue
>>> TISSUE_NAMES[Tissue.STROMA]
'stroma'
>>> MEMBRANE_SCF
'membrane_scf'
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "Tissue",
    "TISSUE_NAMES",
    "CXCL12",
    "SCF",
    "MEMBRANE_SCF",
    "CELL_FIELDS",
]


class Tissue(IntEnum):
    """uint8 codes of the voxel lattice.

    ``OUTSIDE`` is 0 so that napari draws it transparent.
    """

    OUTSIDE = 0
    MARROW = 1
    BONE = 2
    ENDOSTEUM = 3
    SNO = 4
    SINUSOID = 5
    ENDOTHELIUM = 6
    ARTERIOLE = 7
    STROMA = 8


#: lower-case names used in scenario tables (``secretion = {stroma = 1.0}``).
TISSUE_NAMES: dict[int, str] = {int(t): t.name.lower() for t in Tissue}

#: the chemokine field (``[fields.diffusible.cxcl12]``): CXCR4 signalling of the cell rules
#: and the target of G-CSF's fall in osteoblast production.
CXCL12 = "cxcl12"
#: the soluble stem-cell-factor field (``[fields.diffusible.scf]``).
SCF = "scf"
#: the non-diffusing membrane SCF contact map; a valid knockout target beside the
#: diffusible fields, and a reserved name that no diffusible field may take.
MEMBRANE_SCF = "membrane_scf"
#: diffusible fields the cell rules read every step; a run without one of them is an error.
CELL_FIELDS: tuple[str, ...] = (CXCL12, SCF)
