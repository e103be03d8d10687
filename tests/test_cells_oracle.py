"""``apply_actions``, the largest kernel, against its plain-Python oracle on many small
random populations (stumpy's discipline: a slow reference for every kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from cells_oracle import apply_actions as oracle_apply_actions
from cells_oracle import hash64 as py_hash64
from cells_oracle import uniform as py_uniform

from niche3d.cells import _kernels as K
from niche3d.cells import codes as C
from niche3d.cells import params as P
from niche3d.cells.config import CellsConfig
from niche3d.cells.rng import hash64, uniform

N_POPULATIONS = 240

_COLUMNS = {
    "ids": np.int64, "parent": np.int64, "generation": np.int32, "divisions": np.int32,
    "state": np.int8, "prev_state": np.int8, "z": np.int32, "y": np.int32, "x": np.int32,
    "bound": np.uint8, "donor": np.uint8, "timer": np.float64, "lag": np.float64,
    "lastdir": np.int8, "birth": np.float64,
}
_ORDER = ("ids", "parent", "generation", "divisions", "state", "prev_state", "z", "y", "x",
          "bound", "donor", "timer", "lag", "lastdir", "birth")


def test_python_random_numbers_equal_the_kernels():
    rng = np.random.default_rng(7)
    for _ in range(300):
        key = [int(v) for v in rng.integers(0, 2**62, 4)]
        assert py_hash64(*key) == int(hash64(*key))
        assert py_uniform(*key) == uniform(*key)


def random_population(seed: int) -> dict:
    """A small lattice with a random enterable mask, cells on it (dense enough that
    divisions must often push or wait) and in blood, and a random action per cell of
    the kind the rules pass can give it."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = (int(v) for v in rng.integers(1, 6, 3))
    nv = nz * ny * nx
    enter = (rng.random(nv) < rng.uniform(0.5, 1.0)).astype(np.uint8)
    free = np.flatnonzero(enter)
    n_lat = int(rng.integers(0, free.size + 1)) if free.size else 0
    if n_lat and rng.random() < 0.5:  # crowded: most enterable voxels taken
        n_lat = max(n_lat, int(0.8 * free.size))
    n_gone = int(rng.integers(0, 6))  # slots removed earlier (dead, not compacted)
    n = n_lat + n_gone
    vox = rng.choice(free, n_lat, replace=False) if n_lat else np.zeros(0, np.int64)
    # slots: lattice and blood cells interleaved, ids increasing with gaps
    on_lattice = np.zeros(n, bool)
    on_lattice[rng.choice(n, n_lat, replace=False)] = True if n_lat else False
    ids = np.cumsum(rng.integers(1, 4, n)).astype(np.int64)
    cap = n + n_lat + 1  # every lattice cell might divide
    cols = {k: np.zeros(cap, dt) for k, dt in _COLUMNS.items()}
    cols["ids"][:n] = ids
    cols["parent"][:n] = rng.integers(-1, 50, n)
    cols["generation"][:n] = rng.integers(0, 9, n)
    cols["divisions"][:n] = rng.integers(0, 9, n)
    cols["donor"][:n] = rng.integers(0, 2, n)
    cols["timer"][:n] = rng.random(n) * 10
    cols["lag"][:n] = rng.random(n)
    cols["lastdir"][:n] = rng.integers(-1, 6, n)
    cols["birth"][:n] = rng.random(n) * 100
    occ = np.full(nv, -1, np.int32)
    act = np.zeros(cap, np.int8)
    changed = np.zeros(cap, np.int8)
    t0 = float(rng.uniform(0, 500))
    dt = float(rng.choice([0.5, 1.0, 2.0]))
    ev_time = np.zeros(cap, np.float64)
    ev_time[:n] = t0 + rng.random(n) * dt
    hsc = np.array(C.HSC_STATES)
    k_lat = 0
    for i in range(n):
        if on_lattice[i]:
            g = int(vox[k_lat])
            k_lat += 1
            occ[g] = i
            cols["z"][i], rem = divmod(g, ny * nx)
            cols["y"][i], cols["x"][i] = divmod(rem, nx)
            if rng.random() < 0.2:
                st = C.S_MPP
                a = rng.choice([C.A_NONE, C.A_DEATH, C.A_EXIT])
                # an HSC that just differentiated off its site (the rules set the flag)
                changed[i] = a == C.A_NONE and rng.random() < 0.4
            else:
                st = int(rng.choice(hsc))
                a = rng.choice([C.A_NONE, C.A_NONE, C.A_DEATH, C.A_EGRESS, C.A_DIVIDE,
                                C.A_DIVIDE, C.A_DIVIDE])
                changed[i] = rng.random() < 0.4
            cols["state"][i] = st
            cols["prev_state"][i] = st
            cols["bound"][i] = 0 if st == C.S_MPP else rng.random() < 0.5
        else:  # removed earlier in the step, waiting for compaction: the pass skips it
            cols["z"][i] = cols["y"][i] = cols["x"][i] = -1
            cols["state"][i] = C.S_DEAD
            a = C.A_NONE
        act[i] = a
    par = P.pack(CellsConfig(), {"p_hop": 1.0, "p_hop_mpp": 1.0, "dt_hours": dt,
                                 "reach_voxels": 1})
    par[P.K_PUSH] = float(rng.random() < 0.6)
    par[P.K_REACH] = float(rng.choice([1, 1, 2, 3]))
    par[P.K_ASYM] = float(rng.choice([0.0, 0.0, 0.3, 1.0]))
    par[P.K_TAXIS] = float(rng.choice([0.0, 3.0, 100.0]))
    par[P.K_SITE] = float(rng.uniform(0.2, 1.5))
    par[P.K_SITE_HILL] = float(rng.choice([2.0, 24.0, 100.0]))
    par[P.K_F_W_SNO] = float(rng.choice([0.0, 0.5]))
    par[P.K_BLOCK] = float(rng.choice([0.0, 0.5]))
    cap_ev = 2 * (int(np.count_nonzero(act[:n])) + int(np.count_nonzero(changed[:n]))) + 1
    return {
        "n": n, "next_id": int(ids[-1]) + 1 if n else 0, "cols": cols, "act": act,
        "ev_time": ev_time, "changed": changed, "occ": occ, "enter": enter,
        # the niche signal per voxel, some exactly at the site threshold
        "nsig": np.where(rng.random(nv) < 0.1, par[P.K_SITE], rng.random(nv) * 2.0),
        "shape": (nz, ny, nx), "par": par, "seed": int(rng.integers(0, 2**40)),
        "step": int(rng.integers(0, 10**6)), "t_end": t0 + dt,
        "ev": (np.full(cap_ev, -7.0), np.full((cap_ev, 3), -7, np.int8),
               np.full((cap_ev, 2), -7, np.int64), np.full((cap_ev, 6), -7, np.int32)),
        "counters": rng.integers(0, 100, C.N_COUNTERS).astype(np.int64),
    }


def run(fn, pop: dict) -> tuple[tuple, dict]:
    """Call a kernel (or the oracle) on private copies; returns its result and all arrays."""
    cols = {k: v.copy() for k, v in pop["cols"].items()}
    arrays = {k: pop[k].copy() for k in ("act", "ev_time", "changed", "occ", "enter",
                                         "nsig", "par", "counters")}
    arrays["mark"] = np.zeros(pop["occ"].size, np.uint8)  # the walk's scratch: zero after
    ev = tuple(a.copy() for a in pop["ev"])
    nz, ny, nx = pop["shape"]
    n = pop["n"]
    res = fn(n, n, pop["next_id"], *(cols[k] for k in _ORDER), arrays["act"],
             arrays["ev_time"], arrays["changed"], arrays["occ"],
             arrays["enter"], arrays["nsig"], arrays["mark"], nz, ny, nx, arrays["par"],
             pop["seed"], pop["step"], pop["t_end"], *ev, arrays["counters"])
    out = {**cols, **arrays}
    out.update(ev_t=ev[0], ev_i8=ev[1], ev_cell=ev[2], ev_i4=ev[3])
    return tuple(int(v) for v in res), out


def test_apply_actions_equals_its_python_oracle_on_random_populations():
    seen = {"push": 0, "wait": 0, "egress": 0, "divide": 0, "asym": 0, "renew": 0,
            "border": 0, "offsite": 0, "beyond_faces": 0}
    for seed in range(N_POPULATIONS):
        pop = random_population(seed)
        got_res, got = run(K.apply_actions, pop)
        want_res, want = run(oracle_apply_actions, pop)
        assert got_res == want_res, (seed, got_res, want_res)
        for key in want:
            assert got[key].dtype == want[key].dtype, (seed, key)
            assert np.array_equal(got[key], want[key]), (seed, key)
        assert not got["mark"].any(), seed  # the daughters' walk leaves its scratch clear
        delta = want["counters"] - pop["counters"]
        births = want["ev_i8"][:want_res[2], 0] == C.E_BIRTH
        hop = np.abs(want["ev_i4"][:want_res[2]][births, :3]
                     - want["ev_i4"][:want_res[2]][births, 3:]).sum(axis=1)
        seen["beyond_faces"] += int(np.count_nonzero(hop > 1))
        seen["push"] += int(delta[C.N_PUSH])
        seen["wait"] += int(delta[C.N_WAIT])
        seen["egress"] += int(delta[C.N_EGRESS])
        seen["divide"] += int(delta[C.N_DIV])
        seen["asym"] += int(delta[C.N_ASYM])
        seen["renew"] += int(delta[C.N_RENEW_SAME] + delta[C.N_RENEW_BORDER])
        seen["border"] += int(delta[C.N_ASYM_BORDER] + delta[C.N_RENEW_BORDER]
                              + delta[C.N_DIFF_BORDER])
        seen["offsite"] += int(delta[C.N_OFFSITE])
        assert delta[C.N_ASYM] == delta[C.N_ASYM_SAME] + delta[C.N_ASYM_BORDER]
        assert delta[C.N_DIV] == sum(delta[k] for k in (
            C.N_RENEW_SAME, C.N_RENEW_BORDER, C.N_ASYM_SAME, C.N_ASYM_BORDER, C.N_DIFF_SAME,
            C.N_DIFF_BORDER))
    # every branch of the kernel was exercised
    assert all(v > 10 for v in seen.values()), seen


@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_leaves_occupancy_consistent(seed):
    """Sanity of the comparison itself: after the pass, occupancy and positions agree."""
    pop = random_population(1000 + seed)
    (n_total, _, _), out = run(oracle_apply_actions, pop)
    nz, ny, nx = pop["shape"]
    alive = (out["state"][:n_total] != C.S_DEAD) & (out["z"][:n_total] >= 0)
    flat = (out["z"][:n_total].astype(np.int64) * ny + out["y"][:n_total]) * nx + out["x"][:n_total]
    assert np.array_equal(np.sort(flat[alive]), np.sort(np.flatnonzero(out["occ"] >= 0)))
    assert np.array_equal(out["occ"][flat[alive]], np.flatnonzero(alive))


def test_niche_signal_map_equals_its_python_oracle():
    """The niche-signal kernel against the plain-Python 3x3x3 mean on random small
    lattices (edges, SNO contact bits, negative membrane SCF, a CXCR4 blockade that the
    site signal ignores)."""
    from cells_oracle import niche_signal as oracle_niche_signal

    for seed in range(20):
        rng = np.random.default_rng(500 + seed)
        shape = tuple(int(v) for v in rng.integers(1, 6, 3))
        nv = int(np.prod(shape))
        cx = (rng.random(nv) * 30).astype(np.float32)
        ms = (rng.random(nv) * 1.2 - 0.1).astype(np.float32)
        contact = rng.integers(0, 16, nv).astype(np.uint8)
        par = P.pack(CellsConfig(), {"p_hop": 1.0, "p_hop_mpp": 1.0, "dt_hours": 1.0,
                                     "reach_voxels": 1})
        par[P.K_BLOCK] = float(rng.choice([0.0, 0.9]))
        par[P.K_F_W_SNO] = float(rng.uniform(0, 1))
        got = np.empty(nv)
        K.niche_signal_map(np.arange(nv, dtype=np.int64), *shape, cx, ms, contact, par, got)
        want = np.array([oracle_niche_signal(f, shape, cx, ms, contact, par) for f in range(nv)])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        # a few voxels of a larger lattice take the per-voxel path, all of them the
        # separable one: both equal the oracle
        big = (37, 5, 6)  # more planes than one chunk of the separable path
        nb = int(np.prod(big))
        cx = (rng.random(nb) * 30).astype(np.float32)
        ms = (rng.random(nb) * 1.2 - 0.1).astype(np.float32)
        contact = rng.integers(0, 16, nb).astype(np.uint8)
        few = np.sort(rng.choice(nb, nb // 10, replace=False)).astype(np.int64)
        for vox in (few, np.arange(nb, dtype=np.int64)):
            got = np.empty(vox.size)
            K.niche_signal_map(vox, *big, cx, ms, contact, par, got)
            want = np.array([oracle_niche_signal(int(f), big, cx, ms, contact, par) for f in vox])
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
