"""Level-0 kernels that look the operator up per voxel from tissue tables (private).

Discretisation (cell-centred finite volumes, voxel edge 1, time in minutes)::

    sum_faces w_f (c_i - c_j) + k_i c_i = S_i

with face coefficient ``w_f`` = harmonic mean of the two voxel diffusivities (0 when one
side is impermeable), from the table ``H[16 * a + b]`` of the two tissue codes. A
fixed-value face adds ``2 D_i`` to the diagonal and ``2 D_i g`` to the right-hand side (the
face is half a voxel from the centre); a periodic face couples to the voxel on the
opposite side; a no-flux face adds nothing (kinds: :mod:`niche3d.fields._boundary`).

The reaction ``klut`` and source ``slut`` are per tissue code; cells are sorted flat
voxel indices, marked per row (:func:`mark_row_cells`); the protease map is optional.
These kernels serve every operator: the float64 residual of a solution ``hi + lo``
(:mod:`niche3d.fields._solution_storage`) for per-tissue diffusivities
(:func:`fine_residual_restrict`, :func:`fine_residual_norm`), the norm of the right-hand
side, the build of coarse level 1 (:func:`build_from_fine`) and its exact partial
rebuild after cells moved (:func:`reaction_from_fine`). Their argument tail is
:class:`niche3d.fields.operator.TableArgs`. Operators with one diffusivity have their
own vectorised residual in :mod:`niche3d.fields._uniform_kernels`.

Every parallel loop writes only to its own (coarse) z-plane, and reductions go through
per-plane partial sums that the caller adds serially, so results are bit-identical for
any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from niche3d._jit import jit
from niche3d.fields._boundary import PERIODIC, VALUE
from niche3d.fields._solution_storage import lo_part


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
