"""A run killed at any moment resumes to the store an uninterrupted run writes.

A child process runs a small scenario and SIGKILLs itself at a chosen moment: half-way
through its N-th atomic file write (record shards, table rows, commits, the checkpoint
right after set-up and the later ones), or during set-up (before the store exists).
The parent then resumes the store (``Simulation.resume``, or a plain rerun when no store
was made), runs it to the end and compares every array and table with a store written
without interruption: fields, tissue and niche-site labels of every record, the cell,
event and metric tables, and the final checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from niche3d.io import open_run, read_checkpoint
from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

pytestmark = pytest.mark.slow

OVERRIDES = {"domain.shape": [16, 24, 24], "run.days": 1.0, "output.interval_hours": 3.0,
             "output.checkpoint_every_records": 3, "output.fields_every_records": 2}

CHILD = textwrap.dedent(
    """
    import os, signal, sys, json
    from pathlib import Path
    import niche3d.io._atomic as atomic
    import niche3d.simulation as S
    from niche3d.scenario import Scenario

    path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    over = json.loads(sys.argv[4])
    calls = {"n": 0, "first_checkpoint": -1}
    real = atomic.atomic_write_bytes

    def counted(p, data, *, durable=True):
        calls["n"] += 1
        if calls["first_checkpoint"] < 0 and str(p).endswith("state.npz"):
            calls["first_checkpoint"] = calls["n"]
        if mode == "write" and calls["n"] == n:  # die half-way through this write
            mv = memoryview(data).cast("B")
            tmp = Path(p).parent / ("." + Path(p).name + ".dying" + atomic.TEMP_SUFFIX)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(mv[: len(mv) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(p, data, durable=durable)

    atomic.atomic_write_bytes = counted
    if mode == "setup":  # die in the middle of set-up, before the store exists
        real_solve = S.FieldSet.solve

        def dying_solve(self, *a, **k):
            os.kill(os.getpid(), signal.SIGKILL)

        S.FieldSet.solve = dying_solve
    sim = S.Simulation(Scenario.default().with_overrides(over), out=path)
    sim.run()
    sim.close()
    print(json.dumps(calls), flush=True)
    """
)


def _child(path: Path, mode: str, n: int = 0) -> subprocess.CompletedProcess:
    import json

    return subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(n),
                           json.dumps(OVERRIDES)], capture_output=True, text=True, timeout=600)


def _compare(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    ra, rb = open_run(a), open_run(b)
    assert ra.n_records == rb.n_records == 9
    n = ra.n_records
    for key in ("s0", "labels/tissue/s0", "labels/niche/s0"):
        np.testing.assert_array_equal(ga[key][:n], gb[key][:n], err_msg=key)
    for table in ("cells", "events", "metrics"):
        pd.testing.assert_frame_equal(getattr(ra, table), getattr(rb, table), obj=table)
    sa, ma = read_checkpoint(a)
    sb, mb = read_checkpoint(b)
    assert sa.keys() == sb.keys() and ma == mb
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The uninterrupted store, written by a child like the killed ones, and its count of
    atomic writes (and the index of the first checkpoint write)."""
    import json

    path = tmp_path_factory.mktemp("ref") / "run.zarr"
    r = _child(path, "count")
    assert r.returncode == 0, r.stderr
    return path, json.loads(r.stdout.strip().splitlines()[-1])


def _kill_points(calls: dict) -> list[int]:
    """Ten moments: inside the first checkpoint's write (right after set-up), the write
    before and after it, and seven seeded random writes of the rest."""
    first, total = calls["first_checkpoint"], calls["n"]
    assert 1 < first < total
    rng = np.random.default_rng(16)
    rest = sorted(set(range(1, total + 1)) - {first - 1, first, first + 1})
    return [first - 1, first, first + 1, *sorted(rng.choice(rest, 7, replace=False).tolist())]


def test_ten_kills_resume_to_the_uninterrupted_store(tmp_path: Path,
                                                     reference: tuple[Path, dict]) -> None:
    ref, calls = reference
    points = _kill_points(calls)
    assert len(points) == 10
    for n in points:
        path = tmp_path / f"killed-{n}.zarr"
        r = _child(path, "write", n)
        assert r.returncode == -9, (n, r.returncode, r.stderr[-2000:])
        if not (path / "zarr.json").exists() or open_run_fails(path):
            # killed while the store was being created: nothing to resume, a rerun
            # replaces the partial store
            Simulation(Scenario.default().with_overrides(OVERRIDES), out=path,
                       overwrite=True).run().close()
        else:
            sim = Simulation.resume(path)
            left = sim.scenario.run.days - sim.t_days
            if left > 1e-9:
                sim.run(left)
            sim.close()
        _compare(path, ref)


def open_run_fails(path: Path) -> bool:
    try:
        open_run(path)
    except Exception:  # noqa: BLE001 - a store killed during its creation
        return True
    return False


def test_a_kill_during_set_up_leaves_nothing_to_lose(tmp_path: Path,
                                                     reference: tuple[Path, dict]) -> None:
    ref, _ = reference
    path = tmp_path / "setup.zarr"
    r = _child(path, "setup")
    assert r.returncode == -9
    assert not path.exists()  # the store is made after set-up
    r = _child(path, "count")  # the same command again: no stale lock, same store
    assert r.returncode == 0, r.stderr
    _compare(path, ref)
