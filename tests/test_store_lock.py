"""One writer per run store: a second writer is refused before its set-up, whatever its
flags, and a dead writer's lock is gone with it (the kernel releases it)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import niche3d.simulation as S
from niche3d.cli import main
from niche3d.io import StoreError, open_run
from niche3d.io.lock import StoreLocked, WriterLock, lock_path
from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

SMALL = {"domain.shape": [16, 24, 24], "run.days": 1.0, "output.interval_hours": 12.0}


def _scenario() -> Scenario:
    return Scenario.default().with_overrides(SMALL)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """Another process holding the write lock of tmp_path/run.zarr (until killed)."""
    store = tmp_path / "run.zarr"
    code = ("import sys; from niche3d.io.lock import WriterLock; "
            "lock = WriterLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(store)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    yield store, p
    if p.poll() is None:
        p.kill()
    p.wait()


def _no_setup(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = S.build_lattice

    def counted(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(S, "build_lattice", counted)
    return calls


def test_a_second_lock_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    store = tmp_path / "out" / "run.zarr"  # the directory is made for the lock file
    a = WriterLock(store).acquire()
    assert a.held and lock_path(store) == tmp_path / "out" / ".run.zarr.lock"
    with pytest.raises(StoreLocked, match="this process is already writing .*close()"):
        WriterLock(store).acquire()
    a.release()
    a.release()  # idempotent
    with WriterLock(store) as b:
        assert b.held
    assert not b.held


def test_another_process_blocks_every_writer_before_set_up(
        holder: tuple[Path, subprocess.Popen], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    store, proc = holder
    calls = _no_setup(monkeypatch)
    with pytest.raises(StoreLocked, match=f"pid {proc.pid}"):
        Simulation(_scenario(), out=store)
    with pytest.raises(StoreLocked):
        Simulation(_scenario(), out=store, overwrite=True)
    assert calls == []  # refused before the lattice was built
    scen = Path(__file__).parent.parent / "scenarios" / "homeostasis.toml"
    for extra in ([], ["--overwrite"]):
        assert main(["run", str(scen), "--out", str(store), "--days", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert "another process is writing this run store" in err and "--overwrite" in err
        assert "Traceback" not in err
    assert main(["run", "--resume", str(store)]) == 2
    assert "--resume refuse" in capsys.readouterr().err
    assert calls == []


def test_a_killed_writers_lock_is_released_by_the_kernel(
        holder: tuple[Path, subprocess.Popen]) -> None:
    store, proc = holder
    with pytest.raises(StoreLocked):
        WriterLock(store).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with WriterLock(store) as lock:  # no stale lock: the lock file is still there, unlocked
        assert lock.held and lock_path(store).is_file()


def test_overwrite_refuses_a_store_being_written_and_keeps_it(tmp_path: Path) -> None:
    store = tmp_path / "run.zarr"
    with Simulation(_scenario(), out=store) as first:
        first.run(0.5)
        with pytest.raises(StoreLocked):
            Simulation(_scenario(), out=store, overwrite=True)
        with pytest.raises(StoreLocked):
            Simulation.resume(store)
    assert open_run(store).n_records == 2  # records 0 and 1 (12 h), intact
    with Simulation(_scenario(), out=store, overwrite=True) as again:  # released on close
        again.run(1.0)
    assert open_run(store).n_records == 3


def test_a_closed_simulation_cannot_step_and_resume_takes_the_lock(tmp_path: Path) -> None:
    store = tmp_path / "run.zarr"
    sim = Simulation(_scenario(), out=store)
    sim.run(0.5)
    sim.close()
    sim.close()
    with pytest.raises(RuntimeError, match="closed.*Simulation.resume"):
        sim.run(0.5)
    with Simulation.resume(store) as again:  # from the checkpoint of record 0
        assert again.t_hours == 0.0
        with pytest.raises(StoreLocked):
            WriterLock(store).acquire()
        again.run(0.5)
    with Simulation(_scenario(), out=tmp_path / "straight.zarr") as straight:
        straight.run(0.5)
    a, b = open_run(store).metrics, open_run(tmp_path / "straight.zarr").metrics
    assert len(a) == 2
    np.testing.assert_array_equal(a["hsc_total"].to_numpy(), b["hsc_total"].to_numpy())
    np.testing.assert_array_equal(a["cxcl12_mean"].to_numpy(), b["cxcl12_mean"].to_numpy())


def test_an_existing_store_or_unwritable_directory_is_refused_before_set_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "run.zarr"
    Simulation(_scenario(), out=store).close()
    calls = _no_setup(monkeypatch)
    with pytest.raises(StoreError, match="already exists"):
        Simulation(_scenario(), out=store)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write in"):
        Simulation(_scenario(), out=blocker / "run.zarr")
    assert calls == []


def test_a_reader_never_sees_the_committed_count_go_backwards(tmp_path: Path) -> None:
    """A resume rewinds to its checkpoint and rewrites the records after it bit for bit;
    meanwhile the store keeps showing the records it had committed."""
    store = tmp_path / "run.zarr"
    sc = _scenario().with_overrides({"output.checkpoint_every_records": 2, "run.days": 2.0})
    with Simulation(sc, out=store) as first:
        first.run(1.0)  # records 0..2; checkpoints at 0 and 2
    seen = open_run(store)
    n0, metrics0 = seen.n_records, seen.metrics
    assert n0 == 3
    with Simulation.resume(store) as again:
        during = open_run(store)  # rewound to record 2 inside, 3 records still shown
        assert during.n_records == n0
        np.testing.assert_array_equal(during.metrics.to_numpy(), metrics0.to_numpy())
        assert again.t_days == 0.5  # the checkpoint after record 1 (every 2 records)
        again.run(sc.run.days - again.t_days)
    assert open_run(store).n_records == 5


def test_a_store_being_created_says_so(tmp_path: Path) -> None:
    import json

    store = tmp_path / "run.zarr"
    Simulation(_scenario(), out=store).close()
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["niche3d"]["creating"] = True  # as while RunWriter.create runs
    (store / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="is being created"):
        open_run(store)
