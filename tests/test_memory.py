"""Memory stays flat over a long run: 365 records on a small lattice, the resident set
after the last within 10 % of what it was after the first 65 (the warm-up)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

pytestmark = pytest.mark.slow


def _rss_mb() -> float:
    """Current resident set (not the peak), from Linux's /proc (niche3d's platform: its
    CI and install script are Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_is_flat_over_365_records(tmp_path: Path) -> None:
    sc = Scenario.default().with_overrides({"domain.shape": [16, 24, 24], "run.days": 365 / 24,
                                            "output.interval_hours": 1.0})
    with Simulation(sc, out=tmp_path / "run.zarr") as sim:
        sim.run(64 / 24)
        gc.collect()
        after_warm_up = _rss_mb()
        sim.run(300 / 24)
        gc.collect()
        at_end = _rss_mb()
        assert sim.records_written == 365
    assert at_end <= 1.10 * after_warm_up, (after_warm_up, at_end)
