"""Geometric multigrid for ``-div(D grad c) + k c = S`` on the tissue lattice.

The solution of a field is a float32 ``hi`` (the field the simulation reads) and an int16
``lo`` that extends its mantissa by 15 bits (value ``hi + lo * |hi| * 2**-39``, see
:mod:`niche3d.fields._solution_storage`). Each solve is a defect correction accelerated
by flexible conjugate gradients: the float64 residual of ``hi + lo``, one float32 V-cycle
for the correction (red-black Gauss-Seidel: ``pre`` / ``post`` = 2 sweeps on level 0,
``coarse_smooth`` = 3 on the coarse levels, fused in wavefront passes), a Krylov step, an
update of ``hi + lo`` computed in float64. One driver (:meth:`Multigrid.solve`) runs that
loop over either form of level 0 (:mod:`niche3d.fields._fine_level`: matrix-free for one
diffusivity, stored for per-tissue diffusivities), the coarse levels
(:mod:`niche3d.fields._coarse`) and the exact block solves of closed pockets and fjords
(:mod:`niche3d.fields._blocks`).

A hierarchy is given the static operator (labels, diffusivities, boundaries:
:class:`~niche3d.fields.operator.StaticOperator`) once, :meth:`Multigrid.from_static`, and
derives its geometry (closed pockets, fjords) from it at the first solve or build; the
label volume is never hashed. A solve then brings only what may change
(:class:`~niche3d.fields.operator.DynamicOperator`: cells, reaction, sources, protease,
dt). The coarse operators are a function of the current operator only: after cells move,
the touched coarse cells are summed again in the order and precision of a full build,
so an incremental update is bit-identical to a full rebuild.
"""

from __future__ import annotations

import numpy as np

from niche3d.fields import _level_kernels as LK
from niche3d.fields import _table_kernels as TK
from niche3d.fields import _uniform_kernels as UK
from niche3d.fields._blocks import BlockSolves
from niche3d.fields._coarse import CoarseLevels, Level
from niche3d.fields._fine_level import MatrixFreeLevel0, StoredLevel0, serial_sum
from niche3d.fields._skip import abs_max
from niche3d.fields.operator import DynamicOperator, OperatorSpec, StaticOperator, UniformArgs

__all__ = ["DynamicOperator", "Multigrid", "OperatorSpec", "StaticOperator"]

_STALL_CYCLES = 5  # cycles without a new lowest residual that end a solve (see _Stall)


class Multigrid:
    """Multigrid hierarchy for one field on one lattice shape.

    Make one with :meth:`from_static` (the static operator given once, the usual way) or
    with the lattice shape and boundary flags and give it the static operator with
    :meth:`set_operator`. Its :meth:`solve`, :meth:`build`, :meth:`rhs_norm` and
    :meth:`residual_norm` take a :class:`~niche3d.fields.operator.DynamicOperator`.

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
        from the bulk of the marrow (see :mod:`niche3d.fields._blocks`) get an exact block
        Gauss-Seidel solve after every cycle. 0 disables it.
    scratch
        Pool of level-0 work arrays (correction, residual, inverse diagonal) of the
        uniform-diffusivity path, shared by the hierarchies that pass the same dict (the
        fields of one :class:`~niche3d.fields.FieldSet` are solved one after the other).
        None gives this hierarchy its own pool.

    Notes
    -----
    For scripted use the per-solve methods also take a whole
    :class:`~niche3d.fields.operator.OperatorSpec`: its static part is derived at the
    first and kept while later ones have the same label array (identity, never hashed)
    and equal tables; another label array binds a new static operator. Labels changed in
    place are not noticed (:class:`~niche3d.tissue.Lattice` labels are read-only): a new
    tissue is a new array and a new :class:`~niche3d.fields.operator.StaticOperator`.
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
        self.residual_max = float("nan")  # largest |r| after the last solve (field unit/min)
        self.change_bound = float("nan")  # >= max|change| the last solve made (field units)
        self.periodic = tuple(bool(p) for p in periodic)
        self.pre = int(pre)
        self.post = int(post)
        self.coarse_smooth = int(coarse_smooth)
        self.fjord_depth = int(fjord_depth)
        self.coarse = CoarseLevels(self.shape, self.periodic,  # type: ignore[arg-type]
                                   tuple(value_faces), self.coarse_smooth)
        self.blocks = BlockSolves(self.periodic, self.fjord_depth)  # type: ignore[arg-type]
        self.scratch: dict = {} if scratch is None else scratch
        self._static: StaticOperator | None = None
        self._found = False  # pockets and fjords of _static searched
        self._build_key: tuple | None = None
        self._cells = np.zeros(0, np.int64)  # occupied voxels at the last build
        self._incremental = 0  # incremental updates since the last full build
        self._L0: Level | None = None  # level 0 with stored coefficients (general path)

    @classmethod
    def from_static(
        cls,
        static: StaticOperator,
        *,
        pre: int = 2,
        post: int = 2,
        coarse_smooth: int = 3,
        fjord_depth: int = 1,
        scratch: dict | None = None,
    ) -> Multigrid:
        """The hierarchy of ``static`` (shape, periodic axes and fixed-value faces from
        it); the keyword arguments are those of the constructor."""
        if not isinstance(static, StaticOperator):
            raise TypeError(f"static must be a StaticOperator, got {type(static).__name__}")
        mg = cls(static.shape, static.periodic, static.value_faces, pre=pre, post=post,
                 coarse_smooth=coarse_smooth, fjord_depth=fjord_depth, scratch=scratch)
        mg.set_operator(static)
        return mg

    @property
    def static(self) -> StaticOperator | None:
        """The static operator this hierarchy solves with (None until one is given)."""
        return self._static

    def set_operator(self, static: StaticOperator) -> None:
        """Give the hierarchy its static operator (labels, diffusivities, boundaries).

        The same object again changes nothing; another one makes the hierarchy start
        afresh (its pockets and fjords are searched at the next build or solve, and that
        build is a full one)."""
        if static is self._static:
            return
        if not isinstance(static, StaticOperator):
            raise TypeError(f"static must be a StaticOperator, got {type(static).__name__}")
        if static.shape != self.shape:
            raise ValueError(f"operator labels have shape {static.shape}, the hierarchy "
                             f"was made for {self.shape}")
        if static.periodic != self.periodic:
            raise ValueError(f"operator has periodic axes {static.periodic} (z, y, x), the "
                             f"hierarchy was made for {self.periodic}")
        self._static = static
        self._found = False
        self._L0 = None
        self.forget_build()

    # ------------------------------------------------------------------ structure
    @property
    def levels(self) -> list[Level]:
        """Coarse levels 1..L."""
        return self.coarse.levels

    @property
    def factors(self) -> list[tuple[int, int, int]]:
        """Coarsening factor from level l to l + 1."""
        return self.coarse.factors

    @property
    def tables(self) -> list[tuple[np.ndarray, ...]]:
        """Prolongation tables from level l + 1 to level l."""
        return self.coarse.tables

    @property
    def fjords(self) -> np.ndarray:
        """Flat indices of the fjord voxels (found at the first solve)."""
        return self.blocks.fjords

    @property
    def isolated(self) -> np.ndarray:
        """Flat indices of the closed pockets (found at the first solve)."""
        return self.blocks.pockets

    @property
    def nbytes(self) -> int:
        """Bytes held by the coarse levels (and a stored level 0), the pocket and fjord
        block solves (indices, matrices, right-hand sides and the L and U factors) and the
        copy of the cell list that incremental rebuilds compare against (8 B per cell)."""
        n = self.coarse.nbytes + self.blocks.nbytes + self._cells.nbytes
        if self._L0 is not None:
            n += self._L0.nbytes
        return n

    @property
    def scratch_nbytes(self) -> int:
        """Bytes of the level-0 work arrays in this hierarchy's pool (0 until first used;
        shared with every hierarchy that was given the same pool)."""
        return sum(a.nbytes for v in self.scratch.values() for a in v)

    def _parts(self, op: DynamicOperator | OperatorSpec,
               bind: bool = True) -> tuple[StaticOperator, DynamicOperator]:
        """(static operator, dynamic part) of a solve. A DynamicOperator is solved with
        the bound static operator; an OperatorSpec brings its own, which is bound (kept
        when it matches the bound one) unless ``bind`` is False (the norms: they leave
        the hierarchy as it is)."""
        if isinstance(op, DynamicOperator):
            if self._static is None:
                raise ValueError("no static operator: make the hierarchy with "
                                 "Multigrid.from_static or call set_operator first")
            st = self._static
            dyn = op
        elif isinstance(op, OperatorSpec):
            st = self._static
            if st is None or not st.matches(op):
                if op.labels.shape != self.shape:
                    raise ValueError(f"operator labels have shape {op.labels.shape}, the "
                                     f"hierarchy was made for {self.shape}")
                st = op.static()
                if bind:
                    self.set_operator(st)
            dyn = op.dynamic()
        else:
            raise TypeError(f"operator must be a DynamicOperator (or an OperatorSpec), "
                            f"got {type(op).__name__}")
        if bind and not self._found:
            # the search allocates ~10 B/voxel of temporaries: before the work arrays
            self.blocks.find(st)
            self._found = True
        return st, dyn

    def _uniform_args(self, op: DynamicOperator | OperatorSpec) -> UniformArgs | None:
        """Arguments of the vectorised kernels (:mod:`niche3d.fields._uniform_kernels`),
        or None when the operator needs per-face coefficients (permeable tissues with
        different diffusivities, or more than one impermeable tissue on the lattice)."""
        st, dyn = self._parts(op)
        return st.uniform_args(dyn)

    # ------------------------------------------------------------------ operator
    def build(self, op: DynamicOperator | OperatorSpec) -> None:
        """(Re)build the coarse-level coefficients from the level-0 operator.

        When only the cell occupancy changed since the last build (same static part,
        decay, uptake, dt, no protease map), only the reaction of the coarse cells above
        the changed voxels is summed again (:meth:`_update_cells`), with a result
        bit-identical to a full rebuild.
        """
        st, dyn = self._parts(op)
        key = (np.asarray(dyn.decay, np.float64).tobytes(), float(dyn.uptake),
               float(dyn.psens), float(dyn.inv_dt), dyn.protease is None)
        t = dyn.table_args(st)
        cells = t.cells
        if key == self._build_key and dyn.protease is None:
            self._update_cells(dyn, st, cells)
            return
        fz, fy, fx = self.factors[0]
        L1 = self.levels[0]
        TK.build_from_fine(st.labels, t.act, t.H, t.D2, t.klut, t.bk, t.cells, t.uptake,
                           t.prot, t.hasprot, t.psens, t.inv_dt, fz, fy, fx,
                           L1.ax, L1.ay, L1.az, L1.kr)
        if st.D is None:
            # general path: level 0 with stored face coefficients (see StoredLevel0)
            if self._L0 is None:
                self._L0 = Level(self.shape)  # type: ignore[arg-type]
            L0 = self._L0
            TK.build_from_fine(st.labels, t.act, t.H, t.D2, t.klut, t.bk, t.cells, t.uptake,
                               t.prot, t.hasprot, t.psens, t.inv_dt, 1, 1, 1,
                               L0.ax, L0.ay, L0.az, L0.kr)
        else:
            self._L0 = None
        self.coarse.build_above_first()
        self._build_key = key
        self._cells = cells.copy()  # the caller may reuse its array
        self._incremental = 0

    def forget_build(self) -> None:
        """Make the next :meth:`build` a full rebuild (no incremental update). Optional:
        the result is bit-identical to an incremental update (see :meth:`_update_cells`)."""
        self._build_key = None
        self._incremental = 0

    def _update_cells(self, dyn: DynamicOperator, st: StaticOperator,
                      cells: np.ndarray) -> None:
        """Recompute the reaction of the coarse cells above voxels whose occupancy changed.

        Each touched coarse cell is summed again from the level below, in the order and
        precision of the full build (:func:`~niche3d.fields._table_kernels.reaction_from_fine`,
        :func:`~niche3d.fields._level_kernels.reaction_from_coarse`), so the hierarchy after
        any sequence of incremental updates is bit-identical to a full rebuild for the
        same operator: it depends on the current cells, not on how they got there.
        (Adding ``+-uptake`` to the float32 sums, as an earlier version did, left rounding
        that depended on the history of moves, so a rebuild at a checkpoint changed
        results.)
        """
        changed = np.setxor1d(cells, self._cells, assume_unique=True)
        self._cells = cells.copy()
        if changed.size == 0 or dyn.uptake == 0.0:
            return
        changed = changed[st.act[st.labels.reshape(-1)[changed]] > 0]
        if changed.size == 0:
            return
        klut = np.ascontiguousarray(dyn.decay, dtype=np.float64)
        upt, inv_dt = float(dyn.uptake), float(dyn.inv_dt)
        nz, ny, nx = self.shape
        z, rem = np.divmod(changed, ny * nx)
        y, x = np.divmod(rem, nx)
        if self._L0 is not None:  # general path: level 0 stores the reaction per voxel
            TK.reaction_from_fine(st.labels, st.act, klut, cells, upt, inv_dt, 1, 1, 1,
                                  self._L0.kr, changed)
        below: Level | None = None
        for f, L in zip(self.factors, self.levels, strict=True):
            z, y, x = z // f[0], y // f[1], x // f[2]
            _, cy, cx = L.shape
            which = np.unique((z * cy + y) * cx + x)
            if below is None:
                TK.reaction_from_fine(st.labels, st.act, klut, cells, upt, inv_dt, *f, L.kr,
                                      which)
            else:
                LK.reaction_from_coarse(below.kr, *f, L.kr, which)
            below = L
        self.coarse.lu = None
        self._incremental += 1

    # ------------------------------------------------------------------ norms
    def rhs_norm(self, op: DynamicOperator | OperatorSpec) -> float:
        """||b||_2 over active voxels (sources, fixed-value terms, old / dt)."""
        st, dyn = self._parts(op, bind=False)
        t = dyn.table_args(st)
        part = np.zeros(self.shape[0], np.float64)
        TK.fine_rhs_norm(st.labels, t.act, t.D2, t.slut, t.bk, t.bv, t.old, t.inv_dt, part)
        return float(np.sqrt(serial_sum(part)))

    def residual_norm(self, op: DynamicOperator | OperatorSpec, hi: np.ndarray,
                      lo: np.ndarray) -> float:
        """||b - A c||_2 over active voxels for c = hi + lo."""
        st, dyn = self._parts(op, bind=False)
        part = np.zeros(self.shape[0], np.float64)
        TK.fine_residual_norm(st.labels, hi, lo, *dyn.table_args(st), part)
        return float(np.sqrt(serial_sum(part)))

    # ------------------------------------------------------------------ solve
    def _pool(self, name: str, dtype: type = np.float32) -> np.ndarray:
        """A level-0 work array from the (shared) pool."""
        key = (name, self.shape, np.dtype(dtype).str)
        if key not in self.scratch:
            self.scratch[key] = (np.zeros(self.shape, dtype),)
        return self.scratch[key][0]

    def _work(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Level-0 float32 correction, residual, inverse diagonal and the int16 Krylov
        direction (fixed point, see :func:`niche3d.fields._uniform_kernels.update`)."""
        return self._pool("e"), self._pool("r"), self._pool("invd"), self._pool("p", np.int16)

    def solve(
        self,
        op: DynamicOperator | OperatorSpec,
        hi: np.ndarray,
        lo: np.ndarray,
        *,
        tol: float,
        max_cycles: int,
        bnorm: float | None = None,
        rebuild: bool = True,
    ) -> tuple[int, float, float]:
        """V-cycles on ``hi + lo`` (in place) until ||r|| <= tol ||b||.

        ``op`` is what changed since the last solve (cells, reaction, sources, protease,
        dt) on the bound static operator, or a whole OperatorSpec (see the class notes).

        Operators with one diffusivity over the permeable tissues (the default) keep
        level 0 matrix-free, others store it (:mod:`niche3d.fields._fine_level`); one loop
        drives both, and both solve the same system.

        ``hi`` (float32) and ``lo`` (int16) hold the solution ``hi + lo * |hi| * 2**-39``
        (:func:`niche3d.fields._solution_storage.split_values` makes such a pair from
        float64).

        A solve also ends when ``_STALL_CYCLES`` cycles in a row bring no new lowest
        residual: the tolerance is then below what the stored solution can resolve.

        Returns
        -------
        cycles, initial relative residual (after the exact solve of the closed pockets,
        which comes first), final relative residual; the largest absolute residual left
        (field unit/min, from the stored float32 residual) is kept in ``residual_max``,
        and an upper bound of the largest change the solve made in ``change_bound``.
        """
        for name, arr, dt in (("hi", hi, np.float32), ("lo", lo, np.int16)):
            if not isinstance(arr, np.ndarray) or arr.dtype != dt or arr.shape != self.shape \
                    or not arr.flags.c_contiguous:
                got = (f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray)
                       else type(arr).__name__)
                raise ValueError(f"solve: {name} must be a C-contiguous {np.dtype(dt).name} "
                                 f"array of shape {self.shape}, got {got}")
        st, dyn = self._parts(op)
        if rebuild or (st.D is None and self._L0 is None):
            self.build(dyn)
        pockets = self.blocks.pockets
        fine: MatrixFreeLevel0 | StoredLevel0
        args = st.uniform_args(dyn)
        if args is not None:
            fine = MatrixFreeLevel0(st.labels, args, hi, lo, self._work(), pockets,
                                    self.periodic, self.factors[0])  # type: ignore[arg-type]
        else:
            assert self._L0 is not None
            fine = StoredLevel0(st.labels, dyn.table_args(st), hi, lo, self._L0,
                                self._pool("p", np.int16), pockets, self.coarse, None)
        # a bound of how far the solve moves the solution (max-norm), for the skip
        # estimate (niche3d.fields._skip): the pockets' exact solve, then every
        # Krylov step (|alpha p| <= |alpha| P_MAX scale; pockets take no step)
        before = hi.reshape(-1)[pockets].astype(np.float64) if pockets.size else None
        self.blocks.solve_pockets(st, dyn, hi, lo)
        self.change_bound = (float(np.abs(hi.reshape(-1)[pockets] - before).max())
                             if before is not None else 0.0)
        r2, b2 = fine.residual(True, bnorm is None)
        if bnorm is None:
            bnorm = float(np.sqrt(b2))
        if bnorm == 0.0:
            self.change_bound = float(abs_max(hi))
            hi[...] = 0.0
            lo[...] = 0.0
            self.residual_max = 0.0
            return 0, 0.0, 0.0
        r0 = float(np.sqrt(r2)) / bnorm
        if r0 <= tol:
            self.residual_max = abs_max(fine.r)
            return 0, r0, r0
        self.blocks.prepare_fjords(st, dyn)
        rel = r0
        L1 = self.levels[0]
        kry = _Krylov()
        cycles = 0
        stall = _Stall(rel)
        steps = 0.0
        while rel > tol and cycles < max_cycles and not stall.stuck:
            cycles += 1
            # preconditioner: V-cycle for A e = r with an exact block step on the pockets
            # and fjords between the coarse correction and the post-smoothing
            fine.pre_smooth(self.pre)
            fine.restrict(L1.rhs)
            L1.e[...] = 0.0
            self.coarse.cycle(0)
            fine.prolong(L1.e, self.tables[0])
            if pockets.size:  # closed pockets already hold their exact solution
                fine.e.reshape(-1)[pockets] = 0.0
            self.blocks.correct_fjords(fine.e, fine.r)
            # post-smoothing, then the flexible conjugate gradient step: p = e + beta p_old,
            # A-orthogonal to p_old; alpha minimises the A-norm of the error along p
            dots = fine.post_smooth(self.post)
            beta, alpha, ps_old, ps = kry.step(dots)
            UK.update(hi, lo, fine.e, fine.p, beta, alpha, ps_old, ps)
            steps += abs(alpha) * UK.P_MAX * ps
            rel = float(np.sqrt(fine.residual(False, False)[0])) / bnorm
            stall.add(rel)
        self.residual_max = abs_max(fine.r)
        self.change_bound = max(self.change_bound, steps)
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
        :func:`niche3d.fields._uniform_kernels.update`, from the per-plane sums (z.Az, q.Az, r.z, r.q,
        max |z|) of the new preconditioned correction z and the stored direction q."""
        zAz, qAz, rz, rq = (serial_sum(dots[:, k]) for k in range(4))
        zmax = float(dots[:, 4].max()) if dots.shape[0] else 0.0
        old = self.scale
        beta, alpha, self.pAp = _krylov_step(zAz, qAz * old, rz, rq * old, self.pAp)
        # |z + beta p| <= max|z| + |beta| P_MAX old; the margin covers float32 rounding
        self.scale = (zmax / UK.P_MAX + abs(beta) * old) * (1.0 + 1e-5)
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
