"""Crash safety: a run or a checkpoint killed with SIGKILL leaves a readable store.

Child processes write records (or checkpoints) in a loop and report each one on stdout
once the call has returned; the parent kills them with SIGKILL, either after a seeded
random delay or deterministically in the middle of rewriting a shard, then checks that
everything reported is there, exact, and that the run can be resumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from niche3d.io import RunWriter, StoreError, open_run, read_checkpoint

REPO = Path(__file__).resolve().parents[1]

# Shared by the child scripts and the parent's checks: the exact data of record i.
COMMON = textwrap.dedent(
    """
    import numpy as np
    SHAPE = (16, 24, 24)
    N_CELLS = 30

    def fields_of(i):
        z, y, x = np.indices(SHAPE, dtype=np.float32)
        return {"cxcl12": (z + y + x) * 0.5 + i, "scf": (z * x) * 0.25 - i}

    def cells_of(i):
        rng = np.random.default_rng(1000 + i)
        return {
            "track_id": np.arange(N_CELLS, dtype=np.int64) + 100 * i,
            "state": rng.integers(0, 3, N_CELLS).astype(np.int8),
            "z": rng.integers(0, SHAPE[0], N_CELLS).astype(np.int32),
            "y": rng.integers(0, SHAPE[1], N_CELLS).astype(np.int32),
            "x": rng.integers(0, SHAPE[2], N_CELLS).astype(np.int32),
            "bound": rng.random(N_CELLS) < 0.5,
        }

    def events_of(i):
        return {"t_hours": np.array([i + 0.25, i + 0.5]), "kind": np.array([1, 2], dtype=np.int8)}
    """
)

RECORD_CHILD = COMMON + textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario
    import niche3d.io._atomic as atomic

    path, mode, n_total, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if kill_at >= 0:
        # die half-way through writing the kill_at-th field shard (as if SIGKILLed mid-write)
        real = atomic.atomic_write_bytes
        count = {"n": 0}

        def dying(p, data, *, durable=True):
            if "/s0/c/" in str(p) and "labels" not in str(p):
                count["n"] += 1
                if count["n"] == kill_at:
                    mv = memoryview(data).cast("B")
                    tmp = Path(p).parent / ("." + Path(p).name + ".dying" + atomic.TEMP_SUFFIX)
                    tmp.parent.mkdir(parents=True, exist_ok=True)  # a record's own directory
                    with open(tmp, "wb") as f:
                        f.write(mv[: len(mv) // 2])
                        f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(p, data, durable=durable)

        atomic.atomic_write_bytes = dying
    if mode == "create":
        sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
        w = RunWriter.create(
            path, scenario=sc, labels=np.ones(SHAPE, np.uint8), voxel_um=10.0, record_hours=1.0,
            n_records=n_total, fields=[("cxcl12", "nM", (0, 40)), ("scf", "nM", (-40, 40))],
            seed=1, code_version="test", dt_hours=1.0,
        )
        w.set_categories("cells", "state", ["dormant", "active", "mpp"])
        start = 0
    else:
        from niche3d.io import open_run
        w = RunWriter.open_append(path)
        start = w.n_records_written
        if start and len(open_run(path).events) == 2 * (start - 1):
            w.append_events(events_of(start - 1))  # killed between a record and its events
    print("ready", start, flush=True)
    for i in range(start, n_total):
        w.write_record(i, float(i), fields=fields_of(i), labels=None, cells=cells_of(i),
                       metrics={"n_hsc": float(i)})
        w.append_events(events_of(i))
        print("written", i, flush=True)
    print("done", flush=True)
    """
)

CHECKPOINT_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario
    import niche3d.io._atomic as atomic

    path, kill_at = sys.argv[1], int(sys.argv[2])
    SHAPE = (16, 16, 16)
    if kill_at >= 0:
        real = atomic.atomic_write_bytes
        count = {"n": 0}

        def dying(p, data, *, durable=True):
            if str(p).endswith("state.npz"):
                count["n"] += 1
                if count["n"] == kill_at:
                    mv = memoryview(data).cast("B")
                    tmp = Path(p).parent / (".state.npz.dying" + atomic.TEMP_SUFFIX)
                    with open(tmp, "wb") as f:
                        f.write(mv[: len(mv) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(p, data, durable=durable)

        atomic.atomic_write_bytes = dying
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
    w = RunWriter.create(
        path, scenario=sc, labels=np.ones(SHAPE, np.uint8), voxel_um=10.0, record_hours=1.0,
        n_records=1, fields=[], seed=1, code_version="test", dt_hours=1.0,
    )
    for gen in range(200):
        big = np.full(1_000_000, gen, dtype=np.int32)
        w.write_checkpoint({"big": big, "small": np.array([gen, -gen])}, {"gen": gen})
        print("checkpoint", gen, flush=True)
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )


def _reported(lines: list[str], word: str) -> list[int]:
    return [int(ln.split()[1]) for ln in lines if ln.startswith(word + " ")]


def _check_records(path: Path, n_min: int) -> int:
    ns: dict = {}
    exec(COMMON, ns)
    run = open_run(path)
    n = run.n_records
    assert n >= n_min, f"store holds {n} records but {n_min} were reported written"
    cells = run.cells
    events = run.events
    np.testing.assert_array_equal(run.times_h, np.arange(n, dtype=float))
    np.testing.assert_array_equal(run.metrics["n_hsc"], np.arange(n, dtype=float))
    cx = run.fields["cxcl12"].values
    scf = run.fields["scf"].values
    for i in range(n):
        exp = ns["fields_of"](i)
        np.testing.assert_array_equal(cx[i], exp["cxcl12"])
        np.testing.assert_array_equal(scf[i], exp["scf"])
        c = cells[cells["record"] == i]
        ec = ns["cells_of"](i)
        np.testing.assert_array_equal(c["track_id"], ec["track_id"])
        np.testing.assert_array_equal(c["state"].cat.codes, ec["state"])
        np.testing.assert_array_equal(c["x"], (ec["x"] + 0.5) * 10.0)
        np.testing.assert_array_equal(c["bound"], ec["bound"])
    assert len(cells) == n * ns["N_CELLS"]
    # the events of record i are appended after record i: n or n - 1 ... n full pairs
    assert len(events) in (2 * n, 2 * (n - 1)) if n else len(events) == 0
    np.testing.assert_array_equal(
        events["t_hours"], np.stack([np.arange(len(events) // 2) + 0.25, np.arange(len(events) // 2) + 0.5], 1).ravel()
    )
    return n


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_keeps_every_reported_record(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path = tmp_path / "run.zarr"
    n_total = 30
    after = int(rng.integers(2, 12))  # records to wait for before the kill
    delay = float(rng.uniform(0.0, 0.08))  # then kill at a random moment of a later write
    proc = _spawn(RECORD_CHILD, str(path), "create", str(n_total), "-1")
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if len(_reported(lines, "written")) >= after:
            break
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    lines += out.splitlines()
    assert proc.returncode == -signal.SIGKILL, err
    written = _reported(lines, "written")
    assert len(written) >= after and written == list(range(len(written)))
    n = _check_records(path, len(written))
    assert n <= len(written) + 1
    # resume: the run continues where the commit left it and ends complete
    proc = _spawn(RECORD_CHILD, str(path), "append", str(n_total), "-1")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"ready {n}" in out and "done" in out
    assert _check_records(path, n_total) == n_total
    assert not list(path.rglob("*niche3d-tmp"))  # stale temp files were cleaned up


@pytest.mark.parametrize("kill_at", [2, 5])
def test_kill_while_writing_a_record_keeps_earlier_records(tmp_path: Path, kill_at: int) -> None:
    """The field data file of record k-1 is half written when the process dies; every
    reported record must survive intact and writing continues from record k-1."""
    path = tmp_path / "run.zarr"
    proc = _spawn(RECORD_CHILD, str(path), "create", "20", str(kill_at))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    written = _reported(out.splitlines(), "written")
    assert written == list(range(kill_at - 1))  # died writing record kill_at - 1
    assert list(path.rglob("*.dying*"))  # the half-written temp file is there ...
    n = _check_records(path, kill_at - 1)  # ... and did not damage the store
    assert n == kill_at - 1
    w = RunWriter.open_append(path)
    assert w.n_records_written == kill_at - 1
    assert not list(path.rglob("*niche3d-tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_during_checkpoints_leaves_a_complete_checkpoint(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(10 + seed)
    path = tmp_path / "ck.zarr"
    proc = _spawn(CHECKPOINT_CHILD, str(path), "-1")
    after = int(rng.integers(1, 4))
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if len(_reported(lines, "checkpoint")) >= after:
            break
    time.sleep(float(rng.uniform(0.0, 0.05)))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    gens = _reported(lines + out.splitlines(), "checkpoint")
    state, meta = read_checkpoint(path)
    g = meta["gen"]
    assert gens[-1] <= g <= gens[-1] + 1
    assert (state["big"] == g).all() and state["small"].tolist() == [g, -g]


@pytest.mark.parametrize("kill_at", [1, 3])
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, kill_at: int) -> None:
    path = tmp_path / "ck.zarr"
    proc = _spawn(CHECKPOINT_CHILD, str(path), str(kill_at))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    gens = _reported(out.splitlines(), "checkpoint")
    assert gens == list(range(kill_at - 1))
    if kill_at == 1:
        with pytest.raises(StoreError, match="no checkpoint"):
            read_checkpoint(path)
        return
    state, meta = read_checkpoint(path)
    assert meta == {"gen": kill_at - 2}
    assert (state["big"] == kill_at - 2).all()
