"""Property-based: a damaged run store is a StoreError naming the store, never another
exception, a hang or a silent success with wrong shapes.

A small real store is written once; every example copies it, damages it at random
(a data or metadata file truncated, bytes flipped, a file deleted, a root attribute
replaced by a random JSON value, the checkpoint garbled) and reads everything a user
reads: ``open_run``, the scenario, every field, tissue and niche record, the tables, the
failure record; and ``Simulation.resume`` on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from niche3d.io import StoreError, open_run
from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

#: NICHE3D_FUZZ_SCALE=10 (or more) multiplies every example count: the long lane
SCALE = max(1, int(os.environ.get("NICHE3D_FUZZ_SCALE", "1")))
SETTINGS = settings(max_examples=250 * SCALE, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "run.zarr"
    sc = Scenario.default().with_overrides({"domain.shape": [16, 24, 24], "run.days": 1.0,
                                            "output.interval_hours": 6.0,
                                            "output.checkpoint_every_records": 2})
    with Simulation(sc, out=path) as sim:
        sim.run()
    read_everything(path)  # the undamaged store reads without error
    return path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def read_everything(path: Path) -> None:
    """What a user reads from a store; must raise only StoreError."""
    run = open_run(path)
    repr(run)
    run.scenario  # noqa: B018
    n = run.n_records
    for name in run.field_names:
        v = run.fields[name].values
        assert v.shape[0] == n
    assert run.tissue.values.shape[0] == n
    if run.niche is not None:
        run.niche.values  # noqa: B018
    run.times_h  # noqa: B018
    for t in (run.cells, run.events, run.metrics):
        assert t is not None
    run.failure  # noqa: B018


def _check(path: Path) -> None:
    try:
        read_everything(path)
    except StoreError as exc:
        assert str(path) in str(exc), exc


ATTR_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.lists(st.integers(-5, 10**6), max_size=4),
                        st.dictionaries(st.sampled_from(["cells", "events", "metrics", "x"]),
                                        st.integers(-5, 10**7), max_size=3))


@SETTINGS
@given(data=st.data())
def test_damaged_files_are_store_errors(pristine: Path, tmp_path_factory: pytest.TempPathFactory,
                                        data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("damaged") / "run.zarr"
    shutil.copytree(pristine, path)
    files = _files(path)
    victim = data.draw(st.sampled_from(files), label="file")
    how = data.draw(st.sampled_from(["truncate", "flip", "delete"]), label="damage")
    raw = victim.read_bytes()
    if how == "truncate":
        victim.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="keep")])
    elif how == "flip" and raw:
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            i = data.draw(st.integers(0, len(buf) - 1), label="at")
            buf[i] ^= data.draw(st.integers(1, 255), label="xor")
        victim.write_bytes(bytes(buf))
    else:
        victim.unlink()
    _check(path)


@SETTINGS
@given(key=st.sampled_from(["n_records_written", "n_records", "rows", "shape", "fields",
                            "voxel_um", "record_hours", "dt_hours", "seed", "scenario",
                            "format_version", "checkpoint", "failure", "last_t_hours"]),
       value=ATTR_VALUES)
def test_bad_root_attributes_are_store_errors(pristine: Path, tmp_path_factory: pytest.TempPathFactory,
                                              key: str, value: object) -> None:
    path = tmp_path_factory.mktemp("attrs") / "run.zarr"
    shutil.copytree(pristine, path)
    zj = path / "zarr.json"
    doc = json.loads(zj.read_text())
    doc["attributes"]["niche3d"][key] = value
    zj.write_text(json.dumps(doc))
    _check(path)


@settings(max_examples=100 * SCALE, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_garbled_checkpoint_never_resumes_wrongly(pristine: Path,
                                                    tmp_path_factory: pytest.TempPathFactory,
                                                    data: st.DataObject) -> None:
    """A checkpoint whose position or arrays are wrong is refused by --resume with a
    StoreError; it never commits rows or records the store does not hold."""
    from niche3d.io.writer import _read_checkpoint, _write_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "run.zarr"
    shutil.copytree(pristine, path)
    state, meta, pos = _read_checkpoint(path)
    which = data.draw(st.sampled_from(["records", "rows", "array", "meta"]), label="what")
    if which == "records":
        pos["n_records_written"] = data.draw(ATTR_VALUES, label="n")
    elif which == "rows":
        pos["rows"] = data.draw(ATTR_VALUES, label="rows")
    elif which == "array":
        k = data.draw(st.sampled_from(sorted(state)), label="key")
        state[k] = np.asarray(data.draw(st.lists(st.integers(-3, 3), max_size=3), label="v"))
    else:
        meta = {data.draw(st.sampled_from(list(meta)), label="mkey"): data.draw(ATTR_VALUES)}
    _write_checkpoint(path, state, meta, pos)
    before = open_run(path)
    n0 = before.n_records
    rows0 = dict(before.attrs["rows"])
    try:
        sim = Simulation.resume(path)
    except StoreError as exc:
        assert str(path) in str(exc)
        after = open_run(path)
        assert after.n_records == n0 and after.attrs["rows"] == rows0  # nothing changed
        return
    sim.close()
    after = open_run(path)
    assert after.n_records <= n0
    assert all(after.attrs["rows"][t] <= rows0[t] for t in rows0)
