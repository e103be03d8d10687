"""Vectorised level-0 kernels for fields with one diffusivity over the permeable tissues.

Used by :class:`niche3d.fields.multigrid.Multigrid` when every permeable tissue has the
same diffusivity ``D`` and the only impermeable tissue on the lattice is one code (bone),
which is the default for every field. Then every face between two permeable voxels has
the coefficient ``D``, a voxel's diagonal is ``k + D * (number of permeable neighbours)``
and the operator needs no per-face table look-up, so the loops over ``x`` vectorise.

The solve is a defect correction (mixed-precision iterative refinement):

1. :func:`residual` computes ``r = b - A (hi + lo)`` in float64 from the solution (float32
   ``hi`` and its int16 extension ``lo``, see :mod:`niche3d.fields._solution_storage`) and stores it
   as float32 (with the per-plane sums of ``r²``);
2. a V-cycle solves ``A e = r`` for the correction ``e`` in plain float32 on level 0
   (:func:`smooth_stages`, :func:`smooth`, :func:`residual_restrict`, :func:`prolong_add`)
   and on the coarse levels;
3. a flexible conjugate-gradient step turns ``e`` into a direction ``p`` (stored as int16
   fixed point with one scale per direction) and :func:`update` adds ``alpha p`` to
   ``hi + lo`` in float64 (:func:`krylov_dots` gives the step's inner products).

Only step 1 needs float64; the smoother runs on float32 vectors. The correction system
uses the float32 inverse diagonal (written by the first :func:`residual` of a solve): a relative
perturbation of 1e-7 in the correction operator changes the convergence rate, not the
converged solution, which is fixed by step 1.

Inactive voxels keep ``e = 0`` and ``invd = 0``, so a neighbour sum over all six
neighbours is the sum over permeable ones. Rows outside the domain (no-flux or fixed-value
faces) are read as a row of zeros; periodic faces wrap. Red-black Gauss-Seidel computes a
whole row and stores one colour (a masked store vectorises; a stride-2 loop does not).

Every parallel loop writes only its own z-plane (the last plane after the others, as in
:mod:`niche3d.fields._level_kernels`), and reductions go through per-plane partial sums, so
results are bit-identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from niche3d._jit import jit
from niche3d.fields._boundary import PERIODIC, VALUE
from niche3d.fields._level_kernels import (
    krylov_accumulate,
    krylov_sums,
    restrict_row,
    stage_schedule,
)
from niche3d.fields._solution_storage import lo_part, split

P_MAX = 32767  # largest |q| of the int16 Krylov direction p = q * scale
_CHUNK = 10  # z-planes per chunk of the fused passes (fixed: results must not depend on threads)
# smooth_stages: chunk borders 2 s planes wide must not touch. 5 = the 4 half-sweeps of
# the post-smoothing plus the Krylov inner products fused after them.
MAX_STAGES = (_CHUNK + 1) // 2


@jit(error_model="numpy")
def _nb(i: int, n: int, periodic: bool) -> tuple[int, int]:
    """Indices of the lower and upper neighbour of ``i`` along an axis of length n
    (-1 when outside the domain and not periodic)."""
    i = np.int64(i)  # prange indices may be unsigned: keep the arithmetic signed
    n = np.int64(n)
    lo_ = i - 1 if i > 0 else (n - 1 if periodic else np.int64(-1))
    hi_ = i + 1 if i < n - 1 else (np.int64(0) if periodic else np.int64(-1))
    return lo_, hi_


@jit(error_model="numpy")
def _coef_plane(lab, cells, uptake, prot, hasprot, psens, old, inv_dt, scode, sval, k0, kcode,
                kval, D, inact, bk, bv, z, S, Kd):  # type: ignore[no-untyped-def]
    """Source ``S`` and diagonal ``Kd`` (float64, shape (ny, nx)) of plane z.

    ``Kd = k + uptake [at the voxels in cells] [+ psens * protease] [+ 1/dt]
    + D * (permeable neighbours) + 2 D per fixed-value domain face``; ``S = secretion
    [+ old / dt] + 2 D g per fixed-value face``. Inactive voxels get ``S = 0`` and
    ``Kd = 1``. ``cells`` are the sorted flat indices of the voxels that hold a cell.
    """
    nz, ny, nx = lab.shape
    pz, py, px = bk[0] == PERIODIC, bk[2] == PERIODIC, bk[4] == PERIODIC
    z = np.int64(z)
    zm, zp = _nb(z, nz, pz)
    vzm = 1 if zm >= 0 else 0
    vzp = 1 if zp >= 0 else 0
    zm = zm if zm >= 0 else z
    zp = zp if zp >= 0 else z
    D2 = 2.0 * D
    ncells = cells.shape[0]
    jc = np.searchsorted(cells, z * ny * nx)
    for y in range(ny):
        ym, yp = _nb(y, ny, py)
        vym = 1 if ym >= 0 else 0
        vyp = 1 if yp >= 0 else 0
        ym = ym if ym >= 0 else y
        yp = yp if yp >= 0 else y
        lc = lab[z, y]
        lym = lab[z, ym]
        lyp = lab[z, yp]
        lzm = lab[zm, y]
        lzp = lab[zp, y]
        Sr = S[y]
        Kr = Kd[y]
        for x in range(nx):
            Sr[x] = 0.0
            Kr[x] = k0 + inv_dt
        # the row's cells (a few, not a row-long mask): rows are visited in order, so a
        # pointer walks the sorted list from the plane's first cell
        row_start = (z * ny + y) * nx
        while jc < ncells and cells[jc] < row_start + nx:
            Kr[cells[jc] - row_start] += uptake
            jc += 1
        for i in range(scode.shape[0]):
            c = scode[i]
            s = sval[i]
            for x in range(nx):
                if lc[x] == c:
                    Sr[x] = s
        for i in range(kcode.shape[0]):
            c = kcode[i]
            kk = kval[i]
            for x in range(nx):
                if lc[x] == c:
                    Kr[x] += kk
        if hasprot:
            pr = prot[z, y]
            for x in range(nx):
                Kr[x] += psens * np.float64(pr[x])
        if inv_dt > 0.0:
            orow = old[z, y]
            for x in range(nx):
                Sr[x] += inv_dt * np.float64(orow[x])
        for x in range(1, nx - 1):
            na = (np.int32(lc[x - 1] != inact) + np.int32(lc[x + 1] != inact)
                  + vym * np.int32(lym[x] != inact) + vyp * np.int32(lyp[x] != inact)
                  + vzm * np.int32(lzm[x] != inact) + vzp * np.int32(lzp[x] != inact))
            Kr[x] += D * na
        for j in range(2 if nx > 1 else 1):
            x = 0 if j == 0 else nx - 1
            xm, xp = _nb(x, nx, px)
            na = vym * np.int32(lym[x] != inact) + vyp * np.int32(lyp[x] != inact)
            na += vzm * np.int32(lzm[x] != inact) + vzp * np.int32(lzp[x] != inact)
            if xm >= 0:
                na += np.int32(lc[xm] != inact)
            if xp >= 0:
                na += np.int32(lc[xp] != inact)
            Kr[x] += D * na
        # fixed-value domain faces: coefficient 2 D (the face is half a voxel away)
        if bk[4] == VALUE:
            Kr[0] += D2
            Sr[0] += D2 * bv[4]
        if bk[5] == VALUE:
            Kr[nx - 1] += D2
            Sr[nx - 1] += D2 * bv[5]
        for f in range(4):
            hit = ((f == 0 and y == 0) or (f == 1 and y == ny - 1)
                   or (f == 2 and z == 0) or (f == 3 and z == nz - 1))
            face = (2, 3, 0, 1)[f]
            if hit and bk[face] == VALUE:
                g = bv[face]
                for x in range(nx):
                    Kr[x] += D2
                    Sr[x] += D2 * g
        for x in range(nx):
            if lc[x] == inact:
                Sr[x] = 0.0
                Kr[x] = 1.0


@jit(error_model="numpy")
def _residual_plane(lab, hi, lo, cells, uptake, prot, hasprot, psens, old, inv_dt, scode, sval,
                    k0, kcode, kval, D, inact, bk, bv, r, invd, want_invd, z, S, Kd, acc, sq,
                    zrow, zrow16):  # type: ignore[no-untyped-def]
    """Residual of plane z into ``r`` (and ``invd`` if wanted); returns its sum of r²."""
    nz, ny, nx = lab.shape
    pz, py, px = bk[0] == PERIODIC, bk[2] == PERIODIC, bk[4] == PERIODIC
    z = np.int64(z)
    _coef_plane(lab, cells, uptake, prot, hasprot, psens, old, inv_dt, scode, sval, k0,
                kcode, kval, D, inact, bk, bv, z, S, Kd)
    sq[:, :] = 0.0  # per-column sums of r² and b²: no serial chain per row
    zm, zp = _nb(np.int64(z), nz, pz)
    for y in range(ny):
        ym, yp = _nb(y, ny, py)
        hc = hi[z, y]
        lc_ = lo[z, y]
        hym = hi[z, ym] if ym >= 0 else zrow
        hyp = hi[z, yp] if yp >= 0 else zrow
        hzm = hi[zm, y] if zm >= 0 else zrow
        hzp = hi[zp, y] if zp >= 0 else zrow
        lym = lo[z, ym] if ym >= 0 else zrow16
        lyp = lo[z, yp] if yp >= 0 else zrow16
        lzm = lo[zm, y] if zm >= 0 else zrow16
        lzp = lo[zp, y] if zp >= 0 else zrow16
        # neighbour sums: the float32 hi parts exactly in float64, the tiny lo parts
        # in float32 (their own rounding is ~1e-7 of ~1e-7 of the value)
        for x in range(nx):
            acc[x] = ((np.float64(hym[x]) + np.float64(hyp[x]))
                      + (np.float64(hzm[x]) + np.float64(hzp[x])))
        for x in range(nx):
            acc[x] += np.float64((lo_part(hym[x], lym[x]) + lo_part(hyp[x], lyp[x]))
                                 + (lo_part(hzm[x], lzm[x]) + lo_part(hzp[x], lzp[x])))
        for x in range(1, nx - 1):
            acc[x] += ((np.float64(hc[x - 1]) + np.float64(hc[x + 1]))
                       + np.float64(lo_part(hc[x - 1], lc_[x - 1])
                                    + lo_part(hc[x + 1], lc_[x + 1])))
        for j in range(2 if nx > 1 else 1):
            x = 0 if j == 0 else nx - 1
            xm, xp = _nb(x, nx, px)
            if xm >= 0:
                acc[x] += np.float64(hc[xm]) + np.float64(lo_part(hc[xm], lc_[xm]))
            if xp >= 0:
                acc[x] += np.float64(hc[xp]) + np.float64(lo_part(hc[xp], lc_[xp]))
        lc = lab[z, y]
        Sr = S[y]
        Kr = Kd[y]
        rr = r[z, y]
        for x in range(nx):
            c = np.float64(hc[x]) + np.float64(lo_part(hc[x], lc_[x]))
            v = Sr[x] + D * acc[x] - Kr[x] * c
            v = v if lc[x] != inact else 0.0
            rr[x] = np.float32(v)
            sq[0, x] += v * v
            sq[1, x] += Sr[x] * Sr[x]  # S is 0 on inactive voxels
        if want_invd:
            out = invd[z, y]
            for x in range(nx):
                out[x] = np.float32(1.0 / Kr[x]) if lc[x] != inact else np.float32(0.0)
    r2 = 0.0
    b2 = 0.0
    for x in range(nx):
        r2 += sq[0, x]
        b2 += sq[1, x]
    return r2, b2


@jit(parallel=True, error_model="numpy")
def residual(lab, hi, lo, cells, uptake, prot, hasprot, psens, old, inv_dt, scode, sval, k0,
             kcode, kval, D, inact, bk, bv, r, part, invd, want_invd):  # type: ignore[no-untyped-def]
    """``r = b - A (hi + lo)`` in float64, stored as float32; ``part[z]`` = (sum of r²,
    sum of b²) over plane z, b being the right-hand side (sources, fixed-value faces,
    c_old / dt). With ``want_invd`` also the float32 inverse diagonal into ``invd``
    (computed from the same coefficient pass)."""
    nz, ny, nx = lab.shape
    for z in prange(nz):
        S = np.empty((ny, nx), np.float64)
        Kd = np.empty((ny, nx), np.float64)
        acc = np.empty(nx, np.float64)
        sq = np.empty((2, nx), np.float64)
        zrow = np.zeros(nx, np.float32)
        zrow16 = np.zeros(nx, np.int16)
        r2, b2 = _residual_plane(lab, hi, lo, cells, uptake, prot, hasprot, psens, old, inv_dt,
                                 scode, sval, k0, kcode, kval, D, inact, bk, bv, r, invd,
                                 want_invd, z, S, Kd, acc, sq, zrow, zrow16)
        part[z, 0] = r2
        part[z, 1] = b2


@jit(error_model="numpy")
def _update_plane(hi, lo, e, p, b32, ps_old, inv_ps, ps, alpha, z):  # type: ignore[no-untyped-def]
    ny, nx = hi.shape[1], hi.shape[2]
    for y in range(ny):
        h = hi[z, y]
        lw = lo[z, y]
        er = e[z, y]
        pr = p[z, y]
        for x in range(nx):
            # beta = 0 starts a new direction: p (left from any earlier solve) is ignored
            pv = er[x] + b32 * (np.float32(pr[x]) * ps_old) if b32 != 0 else er[x]
            t = min(max(pv * inv_ps, np.float32(-P_MAX)), np.float32(P_MAX))
            q = np.rint(t)
            pr[x] = np.int16(q)
            hx = h[x]
            v = np.float64(hx) + np.float64(lo_part(hx, lw[x])) + alpha * (np.float64(q) * ps)
            h[x], lw[x] = split(v)


@jit(parallel=True, error_model="numpy")
def update(hi, lo, e, p, beta, alpha, ps_old, ps):  # type: ignore[no-untyped-def]
    """``p = e + beta p`` and ``hi + lo += alpha p`` (in float64) in one pass.

    The direction is stored as int16 fixed point: ``p = q * ps`` with one scale per
    direction (``ps_old`` for the stored one, ``ps`` for the new one; the caller chooses
    ``ps`` so that ``|e + beta p| <= P_MAX ps``). The update adds the stored (rounded)
    direction, so the solution moves exactly along what the next Krylov step reads.
    (Fusing this with the next :func:`residual` in a plane wavefront saved no measurable
    time, the residual being compute-bound, and doubled the compile time of the
    residual code.)"""
    nz = hi.shape[0]
    b32 = np.float32(beta)
    p32 = np.float32(ps_old)
    inv = np.float32(1.0 / ps) if ps > 0.0 else np.float32(0.0)
    for z in prange(nz):
        _update_plane(hi, lo, e, p, b32, p32, inv, np.float64(ps), alpha, z)


@jit(error_model="numpy")
def _nbsum_row(e, z, y, zm, zp, ym, yp, px, zrow, out):  # type: ignore[no-untyped-def]
    """``out[x]`` = sum of the six neighbours of (z, y, x) in e (0 outside the domain
    unless periodic; the caller passes ``zm``..``yp`` from :func:`_nb`)."""
    nx = e.shape[2]
    ec = e[z, y]
    eym = e[z, ym] if ym >= 0 else zrow
    eyp = e[z, yp] if yp >= 0 else zrow
    ezm = e[zm, y] if zm >= 0 else zrow
    ezp = e[zp, y] if zp >= 0 else zrow
    for x in range(1, nx - 1):
        out[x] = ((ec[x - 1] + ec[x + 1]) + (eym[x] + eyp[x])) + (ezm[x] + ezp[x])
    for j in range(2 if nx > 1 else 1):
        x = 0 if j == 0 else nx - 1
        xm, xp = _nb(x, nx, px)
        t = (eym[x] + eyp[x]) + (ezm[x] + ezp[x])
        if xm >= 0:
            t += ec[xm]
        if xp >= 0:
            t += ec[xp]
        out[x] = t


@jit(error_model="numpy")
def _smooth_plane(e, r, invd, D, px, py, pz, colour, first, z, tmp, zrow):  # type: ignore[no-untyped-def]
    nz, ny, nx = e.shape
    z = np.int64(z)
    zm, zp = _nb(z, nz, pz)
    for y in range(ny):
        ym, yp = _nb(y, ny, py)
        ec = e[z, y]
        rc = r[z, y]
        ic = invd[z, y]
        par = (z + y + colour) & 1  # x parity of this colour in the row
        if first:
            # e starts at 0: this colour gets r / d, the other colour 0
            for x in range(nx):
                v = rc[x] * ic[x]
                ec[x] = v if (x & 1) == par else np.float32(0.0)
            continue
        _nbsum_row(e, z, y, zm, zp, ym, yp, px, zrow, tmp)
        for x in range(nx):
            tmp[x] = (rc[x] + D * tmp[x]) * ic[x]
        for x in range(nx):
            if (x & 1) == par:
                ec[x] = tmp[x]


@jit(parallel=True, error_model="numpy")
def smooth(e, r, invd, D, px, py, pz, colour, first):  # type: ignore[no-untyped-def]
    """One red (0) or black (1) Gauss-Seidel half-sweep of ``A e = r`` (float32). With
    ``first`` e is taken as 0 and fully overwritten (no separate zeroing pass)."""
    nz, ny, nx = e.shape
    D32 = np.float32(D)
    for z in prange(nz - 1):
        tmp = np.empty(nx, np.float32)
        zrow = np.zeros(nx, np.float32)
        _smooth_plane(e, r, invd, D32, px, py, pz, colour, first, z, tmp, zrow)
    tmp = np.empty(nx, np.float32)
    zrow = np.zeros(nx, np.float32)
    _smooth_plane(e, r, invd, D32, px, py, pz, colour, first, nz - 1, tmp, zrow)


@jit(parallel=True, error_model="numpy")
def smooth_stages(e, r, invd, D, px, py, c1, nstages, first, p, part, want_dots):  # type: ignore[no-untyped-def]
    """``nstages`` red-black half-sweeps (colours ``c1``, ``1 - c1``, ``c1``, ...) in one
    wavefront pass over memory (:func:`~niche3d.fields._level_kernels.stage_schedule`), exactly
    equal to calling :func:`smooth` that many times. Not for a periodic z axis: there the
    first and last planes are neighbours (use :func:`smooth`).

    With ``want_dots`` the pass has one more stage, the Krylov inner products of the
    smoothed ``e`` into ``part`` (exactly :func:`krylov_dots`): a plane's products need
    its neighbours' last half-sweep, which is what the wavefront gives any next stage.
    That saves the separate pass over e, r, invd and p (~3 sweeps of a 256^3 cycle).
    """
    total = nstages + (1 if want_dots else 0)
    if nstages < 1 or total > MAX_STAGES:
        raise ValueError("smooth_stages: nstages (+1 with want_dots) must be 1..MAX_STAGES")
    nz, ny, nx = e.shape
    D32 = np.float32(D)
    sched = stage_schedule(nz, total, _CHUNK)
    for ph in range(2):
        phase = sched[ph]  # (a prange indexing sched itself breaks numba's parfor lowering)
        for c in prange(phase.shape[0]):
            tmp = np.empty(nx, np.float32)
            zrow = np.zeros(nx, np.float32)
            acc = np.empty((5, nx), np.float64)
            for i in range(phase.shape[1]):
                j = phase[c, i, 0]
                if j < 0:
                    break
                s = phase[c, i, 1]
                if s == nstages:
                    _dots_plane(e, r, invd, p, D32, px, py, False, j, tmp, zrow, acc, part)
                else:
                    _smooth_plane(e, r, invd, D32, px, py, False, (c1 + s) & 1,
                                  first and s == 0, j, tmp, zrow)


@jit(parallel=True, error_model="numpy")
def residual_restrict(e, r, invd, D, px, py, pz, fz, fy, fx, rhs_c):  # type: ignore[no-untyped-def]
    """Residual ``r - A e`` of the correction system, summed over each coarse cell."""
    nz, ny, nx = e.shape
    NZ, NY, NX = rhs_c.shape
    D32 = np.float32(D)
    for Z in prange(NZ):
        buf = np.zeros((NY, NX), np.float64)
        res = np.empty(nx, np.float32)
        zrow = np.zeros(nx, np.float32)
        for z in range(np.int64(Z) * fz, min(np.int64(Z) * fz + fz, nz)):
            zm, zp = _nb(z, nz, pz)
            for y in range(ny):
                ym, yp = _nb(y, ny, py)
                ec = e[z, y]
                rc = r[z, y]
                ic = invd[z, y]
                _nbsum_row(e, z, y, zm, zp, ym, yp, px, zrow, res)
                for x in range(nx):
                    d = ec[x] / ic[x] if ic[x] > 0 else np.float32(0.0)
                    res[x] = rc[x] + D32 * res[x] - d if ic[x] > 0 else np.float32(0.0)
                restrict_row(res, buf[y // fy], fx)
        for Y in range(NY):
            for X in range(NX):
                rhs_c[Z, Y, X] = buf[Y, X]


@jit(parallel=True, error_model="numpy")
def prolong_add(e, invd, E, iz, sz, iy, sy, ix, sx):  # type: ignore[no-untyped-def]
    """``e += P E`` on permeable voxels (piecewise constant, halved next to a fixed-value
    face, as :func:`niche3d.fields._level_kernels.coarse_prolong_add`)."""
    nz, ny, nx = e.shape
    for z in prange(nz):
        Z = iz[z]
        a = sz[z]
        row = np.empty(nx, np.float32)
        for y in range(ny):
            Er = E[Z, iy[y]]
            b = np.float32(a * sy[y])
            for x in range(nx):
                row[x] = Er[ix[x]] * np.float32(sx[x])
            ec = e[z, y]
            ic = invd[z, y]
            for x in range(nx):
                if ic[x] > 0:
                    ec[x] += b * row[x]


@jit(error_model="numpy")
def _dots_plane(e, r, invd, p, D32, px, py, pz, z, az, zrow, acc, part):  # type: ignore[no-untyped-def]
    """:func:`krylov_dots` of plane z into ``part[z]``."""
    nz, ny, nx = e.shape
    zi = np.int64(z)
    zm, zp = _nb(zi, nz, pz)
    acc[:, :] = 0.0
    for y in range(ny):
        ym, yp = _nb(y, ny, py)
        _nbsum_row(e, zi, y, zm, zp, ym, yp, px, zrow, az)
        ec = e[zi, y]
        ic = invd[zi, y]
        rc = r[zi, y]
        pc = p[zi, y]
        for x in range(nx):
            az[x] = ec[x] / ic[x] - D32 * az[x] if ic[x] > 0 else np.float32(0.0)
        krylov_accumulate(ec, pc, rc, az, acc)
    krylov_sums(acc, part, zi)


@jit(parallel=True, error_model="numpy")
def krylov_dots(e, r, invd, p, D, px, py, pz, part):  # type: ignore[no-untyped-def]
    """Per-plane partial sums for the Krylov step: ``part[z] = (z.Az, q.Az, r.z, r.q,
    max |z|)`` with ``z = e``, A the float32 correction operator and q the int16
    direction (``p = q * scale``: the caller scales the sums)."""
    nz, ny, nx = e.shape
    D32 = np.float32(D)
    for z in prange(nz):
        az = np.empty(nx, np.float32)
        zrow = np.zeros(nx, np.float32)
        acc = np.empty((5, nx), np.float64)
        _dots_plane(e, r, invd, p, D32, px, py, pz, z, az, zrow, acc, part)


# --------------------------------------------------------------------------- reference unit
@jit(parallel=True, error_model="numpy")
def stencil_sweep(u, v):  # type: ignore[no-untyped-def]
    """One plain 7-point Laplacian sweep ``v = 6u - sum(neighbours)`` over the interior, in
    float32: the memory-bandwidth unit that benchmarks divide by. The inner loop has no
    reduction, so it vectorises and runs near the memory bandwidth (a float64 running sum
    in the loop, as an earlier version had, made it ~5x slower and flattered every ratio
    that divides by it)."""
    nz, ny, nx = u.shape
    six = np.float32(6.0)
    for z in prange(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                v[z, y, x] = (six * u[z, y, x] - u[z, y, x - 1] - u[z, y, x + 1]
                              - u[z, y - 1, x] - u[z, y + 1, x] - u[z - 1, y, x]
                              - u[z + 1, y, x])
