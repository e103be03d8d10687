"""The kernel parameter vector, declared once: one row per entry.

The numba kernels read their parameters from one float64 vector ``par`` at the indices
``K_*``. Each row below declares an entry: the constant holding its index, where the
value comes from, the conversion to kernel units and the kernel unit. The index is the
row's position, :data:`N_PAR` is the number of rows and :func:`pack` fills the vector from
the table, so adding a parameter is one row (plus the kernel code that reads it).

Sources:

* ``cells.<section>.<field>``: a scenario value (the ``[cells]`` section), converted by
  the row's conversion (``per_day``: 1/day -> 1/h; ``is_push``: the crowding rule as a flag);
* ``model.<name>``: a value the model derives once (hop probabilities, the step length);
* ``step.<name>`` and ``modifiers.<name>``: set at every step (the systemic demand and
  pool deviation, the intervention modifiers); 0 in the packed base vector.

The constants are plain module-level ints because numba freezes a global int into the
compiled kernel as a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from niche3d.cells.config import CellsConfig

__all__ = ["ParamSpec", "PARAMS", "N_PAR", "pack", "per_day", "is_push", "param_index"]


def _as_float(v: Any) -> float:
    return float(v)


def per_day(v: Any) -> float:
    """A rate per day in kernel units (per hour)."""
    return v / 24.0


def is_push(v: Any) -> float:
    """The ``fate.crowding`` rule as a flag: 1.0 for ``"push"``, else 0.0."""
    return 1.0 if v == "push" else 0.0


@dataclass(frozen=True)
class ParamSpec:
    """One entry of the kernel parameter vector.

    Attributes
    ----------
    name
        Name of the index constant (``K_...``).
    source
        ``cells.<section>.<field>``, ``model.<name>``, ``step.<name>`` or
        ``modifiers.<name>`` (see the module docstring).
    convert
        Conversion of the source value to kernel units.
    unit
        Kernel unit of the entry ("-" for dimensionless).
    """

    name: str
    source: str
    convert: Callable[[Any], float] = _as_float
    unit: str = "-"

    @property
    def kind(self) -> str:
        """First word of :attr:`source`: ``cells``, ``model``, ``step`` or ``modifiers``."""
        return self.source.split(".", 1)[0]

    @property
    def runtime(self) -> bool:
        """True for entries set at every step (0 in the packed base vector)."""
        return self.kind in ("step", "modifiers")


_ROWS: list[ParamSpec] = []


def _par(name: str, source: str, convert: Callable[[Any], float] = _as_float,
         unit: str = "-") -> int:
    _ROWS.append(ParamSpec(name, source, convert, unit))
    return len(_ROWS) - 1


# ---------------------------------------------------------------- the table (index = row)
K_PHOP = _par("K_PHOP", "model.p_hop")
K_PHOP_MPP = _par("K_PHOP_MPP", "model.p_hop_mpp")
K_PERSIST = _par("K_PERSIST", "cells.motility.persistence")
K_KD = _par("K_KD", "cells.motility.cxcr4_kd_nM", unit="nM")
K_CHEMO_GAIN = _par("K_CHEMO_GAIN", "cells.motility.chemotaxis_gain")
K_CHEMO_THR = _par("K_CHEMO_THR", "cells.motility.gradient_threshold")
K_KON = _par("K_KON", "cells.adhesion.k_on_per_h", unit="1/h")
K_W_SCF = _par("K_W_SCF", "cells.adhesion.w_membrane_scf")
K_W_VCAM = _par("K_W_VCAM", "cells.adhesion.w_vcam1")
K_W_NCAD = _par("K_W_NCAD", "cells.adhesion.w_ncadherin")
K_W_CXCR4 = _par("K_W_CXCR4", "cells.adhesion.w_cxcr4")
K_KOFF = _par("K_KOFF", "cells.adhesion.k_off_per_h", unit="1/h")
K_OFF_PROT = _par("K_OFF_PROT", "cells.adhesion.protease_gain", unit="min")
K_OFF_BLOCK = _par("K_OFF_BLOCK", "cells.adhesion.blockade_gain")
K_VCAM_PROT_HALF = _par("K_VCAM_PROT_HALF", "cells.adhesion.vcam1_protease_half", unit="1/min")
K_EGRESS = _par("K_EGRESS", "cells.blood.egress_per_h", unit="1/h")
K_RET_CXCR4 = _par("K_RET_CXCR4", "cells.blood.retention_cxcr4")
K_RET_VCAM = _par("K_RET_VCAM", "cells.blood.retention_vcam1")
K_RET_SCF = _par("K_RET_SCF", "cells.blood.retention_membrane_scf")
K_ACT = _par("K_ACT", "cells.cycle.activation_per_day", per_day, "1/h")
K_ACT_ANG1 = _par("K_ACT_ANG1", "cells.cycle.ang1_quiescence")
K_RET = _par("K_RET", "cells.cycle.return_per_day", per_day, "1/h")
K_RET_ANG1 = _par("K_RET_ANG1", "cells.cycle.ang1_return_gain")
K_ENTRY = _par("K_ENTRY", "cells.cycle.g0_exit_per_day", per_day, "1/h")
K_ENTRY_CXCL = _par("K_ENTRY_CXCL", "cells.cycle.cxcl12_quiescence")
K_DEMAND_GAIN = _par("K_DEMAND_GAIN", "cells.cycle.demand_gain")
K_G1_MEAN = _par("K_G1_MEAN", "cells.cycle.g1_mean_hours", unit="h")
K_G1_SHAPE = _par("K_G1_SHAPE", "cells.cycle.g1_shape")
K_S_MEAN = _par("K_S_MEAN", "cells.cycle.sg2m_mean_hours", unit="h")
K_S_SHAPE = _par("K_S_SHAPE", "cells.cycle.sg2m_shape")
K_F_W_SCF = _par("K_F_W_SCF", "cells.fate.w_membrane_scf")
K_F_W_CXCR4 = _par("K_F_W_CXCR4", "cells.fate.w_cxcr4")
K_F_W_SNO = _par("K_F_W_SNO", "cells.fate.w_sno")
K_SITE = _par("K_SITE", "cells.fate.site_threshold")
K_SITE_HILL = _par("K_SITE_HILL", "cells.fate.site_hill")
K_TAXIS = _par("K_TAXIS", "cells.motility.niche_taxis", unit="1/signal")
K_OFFSITE = _par("K_OFFSITE", "cells.fate.offsite_loss_per_day", per_day, "1/h")
K_ASYM = _par("K_ASYM", "cells.fate.divisional_asymmetry")
K_PUSH = _par("K_PUSH", "cells.fate.crowding", is_push)
K_DEATH = _par("K_DEATH", "cells.death.hsc_per_day", per_day, "1/h")
K_DEATH_OPN = _par("K_DEATH_OPN", "cells.death.opn_gain")
K_DEATH_NOSCF = _par("K_DEATH_NOSCF", "cells.death.no_scf_gain")
K_SCF_HALF = _par("K_SCF_HALF", "cells.death.scf_half", unit="field unit")
K_MPP_DEATH = _par("K_MPP_DEATH", "cells.death.mpp_per_day", per_day, "1/h")
K_MPP_EXIT = _par("K_MPP_EXIT", "cells.death.mpp_exit_per_day", per_day, "1/h")
K_DEMAND = _par("K_DEMAND", "step.demand")
K_BLOCK = _par("K_BLOCK", "modifiers.cxcr4_blockade")
K_PROT = _par("K_PROT", "modifiers.protease", unit="1/min")
K_CYTO = _par("K_CYTO", "modifiers.cytotoxic", unit="1/h")
K_DT = _par("K_DT", "model.dt_hours", unit="h")
K_REACH = _par("K_REACH", "model.reach_voxels", unit="voxel")
K_BIND_HALF = _par("K_BIND_HALF", "cells.adhesion.binding_half")
K_BIND_HILL = _par("K_BIND_HILL", "cells.adhesion.binding_hill")
K_W_ENDO = _par("K_W_ENDO", "cells.adhesion.w_endosteal")
K_OFF_ANG1 = _par("K_OFF_ANG1", "cells.adhesion.ang1_retention")

#: the parameter table, in index order
PARAMS: tuple[ParamSpec, ...] = tuple(_ROWS)
#: length of the parameter vector
N_PAR = len(PARAMS)

# a row whose name does not match the constant it is assigned to would give a kernel the
# wrong entry: refuse to import rather than compute with it
for _i, _spec in enumerate(PARAMS):
    if globals().get(_spec.name) != _i:
        raise RuntimeError(f"parameter row {_i} is named {_spec.name}, which is not its constant")
del _i, _spec


def param_index(name: str) -> int:
    """Index of a parameter by its constant name (``"K_KD"``) or its source
    (``"cells.motility.cxcr4_kd_nM"``).

    Raises
    ------
    ValueError
        If no row has that name or source.
    """
    for i, spec in enumerate(PARAMS):
        if name in (spec.name, spec.source):
            return i
    raise ValueError(f"unknown kernel parameter {name!r}")


def _config_value(config: CellsConfig, path: str) -> Any:
    obj: Any = config
    for part in path.split(".")[1:]:  # drop the leading "cells"
        obj = getattr(obj, part)
    return obj


def pack(config: CellsConfig, model: Mapping[str, float]) -> np.ndarray:
    """The base parameter vector (float64, length :data:`N_PAR`) in kernel units.

    Parameters
    ----------
    config
        The ``[cells]`` section.
    model
        Values of the ``model.<name>`` sources, keyed by ``<name>`` (``p_hop``,
        ``p_hop_mpp``, ``dt_hours``, ``reach_voxels``).

    Returns
    -------
    numpy.ndarray
        Entries from the config and the model; ``step.*`` and ``modifiers.*`` entries
        are 0 (the step sets them).

    Raises
    ------
    ValueError
        If a ``model.<name>`` value is missing.
    """
    p = np.zeros(N_PAR, dtype=np.float64)
    for i, spec in enumerate(PARAMS):
        if spec.runtime:
            continue
        if spec.kind == "model":
            key = spec.source.split(".", 1)[1]
            if key not in model:
                raise ValueError(f"pack() needs the model value {key!r} for {spec.name}")
            p[i] = spec.convert(model[key])
        else:
            p[i] = spec.convert(_config_value(config, spec.source))
    return p
