"""Sample data: a small synthetic run, simulated when the user asks for it."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from napari_niche3d._reader import LayerDataTuple, read_run

__all__ = ["SAMPLE_OVERRIDES", "make_sample_run", "sample_run"]

#: the sample scenario: built-in defaults on a small lattice, 2 days recorded every 6 h,
#: with a denser HSC population so a slice shows a few dozen cells; a throw-away run is
#: never resumed, so it writes no checkpoints.
SAMPLE_OVERRIDES: dict[str, Any] = {
    "name": "sample",
    "domain.shape": [24, 48, 48],
    "domain.voxel_um": 8.0,
    "run.days": 2.0,
    "run.seed": 7,
    "output.interval_hours": 6.0,
    "cells.hsc_per_mm3": 20000.0,
    "output.checkpoint_every_records": 100000,
}


def make_sample_run(path: str | Path, *, overwrite: bool = False, **overrides: Any) -> Path:
    """Simulate the sample scenario into a run store at ``path``.

    Parameters
    ----------
    path
        Where to write the store.
    overwrite
        Replace an existing run store at ``path``.
    **overrides
        Scenario overrides on top of :data:`SAMPLE_OVERRIDES`, keys as dotted paths with
        ``__`` for dots (``run__days=1``).

    Returns
    -------
    pathlib.Path
        The store path.

    Raises
    ------
    niche3d.scenario.ScenarioError
        If an override is invalid.
    """
    from niche3d.scenario import Scenario
    from niche3d.simulation import Simulation

    over = dict(SAMPLE_OVERRIDES)
    over.update({k.replace("__", "."): v for k, v in overrides.items()})
    sc = Scenario.default().with_overrides(over)
    with Simulation(sc, out=path, overwrite=overwrite) as sim:
        sim.run(sc.run.days)
    return Path(path)


def sample_run() -> list[LayerDataTuple]:
    """npe2 sample-data command: simulate the sample run into a temporary store and read it.

    The store lives in a temporary folder removed when the Python process exits (the
    layers read it lazily until then).

    Returns
    -------
    list of LayerDataTuple
    """
    tmp = Path(tempfile.mkdtemp(prefix="niche3d-sample-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    store = make_sample_run(tmp / "sample.zarr")
    return read_run(str(store))
