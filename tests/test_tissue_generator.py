"""Procedural marrow generator: targets met, layers well formed, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from niche3d.tissue import (
    Lattice,
    Tissue,
    TissueConfig,
    build_lattice,
    generate_marrow,
    geometry_report,
    geometry_stats,
)

# (BV/TV, Tb.Th µm, Tb.Sp µm, sinusoid diameter µm, vascular fraction):
# C57BL/6 defaults (BIOLOGY.md), a denser BALB/c-like set, and a rod-rich set
TARGET_SETS = [
    (0.11, 55.0, 175.0, 20.0, 0.12),
    (0.20, 60.0, 150.0, 25.0, 0.08),
    (0.15, 50.0, 200.0, 15.0, 0.15),
]
SEEDS = (1, 2, 3)
TOL = 0.15  # the acceptance band


def _cfg(bv: float, th: float, sp: float, d: float, vf: float, **kw: object) -> TissueConfig:
    return TissueConfig(
        bv_tv=bv, tb_th_um=th, tb_sp_um=sp, sinusoid_diameter_um=d, vascular_fraction=vf, **kw
    )


@pytest.mark.parametrize("targets", TARGET_SETS, ids=["c57bl6", "balbc", "rodrich"])
@pytest.mark.parametrize("seed", SEEDS)
def test_bone_statistics_hit_targets(targets: tuple[float, ...], seed: int) -> None:
    # 48^3 voxels of 12 µm = 576 µm: two to three trabecular spacings per axis
    bv, th, sp, d, vf = targets
    lat = generate_marrow((48, 48, 48), 12.0, _cfg(bv, th, sp, d, vf), seed)
    st = geometry_stats(lat)
    # BV/TV is met by construction (exact voxel count)
    assert st["bv_tv"] == pytest.approx(bv, abs=0.5 / lat.size + 1e-12)
    assert st["tb_th_um"] == pytest.approx(th, rel=TOL)
    assert st["tb_sp_um"] == pytest.approx(sp, rel=TOL)


@pytest.mark.parametrize("targets", TARGET_SETS, ids=["c57bl6", "balbc", "rodrich"])
@pytest.mark.parametrize("seed", SEEDS)
def test_vessel_statistics_hit_targets(targets: tuple[float, ...], seed: int) -> None:
    # 48^3 voxels of 5 µm: sinusoids 3-5 voxels across
    bv, th, sp, d, vf = targets
    lat = generate_marrow((48, 48, 48), 5.0, _cfg(bv, th, sp, d, vf), seed)
    st = geometry_stats(lat)
    assert st["vascular_fraction"] == pytest.approx(vf, rel=TOL)
    assert st["sinusoid_diameter_um"] == pytest.approx(d, rel=TOL)
    # one connected network
    assert st["sinusoid_connectivity"] == 1.0


def test_same_seed_same_lattice_different_seed_different() -> None:
    cfg = TissueConfig()
    a = generate_marrow((24, 32, 40), 8.0, cfg, 7)
    b = generate_marrow((24, 32, 40), 8.0, cfg, 7)
    c = generate_marrow((24, 32, 40), 8.0, cfg, 8)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert (a.labels != c.labels).mean() > 0.1


def test_default_domain_gives_sensible_statistics() -> None:
    # the default homeostasis lattice: (48, 96, 96) at 8 µm (this is the run's geometry)
    cfg = TissueConfig()
    lat = build_lattice((48, 96, 96), 8.0, cfg, seed=1)
    st = geometry_stats(lat)
    assert st["bv_tv"] == pytest.approx(0.11, abs=1e-4)
    assert st["tb_th_um"] == pytest.approx(55.0, rel=TOL)
    assert st["tb_sp_um"] == pytest.approx(175.0, rel=TOL)
    assert st["vascular_fraction"] == pytest.approx(0.12, rel=TOL)
    assert st["sinusoid_diameter_um"] == pytest.approx(20.0, rel=TOL)
    assert st["sinusoid_connectivity"] > 0.95
    # HSCs need room: most of the block is enterable
    assert st["enterable_fraction"] > 0.6
    assert st["arteriole_segments"] >= 1


def _neighbours26(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool))


def test_layers_are_well_formed() -> None:
    cfg = TissueConfig(sno_fraction=0.3, stroma_scattered_fraction=0.05)
    lat = generate_marrow((40, 40, 40), 6.0, cfg, 3)
    lab = lat.labels
    bone = lab == Tissue.BONE
    lining = (lab == Tissue.ENDOSTEUM) | (lab == Tissue.SNO)
    face = ndimage.generate_binary_structure(3, 1)
    touches_bone = ndimage.binary_dilation(bone, structure=face) & ~bone
    # endosteum is exactly the one-voxel layer of non-bone voxels sharing a face with bone
    assert np.array_equal(lining, touches_bone)
    # SNO share is exact (rounded to a voxel)
    n_sno = int((lab == Tissue.SNO).sum())
    assert n_sno == round(0.3 * int(lining.sum()))
    # the lumen never touches HSC-enterable tissue (26-neighbourhood): the wall wraps it
    lumen = lab == Tissue.SINUSOID
    assert lumen.any()
    assert not (_neighbours26(lumen) & lat.enterable).any()
    # the wall is one voxel: every endothelial voxel touches the lumen
    wall = lab == Tissue.ENDOTHELIUM
    assert np.array_equal(wall & _neighbours26(lumen), wall)
    # vessels stay out of bone
    assert not (bone & (lumen | wall)).any()
    # scattered stroma: the requested share of the remaining marrow (within rounding)
    sheath_free_marrow = int((lab == Tissue.MARROW).sum())
    assert sheath_free_marrow > 0
    assert lat.fractions()["marrow"] + lat.fractions()["stroma"] > 0.5


def test_arterioles_follow_the_endosteum() -> None:
    cfg = TissueConfig(arteriole_count=3, arteriole_bone_distance_um=24.0, arteriole_diameter_um=12.0)
    lat = generate_marrow((40, 64, 64), 6.0, cfg, 5)
    art = lat.labels == Tissue.ARTERIOLE
    assert art.any()
    db = ndimage.distance_transform_edt(lat.labels != Tissue.BONE, sampling=6.0)
    # axis voxels run at the requested distance from bone (within a voxel and a radius)
    d = db[art]
    assert np.median(d) == pytest.approx(24.0, abs=6.0 + 6.0)
    # they run near the endosteum, much closer than a random marrow voxel
    assert np.median(d) < np.median(db[lat.enterable])


def test_cortical_shell_and_trabecular_bvtv() -> None:
    cfg = TissueConfig(cortical_shell=True, cortical_thickness_um=36.0)
    lat = generate_marrow((24, 48, 48), 12.0, cfg, 2)
    assert (lat.labels[:, :, :3] == Tissue.BONE).all()
    assert (lat.labels[:, :, -3:] == Tissue.BONE).all()
    st = geometry_stats(lat, cortical_um=36.0)
    assert st["bv_tv"] == pytest.approx(0.11, abs=1e-3)
    rows = geometry_report(lat, cfg)
    assert rows[0][0] == "BV/TV" and rows[0][1] == pytest.approx(0.11, abs=1e-3)


def test_zero_bone_and_zero_vessels() -> None:
    cfg = TissueConfig(bv_tv=0.0, vascular_fraction=0.0, arteriole_count=0, stroma_scattered_fraction=0.0)
    lat = generate_marrow((16, 16, 16), 8.0, cfg, 1)
    assert (lat.labels == Tissue.MARROW).all()


def test_config_seed_overrides_run_seed() -> None:
    cfg = TissueConfig(seed=11)
    a = build_lattice((16, 24, 24), 8.0, cfg, seed=1)
    b = build_lattice((16, 24, 24), 8.0, cfg, seed=2)
    c = build_lattice((16, 24, 24), 8.0, TissueConfig(), seed=11)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.labels, c.labels)
    assert isinstance(a, Lattice) and a.voxel_um == 8.0


@pytest.mark.parametrize(
    ("shape", "voxel", "seed", "match"),
    [
        ((16, 16), 8.0, 1, "shape"),
        ((4, 16, 16), 8.0, 1, "shape"),
        ((16, 16, 16), 0.0, 1, "voxel_um"),
        ((16, 16, 16), float("nan"), 1, "voxel_um"),
        ((16, 16, 16), 8.0, -1, "seed"),
        ((16, 16, 16), 8.0, 1.5, "seed"),
    ],
)
def test_bad_input_is_a_clear_error(shape: object, voxel: float, seed: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_marrow(shape, voxel, TissueConfig(), seed)  # type: ignore[arg-type]


def test_bad_config_type() -> None:
    with pytest.raises(TypeError, match="TissueConfig"):
        generate_marrow((16, 16, 16), 8.0, {"bv_tv": 0.1}, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TissueConfig"):
        build_lattice((16, 16, 16), 8.0, None, 1)  # type: ignore[arg-type]


def test_lattice_labels_are_a_read_only_copy() -> None:
    import numpy as np

    from niche3d.tissue import Lattice, Tissue

    lab = np.full((8, 8, 8), Tissue.MARROW, np.uint8)
    lat = Lattice(lab, 8.0)
    lab[0, 0, 0] = Tissue.BONE  # the caller's array is not the lattice's
    assert lat.labels[0, 0, 0] == Tissue.MARROW
    with pytest.raises(ValueError, match="read-only"):
        lat.labels[0, 0, 0] = Tissue.BONE


def test_femur_geometry_cortical_tube_metaphyses_and_sparse_diaphysis() -> None:
    from niche3d.tissue.generator import femur_cortex
    from niche3d.tissue.stats import femur_metaphyses

    cfg = TissueConfig(geometry="femur", cortical_thickness_um=40.0, metaphysis_fraction=0.2,
                       diaphysis_bv_tv_factor=0.1)
    shape = (64, 64, 320)
    lat = generate_marrow(shape, 8.0, cfg, 4)
    lab = lat.labels
    cortex = femur_cortex(shape, 8.0, 40.0)
    # the cortex is bone, a tube along x: every x section is the same ellipse of 5 voxels'
    # wall, and the cavity inside it is 2 * (32 - 5) voxels across
    assert (lab[cortex] == Tissue.BONE).all()
    assert (cortex == cortex[:, :, :1]).all()
    assert not cortex[32, 5:59, 0].any() and cortex[32, 4, 0] and cortex[32, 59, 0]
    meta = femur_metaphyses(shape, 8.0, cfg)
    dia = ~cortex & ~meta
    bone = lab == Tissue.BONE
    # BV/TV: exact in the metaphyses (both ends together), a tenth of it in the shaft
    assert bone[meta].mean() == pytest.approx(0.11, abs=1e-3)
    assert bone[dia].mean() == pytest.approx(0.011, abs=1e-3)
    rows = dict((r[0], r[1]) for r in geometry_report(lat, cfg))
    assert rows["BV/TV"] == pytest.approx(0.11, abs=1e-3)
    # the cavity holds the marrow's vessels and stroma throughout its length
    for part in (lab[:, :, :64], lab[:, :, 128:192], lab[:, :, -64:]):  # metaphyses, shaft
        for t in (Tissue.SINUSOID, Tissue.STROMA, Tissue.ENDOSTEUM):
            assert (part == t).any(), t
    np.testing.assert_array_equal(generate_marrow(shape, 8.0, cfg, 4).labels, lab)  # seeded


def test_femur_cortex_that_fills_the_section_is_a_clear_error() -> None:
    cfg = TissueConfig(geometry="femur", cortical_thickness_um=120.0)
    with pytest.raises(ValueError, match=r"cortical_thickness_um = 120 leaves no femur cavity"):
        generate_marrow((24, 24, 64), 8.0, cfg, 1)
