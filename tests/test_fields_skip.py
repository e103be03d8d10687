"""Skipped re-solves (niche3d.fields._skip): the local correction, the change estimate, when
a solve may be skipped, checkpoints, and a 60-day run against always re-solving."""

from __future__ import annotations

import numpy as np
import pytest

from niche3d.fields import FieldSet
from niche3d.fields._skip import HISTORY, SkipState
from niche3d.fields.config import BoundaryConfig, FieldsConfig
from niche3d.tissue import TissueConfig, build_lattice

CXCL12_TOL = 0.005 * 10.0  # the default: 0.5 % of CXCR4's Kd, nM


def _marrow(boundary: str = "noflux", shape: tuple[int, int, int] = (32, 48, 48)) -> FieldSet:
    lat = build_lattice(shape, 8.0, TissueConfig(), 3, cache=False)
    base = FieldsConfig().diffusible
    cfg = {n: c.model_copy(update={"boundary": {face: BoundaryConfig(kind=boundary, value=1.0)
                                                for face in ("zmin", "zmax", "xmin", "xmax")}})
           for n, c in base.items()}
    return FieldSet(lat, FieldsConfig(diffusible=cfg))


def _moves(fs: FieldSet, rng: np.random.Generator, cells: np.ndarray, n: int) -> np.ndarray:
    """``n`` cells hop to a free enterable face neighbour (periodic wrap ignored)."""
    nz, ny, nx = fs.lattice.shape
    ok = fs.lattice.enterable.ravel()
    occ = set(cells.tolist())
    for i in rng.choice(cells.size, n, replace=False):
        c = int(cells[i])
        for step in rng.permutation([1, -1, nx, -nx, nx * ny, -nx * ny]):
            t = c + int(step)
            if 0 <= t < ok.size and ok[t] and t not in occ:
                occ.discard(c)
                occ.add(t)
                break
    return np.array(sorted(occ), np.int64)


def _reference(fs: FieldSet, cells: np.ndarray) -> FieldSet:
    ref = FieldSet(fs.lattice, fs.config)
    ref.load_state_dict(fs.state_dict())
    ref.solve(cells)  # no skip_below: always a full solve
    return ref


@pytest.mark.parametrize("boundary", ["noflux", "periodic", "value"])
def test_skipped_solves_stay_within_the_tolerance_of_full_solves(boundary: str) -> None:
    fs = _marrow(boundary)
    rng = np.random.default_rng(1)
    ent = np.flatnonzero(fs.lattice.enterable.ravel())
    cells = np.sort(rng.choice(ent, 60, replace=False))
    # cells at the lattice faces too, where periodic boxes wrap
    face = ent[(ent // (48 * 48) == 0) | (ent // (48 * 48) == 31)]
    cells = np.union1d(cells, rng.choice(face, 6, replace=False))
    fs.solve(cells)
    tol = {"cxcl12": CXCL12_TOL, "scf": 0.005}
    skipped = 0
    for _ in range(12):
        cells = _moves(fs, rng, cells, 5)
        rep = fs.solve(cells, skip_below=tol)
        ref = _reference(fs, cells)
        for name in fs.names:
            err = float(np.abs(fs[name].astype(np.float64) - ref[name]).max())
            # the field as it stands (skipped or solved) is within the tolerance of a full
            # solve everywhere
            assert err <= tol[name], (name, err)
            if rep.skipped[name]:
                skipped += 1
                assert rep.estimate[name] <= tol[name]
                assert rep.cycles[name] == 0 and rep.converged[name]
    assert skipped >= 12  # about half or more of the 24 solves are skipped
    solves, n_skipped = fs.solve_counts["cxcl12"]
    assert solves == 13 and n_skipped <= 12


def test_the_local_correction_takes_up_most_of_a_moved_cells_own_depletion() -> None:
    fs = _marrow()
    rng = np.random.default_rng(2)
    ent = np.flatnonzero(fs.lattice.enterable.ravel())
    cells = np.sort(rng.choice(ent, 40, replace=False))
    fs.solve(cells)
    before = fs["cxcl12"].astype(np.float64).copy()
    moved = _moves(fs, rng, cells, 10)
    ref = _reference(fs, moved)
    fs.solve(moved, skip_below={"cxcl12": 1e9})  # a skip whatever the estimate ...
    stale = float(np.abs(before - ref["cxcl12"]).max())
    left = float(np.abs(fs["cxcl12"].astype(np.float64) - ref["cxcl12"]).max())
    # ... but the first solve after a full one measures no response yet: full solve
    assert left < 1e-3 * stale
    cells = moved
    fs.solve(cells)
    before = fs["cxcl12"].astype(np.float64).copy()
    moved = _moves(fs, rng, cells, 10)
    ref = _reference(fs, moved)
    rep = fs.solve(moved, skip_below={"cxcl12": 1e9})
    assert rep.skipped["cxcl12"]
    stale = float(np.abs(before - ref["cxcl12"]).max())
    left = float(np.abs(fs["cxcl12"].astype(np.float64) - ref["cxcl12"]).max())
    assert stale > 0.05  # a moved cell depletes its own voxel by a few % of ~10 nM
    assert left < 0.1 * stale


def test_changed_sources_protease_or_a_zero_tolerance_always_solve() -> None:
    fs = _marrow()
    rng = np.random.default_rng(3)
    ent = np.flatnonzero(fs.lattice.enterable.ravel())
    cells = np.sort(rng.choice(ent, 40, replace=False))
    big = {"cxcl12": 1e9, "scf": 1e9}
    fs.solve(cells)
    fs.solve(cells, skip_below=big)  # measures the response
    assert fs.solve(cells, skip_below=big).skipped == {"cxcl12": True, "scf": True}
    fs.set_source_scale("cxcl12", "stroma", 0.5)
    rep = fs.solve(cells, skip_below=big)
    assert rep.skipped == {"cxcl12": False, "scf": True} and rep.cycles["cxcl12"] > 0
    fs.set_source_scale("cxcl12", "stroma", 0.5)  # the same factor again: no change
    assert fs.solve(cells, skip_below=big).skipped["cxcl12"]
    fs.set_protease(0.01)
    assert fs.solve(cells, skip_below=big).skipped == {"cxcl12": False, "scf": False}
    assert fs.solve(cells, skip_below={"cxcl12": 0.0, "scf": 1e9}).skipped["cxcl12"] is False
    # a backward-Euler step is never skipped, nor the steady solve after it
    assert fs.solve(cells, dt_minutes=5.0, skip_below=big).skipped["scf"] is False
    assert fs.solve(cells, skip_below=big).skipped["scf"] is False


def test_at_most_max_skipped_solves_in_a_row() -> None:
    lat = build_lattice((16, 24, 24), 8.0, TissueConfig(), 4, cache=False)
    fs = FieldSet(lat, FieldsConfig(max_skipped_solves=2))
    cells = np.flatnonzero(lat.enterable.ravel())[::97]
    fs.solve(cells)
    fs.solve(cells, skip_below={"scf": 1e9})
    pattern = [fs.solve(cells, skip_below={"scf": 1e9}).skipped["scf"] for _ in range(7)]
    assert pattern == [True, True, False, True, True, False, True]
    assert fs.solve_counts["scf"] == (9, 5)
    assert all(not fs.solve(cells, skip_below={"scf": 1e9}).skipped["cxcl12"] for _ in range(3))


def test_skip_state_round_trips_through_a_checkpoint_and_rejects_garbage() -> None:
    fs = _marrow()
    rng = np.random.default_rng(5)
    ent = np.flatnonzero(fs.lattice.enterable.ravel())
    cells = np.sort(rng.choice(ent, 40, replace=False))
    tol = {"cxcl12": CXCL12_TOL, "scf": 0.005}
    fs.solve(cells)
    for _ in range(3):
        cells = _moves(fs, rng, cells, 3)
        fs.solve(cells, skip_below=tol)
    twin = FieldSet(fs.lattice, fs.config)
    twin.load_state_dict(fs.state_dict())
    for _ in range(6):  # both go on identically, skip for skip and bit for bit
        cells = _moves(fs, rng, cells, 3)
        a, b = fs.solve(cells, skip_below=tol), twin.solve(cells, skip_below=tol)
        assert a.skipped == b.skipped and a.estimate == b.estimate
        for name in fs.names:
            np.testing.assert_array_equal(fs[name], twin[name])
    assert fs.solve_counts == twin.solve_counts
    vec, cl = fs._fields["scf"].skip.to_arrays()
    assert SkipState.from_arrays(vec, cl).q.size <= HISTORY
    state = fs.state_dict()
    state["skip.scf"] = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match=r"skip\.scf"):
        twin.load_state_dict(state)
    state = fs.state_dict()
    state["skip_cells.scf"] = np.array([5, 3], np.int64)
    with pytest.raises(ValueError, match=r"skip\.scf.*sorted"):
        twin.load_state_dict(state)
    state = fs.state_dict()
    del state["skip.scf"], state["skip_cells.scf"]  # an older checkpoint: a full solve next
    twin.load_state_dict(state)
    assert twin.solve(cells, skip_below={"scf": 1e9}).skipped["scf"] is False


def test_bad_skip_below_is_a_clear_error() -> None:
    fs = _marrow(shape=(8, 8, 8))
    with pytest.raises(ValueError, match="unknown field 'nope'"):
        fs.solve(None, skip_below={"nope": 1.0})
    with pytest.raises(ValueError, match=r"skip_below\['scf'\] must be a finite number >= 0"):
        fs.solve(None, skip_below={"scf": -1.0})
    with pytest.raises(ValueError, match=r"skip_below\['scf'\] must be a number"):
        fs.solve(None, skip_below={"scf": "x"})
    with pytest.raises(TypeError, match="skip_below must be a mapping"):
        fs.solve(None, skip_below=[1.0])  # type: ignore[arg-type]


def _run_60_days(seed: int, skip_tolerance: float, check: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Day-60 metrics of a default run and, with ``check``, the worst difference between
    the fields as the cells read them and a full solve at the same cells, at every
    scheduled solve: largest |Δc| (field units) and largest receptor-occupancy change."""
    from niche3d.names import CXCL12, SCF
    from niche3d.scenario import Scenario
    from niche3d.simulation import Simulation

    sc = Scenario.default().with_overrides(
        [f"run.seed={seed}", f"fields.skip_tolerance={skip_tolerance}"])
    sim = Simulation(sc)
    K = {CXCL12: sc.cells.motility.cxcr4_kd_nM, SCF: sc.cells.death.scf_half}
    worst: dict[str, float] = {}
    solve = sim._solve
    ref = FieldSet(sim.lattice, sim.fields.config)

    def checked_solve() -> None:
        solve()
        cells = sim.cells.occupied_flat()
        ref.load_state_dict(sim.fields.state_dict())
        ref.solve(cells)  # no skip_below: a full solve
        for n, k in K.items():
            a, b = sim.fields[n].astype(np.float64), ref[n].astype(np.float64)
            worst[f"{n}_dc"] = max(worst.get(f"{n}_dc", 0.0), float(np.abs(a - b).max()))
            ta, tb = a.ravel()[cells], b.ravel()[cells]
            d_theta = float(np.abs(ta / (ta + k) - tb / (tb + k)).max()) if cells.size else 0.0
            worst[f"{n}_occupancy"] = max(worst.get(f"{n}_occupancy", 0.0), d_theta)

    if check:
        sim._solve = checked_solve  # type: ignore[method-assign]
    sim.run(60)
    return sim.metrics(), worst


@pytest.mark.slow
def test_sixty_days_with_skipping_stay_within_the_tolerance_of_always_resolving() -> None:
    eps = 0.005  # the default fields.skip_tolerance
    m, worst = _run_60_days(1, eps, check=True)
    # most scheduled solves were skipped, and counted in the metrics
    assert m["cxcl12_solves"] == m["scf_solves"] == 60 * 4 + 1
    assert m["cxcl12_solves_skipped"] > 0.6 * m["cxcl12_solves"]
    assert m["scf_solves_skipped"] > 0.6 * m["scf_solves"]
    # field values at cells: within the stated tolerance of a full solve, at every solve
    assert worst["cxcl12_occupancy"] <= eps and worst["scf_occupancy"] <= eps
    assert worst["cxcl12_dc"] <= eps * 10.0 and worst["scf_dc"] <= eps * 1.0
    # cell outcomes at day 60: skipping vs always re-solving, paired by seed (a seed fixes
    # the tissue and the seeded cells, which set most of the spread between seeds), agree
    # within replicate noise: the mean paired difference within 3 standard errors, or
    # within 2 % of the value (pairs can agree exactly, which makes the error 0)
    runs = {tol: [(_run_60_days(s, tol, check=False)[0] if (s, tol) != (1, eps) else m)
                  for s in (1, 2, 3)] for tol in (eps, 0.0)}
    assert all(r["cxcl12_solves_skipped"] == 0 for r in runs[0.0])
    for key in ("hsc_total", "niche_sites_hsc", "frac_g0", "total_divisions", "cxcl12_mean"):
        d = np.array([a[key] - b[key] for a, b in zip(runs[eps], runs[0.0], strict=True)])
        scale = np.mean([abs(b[key]) for b in runs[0.0]])
        assert abs(d.mean()) <= 3 * d.std(ddof=1) / np.sqrt(d.size) + 0.02 * scale, (key, d)
