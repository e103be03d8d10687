"""A full disk: refused before set-up when it is full already; when it fills during a run,
a one-line message and exit status 2, every committed record kept, the lock released,
and ``--resume`` once there is space again gives the store of an uninterrupted run."""

from __future__ import annotations

import errno
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import niche3d.io._atomic as atomic
import niche3d.io.writer as W
import niche3d.simulation as S
from niche3d.cli import main
from niche3d.io import StoreError, open_run
from niche3d.io.lock import WriterLock
from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

REPO = Path(__file__).resolve().parents[1]
SETS = ["--set=domain.shape=[16,24,24]", "--set=output.interval_hours=3",
        "--set=output.checkpoint_every_records=3", "--days", "1", "-q"]


def test_a_full_disk_is_refused_before_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(W.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    calls: list[int] = []
    monkeypatch.setattr(S, "build_lattice", lambda *a, **k: calls.append(1))
    sc = Scenario.default().with_overrides({"domain.shape": [16, 24, 24]})
    with pytest.raises(StoreError, match="MB for its first records.*0 MB free"):
        Simulation(sc, out=tmp_path / "run.zarr")
    assert calls == []
    assert W.first_records_bytes((16, 24, 24), 2) > 16 * 24 * 24 * 30


def test_disk_full_during_a_run_keeps_the_store_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    scen = str(REPO / "scenarios" / "homeostasis.toml")
    straight = tmp_path / "straight.zarr"
    assert main(["run", scen, "--out", str(straight), *SETS]) == 0
    capsys.readouterr()

    real = atomic.atomic_write_bytes
    count = {"n": 0}

    def filling(p, data, *, durable=True):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] > 40:  # the disk is full from the 41st write on
            raise OSError(errno.ENOSPC, "No space left on device", str(p))
        return real(p, data, durable=durable)

    monkeypatch.setattr(atomic, "atomic_write_bytes", filling)
    full = tmp_path / "full.zarr"
    assert main(["run", scen, "--out", str(full), *SETS]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err and "Traceback" not in err
    kept = open_run(full).n_records
    assert 1 <= kept < 9  # what was committed is readable
    WriterLock(full).acquire().release()  # the failed run released its lock

    monkeypatch.setattr(atomic, "atomic_write_bytes", real)  # space again
    assert main(["run", "--resume", str(full), "-q"]) == 0
    a, b = open_run(full), open_run(straight)
    assert a.n_records == b.n_records == 9
    for table in ("cells", "events", "metrics"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table), obj=table)
    ga, gb = zarr.open_group(full, mode="r"), zarr.open_group(straight, mode="r")
    np.testing.assert_array_equal(ga["s0"][:9], gb["s0"][:9])
