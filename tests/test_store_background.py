"""The background writer: same store as synchronous writes, copies, errors, bounded queue;
and the thread governor's choice (niche3d._threads) on a fake clock."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from niche3d._threads import ThreadGovernor
from niche3d.io import RunWriter, open_run
from niche3d.io.background import BackgroundWriter
from niche3d.scenario import Scenario

SHAPE = (8, 9, 10)
FIELDS = [("cxcl12", "nM", (0.0, 40.0)), ("scf", "nM", (0.0, 5.0))]


def _create(path: Path, n: int = 6) -> RunWriter:
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
    lab = np.ones(SHAPE, np.uint8)
    lab[0] = 0
    return RunWriter.create(path, scenario=sc, labels=lab, voxel_um=10.0, record_hours=1.0,
                            n_records=n, fields=FIELDS, seed=1, code_version="test", dt_hours=1.0)


def _record(i: int) -> dict:
    rng = np.random.default_rng(i)
    return dict(
        fields={"cxcl12": rng.random(SHAPE, dtype=np.float32), "scf": rng.random(SHAPE, dtype=np.float32)},
        labels=None,
        cells={"track_id": np.arange(i + 2), "z": np.zeros(i + 2, np.int64),
               "y": np.ones(i + 2, np.int64), "x": np.full(i + 2, 2, np.int64)},
        metrics={"n_hsc": float(i + 2)},
    )


def _write(w: RunWriter | BackgroundWriter, n: int) -> None:
    for i in range(n):
        w.write_record(i, float(i), **_record(i))
        w.append_events({"t_hours": np.array([i + 0.5]), "kind": np.array([i % 3], np.int8)})
        if i == 3:
            w.write_checkpoint({"a": np.arange(5)}, {"record": i})


def test_background_store_equals_synchronous_store(tmp_path: Path) -> None:
    _write(_create(tmp_path / "sync.zarr"), 6)
    bw = BackgroundWriter(_create(tmp_path / "bg.zarr"))
    _write(bw, 6)
    bw.close()
    a, b = open_run(tmp_path / "sync.zarr"), open_run(tmp_path / "bg.zarr")
    assert a.n_records == b.n_records == 6
    for name in ("cxcl12", "scf"):
        np.testing.assert_array_equal(a.fields[name].values, b.fields[name].values)
    np.testing.assert_array_equal(a.tissue.values, b.tissue.values)
    for t in ("cells", "events", "metrics"):
        assert getattr(a, t).equals(getattr(b, t))


def test_arrays_are_copied_when_queued(tmp_path: Path) -> None:
    bw = BackgroundWriter(_create(tmp_path / "c.zarr"))
    rec = _record(0)
    want = rec["fields"]["cxcl12"].copy()
    bw.write_record(0, 0.0, **rec)
    rec["fields"]["cxcl12"][...] = -1.0  # the simulation overwrites its field in place
    bw.close()
    np.testing.assert_array_equal(open_run(tmp_path / "c.zarr").fields["cxcl12"][0].values, want)


def test_error_in_the_thread_is_raised_in_the_caller_and_stops_writing(tmp_path: Path) -> None:
    bw = BackgroundWriter(_create(tmp_path / "e.zarr"))
    bw.write_record(0, 0.0, **_record(0))
    bw.write_record(5, 1.0, **_record(1))  # out of order: RunWriter raises ValueError
    with pytest.raises(ValueError, match="index must be the next record") as info:
        bw.flush()
    assert any("background writer" in n for n in info.value.__notes__)
    with pytest.raises(ValueError):  # and again on the next call; nothing more is queued
        bw.write_record(1, 1.0, **_record(1))
    assert bw.writer.n_records_written == 1


def test_full_queue_makes_the_caller_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _create(tmp_path / "q.zarr")
    gate = threading.Event()
    real = w.append_events

    def slow(events):  # type: ignore[no-untyped-def]
        gate.wait(30)
        return real(events)

    monkeypatch.setattr(w, "append_events", slow)
    bw = BackgroundWriter(w, max_pending=2)
    ev = {"t_hours": np.array([0.5]), "kind": np.array([0], np.int8)}
    bw.append_events(ev)  # taken by the thread, which waits at the gate
    done = threading.Event()

    def more() -> None:
        for _ in range(3):  # two fit in the queue; the third must wait
            bw.append_events(ev)
        done.set()

    t = threading.Thread(target=more)
    t.start()
    assert not done.wait(0.5)
    gate.set()
    t.join(30)
    assert done.is_set()
    bw.close()
    assert len(open_run(tmp_path / "q.zarr").events) == 4


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="RunWriter"):
        BackgroundWriter("not a writer")  # type: ignore[arg-type]
    w = _create(tmp_path / "b.zarr")
    with pytest.raises(ValueError, match="max_pending"):
        BackgroundWriter(w, max_pending=0)
    bw = BackgroundWriter(w)
    with pytest.raises(ValueError, match="n_more"):
        bw.extend(0)
    bw.close()
    with pytest.raises(RuntimeError, match="closed"):
        bw.write_record(0, 0.0, **_record(0))


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _drive(gov: ThreadGovernor, clock: _Clock, cost: dict[int, float], calls: int,
           monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import numba

    state = {"n": 2}
    monkeypatch.setattr(numba, "get_num_threads", lambda: state["n"])
    monkeypatch.setattr(numba, "set_num_threads", lambda n: state.update(n=n))
    used = []
    for _ in range(calls):
        with gov() as work:
            n = state["n"]
            used.append(n)
            clock.t += cost[n] * 3.0
            work.units = 3.0
        assert state["n"] == 2  # the allowed count is restored after each call
    return used


@pytest.mark.parametrize("cost,best,probes", [
    ({1: 1.0, 2: 0.9}, 2, 10),  # within 25 %: one probe every 10 calls (calls 9, 19, ..., 99)
    ({1: 1.0, 2: 0.6}, 2, 2),  # clearly slower: every 40 (calls 39, 79)
    ({1: 1.0, 2: 2.0}, 1, 2),
])
def test_governor_settles_on_the_faster_count_and_keeps_probing(
        cost: dict[int, float], best: int, probes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NICHE3D_ADAPTIVE_THREADS", raising=False)
    clock = _Clock()
    gov = ThreadGovernor(probe_every=10, clock=clock)
    used = _drive(gov, clock, cost, 100, monkeypatch)
    assert used[:8] == [2, 1] * 4  # both are measured first (the first timing is dropped)
    other = 3 - best
    assert used[8:].count(best) == 92 - used[8:].count(other)
    assert used[8:].count(other) == probes
    assert gov.counts == {best: used.count(best), other: used.count(other)}


def test_governor_drops_the_first_timing_of_each_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first 2-thread call that pays for starting the pool (10x) must not make the
    governor settle on one thread when two are faster."""
    monkeypatch.delenv("NICHE3D_ADAPTIVE_THREADS", raising=False)
    clock = _Clock()
    gov = ThreadGovernor(probe_every=8, clock=clock)
    _drive(gov, clock, {1: 1.0, 2: 6.0}, 1, monkeypatch)  # the cold first call
    used = _drive(gov, clock, {1: 1.0, 2: 0.6}, 40, monkeypatch)
    assert used[-30:].count(2) >= 26


def test_governor_follows_a_change_of_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NICHE3D_ADAPTIVE_THREADS", raising=False)
    clock = _Clock()
    gov = ThreadGovernor(probe_every=8, clock=clock)
    _drive(gov, clock, {1: 1.0, 2: 0.6}, 40, monkeypatch)  # idle: two threads win
    used = _drive(gov, clock, {1: 1.0, 2: 2.0}, 80, monkeypatch)  # a core gets busy
    assert used[-40:].count(1) >= 33


def test_governor_off_uses_every_allowed_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NICHE3D_ADAPTIVE_THREADS", "0")
    clock = _Clock()
    used = _drive(ThreadGovernor(clock=clock), clock, {1: 1.0, 2: 5.0}, 20, monkeypatch)
    assert used == [2] * 20
    with pytest.raises(ValueError, match="probe_every"):
        ThreadGovernor(probe_every=1)
    with pytest.raises(ValueError, match="window"):
        ThreadGovernor(window=0)


def test_thread_ends_when_idle_and_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import niche3d.io.background as B

    monkeypatch.setattr(B, "IDLE_SECONDS", 0.05)
    bw = BackgroundWriter(_create(tmp_path / "i.zarr"))
    assert bw._thread is None  # no thread before there is work
    bw.write_record(0, 0.0, **_record(0))
    bw.flush()
    for _ in range(200):
        if bw._thread is None:
            break
        threading.Event().wait(0.01)
    assert bw._thread is None  # an idle writer holds no thread
    bw.write_record(1, 1.0, **_record(1))
    bw.close()
    assert open_run(tmp_path / "i.zarr").n_records == 2


@pytest.mark.parametrize("chunk_bytes", [4 * 2**20, 1000])
def test_direct_shard_writes_read_back_like_zarr_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """Record shards built by niche3d.io._shard decode (through zarr and through the
    napari-facing reader) to exactly what zarr's own writes give, also when a record is
    cut into several inner chunks with padded edges (chunk_bytes=1000)."""
    import zarr

    import niche3d.io._layout as L
    import niche3d.io._shard as S

    monkeypatch.setattr(L, "IMAGE_CHUNK_BYTES", chunk_bytes)
    direct = _create(tmp_path / "direct.zarr")
    assert S.can_write(direct._image[0]) and S.can_write(direct._tissue[0])
    _write(direct, 5)
    monkeypatch.setattr(S, "can_write", lambda arr: False)
    _write(_create(tmp_path / "zarr.zarr"), 5)
    a, b = (zarr.open_group(tmp_path / n, mode="r") for n in ("direct.zarr", "zarr.zarr"))
    assert a["s0"].chunks == b["s0"].chunks
    if chunk_bytes < 2**20:
        assert a["s0"].chunks[2:] != SHAPE  # several inner chunks per record
    for key in ("s0", "labels/tissue/s0"):
        np.testing.assert_array_equal(np.asarray(a[key][:5]), np.asarray(b[key][:5]))
    want = [_record(i)["fields"]["scf"] for i in range(5)]
    got = open_run(tmp_path / "direct.zarr").fields["scf"].values
    np.testing.assert_array_equal(got, np.stack(want))


def test_without_hard_links_unchanged_labels_are_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    def no_link(src, dst):  # type: ignore[no-untyped-def]
        raise OSError(1, "Operation not permitted")  # as on filesystems without hard links

    monkeypatch.setattr(os, "link", no_link)
    w = _create(tmp_path / "nolink.zarr")
    _write(w, 4)
    files = sorted((tmp_path / "nolink.zarr" / "labels" / "tissue" / "s0" / "c").rglob("*"))
    files = [p for p in files if p.is_file()]
    assert len(files) == 4 and all(p.stat().st_nlink == 1 for p in files)
    tissue = open_run(tmp_path / "nolink.zarr").tissue.values
    assert (tissue == tissue[0]).all() and tissue[0, 0].max() == 0 and tissue[0, 1].min() == 1


def test_relinking_a_record_that_is_already_linked_leaves_no_temp_file(tmp_path: Path) -> None:
    """A resumed run replays records whose label file is already a link to the same
    data; rename() of one link over another of the same file does nothing, so the
    temporary name must not be left behind."""
    from niche3d.io._atomic import TEMP_SUFFIX, atomic_link, atomic_write_bytes

    a, b = tmp_path / "a", tmp_path / "d" / "b"
    atomic_write_bytes(a, b"data")
    atomic_link(a, b)
    atomic_link(a, b)  # again, as a replay does
    assert b.read_bytes() == b"data" and a.stat().st_ino == b.stat().st_ino
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))


def test_keepbits_must_fit_float32(tmp_path: Path) -> None:
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
    for bad in (0, 24):
        with pytest.raises(ValueError, match="keepbits"):
            RunWriter.create(tmp_path / f"k{bad}.zarr", scenario=sc, labels=np.ones(SHAPE, np.uint8),
                             voxel_um=10.0, record_hours=1.0, n_records=2, fields=FIELDS, seed=1,
                             code_version="test", dt_hours=1.0, keepbits=bad)
    from niche3d.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="field_keepbits"):
        sc.with_overrides({"output.field_keepbits": 30})
