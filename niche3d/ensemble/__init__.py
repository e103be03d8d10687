"""Ensembles: sweeps, replicates and sensitivity analyses on dask.distributed.

>>> import niche3d
>>> sw = niche3d.sweep("scenarios/homeostasis.toml", {"cells.speed_um_min": [0.5, 1, 2]},
...                    replicates=5, out="sweeps/speed")                 # doctest: +SKIP
>>> sw.progress()                                                        # doctest: +SKIP
>>> niche3d.open_sweep("sweeps/speed").table(aggregate=True)            # doctest: +SKIP

See docs/ensembles.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from niche3d._lazy import lazy_exports

__all__ = ["Design", "Range", "Sweep", "SweepError", "SweepResults", "SensitivityResult",
           "open_sweep", "sensitivity", "sweep"]

_LAZY = {
    "Design": "niche3d.ensemble.design",
    "Range": "niche3d.ensemble.design",
    "Sweep": "niche3d.ensemble.engine",
    "sweep": "niche3d.ensemble.engine",
    "SweepError": "niche3d.ensemble.results",
    "SweepResults": "niche3d.ensemble.results",
    "open_sweep": "niche3d.ensemble.results",
    "SensitivityResult": "niche3d.ensemble.gsa",
    "sensitivity": "niche3d.ensemble.gsa",
}

if TYPE_CHECKING:  # pragma: no cover
    from niche3d.ensemble.design import Design, Range
    from niche3d.ensemble.engine import Sweep, sweep
    from niche3d.ensemble.gsa import SensitivityResult, sensitivity
    from niche3d.ensemble.results import SweepError, SweepResults, open_sweep

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
