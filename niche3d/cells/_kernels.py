"""Numba kernels of the HSC automaton (private; :mod:`niche3d.cells.model` wraps them).

All kernels loop over cells, never over voxels. Parallel kernels write only per-cell
outputs (or occupancy entries that are provably distinct), serial kernels apply the
decisions in slot order (= id order), so results do not depend on the thread count.

Directions: 0 -z, 1 +z, 2 -y, 3 +y, 4 -x, 5 +x (axis ``d // 2``, sign ``+1`` for odd d).

The integer constants the kernels read are declared once elsewhere: state, action, event
and counter codes in :mod:`niche3d.cells.codes`, the parameter indices ``K_*`` in
:mod:`niche3d.cells.params`, the contact bits in :mod:`niche3d.tissue.contact`.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numba import prange

from niche3d._jit import jit
from niche3d.cells.codes import (
    A_DEATH,
    A_DIVIDE,
    A_EGRESS,
    A_EXIT,
    A_NONE,
    ACTIONS,
    C_ANG1,
    C_ENDO,
    C_OPN,
    C_SNO,
    COUNTERS,
    E_BIRTH,
    E_DEATH,
    E_DIVISION,
    E_EGRESS,
    E_EXIT,
    E_STATE,
    EVENTS,
    N_ACTIVATION,
    N_ASYM,
    N_ASYM_BORDER,
    N_ASYM_SAME,
    N_DEATH,
    N_DIFF_BORDER,
    N_DIFF_SAME,
    N_DIV,
    N_EGRESS,
    N_ENTRY,
    N_EXIT,
    N_OFFSITE,
    N_PUSH,
    N_RENEW_BORDER,
    N_RENEW_SAME,
    N_RETURN,
    N_WAIT,
    S_CIRC,
    S_DEAD,
    S_DORMANT,
    S_G0,
    S_G1,
    S_MPP,
    S_SG2M,
    STATES,
)
from niche3d.cells.params import (
    K_ACT,
    K_ACT_ANG1,
    K_ASYM,
    K_BIND_HALF,
    K_BIND_HILL,
    K_BLOCK,
    K_CHEMO_GAIN,
    K_CHEMO_THR,
    K_CYTO,
    K_DEATH,
    K_DEATH_NOSCF,
    K_DEATH_OPN,
    K_DEMAND,
    K_DEMAND_GAIN,
    K_DT,
    K_EGRESS,
    K_ENTRY,
    K_ENTRY_CXCL,
    K_F_W_CXCR4,
    K_F_W_SCF,
    K_F_W_SNO,
    K_G1_MEAN,
    K_G1_SHAPE,
    K_KD,
    K_KOFF,
    K_KON,
    K_MPP_DEATH,
    K_MPP_EXIT,
    K_OFF_ANG1,
    K_OFF_BLOCK,
    K_OFF_PROT,
    K_OFFSITE,
    K_PERSIST,
    K_PHOP,
    K_PHOP_MPP,
    K_PROT,
    K_PUSH,
    K_REACH,
    K_RET,
    K_RET_ANG1,
    K_RET_CXCR4,
    K_RET_SCF,
    K_RET_VCAM,
    K_S_MEAN,
    K_S_SHAPE,
    K_SCF_HALF,
    K_SITE,
    K_SITE_HILL,
    K_TAXIS,
    K_VCAM_PROT_HALF,
    K_W_CXCR4,
    K_W_ENDO,
    K_W_NCAD,
    K_W_SCF,
    K_W_VCAM,
    PARAMS,
)
from niche3d.cells.rng import Purpose, hash64, uniform

# purpose numbers as plain module ints (numba freezes globals as constants)
PU_ASYMMETRY = Purpose.ASYMMETRY
PU_ASYMMETRY_SIDE = Purpose.ASYMMETRY_SIDE
PU_BIND = Purpose.BIND
PU_CYCLE = Purpose.CYCLE
PU_CYCLE_KIND = Purpose.CYCLE_KIND
PU_DIRECTION = Purpose.DIRECTION
PU_ERLANG = Purpose.ERLANG
PU_EVENT = Purpose.EVENT
PU_EVENT_KIND = Purpose.EVENT_KIND
PU_FATE_DAUGHTER = Purpose.FATE_DAUGHTER
PU_FATE_MOTHER = Purpose.FATE_MOTHER
PU_HOP = Purpose.HOP
PU_PERSIST = Purpose.PERSIST
PU_PLACE = Purpose.PLACE
PU_PRIORITY = Purpose.PRIORITY
PU_PUSH = Purpose.PUSH
PU_TAXIS = Purpose.NICHE_TAXIS

# numba's on-disk cache is keyed by this file's time stamp, not by the values of the
# globals a kernel reads, and the codes, parameter indices, purposes and contact bits are
# declared in other modules: a change there alone would run stale compiled kernels. Their
# layout is therefore pinned here; a changed layout refuses to import until this digest
# is updated, and that edit invalidates the cache.
_LAYOUT_DIGEST = "08231338b86a34f3"


def layout_digest() -> str:
    """Digest of every integer layout the kernels freeze in: state, action, event and
    counter codes, parameter indices, random-stream purposes and contact bits."""
    rows = [STATES.constants, ACTIONS.constants, EVENTS.constants, COUNTERS.constants,
            tuple(spec.name for spec in PARAMS),
            tuple(sorted((k, v) for k, v in vars(Purpose).items() if isinstance(v, int))),
            (C_ENDO, C_ANG1, C_SNO, C_OPN)]
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


if layout_digest() != _LAYOUT_DIGEST:
    raise RuntimeError(
        "the kernel layout (codes, parameter table, purposes or contact bits) changed: set "
        f"_LAYOUT_DIGEST = {layout_digest()!r} in niche3d/cells/_kernels.py so that numba "
        "recompiles the kernels instead of loading stale ones from its cache"
    )

_DZ = np.array([-1, 1, 0, 0, 0, 0], dtype=np.int64)
_DY = np.array([0, 0, -1, 1, 0, 0], dtype=np.int64)
_DX = np.array([0, 0, 0, 0, -1, 1], dtype=np.int64)


# ---------------------------------------------------------------- signal helpers
@jit
def occupancy(c: float, kd: float, blockade: float) -> float:
    """Free-receptor CXCR4 occupancy ``c / (c + Kd)`` times the unblocked share."""
    if c <= 0.0:
        return 0.0
    return c / (c + kd) * (1.0 - blockade)


@jit
def adhesion_score(f: int, cxcl: np.ndarray, mscf: np.ndarray, contact: np.ndarray,
                   vcam: np.ndarray, par: np.ndarray) -> float:
    """Binding rate over ``k_on0``: contact (membrane SCF, VCAM1, N-cadherin, osteoblast
    lining) times CXCR4 integrin activation,
    ``(w_s m + w_v vcam + w_n sno + w_e endosteal) * (1 + w_c theta)``.

    ``vcam`` is the per-voxel VCAM1 contact in 0..1 (weighted face count / 6).
    """
    th = occupancy(cxcl[f], par[K_KD], par[K_BLOCK])
    vc = vcam[f] / (1.0 + par[K_PROT] / par[K_VCAM_PROT_HALF])
    nc = 1.0 if (contact[f] & C_SNO) != 0 else 0.0
    ob = 1.0 if (contact[f] & C_ANG1) != 0 else 0.0
    m = mscf[f]
    if m < 0.0:
        m = 0.0
    return (par[K_W_SCF] * m + par[K_W_VCAM] * vc + par[K_W_NCAD] * nc + par[K_W_ENDO] * ob) * (
        1.0 + par[K_W_CXCR4] * th)


@jit
def binding_hill(s: float, par: np.ndarray) -> float:
    """Saturating response of binding to the adhesion score: ``s^n / (s^n + K^n)``."""
    if s <= 0.0:
        return 0.0
    sn = s ** par[K_BIND_HILL]
    return sn / (sn + par[K_BIND_HALF] ** par[K_BIND_HILL])


@jit
def niche_signal(f: int, nz: int, ny: int, nx: int, cxcl: np.ndarray, mscf: np.ndarray,
                 contact: np.ndarray, par: np.ndarray) -> float:
    """Niche signal ``S = mean27(w_m mscf + w_c theta) + w_sno sno`` an HSC at voxel ``f``
    receives.

    The first term is the signal within the cell's reach: the mean over the 3x3x3 block
    around ``f`` of membrane SCF contact and the CXCL12 occupancy ``theta = c / (c + Kd)``
    (voxels beyond the lattice edge count 0; summed in a fixed order), so that a cell's
    own CXCL12 uptake does not decide whether it holds its site. ``sno`` is 1 where ``f``
    touches an SNO osteoblast (N-cadherin, ANG1).

    A site is where the niche presents its ligands, so ``theta`` here ignores a CXCR4
    blockade: hours of AMD3100 release HSCs through adhesion and egress, they do not turn
    every niche into non-niche marrow (protease, which degrades CXCL12 and membrane SCF
    over days, does shrink the sites).
    """
    zi = f // (ny * nx)
    r = f - zi * ny * nx
    yi = r // nx
    xi = r - yi * nx
    kd = par[K_KD]
    wm = par[K_F_W_SCF]
    wc = par[K_F_W_CXCR4]
    acc = 0.0
    for zz in range(zi - 1, zi + 2):
        if zz < 0 or zz >= nz:
            continue
        for yy in range(yi - 1, yi + 2):
            if yy < 0 or yy >= ny:
                continue
            base = (zz * ny + yy) * nx
            for xx in range(xi - 1, xi + 2):
                if xx < 0 or xx >= nx:
                    continue
                acc += _site_term(base + xx, cxcl, mscf, wm, wc, kd)
    sno = 1.0 if (contact[f] & C_SNO) != 0 else 0.0
    return acc / 27.0 + par[K_F_W_SNO] * sno


@jit
def _site_term(g: int, cxcl: np.ndarray, mscf: np.ndarray, wm: float, wc: float,
               kd: float) -> float:
    """One voxel's share of the niche signal: ``w_m mscf + w_c theta`` (mscf below 0
    counts 0; theta ignores a CXCR4 blockade, see :func:`niche_signal`)."""
    v = mscf[g]
    if v < 0.0:
        v = 0.0
    return wm * v + wc * occupancy(cxcl[g], kd, 0.0)


@jit
def stem_probability(s: float, par: np.ndarray) -> float:
    """Probability ``S^n / (S^n + K^n)`` that a cell with niche signal ``s`` stays a stem
    cell (``K`` the site threshold, ``n`` its steepness)."""
    if s <= 0.0:
        return 0.0
    q = (par[K_SITE] / s) ** par[K_SITE_HILL]
    return 1.0 / (1.0 + q)


_NICHE_CHUNK = 16  # z-planes per chunk of the separable niche-signal map


@jit(parallel=True)
def niche_signal_map(voxels: np.ndarray, nz: int, ny: int, nx: int, cxcl: np.ndarray,
                     mscf: np.ndarray, contact: np.ndarray, par: np.ndarray,
                     out: np.ndarray) -> None:
    """:func:`niche_signal` at every voxel of ``voxels`` (flat indices), into ``out``.

    For many voxels (sorted), each voxel's term ``w_m mscf + w_c theta`` is computed once
    and the 3x3x3 sums are taken as three 3-point sums along x, y and z (separable),
    instead of 27 occupancies per voxel; planes are done in chunks of ``_NICHE_CHUNK``
    so the temporaries stay small (2 x (chunk + 2) planes of float64). The two ways sum
    in a different order, so they agree to rounding (~1e-16), not bit for bit; which one
    runs depends only on the sizes and order of ``voxels``, so results stay
    deterministic."""
    n = nz * ny * nx
    m = voxels.shape[0]
    ordered = True
    for k in range(1, m):
        if voxels[k] < voxels[k - 1]:
            ordered = False
            break
    if m * 8 < n or not ordered:
        for k in prange(m):
            out[k] = niche_signal(voxels[k], nz, ny, nx, cxcl, mscf, contact, par)
        return
    kd = par[K_KD]
    wm = par[K_F_W_SCF]
    wc = par[K_F_W_CXCR4]
    plane = ny * nx
    a = np.empty((_NICHE_CHUNK + 2, ny, nx), np.float64)
    b = np.empty((_NICHE_CHUNK + 2, ny, nx), np.float64)
    for z0 in range(0, nz, _NICHE_CHUNK):
        z1 = min(z0 + _NICHE_CHUNK, nz)
        lo = max(z0 - 1, 0)  # planes lo..hi-1 are needed; row i of a/b is plane lo + i
        hi = min(z1 + 1, nz)
        for i in prange(hi - lo):  # terms, then 3-point sums along x
            base0 = (lo + i) * plane
            for y in range(ny):
                base = base0 + y * nx
                for x in range(nx):
                    a[i, y, x] = _site_term(base + x, cxcl, mscf, wm, wc, kd)
                for x in range(nx):
                    t = a[i, y, x]
                    if x > 0:
                        t += a[i, y, x - 1]
                    if x + 1 < nx:
                        t += a[i, y, x + 1]
                    b[i, y, x] = t
        for i in prange(hi - lo):  # along y
            for y in range(ny):
                for x in range(nx):
                    t = b[i, y, x]
                    if y > 0:
                        t += b[i, y - 1, x]
                    if y + 1 < ny:
                        t += b[i, y + 1, x]
                    a[i, y, x] = t
        k0 = np.searchsorted(voxels, z0 * plane)
        k1 = np.searchsorted(voxels, z1 * plane)
        for k in prange(k0, k1):  # along z, at the voxels of this chunk
            f = voxels[k]
            zi = f // plane
            r = f - zi * plane
            yi = r // nx
            xi = r - yi * nx
            i = zi - lo
            t = a[i, yi, xi]
            if zi > 0:
                t += a[i - 1, yi, xi]
            if zi + 1 < nz:
                t += a[i + 1, yi, xi]
            sno = 1.0 if (contact[f] & C_SNO) != 0 else 0.0
            out[k] = t / 27.0 + par[K_F_W_SNO] * sno


@jit
def erlang(seed: int, step: int, cid: int, base: int, mean: float, shape: float) -> float:
    """Erlang(shape, mean) duration from counter-based uniforms (purposes base + 64 k)."""
    k = int(shape)
    s = 0.0
    for j in range(k):
        u = uniform(seed, step, cid, base + 64 * (j + 1))
        s += -math.log1p(-u)
    return s * mean / k


@jit
def _bias(f: int, z: int, y: int, x: int, nz: int, ny: int, nx: int, cxcl: np.ndarray,
          par: np.ndarray) -> tuple[float, float, float]:
    """Hop bias per axis from the central difference of CXCR4 occupancy (clipped to +-1)."""
    kd = par[K_KD]
    blk = par[K_BLOCK]
    gain = par[K_CHEMO_GAIN]
    thr = par[K_CHEMO_THR]
    t0 = occupancy(cxcl[f], kd, blk)
    sx = nx
    sy = ny * nx
    # z
    tp = occupancy(cxcl[f + sy], kd, blk) if z + 1 < nz else t0
    tm = occupancy(cxcl[f - sy], kd, blk) if z > 0 else t0
    bz = _clip_bias(0.5 * (tp - tm), gain, thr)
    tp = occupancy(cxcl[f + sx], kd, blk) if y + 1 < ny else t0
    tm = occupancy(cxcl[f - sx], kd, blk) if y > 0 else t0
    by = _clip_bias(0.5 * (tp - tm), gain, thr)
    tp = occupancy(cxcl[f + 1], kd, blk) if x + 1 < nx else t0
    tm = occupancy(cxcl[f - 1], kd, blk) if x > 0 else t0
    bx = _clip_bias(0.5 * (tp - tm), gain, thr)
    return bz, by, bx


@jit
def _clip_bias(d: float, gain: float, thr: float) -> float:
    a = abs(d) - thr
    if a <= 0.0:
        return 0.0
    b = gain * a
    if b > 1.0:
        b = 1.0
    return b if d > 0.0 else -b


# ---------------------------------------------------------------- motility (3 phases)
@jit
def _propose_moves_one(i: int, n: int, ids: np.ndarray, state: np.ndarray, bound: np.ndarray,
                       z: np.ndarray, y: np.ndarray, x: np.ndarray, lastdir: np.ndarray,
                       occ: np.ndarray, enter: np.ndarray, cxcl: np.ndarray, nsig: np.ndarray,
                       nz: int, ny: int, nx: int, par: np.ndarray, seed: int, step: int, sub: int,
                       target: np.ndarray, tdir: np.ndarray, prio: np.ndarray) -> None:
    target[i] = -1
    st = state[i]
    if st > S_MPP or bound[i] != 0:
        return
    p = par[K_PHOP_MPP] if st == S_MPP else par[K_PHOP]
    if p <= 0.0:
        return
    cid = ids[i]
    if uniform(seed, step, cid, PU_HOP + 64 * sub) >= p:
        return
    zi = z[i]
    yi = y[i]
    xi = x[i]
    f = (zi * ny + yi) * nx + xi
    ld = lastdir[i]
    d = -1
    q = par[K_PERSIST]
    if ld >= 0 and q > 0.0 and uniform(seed, step, cid, PU_PERSIST + 64 * sub) < q:
        d = ld
    else:
        bz = 0.0
        by = 0.0
        bx = 0.0
        if par[K_CHEMO_GAIN] > 0.0:
            bz, by, bx = _bias(f, zi, yi, xi, nz, ny, nx, cxcl, par)
        u = uniform(seed, step, cid, PU_DIRECTION + 64 * sub) * 6.0
        # cumulative weights 1 -+ b per direction (sum 6)
        if u < 1.0 - bz:
            d = 0
        elif u < 2.0:
            d = 1
        elif u < 3.0 - by:
            d = 2
        elif u < 4.0:
            d = 3
        elif u < 5.0 - bx:
            d = 4
        else:
            d = 5
    zz = zi + _DZ[d]
    yy = yi + _DY[d]
    xx = xi + _DX[d]
    if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
        return
    g = (zz * ny + yy) * nx + xx
    if enter[g] == 0 or occ[g] >= 0:
        return
    if st != S_MPP and par[K_TAXIS] > 0.0:
        # niche taxis: a hop down the niche signal is taken with probability exp(-b drop)
        drop = nsig[f] - nsig[g]
        if drop > 0.0 and uniform(seed, step, cid, PU_TAXIS + 64 * sub) >= math.exp(-par[K_TAXIS] * drop):
            return
    target[i] = g
    tdir[i] = d
    prio[i] = hash64(seed, step, cid, PU_PRIORITY + 64 * sub)


@jit(parallel=True)
def propose_moves_par(n: int, ids: np.ndarray, state: np.ndarray, bound: np.ndarray,
                      z: np.ndarray, y: np.ndarray, x: np.ndarray, lastdir: np.ndarray,
                      occ: np.ndarray, enter: np.ndarray, cxcl: np.ndarray, nsig: np.ndarray,
                      nz: int, ny: int, nx: int, par: np.ndarray, seed: int, step: int, sub: int,
                      target: np.ndarray, tdir: np.ndarray, prio: np.ndarray) -> None:
    """Phase 1: each unbound cell on the lattice proposes at most one hop to a free voxel."""
    for i in prange(n):
        _propose_moves_one(i, n, ids, state, bound, z, y, x, lastdir, occ, enter, cxcl, nsig,
                           nz, ny, nx, par, seed, step, sub, target, tdir, prio)


@jit
def propose_moves_ser(n: int, ids: np.ndarray, state: np.ndarray, bound: np.ndarray,
                      z: np.ndarray, y: np.ndarray, x: np.ndarray, lastdir: np.ndarray,
                      occ: np.ndarray, enter: np.ndarray, cxcl: np.ndarray, nsig: np.ndarray,
                      nz: int, ny: int, nx: int, par: np.ndarray, seed: int, step: int, sub: int,
                      target: np.ndarray, tdir: np.ndarray, prio: np.ndarray) -> None:
    """Serial twin of :func:`propose_moves_par` (same results; no thread start-up cost)."""
    for i in range(n):
        _propose_moves_one(i, n, ids, state, bound, z, y, x, lastdir, occ, enter, cxcl, nsig,
                           nz, ny, nx, par, seed, step, sub, target, tdir, prio)


@jit
def _resolve_moves_one(i: int, n: int, target: np.ndarray, prio: np.ndarray, occ: np.ndarray,
                       nz: int, ny: int, nx: int, win: np.ndarray) -> None:
    win[i] = 0
    t = target[i]
    if t < 0:
        return
    tz = t // (ny * nx)
    r = t - tz * ny * nx
    ty = r // nx
    tx = r - ty * nx
    ok = 1
    pi = prio[i]
    for d in range(6):
        zz = tz + _DZ[d]
        yy = ty + _DY[d]
        xx = tx + _DX[d]
        if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
            continue
        j = occ[(zz * ny + yy) * nx + xx]
        if j < 0 or j == i or target[j] != t:
            continue
        pj = prio[j]
        if pj > pi or (pj == pi and j < i):
            ok = 0
            break
    win[i] = ok


@jit(parallel=True)
def resolve_moves_par(n: int, target: np.ndarray, prio: np.ndarray, occ: np.ndarray, nz: int,
                      ny: int, nx: int, win: np.ndarray) -> None:
    """Phase 2: a proposal wins unless a rival for the same voxel has a higher priority.

    Rivals are found among the target's 6 neighbours (read-only), ties broken by lower slot.
    """
    for i in prange(n):
        _resolve_moves_one(i, n, target, prio, occ, nz, ny, nx, win)


@jit
def resolve_moves_ser(n: int, target: np.ndarray, prio: np.ndarray, occ: np.ndarray, nz: int,
                      ny: int, nx: int, win: np.ndarray) -> None:
    """Serial twin of :func:`resolve_moves_par` (same results; no thread start-up cost)."""

    for i in range(n):
        _resolve_moves_one(i, n, target, prio, occ, nz, ny, nx, win)


@jit
def _apply_moves_one(i: int, n: int, target: np.ndarray, tdir: np.ndarray, win: np.ndarray,
                     occ: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                     lastdir: np.ndarray, ny: int, nx: int) -> None:
    if win[i] == 0:
        return
    occ[(z[i] * ny + y[i]) * nx + x[i]] = -1
    t = target[i]
    occ[t] = i
    tz = t // (ny * nx)
    r = t - tz * ny * nx
    ty = r // nx
    z[i] = tz
    y[i] = ty
    x[i] = r - ty * nx
    lastdir[i] = tdir[i]


@jit(parallel=True)
def apply_moves_par(n: int, target: np.ndarray, tdir: np.ndarray, win: np.ndarray,
                    occ: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                    lastdir: np.ndarray, ny: int, nx: int) -> None:
    """Phase 3: winners move (every written voxel is distinct: old voxels and won targets)."""
    for i in prange(n):
        _apply_moves_one(i, n, target, tdir, win, occ, z, y, x, lastdir, ny, nx)


@jit
def apply_moves_ser(n: int, target: np.ndarray, tdir: np.ndarray, win: np.ndarray,
                    occ: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                    lastdir: np.ndarray, ny: int, nx: int) -> None:
    """Serial twin of :func:`apply_moves_par` (same results; no thread start-up cost)."""
    for i in range(n):
        _apply_moves_one(i, n, target, tdir, win, occ, z, y, x, lastdir, ny, nx)


# ---------------------------------------------------------------- per-cell rules
@jit
def _hazard_time(k: float, b: float, u: float) -> float:
    """Event time in [0, b) of a constant hazard ``k`` from one uniform, or -1 if none."""
    if k <= 0.0 or b <= 0.0:
        return -1.0
    if u >= -math.expm1(-k * b):
        return -1.0
    s = -math.log1p(-u) / k
    return s if s < b else b


@jit
def _cell_rules_one(i: int, n: int, ids: np.ndarray, state: np.ndarray, bound: np.ndarray,
                    z: np.ndarray, y: np.ndarray, x: np.ndarray, timer: np.ndarray,
                    lag: np.ndarray, cxcl: np.ndarray, scf: np.ndarray, mscf: np.ndarray,
                    contact: np.ndarray, vcam: np.ndarray, ang1: np.ndarray, nsig: np.ndarray,
                    nz: int, ny: int, nx: int, par: np.ndarray, seed: int, step: int, t0: float,
                    act: np.ndarray, ev_time: np.ndarray, changed: np.ndarray,
                    k_egress: np.ndarray, dt: float) -> None:
    act[i] = A_NONE
    changed[i] = 0
    ev_time[i] = t0 + dt
    k_egress[i] = 0.0
    st = state[i]
    cid = ids[i]
    if st > S_MPP:  # blood is a compartment (niche3d.cells.blood); dead cells wait for compaction
        return
    f = (z[i] * ny + y[i]) * nx + x[i]
    if st == S_MPP:
        ke = par[K_MPP_EXIT]
        kd = par[K_MPP_DEATH] + par[K_CYTO]
        kk = ke + kd
        s = _hazard_time(kk, dt, uniform(seed, step, cid, PU_EVENT))
        if s >= 0.0:
            if uniform(seed, step, cid, PU_EVENT_KIND) * kk < ke:
                act[i] = A_EXIT
            else:
                act[i] = A_DEATH
        return
    # ---- HSC on the lattice: adhesion
    th = occupancy(cxcl[f], par[K_KD], par[K_BLOCK])
    ub = uniform(seed, step, cid, PU_BIND)
    if bound[i] != 0:
        koff = par[K_KOFF] * (1.0 + par[K_OFF_PROT] * par[K_PROT] + par[K_OFF_BLOCK] * par[K_BLOCK])
        koff /= 1.0 + par[K_OFF_ANG1] * ang1[f]
        if ub < -math.expm1(-koff * dt):
            bound[i] = 0
    else:
        kon = par[K_KON] * binding_hill(adhesion_score(f, cxcl, mscf, contact, vcam, par), par)
        if ub < -math.expm1(-kon * dt):
            bound[i] = 1
    # ---- apoptosis and egress (competing hazards over the step)
    cb = contact[f]
    m = mscf[f]
    if m < 0.0:
        m = 0.0
    sc = scf[f]
    if sc < 0.0:
        sc = 0.0
    support = m + sc / (sc + par[K_SCF_HALF])
    if support > 1.0:
        support = 1.0
    opn = 1.0 if (cb & C_OPN) != 0 else 0.0
    kd = par[K_DEATH] * (1.0 + par[K_DEATH_OPN] * opn) * (1.0 + par[K_DEATH_NOSCF] * (1.0 - support))
    if st == S_G1 or st == S_SG2M:
        kd += par[K_CYTO]
    ke = 0.0
    if (cb & C_ENDO) != 0:
        ke_here = par[K_EGRESS] / (1.0 + par[K_RET_CXCR4] * th + par[K_RET_VCAM] * vcam[f]
                                   + par[K_RET_SCF] * m)
        if bound[i] == 0:
            ke = ke_here
        # the expected egress of a cell here, averaged over its binding state (unbound
        # share koff / (kon + koff)): the other marrow's mean field, smooth where the
        # block's own few cells are bound or not at any one moment
        kon_e = par[K_KON] * binding_hill(adhesion_score(f, cxcl, mscf, contact, vcam, par), par)
        koff_e = par[K_KOFF] * (1.0 + par[K_OFF_PROT] * par[K_PROT] + par[K_OFF_BLOCK] * par[K_BLOCK])
        koff_e /= 1.0 + par[K_OFF_ANG1] * ang1[f]
        k_egress[i] = ke_here * (koff_e / (kon_e + koff_e) if kon_e + koff_e > 0.0 else 1.0)
    # an HSC that holds no niche site (niche signal below the threshold) differentiates
    kx = 0.0
    if par[K_OFFSITE] > 0.0 and nsig[f] < par[K_SITE]:
        kx = par[K_OFFSITE]
    kk = kd + ke + kx
    s = _hazard_time(kk, dt, uniform(seed, step, cid, PU_EVENT))
    if s >= 0.0:
        uk = uniform(seed, step, cid, PU_EVENT_KIND) * kk
        if uk < kd:
            act[i] = A_DEATH
            return
        if uk < kd + ke:
            act[i] = A_EGRESS
            return
        state[i] = S_MPP
        bound[i] = 0
        timer[i] = 0.0
        lag[i] = 0.0
        changed[i] = 1
        ev_time[i] = t0 + s
        return
    # ---- cycle clock (exact times, one transition per step, remainder carried)
    b = dt + lag[i]
    start = t0 - lag[i]
    a1 = ang1[f]
    dem = par[K_DEMAND]
    uc = uniform(seed, step, cid, PU_CYCLE)
    if st == S_DORMANT:
        k = par[K_ACT] * (1.0 - par[K_ACT_ANG1] * a1) * (1.0 + par[K_DEMAND_GAIN] * dem)
        s = _hazard_time(k, b, uc)
        if s >= 0.0:
            state[i] = S_G0
            changed[i] = 1
            ev_time[i] = start + s
            lag[i] = b - s
        else:
            lag[i] = 0.0
    elif st == S_G0:
        k_entry = par[K_ENTRY] * (1.0 + par[K_DEMAND_GAIN] * dem) / (1.0 + par[K_ENTRY_CXCL] * th)
        k_ret = par[K_RET] * (1.0 + par[K_RET_ANG1] * a1) * (1.0 - dem)
        if k_ret < 0.0:
            k_ret = 0.0
        kk = k_entry + k_ret
        s = _hazard_time(kk, b, uc)
        if s >= 0.0:
            if uniform(seed, step, cid, PU_CYCLE_KIND) * kk < k_entry:
                state[i] = S_G1
                timer[i] = erlang(seed, step, cid, PU_ERLANG, par[K_G1_MEAN], par[K_G1_SHAPE])
            else:
                state[i] = S_DORMANT
            changed[i] = 1
            ev_time[i] = start + s
            lag[i] = b - s
        else:
            lag[i] = 0.0
    elif st == S_G1:
        if timer[i] <= b:
            s = timer[i]
            state[i] = S_SG2M
            timer[i] = erlang(seed, step, cid, PU_ERLANG, par[K_S_MEAN], par[K_S_SHAPE])
            changed[i] = 1
            ev_time[i] = start + s
            lag[i] = b - s
        else:
            timer[i] -= b
            lag[i] = 0.0
    elif st == S_SG2M:
        if timer[i] <= b:
            s = timer[i]
            act[i] = A_DIVIDE
            ev_time[i] = start + s
            lag[i] = b - s
            timer[i] = 0.0
        else:
            timer[i] -= b
            lag[i] = 0.0


@jit(parallel=True)
def cell_rules_par(n: int, ids: np.ndarray, state: np.ndarray, bound: np.ndarray,
                   z: np.ndarray, y: np.ndarray, x: np.ndarray, timer: np.ndarray,
                   lag: np.ndarray, cxcl: np.ndarray, scf: np.ndarray, mscf: np.ndarray,
                   contact: np.ndarray, vcam: np.ndarray, ang1: np.ndarray, nsig: np.ndarray,
                   nz: int, ny: int, nx: int, par: np.ndarray, seed: int, step: int, t0: float,
                   act: np.ndarray, ev_time: np.ndarray, changed: np.ndarray,
                   k_egress: np.ndarray) -> None:
    """Decide each cell's step: adhesion, death/egress/exit, off-site loss, cycle clock.

    Writes the cell's own bound flag, state, timer and lag (cycle transitions are taken
    at exact times inside the step, at most one per step, with the remaining time carried
    as ``lag``), plus an action code for the serial apply pass and the cell's expected
    egress hazard over its binding states (1/h, 0 away from endothelium) for the blood
    compartment's mean field.
    """
    dt = par[K_DT]
    for i in prange(n):
        _cell_rules_one(i, n, ids, state, bound, z, y, x, timer, lag, cxcl, scf, mscf, contact,
                        vcam, ang1, nsig, nz, ny, nx, par, seed, step, t0, act, ev_time,
                        changed, k_egress, dt)


@jit
def cell_rules_ser(n: int, ids: np.ndarray, state: np.ndarray, bound: np.ndarray,
                   z: np.ndarray, y: np.ndarray, x: np.ndarray, timer: np.ndarray,
                   lag: np.ndarray, cxcl: np.ndarray, scf: np.ndarray, mscf: np.ndarray,
                   contact: np.ndarray, vcam: np.ndarray, ang1: np.ndarray, nsig: np.ndarray,
                   nz: int, ny: int, nx: int, par: np.ndarray, seed: int, step: int, t0: float,
                   act: np.ndarray, ev_time: np.ndarray, changed: np.ndarray,
                   k_egress: np.ndarray) -> None:
    """Serial twin of :func:`cell_rules_par` (same results; no thread start-up cost)."""
    dt = par[K_DT]
    for i in range(n):
        _cell_rules_one(i, n, ids, state, bound, z, y, x, timer, lag, cxcl, scf, mscf, contact,
                        vcam, ang1, nsig, nz, ny, nx, par, seed, step, t0, act, ev_time,
                        changed, k_egress, dt)


# ---------------------------------------------------------------- serial apply
@jit
def _emit(k: int, t: float, kind: int, cell: int, other: int, zz: int, yy: int, xx: int,
          st: int, oz: int, oy: int, ox: int, ost: int, ev_t: np.ndarray, ev_i8: np.ndarray,
          ev_cell: np.ndarray, ev_i4: np.ndarray) -> int:
    ev_t[k] = t
    ev_i8[k, 0] = kind
    ev_i8[k, 1] = st
    ev_i8[k, 2] = ost
    ev_cell[k, 0] = cell
    ev_cell[k, 1] = other
    ev_i4[k, 0] = zz
    ev_i4[k, 1] = yy
    ev_i4[k, 2] = xx
    ev_i4[k, 3] = oz
    ev_i4[k, 4] = oy
    ev_i4[k, 5] = ox
    return k + 1


@jit
def _reachable_free(f: int, reach: int, nz: int, ny: int, nx: int, occ: np.ndarray,
                    enter: np.ndarray, mark: np.ndarray, queue: np.ndarray, qdist: np.ndarray,
                    cand: np.ndarray) -> int:
    """Free voxels a daughter can reach from ``f``: a breadth-first walk of at most
    ``reach`` face steps through enterable voxels (it squeezes past occupied ones but
    lands only on a free one). Writes them to ``cand`` in walk order and returns their
    number. ``mark`` (one byte per voxel) is all zero before and after the call."""
    queue[0] = f
    qdist[0] = 0
    mark[f] = 1
    nq = 1
    head = 0
    nf = 0
    while head < nq:
        g0 = queue[head]
        d0 = qdist[head]
        head += 1
        if d0 >= reach:
            continue
        z0 = g0 // (ny * nx)
        r0 = g0 - z0 * ny * nx
        y0 = r0 // nx
        x0 = r0 - y0 * nx
        for d in range(6):
            zz = z0 + _DZ[d]
            yy = y0 + _DY[d]
            xx = x0 + _DX[d]
            if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                continue
            g = (zz * ny + yy) * nx + xx
            if enter[g] == 0 or mark[g] != 0:
                continue
            mark[g] = 1
            queue[nq] = g
            qdist[nq] = d0 + 1
            nq += 1
            if occ[g] < 0:
                cand[nf] = g
                nf += 1
    for k in range(nq):
        mark[queue[k]] = 0
    return nf


@jit
def _pick_place(cand: np.ndarray, nf: int, u: float, nsig: np.ndarray, par: np.ndarray,
                wts: np.ndarray) -> int:
    """Index into ``cand[:nf]`` of the free voxel a daughter takes.

    With ``b = niche_taxis`` each free voxel ``d`` within reach is taken with probability
    proportional to ``exp(b (S_d - S_max))`` (the adhesion-energy term of the motility
    rule: the niche keeps the daughter if it has a free site within her reach);
    ``b = 0`` is a uniform choice.
    """
    b = par[K_TAXIS]
    if b <= 0.0 or nf == 1:
        k = int(u * nf)
        return k if k < nf else nf - 1
    smax = -1e300
    for k in range(nf):
        wts[k] = nsig[cand[k]]
        if wts[k] > smax:
            smax = wts[k]
    tot = 0.0
    for k in range(nf):
        wts[k] = math.exp(b * (wts[k] - smax))
        tot += wts[k]
    acc = 0.0
    x = u * tot
    for k in range(nf):
        acc += wts[k]
        if x < acc:
            return k
    return nf - 1


@jit
def settle(f: int, reach: int, nz: int, ny: int, nx: int, occ: np.ndarray, enter: np.ndarray,
           nsig: np.ndarray, mark: np.ndarray, u: float, par: np.ndarray) -> int:
    """Voxel an HSC that crossed the endothelium at ``f`` lodges in: the free voxel of
    highest niche signal (weights as :func:`_pick_place`) among ``f`` itself and the free
    voxels within ``reach`` face steps through marrow; -1 if none is free."""
    nbox = (2 * reach + 1) ** 3
    queue = np.empty(nbox, dtype=np.int64)
    qdist = np.empty(nbox, dtype=np.int64)
    cand = np.empty(nbox + 1, dtype=np.int64)
    wts = np.empty(nbox + 1, dtype=np.float64)
    nf = _reachable_free(f, reach, nz, ny, nx, occ, enter, mark, queue, qdist, cand[1:])
    if enter[f] != 0 and occ[f] < 0:
        cand[0] = f
        nf += 1
        k = _pick_place(cand, nf, u, nsig, par, wts)
        return cand[k]
    if nf == 0:
        return -1
    k = _pick_place(cand[1:], nf, u, nsig, par, wts)
    return cand[1 + k]


@jit
def apply_actions(n: int, n_total: int, next_id: int, ids: np.ndarray, parent: np.ndarray,
                  generation: np.ndarray, divisions: np.ndarray, state: np.ndarray,
                  prev_state: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                  bound: np.ndarray, donor: np.ndarray, timer: np.ndarray, lag: np.ndarray,
                  lastdir: np.ndarray, birth: np.ndarray, act: np.ndarray,
                  ev_time: np.ndarray, changed: np.ndarray, occ: np.ndarray, enter: np.ndarray,
                  nsig: np.ndarray, mark: np.ndarray, nz: int, ny: int, nx: int, par: np.ndarray,
                  seed: int,
                  step: int, t_end: float, ev_t: np.ndarray, ev_i8: np.ndarray, ev_cell: np.ndarray,
                  ev_i4: np.ndarray, counters: np.ndarray) -> tuple[int, int, int]:
    """Apply the decisions of :func:`cell_rules_par` in slot order.

    Returns ``(n_total, next_id, n_events)``.

    Removed cells (death, exit, egress into the blood compartment) get state ``S_DEAD``
    and are compacted by the caller. Daughters are appended at slot ``n_total`` onwards with fresh ids.

    Each daughter's fate follows the place it sits in after the division: it stays a stem
    cell with probability :func:`stem_probability` of the niche signal ``nsig`` there (the
    mother where she is, the new daughter in the free voxel it was placed in). A division
    is counted by its outcome (renewal, asymmetric, differentiating) and by whether the
    two voxels lie on the same side of the niche border (both sites or both not).
    """
    ne = 0
    push = par[K_PUSH] > 0.5
    reach = int(par[K_REACH])
    nbox = (2 * reach + 1) ** 3
    queue = np.empty(nbox, dtype=np.int64)
    qdist = np.empty(nbox, dtype=np.int64)
    cand = np.empty(nbox, dtype=np.int64)
    wts = np.empty(nbox, dtype=np.float64)
    for i in range(n):
        a = act[i]
        st = state[i]
        cid = ids[i]
        if a == A_NONE:
            if changed[i] != 0:
                if st == S_G0:
                    counters[N_ACTIVATION] += 1
                elif st == S_DORMANT:
                    counters[N_RETURN] += 1
                elif st == S_G1:
                    counters[N_ENTRY] += 1
                elif st == S_MPP:
                    counters[N_OFFSITE] += 1
                ne = _emit(ne, ev_time[i], E_STATE, cid, -1, z[i], y[i], x[i], st, -1, -1, -1, -1,
                           ev_t, ev_i8, ev_cell, ev_i4)
            continue
        f = (z[i] * ny + y[i]) * nx + x[i]
        if a == A_DEATH:
            ne = _emit(ne, t_end, E_DEATH, cid, -1, z[i], y[i], x[i], S_DEAD, -1, -1, -1, -1,
                       ev_t, ev_i8, ev_cell, ev_i4)
            occ[f] = -1
            state[i] = S_DEAD
            counters[N_DEATH] += 1
            continue
        if a == A_EXIT:
            ne = _emit(ne, t_end, E_EXIT, cid, -1, z[i], y[i], x[i], st, -1, -1, -1, -1,
                       ev_t, ev_i8, ev_cell, ev_i4)
            occ[f] = -1
            state[i] = S_DEAD
            counters[N_EXIT] += 1
            continue
        if a == A_EGRESS:
            ne = _emit(ne, t_end, E_EGRESS, cid, -1, z[i], y[i], x[i], S_CIRC, -1, -1, -1, -1,
                       ev_t, ev_i8, ev_cell, ev_i4)
            occ[f] = -1
            # the cell leaves the block for the blood compartment, which reads its donor
            # flag and the state it lodges with (prev_state) before compaction
            prev_state[i] = S_DORMANT if st == S_DORMANT else S_G0
            state[i] = S_DEAD
            counters[N_EGRESS] += 1
            continue
        # ---- A_DIVIDE: place the daughter in a free voxel within reach (or push, or wait)
        zi = z[i]
        yi = y[i]
        xi = x[i]
        nf = _reachable_free(f, reach, nz, ny, nx, occ, enter, mark, queue, qdist, cand)
        gd = -1
        if nf > 0:
            k = _pick_place(cand, nf, uniform(seed, step, cid, PU_PLACE), nsig, par, wts)
            gd = cand[k]
        elif push:
            for d in range(6):
                zz = zi + _DZ[d]
                yy = yi + _DY[d]
                xx = xi + _DX[d]
                z2 = zz + _DZ[d]
                y2 = yy + _DY[d]
                x2 = xx + _DX[d]
                if z2 < 0 or z2 >= nz or y2 < 0 or y2 >= ny or x2 < 0 or x2 >= nx:
                    continue
                g = (zz * ny + yy) * nx + xx
                g2 = (z2 * ny + y2) * nx + x2
                j = occ[g]
                if j >= 0 and bound[j] == 0 and enter[g2] != 0 and occ[g2] < 0:
                    cand[nf] = d
                    nf += 1
            if nf > 0:
                k = int(uniform(seed, step, cid, PU_PUSH) * nf)
                if k >= nf:
                    k = nf - 1
                d = cand[k]
                zz = zi + _DZ[d]
                yy = yi + _DY[d]
                xx = xi + _DX[d]
                gd = (zz * ny + yy) * nx + xx
                j = occ[gd]
                g2 = ((zz + _DZ[d]) * ny + (yy + _DY[d])) * nx + (xx + _DX[d])
                occ[g2] = j
                z[j] = zz + _DZ[d]
                y[j] = yy + _DY[d]
                x[j] = xx + _DX[d]
                occ[gd] = -1
                counters[N_PUSH] += 1
        if gd < 0:
            # wait: retry at the start of the next step
            timer[i] = 0.0
            lag[i] = 0.0
            counters[N_WAIT] += 1
            continue
        # fates from the niche signal where each daughter sits
        sm = nsig[f]
        sd = nsig[gd]
        if par[K_ASYM] > 0.0 and uniform(seed, step, cid, PU_ASYMMETRY) < par[K_ASYM]:
            if uniform(seed, step, cid, PU_ASYMMETRY_SIDE) < 0.5:
                fm = S_G0
                fd = S_MPP
            else:
                fm = S_MPP
                fd = S_G0
        else:
            pm = stem_probability(sm, par)
            pd = stem_probability(sd, par)
            fm = S_G0 if uniform(seed, step, cid, PU_FATE_MOTHER) < pm else S_MPP
            fd = S_G0 if uniform(seed, step, cid, PU_FATE_DAUGHTER) < pd else S_MPP
        border = (sm >= par[K_SITE]) != (sd >= par[K_SITE])
        if fm != fd:
            counters[N_ASYM] += 1
            counters[N_ASYM_BORDER if border else N_ASYM_SAME] += 1
        elif fm == S_G0:
            counters[N_RENEW_BORDER if border else N_RENEW_SAME] += 1
        else:
            counters[N_DIFF_BORDER if border else N_DIFF_SAME] += 1
        k = n_total
        n_total += 1
        did = next_id
        next_id += 1
        gz = gd // (ny * nx)
        r = gd - gz * ny * nx
        gy = r // nx
        gx = r - gy * nx
        divisions[i] += 1
        ids[k] = did
        parent[k] = cid
        generation[k] = generation[i] + 1
        divisions[k] = divisions[i]
        state[k] = fd
        prev_state[k] = fd
        z[k] = gz
        y[k] = gy
        x[k] = gx
        bound[k] = 0
        donor[k] = donor[i]
        timer[k] = 0.0
        lag[k] = lag[i]
        lastdir[k] = -1
        birth[k] = ev_time[i]
        occ[gd] = k
        state[i] = fm
        prev_state[i] = fm
        if fm == S_MPP:
            bound[i] = 0
        counters[N_DIV] += 1
        ne = _emit(ne, ev_time[i], E_DIVISION, cid, did, zi, yi, xi, fm, gz, gy, gx, fd,
                   ev_t, ev_i8, ev_cell, ev_i4)
        ne = _emit(ne, ev_time[i], E_BIRTH, did, cid, gz, gy, gx, fd, zi, yi, xi, fm,
                   ev_t, ev_i8, ev_cell, ev_i4)
    return n_total, next_id, ne


# ---------------------------------------------------------------- seeding helpers
@jit(parallel=True)
def voxel_uniforms(seed: int, step: int, voxels: np.ndarray, purpose: int, out: np.ndarray) -> None:
    """Uniforms keyed by voxel index (initial placement), parallel and order-free."""
    for i in prange(voxels.shape[0]):
        out[i] = uniform(seed, step, voxels[i], purpose)


@jit
def draw_erlang(seed: int, step: int, ids: np.ndarray, base: int, mean: float, shape: float,
                out: np.ndarray) -> None:
    """Erlang durations for cells ``ids`` (seeding residual phase times)."""
    for i in range(ids.shape[0]):
        out[i] = erlang(seed, step, ids[i], base, mean, shape)
