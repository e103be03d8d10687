"""The osteoblast (ANG1) signal: its per-voxel map and its effect on unbinding and dormancy.

Hand-made lattice (bone, one endosteal layer, marrow), rules switched off except the one
tested, statistics against the exact expectation at the 99.9 % level (binomial p > 0.001),
fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from cells_testdata import quiet_config
from scipy import stats

from niche3d.cells import CellModel, CellsConfig, Modifiers, Signals
from niche3d.tissue.codes import Tissue
from niche3d.tissue.contact import ang1_map as _ang1_map
from niche3d.tissue.contact import contact_maps as _contact_maps
from niche3d.tissue.lattice import Lattice

ALPHA = 0.001


def _bone_lattice(shape=(24, 24, 32)) -> Lattice:
    lab = np.full(shape, Tissue.MARROW, np.uint8)
    lab[:, :, :2] = Tissue.BONE
    lab[:, :, 2] = Tissue.ENDOSTEUM
    return Lattice(lab, 8.0)


def _signals(lat: Lattice) -> Signals:
    z = np.zeros(lat.shape, np.float32)
    return Signals(cxcl12=z, scf=z.copy(), membrane_scf=z.copy())


def _cells_at(shape, xs):
    zz, yy, xx = np.meshgrid(np.arange(0, shape[0], 2), np.arange(0, shape[1], 2),
                             np.asarray(xs), indexing="ij")
    return zz.ravel(), yy.ravel(), xx.ravel()


@pytest.mark.parametrize("range_um", [0.0, 10.0, 25.0])
def test_ang1_map_is_one_on_contact_and_decays_with_the_gap(range_um):
    lat = _bone_lattice()
    contact, _ = _contact_maps(lat, 0.0, 3.0)
    sig = _ang1_map(lat, contact, range_um).reshape(lat.shape)
    assert sig.dtype == np.float32
    assert np.all(sig[:, :, :3] == 0.0)  # bone and lining hold no HSC
    assert np.all(sig[:, :, 3] == 1.0)  # face contact with the endosteum
    for x in range(4, 32):
        gap = (x - 2) * 8.0 - 8.0  # centre distance minus one voxel edge
        want = math.exp(-gap / range_um) if range_um > 0 else 0.0
        np.testing.assert_allclose(sig[:, :, x], want, rtol=1e-6, atol=0.0)


def test_ang1_map_without_endosteum_is_zero():
    lat = Lattice(np.full((8, 8, 8), Tissue.MARROW, np.uint8), 8.0)
    contact, _ = _contact_maps(lat, 0.0, 3.0)
    assert not _ang1_map(lat, contact, 20.0).any()


def test_ang1_map_range_is_validated():
    with pytest.raises(ValueError, match="ang1_range_um"):
        CellsConfig.model_validate({"cycle": {"ang1_range_um": -1.0}})


@pytest.mark.parametrize("g_ret", [0.0, 9.0])
def test_bound_hscs_at_the_bone_unbind_at_k_off_over_one_plus_g(g_ret):
    """Bound survival exp(-k_off t / (1 + g ang1)): ang1 = 1 in contact, 0 away (range 0)."""
    koff = 0.2
    cfg = quiet_config(adhesion={"k_off_per_h": koff, "ang1_retention": g_ret})
    lat = _bone_lattice()
    model = CellModel(cfg, lat, seed=5, dt_hours=1.0, motility_substeps=1)
    zz, yy, xx = _cells_at(lat.shape, [3, 12, 20])
    model.add_cells(zz, yy, xx, state="dormant", bound=True)
    T = 6
    for s in range(T):
        model.step(s, float(s), _signals(lat), Modifiers())
    snap = model.snapshot()
    for x, a1 in ((3, 1.0), (12, 0.0), (20, 0.0)):
        sel = snap["x"] == x
        n = int(sel.sum())
        k = int(snap["bound"][sel].sum())
        p = math.exp(-koff / (1.0 + g_ret * a1) * T)
        assert n == 144
        assert stats.binomtest(k, n, p).pvalue > ALPHA, (x, k / n, p)


def test_return_to_dormancy_follows_the_graded_signal():
    """Active G0 -> dormant at k_ret (1 + g ang1(gap)), with the signal's range."""
    k_ret_day, gain, rng = 2.0, 4.0, 10.0
    cfg = quiet_config(cycle={"return_per_day": k_ret_day, "ang1_return_gain": gain,
                        "ang1_range_um": rng})
    lat = _bone_lattice()
    model = CellModel(cfg, lat, seed=7, dt_hours=1.0, motility_substeps=1)
    xs = [3, 4, 6, 20]
    zz, yy, xx = _cells_at(lat.shape, xs)
    ids = model.add_cells(zz, yy, xx, state="active_g0")
    T = 12
    for s in range(T):
        model.step(s, float(s), _signals(lat), Modifiers())
    snap = model.snapshot()
    state = dict(zip(snap["track_id"].tolist(), snap["state"].tolist(), strict=True))
    for x in xs:
        a1 = 1.0 if x == 3 else math.exp(-((x - 2) * 8.0 - 8.0) / rng)
        k = k_ret_day / 24 * (1 + gain * a1)
        p_stay = math.exp(-k * T)
        sel = ids[xx == x]
        still = sum(1 for c in sel.tolist() if state[c] != 0)
        assert stats.binomtest(still, len(sel), p_stay).pvalue > ALPHA, (x, still / len(sel), p_stay)
