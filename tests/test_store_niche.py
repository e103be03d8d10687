"""The niche-site map in the run store (issue 14, point 5): ``labels/niche`` is written with
every record, agrees with that record's niche metrics, survives a kill and a resume like
the tissue, and old stores without it still open (``Run.niche is None``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from niche3d.cells.codes import S_SG2M
from niche3d.io import RunWriter, StoreError, check_store, open_run
from niche3d.io._format import NICHE_SITE_COLORS, NICHE_SITE_NAMES
from niche3d.scenario import Scenario

KINDS = ("endosteal", "sinusoidal", "arteriolar")  # site_kinds() codes 1, 2, 3


# ---------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def niche_run(tmp_path_factory: pytest.TempPathFactory, tiny_scenario):
    """A 2-day tiny run recorded every 6 h (9 records), checkpointed every 2 records, and
    the finished Simulation (for the site kinds and the final site map)."""
    from niche3d.simulation import Simulation

    # site_threshold 1.0 (not the default): the 20 x 32 x 32 lattice then has ~2400 sites of
    # every kind, most free, ~160 held by HSCs, instead of a handful, all held
    sc = tiny_scenario.with_overrides({"output.interval_hours": 6.0, "output.checkpoint_every_records": 2,
                                       "cells.fate.site_threshold": 1.0})
    out = tmp_path_factory.mktemp("niche") / "full.zarr"
    sim = Simulation(sc, out).run(days=2.0)
    return sc, out, sim


def test_every_record_holds_the_site_map_its_metrics_count(niche_run) -> None:
    _, out, sim = niche_run
    run = open_run(out)
    assert run.has_niche
    niche = run.niche
    assert niche.dims == ("t", "z", "y", "x") and niche.dtype == np.uint8
    assert niche.shape == (9, *run.shape) == (9, 20, 32, 32)
    np.testing.assert_array_equal(niche["t"].values, run.times_h)
    np.testing.assert_array_equal(run.times_h, np.arange(9) * 6.0)
    assert niche.attrs["names"] == NICHE_SITE_NAMES and niche.attrs["units"] == "1"
    sites = np.asarray(niche)
    m = run.metrics
    kind = sim.cells.site_kinds()  # the tissue does not change in this scenario
    for i in range(run.n_records):
        s = sites[i]
        assert set(np.unique(s).tolist()) <= {0, 1, 2, 3}
        assert np.count_nonzero(s) == m["niche_sites"].iloc[i], i
        assert np.count_nonzero(s == 1) == m["niche_sites_free"].iloc[i], i
        assert np.count_nonzero(s == 2) == m["niche_sites_hsc"].iloc[i], i
        assert np.count_nonzero(s == 3) == m["niche_sites_other"].iloc[i], i
        for code, k in enumerate(KINDS, start=1):
            here = kind == code
            assert np.count_nonzero(here & (s > 0)) == m[f"niche_sites_total_{k}"].iloc[i], (i, k)
            assert np.count_nonzero(here & (s == 1)) == m[f"niche_sites_free_{k}"].iloc[i], (i, k)
            assert np.count_nonzero(here & (s == 2)) == m[f"niche_sites_hsc_{k}"].iloc[i], (i, k)
    # not vacuous: free and HSC-held sites of every kind, and the map changes over time
    assert (m["niche_sites_free"] > 100).all() and (m["niche_sites_hsc"] > 10).all()
    assert all((m[f"niche_sites_total_{k}"] > 0).all() and (m[f"niche_sites_hsc_{k}"] > 0).any() for k in KINDS)
    assert any(not np.array_equal(sites[0], sites[i]) for i in range(1, run.n_records))
    # the last record is the model's own map at the end of the run, voxel for voxel
    np.testing.assert_array_equal(sites[-1], sim.cells.niche_sites())
    # a site held by an HSC has an HSC (state code <= S_SG2M) in its voxel
    cells = run.cells[run.cells["record"] == run.n_records - 1]
    on = cells[np.isfinite(cells["z"])]
    vox = ((on[["z", "y", "x"]].to_numpy() / run.voxel_um) - 0.5).round().astype(int)
    held = sites[-1][vox[:, 0], vox[:, 1], vox[:, 2]] == 2
    assert (on["state"].cat.codes.to_numpy()[held] <= S_SG2M).all()
    assert held.sum() == m["niche_sites_hsc"].iloc[-1]


def test_niche_label_image_metadata(niche_run) -> None:
    import zarr
    from ome_zarr_models.v05 import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    _, out, _ = niche_run
    g = zarr.open_group(out, mode="r")
    assert Labels.from_zarr(g["labels"]).attributes.ome.labels == ["tissue", "niche"]
    il = ImageLabel.from_zarr(g["labels/niche"]).attributes.ome.image_label
    colors = {c.label_value: tuple(c.rgba) for c in il.colors}
    assert colors[2] == (255, 0, 255, 255)  # HSC-held: magenta
    assert colors == {k: tuple(round(255 * v) for v in rgba) for k, rgba in NICHE_SITE_COLORS.items()}
    assert {p.label_value: p.model_extra["name"] for p in il.properties} == NICHE_SITE_NAMES
    arr = g["labels/niche/s0"]
    tis = g["labels/tissue/s0"]
    assert arr.dtype == np.uint8 and arr.metadata.dimension_names == ("t", "z", "y", "x")
    assert (arr.chunks, arr.shards, arr.fill_value) == (tis.chunks, tis.shards, tis.fill_value)
    assert arr.attrs["values"] == {
        "0": "not a niche site",
        "1": "free niche site",
        "2": "niche site held by an HSC",
        "3": "niche site taken by another cell (an MPP)",
    }
    assert arr.attrs["unit"] == "1"


def test_resumed_run_has_the_same_niche_maps(niche_run, tmp_path: Path) -> None:
    from niche3d.simulation import Simulation

    sc, full, _ = niche_run
    part = Simulation(sc, tmp_path / "part.zarr")
    # records at 0, 6, 12, 18, 24 h; checkpoints after the 2nd and 4th (6 h, 18 h): resuming
    # rewinds to 18 h and writes the record at 24 h again (readers keep seeing it meanwhile:
    # the same code replays it bit for bit)
    part.run(days=1.0)
    del part
    assert open_run(tmp_path / "part.zarr").niche.shape[0] == 5
    resumed = Simulation.resume(tmp_path / "part.zarr")
    assert resumed.t_hours == 18.0
    assert open_run(tmp_path / "part.zarr").niche.shape[0] == 5  # never fewer than shown
    resumed.run(days=2.0 - resumed.t_days)
    a, b = open_run(full), open_run(tmp_path / "part.zarr")
    assert a.n_records == b.n_records == 9
    np.testing.assert_array_equal(np.asarray(b.niche), np.asarray(a.niche))
    np.testing.assert_array_equal(b.metrics["niche_sites_hsc"], a.metrics["niche_sites_hsc"])


def test_old_reference_store_opens_without_niche(tmp_path: Path) -> None:
    store = tmp_path / "v2.zarr"
    shutil.copytree(REPO / "tests" / "data" / "reference_stores" / "v2.zarr", store)
    assert check_store(store)["format_version"] == 2
    run = open_run(store)
    assert run.niche is None and not run.has_niche
    assert run.tissue.shape[0] == run.n_records > 0  # the rest still reads
    w = RunWriter.open_append(store)
    assert not w.has_niche
    n = w.n_records_written
    w.extend(1)
    with pytest.raises(ValueError, match="no niche-site label image"):
        w.write_record(n, 1e6, fields={f: np.zeros(w.shape, np.float32) for f in w.field_names},
                       labels=None, cells={}, metrics={}, niche=np.zeros(w.shape, np.uint8))
    assert open_run(store).n_records == n  # refused before anything was written


# ---------------------------------------------------------------------- the writer
SHAPE = (8, 10, 12)


def _writer(path: Path, n_records: int = 2, **kw) -> RunWriter:
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
    return RunWriter.create(
        path, scenario=sc, labels=np.ones(SHAPE, np.uint8), voxel_um=10.0, record_hours=1.0,
        n_records=n_records, fields=[], seed=1, code_version="test", dt_hours=1.0, **kw,
    )


def _sites(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.choice(np.array([0, 1, 2, 3], np.uint8), size=SHAPE, p=[0.7, 0.15, 0.1, 0.05])


def test_writer_niche_argument(tmp_path: Path) -> None:
    plain = _writer(tmp_path / "plain.zarr")
    assert not plain.has_niche  # RunWriter.create(niche=False) keeps the tissue-only layout
    plain.write_record(0, 0.0, fields=None, labels=None, cells={}, metrics={})
    assert open_run(tmp_path / "plain.zarr").niche is None
    assert not (tmp_path / "plain.zarr" / "labels" / "niche").exists()

    w = _writer(tmp_path / "n.zarr", niche=True)
    assert w.has_niche
    w.write_record(0, 0.0, fields=None, labels=None, cells={}, metrics={})  # no map: zeros
    for bad, msg in ((_sites(1).astype(np.int16), "uint8"), (_sites(1)[:-1], "shape"),
                     (np.full(SHAPE, 4, np.uint8), "code 4")):
        with pytest.raises(ValueError, match=msg):
            w.write_record(1, 1.0, fields=None, labels=None, cells={}, metrics={}, niche=bad)
    w.write_record(1, 1.0, fields=None, labels=None, cells={}, metrics={}, niche=_sites(1))
    w.extend(1)
    w.write_record(2, 2.0, fields=None, labels=None, cells={}, metrics={}, niche=_sites(2))
    niche = np.asarray(open_run(tmp_path / "n.zarr").niche)
    assert niche.shape == (3, *SHAPE)
    assert not niche[0].any()
    np.testing.assert_array_equal(niche[1], _sites(1))
    np.testing.assert_array_equal(niche[2], _sites(2))


@pytest.mark.parametrize(
    ("victim", "message"),
    [
        ("labels/niche/zarr.json", r"niche-site label group.*missing"),
        ("labels/niche/s0/zarr.json", r"niche-site labels.*missing"),
        ("labels/niche/s0/c/0/0/0/0", r"labels/niche/s0/c/0/0/0/0.*truncated"),
    ],
)
def test_damaged_niche_labels_are_store_errors(tmp_path: Path, victim: str, message: str) -> None:
    w = _writer(tmp_path / "n.zarr", niche=True)
    w.write_record(0, 0.0, fields=None, labels=None, cells={}, metrics={}, niche=_sites(0))
    (tmp_path / "n.zarr" / victim).unlink()
    with pytest.raises(StoreError, match=message):
        open_run(tmp_path / "n.zarr")


# ---------------------------------------------------------------------- a kill
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    import niche3d.io._atomic as atomic
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario

    SHAPE = (8, 10, 12)
    def sites(i):
        rng = np.random.default_rng(i)
        return rng.choice(np.array([0, 1, 2, 3], np.uint8), size=SHAPE, p=[0.7, 0.15, 0.1, 0.05])

    path, mode, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kill_at >= 0:
        # die half-way through writing the kill_at-th niche-label shard
        real = atomic.atomic_write_bytes
        count = {"n": 0}

        def dying(p, data, *, durable=True):
            if "labels/niche/s0/c/" in str(p):
                count["n"] += 1
                if count["n"] == kill_at:
                    mv = memoryview(data).cast("B")
                    tmp = Path(p).parent / ("." + Path(p).name + ".dying" + atomic.TEMP_SUFFIX)
                    tmp.parent.mkdir(parents=True, exist_ok=True)  # a record's own directory
                    with open(tmp, "wb") as f:
                        f.write(mv[: len(mv) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(p, data, durable=durable)

        atomic.atomic_write_bytes = dying
    if mode == "create":
        sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
        w = RunWriter.create(path, scenario=sc, labels=np.ones(SHAPE, np.uint8), voxel_um=10.0,
                             record_hours=1.0, n_records=8, fields=[], seed=1, code_version="test",
                             dt_hours=1.0, niche=True)
    else:
        w = RunWriter.open_append(path)
    for i in range(w.n_records_written, 8):
        w.write_record(i, float(i), fields=None, labels=None, cells={}, metrics={"n": float(i)},
                       niche=sites(i))
        print("written", i, flush=True)
    print("done", flush=True)
    """
)


def _child(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=300)


def test_kill_while_writing_a_niche_record_keeps_earlier_records(tmp_path: Path) -> None:
    """Killed half-way through writing record 3's niche data file: the store opens with
    the 3 reported records and their exact maps, and writing continues from there to a
    complete store."""
    path = tmp_path / "run.zarr"
    r = _child(str(path), "create", "4")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("written")] == [f"written {i}" for i in range(3)]
    assert list(path.rglob("*.dying*"))
    run = open_run(path)
    assert run.n_records == 3
    niche = np.asarray(run.niche)
    for i in range(3):
        np.testing.assert_array_equal(niche[i], _sites(i))
    r = _child(str(path), "append", "-1")
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    niche = np.asarray(open_run(path).niche)
    assert niche.shape == (8, *SHAPE)
    for i in range(8):
        np.testing.assert_array_equal(niche[i], _sites(i))
