"""Import of segmented label images: TIFF (ImageJ, OME), zarr, OME-Zarr; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from niche3d.tissue import (
    ImageConfig,
    Tissue,
    TissueConfig,
    build_lattice,
    load_label_image,
    read_label_image,
)

# label values of a typical segmentation export, mapped to tissue names
TABLE = {"0": "marrow", "1": "bone", "7": "sinusoid", "9": "arteriole"}


def _labels(shape: tuple[int, int, int] = (12, 16, 20)) -> np.ndarray:
    """Bone slab (x 3..6), a sinusoid along z (3x3), values as in TABLE."""
    a = np.zeros(shape, np.uint16)
    a[:, :, 3:7] = 1
    a[:, 7:10, 13:16] = 7
    return a


def _imagej(path: Path, data: np.ndarray, vz: float, vxy: float, hyperstack: bool = True) -> Path:
    if hyperstack:  # T, Z, C, Y, X with T = C = 1, as Fiji saves a hyperstack
        data = data[None, :, None]
        axes = "TZCYX"
    else:
        axes = "ZYX"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1.0 / vxy, 1.0 / vxy),
        metadata={"spacing": vz, "unit": "micron", "axes": axes},
    )
    return path


def _cfg(path: Path, **kw: object) -> TissueConfig:
    return TissueConfig(source="image", image=ImageConfig(path=path, labels=TABLE, **kw))


def test_imagej_hyperstack_round_trip(tmp_path: Path) -> None:
    src = _labels()
    p = _imagej(tmp_path / "seg.tif", src, 4.0, 4.0)
    data, vox, origin = read_label_image(p)
    assert data.shape == src.shape and vox == pytest.approx((4.0, 4.0, 4.0))
    assert "ImageJ" in origin
    lat = load_label_image(_cfg(p, derive_endosteum=False, derive_endothelium=False, derive_stroma=False), 4.0)
    assert lat.shape == src.shape and lat.voxel_um == 4.0
    assert np.array_equal(lat.labels == Tissue.BONE, src == 1)
    assert np.array_equal(lat.labels == Tissue.SINUSOID, src == 7)
    assert lat.import_report.voxel_um_from == "ImageJ metadata"


def test_resampling_to_the_scenario_voxel(tmp_path: Path) -> None:
    src = _labels((12, 16, 20))
    # anisotropic image: 8 µm in z, 4 µm in y/x -> lattice at 8 µm is (12, 8, 10)
    p = _imagej(tmp_path / "aniso.tif", src, 8.0, 4.0, hyperstack=False)
    lat = load_label_image(_cfg(p, derive_endosteum=False, derive_endothelium=False, derive_stroma=False), 8.0)
    assert lat.shape == (12, 8, 10)
    # bone x 3..6 at 4 µm = 12..28 µm; 8 µm voxel j samples its centre 8 j + 4 µm, i.e.
    # source voxel 2 j + 1: j = 1, 2 hit bone (source 3, 5), j = 3 does not (source 7)
    bone_cols = np.flatnonzero((lat.labels == Tissue.BONE).all(axis=(0, 1)))
    assert bone_cols.tolist() == [1, 2]
    assert (lat.labels == Tissue.BONE).sum() == 12 * 8 * len(bone_cols)
    # up-sampling by 2 doubles every axis
    lat2 = load_label_image(_cfg(p, derive_endosteum=False, derive_endothelium=False, derive_stroma=False), 2.0)
    assert lat2.shape == (48, 32, 40)
    assert (lat2.labels == Tissue.BONE).sum() == 4 * 2 * 2 * (src == 1).sum()


def test_derived_layers(tmp_path: Path) -> None:
    p = _imagej(tmp_path / "seg.tif", _labels(), 4.0, 4.0)
    cfg = _cfg(p)
    lat = load_label_image(cfg, 4.0, seed=3)
    lab = lat.labels
    assert set(lat.import_report.derived) == {"endosteum", "endothelium", "stroma"}
    lining = (lab == Tissue.ENDOSTEUM) | (lab == Tissue.SNO)
    # a one-voxel lining on both faces of the bone slab (x = 2 and x = 7)
    assert np.array_equal(np.flatnonzero(lining.any(axis=(0, 1))), [2, 7])
    assert (lab == Tissue.SNO).sum() == round(cfg.sno_fraction * lining.sum())
    # the lumen is wrapped: 5x5 ring minus 3x3 lumen = 16 wall voxels per slice
    assert (lab == Tissue.ENDOTHELIUM).sum() == 16 * 12
    # stroma within 8 µm (2 voxels) of the wall
    assert (lab == Tissue.STROMA).sum() > 0
    d = lat.dist_sinusoid_um[lab == Tissue.STROMA]
    assert d.max() <= 8.0 + 4.0 * np.sqrt(2) + 1e-6


def test_imported_shape_wins_and_is_reported(tmp_path: Path) -> None:
    p = _imagej(tmp_path / "seg.tif", _labels(), 4.0, 4.0)
    lat = build_lattice((48, 96, 96), 4.0, _cfg(p), seed=1)
    assert lat.shape == (12, 16, 20)
    rep = lat.import_report
    assert rep.shape_mismatch and rep.shape_requested == (48, 96, 96)
    assert any("imported shape is used" in line for line in rep.lines())


def test_zarr_array_and_ome_zarr(tmp_path: Path) -> None:
    src = _labels()
    arr = zarr.create_array(tmp_path / "plain.zarr", shape=src.shape, dtype=src.dtype, chunks=src.shape)
    arr[...] = src
    arr.attrs["voxel_um"] = 4.0
    lat = load_label_image(_cfg(tmp_path / "plain.zarr", derive_endosteum=False), 4.0)
    assert (lat.labels == Tissue.BONE).sum() == (src == 1).sum()
    # OME-Zarr 0.5 image with a t axis of length 1 and nanometre units
    g = zarr.open_group(tmp_path / "img.ome.zarr", mode="w")
    g.create_array("s0", shape=(1, *src.shape), dtype=src.dtype, chunks=(1, *src.shape))[...] = src[None]
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "t", "type": "time", "unit": "hour"},
                    {"name": "z", "type": "space", "unit": "nanometer"},
                    {"name": "y", "type": "space", "unit": "nanometer"},
                    {"name": "x", "type": "space", "unit": "nanometer"},
                ],
                "datasets": [
                    {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 4000.0, 4000.0, 4000.0]}]}
                ],
            }
        ],
    }
    data, vox, origin = read_label_image(tmp_path / "img.ome.zarr")
    assert data.shape == src.shape and vox == pytest.approx((4.0, 4.0, 4.0)) and origin == "OME-Zarr scale"
    lat2 = load_label_image(_cfg(tmp_path / "img.ome.zarr", derive_endosteum=False), 2.0)
    assert lat2.shape == (24, 32, 40)


def test_voxel_size_from_scenario_and_conflict(tmp_path: Path) -> None:
    src = _labels()
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, src)  # no resolution metadata
    lat = load_label_image(_cfg(plain, voxel_um=5.0), 5.0)
    assert lat.import_report.voxel_um_from == "tissue.image.voxel_um"
    with pytest.raises(ValueError, match="no voxel size"):
        load_label_image(_cfg(plain), 5.0)
    ij = _imagej(tmp_path / "ij.tif", src, 4.0, 4.0)
    with pytest.raises(ValueError, match="voxel_um = 5"):
        load_label_image(_cfg(ij, voxel_um=5.0), 5.0)
    # agreeing values are fine
    assert load_label_image(_cfg(ij, voxel_um=4.0), 4.0).shape == src.shape


def test_bad_images_are_clear_errors(tmp_path: Path) -> None:
    src = _labels()
    flt = tmp_path / "float.tif"
    tifffile.imwrite(flt, src.astype(np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        load_label_image(_cfg(flt, voxel_um=4.0), 4.0)
    unk = src.copy()
    unk[0, 0, 0] = 42
    p = tmp_path / "unknown.tif"
    tifffile.imwrite(p, unk)
    with pytest.raises(ValueError, match="label values 42 are not mapped"):
        load_label_image(_cfg(p, voxel_um=4.0), 4.0)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, src[0])
    with pytest.raises(ValueError, match="2D"):
        load_label_image(_cfg(flat, voxel_um=4.0), 4.0)
    chan = tmp_path / "channels.tif"
    tifffile.imwrite(chan, np.stack([src, src], axis=1), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(ValueError, match="axis 'C' has length 2"):
        load_label_image(_cfg(chan, voxel_um=4.0), 4.0)
    with pytest.raises(ValueError, match="does not exist"):
        load_label_image(_cfg(tmp_path / "missing.tif", voxel_um=4.0), 4.0)
    txt = tmp_path / "labels.csv"
    txt.write_text("1,2,3")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_label_image(_cfg(txt, voxel_um=4.0), 4.0)
    with pytest.raises(ValueError, match="voxel_um"):
        load_label_image(_cfg(flt, voxel_um=4.0), 0.0)


def test_empty_table_means_niche3d_codes(tmp_path: Path) -> None:
    codes = np.full((8, 8, 8), Tissue.MARROW, np.uint8)
    codes[:, :, :2] = Tissue.BONE
    codes[:, :, 2] = Tissue.ENDOSTEUM
    p = tmp_path / "codes.tif"
    tifffile.imwrite(p, codes)
    cfg = TissueConfig(source="image", image=ImageConfig(path=p, voxel_um=8.0))
    lat = load_label_image(cfg, 8.0)
    assert np.array_equal(lat.labels, codes)  # nothing derived: the lining is present
    assert lat.import_report.derived == []


# ----------------------------------------------------------------------------- checked first
def _zarr_array(path: Path, shape: tuple[int, ...], dtype: str = "uint8", **attrs: object) -> Path:
    """A zarr label array with only its metadata written (no chunk: nothing to read)."""
    arr = zarr.create_array(str(path), shape=shape, chunks=(8, 8, 8), dtype=dtype, fill_value=0)
    arr.attrs.update(attrs)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.tif", "does not exist"),
        (lambda d: _zarr_array(d / "huge.zarr", (5000, 5000, 5000), voxel_um=8.0), "more than"),
        (lambda d: _zarr_array(d / "tiny.zarr", (1, 1, 1), voxel_um=8.0), "every axis must be 8..4096"),
        (lambda d: _zarr_array(d / "zero.zarr", (16, 16, 16), voxel_um=0.0), "allowed: 0.01"),
        (lambda d: _zarr_array(d / "neg.zarr", (16, 16, 16), voxel_um=-8.0), "allowed: 0.01"),
        (lambda d: _zarr_array(d / "nm.zarr", (16, 16, 16), voxel_um=1e-9), "allowed: 0.01"),
        (lambda d: _zarr_array(d / "float.zarr", (16, 16, 16), "float32", voxel_um=8.0), "integer labels"),
    ],
)
def test_bad_images_are_refused_from_their_metadata(tmp_path: Path, make, message: str,  # type: ignore[no-untyped-def]
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from niche3d.tissue import LabelImageError, check_label_image

    path = make(tmp_path)
    monkeypatch.setattr(np, "asarray", None)  # nothing may be read: any read would fail
    with pytest.raises(LabelImageError, match=message):
        check_label_image(_cfg(path), 8.0)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    from niche3d.tissue import LabelImageError

    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    with pytest.raises(LabelImageError, match="not a regular file"):
        load_label_image(_cfg(fifo), 8.0)


def test_cli_reports_image_errors_with_exit_2_before_compiling(tmp_path: Path) -> None:
    import subprocess
    import sys

    scen = tmp_path / "img.toml"
    scen.write_text('[tissue]\nsource = "image"\n[tissue.image]\npath = "nowhere.tif"\n'
                    '[tissue.image.labels]\n0 = "marrow"\n1 = "bone"\n')
    r = subprocess.run([sys.executable, "-m", "niche3d.cli", "run", str(scen), "--out",
                        str(tmp_path / "out.zarr")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "nowhere.tif" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr and "compiling" not in r.stderr
    assert not (tmp_path / "out.zarr").exists()
