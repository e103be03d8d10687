"""Kernels of the levels that store their coefficients (private).

Coarse levels (and level 0 of operators with per-tissue diffusivities) store face
coefficients ``ax`` (shape ``(nz, ny, nx + 1)``, face ``i`` between cells ``i - 1`` and ``i``;
faces 0 and ``n`` are the domain faces), ``ay``, ``az``, the reaction ``kr`` (``-1`` marks an
inactive cell), the correction ``e`` and right-hand side ``rhs``, all float32. Here are
their red-black Gauss-Seidel (plain and fused in wavefront passes,
:func:`stage_schedule`), residual and restriction, prolongation, Krylov inner products,
the build of level l + 1 from level l (:func:`build_from_coarse`) and its exact partial
rebuild (:func:`reaction_from_coarse`), plus the row helpers that the vectorised level-0
kernels of :mod:`niche3d.fields._uniform_kernels` share (:func:`restrict_row`,
:func:`krylov_accumulate`, :func:`krylov_sums`).

Every parallel loop writes only to its own z-plane, and every reduction goes through
per-plane partial sums that the caller adds serially, so results are bit-identical for any
thread count. Red-black Gauss-Seidel updates the last z-plane after the others so that a
periodic wrap with an odd plane count is also order-independent.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from niche3d._jit import jit


@jit(error_model="numpy")
def restrict_row(res, brow, fx):  # type: ignore[no-untyped-def]
    """Add a fine row of residuals into its coarse row: ``brow[x // fx] += res[x]``."""
    nx = res.shape[0]
    if fx == 2:
        for X in range(nx // 2):
            brow[X] += np.float64(res[2 * X]) + np.float64(res[2 * X + 1])
        if nx & 1:
            brow[nx // 2] += np.float64(res[nx - 1])
    else:
        for x in range(nx):
            brow[x // fx] += np.float64(res[x])


@jit(error_model="numpy")
def _coarse_row(ax, ay, az, kr, e, rhs, px, py, pz, z, y, zrow, out, dg):  # type: ignore[no-untyped-def]
    """Row (z, y) of a coarse level: ``out = rhs + sum_faces w e_neighbour`` and
    ``dg = kr + sum_faces w`` (float32). A neighbour outside a non-periodic domain face
    reads 0 (its face coefficient, if any, is a fixed-value term of the diagonal)."""
    nz, ny, nx = kr.shape
    zm = z - 1 if z > 0 else (nz - 1 if pz else -1)
    zp = z + 1 if z < nz - 1 else (0 if pz else -1)
    ym = y - 1 if y > 0 else (ny - 1 if py else -1)
    yp = y + 1 if y < ny - 1 else (0 if py else -1)
    ec = e[z, y]
    eym = e[z, ym] if ym >= 0 else zrow
    eyp = e[z, yp] if yp >= 0 else zrow
    ezm = e[zm, y] if zm >= 0 else zrow
    ezp = e[zp, y] if zp >= 0 else zrow
    axr = ax[z, y]
    aym = ay[z, y]
    ayp = ay[z, y + 1]
    azm = az[z, y]
    azp = az[z + 1, y]
    rr = rhs[z, y]
    kk = kr[z, y]
    for x in range(nx):
        out[x] = rr[x] + ((aym[x] * eym[x] + ayp[x] * eyp[x]) + (azm[x] * ezm[x] + azp[x] * ezp[x]))
        dg[x] = kk[x] + ((axr[x] + axr[x + 1]) + (aym[x] + ayp[x]) + (azm[x] + azp[x]))
    for x in range(1, nx - 1):
        out[x] += axr[x] * ec[x - 1] + axr[x + 1] * ec[x + 1]
    if nx > 1:
        out[0] += axr[1] * ec[1]
        out[nx - 1] += axr[nx - 1] * ec[nx - 2]
        if px:
            out[0] += axr[0] * ec[nx - 1]
            out[nx - 1] += axr[nx] * ec[0]
    elif px:
        out[0] += (axr[0] + axr[1]) * ec[0]


@jit(error_model="numpy")
def _coarse_gs_plane(ax, ay, az, kr, e, rhs, px, py, pz, colour, z, zrow, out, dg):  # type: ignore[no-untyped-def]
    nz, ny, nx = kr.shape
    for y in range(ny):
        _coarse_row(ax, ay, az, kr, e, rhs, px, py, pz, z, y, zrow, out, dg)
        ec = e[z, y]
        kk = kr[z, y]
        par = (z + y + colour) & 1
        for x in range(nx):
            if (x & 1) == par and kk[x] >= 0.0 and dg[x] > 0.0:
                ec[x] = out[x] / dg[x]


@jit(parallel=True, error_model="numpy")
def coarse_gs(ax, ay, az, kr, e, rhs, px, py, pz, colour):  # type: ignore[no-untyped-def]
    """Red or black Gauss-Seidel half-sweep on a coarse level (a whole row is computed,
    one colour stored: that vectorises, a stride-2 loop does not)."""
    nz, ny, nx = kr.shape
    for z in prange(nz - 1):
        zrow = np.zeros(nx, np.float32)
        out = np.empty(nx, np.float32)
        dg = np.empty(nx, np.float32)
        _coarse_gs_plane(ax, ay, az, kr, e, rhs, px, py, pz, colour, z, zrow, out, dg)
    zrow = np.zeros(nx, np.float32)
    out = np.empty(nx, np.float32)
    dg = np.empty(nx, np.float32)
    _coarse_gs_plane(ax, ay, az, kr, e, rhs, px, py, pz, colour, nz - 1, zrow, out, dg)


@jit(error_model="numpy")
def stage_schedule(nz, nstages, chunk):  # type: ignore[no-untyped-def]
    """Order of the (plane, stage) pairs of ``nstages`` fused red-black half-sweeps.

    Stage s of plane j needs stage s - 1 done on planes j - 1, j, j + 1 and stage s + 1
    not yet done on j - 1 and j + 1. A wavefront meets both: at step k, stage s runs on
    plane k - s. Each chunk of ``chunk`` planes runs its wavefront on one thread
    (phase 0, ``sched[0, c]``), leaving out the planes whose stage would need a neighbour
    chunk: stage s of the first s and last s planes of a chunk. Phase 1,
    ``sched[1, b - 1]``, then finishes the 2 s planes around the border between chunks
    b - 1 and b, stage by stage (borders ``chunk`` planes apart do not touch for up to
    ``(chunk + 1) // 2`` stages). Rows are (plane, stage) pairs padded with -1; the rows of
    a phase run in parallel, the phases one after the other. Not for a periodic z axis, whose first and last
    planes are neighbours.
    """
    S = nstages
    nch = (nz + chunk - 1) // chunk
    sched = np.full((2, nch, (chunk + S) * S, 2), -1, np.int64)
    for c in range(nch):
        z0 = c * chunk
        z1 = min(z0 + chunk, nz)
        i = 0
        for k in range(z0, z1 + S):
            for s in range(S):
                j = k - s
                lo_ = z0 + s if c > 0 else 0
                hi_ = z1 - 1 - s if c < nch - 1 else nz - 1
                if lo_ <= j <= hi_:
                    sched[0, c, i, 0] = j
                    sched[0, c, i, 1] = s
                    i += 1
    for b in range(1, nch):
        zb = b * chunk
        i = 0
        for s in range(1, S):
            for j in range(zb - s, min(zb + s, nz)):
                sched[1, b - 1, i, 0] = j
                sched[1, b - 1, i, 1] = s
                i += 1
    return sched


@jit(parallel=True, error_model="numpy")
def coarse_gs_stages(ax, ay, az, kr, e, rhs, px, py, c1, nstages, chunk):  # type: ignore[no-untyped-def]
    """``nstages`` red-black half-sweeps on a coarse level (colours ``c1``, ``1 - c1``,
    ...) in one wavefront pass over memory (:func:`stage_schedule`), exactly equal to
    calling :func:`coarse_gs` that many times. z must not be periodic."""
    if nstages < 1 or nstages > (chunk + 1) // 2:
        raise ValueError("coarse_gs_stages: nstages must be 1..(chunk + 1) // 2")
    nz, ny, nx = kr.shape
    sched = stage_schedule(nz, nstages, chunk)
    for ph in range(2):
        phase = sched[ph]  # (a prange indexing sched itself breaks numba's parfor lowering)
        for c in prange(phase.shape[0]):
            zrow = np.zeros(nx, np.float32)
            out = np.empty(nx, np.float32)
            dg = np.empty(nx, np.float32)
            for i in range(phase.shape[1]):
                j = phase[c, i, 0]
                if j < 0:
                    break
                _coarse_gs_plane(ax, ay, az, kr, e, rhs, px, py, False,
                                 (c1 + phase[c, i, 1]) & 1, j, zrow, out, dg)


@jit(parallel=True, error_model="numpy")
def coarse_krylov_dots(ax, ay, az, kr, e, rhs, p, px, py, pz, part):  # type: ignore[no-untyped-def]
    """Per-plane sums ``part[z] = (e.Ae, q.Ae, r.e, r.q, max |e|)`` on a level with stored
    coefficients, ``r = rhs`` and q the int16 direction (the Krylov step of the general
    path; see :func:`krylov_accumulate`)."""
    nz, ny, nx = kr.shape
    for z in prange(nz):
        zrow = np.zeros(nx, np.float32)
        out = np.empty(nx, np.float32)
        dg = np.empty(nx, np.float32)
        acc = np.zeros((5, nx), np.float64)
        for y in range(ny):
            _coarse_row(ax, ay, az, kr, e, rhs, px, py, pz, z, y, zrow, out, dg)
            ec = e[z, y]
            pc = p[z, y]
            rc = rhs[z, y]
            kk = kr[z, y]
            for x in range(nx):
                out[x] = dg[x] * ec[x] - (out[x] - rc[x]) if kk[x] >= 0.0 else np.float32(0.0)
            krylov_accumulate(ec, pc, rc, out, acc)
        krylov_sums(acc, part, z)


@jit(error_model="numpy")
def krylov_accumulate(e, p, r, a, acc):  # type: ignore[no-untyped-def]
    """Add one row's products (e.a, q.a, r.e, r.q) into per-column float64 sums, a = A e
    and q the int16 direction (its scale is applied by the caller), and the largest |e|
    into ``acc[4]``."""
    for x in range(e.shape[0]):
        q = np.float64(p[x])
        acc[0, x] += np.float64(e[x]) * a[x]
        acc[1, x] += q * a[x]
        acc[2, x] += np.float64(r[x]) * e[x]
        acc[3, x] += np.float64(r[x]) * q
        acc[4, x] = max(acc[4, x], abs(np.float64(e[x])))


@jit(error_model="numpy")
def krylov_sums(acc, part, z):  # type: ignore[no-untyped-def]
    """``part[z, k]`` = sum over columns of ``acc[k]`` for k < 4 (a fixed order:
    thread-independent) and ``part[z, 4]`` = the largest ``acc[4]``."""
    for k in range(4):
        t = 0.0
        for x in range(acc.shape[1]):
            t += acc[k, x]
        part[z, k] = t
    m = 0.0
    for x in range(acc.shape[1]):
        m = max(m, acc[4, x])
    part[z, 4] = m


@jit(parallel=True, error_model="numpy")
def coarse_residual_restrict(ax, ay, az, kr, e, rhs, px, py, pz, fz, fy, fx, rhs_c):  # type: ignore[no-untyped-def]
    nz, ny, nx = kr.shape
    NZ, NY, NX = rhs_c.shape
    for Z in prange(NZ):
        buf = np.zeros((NY, NX), dtype=np.float64)
        zrow = np.zeros(nx, np.float32)
        out = np.empty(nx, np.float32)
        dg = np.empty(nx, np.float32)
        for z in range(Z * fz, min(Z * fz + fz, nz)):
            for y in range(ny):
                _coarse_row(ax, ay, az, kr, e, rhs, px, py, pz, z, y, zrow, out, dg)
                ec = e[z, y]
                kk = kr[z, y]
                for x in range(nx):
                    out[x] = out[x] - dg[x] * ec[x] if kk[x] >= 0.0 else np.float32(0.0)
                restrict_row(out, buf[y // fy], fx)
        for Y in range(NY):
            for X in range(NX):
                rhs_c[Z, Y, X] = buf[Y, X]


@jit(parallel=True, error_model="numpy")
def coarse_prolong_add(kr, e, E, iz, sz, iy, sy, ix, sx):  # type: ignore[no-untyped-def]
    """e += P E: piecewise-constant prolongation (each cell takes its parent's
    correction), halved per axis for a cell next to a fixed-value face (the correction
    goes linearly to 0 at that face); inactive cells (kr < 0) are left alone."""
    nz, ny, nx = kr.shape
    for z in prange(nz):
        Z = iz[z]
        a = sz[z]
        for y in range(ny):
            Y = iy[y]
            b = a * sy[y]
            for x in range(nx):
                if kr[z, y, x] < 0.0:
                    continue
                e[z, y, x] += b * sx[x] * E[Z, Y, ix[x]]


@jit(parallel=True, error_model="numpy")
def build_from_coarse(ax, ay, az, kr, fz, fy, fx, AX, AY, AZ, KR):  # type: ignore[no-untyped-def]
    """Coarse level l + 1 from level l (same rule as :func:`build_from_fine`)."""
    nz, ny, nx = kr.shape
    NZ, NY, NX = KR.shape
    for Z in prange(NZ):
        KR[Z, :, :] = 0.0
        AX[Z, :, :] = 0.0
        AY[Z, :, :] = 0.0
        cnt = np.zeros((NY, NX), dtype=np.int32)
        for z in range(Z * fz, min(Z * fz + fz, nz)):
            for y in range(ny):
                Y = y // fy
                for x in range(nx):
                    X = x // fx
                    k = kr[z, y, x]
                    if k >= 0.0:
                        cnt[Y, X] += 1
                        KR[Z, Y, X] += k
                    if x == X * fx:
                        AX[Z, Y, X] += ax[z, y, x] / fx
                    if y == Y * fy:
                        AY[Z, Y, X] += ay[z, y, x] / fy
                AX[Z, Y, NX] += ax[z, y, nx] / fx
            for x in range(nx):
                AY[Z, NY, x // fx] += ay[z, ny, x] / fy
        for Y in range(NY):
            for X in range(NX):
                if cnt[Y, X] == 0:
                    KR[Z, Y, X] = -1.0
    for Z in prange(NZ + 1):
        AZ[Z, :, :] = 0.0
        z = min(Z * fz, nz)
        for y in range(ny):
            Y = y // fy
            for x in range(nx):
                AZ[Z, Y, x // fx] += az[z, y, x] / fz


@jit(parallel=True, error_model="numpy")
def reaction_from_coarse(kr, fz, fy, fx, KR, which):
    """Recompute the reaction ``KR`` of the coarse cells ``which`` (flat indices into KR)
    from level ``kr`` below, bit-identically to :func:`build_from_coarse` (float32 sums
    of the active children in z, y, x order)."""
    nz, ny, nx = kr.shape
    NZ, NY, NX = KR.shape
    for i in prange(which.shape[0]):
        w = np.int64(which[i])
        Z = w // (NY * NX)
        Y = (w // NX) % NY
        X = w % NX
        s = np.float32(0.0)
        cnt = 0
        for z in range(Z * fz, min(Z * fz + fz, nz)):
            for y in range(Y * fy, min(Y * fy + fy, ny)):
                for x in range(X * fx, min(X * fx + fx, nx)):
                    k = kr[z, y, x]
                    if k >= 0.0:
                        cnt += 1
                        s += k
        KR[Z, Y, X] = s if cnt > 0 else np.float32(-1.0)
