"""Test worlds shared by the cells tests (and the subprocess script of the determinism test)."""

from __future__ import annotations

import numpy as np

from niche3d.cells import CellsConfig, Signals
from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice


def niche_world() -> tuple[Lattice, Signals]:
    """Bone + endosteum/SNO on x = 0..3, a 4x4 sinusoid with endothelium, a stromal
    sheet, and imposed CXCL12/SCF/membrane SCF decaying with distance to the sinusoid."""
    lab = np.full((20, 32, 32), Tissue.MARROW, np.uint8)
    lab[:, :, 0:3] = Tissue.BONE
    lab[:, :, 3] = Tissue.ENDOSTEUM
    lab[::3, ::4, 3] = Tissue.SNO
    lab[:, 14:18, 14:18] = Tissue.SINUSOID
    lab[:, 13, 13:19] = Tissue.ENDOTHELIUM
    lab[:, 18, 13:19] = Tissue.ENDOTHELIUM
    lab[:, 13:19, 13] = Tissue.ENDOTHELIUM
    lab[:, 13:19, 18] = Tissue.ENDOTHELIUM
    lab[:, 11:13, 11:21] = Tissue.STROMA
    lat = Lattice(lab, 8.0)
    d = lat.dist_sinusoid_um
    s = Signals(cxcl12=(25 * np.exp(-d / 40)).astype(np.float32),
                scf=(4 * np.exp(-d / 30)).astype(np.float32),
                membrane_scf=(d <= 8).astype(np.float32))
    return lat, s


def quiet_config(**sections) -> CellsConfig:
    """A configuration with every rule switched off, then the given sections applied."""
    base = {
        "speed_um_min": 0.0,
        "motility": {"chemotaxis_gain": 0.0, "persistence": 0.0, "niche_taxis": 0.0},
        "adhesion": {"k_on_per_h": 0.0, "k_off_per_h": 0.0},
        "cycle": {"activation_per_day": 0.0, "return_per_day": 0.0, "g0_exit_per_day": 0.0,
                  "demand_gain": 0.0},
        "death": {"hsc_per_day": 0.0, "mpp_per_day": 0.0, "mpp_exit_per_day": 0.0},
        "blood": {"egress_per_h": 0.0, "homing_per_h": 0.0, "clearance_per_h": 0.0,
                  "lodging_reach_um": 0.0},
        # daughters and homed cells settle next to where they arise
        "fate": {"offsite_loss_per_day": 0.0, "daughter_reach_um": 0.0},
    }
    for key, val in sections.items():
        if isinstance(val, dict):
            base.setdefault(key, {}).update(val)
        else:
            base[key] = val
    return CellsConfig.model_validate(base)
