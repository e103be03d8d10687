"""Runtime guards: a NaN, inf or negative field, a runaway population or a cell in bone
stop the run with a diagnostic (what, where, when) in its store, every earlier record
kept, and a one-line CLI error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from niche3d.errors import SimulationError
from niche3d.guards import check_cells, field_health
from niche3d.io import open_run
from niche3d.scenario import Scenario
from niche3d.simulation import Simulation
from niche3d.tissue import Tissue

SMALL = {"domain.shape": [16, 24, 24], "run.days": 2.0, "output.interval_hours": 6.0}
REPO = Path(__file__).resolve().parents[1]


def _sim(tmp_path: Path, **over: object) -> Simulation:
    return Simulation(Scenario.default().with_overrides({**SMALL, **over}), out=tmp_path / "run.zarr")


def test_field_health_sees_nan_and_inf_where_they_are() -> None:
    a = np.linspace(0.5, 2.0, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    assert field_health(a) == (0.5, 2.0, 0, None)
    a[2, 3, 4] = np.nan
    a[3, 0, 0] = np.inf
    lo, hi, bad, where = field_health(a)
    assert (bad, where) == (2, (2, 3, 4))
    assert lo == pytest.approx(0.5) and hi == pytest.approx(2.0)
    with pytest.raises(ValueError, match="3D"):
        field_health(np.zeros(3))


@pytest.mark.parametrize(("value", "what"), [(np.nan, "NaN or infinite"), (-1.0, "negative")])
def test_a_bad_field_stops_the_run_with_its_voxel(tmp_path: Path, value: float, what: str) -> None:
    sim = _sim(tmp_path)
    sim.run(0.5)
    written = sim.records_written
    real = sim.fields.solve

    def broken(*a, **k):  # type: ignore[no-untyped-def]
        rep = real(*a, **k)
        sim.fields["cxcl12"][3, 4, 5] = value
        for name in rep.skipped:  # make sure the checked solve ran
            rep.skipped[name] = False
        return rep

    sim.fields.solve = broken  # type: ignore[method-assign]
    with pytest.raises(SimulationError, match=rf"{what}.*\(3, 4, 5\)") as err:
        sim.run(1.0)
    assert err.value.diagnostic["field"] == "cxcl12"
    sim.close()
    run = open_run(tmp_path / "run.zarr")
    assert run.n_records == written  # every record before is kept, nothing after
    f = run.failure
    assert f is not None and f["where"] == [3, 4, 5] and what in f["what"]
    assert f["day"] == pytest.approx(f["t_hours"] / 24.0) and f["t_hours"] >= 12.0


def test_a_runaway_population_stops_at_its_bound(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match="more than run.max_cells = 5"):
        _sim(tmp_path, **{"run.max_cells": 5, "cells.hsc_per_mm3": 200000}).run()
    f = open_run(tmp_path / "run.zarr").failure
    assert f is not None and f["step"] == 0 and f["where"] is None


def test_a_cell_in_bone_stops_the_run(tmp_path: Path) -> None:
    sim = _sim(tmp_path)
    bone = int(np.flatnonzero(sim.lattice.labels.reshape(-1) == Tissue.BONE)[0])
    real = sim.cells.occupied_flat
    sim.cells.occupied_flat = lambda: np.append(real(), bone)  # type: ignore[method-assign]
    with pytest.raises(SimulationError, match="no cell may occupy") as err:
        sim.run(0.5)
    assert err.value.diagnostic["where"] == list(np.unravel_index(bone, sim.lattice.shape))
    sim.close()


def test_check_cells_passes_a_healthy_population() -> None:
    ent = np.ones((2, 3, 4), bool)
    assert check_cells(3, 10, np.array([0, 5, 23]), ent) is None


def test_cli_reports_a_stopped_run_and_info_shows_it(tmp_path: Path) -> None:
    out = tmp_path / "stopped.zarr"
    cli = [sys.executable, "-m", "niche3d.cli"]
    r = subprocess.run([*cli, "run", str(REPO / "scenarios/homeostasis.toml"), "--out", str(out), "-q",
                        "--set=domain.shape=[16,24,24]", "--set=run.max_cells=5",
                        "--set=cells.hsc_per_mm3=200000", "--days", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    assert "run stopped at day 0" in r.stderr and "run.max_cells" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([*cli, "info", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "FAILED" in r.stdout and "run.max_cells" in r.stdout
