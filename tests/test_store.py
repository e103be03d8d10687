"""Run store: OME-Zarr 0.5 validity, napari-ome-zarr reading, file budget, round trips, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from niche3d.io import RunWriter, StoreError, open_run, read_checkpoint
from niche3d.io._format import FORMAT_VERSION
from niche3d.scenario import Scenario
from niche3d.tissue.codes import TISSUE_COLORS, TISSUE_NAMES, Tissue

VOXEL = 8.0
REC_H = 24.0
FIELDS = [("cxcl12", "nM", (0.0, 5.0)), ("scf", "ng/mL", (0.0, 2.0))]
STATES = ["dormant", "active", "mpp", "circulating", "dead"]
KINDS = ["birth", "division", "state_change", "death", "egress", "homing"]


def _scenario(shape: tuple[int, int, int]) -> Scenario:
    return Scenario.default().with_overrides(
        {"domain.shape": list(shape), "domain.voxel_um": VOXEL, "name": "store-test"}
    )


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    lab = np.full(shape, Tissue.MARROW, dtype=np.uint8)
    lab[: shape[0] // 4] = Tissue.BONE
    lab[shape[0] // 4] = Tissue.ENDOSTEUM
    lab[:, :, shape[2] // 2] = Tissue.SINUSOID
    return lab


def _field(i: int, k: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth, record-dependent field values (exactly representable in float32)."""
    z, y, x = np.indices(shape, dtype=np.float32)
    return ((z + 2 * y + 3 * x) * 0.25 + i + 10 * k).astype(np.float32)


def _cells(i: int, n: int, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    z = rng.integers(0, shape[0], n).astype(np.int32)
    z[rng.random(n) < 0.2] = -1  # circulating
    y = np.where(z < 0, -1, rng.integers(0, shape[1], n)).astype(np.int32)
    x = np.where(z < 0, -1, rng.integers(0, shape[2], n)).astype(np.int32)
    return {
        "track_id": np.arange(n, dtype=np.int64) + 1000 * i,
        "parent": np.full(n, -1, dtype=np.int64),
        "generation": rng.integers(0, 5, n).astype(np.int32),
        "state": rng.integers(0, len(STATES), n).astype(np.int8),
        "z": z,
        "y": y,
        "x": x,
        "bound": rng.random(n) < 0.5,
        "donor": np.zeros(n, dtype=bool),
        "divisions": rng.integers(0, 9, n).astype(np.int16),
        "cycle_clock_h": rng.random(n) * 20.0,
    }


def _write_run(
    path: Path,
    shape: tuple[int, int, int] = (16, 20, 24),
    n_records: int = 4,
    fields: list = FIELDS,
    seed: int = 7,
) -> dict:
    """Write a store and return everything written, for comparison."""
    rng = np.random.default_rng(seed)
    lab = _labels(shape)
    w = RunWriter.create(
        path,
        scenario=_scenario(shape),
        labels=lab,
        voxel_um=VOXEL,
        record_hours=REC_H,
        n_records=n_records,
        fields=fields,
        seed=seed,
        code_version="0.1.0",
        dt_hours=1.0,
    )
    w.set_categories("cells", "state", STATES)
    w.set_categories("events", "kind", KINDS)
    out: dict = {"cells": [], "events": [], "metrics": [], "labels": [], "times": []}
    for i in range(n_records):
        t = i * REC_H
        cells = _cells(i, 5 + 3 * i, shape, rng)
        new_lab = None
        if i == 2:  # osteoblast ablation: endosteum -> marrow
            new_lab = lab.copy()
            new_lab[new_lab == Tissue.ENDOSTEUM] = Tissue.MARROW
            lab = new_lab
        metrics = {"n_hsc": float(len(cells["track_id"])), "mean_dist_sinusoid_um": 10.0 + i}
        w.write_record(
            i,
            t,
            fields={n: _field(i, k, shape) for k, (n, _, _) in enumerate(fields)} if fields else None,
            labels=new_lab,
            cells=cells,
            metrics=metrics,
        )
        ev = {
            "t_hours": t + np.array([0.5, 1.5]),
            "kind": np.array([1, 3], dtype=np.int8),
            "cell": np.array([i, i + 1], dtype=np.int64),
            "z": np.array([1, -1], dtype=np.int32),
            "y": np.array([2, -1], dtype=np.int32),
            "x": np.array([3, -1], dtype=np.int32),
        }
        w.append_events(ev)
        out["cells"].append(cells)
        out["events"].append(ev)
        out["metrics"].append(metrics)
        out["labels"].append(lab)
        out["times"].append(t)
    out["writer"] = w
    out["shape"] = shape
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("store") / "run.zarr"
    return path, _write_run(path)


# ---------------------------------------------------------------------- OME-Zarr
def test_root_image_and_labels_validate_strictly(store: tuple[Path, dict]) -> None:
    from ome_zarr_models.v05 import Image, ImageLabel
    from ome_zarr_models.v05.labels import Labels

    path, _ = store
    g = zarr.open_group(path, mode="r")
    img = Image.from_zarr(g)
    ms = img.attributes.ome.multiscales[0]
    assert [a.name for a in ms.axes] == ["t", "c", "z", "y", "x"]
    assert [a.unit for a in ms.axes] == ["hour", None, "micrometer", "micrometer", "micrometer"]
    ds = ms.datasets[0]
    assert ds.path == "s0"
    assert list(ds.coordinateTransformations[0].scale) == [REC_H, 1.0, VOXEL, VOXEL, VOXEL]
    assert list(ds.coordinateTransformations[1].translation) == [0, 0, VOXEL / 2, VOXEL / 2, VOXEL / 2]
    omero = g.attrs["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == ["cxcl12", "scf"]
    for ch, (_, _, (lo, hi)) in zip(omero["channels"], FIELDS, strict=True):
        assert (ch["window"]["start"], ch["window"]["end"]) == (lo, hi)
        assert (ch["window"]["min"], ch["window"]["max"]) == (lo, hi)
    assert omero["channels"][0]["color"] != omero["channels"][1]["color"]

    lab = ImageLabel.from_zarr(g["labels/tissue"])
    il = lab.attributes.ome.image_label
    assert il.version == "0.5"
    colors = {c.label_value: tuple(c.rgba) for c in il.colors}
    assert colors == {int(k): tuple(round(255 * v) for v in rgba) for k, rgba in TISSUE_COLORS.items()}
    names = {p.label_value: p.model_extra["name"] for p in il.properties}
    assert names == TISSUE_NAMES
    lms = lab.attributes.ome.multiscales[0]
    assert [a.name for a in lms.axes] == ["t", "z", "y", "x"]
    labels = Labels.from_zarr(g["labels"])
    assert labels.attributes.ome.labels == ["tissue"]


def test_niche3d_attributes(store: tuple[Path, dict]) -> None:
    path, written = store
    a = json.loads((path / "zarr.json").read_text())["attributes"]["niche3d"]
    assert a["seed"] == 7 and a["code_version"] == "0.1.0"
    assert a["voxel_um"] == VOXEL and a["record_hours"] == REC_H and a["dt_hours"] == 1.0
    assert a["units"] == {"time": "hour", "space": "micrometer"}
    assert a["n_records_written"] == 4
    assert Scenario.from_dict(__import__("tomllib").loads(a["scenario"])) == _scenario(written["shape"])
    assert a["format"] == "niche3d-run" and a["format_version"] == FORMAT_VERSION == 3
    assert a["created"].endswith("+00:00")


def test_napari_ome_zarr_reader_opens_store(store: tuple[Path, dict]) -> None:
    from napari_ome_zarr import napari_get_reader

    path, written = store
    reader = napari_get_reader(str(path))
    assert callable(reader)
    layers = reader(str(path))
    images = [ly for ly in layers if ly[2] == "image"]
    labels = [ly for ly in layers if ly[2] == "labels"]
    assert [ly[1]["name"].split(": ")[-1] for ly in images] == ["cxcl12", "scf"]
    shape = written["shape"]
    for k, (data, props, _) in enumerate(images):
        assert data[0].shape == (4, *shape)
        assert list(props["contrast_limits"]) == list(FIELDS[k][2])
        assert props["units"] == ("hour", "micrometer", "micrometer", "micrometer")
        assert list(props["scale"]) == [REC_H, VOXEL, VOXEL, VOXEL]
        np.testing.assert_array_equal(np.asarray(data[0][3]), _field(3, k, shape))
    (ldata, lprops, _), = labels
    assert lprops["name"] == "tissue"
    np.testing.assert_array_equal(np.asarray(ldata[0][1]), written["labels"][1])
    np.testing.assert_array_equal(np.asarray(ldata[0][3]), written["labels"][3])
    cmap = lprops["colormap"]
    np.testing.assert_allclose(cmap[int(Tissue.BONE)], TISSUE_COLORS[Tissue.BONE], atol=0.5 / 255)
    assert lprops["features"].set_index("label_value")["name"].to_dict() == TISSUE_NAMES


def test_hundred_records_write_each_record_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 records on 64³: every record is its own data file, written once (no shard is
    rewritten: bytes written <= 1.2x the bytes the store keeps), and the unchanged tissue
    is encoded once and hard-linked for every later record."""
    import niche3d.io._atomic as atomic

    written: dict[str, int] = {}
    real = atomic.atomic_write_bytes

    def count(p, data, *, durable=True):  # type: ignore[no-untyped-def]
        rel = Path(p).relative_to(path)
        key = str(rel.parent) if rel.name.startswith("part-") else str(rel).split("/c/")[0]
        written[key] = written.get(key, 0) + memoryview(data).nbytes
        return real(p, data, durable=durable)

    monkeypatch.setattr(atomic, "atomic_write_bytes", count)
    shape = (64, 64, 64)
    path = tmp_path / "big.zarr"
    rng = np.random.default_rng(3)
    w = RunWriter.create(
        path,
        scenario=_scenario(shape),
        labels=_labels(shape),
        voxel_um=VOXEL,
        record_hours=REC_H,
        n_records=100,
        fields=FIELDS,
        seed=1,
        code_version="0.1.0",
        dt_hours=1.0,
    )
    base = [_field(0, k, shape) for k in range(2)]
    for i in range(100):
        w.write_record(
            i,
            i * REC_H,
            fields={"cxcl12": base[0] + i, "scf": base[1] - i},
            labels=None,
            cells=_cells(i, 50, shape, rng),
            metrics={"n_hsc": 50.0},
        )
        w.append_events({"t_hours": np.array([i * REC_H + 1.0]), "kind": np.array([0], np.int8)})
    files = [p for p in path.rglob("*") if p.is_file() and "checkpoint" not in p.parts]
    # per record: one image file, one tissue entry and one Parquet part per table written
    # (cells, metrics, events), plus a few dozen metadata files
    assert len(files) < 5 * 100 + 40, sorted(str(p.relative_to(path)) for p in files)
    for table in ("cells", "metrics", "events"):
        assert len(list((path / "tables" / table).glob("part-*.parquet"))) == 100
    tissue = [p for p in (path / "labels" / "tissue" / "s0" / "c").rglob("*") if p.is_file()]
    assert len(tissue) == 100 and len({p.stat().st_ino for p in tissue}) == 1  # encoded once
    image = [p for p in (path / "s0" / "c").rglob("*") if p.is_file()]
    assert len(image) == 100
    # bytes written per array == bytes kept: no record rewrites another's data
    assert written["s0"] == sum(p.stat().st_size for p in image)
    assert written["labels/tissue/s0"] == tissue[0].stat().st_size
    # a table append writes its own part and rewrites nothing
    cells = list((path / "tables" / "cells").glob("part-*.parquet"))
    assert written["tables/cells"] == sum(p.stat().st_size for p in cells)
    w.write_checkpoint({"occupancy": np.zeros(shape, np.int32)}, {"record": 100})
    run = open_run(path)
    assert run.n_records == 100
    np.testing.assert_array_equal(run.fields["cxcl12"][99].values, base[0] + 99)
    np.testing.assert_array_equal(run.fields["scf"][37].values, base[1] - 37)
    assert len(run.cells) == 100 * 50 and len(run.events) == 100


# ---------------------------------------------------------------------- open_run
def test_fields_and_tissue_lazy_with_coordinates(store: tuple[Path, dict]) -> None:
    import dask.array as da

    path, written = store
    run = open_run(path)
    shape = written["shape"]
    assert run.n_records == 4 and run.voxel_um == VOXEL and run.record_hours == REC_H
    np.testing.assert_array_equal(run.times_h, [0.0, 24.0, 48.0, 72.0])
    ds = run.fields
    assert list(ds.data_vars) == ["cxcl12", "scf"]
    for k, (name, unit, window) in enumerate(FIELDS):
        var = ds[name]
        assert var.dims == ("t", "z", "y", "x") and isinstance(var.data, da.Array)
        assert var.attrs["units"] == unit and tuple(var.attrs["window"]) == window
        for i in range(4):
            np.testing.assert_array_equal(var[i].values, _field(i, k, shape))
    np.testing.assert_allclose(ds["x"].values, (np.arange(shape[2]) + 0.5) * VOXEL)
    np.testing.assert_allclose(ds["z"].values, (np.arange(shape[0]) + 0.5) * VOXEL)
    assert ds["z"].attrs["units"] == "micrometer" and ds["t"].attrs["units"] == "hour"
    tis = run.tissue
    assert isinstance(tis.data, da.Array) and tis.dtype == np.uint8
    for i in range(4):
        np.testing.assert_array_equal(tis[i].values, written["labels"][i])
    # ablation at record 2 is kept; record 3 (labels=None) repeats it
    assert (tis[1].values == Tissue.ENDOSTEUM).sum() > 0
    assert (tis[3].values == Tissue.ENDOSTEUM).sum() == 0
    assert tis.attrs["names"] == TISSUE_NAMES
    assert run.scenario == _scenario(shape) and run.seed == 7 and run.code_version == "0.1.0"


def test_cells_round_trip(store: tuple[Path, dict]) -> None:
    path, written = store
    cells = open_run(path).cells
    exp = pd.concat(
        [pd.DataFrame(c).assign(record=i, t=i * REC_H) for i, c in enumerate(written["cells"])],
        ignore_index=True,
    )
    assert len(cells) == len(exp) == sum(5 + 3 * i for i in range(4))
    for col in ("record", "track_id", "parent", "generation", "divisions"):
        assert cells[col].dtype == np.int64
        np.testing.assert_array_equal(cells[col].to_numpy(), exp[col].to_numpy())
    for col in ("bound", "donor"):
        assert cells[col].dtype == bool
        np.testing.assert_array_equal(cells[col].to_numpy(), exp[col].to_numpy())
    np.testing.assert_array_equal(cells["t"].to_numpy(), exp["t"].to_numpy())
    np.testing.assert_array_equal(cells["cycle_clock_h"].to_numpy(), exp["cycle_clock_h"].to_numpy())
    assert isinstance(cells["state"].dtype, pd.CategoricalDtype)
    assert list(cells["state"].cat.categories) == STATES
    np.testing.assert_array_equal(cells["state"].cat.codes.to_numpy(), exp["state"].to_numpy())
    for ax in "zyx":
        vox = exp[ax].to_numpy()
        um = cells[ax].to_numpy()
        assert np.isnan(um[vox < 0]).all()
        np.testing.assert_array_equal(um[vox >= 0], (vox[vox >= 0] + 0.5) * VOXEL)
    assert (exp["z"] < 0).sum() > 0  # the data has circulating cells
    assert cells.attrs["units"]["z"] == "micrometer" and cells.attrs["units"]["t"] == "hour"
    assert cells.attrs["units"]["cycle_clock_h"] == "hour"


def test_events_and_metrics_round_trip(store: tuple[Path, dict]) -> None:
    path, written = store
    run = open_run(path)
    ev = run.events
    assert len(ev) == 8
    np.testing.assert_array_equal(ev["t_hours"], np.concatenate([e["t_hours"] for e in written["events"]]))
    assert list(ev["kind"].cat.categories) == KINDS
    assert list(ev["kind"][:2]) == ["division", "death"]
    assert ev["cell"].dtype == np.int64
    np.testing.assert_array_equal(ev["z"][::2], np.full(4, 1.5 * VOXEL))
    assert ev["z"][1::2].isna().all()
    m = run.metrics
    assert list(m.columns) == ["record", "t", "n_hsc", "mean_dist_sinusoid_um"]
    np.testing.assert_array_equal(m["record"], np.arange(4))
    np.testing.assert_array_equal(m["n_hsc"], [5.0, 8.0, 11.0, 14.0])
    np.testing.assert_array_equal(m["mean_dist_sinusoid_um"], [10.0, 11.0, 12.0, 13.0])
    assert m.attrs["units"]["mean_dist_sinusoid_um"] == "micrometer"


def test_metrics_may_gain_and_lose_columns(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    w = RunWriter.create(
        tmp_path / "m.zarr", scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL,
        record_hours=1.0, n_records=3, fields=[], seed=0, code_version="x", dt_hours=1.0,
    )
    w.write_record(0, 0.0, fields=None, labels=None, cells={}, metrics={"a": 1.0})
    w.write_record(1, 1.0, fields=None, labels=None, cells={}, metrics={"a": 2.0, "b": 5})
    w.write_record(2, 2.0, fields=None, labels=None, cells={}, metrics={"b": 6})
    m = open_run(tmp_path / "m.zarr").metrics
    np.testing.assert_array_equal(m["a"].to_numpy(), [1.0, 2.0, np.nan])
    assert m["b"].dtype == "Int64" and m["b"].isna().tolist() == [True, False, False]
    assert m["b"][1:].tolist() == [5, 6]


def test_store_without_fields_keeps_a_valid_occupancy_image(tmp_path: Path) -> None:
    from ome_zarr_models.v05 import Image

    path = tmp_path / "nofields.zarr"
    written = _write_run(path, shape=(8, 10, 12), n_records=2, fields=[])
    Image.from_zarr(zarr.open_group(path, mode="r"))
    run = open_run(path)
    assert list(run.fields.data_vars) == []
    occ = run.occupancy.values
    for i, c in enumerate(written["cells"]):
        inside = c["z"] >= 0
        expected = np.zeros((8, 10, 12), np.uint8)
        expected[c["z"][inside], c["y"][inside], c["x"][inside]] = 1
        np.testing.assert_array_equal(occ[i], expected)


def test_unrecorded_fields_and_empty_chunks_cost_no_encoding(tmp_path: Path) -> None:
    """A record without fields is a shard of empty chunks (its index alone) that every
    zarr reader reads as NaN; all-zero chunks of a label image are empty too; edge
    chunks (a shape that is no multiple of the chunk) read back exactly."""
    shape = (9, 70, 75)  # edge chunks on every axis
    lab = _labels(shape)
    w = RunWriter.create(
        tmp_path / "s.zarr", scenario=_scenario(shape), labels=lab, voxel_um=VOXEL,
        record_hours=1.0, n_records=3, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
        niche=True,
    )
    niche = np.zeros(shape, np.uint8)
    niche[2, 3, 4] = 1
    field = {n: _field(0, k, shape) for k, (n, _, _) in enumerate(FIELDS)}
    w.write_record(0, 0.0, fields=field, labels=None, cells={}, metrics={}, niche=niche)
    w.write_record(1, 1.0, fields=None, labels=None, cells={}, metrics={}, niche=niche * 2)
    w.write_record(2, 2.0, fields=field, labels=None, cells={}, metrics={}, niche=niche)
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    img = g["s0"]
    assert np.isnan(img[1]).all()
    for k, (n, _, _) in enumerate(FIELDS):
        np.testing.assert_array_equal(img[0, k], field[n])
        np.testing.assert_array_equal(img[2, k], field[n])
    shard = tmp_path / "s.zarr" / "s0" / "c" / "1" / "0" / "0" / "0" / "0"
    n_chunks = int(np.prod([s // c for s, c in zip(img.shards[1:], img.chunks[1:], strict=True)]))
    assert shard.stat().st_size == 16 * n_chunks + 4  # the index and its CRC32C
    site = g["labels/niche/s0"]
    np.testing.assert_array_equal(site[0], niche)
    np.testing.assert_array_equal(site[1], niche * 2)
    run = open_run(tmp_path / "s.zarr")
    assert np.isnan(run.fields["cxcl12"].values[1]).all()
    np.testing.assert_array_equal(run.tissue.values[2], lab)


# ---------------------------------------------------------------------- errors
def test_not_a_store_errors(tmp_path: Path, store: tuple[Path, dict]) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_run(tmp_path / "nope.zarr")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        open_run(f)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"empty.*no zarr.json"):
        open_run(tmp_path / "empty")
    zarr.open_group(tmp_path / "plain.zarr", mode="w").attrs["hello"] = 1
    with pytest.raises(StoreError, match=r"plain.zarr.*not a niche3d run store"):
        open_run(tmp_path / "plain.zarr")
    # a newer format version
    path, _ = store
    newer = tmp_path / "newer.zarr"
    shutil.copytree(path, newer)
    doc = json.loads((newer / "zarr.json").read_text())
    doc["attributes"]["niche3d"]["format_version"] = 99
    (newer / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"newer.zarr.*version 99"):
        open_run(newer)
    assert issubclass(StoreError, ValueError)


@pytest.mark.parametrize(
    ("victim", "message"),
    [
        ("s0/c/0/0/0/0/0", r"s0/c/0/0/0/0/0.*truncated"),
        ("labels/tissue/zarr.json", r"tissue label group.*missing"),
        ("tables/zarr.json", r"tables group.*missing"),
        ("tables/events/part-000000000000-*.parquet", r"tables/events: no part starts at row 0"),
        ("tables/cells/part-*.parquet", r"tables/cells: no part starts at row \d+"),
        ("s0/zarr.json", r"field image \(s0/zarr.json\) is missing"),
    ],
)
def test_truncated_store_errors(tmp_path: Path, store: tuple[Path, dict], victim: str, message: str) -> None:
    path, _ = store
    broken = tmp_path / "broken.zarr"
    shutil.copytree(path, broken)
    sorted(broken.glob(victim))[-1].unlink()
    with pytest.raises(StoreError, match=message) as info:
        open_run(broken)
    assert str(broken) in str(info.value)


def test_overwrite_rules(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    kw = dict(
        scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL, record_hours=1.0,
        n_records=1, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )
    path = tmp_path / "a.zarr"
    RunWriter.create(path, **kw)
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        RunWriter.create(path, **kw)
    RunWriter.create(path, overwrite=True, **kw)
    assert open_run(path).n_records == 0
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.csv").write_text("1,2,3")
    with pytest.raises(StoreError, match="not a niche3d run store.*refusing"):
        RunWriter.create(precious, overwrite=True, **kw)
    assert (precious / "data.csv").read_text() == "1,2,3"
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    RunWriter.create(empty, **kw)  # an empty directory is fine


def test_write_record_rejects_bad_input(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    w = RunWriter.create(
        tmp_path / "v.zarr", scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL,
        record_hours=1.0, n_records=2, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )
    good = {n: np.zeros(shape, np.float32) for n, _, _ in FIELDS}
    cells = {"track_id": np.arange(3), "state": np.zeros(3, np.int8)}
    with pytest.raises(ValueError, match="index must be the next record, 0"):
        w.write_record(1, 0.0, fields=good, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match=r"missing \['scf'\]"):
        w.write_record(0, 0.0, fields={"cxcl12": good["cxcl12"]}, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match=r"field 'scf' must have shape \(8, 8, 8\)"):
        w.write_record(0, 0.0, fields={**good, "scf": np.zeros((8, 8, 7))}, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match="writer adds them"):
        w.write_record(0, 0.0, fields=good, labels=None, cells={**cells, "t": np.zeros(3)}, metrics={})
    with pytest.raises(ValueError, match="has 2 rows but earlier columns have 3"):
        w.write_record(0, 0.0, fields=good, labels=None, cells={**cells, "x": np.zeros(2, np.int32)}, metrics={})
    with pytest.raises(ValueError, match="dtype <U1"):
        w.write_record(0, 0.0, fields=good, labels=None, cells={"name": np.array(["a"])}, metrics={})
    with pytest.raises(ValueError, match="labels must be uint8"):
        w.write_record(0, 0.0, fields=good, labels=np.zeros(shape, np.int32), cells=cells, metrics={})
    with pytest.raises(ValueError, match="t_hours must be a finite number"):
        w.write_record(0, float("nan"), fields=good, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match=r"voxel index 8 outside 0..7"):
        w.write_record(0, 0.0, fields=good, labels=None, cells={"z": np.array([8], np.int32)}, metrics={})
    assert w.n_records_written == 0  # nothing above was committed
    w.write_record(0, 0.0, fields=good, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match="t_hours must increase"):
        w.write_record(1, 0.0, fields=good, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match=r"column set is fixed.*missing \['state'\]"):
        w.write_record(1, 1.0, fields=good, labels=None, cells={"track_id": np.arange(2)}, metrics={})
    w.write_record(1, 1.0, fields=good, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match="beyond the store's n_records=2; call extend"):
        w.write_record(2, 2.0, fields=good, labels=None, cells=cells, metrics={})
    with pytest.raises(ValueError, match="events must include a 't_hours' column"):
        w.append_events({"kind": np.zeros(1, np.int8)})
    with pytest.raises(ValueError, match="table must be one of cells, events, metrics"):
        w.set_categories("cell", "state", STATES)
    with pytest.raises(ValueError, match="names must be unique"):
        w.set_categories("cells", "state", ["a", "a"])
    with pytest.raises(ValueError, match="n_more must be an integer >= 1"):
        w.extend(0)
    assert open_run(tmp_path / "v.zarr").n_records == 2


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"voxel_um": 0.0}, "voxel_um must be a finite number > 0"),
        ({"record_hours": float("inf")}, "record_hours must be a finite number > 0"),
        ({"n_records": 0}, "n_records must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"labels": np.zeros((4, 4), np.uint8)}, "labels must be a non-empty 3D uint8"),
        ({"fields": [("a", "nM", (1.0, 1.0))]}, r"window must be finite \(lo, hi\) with lo < hi"),
        ({"fields": [("a", "nM", (0, 1)), ("a", "nM", (0, 1))]}, "repeated"),
        ({"scenario": {"name": "x"}}, "scenario must be a niche3d.scenario.Scenario"),
    ],
)
def test_create_rejects_bad_parameters(tmp_path: Path, kw: dict, message: str) -> None:
    shape = (8, 8, 8)
    args = dict(
        scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL, record_hours=1.0,
        n_records=2, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )
    args.update(kw)
    expected = TypeError if "scenario" in kw else ValueError
    with pytest.raises(expected, match=message):
        RunWriter.create(tmp_path / "bad.zarr", **args)


# ---------------------------------------------------------------------- continuation
def test_extend_and_open_append_continue_a_run(tmp_path: Path) -> None:
    shape = (8, 12, 10)
    path = tmp_path / "cont.zarr"
    rng = np.random.default_rng(11)
    w = RunWriter.create(
        path, scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL, record_hours=6.0,
        n_records=3, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )
    w.set_categories("cells", "state", STATES)
    all_cells = []
    for i in range(3):
        c = _cells(i, 4, shape, rng)
        all_cells.append(c)
        w.write_record(i, 6.0 * i, fields={n: _field(i, k, shape) for k, (n, _, _) in enumerate(FIELDS)},
                       labels=None, cells=c, metrics={"n": float(i)})
    w.extend(2)
    assert w.n_records == 5
    del w
    w2 = RunWriter.open_append(path)
    assert w2.n_records_written == 3 and w2.n_records == 5 and w2.field_names == ("cxcl12", "scf")
    with pytest.raises(ValueError, match="t_hours must increase"):
        w2.write_record(3, 12.0, fields={n: _field(3, k, shape) for k, (n, _, _) in enumerate(FIELDS)},
                        labels=None, cells=all_cells[0], metrics={"n": 3.0})
    for i in range(3, 5):
        c = _cells(i, 4, shape, rng)
        all_cells.append(c)
        w2.write_record(i, 6.0 * i, fields={n: _field(i, k, shape) for k, (n, _, _) in enumerate(FIELDS)},
                        labels=None, cells=c, metrics={"n": float(i)})
    run = open_run(path)
    assert run.n_records == 5
    np.testing.assert_array_equal(run.times_h, 6.0 * np.arange(5))
    for i in range(5):
        np.testing.assert_array_equal(run.fields["scf"][i].values, _field(i, 1, shape))
        np.testing.assert_array_equal(run.tissue[i].values, _labels(shape))
    np.testing.assert_array_equal(run.cells["track_id"], np.concatenate([c["track_id"] for c in all_cells]))
    assert list(run.cells["state"].cat.categories) == STATES  # categories survive reopening


def test_open_append_refuses_non_stores(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        RunWriter.open_append(tmp_path / "missing.zarr")


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_replacement(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    path = tmp_path / "ck.zarr"
    w = RunWriter.create(
        path, scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL, record_hours=1.0,
        n_records=2, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )
    with pytest.raises(StoreError, match="no checkpoint"):
        read_checkpoint(path)
    rng = np.random.default_rng(5)
    state = {
        "occupancy": rng.integers(-1, 50, shape).astype(np.int32),
        "pos": rng.integers(0, 8, (50, 3)).astype(np.int16),
        "clock": rng.random(50),
        "bound": rng.random(50) < 0.3,
        "cxcl12": rng.random(shape).astype(np.float32),
    }
    meta = {"record": 1, "t_hours": 24.5, "step": np.int64(12), "rng": {"seed": 3, "counter": 99}}
    w.write_checkpoint(state, meta)
    got, gmeta = read_checkpoint(path)
    assert set(got) == set(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype
        np.testing.assert_array_equal(got[k], v)
    assert gmeta == {"record": 1, "t_hours": 24.5, "step": 12, "rng": {"seed": 3, "counter": 99}}
    w.write_checkpoint({"occupancy": np.zeros(shape, np.int32)}, {"record": 2})
    got2, meta2 = read_checkpoint(path)
    assert list(got2) == ["occupancy"] and meta2 == {"record": 2}
    assert open_run(path).attrs["checkpoint"]["record"] == 0
    with pytest.raises(ValueError, match="meta must be JSON-serialisable"):
        w.write_checkpoint({}, {"x": object()})
    with pytest.raises(ValueError, match="dtype object"):
        w.write_checkpoint({"x": np.array([None])}, {})
    # the checkpoint group does not disturb zarr listing or OME validation
    g = zarr.open_group(path, mode="r")
    assert sorted(k for k, _ in g.members()) == ["checkpoint", "labels", "s0", "tables"]


def test_every_store_write_goes_through_the_atomic_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import niche3d.io._atomic as atomic

    seen: list[str] = []
    real = atomic.atomic_write_bytes

    def spy(path, data, *, durable=True):  # type: ignore[no-untyped-def]
        seen.append(str(Path(path).relative_to(tmp_path / "spy.zarr")))
        return real(path, data, durable=durable)

    monkeypatch.setattr(atomic, "atomic_write_bytes", spy)
    _write_run(tmp_path / "spy.zarr", shape=(8, 8, 8), n_records=2)
    on_disk = {str(p.relative_to(tmp_path / "spy.zarr")) for p in (tmp_path / "spy.zarr").rglob("*") if p.is_file()}
    linked = {str(p.relative_to(tmp_path / "spy.zarr")) for p in (tmp_path / "spy.zarr").rglob("*")
              if p.is_file() and p.stat().st_nlink > 1}
    assert on_disk <= set(seen) | linked  # every file was written atomically (or linked so)
    assert seen.count("s0/c/0/0/0/0/0") == 1  # each record's data file is written once
    assert seen.count("s0/c/1/0/0/0/0") == 1
    assert not list((tmp_path / "spy.zarr").rglob("*niche3d-tmp"))


SMALL = (8, 8, 8)


def _small_writer(path: Path, n_records: int) -> RunWriter:
    """A store of the 8^3 test lattice with the two test fields, records every hour."""
    return RunWriter.create(
        path, scenario=_scenario(SMALL), labels=_labels(SMALL), voxel_um=VOXEL, record_hours=1.0,
        n_records=n_records, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )


def _small_record(w: RunWriter, i: int, track_ids: np.ndarray, offset: float = 0.0) -> None:
    """Record i of a _small_writer store: _field values (+ offset), metric m = i + offset."""
    w.write_record(i, float(i), fields={n: _field(i, k, SMALL) + offset for k, (n, _, _) in enumerate(FIELDS)},
                   labels=None, cells={"track_id": track_ids}, metrics={"m": i + offset})


def test_rewind_to_checkpoint_drops_later_records_and_rows(tmp_path: Path) -> None:
    shape = SMALL
    path = tmp_path / "rw.zarr"
    w = _small_writer(path, 4)

    def record(i: int, offset: float) -> None:
        _small_record(w, i, np.arange(i + 1) + int(offset), offset)
        w.append_events({"t_hours": np.array([i + 0.5]), "cell": np.array([int(offset)])})

    record(0, 0.0)
    record(1, 0.0)
    w.write_checkpoint({"step": np.array([2])}, {"record": 2})
    record(2, 0.0)
    record(3, 0.0)
    w = RunWriter.open_append(path)
    assert w.n_records_written == 4
    state, meta = w.rewind_to_checkpoint(keep_shown=False)  # a replay that may differ
    assert meta == {"record": 2} and state["step"].tolist() == [2]
    assert w.n_records_written == 2 and open_run(path).n_records == 2
    assert len(open_run(path).cells) == 1 + 2 and len(open_run(path).events) == 2
    record(2, 100.0)  # the replay may differ (e.g. after a code fix); the store follows it
    record(3, 100.0)
    run = open_run(path)
    np.testing.assert_array_equal(run.metrics["m"], [0.0, 1.0, 102.0, 103.0])
    np.testing.assert_array_equal(run.events["cell"], [0, 0, 100, 100])
    np.testing.assert_array_equal(run.cells["track_id"], [0, 0, 1, 100, 101, 102, 100, 101, 102, 103])
    np.testing.assert_array_equal(run.fields["cxcl12"][3].values, _field(3, 0, shape) + 100.0)


def test_damaged_checkpoint_is_a_store_error(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    path = tmp_path / "dc.zarr"
    w = RunWriter.create(
        path, scenario=_scenario(shape), labels=_labels(shape), voxel_um=VOXEL, record_hours=1.0,
        n_records=1, fields=FIELDS, seed=0, code_version="x", dt_hours=1.0,
    )
    w.write_checkpoint({"a": np.arange(1000)}, {"record": 0})
    f = path / "checkpoint" / "state.npz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(StoreError, match="unreadable checkpoint"):
        read_checkpoint(path)


def test_a_run_opened_during_writing_is_a_consistent_snapshot(tmp_path: Path) -> None:
    shape = SMALL
    path = tmp_path / "live.zarr"
    w = _small_writer(path, 6)

    def record(i: int) -> None:
        _small_record(w, i, np.arange(2))

    for i in range(3):
        record(i)
    live = open_run(path)
    np.testing.assert_array_equal(live.fields["scf"][0].values, _field(0, 1, shape))
    for i in range(3, 6):  # each write replaces the shard the open Run is reading
        record(i)
        assert live.n_records == 3 and len(live.cells) == 6
        for j in range(3):
            np.testing.assert_array_equal(live.fields["cxcl12"][j].values, _field(j, 0, shape))
    assert open_run(path).n_records == 6


def test_a_same_code_rewind_keeps_showing_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "rw.zarr"
    w = _small_writer(path, 4)

    def record(i: int) -> None:
        _small_record(w, i, np.arange(i + 1))

    for i in range(2):
        record(i)
    w.write_checkpoint({"step": np.array([2])}, {"record": 2})
    for i in range(2, 4):
        record(i)
    before = open_run(path)
    w = RunWriter.open_append(path)
    w.rewind_to_checkpoint()  # keep_shown: the replay is bit-identical
    shown = [open_run(path)]
    record(2)  # replayed: identical
    shown.append(open_run(path))
    record(3)
    shown.append(open_run(path))
    for run in shown:  # never fewer records or rows than before, never other values
        assert run.n_records == 4 and run.attrs["rows"] == before.attrs["rows"]
        pd.testing.assert_frame_equal(run.cells, before.cells)
        np.testing.assert_array_equal(run.fields["cxcl12"].values, before.fields["cxcl12"].values)
    assert w.n_records_written == 4
