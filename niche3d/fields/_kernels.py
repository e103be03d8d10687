"""Numba kernels of the field solver (private; the public wrapper is :mod:`niche3d.fields`).

Discretisation (cell-centred finite volumes, voxel edge 1, time in minutes)::

    sum_faces w_f (c_i - c_j) + k_i c_i = S_i

with face coefficient ``w_f`` = harmonic mean of the two voxel diffusivities (0 when one
side is impermeable). A fixed-value face adds ``2 D_i`` to the diagonal and ``2 D_i g`` to
the right-hand side (the face is half a voxel from the centre); a periodic face couples to
the voxel on the opposite side; a no-flux face adds nothing.

A solution is stored as a float32 ``hi`` (the field) and an int16 ``lo`` that extends its
mantissa by 15 bits: the value is ``hi + lo * |hi| * 2**-39`` (:func:`lo_part`,
:func:`split`; |lo| <= 2**15 because ``hi`` is the value rounded to float32, whose error
is at most ``|hi| * 2**-24``). That is 2 bytes per voxel for a relative resolution of
2**-39, where a float32 ``lo`` (double-float) would take 4 for more precision than any
tolerance needs; float32 alone cannot reach a 1e-6 residual (see ``docs/fields.md``).

The level-0 kernels here look coefficients up per voxel from the tissue labels
(``H[16 * a + b]`` face table, ``klut`` / ``slut`` per tissue), the cells (sorted flat
voxel indices, marked per row: :func:`mark_row_cells`) and the optional protease map: the float64 residual of the solution
``hi + lo`` (:func:`fine_residual_restrict`, :func:`fine_residual_norm`), the norm of the
right-hand side and the coarse-level build. The vectorised kernels of operators with one
diffusivity are in :mod:`niche3d.fields._fast`. Coarse levels (and level 0 of operators
with per-tissue diffusivities) store face coefficients ``ax`` (shape
``(nz, ny, nx + 1)``, face ``i`` between cells ``i - 1`` and ``i``; faces 0 and ``n`` are the
domain faces), ``ay``, ``az``, the reaction ``kr`` (``-1`` marks an inactive cell), the
correction ``e`` and right-hand side ``rhs``, all float32.

Boundary kinds per face (array ``bk`` in the order zmin, zmax, ymin, ymax, xmin, xmax):
0 no-flux, 1 fixed value (``bv``), 2 periodic.

Every parallel loop writes only to its own z-plane, and every reduction goes through
per-plane partial sums that the caller adds serially, so results are bit-identical for any
thread count. Red-black Gauss-Seidel updates the last z-plane after the others so that a
periodic wrap with an odd plane count is also order-independent.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from niche3d._jit import jit

NOFLUX = 0
VALUE = 1
PERIODIC = 2
LO_UNIT = 2.0**-39  # resolution of the int16 low part, relative to |hi|
_LO_UNIT32 = np.float32(LO_UNIT)
_LO_MAX = 32767.0


# --------------------------------------------------------------------------- solutions
@jit(error_model="numpy")
def lo_part(h, q):  # type: ignore[no-untyped-def]
    """The low part ``q * |h| * 2**-39`` of a solution value, as float32 (its own rounding
    is 2**-24 of a part that is itself below 2**-24 of ``h``)."""
    return np.float32(q) * (abs(h) * _LO_UNIT32)


@jit(error_model="numpy")
def split(v):  # type: ignore[no-untyped-def]
    """A float64 value as (float32 ``hi``, int16 ``lo``), ``hi + lo * |hi| * 2**-39`` being
    within ``|hi| * 2**-40`` of ``v`` (``lo = 0`` where ``hi`` is 0 or not finite)."""
    hv = np.float32(v)
    a = abs(np.float64(hv)) * LO_UNIT
    t = (v - np.float64(hv)) / a if a > 0.0 else 0.0
    t = min(max(t, -_LO_MAX), _LO_MAX)  # (NaN compares false: stays NaN only if v is)
    return hv, np.int16(np.rint(t)) if t == t else np.int16(0)


def lo_values(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The low parts of a stored solution as float32 (numpy)."""
    return lo.astype(np.float32) * (np.abs(hi) * _LO_UNIT32)


def solution(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The stored solution ``hi + lo`` as float64 (numpy)."""
    return hi.astype(np.float64) + lo_values(hi, lo)


def lo_from_values(hi: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The int16 ``lo`` that represents the low parts ``low`` (float, ``|low|`` at most half
    an ulp of ``hi``) next to ``hi``: the inverse of :func:`lo_values` (exact on its
    output)."""
    a = np.abs(np.asarray(hi, np.float32).astype(np.float64)) * LO_UNIT
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(a > 0, np.asarray(low, np.float64) / np.where(a > 0, a, 1.0), 0.0)
    t = np.nan_to_num(np.clip(t, -_LO_MAX, _LO_MAX), nan=0.0)
    return np.rint(t).astype(np.int16)


def split_values(v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values as (float32 ``hi``, int16 ``lo``) (numpy counterpart of :func:`split`)."""
    v = np.asarray(v, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        h = v.astype(np.float32)
        low = v - h.astype(np.float64)  # NaN for infinities: lo 0
    return h, lo_from_values(h, low)


# --------------------------------------------------------------------------- level 0
@jit(error_model="numpy")
def _val(hi: np.ndarray, lo: np.ndarray, z: int, y: int, x: int) -> float:
    h = hi[z, y, x]
    return np.float64(h) + np.float64(lo_part(h, lo[z, y, x]))


@jit(error_model="numpy")
def _fine_couple(lab, hi, lo, H, D2, bk, bv, z, y, x, nz, ny, nx):  # type: ignore[no-untyped-def]
    """Return (sum of face coefficients, sum coef * neighbour value incl. fixed values)."""
    row = np.int64(lab[z, y, x]) * 16
    sc = 0.0
    acc = 0.0
    # x
    if x > 0:
        w = H[row + lab[z, y, x - 1]]
        sc += w
        acc += w * _val(hi, lo, z, y, x - 1)
    elif bk[4] == PERIODIC:
        w = H[row + lab[z, y, nx - 1]]
        sc += w
        acc += w * _val(hi, lo, z, y, nx - 1)
    elif bk[4] == VALUE:
        w = D2[row // 16]
        sc += w
        acc += w * bv[4]
    if x < nx - 1:
        w = H[row + lab[z, y, x + 1]]
        sc += w
        acc += w * _val(hi, lo, z, y, x + 1)
    elif bk[5] == PERIODIC:
        w = H[row + lab[z, y, 0]]
        sc += w
        acc += w * _val(hi, lo, z, y, 0)
    elif bk[5] == VALUE:
        w = D2[row // 16]
        sc += w
        acc += w * bv[5]
    # y
    if y > 0:
        w = H[row + lab[z, y - 1, x]]
        sc += w
        acc += w * _val(hi, lo, z, y - 1, x)
    elif bk[2] == PERIODIC:
        w = H[row + lab[z, ny - 1, x]]
        sc += w
        acc += w * _val(hi, lo, z, ny - 1, x)
    elif bk[2] == VALUE:
        w = D2[row // 16]
        sc += w
        acc += w * bv[2]
    if y < ny - 1:
        w = H[row + lab[z, y + 1, x]]
        sc += w
        acc += w * _val(hi, lo, z, y + 1, x)
    elif bk[3] == PERIODIC:
        w = H[row + lab[z, 0, x]]
        sc += w
        acc += w * _val(hi, lo, z, 0, x)
    elif bk[3] == VALUE:
        w = D2[row // 16]
        sc += w
        acc += w * bv[3]
    # z
    if z > 0:
        w = H[row + lab[z - 1, y, x]]
        sc += w
        acc += w * _val(hi, lo, z - 1, y, x)
    elif bk[0] == PERIODIC:
        w = H[row + lab[nz - 1, y, x]]
        sc += w
        acc += w * _val(hi, lo, nz - 1, y, x)
    elif bk[0] == VALUE:
        w = D2[row // 16]
        sc += w
        acc += w * bv[0]
    if z < nz - 1:
        w = H[row + lab[z + 1, y, x]]
        sc += w
        acc += w * _val(hi, lo, z + 1, y, x)
    elif bk[1] == PERIODIC:
        w = H[row + lab[0, y, x]]
        sc += w
        acc += w * _val(hi, lo, 0, y, x)
    elif bk[1] == VALUE:
        w = D2[row // 16]
        sc += w
        acc += w * bv[1]
    return sc, acc


@jit(error_model="numpy")
def row_cells(cells, row_start, nx):  # type: ignore[no-untyped-def]
    """Range ``[j0, j1)`` of the sorted flat cell indices ``cells`` that lie in the row
    of ``nx`` voxels starting at flat index ``row_start``."""
    return np.searchsorted(cells, row_start), np.searchsorted(cells, row_start + nx)


@jit(error_model="numpy")
def mark_row_cells(cells, row_start, crow):  # type: ignore[no-untyped-def]
    """``crow[x]`` = 1 where voxel x of the row starting at ``row_start`` holds a cell."""
    crow[:] = 0.0
    j0, j1 = row_cells(cells, row_start, crow.shape[0])
    for j in range(j0, j1):
        crow[cells[j] - row_start] = 1.0


@jit(error_model="numpy")
def _fine_kS(lab, klut, slut, cflag, uptake, prot, hasprot, psens, old, inv_dt, z, y, x):  # type: ignore[no-untyped-def]
    """Reaction coefficient and source of one voxel (all terms in 1/min, unit/min);
    ``cflag`` is 1.0 when the voxel holds a cell."""
    t = lab[z, y, x]
    k = klut[t] + uptake * cflag + inv_dt
    s = slut[t]
    if hasprot:
        k += psens * prot[z, y, x]
    if inv_dt > 0.0:
        s += inv_dt * old[z, y, x]
    return k, s


@jit(error_model="numpy")
def _fine_res_row(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot, hasprot,
                  psens, old, inv_dt, z, y, buf, Y, fx, crow):  # type: ignore[no-untyped-def]
    """Residuals along one row: added to buf[Y, x // fx] (if fx > 0); returns sum r².
    ``crow`` (float64, nx) is scratch for the row's cell flags."""
    nz, ny, nx = lab.shape
    mark_row_cells(cells, (np.int64(z) * ny + y) * nx, crow)
    acc2 = 0.0
    inner = 0 < z < nz - 1 and 0 < y < ny - 1
    for x in range(nx):
        t = lab[z, y, x]
        if act[t] == 0:
            continue
        if inner and 0 < x < nx - 1:
            row = np.int64(t) * 16
            w0 = H[row + lab[z, y, x - 1]]
            w1 = H[row + lab[z, y, x + 1]]
            w2 = H[row + lab[z, y - 1, x]]
            w3 = H[row + lab[z, y + 1, x]]
            w4 = H[row + lab[z - 1, y, x]]
            w5 = H[row + lab[z + 1, y, x]]
            acc = (w0 * _val(hi, lo, z, y, x - 1) + w1 * _val(hi, lo, z, y, x + 1)
                   + w2 * _val(hi, lo, z, y - 1, x) + w3 * _val(hi, lo, z, y + 1, x)
                   + w4 * _val(hi, lo, z - 1, y, x) + w5 * _val(hi, lo, z + 1, y, x))
            sc = w0 + w1 + w2 + w3 + w4 + w5
            k = klut[t] + uptake * crow[x] + inv_dt
            src = slut[t]
            if hasprot:
                k += psens * prot[z, y, x]
            if inv_dt > 0.0:
                src += inv_dt * old[z, y, x]
        else:
            sc, acc = _fine_couple(lab, hi, lo, H, D2, bk, bv, z, y, x, nz, ny, nx)
            k, src = _fine_kS(lab, klut, slut, crow[x], uptake, prot, hasprot, psens, old,
                              inv_dt, z, y, x)
        r = src + acc - (k + sc) * _val(hi, lo, z, y, x)
        acc2 += r * r
        if fx == 2:
            buf[Y, x >> 1] += r
        elif fx == 1:
            buf[Y, x] += r
    return acc2


@jit(parallel=True, error_model="numpy")
def fine_residual_restrict(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot,
                           hasprot, psens, old, inv_dt, fz, fy, fx, rhs_c, part):  # type: ignore[no-untyped-def]
    """Residual of level 0 summed into the coarse rhs; per-coarse-plane sums of r² in part."""
    nz, ny, nx = lab.shape
    NZ, NY, NX = rhs_c.shape
    for Z in prange(NZ):
        buf = np.zeros((NY, NX), dtype=np.float64)
        crow = np.empty(nx, dtype=np.float64)
        acc2 = 0.0
        for z in range(Z * fz, min(Z * fz + fz, nz)):
            for y in range(ny):
                acc2 += _fine_res_row(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells,
                                      uptake, prot, hasprot, psens, old, inv_dt, z, y, buf,
                                      y // fy, fx, crow)
        for Y in range(NY):
            for X in range(NX):
                rhs_c[Z, Y, X] = buf[Y, X]
        part[Z] = acc2


@jit(parallel=True, error_model="numpy")
def fine_residual_norm(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot,
                       hasprot, psens, old, inv_dt, part):  # type: ignore[no-untyped-def]
    """Per-plane sums of r² on level 0 (part has length nz)."""
    nz, ny, nx = lab.shape
    for z in prange(nz):
        buf = np.zeros((1, 1), dtype=np.float64)
        crow = np.empty(nx, dtype=np.float64)
        acc2 = 0.0
        for y in range(ny):
            acc2 += _fine_res_row(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake,
                                  prot, hasprot, psens, old, inv_dt, z, y, buf, 0, 0, crow)
        part[z] = acc2


@jit(parallel=True, error_model="numpy")
def fine_rhs_norm(lab, act, D2, slut, bk, bv, old, inv_dt, part):  # type: ignore[no-untyped-def]
    """Per-plane sums of b² where b = source + fixed-value boundary terms (+ old / dt)."""
    nz, ny, nx = lab.shape
    for z in prange(nz):
        acc2 = 0.0
        for y in range(ny):
            for x in range(nx):
                t = lab[z, y, x]
                if act[t] == 0:
                    continue
                b = slut[t]
                if inv_dt > 0.0:
                    b += inv_dt * old[z, y, x]
                w = D2[t]
                if x == 0 and bk[4] == VALUE:
                    b += w * bv[4]
                if x == nx - 1 and bk[5] == VALUE:
                    b += w * bv[5]
                if y == 0 and bk[2] == VALUE:
                    b += w * bv[2]
                if y == ny - 1 and bk[3] == VALUE:
                    b += w * bv[3]
                if z == 0 and bk[0] == VALUE:
                    b += w * bv[0]
                if z == nz - 1 and bk[1] == VALUE:
                    b += w * bv[1]
                acc2 += b * b
        part[z] = acc2


@jit(error_model="numpy")
def _fine_face_x(lab, H, D2, bk, z, y, x, nx):  # type: ignore[no-untyped-def]
    """Coefficient of level-0 face x (between voxels x - 1 and x), x in 0..nx."""
    if 0 < x < nx:
        return H[np.int64(lab[z, y, x - 1]) * 16 + lab[z, y, x]]
    t = lab[z, y, 0] if x == 0 else lab[z, y, nx - 1]
    kind = bk[4] if x == 0 else bk[5]
    if kind == PERIODIC:
        return H[np.int64(lab[z, y, nx - 1]) * 16 + lab[z, y, 0]]
    if kind == VALUE:
        return D2[t]
    return 0.0


@jit(error_model="numpy")
def _fine_face_y(lab, H, D2, bk, z, y, x, ny):  # type: ignore[no-untyped-def]
    if 0 < y < ny:
        return H[np.int64(lab[z, y - 1, x]) * 16 + lab[z, y, x]]
    t = lab[z, 0, x] if y == 0 else lab[z, ny - 1, x]
    kind = bk[2] if y == 0 else bk[3]
    if kind == PERIODIC:
        return H[np.int64(lab[z, ny - 1, x]) * 16 + lab[z, 0, x]]
    if kind == VALUE:
        return D2[t]
    return 0.0


@jit(error_model="numpy")
def _fine_face_z(lab, H, D2, bk, z, y, x, nz):  # type: ignore[no-untyped-def]
    if 0 < z < nz:
        return H[np.int64(lab[z - 1, y, x]) * 16 + lab[z, y, x]]
    t = lab[0, y, x] if z == 0 else lab[nz - 1, y, x]
    kind = bk[0] if z == 0 else bk[1]
    if kind == PERIODIC:
        return H[np.int64(lab[nz - 1, y, x]) * 16 + lab[0, y, x]]
    if kind == VALUE:
        return D2[t]
    return 0.0


@jit(parallel=True, error_model="numpy")
def build_from_fine(lab, act, H, D2, klut, bk, cells, uptake, prot, hasprot, psens, inv_dt,
                    fz, fy, fx, ax, ay, az, kr):  # type: ignore[no-untyped-def]
    """Coarse level 1 from the lattice: summed reaction, face sums divided by the factor."""
    nz, ny, nx = lab.shape
    NZ, NY, NX = kr.shape
    for Z in prange(NZ):
        bk_ = np.zeros((NY, NX), dtype=np.float64)
        bx = np.zeros((NY, NX + 1), dtype=np.float64)
        by = np.zeros((NY + 1, NX), dtype=np.float64)
        cnt = np.zeros((NY, NX), dtype=np.int32)
        crow = np.empty(nx, dtype=np.float64)
        for z in range(Z * fz, min(Z * fz + fz, nz)):
            for y in range(ny):
                Y = y // fy
                yface = y == Y * fy and y > 0
                mark_row_cells(cells, (np.int64(z) * ny + y) * nx, crow)
                for x in range(nx):
                    X = x // fx
                    t = lab[z, y, x]
                    if act[t] != 0:
                        cnt[Y, X] += 1
                        k = klut[t] + uptake * crow[x] + inv_dt
                        if hasprot:
                            k += psens * prot[z, y, x]
                        bk_[Y, X] += k
                    if x == X * fx and x > 0:
                        bx[Y, X] += H[np.int64(lab[z, y, x - 1]) * 16 + t]
                    if yface:
                        by[Y, X] += H[np.int64(lab[z, y - 1, x]) * 16 + t]
                # domain faces of the row
                bx[Y, 0] += _fine_face_x(lab, H, D2, bk, z, y, 0, nx)
                bx[Y, NX] += _fine_face_x(lab, H, D2, bk, z, y, nx, nx)
            for x in range(nx):
                by[0, x // fx] += _fine_face_y(lab, H, D2, bk, z, 0, x, ny)
                by[NY, x // fx] += _fine_face_y(lab, H, D2, bk, z, ny, x, ny)
        for Y in range(NY):
            for X in range(NX):
                kr[Z, Y, X] = bk_[Y, X] if cnt[Y, X] > 0 else -1.0
            for X in range(NX + 1):
                ax[Z, Y, X] = bx[Y, X] / fx
        for Y in range(NY + 1):
            for X in range(NX):
                ay[Z, Y, X] = by[Y, X] / fy
    for Z in prange(NZ + 1):
        bz = np.zeros((NY, NX), dtype=np.float64)
        z = min(Z * fz, nz)
        if 0 < z < nz:
            for y in range(ny):
                Y = y // fy
                for x in range(nx):
                    bz[Y, x // fx] += H[np.int64(lab[z - 1, y, x]) * 16 + lab[z, y, x]]
        else:
            for y in range(ny):
                Y = y // fy
                for x in range(nx):
                    bz[Y, x // fx] += _fine_face_z(lab, H, D2, bk, z, y, x, nz)
        for Y in range(NY):
            for X in range(NX):
                az[Z, Y, X] = bz[Y, X] / fz


@jit(parallel=True, error_model="numpy")
def reaction_from_fine(lab, act, klut, cells, uptake, inv_dt, fz, fy, fx, kr, which):
    """Recompute the reaction ``kr`` of the coarse cells ``which`` (flat indices into kr)
    from the lattice, bit-identically to :func:`build_from_fine` (no protease map): the
    same float64 terms added in the same order (z, then y, then x over the cell's
    voxels), so an incremental update after cells moved equals a full rebuild."""
    nz, ny, nx = lab.shape
    NZ, NY, NX = kr.shape
    for i in prange(which.shape[0]):
        w = np.int64(which[i])
        Z = w // (NY * NX)
        Y = (w // NX) % NY
        X = w % NX
        s = 0.0
        cnt = 0
        for z in range(Z * fz, min(Z * fz + fz, nz)):
            for y in range(Y * fy, min(Y * fy + fy, ny)):
                row_start = (np.int64(z) * ny + y) * nx
                j0, j1 = row_cells(cells, row_start, nx)
                for x in range(X * fx, min(X * fx + fx, nx)):
                    t = lab[z, y, x]
                    if act[t] != 0:
                        cnt += 1
                        c = 0.0
                        for j in range(j0, j1):
                            if cells[j] == row_start + x:
                                c = 1.0
                        k = klut[t] + uptake * c + inv_dt
                        s += k
        kr[Z, Y, X] = s if cnt > 0 else -1.0


# --------------------------------------------------------------------------- coarse levels
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
