"""The niche3d.analysis functions: analytic cases, a real run, and run vs live simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from niche3d.analysis.dynamics import ZONES, circulating_counts, division_modes, state_fractions
from niche3d.analysis.lineage import clone_sizes, lineage_tree
from niche3d.analysis.localisation import localisation_table
from niche3d.analysis.sampling import field_at_cells
from niche3d.analysis.source import Source, as_source
from niche3d.analysis.spatial import distance_distributions
from niche3d.io import open_run
from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice

V = 8.0  # µm per voxel of the hand-built slab


# ----------------------------------------------------------------------------- a slab
def _slab() -> Lattice:
    """Marrow columns x = 1..18 between a sinusoid wall (x = 0) and the endosteum (x = 19);
    no arteriole. Distance to the sinusoid wall surface: 8 x - 4 µm; to the endosteum:
    8 (19 - x) - 4 µm."""
    lab = np.full((4, 6, 20), Tissue.MARROW, dtype=np.uint8)
    lab[:, :, 0] = Tissue.ENDOTHELIUM
    lab[:, :, 19] = Tissue.ENDOSTEUM
    return Lattice(lab, V)


#: (z, y, x, state, bound): 4 HSCs at the sinusoid, 2 at the endosteum, 2 mid-marrow, 2 MPPs
CELLS = [
    (0, 0, 1, "dormant", True), (1, 0, 1, "active_g0", False), (2, 0, 1, "active_g1", False),
    (3, 0, 1, "active_sg2m", False), (0, 1, 18, "dormant", True), (1, 1, 18, "dormant", True),
    (0, 2, 9, "active_g0", False), (1, 2, 9, "active_g1", False), (2, 2, 9, "mpp", False),
    (3, 3, 2, "mpp", False),
]


def _cells(rows=CELLS) -> dict[str, np.ndarray]:
    z, y, x, st, b = zip(*rows, strict=True) if rows else ((),) * 5
    return {"z": np.array(z, int), "y": np.array(y, int), "x": np.array(x, int),
            "state": np.array(st, object), "bound": np.array(b, bool)}


def _gradient(lat: Lattice) -> np.ndarray:
    """CXCL12 = 2 + 0.5 x (nM, x the voxel index)."""
    return np.broadcast_to(2.0 + 0.5 * np.arange(20, dtype=np.float32), lat.shape).copy()


@pytest.fixture(scope="module")
def slab_src() -> Source:
    lat = _slab()
    niche = np.zeros(lat.shape, np.uint8)
    for z, y, x in ((0, 0, 1), (0, 1, 18), (1, 1, 18)):  # three HSCs on niche sites
        niche[z, y, x] = 2
    niche[3, 5, 5] = 1  # a free site
    return Source.from_arrays(lat, _cells(), t_hours=24.0, fields={"cxcl12": _gradient(lat)},
                              niche=niche, metrics={"blood_pool": 100.0, "block_fraction": 0.01})


def test_distances_of_placed_cells_are_exact(slab_src: Source) -> None:
    dd = distance_distributions(slab_src, n_random=200, seed=3)
    d = dd.distances
    x = np.array([r[2] for r in CELLS if r[3] != "mpp"], float)
    sin = d[d.structure == "sinusoid"].distance_um.to_numpy()
    endo = d[d.structure == "endosteum"].distance_um.to_numpy()
    np.testing.assert_array_equal(sin, V * x - V / 2)
    np.testing.assert_array_equal(endo, V * (19 - x) - V / 2)
    s = dd.summary
    assert list(s.index) == ["sinusoid", "endosteum", "arteriole"]
    assert s.loc["sinusoid", "n_cells"] == 8 and s.loc["sinusoid", "n_eff"] == 8
    # sinusoid: cells at 4, 4, 4, 4, 68, 68, 140, 140 µm; null uniform on 4, 12, ..., 140
    assert s.loc["sinusoid", "median_um"] == pytest.approx(36.0)
    assert s.loc["sinusoid", "null_median_um"] == pytest.approx(72.0)
    assert s.loc["sinusoid", "median_ratio"] == pytest.approx(0.5)
    assert s.loc["endosteum", "median_um"] == pytest.approx(108.0)
    # KS: largest gap at 4 µm, ECDF 4/8 against the null's 1/18
    assert s.loc["sinusoid", "ks_statistic"] == pytest.approx(0.5 - 1 / 18)
    assert s.loc["sinusoid", "share_within"] == pytest.approx(0.5)
    assert s.loc["sinusoid", "null_share_within"] == pytest.approx(1 / 18)
    # the same shares and null as localisation_table on the same cells
    pos = np.array([r[:3] for r in CELLS if r[3] != "mpp"])
    loc = localisation_table(_slab(), pos, within_um=10.0)
    for st in ("sinusoid", "endosteum"):
        assert s.loc[st, "share_within"] == pytest.approx(loc.loc[st, "observed"])
        assert s.loc[st, "null_share_within"] == pytest.approx(loc.loc[st, "null"])
    # no arteriole in the slab: a row that says so, no numbers
    assert not s.loc["arteriole", "present"] and np.isnan(s.loc["arteriole", "median_um"])
    assert "arteriole" not in set(dd.ecdf.structure)


def test_distance_null_is_exact_and_band_brackets_it(slab_src: Source) -> None:
    dd = distance_distributions(slab_src, "sinusoid", n_random=400, seed=1)
    e = dd.ecdf
    k = (e.distance_um.to_numpy() + V / 2) / V  # column x of each grid point
    np.testing.assert_allclose(e.null, k / 18)
    np.testing.assert_allclose(e.cells.iloc[0], 0.5)
    assert (e.null_low <= e.null + 1e-12).all() and (e.null <= e.null_high + 1e-12).all()
    h = dd.histogram
    assert h.null.sum() == pytest.approx(1.0) and h.cells.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(h.bin_high_um - h.bin_low_um, V)
    # the Monte-Carlo p-value against a brute-force one: 8 points uniform on the 18
    # columns, KS distance to the exact column CDF at least 0.5 - 1/18
    cols = np.random.default_rng(99).integers(1, 19, size=(20000, 8))
    ecdf = (cols[:, :, None] <= np.arange(1, 19)).mean(axis=1)
    d = np.abs(ecdf - np.arange(1, 19) / 18).max(axis=1)
    p_bf = np.mean(d >= 0.5 - 1 / 18 - 1e-12)
    p = dd.summary.loc["sinusoid", "p_value"]
    assert 0.01 < p_bf < 0.2 and abs(p - p_bf) < 4 * np.sqrt(p_bf * (1 - p_bf) / 400) + 1 / 401


def test_distance_null_is_deterministic_for_a_seed(slab_src: Source) -> None:
    a = distance_distributions(slab_src, n_random=300, seed=11)
    b = distance_distributions(slab_src, n_random=300, seed=11)
    c = distance_distributions(slab_src, n_random=300, seed=12)
    pd.testing.assert_frame_equal(a.ecdf, b.ecdf)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    assert not a.ecdf.null_low.equals(c.ecdf.null_low) or not a.ecdf.null_high.equals(c.ecdf.null_high)


def test_uniformly_placed_cells_match_the_null() -> None:
    lat = _slab()
    rng = np.random.default_rng(5)
    free = np.argwhere(lat.enterable)
    pick = free[rng.choice(len(free), 60, replace=False)]
    src = Source.from_arrays(lat, {"z": pick[:, 0], "y": pick[:, 1], "x": pick[:, 2],
                                   "state": ["active_g0"] * 60})
    s = distance_distributions(src, n_random=500, seed=2).summary
    assert (s.loc[["sinusoid", "endosteum"], "p_value"] > 0.01).all()
    assert (s.loc[["sinusoid", "endosteum"], "ks_statistic"] < 0.25).all()


def test_field_at_cells_on_a_known_gradient(slab_src: Source) -> None:
    fs = field_at_cells(slab_src, "CXCL12", n_random=500, seed=4)
    v = fs.values
    cells, rand = v[v.group == "cells"], v[v.group == "random"]
    np.testing.assert_allclose(cells.value, 2 + 0.5 * (cells.x_um / V - 0.5))
    np.testing.assert_allclose(rand.value, 2 + 0.5 * (rand.x_um / V - 0.5))
    assert rand.x_um.between(1.5 * V, 18.5 * V).all()  # enterable columns only
    row = fs.summary.iloc[0]
    assert row.recorded and row.n_cells == 8 and row.n_random == 500 and row.unit == "nM"
    # HSCs at x = 1 (2.5 nM) x 4, x = 18 (11 nM) x 2, x = 9 (6.5 nM) x 2
    assert row.cells_median == pytest.approx(4.5)
    assert row.cells_mean == pytest.approx((4 * 2.5 + 2 * 11 + 2 * 6.5) / 8)
    assert row.marrow_mean == pytest.approx(2 + 0.5 * 9.5)
    assert row.marrow_median == pytest.approx(2 + 0.5 * 9.5)
    xc, xr = cells.value.to_numpy()[:, None], rand.value.to_numpy()[None, :]
    assert row.prob_cells_higher == pytest.approx(np.mean((xc > xr) + 0.5 * (xc == xr)))
    again = field_at_cells(slab_src, "cxcl12", n_random=500, seed=4)
    pd.testing.assert_frame_equal(fs.values, again.values)


def test_state_fractions_by_every_grouping(slab_src: Source) -> None:
    f = state_fractions(slab_src, by=("state", "phase", "location", "binding", "zone"))
    got = {(b, c): (k, n) for b, c, k, n in f[["by", "category", "count", "total"]].itertuples(index=False)}
    assert got["state", "dormant"] == (3, 8) and got["state", "active_sg2m"] == (1, 8)
    assert got["phase", "G0"] == (5, 8) and got["phase", "G1"] == (2, 8)
    assert got["phase", "S/G2/M"] == (1, 8)
    assert got["binding", "bound"] == (3, 8)
    assert got["zone", "perisinusoidal"] == (4, 8) and got["zone", "endosteal"] == (2, 8)
    assert got["zone", "periarteriolar"] == (0, 8) and got["zone", "other"] == (2, 8)
    # blood: block_fraction x blood_pool = 0.01 x 100 = 1 HSC beside the 8 in the block
    assert got["location", "niche_site"] == (3, 9) and got["location", "marrow"] == (5, 9)
    assert got["location", "blood"] == (1, 9)
    assert f.groupby("by").fraction.sum().to_numpy() == pytest.approx(np.ones(5))
    assert (f.ci_low <= f.fraction).all() and (f.fraction <= f.ci_high).all()
    assert (f.t_hours == 24.0).all()


def test_no_hscs_gives_nan_fractions_not_a_crash() -> None:
    lat = _slab()
    src = Source.from_arrays(lat, _cells([(0, 0, 3, "mpp", False)]), fields={"cxcl12": _gradient(lat)})
    f = state_fractions(src, by=("state", "phase", "binding", "zone"))
    assert (f["count"] == 0).all() and (f.total == 0).all() and f.fraction.isna().all()
    s = distance_distributions(src, n_random=10).summary
    assert (s.n_cells == 0).all() and np.isnan(s.loc["sinusoid", "ks_statistic"])
    fs = field_at_cells(src, n_random=10).summary.iloc[0]
    assert fs.n_cells == 0 and np.isnan(fs.cells_median) and np.isfinite(fs.random_median)
    empty = Source.from_arrays(lat, _cells([]))
    assert state_fractions(empty, by="state").fraction.isna().all()
    with pytest.raises(ValueError, match="'location' needs the niche-site map"):
        state_fractions(src, by="location")


def _events(rows: list[tuple]) -> dict[str, np.ndarray]:
    cols = ("t_hours", "kind", "cell", "other", "state", "other_state")
    d = {c: np.array([r[i] for r in rows], dtype=object) for i, c in enumerate(cols)}
    n = len(rows)
    out = {"t_hours": d["t_hours"].astype(float), "kind": d["kind"], "cell": d["cell"].astype(int),
           "other": d["other"].astype(int), "state": d["state"], "other_state": d["other_state"]}
    for k in ("z", "y", "x", "other_z", "other_y", "other_x"):
        out[k] = np.full(n, 1 if not k.startswith("other") else -1)
    return out


@pytest.fixture(scope="module")
def family() -> Source:
    """Founders 0 and 1 seeded at t = 0; 0 divides into 2 (t = 5), 2 into 3 (t = 8); cell 4
    homes in at t = 9; 3 dies at t = 10. The snapshot at t = 12 holds 0, 1, 2 and 4."""
    ev = _events([
        (0.0, "birth", 0, -1, "active_g0", None), (0.0, "birth", 1, -1, "dormant", None),
        (5.0, "division", 0, 2, "active_g0", "mpp"), (5.0, "birth", 2, 0, "mpp", "active_g0"),
        (8.0, "division", 2, 3, "mpp", "mpp"), (8.0, "birth", 3, 2, "mpp", "mpp"),
        (9.0, "homing", 4, -1, "active_g0", None), (10.0, "death", 3, -1, "dead", None),
        (11.0, "division", 4, 5, "active_g0", "active_g0"), (11.0, "birth", 5, 4, "active_g0", "active_g0"),
    ])
    cells = _cells([(0, 0, 1, "active_g0", False), (0, 0, 2, "dormant", False),
                    (0, 0, 3, "mpp", False), (0, 0, 4, "active_g0", False), (0, 0, 5, "active_g0", False)])
    cells.update(track_id=np.array([0, 1, 2, 4, 5]), parent=np.array([-1, -1, 0, -1, 4]),
                 generation=np.array([0, 0, 1, 0, 1]))
    metrics = {"total_renewal_divisions_same_side": 1.0, "total_renewal_divisions_border": 0.0,
               "total_asymmetric_divisions_same_side": 0.0, "total_asymmetric_divisions_border": 1.0,
               "total_differentiating_divisions_same_side": 1.0,
               "total_differentiating_divisions_border": 0.0}
    return Source.from_arrays(_slab(), cells, t_hours=12.0, events=ev, metrics=metrics)


def test_division_modes_from_fates(family: Source) -> None:
    dm = division_modes(family)
    o = dm.overall
    assert o["count"].to_dict() == {"symmetric_renewal": 1, "asymmetric": 1,
                                    "symmetric_differentiation": 1}
    assert (o.total == 3).all() and o.fraction.sum() == pytest.approx(1.0)
    assert o.loc["asymmetric", "border_share"] == 1.0
    assert o.loc["symmetric_renewal", "border_share"] == 0.0
    assert dm.divisions[["mother", "daughter"]].values.tolist() == [[0, 2], [2, 3], [4, 5]]
    assert list(dm.divisions["mode"]) == ["asymmetric", "symmetric_differentiation",
                                          "symmetric_renewal"]
    assert (dm.by_record.t_start_hours == 0.0).all() and (dm.by_record.t_hours == 12.0).all()


def test_clone_sizes_and_tree_of_a_known_family(family: Source) -> None:
    cs = clone_sizes(family).set_index("founder")
    assert cs.n_cells.to_dict() == {0: 2, 1: 1, 4: 2}
    assert cs.loc[0, "n_active_g0"] == 1 and cs.loc[0, "n_mpp"] == 1 and cs.loc[0, "n_hsc"] == 1
    assert cs.loc[4, "origin"] == "homed" and cs.loc[0, "origin"] == "seeded"
    tree = lineage_tree(family)
    n = tree.nodes.set_index("track_id")
    assert n.generation.to_dict() == {0: 0, 1: 0, 2: 1, 3: 2, 4: 0, 5: 1}
    assert n.founder.to_dict() == {0: 0, 1: 1, 2: 0, 3: 0, 4: 4, 5: 4}
    assert n.loc[3, "end_kind"] == "death" and n.loc[3, "end_hours"] == 10.0 and not n.loc[3, "alive"]
    assert tree.children(0) == [2] and tree.descendants(0) == [2, 3]
    e = tree.edges.set_index("child")
    assert e.loc[2, "parent_state"] == "active_g0" and e.loc[2, "child_state"] == "mpp"
    assert e.loc[3, "t_hours"] == 8.0
    sub = lineage_tree(family, root=2)
    assert sorted(sub.nodes.track_id) == [2, 3] and sub.edges[["parent", "child"]].values.tolist() == [[2, 3]]
    with pytest.raises(ValueError, match=r"root = 99: no such track"):
        lineage_tree(family, root=99)


def test_bad_arguments_are_named(slab_src: Source) -> None:
    with pytest.raises(ValueError, match=r"structures = 'bone'.*allowed: sinusoid, endosteum, arteriole"):
        distance_distributions(slab_src, "bone")
    with pytest.raises(ValueError, match=r"states = .*'circulating'"):
        distance_distributions(slab_src, states=("dormant", "circulating"))
    with pytest.raises(ValueError, match=r"records = 3: record 3 is out of range.*records 0\.\.0"):
        state_fractions(slab_src, records=3)
    with pytest.raises(ValueError, match=r"records = 'first'"):
        state_fractions(slab_src, records="first")
    with pytest.raises(ValueError, match=r"by = 'colour'.*allowed: state, phase"):
        state_fractions(slab_src, by="colour")
    with pytest.raises(ValueError, match=r"n_random = -1"):
        distance_distributions(slab_src, n_random=-1)
    with pytest.raises(ValueError, match=r"field = 'ang1': unknown.*holds cxcl12"):
        field_at_cells(slab_src, "ang1")
    with pytest.raises(ValueError, match=r"confidence = 1\.5"):
        state_fractions(slab_src, confidence=1.5)
    with pytest.raises(TypeError, match="src must be"):
        state_fractions(42)


# ----------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def run(tiny_run: Path):
    return open_run(tiny_run)


def test_fractions_equal_the_counts_of_the_cells_table(run) -> None:
    f = state_fractions(run, by=("state", "phase", "location"))
    hsc = run.cells[run.cells.state.isin(["dormant", "active_g0", "active_g1", "active_sg2m"])]
    counts = hsc.groupby(["record", "state"], observed=True).size()
    st = f[f.by == "state"].set_index(["record", "category"])["count"]
    for (r, s), k in st.items():
        assert k == counts.get((r, s), 0)
    sums = f.groupby(["record", "by"]).fraction.sum()
    assert sums.to_numpy() == pytest.approx(np.ones(len(sums)))
    m = run.metrics.set_index("record")
    ph = f[f.by == "phase"].pivot(index="record", columns="category", values="fraction")
    np.testing.assert_allclose(ph["G0"], m.frac_g0)
    np.testing.assert_allclose(ph["S/G2/M"], m.frac_sg2m)
    loc = f[f.by == "location"].pivot(index="record", columns="category", values="count")
    np.testing.assert_array_equal(loc["niche_site"], m.niche_sites_hsc)
    np.testing.assert_allclose(loc["blood"], m.blood_pool * m.block_fraction)


def test_division_modes_equal_the_division_events_and_counters(run) -> None:
    dm = division_modes(run)
    n_div = int((run.events.kind == "division").sum())
    assert len(dm.divisions) == n_div and dm.overall["count"].sum() == n_div
    m = run.metrics
    per = dm.by_record.groupby("record")["total"].first().to_numpy()
    np.testing.assert_array_equal(per, np.diff(m.total_divisions, prepend=0.0))
    # events by mode equal the model's counters (same side + border) record by record
    both = (dm.by_record.same_side + dm.by_record.border).to_numpy()
    np.testing.assert_array_equal(dm.by_record["count"].to_numpy(), both)


def test_circulating_counts_from_metrics_and_events(run) -> None:
    c = circulating_counts(run)
    m = run.metrics
    np.testing.assert_allclose(c.blood_hsc_per_ul, m.blood_hsc_per_ul)
    np.testing.assert_allclose(c.blood_hsc_per_mouse, m.blood_pool)
    assert c.block_egress_events.sum() == m.total_egress.iloc[-1]
    assert c.block_homing_events.sum() == m.total_homing.iloc[-1]
    np.testing.assert_allclose(c.block_egress_per_day[1:], c.block_egress_events[1:] / 0.5)
    assert np.isnan(c.mouse_egress_per_day.iloc[0])  # no interval before the first record


def _founder_by_walk(run) -> dict[int, int]:
    """Founder of every track by walking parents (birth events), one cell at a time."""
    b = run.events[run.events.kind.isin(["birth", "homing"])]
    parent = dict(zip(b.cell, b.other, strict=True))
    parent.update(dict(zip(run.cells.track_id, run.cells.parent, strict=True)))
    out = {}
    for cid in parent:
        c = cid
        while parent.get(c, -1) >= 0:
            c = parent[c]
        out[cid] = c
    return out


def test_clone_sizes_sum_to_the_living_cells(run) -> None:
    cs = clone_sizes(run)
    per = cs.groupby("record").n_cells.sum()
    np.testing.assert_array_equal(per.to_numpy(), run.cells.groupby("record").size().to_numpy())
    founder = _founder_by_walk(run)
    last = run.cells[run.cells.record == run.n_records - 1]
    want = pd.Series([founder[t] for t in last.track_id]).value_counts()
    got = cs[cs.record == run.n_records - 1].set_index("founder").n_cells
    assert got[got > 0].sort_index().to_dict() == want.sort_index().to_dict()
    tree = lineage_tree(run)
    assert len(tree.edges) == int((run.events.kind == "division").sum())
    g = tree.nodes.set_index("track_id").generation
    np.testing.assert_array_equal(tree.edges.child_generation, g[tree.edges.parent].to_numpy() + 1)
    seen = run.cells.drop_duplicates("track_id").set_index("track_id").generation
    np.testing.assert_array_equal(g[seen.index].to_numpy(), seen.to_numpy())


def test_field_and_distances_on_a_run(run) -> None:
    fs = field_at_cells(run, "cxcl12", records="all", n_random=300)
    assert len(fs.summary) == run.n_records and fs.summary.recorded.all()
    np.testing.assert_array_equal(fs.summary.n_cells, run.metrics.hsc_total)
    dd = distance_distributions(run, records="all", n_random=100)
    s = dd.summary
    assert (s.n_records == run.n_records).all()
    assert (s.n_eff == round(run.metrics.hsc_total.sum() / run.n_records)).all()
    with pytest.raises(ValueError, match="out of range"):
        field_at_cells(run, records=[0, run.n_records])


def test_paths_and_record_specs(tiny_run: Path, run) -> None:
    a = state_fractions(str(tiny_run), by="state", records="last")
    b = state_fractions(run, by="state", records=-1)
    pd.testing.assert_frame_equal(a, b)
    assert set(a.record) == {run.n_records - 1}
    c = state_fractions(tiny_run, by="state", records=[2, 0, 2])
    assert sorted(set(c.record)) == [0, 2]
    assert as_source(tiny_run).n_records == run.n_records


# ----------------------------------------------------------------------------- live
def _all_tables(src) -> dict[str, pd.DataFrame]:
    dd = distance_distributions(src, records="all", n_random=50, seed=1)
    dm = division_modes(src)
    fs = field_at_cells(src, "cxcl12", records="last", n_random=50, seed=1)
    tree = lineage_tree(src)
    return {"dd_summary": dd.summary, "dd_ecdf": dd.ecdf, "fractions": state_fractions(
        src, by=("state", "phase", "location", "binding", "zone")),
        "modes": dm.by_record, "divisions": dm.divisions, "blood": circulating_counts(src),
        "clones": clone_sizes(src), "nodes": tree.nodes, "edges": tree.edges,
        "field": fs.summary, "field_values": fs.values}


def test_live_simulation_equals_its_store(tmp_path: Path, tiny_scenario, tiny_run: Path) -> None:
    from niche3d.simulation import Simulation

    with Simulation(tiny_scenario, tmp_path / "live.zarr") as sim:
        sim.run()
        live = _all_tables(sim)
        for store in (tmp_path / "live.zarr", tiny_run):  # its own store; the same run's
            stored = _all_tables(open_run(store))
            for k in live:
                pd.testing.assert_frame_equal(live[k], stored[k], obj=k)
        n = len(open_run(tiny_run).times_h)
        # three steps past the last record: the current state is one more time point
        sim.step(3)
        src = as_source(sim)
        assert src.n_records == n + 1 and src.times_h[-1] == sim.t_hours
        now = state_fractions(sim, by="state", records="last")
        snap = sim.snapshot()
        assert now["count"].sum() == np.count_nonzero(snap["state"] <= 3)
        pending = src.events[src.events.t_hours > src.times_h[-2]]
        # reading did not drain them: the store receives them at the next record (run(),
        # not step(): step() does not extend the store beyond the scenario's run.days)
        sim.run(days=9 / 24)
        written = open_run(tmp_path / "live.zarr").events
        later = written[written.t_hours > src.times_h[-2]]
        assert len(pending) and len(later) >= len(pending)
        pd.testing.assert_frame_equal(
            src.events.iloc[-len(pending):].reset_index(drop=True),
            as_source(open_run(tmp_path / "live.zarr")).events.iloc[
                len(src.events) - len(pending):len(src.events)].reset_index(drop=True))


def test_in_memory_simulation_keeps_its_events(tiny_scenario, tiny_run: Path) -> None:
    from niche3d.simulation import Simulation

    sim = Simulation(tiny_scenario).run()
    run = open_run(tiny_run)
    src = as_source(sim)
    assert src.n_records == 1 and src.times_h[0] == run.times_h[-1]
    pd.testing.assert_frame_equal(division_modes(sim).overall, division_modes(run).overall)
    last = run.n_records - 1
    for f in (lambda s, r: state_fractions(s, by=("state", "zone"), records=r),
              lambda s, r: clone_sizes(s, records=r),
              lambda s, r: field_at_cells(s, records=r, n_random=50).summary):
        pd.testing.assert_frame_equal(f(sim, 0).drop(columns="record"),
                                      f(run, last).drop(columns="record"))
    pd.testing.assert_frame_equal(lineage_tree(sim).nodes, lineage_tree(run).nodes)
    c, cr = circulating_counts(sim), circulating_counts(run)
    assert c.block_egress_events.iloc[0] == cr.block_egress_events.sum()
    assert c.blood_hsc_per_mouse.iloc[0] == cr.blood_hsc_per_mouse.iloc[-1]


def test_records_without_fields(tmp_path: Path, tiny_scenario) -> None:
    from niche3d.simulation import Simulation

    small = {"domain.shape": [12, 16, 16], "run.days": 1.0}
    sc = tiny_scenario.with_overrides({**small, "output.fields_every_records": 2})
    with Simulation(sc, tmp_path / "every2.zarr") as sim:
        sim.run()
    fs = field_at_cells(tmp_path / "every2.zarr", "scf", n_random=20).summary
    assert fs.recorded.tolist() == [True, False, True]  # records at 0, 12 and 24 h
    assert fs.cells_median.isna().tolist() == [False, True, False]
    none = tiny_scenario.with_overrides({**small, "output.fields": False})
    with Simulation(none, tmp_path / "nofields.zarr") as sim:
        sim.run()
    with pytest.raises(ValueError, match=r"holds no fields \(output.fields = false\)"):
        field_at_cells(tmp_path / "nofields.zarr")
    assert len(state_fractions(tmp_path / "nofields.zarr", by="zone")) == 3 * len(ZONES)
