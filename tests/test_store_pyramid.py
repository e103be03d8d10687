"""Resolution pyramids of big lattices (niche3d.io._layout, writer, Run.pyramid, LazyArray).

The pyramid threshold (2**22 voxels) is lowered for most tests so that a small lattice
with odd lengths gets three levels; one test writes a lattice above the real threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import niche3d.io._layout as L
from niche3d.io import RunWriter, StoreError, check_store, open_run
from niche3d.io.pyramid import LazyArray
from niche3d.scenario import Scenario

SHAPE = (9, 33, 40)  # 11,880 voxels: 3 levels with the threshold at 512
VOXEL = 8.0
FIELDS = [("cxcl12", "nM", (0.0, 40.0)), ("scf", "nM", (0.0, 5.0))]


# ---------------------------------------------------------------------- the rules
def test_only_big_lattices_get_levels_and_each_halves_every_axis() -> None:
    assert L.level_factors((48, 64, 64)) == [(1, 1, 1)]  # the default lattice: one level
    assert L.level_shapes((144, 144, 1248)) == [(144, 144, 1248), (72, 72, 624)]  # the femur
    # an axis of one voxel stays; levels stop once a level is small enough
    assert L.level_factors((1, 4096, 2048)) == [(1, 1, 1), (1, 2, 2)]
    assert L.level_shapes((1, 4096, 2048))[1] == (1, 2048, 1024)
    assert L.halve((9, 33, 1)) == (5, 17, 1)
    with pytest.raises(ValueError, match="three positive lengths"):
        L.level_factors((0, 4, 4))


def test_big_lattices_are_cut_into_thin_slabs_and_small_ones_stay_whole() -> None:
    assert L.inner_chunk((48, 64, 64), 4) == (48, 64, 64)
    z, y, x = L.inner_chunk((144, 144, 1248), 4)
    assert z <= L.SLAB_DEPTH and z * y * x * 4 <= L.IMAGE_CHUNK_BYTES
    assert (z, y, x) == (8, 144, 624)  # a y-x plane decodes 2 chunks of 2.9 MB, not 104 MB


def test_mean_of_each_block_in_float32_with_edges_and_nan() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((2, 6, 4, 8), dtype=np.float32)
    want = a.reshape(2, 3, 2, 2, 2, 4, 2).mean(axis=(2, 4, 6))
    got = L.downsample_mean(a)
    assert got.dtype == np.float32 and got.shape == (2, 3, 2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # an odd length: the last coarse voxel summarises the one fine voxel at the edge
    b = np.arange(3 * 1 * 5, dtype=np.float32).reshape(3, 1, 5)
    got = L.downsample_mean(b)
    assert got.shape == (2, 1, 3)  # y has one voxel: it stays
    assert got[1, 0, 2] == b[2, 0, 4]
    assert got[0, 0, 0] == np.float32(b[:2, 0, :2].mean())
    # a record whose fields were not stored stays NaN
    assert np.isnan(L.downsample_mean(np.full((4, 4, 4), np.nan, np.float32))).all()


def test_mode_of_each_block_with_ties_to_the_higher_code() -> None:
    marrow, sinusoid, bone = 1, 5, 2
    a = np.full((2, 2, 4), marrow, np.uint8)
    a[0, 0, :3] = sinusoid  # block 0: 3 sinusoid, 5 marrow -> marrow
    a[:, :, 2:] = marrow
    a[0, :, 2:] = bone  # block 1: 4 bone, 4 marrow -> a tie: bone (the higher code)
    got = L.downsample_mode(a)
    assert got.shape == (1, 1, 2)
    assert got.tolist() == [[[marrow, bone]]]
    # sparse labels: one site among zeros survives with ignore_zero, not without
    s = np.zeros((2, 2, 2), np.uint8)
    s[1, 1, 1] = 2
    assert L.downsample_mode(s, ignore_zero=True).item() == 2
    assert L.downsample_mode(s).item() == 0
    assert L.downsample_mode(np.zeros((2, 2, 2), np.uint8), ignore_zero=True).item() == 0
    with pytest.raises(ValueError, match="uint8"):
        L.downsample_mode(np.zeros((2, 2, 2), np.int32))


# ---------------------------------------------------------------------- written by a run
def _labels(i: int) -> np.ndarray:
    lab = np.ones(SHAPE, np.uint8)
    lab[:, :4] = 2  # bone
    lab[:, 10:13, 5 + i:9 + i] = 5  # a vessel that moves at record 2
    return lab


def _write(path: Path, n: int = 4, *, grow: bool = False) -> dict:
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
    w = RunWriter.create(path, scenario=sc, labels=_labels(0), voxel_um=VOXEL, record_hours=2.0,
                         n_records=2 if grow else n, fields=FIELDS, seed=1, code_version="test",
                         dt_hours=1.0, niche=True)
    written: dict = {"fields": [], "labels": [], "niche": []}
    rng = np.random.default_rng(3)
    for i in range(n):
        if grow and i >= w.n_records:
            w.extend(n - w.n_records)
        f = {k: rng.random(SHAPE, dtype=np.float32) * 10 for k, *_ in FIELDS}
        stored = None if i == 1 else f  # record 1: fields not recorded
        lab = _labels(0 if i < 2 else 1)
        sites = np.zeros(SHAPE, np.uint8)
        sites[4, 12, 3 + i] = 2
        w.write_record(i, 2.0 * i, fields=stored, labels=lab, niche=sites,
                       cells={"track_id": np.arange(2), "z": np.array([0, 4]), "y": np.array([1, 12]),
                              "x": np.array([2, 3])}, metrics={"n": 2.0})
        written["fields"].append(stored)
        written["labels"].append(lab)
        written["niche"].append(sites)
    return written


@pytest.fixture
def low_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "PYRAMID_MIN_VOXELS", 512)


def test_every_level_is_written_with_every_record(tmp_path: Path, low_threshold: None) -> None:
    written = _write(tmp_path / "p.zarr")
    g = zarr.open_group(tmp_path / "p.zarr", mode="r")
    shapes = L.level_shapes(SHAPE)
    assert shapes == [(9, 33, 40), (5, 17, 20), (3, 9, 10)]
    for k, s in enumerate(shapes):
        assert g[f"s{k}"].shape == (4, 2, *s)
        assert g[f"labels/tissue/s{k}"].shape == (4, *s)
        assert g[f"labels/niche/s{k}"].shape == (4, *s)
    for i in range(4):
        fields = written["fields"][i]
        block = None if fields is None else np.stack([fields[k] for k, *_ in FIELDS])
        lab, sites = written["labels"][i], written["niche"][i]
        for k in range(1, 3):
            if block is not None:
                block = L.downsample_mean(block)
                np.testing.assert_array_equal(g[f"s{k}"][i], block)
            else:  # not recorded: NaN at every level
                assert np.isnan(g[f"s{k}"][i]).all()
            lab = L.downsample_mode(lab)
            sites = L.downsample_mode(sites, ignore_zero=True)
            np.testing.assert_array_equal(g[f"labels/tissue/s{k}"][i], lab)
            np.testing.assert_array_equal(g[f"labels/niche/s{k}"][i], sites)
            assert (sites > 0).sum() == 1  # the one site survives at every level
    # the unchanged tissue of record 1 shares record 0's file at every level
    for k in range(3):
        f0 = tmp_path / f"p.zarr/labels/tissue/s{k}/c/0/0/0/0"
        assert f0.stat().st_nlink == 2


def test_levels_are_valid_ome_zarr_multiscales(tmp_path: Path, low_threshold: None) -> None:
    from ome_zarr_models.v05 import Image, ImageLabel

    _write(tmp_path / "p.zarr")
    g = zarr.open_group(tmp_path / "p.zarr", mode="r")
    ms = Image.from_zarr(g).attributes.ome.multiscales[0]
    assert [d.path for d in ms.datasets] == ["s0", "s1", "s2"]
    assert ms.type == "mean"
    for k, d in enumerate(ms.datasets):
        size = VOXEL * 2**k
        assert list(d.coordinateTransformations[0].scale) == [2.0, 1.0, size, size, size]
        # a coarse voxel is centred on the block it summarises
        assert list(d.coordinateTransformations[1].translation) == [0, 0, size / 2, size / 2, size / 2]
    for name in ("tissue", "niche"):
        lms = ImageLabel.from_zarr(g[f"labels/{name}"]).attributes.ome.multiscales[0]
        assert [d.path for d in lms.datasets] == ["s0", "s1", "s2"] and lms.type == "mode"


def test_run_pyramid_reads_each_level_lazily(tmp_path: Path, low_threshold: None) -> None:
    written = _write(tmp_path / "p.zarr")
    run = open_run(tmp_path / "p.zarr")
    assert run.levels == 3
    lv = run.pyramid("scf")
    assert [x.factor for x in lv] == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert lv[2].voxel_um == (32.0, 32.0, 32.0) and lv[2].origin_um == (16.0, 16.0, 16.0)
    a = lv[0].array
    assert isinstance(a, LazyArray) and a.shape == (4, *SHAPE) and a.dtype == np.float32
    np.testing.assert_array_equal(a[3], written["fields"][3]["scf"])
    np.testing.assert_array_equal(a[-1, 4], written["fields"][3]["scf"][4])
    np.testing.assert_array_equal(a[::2, 2:5, ..., 7], np.stack([written["fields"][i]["scf"][2:5, :, 7] for i in (0, 2)]))
    np.testing.assert_array_equal(np.asarray(a), run.fields["scf"].values, strict=False)
    assert lv[1].array[0].shape == (5, 17, 20)
    np.testing.assert_array_equal(run.pyramid("tissue")[0].array[2], written["labels"][2])
    np.testing.assert_array_equal(run.pyramid("niche")[1].array[1],
                                  L.downsample_mode(written["niche"][1], ignore_zero=True))
    for bad in (np.array([0, 1]), [0], True, 1.5):
        with pytest.raises(IndexError, match="basic indexing"):
            a[bad]
    with pytest.raises(IndexError, match=r"index 4 is out of range for an axis of length 4 \(committed records\)"):
        a[4]
    # views are lazy, compose, and read only when asked
    v = a[1:, :, 3:9]
    assert isinstance(v, LazyArray) and v.shape == (3, 9, 6, 40)
    np.testing.assert_array_equal(v[-1, ::-2, 1], written["fields"][3]["scf"][::-2, 4])
    assert np.isnan(v[0, 0, 0, 0])  # record 1: fields not recorded
    assert v[1, 2, 0, 5] == written["fields"][2]["scf"][2, 3, 5]
    assert np.asarray(a[2:2]).shape == (0, *SHAPE)
    with pytest.raises(IndexError, match="too many indices"):
        a[0, 0, 0, 0, 0]
    with pytest.raises(KeyError, match=r"its images are \['cxcl12', 'scf', 'tissue', 'niche'\]"):
        run.pyramid("sno")


def test_a_small_lattice_and_an_old_store_have_one_level(tmp_path: Path) -> None:
    _write(tmp_path / "small.zarr", 2)  # the real threshold: 11,880 voxels need no pyramid
    run = open_run(tmp_path / "small.zarr")
    assert run.levels == 1 and [x.factor for x in run.pyramid("tissue")] == [(1, 1, 1)]
    assert not (tmp_path / "small.zarr" / "s1").exists()
    ref = Path(__file__).parent / "data" / "reference_stores" / "v3.zarr"
    assert open_run(ref).levels == 1


def test_levels_grow_with_the_run_and_their_files_are_checked(tmp_path: Path, low_threshold: None) -> None:
    _write(tmp_path / "g.zarr", 4, grow=True)
    assert check_store(tmp_path / "g.zarr")["n_records_written"] == 4
    run = open_run(tmp_path / "g.zarr")
    assert run.pyramid("cxcl12")[2].array.shape == (4, 3, 9, 10)
    (tmp_path / "g.zarr" / "labels" / "niche" / "s2" / "c" / "3" / "0" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"labels/niche/s2/c/3/0/0/0 of committed records is missing"):
        check_store(tmp_path / "g.zarr")


def test_a_lattice_above_the_real_threshold_gets_its_pyramid(tmp_path: Path) -> None:
    shape = (17, 256, 1000)  # 4.35 M voxels > 2**22
    sc = Scenario.default().with_overrides({"domain.shape": list(shape)})
    w = RunWriter.create(tmp_path / "big.zarr", scenario=sc, labels=np.ones(shape, np.uint8),
                         voxel_um=VOXEL, record_hours=1.0, n_records=1, fields=FIELDS[:1], seed=1,
                         code_version="test", dt_hours=1.0)
    f = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape)
    w.write_record(0, 0.0, fields={"cxcl12": f}, labels=None, cells={}, metrics={})
    run = open_run(tmp_path / "big.zarr")
    assert run.levels == 2
    coarse = run.pyramid("cxcl12")[1].array
    assert coarse.shape == (1, 9, 128, 500)
    np.testing.assert_array_equal(coarse[0, 0, 0], np.arange(500) * 2 + 0.5)  # means of x pairs


@pytest.mark.parametrize("density", [0.01, 0.5])
def test_mode_matches_counting_each_block_by_hand(density: float) -> None:
    """Both paths of downsample_mode (every block; the non-zero voxels of sparse labels)
    against a count of each 2x2x2 block, on odd lengths and random codes."""
    from collections import Counter

    rng = np.random.default_rng(7)
    a = np.where(rng.random((5, 7, 3)) < density, rng.integers(1, 5, (5, 7, 3)), 0).astype(np.uint8)
    for ignore_zero in (False, True):
        got = L.downsample_mode(a, ignore_zero=ignore_zero)
        assert got.shape == (3, 4, 2)
        for c in np.ndindex(got.shape):
            block = a[2 * c[0]: 2 * c[0] + 2, 2 * c[1]: 2 * c[1] + 2, 2 * c[2]: 2 * c[2] + 2].ravel()
            n = Counter(int(v) for v in block if v or not ignore_zero)
            want = max(n, key=lambda k: (n[k], k)) if n else 0
            assert got[c] == want, (c, block, ignore_zero)


def test_big_files_are_read_by_range_from_the_version_first_opened(
        tmp_path: Path, low_threshold: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data file above WHOLE_BYTES (here: every one) is read by byte range from one open
    file, so a plane of a femur record reads its chunks, not 150 MB; a writer renaming a
    new file into place meanwhile does not mix versions; at most MAX_OPEN files stay open."""
    import os

    from niche3d.io.reader import _SnapshotStore

    monkeypatch.setattr(_SnapshotStore, "WHOLE_BYTES", 0)
    monkeypatch.setattr(_SnapshotStore, "MAX_OPEN", 2)
    written = _write(tmp_path / "r.zarr")
    run = open_run(tmp_path / "r.zarr")
    store = run._group.store
    a = run.pyramid("cxcl12")[0].array
    for i in (0, 2, 3):
        np.testing.assert_array_equal(a[i], written["fields"][i]["cxcl12"])
        assert len(store._open) <= 2 and not store._cache
    np.testing.assert_array_equal(a[3, 0], written["fields"][3]["cxcl12"][0])
    shard = tmp_path / "r.zarr" / "s0" / "c" / "3" / "0" / "0" / "0" / "0"
    other = tmp_path / "r.zarr" / "s0" / "c" / "2" / "0" / "0" / "0" / "0"
    tmp = shard.with_suffix(".new")
    tmp.write_bytes(other.read_bytes())
    os.replace(tmp, shard)  # as a writer would: a new file renamed into place
    np.testing.assert_array_equal(a[3, 5], written["fields"][3]["cxcl12"][5])  # the version opened
    np.testing.assert_array_equal(open_run(tmp_path / "r.zarr").pyramid("cxcl12")[0].array[3],
                                  written["fields"][2]["cxcl12"])  # a new reader: the new file


def test_info_lists_the_levels(tmp_path: Path, low_threshold: None) -> None:
    from niche3d.cli import _levels_line

    _write(tmp_path / "p.zarr", 2)
    line = _levels_line(open_run(tmp_path / "p.zarr"))
    assert line == "3: s0 9 x 33 x 40 at 8 µm, s1 5 x 17 x 20 at 16 µm, s2 3 x 9 x 10 at 32 µm"


def test_napari_ome_zarr_opens_the_pyramid(tmp_path: Path, low_threshold: None) -> None:
    """Any OME-Zarr reader sees the levels: napari-ome-zarr gives every layer its 3 levels."""
    from napari_ome_zarr import napari_get_reader

    written = _write(tmp_path / "p.zarr")
    layers = napari_get_reader(str(tmp_path / "p.zarr"))(str(tmp_path / "p.zarr"))
    for data, _, kind in layers:
        assert [tuple(d.shape[-3:]) for d in data] == L.level_shapes(SHAPE), kind
    scf = next(d for d, props, kind in layers if kind == "image" and props["name"].endswith("scf"))
    np.testing.assert_array_equal(np.asarray(scf[1][3]), L.downsample_mean(written["fields"][3]["scf"]))


def test_upgrade_adds_the_levels_a_store_from_before_pyramids_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big lattice written before pyramids (one level) gets the levels a run of today
    writes, byte for byte the same values, unchanged label records hard-linked; a second
    upgrade has nothing to do."""
    from niche3d.io.upgrade import upgrade

    monkeypatch.setattr(L, "PYRAMID_MIN_VOXELS", 2**40)  # "before pyramids": one level
    written = _write(tmp_path / "old.zarr")
    assert open_run(tmp_path / "old.zarr").levels == 1
    monkeypatch.setattr(L, "PYRAMID_MIN_VOXELS", 512)
    _write(tmp_path / "new.zarr")
    done = upgrade(tmp_path / "old.zarr")
    assert done is not None and done["levels"] == {k: [(5, 17, 20), (3, 9, 10)]
                                                   for k in ("", "labels/tissue", "labels/niche")}
    old, new = open_run(tmp_path / "old.zarr"), open_run(tmp_path / "new.zarr")
    assert old.levels == 3
    for name in ("cxcl12", "scf", "tissue", "niche"):
        for a, b in zip(old.pyramid(name), new.pyramid(name), strict=True):
            assert a.factor == b.factor
            np.testing.assert_array_equal(np.asarray(a.array), np.asarray(b.array))
    assert np.isnan(np.asarray(old.pyramid("scf")[2].array[1])).all()  # record 1: not recorded
    assert (tmp_path / "old.zarr/labels/tissue/s2/c/1/0/0/0").stat().st_nlink == 2  # linked as s0
    g_old, g_new = (zarr.open_group(tmp_path / n, mode="r") for n in ("old.zarr", "new.zarr"))
    for key in ("", "labels/tissue", "labels/niche"):
        a = (g_old[key] if key else g_old).attrs["ome"]["multiscales"]
        b = (g_new[key] if key else g_new).attrs["ome"]["multiscales"]
        assert a == b
    assert check_store(tmp_path / "old.zarr")["n_records_written"] == 4
    assert upgrade(tmp_path / "old.zarr") is None
    np.testing.assert_array_equal(written["labels"][3], np.asarray(old.pyramid("tissue")[0].array[3]))


def test_a_run_without_fields_has_an_occupancy_pyramid(tmp_path: Path, low_threshold: None) -> None:
    """The occupancy image (1 where a cell sits) of a run that stores no fields: a coarse
    voxel is 1 when any voxel of its block holds a cell."""
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
    w = RunWriter.create(tmp_path / "o.zarr", scenario=sc, labels=_labels(0), voxel_um=VOXEL,
                         record_hours=1.0, n_records=1, fields=[], seed=1, code_version="test", dt_hours=1.0)
    w.write_record(0, 0.0, fields=None, labels=None, metrics={},
                   cells={"track_id": np.arange(2), "z": np.array([0, 8]), "y": np.array([1, 32]),
                          "x": np.array([3, 39])})
    run = open_run(tmp_path / "o.zarr")
    lv = run.pyramid("cells")
    assert [x.factor for x in lv] == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    coarse = np.asarray(lv[2].array[0])
    assert coarse.sum() == 2 and coarse[0, 0, 0] == 1 and coarse[2, 8, 9] == 1
    with pytest.raises(KeyError, match=r"its images are \['tissue', 'cells'\]"):
        run.pyramid("cxcl12")
