"""Finite niche sites (issue 14): the site map and its metrics; the sites cap the pool and
the HSC number follows the sites of the tissue."""

from __future__ import annotations

import numpy as np
import pytest
from cells_testdata import niche_world

from niche3d.cells import CellModel, CellsConfig, Modifiers
from niche3d.cells import params as P


def test_site_map_and_metrics_agree():
    lat, sig = niche_world()
    cfg = CellsConfig.model_validate({"fate": {"site_threshold": 0.8}})
    m = CellModel(cfg, lat, seed=3, dt_hours=1.0, motility_substeps=1)
    with pytest.raises(RuntimeError, match="seed_initial"):
        m.niche_sites()
    m.seed_initial(sig)
    for k in range(12):
        m.step(k, float(k), sig, Modifiers())
    S = m.niche_signal()
    sites = m.niche_sites()
    assert sites.dtype == np.uint8 and sites.shape == lat.shape
    assert np.array_equal(sites > 0, (S >= m._par[P.K_SITE]) & lat.enterable)
    met = m.metrics()
    assert met["niche_sites"] == np.count_nonzero(sites) > 0
    assert met["niche_sites"] == met["niche_sites_free"] + met["niche_sites_hsc"] + met["niche_sites_other"]
    kinds = ("endosteal", "sinusoidal", "arteriolar")
    assert sum(met[f"niche_sites_total_{k}"] for k in kinds) == met["niche_sites"]
    assert sum(met[f"niche_sites_hsc_{k}"] for k in kinds) == met["niche_sites_hsc"]
    # every HSC on a site is counted there
    snap = m.snapshot()
    hsc = (snap["state"] <= 3) & (snap["z"] >= 0)
    on = sites[snap["z"][hsc], snap["y"][hsc], snap["x"][hsc]] == 2
    assert on.sum() == met["niche_sites_hsc"]
    assert met["hsc_on_site_fraction"] == pytest.approx(on.sum() / hsc.sum())


@pytest.mark.slow
def test_finite_sites_cap_the_pool_whatever_the_seeding():
    """Seeded at 2x and 4x the default density (more HSCs than the block has niche sites),
    the HSCs that hold no site differentiate within days: the pool falls below the number
    of sites, and the off-site differentiations account for the excess. (Seeded below the
    site number the pool does not refill within months: docs/calibration.md section 4.)"""
    from conftest import REPO

    from niche3d import Simulation
    from niche3d.scenario import load_scenario

    base = load_scenario(REPO / "scenarios" / "homeostasis.toml")
    for density in (800.0, 1600.0):
        sim = Simulation(base.with_overrides({"cells.hsc_per_mm3": density}))
        m0 = sim.metrics()
        assert m0["hsc_total"] > 1.2 * m0["niche_sites"]  # seeded above capacity
        sim.run(days=5)
        m = sim.metrics()
        assert m["hsc_total"] <= m["niche_sites"], (density, m["hsc_total"], m["niche_sites"])
        assert m["total_offsite_differentiations"] >= m0["hsc_total"] - m0["niche_sites"]
        assert m["hsc_on_site_fraction"] > 0.9


@pytest.mark.slow
def test_hsc_number_follows_the_niche_sites_of_the_tissue():
    """More SNO osteoblasts in the endosteum (BMPR1A deletion, PTH: BIOLOGY.md section 2)
    make more niche sites, and the block keeps more HSCs: with 5 % vs 40 % of endosteal
    voxels as SNOs (~80 vs ~125 sites) the HSC number rises with the site number, at a
    similar occupancy (HSCs per site within 25 % of each other)."""
    from conftest import REPO

    from niche3d import Simulation
    from niche3d.scenario import load_scenario

    base = load_scenario(REPO / "scenarios" / "homeostasis.toml")
    got = {}
    for sno in (0.05, 0.4):
        sim = Simulation(base.with_overrides({"tissue.sno_fraction": sno}))
        hsc, sites = [], []
        for day in range(50):
            sim.run(days=1)
            if day >= 25:
                m = sim.metrics()
                hsc.append(m["hsc_total"])
                sites.append(m["niche_sites"])
        got[sno] = (float(np.mean(hsc)), float(np.mean(sites)))
    (h_lo, s_lo), (h_hi, s_hi) = got[0.05], got[0.4]
    assert s_hi > 1.3 * s_lo, got  # the tissue change makes more sites
    assert h_hi > 1.2 * h_lo, got  # and the HSC number follows them
    occ_lo, occ_hi = h_lo / s_lo, h_hi / s_hi
    assert abs(occ_hi - occ_lo) <= 0.25 * max(occ_lo, occ_hi), got
