"""Geometric multigrid for ``-div(D grad c) + k c = S`` on the tissue lattice.

The solution of a field is a float32 ``hi`` (the field the simulation reads) and an int16
``lo`` that extends its mantissa by 15 bits (value ``hi + lo * |hi| * 2**-39``, see
:mod:`niche3d.fields._kernels`). Each solve is a defect correction accelerated by
flexible conjugate gradients: the float64 residual of ``hi + lo``, one float32 V-cycle
for the correction (red-black Gauss-Seidel: ``pre`` / ``post`` = 2 sweeps on level 0,
``coarse_smooth`` = 3 on the coarse levels, fused in wavefront passes), a Krylov step, an
update of ``hi + lo`` computed in float64.

* Operators with one diffusivity over the permeable tissues (the default) keep level 0
  matrix-free: sources and diagonal are rebuilt per plane from the labels, and the
  vectorised kernels of :mod:`niche3d.fields._fast` need only shared work arrays
  (correction, residual, inverse diagonal, Krylov direction).
* Operators with per-tissue diffusivities store level 0 like a coarse level (float32
  face coefficients and reaction) and use the coarse-level kernels on it; their float64
  residual looks coefficients up per voxel (:mod:`niche3d.fields._kernels`).

Coarse levels are built by summing the reaction over each 2x2x2 block and summing face
coefficients over each block face divided by the coarsening factor (the cell-centred
rediscretisation), so a face that is closed by bone on the fine level stays closed on
every coarser level. Transfers: restriction sums the residual of the children;
prolongation is piecewise constant (halved next to a fixed-value face).

Two kinds of marrow are out of reach of the coarse levels and are solved exactly:

* closed pockets (permeable regions sealed by bone), once per solve;
* **fjords**: permeable voxels farther than ``fjord_depth`` voxels (default 1) from the
  bulk of the marrow, i.e. everything that the largest component of the permeable mask
  eroded ``fjord_depth`` times, dilated back, does not cover (1-voxel channels, chambers
  behind 1-voxel necks). A coarse cell straddles the bone around such a region, so its
  smooth error is invisible to the coarse correction and Gauss-Seidel removes it slowly.
  In every V-cycle, after the coarse correction and before the post-smoothing, the
  fjords get an exact block Gauss-Seidel step of the correction:
  a sparse LU solve of the fjord rows with the surrounding values fixed. On the
  procedural marrow they are 0.3-0.5 % of the voxels and halved the cycle count of plain
  V-cycles (128^3: 17 -> 9 cycles to 1e-6).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy import ndimage

from niche3d.fields import _fast as F
from niche3d.fields import _kernels as K

__all__ = ["OperatorSpec", "Multigrid"]

_SERIAL_BELOW = 32**3  # coarse levels smaller than this run on one thread
_DIRECT_MAX = 4096  # the coarsest level is solved by a sparse LU
_POCKET_MAX = 4096  # closed permeable pockets up to this size are solved directly
_FJORD_MAX = 50000  # fjord pieces up to this size get an exact block solve
_STALL_CYCLES = 5  # cycles without a new lowest residual that end a solve (see _Stall)
_GS_CHUNK = 8  # z-planes per chunk of the fused coarse-level sweeps (fixed: determinism)
_GS_STAGES = 4  # half-sweeps per fused pass: (_GS_CHUNK + 1) // 2, kept even


@dataclass
class OperatorSpec:
    """Level-0 operator of one field in kernel units (voxel, minute).

    Attributes
    ----------
    labels
        uint8 tissue codes (z, y, x).
    diffusion
        (16,) diffusivity per tissue code, voxel²/min (0 = impermeable, voxel masked).
    decay
        (16,) decay per tissue code, 1/min (scalar protease already added).
    secretion
        (16,) secretion per tissue code, field unit/min (source scales already applied).
    bkind, bvalue
        (6,) boundary kinds (0 no-flux, 1 value, 2 periodic) and values, face order
        zmin, zmax, ymin, ymax, xmin, xmax.
    cells
        Sorted, unique int64 flat indices (into ``labels.ravel()``) of the voxels that hold
        a cell; each adds ``uptake`` to k there. A list, not a mask: cells are sparse, and
        a dense mask would cost every field solve a byte per voxel.
    uptake
        1/min.
    protease, psens
        per-voxel float32 activity map (or None) and the field's sensitivity.
    old, inv_dt
        previous solution and 1/dt for a backward-Euler step (None / 0 for steady).
    """

    labels: np.ndarray
    diffusion: np.ndarray
    decay: np.ndarray
    secretion: np.ndarray
    bkind: np.ndarray
    bvalue: np.ndarray
    cells: np.ndarray
    uptake: float = 0.0
    protease: np.ndarray | None = None
    psens: float = 0.0
    old: np.ndarray | None = None
    inv_dt: float = 0.0
    _dummy: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1), np.float32))

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(active flag per code, harmonic face table H[16 a + b], 2 D per code)."""
        d = np.asarray(self.diffusion, dtype=np.float64)
        act = (d > 0).astype(np.uint8)
        da = d[:, None]
        db = d[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where((da > 0) & (db > 0), 2.0 * da * db / (da + db), 0.0)
        return act, np.ascontiguousarray(h.ravel()), 2.0 * d

    def cell_list(self) -> np.ndarray:
        """``cells`` as a C-contiguous int64 array, checked to be sorted, unique and
        inside the lattice (the kernels find a row's cells by binary search)."""
        c = np.ascontiguousarray(self.cells)
        if c.ndim != 1 or (c.size and c.dtype.kind not in "iu"):
            raise ValueError(f"cells must be a 1D array of flat voxel indices, got "
                             f"{c.dtype} array of shape {c.shape}")
        c = c.astype(np.int64, copy=False)
        if c.size and (c[0] < 0 or c[-1] >= self.labels.size or np.any(np.diff(c) <= 0)):
            raise ValueError(f"cells must be sorted, unique flat indices in [0, "
                             f"{self.labels.size}); got values from {c.min()} to {c.max()}"
                             + ("" if np.all(np.diff(c) > 0) else ", not sorted and unique"))
        return c

    def tail(self) -> tuple:
        """Argument tail shared by the level-0 kernels."""
        act, H, D2 = self.tables()
        prot = self.protease if self.protease is not None else self._dummy
        old = self.old if self.old is not None else self._dummy
        return (
            act,
            H,
            D2,
            np.ascontiguousarray(self.decay, dtype=np.float64),
            np.ascontiguousarray(self.secretion, dtype=np.float64),
            np.ascontiguousarray(self.bkind, dtype=np.int64),
            np.ascontiguousarray(self.bvalue, dtype=np.float64),
            self.cell_list(),
            float(self.uptake),
            prot,
            self.protease is not None,
            float(self.psens),
            old,
            float(self.inv_dt),
        )


def _prolong_tables(
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


class _Level:
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
        return sum(a.nbytes for a in (self.ax, self.ay, self.az, self.kr, self.e, self.rhs))


class Multigrid:
    """Multigrid hierarchy for one field on one lattice shape.

    Parameters
    ----------
    shape
        Lattice shape (z, y, x).
    periodic
        Periodic flag per axis (z, y, x).
    value_faces
        Fixed-value flag per face (zmin, zmax, ymin, ymax, xmin, xmax).
    pre, post
        Red-black Gauss-Seidel sweeps on level 0 before and after the coarse correction.
    coarse_smooth
        Red-black Gauss-Seidel sweeps before and after the correction on every coarse
        level. The coarse levels cost 1/8, 1/64, ... of level 0 per sweep, and a third
        sweep there cut the 256^3 benchmark from 8 to 7 cycles cold and from 5 to 4 warm
        (more did not cut further; fewer than 2 raised them to 11 and 7).
    fjord_depth
        Erosion depth (voxels) that defines the fjords: permeable voxels farther than this
        from the bulk of the marrow (see :meth:`_find_fjords`) get an exact block
        Gauss-Seidel solve after every cycle. 0 disables it.
    scratch
        Pool of level-0 work arrays (correction, residual, inverse diagonal) of the
        uniform-diffusivity path, shared by the hierarchies that pass the same dict (the
        fields of one :class:`~niche3d.fields.FieldSet` are solved one after the other).
        None gives this hierarchy its own pool.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        periodic: tuple[bool, bool, bool],
        value_faces: tuple[bool, bool, bool, bool, bool, bool] = (False,) * 6,
        *,
        pre: int = 2,
        post: int = 2,
        coarse_smooth: int = 3,
        fjord_depth: int = 1,
        scratch: dict | None = None,
    ) -> None:
        if isinstance(fjord_depth, bool) or not isinstance(fjord_depth, (int, np.integer)) \
                or fjord_depth < 0:
            raise ValueError(
                f"fjord_depth must be an integer >= 0 (0 disables the fjord block solve), "
                f"got {fjord_depth!r}"
            )
        for name, v in (("pre", pre), ("post", post), ("coarse_smooth", coarse_smooth)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        self.shape = tuple(int(s) for s in shape)
        self.periodic = tuple(bool(p) for p in periodic)
        self.pre = int(pre)
        self.post = int(post)
        self.coarse_smooth = int(coarse_smooth)
        self.factors: list[tuple[int, int, int]] = []  # factor from level l to l + 1
        self.levels: list[_Level] = []  # coarse levels 1..L
        self.tables: list[tuple[np.ndarray, ...]] = []  # interpolation l+1 -> l
        s = self.shape
        while True:
            # coarsen all axes together (point smoothing fails on the anisotropic cells
            # that semi-coarsening makes); only when one axis is exhausted and the level
            # is still too big for a direct solve, coarsen the remaining axes alone
            if all(n >= 4 for n in s):
                f = (2, 2, 2)
            elif s[0] * s[1] * s[2] > _DIRECT_MAX:
                f = tuple(2 if n >= 4 else 1 for n in s)
            else:
                break
            if f == (1, 1, 1):
                break
            c = tuple((n + fa - 1) // fa for n, fa in zip(s, f, strict=True))
            tabs: tuple[np.ndarray, ...] = ()
            for a, (n, fa) in enumerate(zip(s, f, strict=True)):
                tabs += _prolong_tables(n, fa, value_faces[2 * a], value_faces[2 * a + 1])
            self.factors.append(f)  # type: ignore[arg-type]
            self.levels.append(_Level(c))  # type: ignore[arg-type]
            self.tables.append(tabs)
            s = c
        if not self.levels:
            # too small to coarsen: one level-1 copy of the lattice, solved directly
            tabs = ()
            for n in self.shape:
                tabs += _prolong_tables(n, 1)
            self.factors.append((1, 1, 1))
            self.levels.append(_Level(self.shape))  # type: ignore[arg-type]
            self.tables.append(tabs)
        self.fjord_depth = int(fjord_depth)
        self.fjords = np.zeros(0, np.int64)  # flat indices of the fjord voxels
        self._fjord_lu: tuple | None = None
        self._pocket_lu: tuple | None = None
        self._structures: dict = {}  # geometric parts of the pocket and fjord systems
        self._fjord_key: tuple | None = None
        self._build_key: tuple | None = None
        self._cells = np.zeros(0, np.int64)  # occupied voxels at the last build
        self._incremental = 0
        self._lu: tuple | None = None
        self._iso_key: tuple | None = None
        self.isolated = np.zeros(0, np.int64)  # flat indices of small closed pockets
        self.scratch: dict = {} if scratch is None else scratch
        self._L0: _Level | None = None  # level 0 with stored coefficients (general path)
        self._codes_key: tuple | None = None
        self._codes = np.zeros(0, np.int64)  # tissue codes present on the lattice
        self._counts = np.zeros(0, np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes held by the coarse levels, the pocket and fjord block solves (indices,
        matrices, right-hand sides and the L and U factors) and the copy of the cell list
        that incremental rebuilds compare against (8 B per cell)."""
        n = sum(lv.nbytes for lv in self.levels) + self.fjords.nbytes + self._cells.nbytes
        if self._L0 is not None:
            n += self._L0.nbytes
        arrays: list[np.ndarray] = []  # W and ext are shared by a structure and its solve
        for lu_entry in (self._fjord_lu, self._pocket_lu):
            if lu_entry is not None:
                lu = lu_entry[0]
                n += (lu.L.nnz + lu.U.nnz) * 12
                arrays += [lu.perm_r, lu.perm_c, *lu_entry[1:]]
        for _idx, struct in self._structures.values():
            arrays += list(struct)
        seen: set[int] = set()
        for a in arrays:
            for arr in ((a.data, a.indices, a.indptr) if scipy.sparse.issparse(a) else (a,)):
                if id(arr) not in seen:
                    seen.add(id(arr))
                    n += arr.nbytes
        return n

    # ------------------------------------------------------------------ operator
    def build(self, op: OperatorSpec) -> None:
        """(Re)build the coarse-level coefficients from the level-0 operator.

        When only the cell occupancy changed since the last build (same labels, tables,
        uptake, boundary kinds, dt, no protease map), only the reaction sums of the coarse
        cells above the changed voxels are summed again (:meth:`_update_cells`), with a
        result bit-identical to a full rebuild.
        """
        key = (
            id(op.labels), op.labels.shape, zlib.adler32(np.ascontiguousarray(op.labels)),
            np.asarray(op.diffusion, np.float64).tobytes(),
            np.asarray(op.decay, np.float64).tobytes(), float(op.uptake), float(op.psens),
            float(op.inv_dt), np.asarray(op.bkind, np.int64).tobytes(), op.protease is None,
        )
        cells = op.cell_list()
        if key == self._build_key and op.protease is None:
            self._update_cells(op, cells)
            return
        t = op.tail()
        act, H, D2, klut, _slut, bk, _bv, cells_, upt, prot, hasprot, psens, _old, inv_dt = t
        fz, fy, fx = self.factors[0]
        L1 = self.levels[0]
        K.build_from_fine(op.labels, act, H, D2, klut, bk, cells_, upt, prot, hasprot, psens,
                          inv_dt, fz, fy, fx, L1.ax, L1.ay, L1.az, L1.kr)
        if self._uniform_args(op) is None:
            # general path: level 0 with stored face coefficients (see _solve_general)
            if self._L0 is None:
                self._L0 = _Level(self.shape)
            L0 = self._L0
            K.build_from_fine(op.labels, act, H, D2, klut, bk, cells_, upt, prot, hasprot,
                              psens, inv_dt, 1, 1, 1, L0.ax, L0.ay, L0.az, L0.kr)
        else:
            self._L0 = None
        self._lu = None
        for lv in range(1, len(self.levels)):
            a = self.levels[lv - 1]
            b = self.levels[lv]
            fz, fy, fx = self.factors[lv]
            K.build_from_coarse(a.ax, a.ay, a.az, a.kr, fz, fy, fx, b.ax, b.ay, b.az, b.kr)
        self._build_key = key
        self._cells = cells.copy()  # the caller may reuse its array
        self._incremental = 0

    def forget_build(self) -> None:
        """Make the next :meth:`build` a full rebuild (no incremental update). Optional:
        the result is bit-identical to an incremental update (see :meth:`_update_cells`)."""
        self._build_key = None
        self._incremental = 0

    def _update_cells(self, op: OperatorSpec, cells: np.ndarray) -> None:
        """Recompute the reaction of the coarse cells above voxels whose occupancy changed.

        Each touched coarse cell is summed again from the level below, in the order and
        precision of the full build (:func:`~niche3d.fields._kernels.reaction_from_fine`,
        :func:`~niche3d.fields._kernels.reaction_from_coarse`), so the hierarchy after any
        sequence of incremental updates is bit-identical to a full rebuild for the same
        operator: it depends on the current cells, not on how they got there. (Adding
        ``+-uptake`` to the float32 sums, as an earlier version did, left rounding that
        depended on the history of moves, so a rebuild at a checkpoint changed results.)
        """
        changed = np.setxor1d(cells, self._cells, assume_unique=True)
        self._cells = cells.copy()
        if changed.size == 0 or op.uptake == 0.0:
            return
        act = np.asarray(op.diffusion)[op.labels.reshape(-1)[changed]] > 0
        changed = changed[act]
        if changed.size == 0:
            return
        act_t, _H, _D2 = op.tables()
        klut = np.ascontiguousarray(op.decay, dtype=np.float64)
        upt, inv_dt = float(op.uptake), float(op.inv_dt)
        nz, ny, nx = self.shape
        z, rem = np.divmod(changed, ny * nx)
        y, x = np.divmod(rem, nx)
        if self._L0 is not None:  # general path: level 0 stores the reaction per voxel
            K.reaction_from_fine(op.labels, act_t, klut, cells, upt, inv_dt, 1, 1, 1,
                                 self._L0.kr, changed)
        below: _Level | None = None
        for f, L in zip(self.factors, self.levels, strict=True):
            z, y, x = z // f[0], y // f[1], x // f[2]
            _, cy, cx = L.shape
            which = np.unique((z * cy + y) * cx + x)
            if below is None:
                K.reaction_from_fine(op.labels, act_t, klut, cells, upt, inv_dt, *f, L.kr,
                                     which)
            else:
                K.reaction_from_coarse(below.kr, *f, L.kr, which)
            below = L
        self._lu = None
        self._incremental += 1

    # ------------------------------------------------------------------ norms
    def rhs_norm(self, op: OperatorSpec) -> float:
        """||b||_2 over active voxels (sources, fixed-value terms, old / dt)."""
        t = op.tail()
        act, _H, D2, _k, slut, bk, bv, _c, _u, _p, _hp, _ps, old, inv_dt = t
        part = np.zeros(self.shape[0], np.float64)
        K.fine_rhs_norm(op.labels, act, D2, slut, bk, bv, old, inv_dt, part)
        return float(np.sqrt(_serial_sum(part)))

    def residual_norm(self, op: OperatorSpec, hi: np.ndarray, lo: np.ndarray) -> float:
        """||b - A c||_2 over active voxels for c = hi + lo."""
        part = np.zeros(self.shape[0], np.float64)
        K.fine_residual_norm(op.labels, hi, lo, *op.tail(), part)
        return float(np.sqrt(_serial_sum(part)))

    # ------------------------------------------------------------------ cycles
    def _coarse_cycle(self, lv: int) -> None:
        L = self.levels[lv]
        if L.kr.size < _SERIAL_BELOW and numba.get_num_threads() > 1:
            # small levels: thread start-up costs more than the work
            nt = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                self._coarse_cycle_body(lv, L)
            finally:
                numba.set_num_threads(nt)
            return
        self._coarse_cycle_body(lv, L)

    def _coarse_cycle_body(self, lv: int, L: _Level) -> None:
        px, py, pz = self.periodic[2], self.periodic[1], self.periodic[0]
        if lv == len(self.levels) - 1:
            if self._lu is None:
                self._lu = _factor_coarsest(L, self.periodic)
            lu, _, active = self._lu
            rhs = L.rhs.ravel().astype(np.float64)[active]
            sol = np.zeros(L.kr.size, np.float64)
            if rhs.size:
                sol[active] = lu.solve(rhs)
            L.e[...] = sol.reshape(L.shape).astype(np.float32)
            return
        self._gs(L, 0, 2 * self.coarse_smooth)
        N = self.levels[lv + 1]
        fz, fy, fx = self.factors[lv + 1]
        K.coarse_residual_restrict(L.ax, L.ay, L.az, L.kr, L.e, L.rhs, px, py, pz, fz, fy, fx,
                                   N.rhs)
        N.e[...] = 0.0
        self._coarse_cycle(lv + 1)
        K.coarse_prolong_add(L.kr, L.e, N.e, *self.tables[lv + 1])
        self._gs(L, 1, 2 * self.coarse_smooth)

    def _gs(self, L: _Level, c1: int, n: int) -> None:
        """n red-black half-sweeps on a level with stored coefficients, starting with
        colour c1; fused in wavefront passes (one read of the coefficients per pass of up
        to _GS_STAGES half-sweeps) unless z is periodic."""
        px, py, pz = self.periodic[2], self.periodic[1], self.periodic[0]
        if pz:
            for i in range(n):
                K.coarse_gs(L.ax, L.ay, L.az, L.kr, L.e, L.rhs, px, py, pz, (c1 + i) & 1)
            return
        while n > 0:
            m = min(n, _GS_STAGES)
            K.coarse_gs_stages(L.ax, L.ay, L.az, L.kr, L.e, L.rhs, px, py, c1, m, _GS_CHUNK)
            c1 = (c1 + m) & 1
            n -= m

    # ------------------------------------------------------------------ closed pockets
    def _find_isolated(self, op: OperatorSpec) -> None:
        """Find small permeable regions closed off by bone (and by no-flux faces).

        Coarse cells straddle the bone around such a pocket, so the coarse correction
        cannot represent the pocket's own smooth mode and Gauss-Seidel alone removes it
        at ~0.3 % per sweep. The pockets are decoupled from the rest, so they are solved
        exactly (sparse LU) and excluded from the coarse correction instead.
        """
        key = (id(op.labels), op.labels.shape, np.asarray(op.diffusion).tobytes())
        if key == self._iso_key:
            return
        self._iso_key = key
        self._pocket_lu = None
        active = np.asarray(op.diffusion)[op.labels] > 0
        comp, n = ndimage.label(active)
        if n <= 1:
            self.isolated = np.zeros(0, np.int64)
            return
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes <= _POCKET_MAX
        small[0] = False
        small[int(np.argmax(sizes[1:])) + 1] = False
        for axis in range(3):
            if self.periodic[axis]:  # may connect across the wrap: leave to multigrid
                small[np.unique(np.take(comp, [0, comp.shape[axis] - 1], axis=axis))] = False
        self.isolated = np.flatnonzero(small[comp].ravel()).astype(np.int64)

    def _solve_isolated(self, op: OperatorSpec) -> tuple[np.ndarray, np.ndarray]:
        """Exact solution on the closed pockets, split into float32 hi + int16 lo. Pockets touch
        no permeable voxel outside them (periodic-wrapping ones are excluded), so their
        rows of the level-0 system have no outside coupling. The factorisation is kept
        while the pockets' matrix is unchanged (it changes with cells, protease and dt
        inside them)."""
        A, b, _W, _ext = self._local_system(op, self.isolated)
        if self._pocket_lu is None or not np.array_equal(self._pocket_lu[1], A.data):
            self._pocket_lu = (scipy.sparse.linalg.splu(A), A.data)
        v = self._pocket_lu[0].solve(b)
        return K.split_values(np.atleast_1d(np.asarray(v, np.float64)))

    def _local_system(self, op: OperatorSpec, idx: np.ndarray) -> tuple:
        """Rows ``idx`` (sorted flat indices) of the level-0 system, split into the block
        ``A_II`` (csc), the right-hand side ``b_I`` and the coupling to voxels outside
        ``idx``: ``A_II c_I = b_I + W c_ext`` with ``W`` (csr, rows of idx) over the
        compact column list ``ext`` (flat indices).

        The geometric part (couplings, fixed-value faces) depends only on the labels, the
        diffusivities and the boundaries, so it is kept per ``idx`` array (pockets and
        fjords are re-found, as new arrays, when the labels change); each call adds the
        reaction (decay, cells, protease, 1/dt) to the diagonal and the sources to b. That
        rebuild was ~8 % of a 128^3 solve."""
        key = (id(idx), idx.size, id(op.labels), op.labels.shape, op.tables()[1].tobytes(),
               np.asarray(op.bkind, np.int64).tobytes(),
               np.asarray(op.bvalue, np.float64).tobytes())
        hit = self._structures.get(key)
        if hit is None or hit[0] is not idx:
            hit = (idx, self._local_structure(op, idx))
            self._structures[key] = hit
            # at most the pockets' and the fjords' structures are current
            while len(self._structures) > 2:
                self._structures.pop(next(iter(self._structures)))
        Ag, bg, W, ext, dpos = hit[1]
        react, src = _reaction_and_source(op, idx, op.labels.reshape(-1)[idx])
        data = Ag.data.copy()
        data[dpos] += react
        A = scipy.sparse.csc_matrix((data, Ag.indices, Ag.indptr), shape=Ag.shape)
        return A, bg + src, W, ext

    def _local_structure(self, op: OperatorSpec, idx: np.ndarray) -> tuple:
        """Geometric part of :meth:`_local_system`: (A_II without the reaction, b_I from
        fixed-value faces, W, ext, positions of the diagonal in ``A_II.data``)."""
        lab = op.labels
        nz, ny, nx = lab.shape
        _act, H, D2 = op.tables()
        labf = lab.reshape(-1)
        t = labf[idx].astype(np.int64)
        m = idx.size
        diag = np.zeros(m, np.float64)
        b = np.zeros(m, np.float64)
        z, rem = np.divmod(idx, ny * nx)
        y, x = np.divmod(rem, nx)
        rows, cols, vals = [np.arange(m)], [np.arange(m)], []
        erows, ecols, evals = [], [], []
        for axis, (coord, n) in enumerate(((z, nz), (y, ny), (x, nx))):
            for side, step in ((0, -1), (1, 1)):
                face = 2 * axis + side
                nc = coord + step
                inside = (nc >= 0) & (nc < n)
                if op.bkind[face] == 2:
                    nc = nc % n
                    inside = np.ones(m, bool)
                nzyx = [z, y, x]
                nzyx[axis] = np.where(inside, nc, 0)
                nb = (nzyx[0] * ny + nzyx[1]) * nx + nzyx[2]
                w = np.where(inside, H[t * 16 + labf[nb]], 0.0)
                diag = diag + w
                if op.bkind[face] == 1:
                    edge = ~inside
                    diag = diag + np.where(edge, D2[t], 0.0)
                    b = b + np.where(edge, D2[t] * op.bvalue[face], 0.0)
                mk = inside & (w > 0)
                pos = np.searchsorted(idx, nb)
                pos_c = np.minimum(pos, m - 1)
                internal = mk & (idx[pos_c] == nb)
                external = mk & ~internal
                rows.append(np.flatnonzero(internal))
                cols.append(pos_c[internal])
                vals.append(-w[internal])
                erows.append(np.flatnonzero(external))
                ecols.append(nb[external])
                evals.append(w[external])
        vals.insert(0, diag)
        A = scipy.sparse.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
        )
        er = np.concatenate(erows)
        ec = np.concatenate(ecols)
        ext, ecc = np.unique(ec, return_inverse=True)
        W = scipy.sparse.csr_matrix((np.concatenate(evals), (er, ecc)), shape=(m, ext.size))
        # positions of the diagonal in A.data (one per column: it is stored explicitly)
        A.sort_indices()
        colof = np.repeat(np.arange(m), np.diff(A.indptr))
        dpos = np.flatnonzero(A.indices == colof)
        assert dpos.size == m
        return A, b, W, ext.astype(np.int64), dpos

    def _find_fjords(self, op: OperatorSpec) -> None:
        """Marrow the coarse levels cannot represent: permeable voxels farther than
        ``fjord_depth`` voxels from the bulk of the marrow (the largest component of the
        permeable mask eroded ``fjord_depth`` times, dilated back), in connected pieces of
        at most ``_FJORD_MAX`` voxels; closed pockets excluded."""
        self.fjords = np.zeros(0, np.int64)
        self._fjord_lu = None
        dep = self.fjord_depth
        if dep <= 0:
            return
        active = np.asarray(op.diffusion)[op.labels] > 0
        # outside the lattice counts as permeable: a domain face is no neck
        er = ndimage.binary_erosion(active, iterations=dep, border_value=1)
        comp, n = ndimage.label(er)
        if n == 0:
            return
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        sizes[0] = 0
        core = ndimage.binary_dilation(comp == int(np.argmax(sizes)), iterations=dep) & active
        F = active & ~core
        del core, er, comp
        if self.isolated.size:
            F.reshape(-1)[self.isolated] = False
        c2, n2 = ndimage.label(F)
        if n2 == 0:
            return
        s2 = np.bincount(c2.ravel(), minlength=n2 + 1)
        keep = s2 <= _FJORD_MAX
        keep[0] = False
        self.fjords = np.flatnonzero(keep[c2].ravel()).astype(np.int64)

    def _fjord_correct(self, e: np.ndarray, r: np.ndarray) -> None:
        """Exact fjord block of the correction system ``A e = r`` given e around it (the
        same step as :meth:`_fjord_solve`, applied to a correction)."""
        if self._fjord_lu is None:
            return
        lu, _b, W, ext, _ = self._fjord_lu
        ef = e.reshape(-1)
        rhs = r.reshape(-1)[self.fjords].astype(np.float64) + W @ ef[ext].astype(np.float64)
        ef[self.fjords] = lu.solve(rhs).astype(np.float32)

    def _fjord_solve(self, hi: np.ndarray, lo: np.ndarray) -> None:
        """Block Gauss-Seidel step on the fjords: exact solve given the values around."""
        if self._fjord_lu is None:
            return
        lu, b, W, ext, _ = self._fjord_lu
        hf = hi.reshape(-1)
        lf = lo.reshape(-1)
        xe = K.solution(hf[ext], lf[ext])
        hf[self.fjords], lf[self.fjords] = K.split_values(lu.solve(b + W @ xe))

    # ------------------------------------------------------------------ solve
    def _present_codes(self, op: OperatorSpec) -> tuple[np.ndarray, np.ndarray]:
        """Tissue codes on the lattice and their voxel counts (cached per label array)."""
        key = (id(op.labels), op.labels.shape, zlib.adler32(np.ascontiguousarray(op.labels)))
        if key != self._codes_key:
            cnt = np.bincount(op.labels.reshape(-1), minlength=256)
            self._codes = np.flatnonzero(cnt)
            self._counts = cnt[self._codes]
            self._codes_key = key
        return self._codes, self._counts

    def _uniform_args(self, op: OperatorSpec) -> tuple | None:
        """Arguments of the vectorised kernels (:mod:`niche3d.fields._fast`), or None when
        the operator needs per-face coefficients (permeable tissues with different
        diffusivities, or more than one impermeable tissue on the lattice)."""
        codes, counts = self._present_codes(op)
        d = np.asarray(op.diffusion, np.float64)[codes]
        act = d > 0
        if not act.any() or np.unique(d[act]).size != 1 or (~act).sum() > 1:
            return None
        D = float(d[act][0])
        inact = int(codes[~act][0]) if (~act).any() else 255
        t = op.tail()
        _a, _H, _D2, klut, slut, bk, bv, cells, upt, prot, hasprot, psens, old, inv_dt = t
        ac, an = codes[act], counts[act]
        kv = klut[ac]
        k0 = float(kv[int(np.argmax(an))])  # the decay of most permeable voxels
        dev = kv != k0
        kcode, kval = ac[dev].astype(np.uint8), (kv[dev] - k0).astype(np.float64)
        sv = slut[ac]
        src = sv != 0.0
        scode, sval = ac[src].astype(np.uint8), sv[src].astype(np.float64)
        return (cells, upt, prot, hasprot, psens, old, inv_dt, scode, sval, k0, kcode, kval, D,
                np.uint8(inact), bk, bv)

    def _pool(self, name: str, dtype: type = np.float32) -> np.ndarray:
        """A level-0 work array from the (shared) pool."""
        key = (name, self.shape, np.dtype(dtype).str)
        if key not in self.scratch:
            self.scratch[key] = (np.zeros(self.shape, dtype),)
        return self.scratch[key][0]

    def _work(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Level-0 float32 correction, residual, inverse diagonal and the int16 Krylov
        direction (fixed point, see :func:`niche3d.fields._fast.update`)."""
        return self._pool("e"), self._pool("r"), self._pool("invd"), self._pool("p", np.int16)

    @property
    def scratch_nbytes(self) -> int:
        """Bytes of the level-0 work arrays in this hierarchy's pool (0 until first used;
        shared with every hierarchy that was given the same pool)."""
        return sum(a.nbytes for v in self.scratch.values() for a in v)

    def _find_blocks(self, op: OperatorSpec) -> None:
        """Find closed pockets and fjords (cached per label array). Their search allocates
        ~10 B/voxel of temporaries, so it runs before the level-0 work arrays exist."""
        self._find_isolated(op)
        fkey = (self._iso_key, self.fjord_depth)
        if fkey != self._fjord_key:
            self._fjord_key = fkey
            self._find_fjords(op)

    def _solve_pockets(self, op: OperatorSpec, hi: np.ndarray, lo: np.ndarray) -> None:
        """Write the exact solution on the closed pockets into hi + lo. It runs before a
        solve's first residual, so that residual already has the pockets solved (one
        residual pass per solve fewer than solving them after it)."""
        iso = self.isolated
        if iso.size:
            hi.reshape(-1)[iso], lo.reshape(-1)[iso] = self._solve_isolated(op)

    def _prepare_fjords(self, op: OperatorSpec) -> None:
        """Factorise the fjord block (or keep the factors) and set its right-hand side."""
        if self.fjords.size:
            # the block changes only with the reaction inside the fjords (cells, protease,
            # dt); the right-hand side with every solve (sources, c_old / dt)
            A, b, W, ext = self._local_system(op, self.fjords)
            if self._fjord_lu is None or not np.array_equal(self._fjord_lu[4], A.data):
                self._fjord_lu = (scipy.sparse.linalg.splu(A), b, W, ext, A.data)
            else:
                self._fjord_lu = (self._fjord_lu[0], b, W, ext, A.data)

    def solve(
        self,
        op: OperatorSpec,
        hi: np.ndarray,
        lo: np.ndarray,
        *,
        tol: float,
        max_cycles: int,
        bnorm: float | None = None,
        rebuild: bool = True,
    ) -> tuple[int, float, float]:
        """V-cycles on ``hi + lo`` (in place) until ||r|| <= tol ||b||.

        Operators with one diffusivity over the permeable tissues (the default) take the
        vectorised defect-correction path (:meth:`_solve_uniform`); others the general
        table-driven path (:meth:`_solve_general`). Both solve the same system.

        ``hi`` (float32) and ``lo`` (int16) hold the solution ``hi + lo * |hi| * 2**-39``
        (:func:`niche3d.fields._kernels.split_values` makes such a pair from float64).

        A solve also ends when ``_STALL_CYCLES`` cycles in a row bring no new lowest
        residual: the tolerance is then below what the stored solution can resolve.

        Returns
        -------
        cycles, initial relative residual (after the exact solve of the closed pockets,
        which comes first), final relative residual
        """
        for name, arr, dt in (("hi", hi, np.float32), ("lo", lo, np.int16)):
            if not isinstance(arr, np.ndarray) or arr.dtype != dt or arr.shape != self.shape \
                    or not arr.flags.c_contiguous:
                got = (f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray)
                       else type(arr).__name__)
                raise ValueError(f"solve: {name} must be a C-contiguous {np.dtype(dt).name} "
                                 f"array of shape {self.shape}, got {got}")
        if rebuild:
            self.build(op)
        args = self._uniform_args(op)
        if args is not None:
            return self._solve_uniform(op, args, hi, lo, tol, max_cycles, bnorm)
        if bnorm is None:
            bnorm = self.rhs_norm(op)
        if bnorm == 0.0:
            hi[...] = 0.0
            lo[...] = 0.0
            return 0, 0.0, 0.0
        return self._solve_general(op, hi, lo, tol, max_cycles, bnorm)

    def _solve_uniform(self, op: OperatorSpec, args: tuple, hi: np.ndarray, lo: np.ndarray,
                       tol: float, max_cycles: int,
                       bnorm: float | None) -> tuple[int, float, float]:
        """Defect correction: float64 residual of hi + lo, float32 V-cycle for the
        correction, update of hi + lo in float64 (see :mod:`niche3d.fields._fast`)."""
        lab = op.labels
        self._find_blocks(op)
        self._solve_pockets(op, hi, lo)
        e, r, invd, p = self._work()
        part = np.zeros((self.shape[0], 2), np.float64)
        F.residual(lab, hi, lo, *args, r, part, invd, True)
        iso = self.isolated
        # the pockets hold their exact solution: a zero residual there keeps the
        # correction at exactly 0 on them through every smoothing (they are decoupled)
        r.reshape(-1)[iso] = 0.0
        if bnorm is None:
            bnorm = float(np.sqrt(_serial_sum(part[:, 1])))
        if bnorm == 0.0:
            hi[...] = 0.0
            lo[...] = 0.0
            return 0, 0.0, 0.0
        r0 = float(np.sqrt(_serial_sum(part[:, 0]))) / bnorm
        if r0 <= tol:
            return 0, r0, r0
        self._prepare_fjords(op)
        rel = r0
        D = args[12]
        px, py, pz = self.periodic[2], self.periodic[1], self.periodic[0]
        L1 = self.levels[0]
        fz, fy, fx = self.factors[0]

        dots = np.zeros((self.shape[0], 5), np.float64)

        def smooth(c1: int, n: int, first: bool, want_dots: bool = False) -> None:
            """n red-black half-sweeps starting with colour c1, fused unless z is periodic;
            with ``want_dots`` then the Krylov inner products of e into ``dots``, fused
            into the last pass when it has a stage to spare."""
            if not pz:
                while n > 0:
                    m = min(n, F.MAX_STAGES - F.MAX_STAGES % 2)  # keep the colour order
                    fuse = want_dots and m == n and m < F.MAX_STAGES
                    F.smooth_stages(e, r, invd, D, px, py, c1, m, first, p, dots, fuse)
                    want_dots = want_dots and not fuse
                    n -= m
                    first = False
            else:
                for i in range(n):
                    F.smooth(e, r, invd, D, px, py, pz, (c1 + i) & 1, first and i == 0)
            if want_dots:
                F.krylov_dots(e, r, invd, p, D, px, py, pz, dots)

        kry = _Krylov()
        cycles = 0
        stall = _Stall(rel)
        while rel > tol and cycles < max_cycles and not stall.stuck:
            cycles += 1
            # preconditioner: V-cycle for A e = r with an exact block step on the pockets
            # and fjords between the coarse correction and the post-smoothing
            if self.pre > 0:
                smooth(0, 2 * self.pre, True)
            else:
                e[...] = 0.0
            F.residual_restrict(e, r, invd, D, px, py, pz, fz, fy, fx, L1.rhs)
            L1.e[...] = 0.0
            self._coarse_cycle(0)
            F.prolong_add(e, invd, L1.e, *self.tables[0])
            if iso.size:  # closed pockets already hold their exact solution
                e.reshape(-1)[iso] = 0.0
            self._fjord_correct(e, r)
            # post-smoothing, then the flexible conjugate gradient step: p = e + beta p_old,
            # A-orthogonal to p_old; alpha minimises the A-norm of the error along p
            smooth(1, 2 * self.post, False, want_dots=True)
            F.update(hi, lo, e, p, *kry.step(dots))
            F.residual(lab, hi, lo, *args, r, part, invd, False)
            r.reshape(-1)[iso] = 0.0
            rel = float(np.sqrt(_serial_sum(part[:, 0]))) / bnorm
            stall.add(rel)
        return cycles, r0, rel

    def _solve_general(self, op: OperatorSpec, hi: np.ndarray, lo: np.ndarray, tol: float,
                       max_cycles: int, bnorm: float) -> tuple[int, float, float]:
        """Per-tissue diffusivities: the same defect correction and flexible-CG step as
        :meth:`_solve_uniform`, with level 0 held like a coarse level (stored float32
        face coefficients and reaction, 24 B/voxel), so its smoother, restriction and
        prolongation are the vectorised coarse-level kernels."""
        if self._L0 is None:  # built for a uniform operator before: build for this one
            self.forget_build()
            self.build(op)
        L0 = self._L0
        assert L0 is not None
        t = op.tail()
        lab = op.labels
        self._find_blocks(op)
        p = self._pool("p", np.int16)
        part = np.zeros(self.shape[0], np.float64)

        def residual() -> float:
            # b - A (hi + lo) in float64 into L0.rhs (factors 1: the "restriction" is a copy)
            K.fine_residual_restrict(lab, hi, lo, *t, 1, 1, 1, L0.rhs, part)
            L0.rhs.reshape(-1)[self.isolated] = 0.0  # as in _solve_uniform
            return float(np.sqrt(_serial_sum(part))) / bnorm

        self._solve_pockets(op, hi, lo)
        r0 = residual()
        if r0 <= tol:
            return 0, r0, r0
        self._prepare_fjords(op)
        iso = self.isolated
        rel = r0
        px, py, pz = self.periodic[2], self.periodic[1], self.periodic[0]
        L1 = self.levels[0]
        fz, fy, fx = self.factors[0]
        dots = np.zeros((self.shape[0], 5), np.float64)
        kry = _Krylov()
        cycles = 0
        stall = _Stall(rel)
        while rel > tol and cycles < max_cycles and not stall.stuck:
            cycles += 1
            L0.e[...] = 0.0
            self._gs(L0, 0, 2 * self.pre)
            K.coarse_residual_restrict(L0.ax, L0.ay, L0.az, L0.kr, L0.e, L0.rhs, px, py, pz,
                                       fz, fy, fx, L1.rhs)
            L1.e[...] = 0.0
            self._coarse_cycle(0)
            K.coarse_prolong_add(L0.kr, L0.e, L1.e, *self.tables[0])
            if iso.size:  # closed pockets already hold their exact solution
                L0.e.reshape(-1)[iso] = 0.0
            self._fjord_correct(L0.e, L0.rhs)
            self._gs(L0, 1, 2 * self.post)
            K.coarse_krylov_dots(L0.ax, L0.ay, L0.az, L0.kr, L0.e, L0.rhs, p, px, py, pz,
                                 dots)
            F.update(hi, lo, L0.e, p, *kry.step(dots))
            rel = residual()
            stall.add(rel)
        return cycles, r0, rel


class _Stall:
    """Stops a solve whose residual has not reached a new low for ``_STALL_CYCLES``
    cycles: it is at the resolution of the stored solution (``hi + lo`` resolves 2**-39
    of a value; the residual this leaves depends on the conditioning, ~1e-12 to 1e-9
    relative), and more cycles only repeat the rounding."""

    def __init__(self, rel: float) -> None:
        self.best = rel
        self.since = 0

    def add(self, rel: float) -> None:
        if rel < self.best:
            self.best = rel
            self.since = 0
        else:
            self.since += 1

    @property
    def stuck(self) -> bool:
        return self.since >= _STALL_CYCLES


class _Krylov:
    """State of the flexible-CG step of one solve: p.Ap of the current direction and the
    scale of its int16 storage (``p = q * scale``)."""

    def __init__(self) -> None:
        self.pAp = 0.0  # 0: no direction yet (the stored one is from anything earlier)
        self.scale = 0.0

    def step(self, dots: np.ndarray) -> tuple[float, float, float, float]:
        """(beta, alpha, scale of the old direction, scale of the new one) for
        :func:`niche3d.fields._fast.update`, from the per-plane sums (z.Az, q.Az, r.z, r.q,
        max |z|) of the new preconditioned correction z and the stored direction q."""
        zAz, qAz, rz, rq = (_serial_sum(dots[:, k]) for k in range(4))
        zmax = float(dots[:, 4].max()) if dots.shape[0] else 0.0
        old = self.scale
        beta, alpha, self.pAp = _krylov_step(zAz, qAz * old, rz, rq * old, self.pAp)
        # |z + beta p| <= max|z| + |beta| P_MAX old; the margin covers float32 rounding
        self.scale = (zmax / F.P_MAX + abs(beta) * old) * (1.0 + 1e-5)
        return beta, alpha, old, self.scale


def _krylov_step(zAz: float, pAz: float, rz: float, rp: float,
                 pAp: float) -> tuple[float, float, float]:
    """Flexible-CG coefficients from the inner products (z.Az, p.Az, r.z, r.p) of the new
    preconditioned correction z and the previous direction p (``pAp`` = its p.Ap, 0 when
    there is none): ``beta`` makes ``z + beta p`` A-orthogonal to p, ``alpha`` minimises
    the error's energy norm along it. Returns (beta, alpha, p.Ap of the new direction)."""
    beta = 0.0
    pAp_new = zAz
    if pAp > 0.0:  # a previous direction of this solve (else p holds anything: ignore it)
        b = -pAz / pAp
        pa = zAz + 2.0 * b * pAz + b * b * pAp
        if pa > 0.0 and np.isfinite(pa):
            beta, pAp_new = b, pa
    rp_new = rz + beta * rp if beta != 0.0 else rz
    alpha = rp_new / pAp_new if pAp_new > 0.0 and np.isfinite(pAp_new) else 1.0
    return beta, alpha, pAp_new


def _serial_sum(part: np.ndarray) -> float:
    """Sum in a fixed order (independent of thread count)."""
    s = 0.0
    for v in part.tolist():
        s += v
    return s


def _factor_coarsest(L: _Level, periodic: tuple[bool, bool, bool]) -> tuple:
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


def _reaction_and_source(
    op: OperatorSpec, idx: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 reaction diagonal (decay + uptake + 1/dt + protease) and right-hand side
    (secretion + old/dt) at the flat voxels ``idx`` whose tissue codes are ``codes``."""
    cells = op.cell_list()
    if cells.size:
        pos = np.minimum(np.searchsorted(cells, idx), cells.size - 1)
        occupied = cells[pos] == idx  # both sorted: no hashing (np.isin) needed
    else:
        occupied = np.zeros(idx.size, bool)
    diag = np.asarray(op.decay, np.float64)[codes] + op.uptake * occupied
    diag = diag + op.inv_dt
    if op.protease is not None:
        diag = diag + op.psens * op.protease.reshape(-1)[idx].astype(np.float64)
    b = np.asarray(op.secretion, np.float64)[codes]
    if op.old is not None and op.inv_dt > 0:
        b = b + op.inv_dt * op.old.reshape(-1)[idx].astype(np.float64)
    return diag, b
