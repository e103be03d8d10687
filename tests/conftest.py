"""Shared fixtures: tiny scenarios and one cached small run store per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Every numba kernel of the suite runs with bounds checking (niche3d._jit reads
# NICHE3D_BOUNDSCHECK when a kernel is decorated). numba's on-disk cache is keyed by source
# and signature, not by the boundscheck flag, so the suite compiles into a cache of its own:
# a kernel cached by a normal run can never stand in for a checked one, nor the reverse.
# This is done at conftest import, not in a fixture, before niche3d is imported;
# subprocesses started by tests inherit the variables.
# The cache directory is named after the flag in force, so a run with
# NICHE3D_BOUNDSCHECK=0 cannot fill the checked cache with unchecked kernels.
_CHECKED = os.environ.setdefault("NICHE3D_BOUNDSCHECK", "1")
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(REPO / ".pytest_cache" / f"numba-boundscheck-{_CHECKED}")
)
# generated lattices are cached on disk (niche3d.tissue.cache); the suite keeps its own
# cache beside the numba one, never the user's ~/.cache
os.environ.setdefault("NICHE3D_CACHE_DIR", str(REPO / ".pytest_cache" / "niche3d-cache"))
if "numba" in sys.modules:
    # a pytest plugin (napari's) imports numba before this file runs, so numba has read
    # its configuration already; niche3d's kernels are decorated later, at its import,
    # and choose their cache directory then, from numba.config
    import numba

    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

# No Qt platform is forced here: pytest-xvfb gives the session a display, and the
# plugin's tests choose offscreen themselves only when no display can exist.

#: a scenario small enough for a test: 20 x 32 x 32 voxels, 2 simulated days
TINY = {
    "domain.shape": [20, 32, 32],
    "run.days": 2.0,
    "output.interval_hours": 12.0,
    "cells.hsc_per_mm3": 20000.0,
}


@pytest.fixture(scope="session")
def tiny_scenario():
    from niche3d.scenario import Scenario

    return Scenario.default().with_overrides(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_scenario) -> Path:
    """A real 2-day run store, written once per session by the real Simulation."""
    from niche3d.simulation import Simulation

    out = tmp_path_factory.mktemp("runs") / "tiny.zarr"
    Simulation(tiny_scenario, out).run()
    return out
