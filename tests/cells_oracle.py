"""Plain-Python references (no numba) of the cell kernels, as stumpy keeps ``tests/naive.py``.

Written from the rules in docs/cells.md, line for line with the kernels' documented order,
but sharing no code with them: the counter-based random numbers are re-derived here from
the splitmix64 finaliser, so a change to either side shows up as a mismatch.
"""

from __future__ import annotations

import math

import numpy as np

from niche3d.cells import codes as C
from niche3d.cells import params as P
from niche3d.cells.rng import Purpose

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_FACES = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _M64
    z = ((z ^ (z >> 27)) * _M2) & _M64
    return z ^ (z >> 31)


def hash64(seed: int, step: int, cell: int, purpose: int) -> int:
    """splitmix64 hash of the key, in Python integers."""
    h = _mix((seed + _GOLDEN) & _M64)
    h = _mix(h ^ ((step + _GOLDEN) & _M64))
    h = _mix(h ^ ((cell + _GOLDEN) & _M64))
    return _mix(h ^ ((purpose + _GOLDEN) & _M64))


def uniform(seed: int, step: int, cell: int, purpose: int) -> float:
    """Top 53 bits of :func:`hash64` as a double in [0, 1)."""
    return float(hash64(seed, step, cell, purpose) >> 11) / 9007199254740992.0


def occupancy(c: float, kd: float, blockade: float) -> float:
    """CXCR4 occupancy ``c / (c + Kd) * (1 - blockade)`` (0 for c <= 0)."""
    if c <= 0.0:
        return 0.0
    return c / (c + kd) * (1.0 - blockade)


def niche_signal(f: int, shape: tuple[int, int, int], cxcl: np.ndarray, mscf: np.ndarray,
                 contact: np.ndarray, par: np.ndarray) -> float:
    """``mean27(w_m max(mscf, 0) + w_c theta) + w_sno [touches an SNO]`` at voxel ``f``
    (the 3x3x3 block in z, y, x order; voxels beyond the edge count 0; theta without the
    CXCR4 blockade: sites are where ligands are presented)."""
    nz, ny, nx = shape
    zi, r = divmod(f, ny * nx)
    yi, xi = divmod(r, nx)
    acc = 0.0
    for zz in range(zi - 1, zi + 2):
        for yy in range(yi - 1, yi + 2):
            for xx in range(xi - 1, xi + 2):
                if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx:
                    g = (zz * ny + yy) * nx + xx
                    acc += (par[P.K_F_W_SCF] * max(float(mscf[g]), 0.0)
                            + par[P.K_F_W_CXCR4] * occupancy(float(cxcl[g]), par[P.K_KD], 0.0))
    sno = 1.0 if int(contact[f]) & C.C_SNO else 0.0
    return acc / 27.0 + par[P.K_F_W_SNO] * sno


def stem_probability(s: float, par: np.ndarray) -> float:
    """``S^n / (S^n + K^n)`` written as ``1 / (1 + (K / S)^n)`` (0 for S <= 0)."""
    if s <= 0.0:
        return 0.0
    try:  # Python floats: the same pow as the kernel, which overflows to inf (h = 0)
        q = float(par[P.K_SITE]) / float(s)
        return 1.0 / (1.0 + q ** float(par[P.K_SITE_HILL]))
    except OverflowError:
        return 0.0


def pick_place(free: list[int], u: float, nsig, par) -> int:
    """Index of the free voxel a daughter takes: weights ``exp(b (S - S_max))``."""
    b = par[P.K_TAXIS]
    if b <= 0.0 or len(free) == 1:
        return min(int(u * len(free)), len(free) - 1)
    sig = [float(nsig[g]) for g in free]
    top = max(sig)
    w = [math.exp(b * (v - top)) for v in sig]
    x = u * sum(w)
    acc = 0.0
    for k, wk in enumerate(w):
        acc += wk
        if x < acc:
            return k
    return len(free) - 1


def apply_actions(n, n_total, next_id, ids, parent, generation, divisions, state, prev_state,
                  z, y, x, bound, donor, timer, lag, lastdir, birth, act, ev_time, changed,
                  occ, enter, nsig, mark, nz, ny, nx, par, seed, step, t_end, ev_t, ev_i8, ev_cell,
                  ev_i4, counters):
    """Reference of ``niche3d.cells._kernels.apply_actions``: same arguments, same in-place
    writes, returns ``(n_total, next_id, n_events)``."""
    events = []

    def emit(t, kind, cell, other, zz, yy, xx, st, oz, oy, ox, ost):
        events.append((t, kind, cell, other, zz, yy, xx, st, oz, oy, ox, ost))

    def inside(a, b, c):
        return 0 <= a < nz and 0 <= b < ny and 0 <= c < nx

    def flat(a, b, c):
        return (a * ny + b) * nx + c

    def unflat(g):
        a, r = divmod(g, ny * nx)
        b, c = divmod(r, nx)
        return a, b, c

    for i in range(n):
        a = int(act[i])
        st = int(state[i])
        cid = int(ids[i])
        if a == C.A_NONE:
            if changed[i]:
                if st == C.S_G0:
                    counters[C.N_ACTIVATION] += 1
                elif st == C.S_DORMANT:
                    counters[C.N_RETURN] += 1
                elif st == C.S_G1:
                    counters[C.N_ENTRY] += 1
                elif st == C.S_MPP:
                    counters[C.N_OFFSITE] += 1
                emit(ev_time[i], C.E_STATE, cid, -1, z[i], y[i], x[i], st, -1, -1, -1, -1)
            continue
        zi, yi, xi = int(z[i]), int(y[i]), int(x[i])
        f = flat(zi, yi, xi)
        if a in (C.A_DEATH, C.A_EXIT, C.A_EGRESS):
            kind, after, counter = {
                C.A_DEATH: (C.E_DEATH, C.S_DEAD, C.N_DEATH),
                C.A_EXIT: (C.E_EXIT, st, C.N_EXIT),
                C.A_EGRESS: (C.E_EGRESS, C.S_CIRC, C.N_EGRESS),
            }[a]
            emit(t_end, kind, cid, -1, zi, yi, xi, after, -1, -1, -1, -1)
            occ[f] = -1
            counters[counter] += 1
            if a == C.A_EGRESS:  # into the blood compartment, which reads prev_state
                prev_state[i] = C.S_DORMANT if st == C.S_DORMANT else C.S_G0
            state[i] = C.S_DEAD
            continue
        # ---- division: a free voxel within reach (breadth-first through enterable
        # voxels, face steps, in face order), else push, else wait
        reach = int(par[P.K_REACH])
        seen = {f}
        frontier = [f]
        free = []
        for _ in range(reach):
            nxt = []
            for g0 in frontier:
                a0, b0, c0 = unflat(g0)
                for dz, dy, dx in _FACES:
                    if not inside(a0 + dz, b0 + dy, c0 + dx):
                        continue
                    g = flat(a0 + dz, b0 + dy, c0 + dx)
                    if not enter[g] or g in seen:
                        continue
                    seen.add(g)
                    nxt.append(g)
                    if occ[g] < 0:
                        free.append(g)
            frontier = nxt
        gd = -1
        if free:
            k = pick_place(free, uniform(seed, step, cid, Purpose.PLACE), nsig, par)
            gd = free[k]
        elif par[P.K_PUSH] > 0.5:
            dirs = []
            for d, (dz, dy, dx) in enumerate(_FACES):
                a1, b1, c1 = zi + dz, yi + dy, xi + dx
                a2, b2, c2 = a1 + dz, b1 + dy, c1 + dx
                if not inside(a2, b2, c2):
                    continue
                j = occ[flat(a1, b1, c1)]
                g2 = flat(a2, b2, c2)
                if j >= 0 and bound[j] == 0 and enter[g2] and occ[g2] < 0:
                    dirs.append(d)
            if dirs:
                k = min(int(uniform(seed, step, cid, Purpose.PUSH) * len(dirs)), len(dirs) - 1)
                dz, dy, dx = _FACES[dirs[k]]
                gd = flat(zi + dz, yi + dy, xi + dx)
                j = int(occ[gd])
                a2, b2, c2 = zi + 2 * dz, yi + 2 * dy, xi + 2 * dx
                occ[flat(a2, b2, c2)] = j
                z[j], y[j], x[j] = a2, b2, c2
                occ[gd] = -1
                counters[C.N_PUSH] += 1
        if gd < 0:
            timer[i] = 0.0
            lag[i] = 0.0
            counters[C.N_WAIT] += 1
            continue
        sm = float(nsig[f])
        sd = float(nsig[gd])
        if par[P.K_ASYM] > 0.0 and uniform(seed, step, cid, Purpose.ASYMMETRY) < par[P.K_ASYM]:
            if uniform(seed, step, cid, Purpose.ASYMMETRY_SIDE) < 0.5:
                fm, fd = C.S_G0, C.S_MPP
            else:
                fm, fd = C.S_MPP, C.S_G0
        else:
            pm = stem_probability(sm, par)
            pd = stem_probability(sd, par)
            fm = C.S_G0 if uniform(seed, step, cid, Purpose.FATE_MOTHER) < pm else C.S_MPP
            fd = C.S_G0 if uniform(seed, step, cid, Purpose.FATE_DAUGHTER) < pd else C.S_MPP
        border = (sm >= par[P.K_SITE]) != (sd >= par[P.K_SITE])
        if fm != fd:
            counters[C.N_ASYM] += 1
            counters[C.N_ASYM_BORDER if border else C.N_ASYM_SAME] += 1
        elif fm == C.S_G0:
            counters[C.N_RENEW_BORDER if border else C.N_RENEW_SAME] += 1
        else:
            counters[C.N_DIFF_BORDER if border else C.N_DIFF_SAME] += 1
        k = n_total
        n_total += 1
        did = next_id
        next_id += 1
        gz, gy, gx = unflat(gd)
        divisions[i] += 1
        ids[k] = did
        parent[k] = cid
        generation[k] = generation[i] + 1
        divisions[k] = divisions[i]
        state[k] = prev_state[k] = fd
        z[k], y[k], x[k] = gz, gy, gx
        bound[k] = 0
        donor[k] = donor[i]
        timer[k] = 0.0
        lag[k] = lag[i]
        lastdir[k] = -1
        birth[k] = ev_time[i]
        occ[gd] = k
        state[i] = prev_state[i] = fm
        if fm == C.S_MPP:
            bound[i] = 0
        counters[C.N_DIV] += 1
        emit(ev_time[i], C.E_DIVISION, cid, did, zi, yi, xi, fm, gz, gy, gx, fd)
        emit(ev_time[i], C.E_BIRTH, did, cid, gz, gy, gx, fd, zi, yi, xi, fm)
    for k, (t, kind, cell, other, zz, yy, xx, st, oz, oy, ox, ost) in enumerate(events):
        ev_t[k] = t
        ev_i8[k] = (kind, st, ost)
        ev_cell[k] = (cell, other)
        ev_i4[k] = (zz, yy, xx, oz, oy, ox)
    return n_total, next_id, len(events)


__all__ = ["hash64", "uniform", "occupancy", "niche_signal", "stem_probability", "pick_place",
           "apply_actions"]
