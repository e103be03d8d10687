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

from niche3d._lazy import lazy_exports

# Lazy: the scenario schema imports niche3d.cells.config without loading numba.
_EXPORTS = {
    "CellModel": "niche3d.cells.model",
    "CellsConfig": "niche3d.cells.config",
    "Signals": "niche3d.cells.signals",
    "Modifiers": "niche3d.cells.signals",
    "STATE_NAMES": "niche3d.cells.codes",
    "EVENT_NAMES": "niche3d.cells.codes",
    "state_code": "niche3d.cells.codes",
    "LINEAGES": "niche3d.cells.lineage",
    "hash64": "niche3d.cells.rng",
    "uniform": "niche3d.cells.rng",
    "uniform_array": "niche3d.cells.rng",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
