"""Tissue codes: the one place that names, numbers and colours marrow tissue.

The codes and names are declared in the leaf module :mod:`niche3d.names` (so that the
scenario schema reads them without importing this package) and re-exported here, beside
their descriptions and colours. The run store (``labels/tissue`` colours and names), the field specs (per-tissue
tables keyed by name) and the napari plugin all read this module, so a code never
means two things.
"""

from __future__ import annotations

import numpy as np

from niche3d.names import TISSUE_NAMES, Tissue

__all__ = [
    "Tissue",
    "TISSUE_NAMES",
    "TISSUE_COLORS",
    "TISSUE_DESCRIPTIONS",
    "tissue_code",
    "color_table",
]


TISSUE_DESCRIPTIONS: dict[str, str] = {
    "outside": "outside the simulated marrow block",
    "marrow": "haematopoietic (non-niche) marrow",
    "bone": "mineralised trabecular or cortical bone (impermeable)",
    "endosteum": "endosteal lining osteoblasts",
    "sno": "spindle-shaped N-cadherin+ osteoblasts (endosteal subset)",
    "sinusoid": "sinusoid lumen (blood)",
    "endothelium": "sinusoidal endothelium (fenestrated wall)",
    "arteriole": "arteriole (lumen and wall)",
    "stroma": "perivascular CXCL12-abundant reticular / LepR+ stroma",
}

#: RGBA in 0..1, shared by the store's label metadata and the napari plugin.
TISSUE_COLORS: dict[int, tuple[float, float, float, float]] = {
    Tissue.OUTSIDE: (0.0, 0.0, 0.0, 0.0),
    Tissue.MARROW: (0.96, 0.87, 0.80, 0.08),
    Tissue.BONE: (0.93, 0.92, 0.85, 1.0),
    Tissue.ENDOSTEUM: (0.20, 0.63, 0.17, 1.0),
    Tissue.SNO: (0.60, 0.90, 0.20, 1.0),
    Tissue.SINUSOID: (0.80, 0.10, 0.12, 0.9),
    Tissue.ENDOTHELIUM: (0.98, 0.50, 0.45, 1.0),
    Tissue.ARTERIOLE: (0.55, 0.00, 0.35, 1.0),
    Tissue.STROMA: (0.20, 0.55, 0.85, 0.9),
}


def tissue_code(name: str) -> int:
    """Return the uint8 code of a tissue name, with a clear error for a wrong name."""
    key = name.strip().lower()
    for code, nm in TISSUE_NAMES.items():
        if nm == key:
            return code
    raise ValueError(
        f"unknown tissue name {name!r}; allowed: {', '.join(TISSUE_NAMES.values())}"
    )


def color_table() -> np.ndarray:
    """(256, 4) float32 RGBA lookup table indexed by tissue code (unknown codes black)."""
    lut = np.zeros((256, 4), dtype=np.float32)
    for code, rgba in TISSUE_COLORS.items():
        lut[int(code)] = rgba
    return lut
