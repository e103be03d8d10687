"""niche3d: a 3D simulator of the bone-marrow haematopoietic stem-cell niche.

The public namespace is small and loads lazily (importing numba kernels, zarr and dask
takes seconds, which a CLI ``--help`` should not pay):

>>> import niche3d
>>> sc = niche3d.Scenario.default()
>>> sc.domain.voxel_um
8.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from niche3d._lazy import lazy_exports
from niche3d._version import __version__

__all__ = [
    "__version__",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "Simulation",
    "open_run",
    "Run",
    "StoreError",
    "Lattice",
    "Tissue",
    "sweep",
    "open_sweep",
    "sensitivity",
]

_LAZY = {
    "Scenario": "niche3d.scenario",
    "ScenarioError": "niche3d.scenario",
    "load_scenario": "niche3d.scenario",
    "Simulation": "niche3d.simulation",
    "open_run": "niche3d.io",
    "Run": "niche3d.io",
    "StoreError": "niche3d.io",
    "Lattice": "niche3d.tissue.lattice",
    "Tissue": "niche3d.tissue.codes",
    "sweep": "niche3d.ensemble.engine",
    "open_sweep": "niche3d.ensemble.results",
    "sensitivity": "niche3d.ensemble.gsa",
}

if TYPE_CHECKING:  # pragma: no cover
    from niche3d.ensemble.engine import sweep
    from niche3d.ensemble.gsa import sensitivity
    from niche3d.ensemble.results import open_sweep
    from niche3d.io import Run, StoreError, open_run
    from niche3d.scenario import Scenario, ScenarioError, load_scenario
    from niche3d.simulation import Simulation
    from niche3d.tissue.codes import Tissue
    from niche3d.tissue.lattice import Lattice


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
