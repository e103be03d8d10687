"""The living world: HSC population, states and rules as numba kernels, blood pool,
downstream lineage compartments, counter-based random numbers.

See docs/cells.md for every rule, parameter and unit.
"""

from niche3d.cells.config import CellsConfig
from niche3d.cells.model import (
    EVENT_NAMES,
    LINEAGES,
    STATE_NAMES,
    CellModel,
    Modifiers,
    Signals,
    state_code,
)
from niche3d.cells.rng import hash64, uniform, uniform_array

__all__ = [
    "CellModel",
    "CellsConfig",
    "Signals",
    "Modifiers",
    "STATE_NAMES",
    "EVENT_NAMES",
    "LINEAGES",
    "state_code",
    "hash64",
    "uniform",
    "uniform_array",
]
