"""The level-0 operator of one field and the argument bundles its kernels take.

:class:`OperatorSpec` is the whole operator in kernel units. Its static part (labels,
diffusivities, boundaries) is what a :class:`~niche3d.fields.multigrid.Multigrid` derives
its geometry from once (:class:`StaticOperator`); the rest (cells, reaction, sources,
protease, dt) may change from one solve to the next. :class:`TableArgs` and
:class:`UniformArgs` name the argument tails of the two families of level-0 kernels
(:mod:`niche3d.fields._table_kernels`, :mod:`niche3d.fields._uniform_kernels`); the
kernels take them unpacked (``*args``), in field order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from niche3d.fields._boundary import PERIODIC

__all__ = ["OperatorSpec", "StaticOperator", "TableArgs", "UniformArgs", "face_tables"]


@dataclass
class OperatorSpec:
    """Level-0 operator of one field in kernel units (voxel, minute).

    Attributes
    ----------
    labels
        uint8 tissue codes (z, y, x). A :class:`~niche3d.fields.multigrid.Multigrid`
        derives its geometry from this array once (by identity, without hashing it):
        pass a new array, not the same one changed in place, when the tissue changes.
    diffusion
        (16,) diffusivity per tissue code, voxel²/min (0 = impermeable, voxel masked).
    decay
        (16,) decay per tissue code, 1/min (scalar protease already added).
    secretion
        (16,) secretion per tissue code, field unit/min (source scales already applied).
    bkind, bvalue
        (6,) boundary kinds (:mod:`niche3d.fields._boundary`: 0 no-flux, 1 value,
        2 periodic) and values, face order zmin, zmax, ymin, ymax, xmin, xmax.
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
        return face_tables(self.diffusion)

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

    def table_args(self, static: StaticOperator | None = None) -> TableArgs:
        """Argument tail of the table-driven level-0 kernels (the face tables from
        ``static`` when given, else computed from ``diffusion``)."""
        act, H, D2 = (static.act, static.H, static.D2) if static is not None else self.tables()
        return TableArgs(
            act=act,
            H=H,
            D2=D2,
            klut=np.ascontiguousarray(self.decay, dtype=np.float64),
            slut=np.ascontiguousarray(self.secretion, dtype=np.float64),
            bk=np.ascontiguousarray(self.bkind, dtype=np.int64),
            bv=np.ascontiguousarray(self.bvalue, dtype=np.float64),
            cells=self.cell_list(),
            uptake=float(self.uptake),
            prot=self.protease if self.protease is not None else self._dummy,
            hasprot=self.protease is not None,
            psens=float(self.psens),
            old=self.old if self.old is not None else self._dummy,
            inv_dt=float(self.inv_dt),
        )

    def reaction_and_source(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 reaction diagonal (decay + uptake + 1/dt + protease) and right-hand side
        (secretion + old/dt) at the flat voxels ``idx`` (sorted), float64."""
        codes = self.labels.reshape(-1)[idx]
        cells = self.cell_list()
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


def face_tables(diffusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(active flag per tissue code, harmonic face table ``H[16 a + b]``, 2 D per code)."""
    d = np.asarray(diffusion, dtype=np.float64)
    act = (d > 0).astype(np.uint8)
    da = d[:, None]
    db = d[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where((da > 0) & (db > 0), 2.0 * da * db / (da + db), 0.0)
    return act, np.ascontiguousarray(h.ravel()), 2.0 * d


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
    """What a hierarchy derives once from labels, diffusivities and boundaries.

    ``D`` and ``inact`` are the one diffusivity and the one impermeable code when the
    operator qualifies for the vectorised kernels (every permeable tissue on the lattice
    has the same diffusivity, at most one impermeable code is present), else ``D`` is
    None: the table-driven path.
    """

    labels: np.ndarray
    diffusion: np.ndarray
    bkind: np.ndarray
    bvalue: np.ndarray
    act: np.ndarray
    H: np.ndarray
    D2: np.ndarray
    codes: np.ndarray  # tissue codes present on the lattice ...
    counts: np.ndarray  # ... and their voxel counts
    D: float | None
    inact: int

    @classmethod
    def of(cls, op: OperatorSpec) -> StaticOperator:
        """The static part of ``op`` (one pass over the labels: the codes present)."""
        lab = op.labels
        if not isinstance(lab, np.ndarray) or lab.dtype.kind != "u" or lab.ndim != 3:
            got = (f"{lab.dtype} array of shape {lab.shape}" if isinstance(lab, np.ndarray)
                   else type(lab).__name__)
            raise ValueError(f"labels must be a 3D array of tissue codes (uint8), got {got}")
        cnt = np.bincount(lab.reshape(-1), minlength=256)
        codes = np.flatnonzero(cnt)
        diffusion = np.array(op.diffusion, np.float64)
        act, H, D2 = face_tables(diffusion)
        d = diffusion[codes]
        perm = d > 0
        D: float | None = None
        inact = 255
        if perm.any() and np.unique(d[perm]).size == 1 and (~perm).sum() <= 1:
            D = float(d[perm][0])
            inact = int(codes[~perm][0]) if (~perm).any() else 255
        return cls(labels=lab, diffusion=diffusion, bkind=np.array(op.bkind, np.int64),
                   bvalue=np.array(op.bvalue, np.float64), act=act, H=H, D2=D2,
                   codes=codes, counts=cnt[codes], D=D, inact=inact)

    def matches(self, op: OperatorSpec) -> bool:
        """Whether ``op`` has this static part: the same label array (identity: the
        volume is not hashed) and equal diffusivities and boundaries."""
        return (op.labels is self.labels
                and np.array_equal(np.asarray(op.diffusion, np.float64), self.diffusion)
                and np.array_equal(np.asarray(op.bkind, np.int64), self.bkind)
                and np.array_equal(np.asarray(op.bvalue, np.float64), self.bvalue))

    @property
    def periodic(self) -> tuple[bool, bool, bool]:
        """Periodic flag per axis (z, y, x)."""
        return tuple(bool(self.bkind[2 * a] == PERIODIC) for a in range(3))  # type: ignore[return-value]

    def uniform_args(self, op: OperatorSpec) -> UniformArgs | None:
        """Arguments of the vectorised kernels for ``op`` (whose static part this is), or
        None when the operator needs per-face coefficients."""
        if self.D is None:
            return None
        t = op.table_args(self)
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
