"""Simulation: the Python API, continuation, resume and determinism of whole runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY


def _tables_equal(a, b) -> None:
    for name in ("cells", "events", "metrics"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    for f in a.fields.data_vars:
        np.testing.assert_array_equal(a.fields[f].values, b.fields[f].values)


def test_store_records_scenario_seed_version(tiny_run: Path, tiny_scenario) -> None:
    from niche3d._version import code_version
    from niche3d.io import open_run

    run = open_run(tiny_run)
    assert run.scenario == tiny_scenario
    assert run.seed == tiny_scenario.run.seed
    assert run.code_version == code_version()
    assert run.voxel_um == tiny_scenario.domain.voxel_um
    assert run.n_records == 5  # 0, 12, 24, 36, 48 h
    np.testing.assert_allclose(run.times_h, [0, 12, 24, 36, 48])
    assert run.fields["cxcl12"].shape == (5, 20, 32, 32)
    # cells are on enterable voxels (marrow or stroma) at every record
    cells = run.cells[run.cells.z.notna()]
    assert len(cells) > 0
    vz = np.round(cells[["z", "y", "x"]].to_numpy() / run.voxel_um - 0.5).astype(int)
    lab = run.tissue.isel(t=0).values[vz[:, 0], vz[:, 1], vz[:, 2]]
    assert set(np.unique(lab)) <= {1, 8}


def test_step_run_continue_same_as_one_run(tmp_path: Path, tiny_scenario) -> None:
    """run(1 day) + run(1 day) into one store equals run(2 days), and the store grows."""
    from niche3d.io import open_run
    from niche3d.simulation import Simulation

    a = Simulation(tiny_scenario, tmp_path / "a.zarr").run(days=2.0)
    b = Simulation(tiny_scenario, tmp_path / "b.zarr")
    b.run(days=1.0)
    assert open_run(tmp_path / "b.zarr").n_records == 3
    b.step(12)
    b.run(days=0.5)
    assert b.t_hours == a.t_hours == 48.0
    _tables_equal(open_run(tmp_path / "a.zarr"), open_run(tmp_path / "b.zarr"))
    for k in ("track_id", "state", "z", "y", "x"):
        np.testing.assert_array_equal(a.snapshot()[k], b.snapshot()[k])


def test_step_past_the_scenario_length_grows_the_store(tmp_path: Path, tiny_scenario) -> None:
    """step() continues a run past run.days as run() does (the store's time axis grows)."""
    from niche3d.io import open_run
    from niche3d.simulation import Simulation

    a = Simulation(tiny_scenario, tmp_path / "a.zarr").run(days=2.5)
    b = Simulation(tiny_scenario, tmp_path / "b.zarr").run()  # run.days = 2
    b.step(12)
    assert b.t_hours == a.t_hours == 60.0
    assert open_run(tmp_path / "b.zarr").n_records == 6
    _tables_equal(open_run(tmp_path / "a.zarr"), open_run(tmp_path / "b.zarr"))
    with pytest.raises(ValueError, match="n must be a whole number >= 0, got 1.5"):
        b.step(1.5)  # type: ignore[arg-type]


def test_in_memory_simulation_needs_no_store(tiny_scenario) -> None:
    from niche3d.simulation import Simulation

    sim = Simulation(tiny_scenario)
    sim.step(3)
    assert sim.t_hours == 3.0
    m = sim.metrics()
    assert m["cxcl12_mean"] > 0
    with pytest.raises(RuntimeError, match="no run store"):
        sim.checkpoint()
    with pytest.raises(ValueError, match="days must be a positive number"):
        sim.run(days=-1)
    with pytest.raises(ValueError, match="not a whole number"):
        sim.run(days=0.01)


def test_resume_after_checkpoint_is_bit_identical(tmp_path: Path, tiny_scenario) -> None:
    from niche3d.io import open_run
    from niche3d.simulation import Simulation

    sc = tiny_scenario.with_overrides({"output.checkpoint_every_records": 2, "output.interval_hours": 6.0})
    full = Simulation(sc, tmp_path / "full.zarr").run(days=2.0)
    part = Simulation(sc, tmp_path / "part.zarr")
    # records at 0, 6, 12, 18, 24 h; checkpoints after the 2nd and 4th record (t = 6, 18 h),
    # so resuming drops the record at 24 h and its events, and recomputes them.
    part.run(days=1.0)
    del part
    assert open_run(tmp_path / "part.zarr").n_records == 5
    resumed = Simulation.resume(tmp_path / "part.zarr")
    assert resumed.t_hours == 18.0
    resumed.run(days=2.0 - resumed.t_days)
    assert resumed.t_hours == full.t_hours
    _tables_equal(open_run(tmp_path / "full.zarr"), open_run(tmp_path / "part.zarr"))


def test_output_settings_do_not_change_results(tmp_path: Path, tiny_scenario) -> None:
    """Checkpoint cadence, stored fields (none, every third record, bit-rounded) or no
    store at all: the same cells and metrics."""
    from numcodecs import BitRound

    from niche3d.io import open_run
    from niche3d.simulation import Simulation

    sc = tiny_scenario.with_overrides({"output.interval_hours": 6.0})
    runs = {}
    for label, over in (("every record", {"output.checkpoint_every_records": 1}),
                        ("never", {"output.checkpoint_every_records": 1000}),
                        ("no fields", {"output.checkpoint_every_records": 3, "output.fields": False}),
                        ("sparse lossy fields", {"output.fields_every_records": 3,
                                                 "output.field_keepbits": 8})):
        sim = Simulation(sc.with_overrides(over), tmp_path / f"{len(runs)}.zarr").run()
        runs[label] = (open_run(sim.out), sim.snapshot())
    memory = Simulation(sc).run().snapshot()
    ref, ref_snap = runs["every record"]
    for label, (run, snap) in runs.items():
        for name in ("cells", "events", "metrics"):
            pd.testing.assert_frame_equal(getattr(run, name), getattr(ref, name), obj=f"{label} {name}")
        for key in ref_snap:
            np.testing.assert_array_equal(snap[key], ref_snap[key], err_msg=f"{label} {key}")
    for key in ref_snap:
        np.testing.assert_array_equal(memory[key], ref_snap[key], err_msg=f"in memory {key}")
    _tables_equal(runs["never"][0], ref)
    # fields at records 0, 3, 6 (bit-rounded to 8 mantissa bits), NaN at the others
    sparse = runs["sparse lossy fields"][0]
    assert sparse.attrs["field_keepbits"] == 8
    for name in ref.fields.data_vars:
        exact = ref.fields[name].values
        got = sparse.fields[name].values
        for i in range(ref.n_records):
            if i % 3 == 0:
                want = BitRound(8).encode(exact[i]).view(np.float32).reshape(exact[i].shape)
                np.testing.assert_array_equal(got[i], want, err_msg=f"{name} record {i}")
                finite = np.isfinite(exact[i]) & (exact[i] != 0)
                rel = np.abs(got[i][finite] - exact[i][finite]) / np.abs(exact[i][finite])
                assert rel.max() <= 2.0**-9
            else:
                assert np.isnan(got[i]).all(), f"{name} record {i} should not be recorded"


@pytest.mark.slow
def test_thread_count_does_not_change_the_store(tmp_path: Path) -> None:
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.zarr"
        env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_NUM_THREADS=str(threads))
        args = [sys.executable, "-m", "niche3d.cli", "run", str(REPO / "scenarios/homeostasis.toml"),
                "-o", str(out), "-q", *[f"--set={k}={v}" for k, v in TINY.items()]]
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    from niche3d.io import open_run

    _tables_equal(open_run(outs[0]), open_run(outs[1]))
