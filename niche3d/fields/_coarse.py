"""The coarse levels of a multigrid hierarchy: their arrays, construction and V-cycle.

Coarse levels are built by summing the reaction over each 2x2x2 block and summing face
coefficients over each block face divided by the coarsening factor (the cell-centred
rediscretisation), so a face that is closed by bone on the fine level stays closed on
every coarser level (:func:`~niche3d.fields._table_kernels.build_from_fine`,
:func:`~niche3d.fields._level_kernels.build_from_coarse`). Transfers: restriction sums
the residual of the children; prolongation is piecewise constant (halved next to a
fixed-value face). The coarsest level is solved by a sparse LU.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from niche3d.fields import _level_kernels as LK

__all__ = ["Level", "CoarseLevels", "factor_coarsest"]

SERIAL_BELOW = 32**3  # coarse levels smaller than this run on one thread
DIRECT_MAX = 4096  # the coarsest level is solved by a sparse LU
GS_CHUNK = 8  # z-planes per chunk of the fused coarse-level sweeps (fixed: determinism)
GS_STAGES = 4  # half-sweeps per fused pass: (GS_CHUNK + 1) // 2, kept even


def prolong_tables(
    n: int, f: int, value_lo: bool = False, value_hi: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per fine index along one axis: the parent coarse index and the prolongation scale
    (0.5 for the child next to a fixed-value face when the axis is coarsened, else 1)."""
    i = np.arange(n, dtype=np.int64) // f
    s = np.ones(n, np.float64)
    if f > 1:
        if value_lo:
            s[0] = 0.5
        if value_hi:
            s[n - 1] = 0.5
    return i, s


class Level:
    """The float32 arrays of one level with stored coefficients: face coefficients
    ``ax`` (nz, ny, nx + 1), ``ay``, ``az``, reaction ``kr`` (-1 = inactive), correction
    ``e`` and right-hand side ``rhs``."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        nz, ny, nx = shape
        self.shape = shape
        self.ax = np.zeros((nz, ny, nx + 1), np.float32)
        self.ay = np.zeros((nz, ny + 1, nx), np.float32)
        self.az = np.zeros((nz + 1, ny, nx), np.float32)
        self.kr = np.zeros(shape, np.float32)
        self.e = np.zeros(shape, np.float32)
        self.rhs = np.zeros(shape, np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of the six arrays."""
        return sum(a.nbytes for a in (self.ax, self.ay, self.az, self.kr, self.e, self.rhs))


class CoarseLevels:
    """Levels 1..L below a lattice of ``shape``, their transfer tables and the V-cycle
    on them (red-black Gauss-Seidel, ``coarse_smooth`` sweeps before and after the
    correction, fused in wavefront passes unless z is periodic).

    ``factors[l]`` is the coarsening factor from level l to l + 1 and ``tables[l]`` the
    prolongation tables from level l + 1 to level l (``levels[l]`` is level l + 1).
    """

    def __init__(self, shape: tuple[int, int, int], periodic: tuple[bool, bool, bool],
                 value_faces: tuple[bool, ...], coarse_smooth: int) -> None:
        self.periodic = periodic
        self.coarse_smooth = coarse_smooth
        self.factors: list[tuple[int, int, int]] = []
        self.levels: list[Level] = []
        self.tables: list[tuple[np.ndarray, ...]] = []
        self.lu: tuple | None = None  # factors of the coarsest level (None: refactor)
        s = shape
        while True:
            # coarsen all axes together (point smoothing fails on the anisotropic cells
            # that semi-coarsening makes); only when one axis is exhausted and the level
            # is still too big for a direct solve, coarsen the remaining axes alone
            if all(n >= 4 for n in s):
                f = (2, 2, 2)
            elif s[0] * s[1] * s[2] > DIRECT_MAX:
                f = tuple(2 if n >= 4 else 1 for n in s)
            else:
                break
            if f == (1, 1, 1):
                break
            c = tuple((n + fa - 1) // fa for n, fa in zip(s, f, strict=True))
            tabs: tuple[np.ndarray, ...] = ()
            for a, (n, fa) in enumerate(zip(s, f, strict=True)):
                tabs += prolong_tables(n, fa, value_faces[2 * a], value_faces[2 * a + 1])
            self.factors.append(f)  # type: ignore[arg-type]
            self.levels.append(Level(c))  # type: ignore[arg-type]
            self.tables.append(tabs)
            s = c
        if not self.levels:
            # too small to coarsen: one level-1 copy of the lattice, solved directly
            tabs = ()
            for n in shape:
                tabs += prolong_tables(n, 1)
            self.factors.append((1, 1, 1))
            self.levels.append(Level(shape))
            self.tables.append(tabs)

    @property
    def nbytes(self) -> int:
        """Bytes of the level arrays."""
        return sum(lv.nbytes for lv in self.levels)

    def build_above_first(self) -> None:
        """Levels 2..L from level 1 (after level 1 was built from the lattice)."""
        self.lu = None
        for lv in range(1, len(self.levels)):
            a = self.levels[lv - 1]
            b = self.levels[lv]
            fz, fy, fx = self.factors[lv]
            LK.build_from_coarse(a.ax, a.ay, a.az, a.kr, fz, fy, fx, b.ax, b.ay, b.az, b.kr)

    def cycle(self, lv: int = 0) -> None:
        """V-cycle for ``levels[lv].e`` from ``levels[lv].rhs`` (e starts at 0)."""
        L = self.levels[lv]
        if L.kr.size < SERIAL_BELOW and numba.get_num_threads() > 1:
            # small levels: thread start-up costs more than the work
            nt = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                self._cycle_body(lv, L)
            finally:
                numba.set_num_threads(nt)
            return
        self._cycle_body(lv, L)

    def _cycle_body(self, lv: int, L: Level) -> None:
        px, py, pz = self.periodic[2], self.periodic[1], self.periodic[0]
        if lv == len(self.levels) - 1:
            if self.lu is None:
                self.lu = factor_coarsest(L, self.periodic)
            lu, _, active = self.lu
            rhs = L.rhs.ravel().astype(np.float64)[active]
            sol = np.zeros(L.kr.size, np.float64)
            if rhs.size:
                sol[active] = lu.solve(rhs)
            L.e[...] = sol.reshape(L.shape).astype(np.float32)
            return
        self.smooth(L, 0, 2 * self.coarse_smooth)
        N = self.levels[lv + 1]
        fz, fy, fx = self.factors[lv + 1]
        LK.coarse_residual_restrict(L.ax, L.ay, L.az, L.kr, L.e, L.rhs, px, py, pz, fz, fy,
                                    fx, N.rhs)
        N.e[...] = 0.0
        self.cycle(lv + 1)
        LK.coarse_prolong_add(L.kr, L.e, N.e, *self.tables[lv + 1])
        self.smooth(L, 1, 2 * self.coarse_smooth)

    def smooth(self, L: Level, c1: int, n: int) -> None:
        """n red-black half-sweeps on a level with stored coefficients, starting with
        colour c1; fused in wavefront passes (one read of the coefficients per pass of up
        to GS_STAGES half-sweeps) unless z is periodic."""
        px, py, pz = self.periodic[2], self.periodic[1], self.periodic[0]
        if pz:
            for i in range(n):
                LK.coarse_gs(L.ax, L.ay, L.az, L.kr, L.e, L.rhs, px, py, pz, (c1 + i) & 1)
            return
        while n > 0:
            m = min(n, GS_STAGES)
            LK.coarse_gs_stages(L.ax, L.ay, L.az, L.kr, L.e, L.rhs, px, py, c1, m, GS_CHUNK)
            c1 = (c1 + m) & 1
            n -= m


def factor_coarsest(L: Level, periodic: tuple[bool, bool, bool]) -> tuple:
    """Sparse LU of the coarsest level: an exact coarse solve."""
    idx = np.arange(L.kr.size).reshape(L.shape)
    kr = L.kr.astype(np.float64)
    diag = np.where(kr >= 0, kr, 0.0)
    rows, cols, vals = [], [], []
    for axis, a in ((2, L.ax), (1, L.ay), (0, L.az)):
        m = L.shape[axis]
        w = np.moveaxis(a.astype(np.float64), axis, 0)
        ii = np.moveaxis(idx, axis, 0)
        diag = diag + np.moveaxis(w[:-1] + w[1:], 0, axis)
        links = [(ii[:-1], ii[1:], w[1:-1])]
        if periodic[axis]:
            links.append((ii[m - 1 :], ii[:1], w[:1]))
        for i, j, ww in links:
            i, j, ww = i.ravel(), j.ravel(), ww.ravel()
            rows += [i, j]
            cols += [j, i]
            vals += [-ww, -ww]
    n = L.kr.size
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag.ravel())
    A = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    active = (kr.ravel() >= 0) & (diag.ravel() > 0)
    A = A[active][:, active].tocsc()
    return scipy.sparse.linalg.splu(A), None, active
