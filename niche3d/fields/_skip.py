"""Re-solves the cells could not sense are skipped: local correction and change estimate.

Between two scheduled solves of a field only its sinks usually change: cells moved, so
the uptake term ``uptake * cell`` appeared at some voxels and vanished at others. The
field's response has two parts:

* a **local** one, at and next to the voxels that changed, of the order of
  ``uptake * c * G_ii`` (``G_ii`` the operator's self-response, about ``1.5 / (6 D + k)``
  in open marrow): ~2-3 % of CXCL12 at a moved cell's own voxel with the default
  parameters. :func:`local_relax` removes it before anything else: Gauss-Seidel point
  updates in a box of ``radius`` voxels around each changed voxel, serial and in index
  order (so the result does not depend on the thread count);
* a **far** one that the box leaves: the residual ``r`` that remains after the local
  correction, spread by the whole operator.

The far part is what a skipped solve leaves wrong. It is estimated as ``q * max|r|``,
where ``q`` is the field's measured response: in every full solve that followed a
cells-only change, ``q_obs = max|Δc| / max|r|`` (the change the global cycles made over
the residual they started from; ``max|Δc|`` is bounded from above by the sum of the
solver's Krylov steps, ``Multigrid.change_bound``, so no copy of the field is needed). :class:`SkipState` keeps the last ``HISTORY`` of them
and uses ``SAFETY`` times their maximum, so the estimate follows the lattice and the
field (a rigorous max-principle bound, ``max|r_i| / k_i``, holds too, but overestimates
by ``1 + 6 D / k``: ~10x for CXCL12 and ~3500x for SCF, which would never skip). The
tolerance the estimate is compared with is set where fields and cells meet
(:class:`niche3d.simulation.Simulation`: ``fields.skip_tolerance`` times the
half-saturation of the receptor that reads the field).
"""

from __future__ import annotations

import numba
import numpy as np

from niche3d._jit import jit
from niche3d.fields._boundary import PERIODIC
from niche3d.fields._solution_storage import split
from niche3d.fields._table_kernels import _fine_couple, _fine_kS, _val
from niche3d.fields.operator import DynamicOperator, StaticOperator

__all__ = ["SkipState", "local_correction", "q_floor", "local_relax", "box_residual_max",
           "abs_max", "HISTORY", "SAFETY", "LOCAL_RADIUS", "LOCAL_SWEEPS",
           "LOCAL_BUDGET", "LOCAL_GAIN", "QUICK_RADIUS", "QUICK_SWEEPS", "FAILS_BEFORE_BACKOFF",
           "BACKOFF_EVERY"]

HISTORY = 8  # measured responses kept per field
SAFETY = 2.0  # factor on the largest of them
# The local correction: boxes of 7^3 voxels, 8 sweeps. CXCL12's response to one cell
# falls off over its decay length (~3 voxels); measured on the default run, this leaves
# ~3 % of the response a cell's move causes (R = 2 and 3 sweeps leave ~11 %). What is left
# is in the residual the estimate reads.
LOCAL_RADIUS = 3
LOCAL_SWEEPS = 8
# A first, 7x cheaper pass (5^3 boxes, 3 sweeps) is tried before: it is enough for SCF,
# whose response to a cell is a few hundredths of the tolerance; CXCL12 usually needs
# the second.
QUICK_RADIUS = 2
QUICK_SWEEPS = 3
# what the full correction gains over the quick one, measured on the default run (the
# residual it leaves is 3-5x smaller): the full one is not tried when the quick one's
# estimate is more than this times the tolerance
LOCAL_GAIN = 4.0
# After this many local corrections in a row that did not lead to a skip (many cells
# moving, as on large lattices), one is tried only every BACKOFF_EVERY-th solve: a
# correction costs about what a V-cycle does, and a failed one is spent for nothing.
FAILS_BEFORE_BACKOFF = 3
BACKOFF_EVERY = 4
# The local correction is not tried when it would cost more point updates than this
# share of one sweep of the lattice (then so many cells moved that a full solve is due).
LOCAL_BUDGET = 1.0


@jit(error_model="numpy")
def _wrap(i, n, periodic):  # type: ignore[no-untyped-def]
    """Index ``i`` on an axis of ``n`` voxels: wrapped if periodic, else -1 outside."""
    if 0 <= i < n:
        return i
    if periodic:
        return i % n
    return -1


@jit(error_model="numpy")
def _cell_flag(cells, flat):  # type: ignore[no-untyped-def]
    p = np.searchsorted(cells, flat)
    return 1.0 if p < cells.size and cells[p] == flat else 0.0


@jit(error_model="numpy")
def _box_pass(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot, hasprot,  # type: ignore[no-untyped-def]
              psens, old, inv_dt, centres, radius, relax):
    """One walk over the boxes of ``radius`` voxels around ``centres`` (wrapped across
    periodic faces), in a fixed order: with ``relax`` a Gauss-Seidel point update of
    every permeable voxel, else the largest ``|r|`` there (NaN propagates). Returns
    (point updates, largest |r|)."""
    nz, ny, nx = lab.shape
    pz, py, px = bk[0] == PERIODIC, bk[2] == PERIODIC, bk[4] == PERIODIC
    n = 0
    m = 0.0
    for j in range(centres.size):
        c = centres[j]
        z0, y0, x0 = c // (ny * nx), (c // nx) % ny, c % nx
        for dz in range(-radius, radius + 1):
            z = _wrap(z0 + dz, nz, pz)
            if z < 0:
                continue
            for dy in range(-radius, radius + 1):
                y = _wrap(y0 + dy, ny, py)
                if y < 0:
                    continue
                for dx in range(-radius, radius + 1):
                    x = _wrap(x0 + dx, nx, px)
                    if x < 0 or act[lab[z, y, x]] == 0:
                        continue
                    cflag = _cell_flag(cells, (np.int64(z) * ny + y) * nx + x)
                    sc, acc = _fine_couple(lab, hi, lo, H, D2, bk, bv, z, y, x, nz, ny, nx)
                    k, src = _fine_kS(lab, klut, slut, cflag, uptake, prot, hasprot, psens,
                                      old, inv_dt, z, y, x)
                    if relax:
                        d = k + sc
                        if d > 0.0:
                            h, q = split((src + acc) / d)
                            hi[z, y, x] = h
                            lo[z, y, x] = q
                            n += 1
                    else:
                        r = abs(src + acc - (k + sc) * _val(hi, lo, z, y, x))
                        if not r <= m:
                            m = r
    return n, m


@jit(error_model="numpy")
def local_relax(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot, hasprot,  # type: ignore[no-untyped-def]
                psens, old, inv_dt, centres, radius, sweeps):
    """Gauss-Seidel point updates of the stored solution ``hi + lo`` in the boxes of
    ``radius`` voxels around the flat voxel indices ``centres`` (wrapped across periodic
    faces), ``sweeps`` times, in a fixed order; returns the number of point updates."""
    n = 0
    for _ in range(sweeps):
        n += _box_pass(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot,
                       hasprot, psens, old, inv_dt, centres, radius, True)[0]
    return n


@jit(error_model="numpy")
def box_residual_max(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot,  # type: ignore[no-untyped-def]
                     hasprot, psens, old, inv_dt, centres, radius):
    """Largest ``|r|`` (field unit/min) of the stored solution over the boxes of
    ``radius`` voxels around ``centres`` (wrapped across periodic faces; NaN propagates)."""
    return _box_pass(lab, hi, lo, act, H, D2, klut, slut, bk, bv, cells, uptake, prot,
                     hasprot, psens, old, inv_dt, centres, radius, False)[1]


@jit(parallel=True, error_model="numpy")
def _plane_abs_max(a, part):  # type: ignore[no-untyped-def]
    for z in numba.prange(a.shape[0]):
        m = 0.0
        for y in range(a.shape[1]):
            for x in range(a.shape[2]):
                d = abs(np.float64(a[z, y, x]))
                if not d <= m:
                    m = d
        part[z] = m


def abs_max(a: np.ndarray) -> float:
    """``max|a|`` of a 3D float array, without a temporary array (NaN propagates)."""
    part = np.zeros(a.shape[0], np.float64)
    _plane_abs_max(a, part)
    return float(part.max())


def q_floor(diffusion: np.ndarray, op: DynamicOperator) -> float:
    """1 / an upper bound of the largest level-0 diagonal of an operator (min): the least
    response a residual can have (see :meth:`SkipState.estimate`). ``diffusion`` is the
    per-code table in voxel²/min."""
    prot = float(op.protease.max()) if op.protease is not None else 0.0
    # six faces, each at most 2 D (a fixed-value face)
    top = (12.0 * float(diffusion.max()) + float(np.max(op.decay)) + op.uptake
           + op.psens * prot)
    return 1.0 / top if top > 0 else float("inf")


def local_correction(static: StaticOperator, hi: np.ndarray, lo: np.ndarray,
                     op: DynamicOperator, last_cells: np.ndarray, cells: np.ndarray,
                     radius: int = LOCAL_RADIUS, sweeps: int = LOCAL_SWEEPS) -> float:
    """Relax ``hi + lo`` (in place) around the voxels whose cell changed between
    ``last_cells`` and ``cells`` (both sorted, unique); return the largest residual left
    in and next to the relaxed boxes (field unit/min), or inf when so many cells changed
    that a local correction would cost more than ``LOCAL_BUDGET`` sweeps of the lattice."""
    ta = op.table_args(static)
    args = (static.labels, hi, lo, ta.act, ta.H, ta.D2, ta.klut, ta.slut, ta.bk, ta.bv,
            ta.cells, ta.uptake, ta.prot, ta.hasprot, ta.psens, ta.old, ta.inv_dt)
    changed = np.setxor1d(last_cells, cells, assume_unique=True)
    if changed.size * (2 * LOCAL_RADIUS + 1) ** 3 * LOCAL_SWEEPS > LOCAL_BUDGET * static.labels.size:
        return float("inf")
    if not changed.size:
        return 0.0
    local_relax(*args, changed, radius, sweeps)
    return float(box_residual_max(*args, changed, radius + 1))


class SkipState:
    """What one field's last solve saw, and its measured response (see the module doc).

    Attributes
    ----------
    cells
        The occupied voxels of the last solve (full or skipped), or None before the first.
    sources_changed
        Sources, decay or protease changed since the last solve: the next one is full.
    in_row
        Skipped solves since the last full one.
    r_left
        Largest absolute residual (field unit/min) the solution may have anywhere: the
        full solve's, or a local correction's if larger (the residual changes only inside
        the boxes a correction relaxed, one voxel beyond them included).
    q
        Measured responses ``max|Δc| / max|r|`` (min), newest last, at most ``HISTORY``.
    solves, skipped
        Scheduled solves of the field and how many of them were skipped.
    fails
        Local corrections in a row that did not lead to a skip.
    """

    def __init__(self) -> None:
        self.cells: np.ndarray | None = None
        self.sources_changed = True
        self.in_row = 0
        self.r_left = 0.0
        self.q = np.zeros(0, np.float64)
        self.solves = 0
        self.skipped = 0
        self.fails = 0

    def try_local(self) -> bool:
        """Whether this solve tries a local correction (see ``FAILS_BEFORE_BACKOFF``)."""
        return self.fails < FAILS_BEFORE_BACKOFF or self.solves % BACKOFF_EVERY == 0

    def estimate(self, rmax: float, q_floor: float) -> float:
        """Estimated largest field change a full solve would make from a residual of
        max-norm ``rmax`` (inf until a response was measured). ``q_floor`` is the least
        response the operator can have, ``1 / max diagonal`` (a residual at one voxel
        changes that voxel by at least ``r_i / a_ii``): a full solve that had nothing to
        change measures q = 0, which must not make every later change look free."""
        if self.q.size == 0 or not np.isfinite(rmax):
            return float("inf")
        return SAFETY * max(float(self.q.max()), q_floor) * rmax

    def observe(self, dmax: float, rmax: float) -> None:
        """Record one full solve's change ``dmax`` from a residual of max-norm ``rmax``."""
        if rmax > 0 and np.isfinite(dmax) and np.isfinite(rmax):
            self.q = np.append(self.q, dmax / rmax)[-HISTORY:]

    # checkpoints: one float64 vector and the cell list
    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(state vector, cells) for a checkpoint (cells ``[-1]`` when None)."""
        head = [float(self.sources_changed), float(self.in_row), float(self.solves),
                float(self.skipped), float(self.r_left), float(self.fails), float(self.q.size)]
        vec = np.array(head + self.q.tolist(), np.float64)
        cells = self.cells.copy() if self.cells is not None else np.array([-1], np.int64)
        return vec, cells

    @classmethod
    def from_arrays(cls, vec: np.ndarray, cells: np.ndarray) -> SkipState:
        """The inverse of :meth:`to_arrays` (ValueError on a malformed vector)."""
        v = np.asarray(vec, np.float64).ravel()
        if v.size < 7 or not np.all(np.isfinite(v)) or v.size != 7 + int(v[6]) \
                or int(v[6]) > HISTORY or np.any(v < 0):
            raise ValueError(f"malformed skip state vector of {v.size} values")
        s = cls()
        s.sources_changed = bool(v[0])
        s.in_row, s.solves, s.skipped = int(v[1]), int(v[2]), int(v[3])
        s.r_left = float(v[4])
        s.fails = int(v[5])
        s.q = v[7:].copy()
        c = np.asarray(cells)
        if c.dtype.kind not in "iu" or c.ndim != 1:
            raise ValueError("malformed skip cell list")
        s.cells = None if (c.size == 1 and c[0] == -1) else c.astype(np.int64)
        return s
