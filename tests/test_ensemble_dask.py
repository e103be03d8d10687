"""Sweeps on real Dask clusters: a LocalCluster, and ``dask scheduler`` + ``dask worker``
processes on loopback reached through ``--scheduler``; failures, a killed worker,
re-running, Ctrl-C, and a sensitivity analysis end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from niche3d.ensemble.task import run_task

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_SET = ["--set", "domain.shape=[20,32,32]", "--set", "cells.hsc_per_mm3=20000",
            "--set", "output.interval_hours=12"]


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` every 0.1 s until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        tick.wait(0.1)


def _readouts(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(("final.", "mean."))}


def _direct(scenario_toml: str, tmp: Path, name: str) -> dict:
    """The same run done in this process, one after another (the reference)."""
    from niche3d.scenario import Scenario

    sc = Scenario.from_toml_text(scenario_toml)
    return run_task({"run_id": name, "store": str(tmp / f"{name}.zarr"),
                     "scenario": scenario_toml, "days": sc.run.days})


def _run_scenario(res, run_id: str) -> str:
    return res.open_run(run_id).scenario.to_toml()


# ---------------------------------------------------------------------- LocalCluster
def test_a_local_sweep_equals_its_runs_done_one_by_one_and_survives_a_failing_run(
        tmp_path, tiny_scenario):
    import niche3d

    out = tmp_path / "sweep"
    # run.max_cells = 1 stops those runs with a diagnostic: they fail, the others go on
    sw = niche3d.sweep(tiny_scenario, {"run.max_cells": [1, 5_000_000]}, replicates=2,
                       out=out, workers=2, dashboard=False)
    assert sw.wait(300)
    p = sw.progress()
    assert (p["done"], p["failed"], p["running"], p["pending"], p["total"]) == (2, 2, 0, 0, 4)
    res = sw.results()
    idx = res.index.set_index("run_id")
    assert list(idx["status"]) == ["failed", "failed", "done", "done"]
    assert idx.loc["p0-r0", "error"].startswith("run stopped")
    assert "SimulationError" in idx.loc["p0-r0", "traceback"]
    # replicate r has the same seed at both points; the seeds are recorded in each store
    assert idx.loc["p0-r1", "seed"] == idx.loc["p1-r1", "seed"] != idx.loc["p1-r0", "seed"]
    assert res.open_run("p1-r1").seed == idx.loc["p1-r1", "seed"]
    for rid in ("p1-r0", "p1-r1"):
        ref = _direct(_run_scenario(res, rid), tmp_path, rid)
        got = {k: v for k, v in idx.loc[rid].items() if k.startswith(("final.", "mean."))}
        assert got == pytest.approx(_readouts(ref), nan_ok=True)
    # the same sweep again: nothing to run, the index is unchanged
    again = niche3d.sweep(tiny_scenario, {"run.max_cells": [1, 5_000_000]}, replicates=2,
                          out=out, workers=2, dashboard=False)
    assert again.n_to_run == 0 and again.done()
    pd.testing.assert_frame_equal(niche3d.open_sweep(out).index, res.index)
    # another sweep into the same directory is refused before anything runs
    from niche3d.ensemble import SweepError

    with pytest.raises(SweepError, match="holds another sweep"):
        niche3d.sweep(tiny_scenario, {"run.max_cells": [1, 5_000_000]}, replicates=3, out=out)


# ---------------------------------------------------------------------- external scheduler
@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real ``dask scheduler`` and two ``dask worker`` processes on loopback."""
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    env = {**os.environ, "NICHE3D_SWEEP_THREADS": "1"}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _until(sched_file.exists, 60, "the scheduler file")
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(d)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_cli_runs_a_sweep_through_an_existing_scheduler(tmp_path, dask_cluster):
    out = tmp_path / "sweep"
    cmd = [str(BIN / "niche3d"), "sweep", "scenarios/homeostasis.toml", *TINY_SET, "--days", "1",
           "--vary", "cells.speed_um_min=0.5,2", "--replicates", "2", "--seed", "5",
           "--out", str(out), "--scheduler", dask_cluster, "-q"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "done 4" in r.stdout
    idx = pd.read_parquet(out / "index.parquet")  # plain Parquet: no niche3d needed
    assert list(idx["status"]) == ["done"] * 4
    assert set(idx["param.cells.speed_um_min"]) == {0.5, 2.0}
    assert idx["worker"].nunique() == 2  # both workers took runs
    assert (out / "report.png").stat().st_size > 10_000
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["design"]["seed"] == 5 and manifest["design"]["replicates"] == 2


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_retried_elsewhere_and_resumes_bit_for_bit(
        tmp_path, dask_cluster):
    from distributed import Client

    import niche3d

    # the default block for 150 days: ~10-20 s, checkpointed every 10 days
    sc = niche3d.Scenario.default().with_overrides({"run.days": 150.0})
    with Client(dask_cluster) as client:
        sw = niche3d.sweep(sc, {"cells.speed_um_min": [1.0]}, out=tmp_path / "sweep",
                           client=client)
        _until(lambda: any(r["fraction"] > 0.3 for r in sw.running().values()) or sw.done(),
               300, "the run to pass 30 %")
        assert not sw.done()
        victim = sw.running()["p0-r0"]
        os.kill(victim["pid"], signal.SIGKILL)
        assert sw.wait(600)
        res = sw.results()
    row = res.index.iloc[0].to_dict()
    assert row["status"] == "done", row["error"]
    assert row["resumed_from_day"] >= 30.0  # from a checkpoint, not from the start
    assert row["worker"] != victim["worker"]
    ref = _direct(res.open_run("p0-r0").scenario.to_toml(), tmp_path, "ref")
    assert _readouts(row) == pytest.approx(_readouts(ref), nan_ok=True)


@pytest.mark.slow
def test_ctrl_c_cancels_cleanly_and_the_same_command_finishes_the_sweep(tmp_path, tiny_scenario):
    out = tmp_path / "sweep"
    cmd = [str(BIN / "niche3d"), "sweep", "scenarios/homeostasis.toml", "--days", "30",
           "--vary", "cells.speed_um_min=0.5,1,2,3", "--out", str(out), "--workers", "2", "-q"]
    # a terminal's Ctrl-C: SIGINT to the whole process group, workers included
    p = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: sum((s / "zarr.json").exists() for s in (out / "runs").glob("*.zarr")) >= 2,
               300, "two runs to start")
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "Run the same command again" in err
    assert "KeyboardInterrupt" not in err  # no worker died of it
    idx = pd.read_parquet(out / "index.parquet").set_index("run_id")
    assert set(idx["status"]) <= {"done", "interrupted", "pending"}
    assert (idx["status"] == "interrupted").sum() >= 1
    from niche3d.io import open_run

    for rid in idx.index[idx["status"] == "done"]:
        assert open_run(out / "runs" / f"{rid}.zarr").times_h[-1] == 30 * 24
    interrupted = list(idx.index[idx["status"] == "interrupted"])
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    after = pd.read_parquet(out / "index.parquet").set_index("run_id")
    assert set(after["status"]) == {"done"}
    for rid in interrupted:
        assert after.loc[rid, "resumed_from_day"] > 0
    rid = interrupted[0]
    ref = _direct(open_run(out / "runs" / f"{rid}.zarr").scenario.to_toml(), tmp_path, "ref")
    assert _readouts(after.loc[rid].to_dict()) == pytest.approx(_readouts(ref), nan_ok=True)


# ---------------------------------------------------------------------- sensitivity
def test_sensitivity_end_to_end_finds_a_downstream_parameter_has_no_effect(tmp_path):
    out = tmp_path / "sens"
    cmd = [str(BIN / "niche3d"), "sensitivity", "scenarios/homeostasis.toml", *TINY_SET,
           "--days", "2", "--param", "cells.cycle.g0_exit_per_day=0.05:0.3",
           "--param", "cells.lineage.clp_amplification=16:64:log", "--method", "morris",
           "--n", "3", "--readouts", "hsc_total,frac_sg2m", "--out", str(out),
           "--workers", "2", "-q"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ind = pd.read_parquet(out / "sensitivity.parquet")
    mu = ind[ind["index"] == "mu_star"].set_index(["readout", "param"])["value"]
    # lymphoid output lies downstream of the HSCs: with common seeds their trajectories
    # are identical whatever its amplification, so its effect is exactly zero
    assert mu[("hsc_total", "cells.lineage.clp_amplification")] == 0.0
    assert mu[("frac_sg2m", "cells.lineage.clp_amplification")] == 0.0
    assert mu[("frac_sg2m", "cells.cycle.g0_exit_per_day")] > 0.0
    assert ind.loc[ind["index"] == "mu_star", "conf"].notna().all()
    assert len(pd.read_parquet(out / "index.parquet")) == 3 * (2 + 1)
    assert (out / "sensitivity.png").stat().st_size > 10_000
    from niche3d.ensemble import SensitivityResult

    again = SensitivityResult.load(out)  # recomputed from the stored runs: the same indices
    pd.testing.assert_frame_equal(again.indices, ind)
    assert list(again.ranking("frac_sg2m")["param"]) == ["cells.cycle.g0_exit_per_day",
                                                          "cells.lineage.clp_amplification"]
