"""The level-0 operator of one field, split into what is fixed and what changes.

A field's operator ``-div(D grad c) + k c = S`` on the tissue lattice has a static part
and a dynamic one:

* :class:`StaticOperator`: labels, per-tissue diffusivities, boundary kinds and values,
  and what is derived from them once (face tables, the codes present, whether the
  vectorised kernels apply). A :class:`~niche3d.fields.multigrid.Multigrid` is given it
  once (:meth:`~niche3d.fields.multigrid.Multigrid.from_static`) and derives its geometry
  (closed pockets, fjords) from it, without ever hashing the label volume.
* :class:`DynamicOperator`: what may change from one solve to the next: cells, decay
  and secretion tables, uptake, protease, the old solution and 1/dt of an implicit step.
  A solve is passed only this.

:class:`OperatorSpec` is the whole operator in one object, a convenience for scripted use
(tests, figures, assembling the matrix for a baseline); :meth:`OperatorSpec.split` gives
the two parts. :class:`TableArgs` and :class:`UniformArgs` name the argument tails of the
two families of level-0 kernels (:mod:`niche3d.fields._table_kernels`,
:mod:`niche3d.fields._uniform_kernels`); the kernels take them unpacked (``*args``), in
field order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from niche3d.fields._boundary import PERIODIC, VALUE

__all__ = ["DynamicOperator", "OperatorSpec", "StaticOperator", "TableArgs", "UniformArgs",
           "face_tables"]


def _dummy() -> np.ndarray:
    """Stand-in for an absent per-voxel map (the kernels take an array either way)."""
    return np.zeros((1, 1, 1), np.float32)


@dataclass
class DynamicOperator:
    """What may change between two solves of one field, in kernel units (voxel, minute).

    Attributes
    ----------
    decay
        (16,) decay per tissue code, 1/min (scalar protease already added).
    secretion
        (16,) secretion per tissue code, field unit/min (source scales already applied).
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

    decay: np.ndarray
    secretion: np.ndarray
    cells: np.ndarray
    uptake: float = 0.0
    protease: np.ndarray | None = None
    psens: float = 0.0
    old: np.ndarray | None = None
    inv_dt: float = 0.0
    _dummy: np.ndarray = field(default_factory=_dummy)

    def cell_list(self, size: int) -> np.ndarray:
        """``cells`` as a C-contiguous int64 array, checked to be sorted, unique and
        inside a lattice of ``size`` voxels (the kernels find a row's cells by binary
        search)."""
        c = np.ascontiguousarray(self.cells)
        if c.ndim != 1 or (c.size and c.dtype.kind not in "iu"):
            raise ValueError(f"cells must be a 1D array of flat voxel indices, got "
                             f"{c.dtype} array of shape {c.shape}")
        c = c.astype(np.int64, copy=False)
        if c.size and (c[0] < 0 or c[-1] >= size or np.any(np.diff(c) <= 0)):
            raise ValueError(f"cells must be sorted, unique flat indices in [0, "
                             f"{size}); got values from {c.min()} to {c.max()}"
                             + ("" if np.all(np.diff(c) > 0) else ", not sorted and unique"))
        return c

    def table_args(self, static: StaticOperator) -> TableArgs:
        """Argument tail of the table-driven level-0 kernels on ``static``."""
        return TableArgs(
            act=static.act,
            H=static.H,
            D2=static.D2,
            klut=np.ascontiguousarray(self.decay, dtype=np.float64),
            slut=np.ascontiguousarray(self.secretion, dtype=np.float64),
            bk=static.bkind,
            bv=static.bvalue,
            cells=self.cell_list(static.labels.size),
            uptake=float(self.uptake),
            prot=self.protease if self.protease is not None else self._dummy,
            hasprot=self.protease is not None,
            psens=float(self.psens),
            old=self.old if self.old is not None else self._dummy,
            inv_dt=float(self.inv_dt),
        )

    def reaction_and_source(self, static: StaticOperator,
                            idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 reaction diagonal (decay + uptake + 1/dt + protease) and right-hand side
        (secretion + old/dt) at the flat voxels ``idx`` (sorted) of ``static``, float64."""
        codes = static.labels.reshape(-1)[idx]
        cells = self.cell_list(static.labels.size)
        if cells.size:
            pos = np.minimum(np.searchsorted(cells, idx), cells.size - 1)
            occupied = cells[pos] == idx  # both sorted: no hashing (np.isin) needed
        else:
            occupied = np.zeros(idx.size, bool)
        diag = np.asarray(self.decay, np.float64)[codes] + self.uptake * occupied
        diag = diag + self.inv_dt
        if self.protease is not None:
            diag = diag + self.psens * self.protease.reshape(-1)[idx].astype(np.float64)
        b = np.asarray(self.secretion, np.float64)[codes]
        if self.old is not None and self.inv_dt > 0:
            b = b + self.inv_dt * self.old.reshape(-1)[idx].astype(np.float64)
        return diag, b


class TableArgs(NamedTuple):
    """Argument tail of the table-driven level-0 kernels, after ``(labels, hi, lo)``
    (:mod:`niche3d.fields._table_kernels`)."""

    act: np.ndarray  # uint8 per code: permeable
    H: np.ndarray  # float64 (256,): face coefficient of codes a, b at H[16 a + b]
    D2: np.ndarray  # float64 per code: 2 D, the coefficient of a fixed-value face
    klut: np.ndarray  # float64 per code: decay (+ scalar protease), 1/min
    slut: np.ndarray  # float64 per code: secretion, unit/min
    bk: np.ndarray  # int64 (6,): boundary kinds
    bv: np.ndarray  # float64 (6,): boundary values
    cells: np.ndarray  # int64: sorted flat indices of occupied voxels
    uptake: float  # 1/min per cell
    prot: np.ndarray  # float32 protease map (a 1-voxel dummy when hasprot is False)
    hasprot: bool
    psens: float  # protease sensitivity
    old: np.ndarray  # float32 previous solution (dummy when inv_dt is 0)
    inv_dt: float  # 1/min, 0 for a steady solve


class UniformArgs(NamedTuple):
    """Argument tail of the vectorised residual of one-diffusivity operators, after
    ``(labels, hi, lo)`` (:func:`niche3d.fields._uniform_kernels.residual`)."""

    cells: np.ndarray  # int64: sorted flat indices of occupied voxels
    uptake: float
    prot: np.ndarray
    hasprot: bool
    psens: float
    old: np.ndarray
    inv_dt: float
    scode: np.ndarray  # uint8: codes with a source ...
    sval: np.ndarray  # float64: ... and their secretion
    k0: float  # the decay of most permeable voxels
    kcode: np.ndarray  # uint8: permeable codes whose decay differs from k0 ...
    kval: np.ndarray  # float64: ... by this much
    D: float  # the one diffusivity, voxel²/min
    inact: np.uint8  # the one impermeable code (255 when there is none)
    bk: np.ndarray
    bv: np.ndarray


@dataclass(frozen=True)
class StaticOperator:
    """The fixed part of a field's operator and what is derived from it once.

    Make one with :meth:`derive`. ``D`` and ``inact`` are the one diffusivity and the one
    impermeable code when the operator qualifies for the vectorised kernels (every
    permeable tissue on the lattice has the same diffusivity, at most one impermeable code
    is present), else ``D`` is None: the table-driven path.

    The label array is held, not copied: it must not change while the operator is in use
    (:class:`~niche3d.tissue.Lattice` labels are read-only); a new tissue is a new
    ``StaticOperator``.
    """

    labels: np.ndarray  # uint8 tissue codes (z, y, x)
    diffusion: np.ndarray  # float64 (16,): diffusivity per code, voxel²/min (0: masked)
    bkind: np.ndarray  # int64 (6,): boundary kinds (niche3d.fields._boundary)
    bvalue: np.ndarray  # float64 (6,): boundary values
    act: np.ndarray
    H: np.ndarray
    D2: np.ndarray
    codes: np.ndarray  # tissue codes present on the lattice ...
    counts: np.ndarray  # ... and their voxel counts
    D: float | None
    inact: int

    @classmethod
    def derive(cls, labels: np.ndarray, diffusion: np.ndarray, bkind: np.ndarray,
               bvalue: np.ndarray) -> StaticOperator:
        """The static operator of ``labels`` (uint8 tissue codes, z, y, x), ``diffusion``
        ((16,) per code, voxel²/min, 0 = impermeable), ``bkind`` and ``bvalue`` ((6,)
        boundary kinds, :mod:`niche3d.fields._boundary`: 0 no-flux, 1 value, 2 periodic,
        and values; faces zmin, zmax, ymin, ymax, xmin, xmax). One read-only pass over
        the labels (the codes present); the tables are copied."""
        lab = labels
        if not isinstance(lab, np.ndarray) or lab.dtype.kind != "u" or lab.ndim != 3:
            got = (f"{lab.dtype} array of shape {lab.shape}" if isinstance(lab, np.ndarray)
                   else type(lab).__name__)
            raise ValueError(f"labels must be a 3D array of tissue codes (uint8), got {got}")
        cnt = np.bincount(lab.reshape(-1), minlength=256)
        codes = np.flatnonzero(cnt)
        diff = np.array(diffusion, np.float64)
        act, H, D2 = face_tables(diff)
        d = diff[codes]
        perm = d > 0
        D: float | None = None
        inact = 255
        if perm.any() and np.unique(d[perm]).size == 1 and (~perm).sum() <= 1:
            D = float(d[perm][0])
            inact = int(codes[~perm][0]) if (~perm).any() else 255
        return cls(labels=lab, diffusion=diff, bkind=np.array(bkind, np.int64),
                   bvalue=np.array(bvalue, np.float64), act=act, H=H, D2=D2,
                   codes=codes, counts=cnt[codes], D=D, inact=inact)

    def matches(self, op: OperatorSpec) -> bool:
        """Whether ``op`` has this static part: the same label array (identity: the
        volume is not hashed) and equal diffusivities and boundaries."""
        return (op.labels is self.labels
                and np.array_equal(np.asarray(op.diffusion, np.float64), self.diffusion)
                and np.array_equal(np.asarray(op.bkind, np.int64), self.bkind)
                and np.array_equal(np.asarray(op.bvalue, np.float64), self.bvalue))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Lattice shape (z, y, x)."""
        return self.labels.shape  # type: ignore[return-value]

    @property
    def periodic(self) -> tuple[bool, bool, bool]:
        """Periodic flag per axis (z, y, x)."""
        return tuple(bool(self.bkind[2 * a] == PERIODIC) for a in range(3))  # type: ignore[return-value]

    @property
    def value_faces(self) -> tuple[bool, bool, bool, bool, bool, bool]:
        """Fixed-value flag per face (zmin, zmax, ymin, ymax, xmin, xmax)."""
        return tuple(bool(k == VALUE) for k in self.bkind)  # type: ignore[return-value]

    def uniform_args(self, dyn: DynamicOperator) -> UniformArgs | None:
        """Arguments of the vectorised kernels for ``dyn`` on this operator, or None when
        the operator needs per-face coefficients."""
        if self.D is None:
            return None
        t = dyn.table_args(self)
        perm = self.diffusion[self.codes] > 0
        ac, an = self.codes[perm], self.counts[perm]
        kv = t.klut[ac]
        k0 = float(kv[int(np.argmax(an))])  # the decay of most permeable voxels
        dev = kv != k0
        sv = t.slut[ac]
        src = sv != 0.0
        return UniformArgs(
            cells=t.cells, uptake=t.uptake, prot=t.prot, hasprot=t.hasprot, psens=t.psens,
            old=t.old, inv_dt=t.inv_dt, scode=ac[src].astype(np.uint8),
            sval=sv[src].astype(np.float64), k0=k0, kcode=ac[dev].astype(np.uint8),
            kval=(kv[dev] - k0).astype(np.float64), D=self.D, inact=np.uint8(self.inact),
            bk=t.bk, bv=t.bv)


@dataclass
class OperatorSpec:
    """The whole level-0 operator of one field in kernel units (voxel, minute): a
    convenience for scripted use. The solver takes its two parts (:meth:`split`).

    Attributes
    ----------
    labels
        uint8 tissue codes (z, y, x). A :class:`~niche3d.fields.multigrid.Multigrid`
        given OperatorSpecs keeps the static part derived from the first while later ones
        have the same label array (identity, the volume is not hashed) and equal tables.
    diffusion
        (16,) diffusivity per tissue code, voxel²/min (0 = impermeable, voxel masked).
    decay, secretion, cells, uptake, protease, psens, old, inv_dt
        As in :class:`DynamicOperator`.
    bkind, bvalue
        (6,) boundary kinds (:mod:`niche3d.fields._boundary`: 0 no-flux, 1 value,
        2 periodic) and values, face order zmin, zmax, ymin, ymax, xmin, xmax.
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

    @classmethod
    def join(cls, static: StaticOperator, dyn: DynamicOperator) -> OperatorSpec:
        """The whole operator of a static and a dynamic part."""
        return cls(labels=static.labels, diffusion=static.diffusion, decay=dyn.decay,
                   secretion=dyn.secretion, bkind=static.bkind, bvalue=static.bvalue,
                   cells=dyn.cells, uptake=dyn.uptake, protease=dyn.protease,
                   psens=dyn.psens, old=dyn.old, inv_dt=dyn.inv_dt)

    def static(self) -> StaticOperator:
        """The static part (derived afresh: one pass over the labels)."""
        return StaticOperator.derive(self.labels, self.diffusion, self.bkind, self.bvalue)

    def dynamic(self) -> DynamicOperator:
        """The dynamic part (the arrays are shared, not copied)."""
        return DynamicOperator(decay=self.decay, secretion=self.secretion, cells=self.cells,
                               uptake=self.uptake, protease=self.protease, psens=self.psens,
                               old=self.old, inv_dt=self.inv_dt)

    def split(self) -> tuple[StaticOperator, DynamicOperator]:
        """(static part, dynamic part): what ``Multigrid.from_static`` and a solve take."""
        return self.static(), self.dynamic()

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(active flag per code, harmonic face table H[16 a + b], 2 D per code)."""
        return face_tables(self.diffusion)

    def cell_list(self) -> np.ndarray:
        """``cells`` checked and as int64 (:meth:`DynamicOperator.cell_list`)."""
        return self.dynamic().cell_list(self.labels.size)

    def table_args(self, static: StaticOperator | None = None) -> TableArgs:
        """Argument tail of the table-driven level-0 kernels (on ``static`` when given,
        else on the static part derived from this operator)."""
        return self.dynamic().table_args(self.static() if static is None else static)


def face_tables(diffusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(active flag per tissue code, harmonic face table ``H[16 a + b]``, 2 D per code)."""
    d = np.asarray(diffusion, dtype=np.float64)
    act = (d > 0).astype(np.uint8)
    da = d[:, None]
    db = d[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where((da > 0) & (db > 0), 2.0 * da * db / (da + db), 0.0)
    return act, np.ascontiguousarray(h.ravel()), 2.0 * d
