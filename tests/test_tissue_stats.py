"""Geometry statistics against analytic shapes and hand-built lattices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from niche3d.tissue import (
    Lattice,
    Tissue,
    TissueConfig,
    format_geometry_report,
    geometry_report,
    geometry_stats,
    local_thickness,
)
from niche3d.tissue.stats import edt


# ----------------------------------------------------------------------------- local thickness
@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8, 11])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slab_thickness_is_n_plus_half_voxel(n: int, axis: int) -> None:
    # an axis-aligned slab of n voxels: n + 0.5 voxels (the half-voxel surface convention)
    m = np.zeros((24, 24, 24), bool)
    sl = [slice(None)] * 3
    sl[axis] = slice(6, 6 + n)
    m[tuple(sl)] = True
    lt = local_thickness(m, 10.0)
    assert np.allclose(lt[m], 10.0 * (n + 0.5))
    assert (lt[~m] == 0).all()


@pytest.mark.parametrize("d", [6.0, 9.0, 12.0, 15.0])
def test_rod_and_ball_diameter_within_a_voxel(d: float) -> None:
    zz, yy, xx = np.mgrid[:40, :40, :40].astype(float)
    rod = (yy - 19.3) ** 2 + (xx - 20.1) ** 2 < (d / 2) ** 2
    ball = (zz - 19.7) ** 2 + (yy - 19.3) ** 2 + (xx - 20.1) ** 2 < (d / 2) ** 2
    for m in (rod, ball):
        mean = float(local_thickness(m, 1.0)[m].mean())
        # the rasterised shape measures d - 0.5 +- 0.5 voxel
        assert abs(mean - (d - 0.5)) <= 0.6


def test_local_thickness_scales_with_voxel_size() -> None:
    m = np.zeros((16, 16, 16), bool)
    m[4:11] = True
    assert np.allclose(local_thickness(m, 2.0)[m], 2.0 * local_thickness(m, 1.0)[m])


def test_local_thickness_takes_the_largest_sphere() -> None:
    # a thin plate (3 voxels) attached to a thick block (11 voxels): block voxels away from
    # the junction get 11.5, plate voxels away from the block and the plate's end 3.5
    m = np.zeros((30, 30, 40), bool)
    m[:, :, 2:13] = True
    m[:, 13:16, 13:38] = True
    lt = local_thickness(m, 1.0)
    assert np.allclose(lt[:, :6, 2:13], 11.5)
    assert np.allclose(lt[:, 24:, 2:13], 11.5)
    assert np.allclose(lt[5:25, 13:16, 20:35], 3.5)


def test_local_thickness_edge_cases_and_errors() -> None:
    assert (local_thickness(np.zeros((5, 5, 5), bool)) == 0).all()
    assert np.isnan(local_thickness(np.ones((5, 5, 5), bool))).all()
    with pytest.raises(ValueError, match="3D"):
        local_thickness(np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="boolean"):
        local_thickness(np.zeros((5, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="voxel_um"):
        local_thickness(np.zeros((5, 5, 5), bool), -1.0)


def test_edt_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for shape, p in (((17, 23, 31), 0.01), ((30, 30, 30), 0.001), ((5, 6, 7), 0.3)):
        m = rng.random(shape) < p
        m[2, 3, 4] = True
        ref = ndimage.distance_transform_edt(~m, sampling=2.5)
        assert np.allclose(edt(m, 2.5), ref, atol=1e-4)
    assert np.isinf(edt(np.zeros((4, 4, 4), bool))).all()


# ----------------------------------------------------------------------------- lattice stats
def _slab_lattice() -> Lattice:
    """x-slab of bone (5 voxels) lined by endosteum, one straight sinusoid along z.

    (The lattice border is open: a phase touching it is taken to continue beyond.)
    """
    lab = np.full((20, 30, 30), Tissue.MARROW, np.uint8)
    lab[:, :, 3:8] = Tissue.BONE
    lab[:, :, 2] = Tissue.ENDOSTEUM
    lab[:, :, 8] = Tissue.ENDOSTEUM
    lab[:, 14:17, 19:22] = Tissue.SINUSOID  # 3x3 lumen
    ring = ndimage.binary_dilation(lab == Tissue.SINUSOID, np.ones((3, 3, 3), bool))
    lab[ring & (lab == Tissue.MARROW)] = Tissue.ENDOTHELIUM
    return Lattice(lab, 10.0)


def test_stats_of_a_hand_built_lattice() -> None:
    lat = _slab_lattice()
    st = geometry_stats(lat)
    assert st["bv_tv"] == pytest.approx(5 / 30)
    assert st["tb_th_um"] == pytest.approx(55.0)  # 5-voxel slab, +0.5 voxel
    nonbone = 20 * 30 * 25
    assert st["vascular_fraction"] == pytest.approx(20 * 25 / nonbone)
    assert st["sinusoid_diameter_um"] == pytest.approx(35.0)  # 3-voxel square lumen
    assert st["sinusoid_connectivity"] == 1.0
    # one straight centre line of 20 voxels (19 links of 10 µm) in the non-bone volume
    lv = 19 * 10.0 / (nonbone * 1000.0)
    assert st["sinusoid_spacing_um"] == pytest.approx(1 / math.sqrt(lv), rel=0.06)
    # distances: a marrow voxel next to the wall is 10 µm from the sinusoid
    d = st["dist_marrow_to_sinusoid_um"]
    assert d.min() == pytest.approx(10.0)
    assert np.isinf(st["dist_marrow_to_arteriole_um"]).all()
    assert math.isnan(st["mean_dist_marrow_to_arteriole_um"])
    assert st["sno_share_of_endosteum"] == 0.0


def test_connectivity_is_largest_component_share() -> None:
    lab = np.full((10, 20, 20), Tissue.MARROW, np.uint8)
    lab[:, 2:4, 2:4] = Tissue.SINUSOID  # 40 voxels
    lab[:5, 12:14, 12:14] = Tissue.SINUSOID  # 20 voxels, separate
    st = geometry_stats(Lattice(lab, 5.0))
    assert st["sinusoid_connectivity"] == pytest.approx(40 / 60)
    assert st["sinusoid_components"] == 2.0


def test_outside_voxels_are_not_tissue() -> None:
    lab = np.full((10, 10, 20), Tissue.OUTSIDE, np.uint8)
    lab[:, :, :10] = Tissue.MARROW
    lab[:, :, :2] = Tissue.BONE
    st = geometry_stats(Lattice(lab, 5.0))
    assert st["bv_tv"] == pytest.approx(0.2)
    assert math.isnan(st["vascular_fraction"]) is False and st["vascular_fraction"] == 0.0
    assert math.isnan(st["sinusoid_diameter_um"])


def test_report_rows_and_formatting() -> None:
    lat = _slab_lattice()
    cfg = TissueConfig()
    rows = geometry_report(lat, cfg)
    names = [r[0] for r in rows]
    assert names[:3] == ["BV/TV", "Tb.Th", "Tb.Sp"]
    for name, meas, target, unit in rows:
        assert isinstance(name, str) and isinstance(meas, float) and isinstance(unit, str)
        assert target is None or isinstance(target, float)
    by = {r[0]: r for r in rows}
    assert by["BV/TV"][2] == 0.11
    assert by["Tb.Th"][1] == pytest.approx(55.0) and by["Tb.Th"][3] == "µm"
    text = format_geometry_report(rows)
    lines = text.splitlines()
    assert len(lines) == len(rows) + 1  # header + one line per statistic
    assert lines[2].split()[:3] == ["Tb.Th", "55", "55"]
    assert "+0.0 %" in lines[2]
    assert format_geometry_report([]) == ""


def test_report_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="TissueConfig"):
        geometry_report(_slab_lattice(), {"bv_tv": 0.1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Lattice"):
        geometry_stats(np.zeros((4, 4, 4), np.uint8))  # type: ignore[arg-type]


def test_public_namespace_is_pinned() -> None:
    import niche3d.tissue as t

    contract = {
        "Tissue", "Lattice", "build_lattice", "generate_marrow", "load_label_image",
        "geometry_stats", "geometry_report", "format_geometry_report", "TissueConfig",
    }
    assert contract <= set(t.__all__)
    for name in t.__all__:
        assert hasattr(t, name), name


def test_foam_design_meets_its_own_tables_and_rejects_bad_targets() -> None:
    from niche3d.tissue.generator import (
        _FOAM_G,
        _FOAM_SP,
        _FOAM_TH,
        _foam_bv_full,
        _table,
        foam_design,
    )

    d, s, f = foam_design(0.15, 50.0, 200.0)
    x = d / s
    assert d * _table(_FOAM_TH, x, f) == pytest.approx(50.0, rel=1e-3)
    assert s * _table(_FOAM_SP, x, f) == pytest.approx(200.0, rel=1e-3)
    assert _foam_bv_full(x) * _table(_FOAM_G, x, f) == pytest.approx(0.15, rel=1e-2)
    for bad in ((0.0, 50.0, 200.0), (0.1, -1.0, 200.0), (1.2, 50.0, 200.0), (0.1, 50.0, float("nan"))):
        with pytest.raises(ValueError):
            foam_design(*bad)
