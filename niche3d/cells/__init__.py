"""The living world: HSC population, states and rules as numba kernels, blood pool,
downstream lineage compartments, counter-based random numbers.

Modules: :mod:`~niche3d.cells.model` (``CellModel``: one step of the automaton),
:mod:`~niche3d.cells.population` (struct of arrays, occupancy grid, event log),
:mod:`~niche3d.cells.lineage` (MPP/CMP/CLP compartments), :mod:`~niche3d.cells.codes`
(state, event and action codes with their names), :mod:`~niche3d.cells.params` (the
kernel parameter table), :mod:`~niche3d.cells.signals` (``Signals``, ``Modifiers``),
``_kernels`` (the numba rules) and :mod:`~niche3d.cells.rng`.

See docs/cells.md for every rule, parameter and unit.
"""

from niche3d.cells.codes import EVENT_NAMES, STATE_NAMES, state_code
from niche3d.cells.config import CellsConfig
from niche3d.cells.lineage import LINEAGES
from niche3d.cells.model import CellModel
from niche3d.cells.rng import hash64, uniform, uniform_array
from niche3d.cells.signals import Modifiers, Signals

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
