"""Level 0 of a solve, held one of two ways behind one interface for the solve driver.

* :class:`MatrixFreeLevel0`, for operators with one diffusivity over the permeable
  tissues (the default): sources and diagonal are rebuilt per plane from the labels, and
  the vectorised kernels of :mod:`niche3d.fields._uniform_kernels` need only shared work
  arrays (correction, residual, inverse diagonal, Krylov direction).
* :class:`StoredLevel0`, for per-tissue diffusivities: level 0 held like a coarse level
  (float32 face coefficients and reaction, 24 B/voxel), so its smoother, restriction and
  prolongation are the kernels of :mod:`niche3d.fields._level_kernels`; its float64
  residual looks coefficients up per voxel (:mod:`niche3d.fields._table_kernels`).

Both give the driver (:meth:`niche3d.fields.multigrid.Multigrid.solve`) the correction
``e`` and residual ``r`` arrays of the correction system ``A e = r``, and the steps of one
V-cycle: :meth:`residual` (float64 residual of ``hi + lo``, stored float32 in ``r``),
:meth:`pre_smooth`, :meth:`restrict`, :meth:`prolong` and :meth:`post_smooth` (which also
returns the per-plane Krylov inner products).
"""

from __future__ import annotations

import numpy as np

from niche3d.fields import _level_kernels as LK
from niche3d.fields import _table_kernels as TK
from niche3d.fields import _uniform_kernels as UK
from niche3d.fields._coarse import CoarseLevels, Level
from niche3d.fields.operator import TableArgs, UniformArgs

__all__ = ["MatrixFreeLevel0", "StoredLevel0", "serial_sum"]


def serial_sum(part: np.ndarray) -> float:
    """Sum in a fixed order (independent of thread count)."""
    s = 0.0
    for v in part.tolist():
        s += v
    return s


class MatrixFreeLevel0:
    """Level 0 of a one-diffusivity operator (vectorised, matrix-free kernels).

    ``work`` = (e, r, invd, p): float32 correction, residual and inverse diagonal, int16
    Krylov direction (shared by the fields of a FieldSet: they are solved in turn).
    """

    def __init__(self, labels: np.ndarray, args: UniformArgs, hi: np.ndarray,
                 lo: np.ndarray, work: tuple[np.ndarray, ...], pockets: np.ndarray,
                 periodic: tuple[bool, bool, bool], factors: tuple[int, int, int]) -> None:
        self.labels, self.args, self.hi, self.lo = labels, args, hi, lo
        self.e, self.r, self.invd, self.p = work
        self.pockets = pockets
        self.px, self.py, self.pz = periodic[2], periodic[1], periodic[0]
        self.factors = factors
        nz = labels.shape[0]
        self.part = np.zeros((nz, 2), np.float64)
        self.dots = np.zeros((nz, 5), np.float64)

    def residual(self, first: bool, want_b: bool) -> tuple[float, float]:
        """(sum of r², sum of b²) of ``hi + lo``; the first call of a solve also writes the
        inverse diagonal. The closed pockets hold their exact solution: a zero residual
        there keeps the correction at exactly 0 on them through every smoothing (they are
        decoupled)."""
        UK.residual(self.labels, self.hi, self.lo, *self.args, self.r, self.part, self.invd,
                    first)
        self.r.reshape(-1)[self.pockets] = 0.0
        return serial_sum(self.part[:, 0]), serial_sum(self.part[:, 1]) if want_b else 0.0

    def _smooth(self, c1: int, n: int, first: bool, want_dots: bool = False) -> None:
        """n red-black half-sweeps starting with colour c1, fused unless z is periodic;
        with ``want_dots`` then the Krylov inner products of e into ``dots``, fused
        into the last pass when it has a stage to spare."""
        e, r, invd, p, D = self.e, self.r, self.invd, self.p, self.args.D
        px, py, pz = self.px, self.py, self.pz
        if not pz:
            while n > 0:
                m = min(n, UK.MAX_STAGES - UK.MAX_STAGES % 2)  # keep the colour order
                fuse = want_dots and m == n and m < UK.MAX_STAGES
                UK.smooth_stages(e, r, invd, D, px, py, c1, m, first, p, self.dots, fuse)
                want_dots = want_dots and not fuse
                n -= m
                first = False
        else:
            for i in range(n):
                UK.smooth(e, r, invd, D, px, py, pz, (c1 + i) & 1, first and i == 0)
        if want_dots:
            UK.krylov_dots(e, r, invd, p, D, px, py, pz, self.dots)

    def pre_smooth(self, sweeps: int) -> None:
        """``sweeps`` red-black sweeps from e = 0."""
        if sweeps > 0:
            self._smooth(0, 2 * sweeps, True)
        else:
            self.e[...] = 0.0

    def restrict(self, rhs_c: np.ndarray) -> None:
        """The residual of the correction system, summed over each coarse cell."""
        fz, fy, fx = self.factors
        UK.residual_restrict(self.e, self.r, self.invd, self.args.D, self.px, self.py,
                             self.pz, fz, fy, fx, rhs_c)

    def prolong(self, E: np.ndarray, tables: tuple[np.ndarray, ...]) -> None:
        """``e += P E``."""
        UK.prolong_add(self.e, self.invd, E, *tables)

    def post_smooth(self, sweeps: int) -> np.ndarray:
        """``sweeps`` red-black sweeps, then the per-plane Krylov inner products."""
        self._smooth(1, 2 * sweeps, False, want_dots=True)
        return self.dots


class StoredLevel0:
    """Level 0 of a per-tissue-diffusivity operator, held in ``level`` like a coarse
    level; ``p`` is the int16 Krylov direction."""

    def __init__(self, labels: np.ndarray, args: TableArgs, hi: np.ndarray, lo: np.ndarray,
                 level: Level, p: np.ndarray, pockets: np.ndarray, coarse: CoarseLevels,
                 rhs_sq: float | None) -> None:
        self.labels, self.args, self.hi, self.lo = labels, args, hi, lo
        self.L0 = level
        self.e, self.r, self.p = level.e, level.rhs, p
        self.pockets = pockets
        self.coarse = coarse
        self.rhs_sq = rhs_sq
        self.periodic = coarse.periodic
        nz = labels.shape[0]
        self.part = np.zeros(nz, np.float64)
        self.dots = np.zeros((nz, 5), np.float64)

    def residual(self, first: bool, want_b: bool) -> tuple[float, float]:
        """(sum of r², sum of b²): b - A (hi + lo) in float64 into ``L0.rhs`` (factors 1:
        the "restriction" is a copy), zero on the pockets as in the matrix-free level."""
        TK.fine_residual_restrict(self.labels, self.hi, self.lo, *self.args, 1, 1, 1, self.r,
                                  self.part)
        self.r.reshape(-1)[self.pockets] = 0.0
        b2 = 0.0
        if want_b:
            if self.rhs_sq is None:
                part = np.zeros(self.labels.shape[0], np.float64)
                t = self.args
                TK.fine_rhs_norm(self.labels, t.act, t.D2, t.slut, t.bk, t.bv, t.old,
                                 t.inv_dt, part)
                self.rhs_sq = serial_sum(part)
            b2 = self.rhs_sq
        return serial_sum(self.part), b2

    def pre_smooth(self, sweeps: int) -> None:
        """``sweeps`` red-black sweeps from e = 0."""
        self.e[...] = 0.0
        self.coarse.smooth(self.L0, 0, 2 * sweeps)

    def restrict(self, rhs_c: np.ndarray) -> None:
        """The residual of the correction system, summed over each coarse cell."""
        L0 = self.L0
        pz, py, px = self.periodic
        fz, fy, fx = self.coarse.factors[0]
        LK.coarse_residual_restrict(L0.ax, L0.ay, L0.az, L0.kr, L0.e, L0.rhs, px, py, pz,
                                    fz, fy, fx, rhs_c)

    def prolong(self, E: np.ndarray, tables: tuple[np.ndarray, ...]) -> None:
        """``e += P E``."""
        LK.coarse_prolong_add(self.L0.kr, self.e, E, *tables)

    def post_smooth(self, sweeps: int) -> np.ndarray:
        """``sweeps`` red-black sweeps, then the per-plane Krylov inner products."""
        L0 = self.L0
        pz, py, px = self.periodic
        self.coarse.smooth(L0, 1, 2 * sweeps)
        LK.coarse_krylov_dots(L0.ax, L0.ay, L0.az, L0.kr, L0.e, L0.rhs, self.p, px, py, pz,
                              self.dots)
        return self.dots
