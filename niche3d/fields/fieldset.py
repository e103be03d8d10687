"""The chemical world of a run: diffusible fields and the membrane SCF contact map.

:class:`FieldSet` turns the ``[fields]`` scenario section into per-tissue tables in kernel
units (voxel, minute), owns one float32 solution per field and solves

    -div(D grad c) + (k_tissue + uptake * cell + sensitivity * protease [+ 1/dt]) c
        = S_tissue * scale_tissue [+ c_old / dt]

quasi-steadily (warm-started multigrid) or as one backward-Euler step.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from niche3d._threads import ThreadGovernor
from niche3d.fields import _solution_storage as K
from niche3d.fields._boundary import KINDS, VALUE
from niche3d.fields._skip import (
    LOCAL_GAIN,
    LOCAL_RADIUS,
    LOCAL_SWEEPS,
    QUICK_RADIUS,
    QUICK_SWEEPS,
    SkipState,
    local_correction,
    q_floor,
)
from niche3d.fields.config import FACES, FieldConfig, FieldsConfig
from niche3d.fields.multigrid import Multigrid
from niche3d.fields.operator import DynamicOperator, StaticOperator
from niche3d.names import MEMBRANE_SCF
from niche3d.tissue.codes import TISSUE_NAMES, tissue_code
from niche3d.tissue.contact import tissue_neighbour_mean
from niche3d.tissue.lattice import Lattice

__all__ = ["FieldSet", "SolveReport", "MEMBRANE_SCF"]


_NCODES = 16


@dataclass(frozen=True)
class SolveReport:
    """What one :meth:`FieldSet.solve` did.

    Attributes
    ----------
    mode
        ``"steady"`` (quasi-steady solve) or ``"implicit"`` (one backward-Euler step).
    dt_minutes
        Step length for ``"implicit"``, None for ``"steady"``.
    cycles
        Multigrid V-cycles per field (0 when the warm start already met the tolerance).
    initial_residual, residual
        Relative residual ||b - A c|| / ||b|| per field before and after the solve.
    converged
        Per field, whether ``residual <= tolerance`` was reached within ``max_cycles``
        (a skipped field counts as converged: its estimated change was below its
        ``skip_below`` tolerance; its residuals are NaN, not computed).
    skipped
        Per field, whether the solve was skipped after the local correction
        (:mod:`niche3d.fields._skip`).
    estimate
        Per field, the estimated largest change (field units) a full solve would have
        made after the local correction; inf when none was made (sources changed, no
        response measured yet, or no ``skip_below`` for the field).
    seconds
        Wall time of the whole solve.
    """

    mode: str
    dt_minutes: float | None
    cycles: dict[str, int] = field(default_factory=dict)
    initial_residual: dict[str, float] = field(default_factory=dict)
    residual: dict[str, float] = field(default_factory=dict)
    converged: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, bool] = field(default_factory=dict)
    estimate: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def all_converged(self) -> bool:
        """True when every field met the tolerance."""
        return all(self.converged.values())


def _table(values: dict[str, float], default: float) -> np.ndarray:
    out = np.full(_NCODES, float(default), np.float64)
    for name, v in values.items():
        out[tissue_code(name)] = float(v)
    return out


class _Field:
    """Per-field tables, solution and multigrid hierarchy (kernel units)."""

    def __init__(self, name: str, cfg: FieldConfig, lattice: Lattice, scratch: dict) -> None:
        self.name = name
        self.cfg = cfg
        conv = 60.0 / lattice.voxel_um**2  # µm²/s -> voxel²/min
        if "marrow" not in cfg.diffusion_um2_s:
            raise ValueError(
                f"fields.diffusible.{name}.diffusion_um2_s = {cfg.diffusion_um2_s!r} must give "
                "'marrow' (the value of every tissue not listed)"
            )
        if "marrow" not in cfg.decay_per_min:
            raise ValueError(
                f"fields.diffusible.{name}.decay_per_min = {cfg.decay_per_min!r} must give "
                "'marrow' (the value of every tissue not listed)"
            )
        self.diffusion = _table(cfg.diffusion_um2_s, cfg.diffusion_um2_s["marrow"]) * conv
        self.diffusion[tissue_code("bone")] = 0.0
        self.diffusion[len(TISSUE_NAMES):] = 0.0
        self.decay = _table(cfg.decay_per_min, cfg.decay_per_min["marrow"])
        self.secretion = _table(cfg.secretion_per_min, 0.0)
        self.scale = np.ones(_NCODES, np.float64)
        self.bkind = np.zeros(6, np.int64)
        self.bvalue = np.zeros(6, np.float64)
        for i, face in enumerate(FACES):
            b = cfg.boundary.get(face)
            if b is not None:
                self.bkind[i] = KINDS[b.kind]
                self.bvalue[i] = b.value if b.kind == "value" else 0.0
        # the static operator, once: a solve passes only what may change (_op); the
        # lattice's labels are read-only, so the hierarchy never has to look for edits
        self.static = StaticOperator.derive(lattice.labels, self.diffusion, self.bkind,
                                            self.bvalue)
        self.mg = Multigrid.from_static(self.static, scratch=scratch)
        self.hi = np.zeros(lattice.shape, np.float32)
        self.lo = np.zeros(lattice.shape, np.int16)  # mantissa extension of hi
        self.dirty = True
        self.built_inv_dt = -1.0
        self.warned = False  # a non-converged solve was reported
        self.skip = SkipState()


class FieldSet:
    """All signals of a run on one lattice.

    Parameters
    ----------
    lattice
        The tissue lattice (labels and voxel size).
    config
        The scenario's ``fields`` section.

    Notes
    -----
    Units: diffusion is given in µm²/s and converted once to voxel²/min; decay, uptake and
    protease activity are 1/min; secretion is field unit per minute per voxel. Tissues
    whose diffusion is 0 (bone always) are impermeable and masked: their concentration is
    0 and no flux crosses their faces.

    Membrane SCF (:attr:`membrane_scf`) is, at each voxel, the mean of the membrane SCF
    expression of its six face neighbours (expression per source tissue from
    ``config.membrane_scf.expression`` times the knockout scale of that tissue; a
    neighbour outside the lattice contributes 0), multiplied by the cleavage factor
    ``1 / (1 + a / a_half)`` of the protease activity ``a`` at the voxel. A voxel whose six
    neighbours all express at level 1 reads 1.0.
    """

    def __init__(self, lattice: Lattice, config: FieldsConfig) -> None:
        if not isinstance(lattice, Lattice):
            raise TypeError(f"lattice must be a niche3d Lattice, got {type(lattice).__name__}")
        if not isinstance(config, FieldsConfig):
            raise TypeError(f"config must be a FieldsConfig, got {type(config).__name__}")
        self.lattice = lattice
        self.config = config
        for name in config.diffusible:
            if name == MEMBRANE_SCF:
                raise ValueError(
                    f"diffusible field name {name!r} is reserved for the membrane SCF map"
                )
        # level-0 work arrays of the solver, shared: fields are solved one after another
        self._scratch: dict = {}
        self._fields: dict[str, _Field] = {
            name: _Field(name, cfg, lattice, self._scratch)
            for name, cfg in config.diffusible.items()
        }
        for f in self._fields.values():
            self._check_solvable(f)
        # occupied voxels, sorted and unique: a list rather than a per-voxel mask, so the
        # solver's memory beyond the fields grows with the cells, not with the lattice
        self._cells_key: np.ndarray = np.zeros(0, np.int64)
        self._governor = ThreadGovernor()
        self._protease: float | np.ndarray = 0.0
        mcfg = config.membrane_scf
        self._mexpr = _table(mcfg.expression, 0.0)
        self._mscale = np.ones(_NCODES, np.float64)
        self._membrane: np.ndarray | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def names(self) -> tuple[str, ...]:
        """Diffusible field names in config order."""
        return tuple(self._fields)

    @property
    def units(self) -> dict[str, str]:
        """Concentration unit per diffusible field (and ``membrane_scf``: relative, "1")."""
        out = {n: f.cfg.units for n, f in self._fields.items()}
        out[MEMBRANE_SCF] = "1"
        return out

    @property
    def windows(self) -> dict[str, tuple[float, float]]:
        """Fixed display window per field (and ``membrane_scf``: 0 to max expression)."""
        out = {n: (float(f.cfg.window[0]), float(f.cfg.window[1])) for n, f in self._fields.items()}
        top = float(max(self._mexpr.max(), 1e-12))
        out[MEMBRANE_SCF] = (0.0, top)
        return out

    def __getitem__(self, name: str) -> np.ndarray:
        """Current concentration of a diffusible field, float32 (z, y, x), field units."""
        if name == MEMBRANE_SCF:
            return self.membrane_scf
        return self._field(name).hi

    def __contains__(self, name: object) -> bool:
        return name in self._fields or name == MEMBRANE_SCF

    def _field(self, name: str) -> _Field:
        try:
            return self._fields[name]
        except KeyError:
            raise ValueError(
                f"unknown field {name!r}; allowed: {', '.join(self._fields) or '(none)'}"
            ) from None

    # ------------------------------------------------------------------ membrane SCF
    @property
    def membrane_scf(self) -> np.ndarray:
        """Contact map of membrane SCF, float32 (z, y, x), 0..max expression (see Notes)."""
        if self._membrane is None:
            self._membrane = self._compute_membrane()
        return self._membrane

    def _compute_membrane(self) -> np.ndarray:
        # the same neighbour mean as the cells' contact maps (niche3d.tissue.contact)
        lut = (self._mexpr * self._mscale).astype(np.float32)
        s = tissue_neighbour_mean(self.lattice.labels, lut)
        a_half = self.config.membrane_scf.protease_half_activity_per_min
        a = self._protease
        if isinstance(a, np.ndarray):
            s *= (1.0 / (1.0 + a / np.float32(a_half))).astype(np.float32)
        elif a > 0:
            s *= np.float32(1.0 / (1.0 + a / a_half))
        return s

    # ------------------------------------------------------------------ controls
    def set_source_scale(self, target: str, tissue: str, factor: float) -> None:
        """Scale the production of ``target`` by ``tissue`` (1 = scenario value, 0 = knockout).

        Parameters
        ----------
        target
            A diffusible field name or :data:`~niche3d.names.MEMBRANE_SCF` (membrane SCF).
        tissue
            Source tissue name (e.g. ``"stroma"``, ``"endosteum"``).
        factor
            Multiplier >= 0 of the scenario's secretion (or expression) of that tissue;
            factors are absolute, not cumulative.
        """
        if target != MEMBRANE_SCF and target not in self._fields:
            raise ValueError(
                f"target {target!r} is not a field; allowed: "
                f"{', '.join((*self._fields, MEMBRANE_SCF))}"
            )
        code = tissue_code(tissue)
        try:
            f = float(factor)
        except (TypeError, ValueError):
            raise ValueError(f"factor must be a number >= 0, got {factor!r}") from None
        if not (math.isfinite(f) and f >= 0.0):
            raise ValueError(f"factor must be a finite number >= 0, got {factor!r}")
        if target == MEMBRANE_SCF:
            self._mscale[code] = f
            self._membrane = None
        else:
            fld = self._fields[target]
            if fld.scale[code] != f:
                fld.skip.sources_changed = True
            fld.scale[code] = f

    def source_scale(self, target: str, tissue: str) -> float:
        """Current factor set by :meth:`set_source_scale` (1.0 by default)."""
        code = tissue_code(tissue)
        if target == MEMBRANE_SCF:
            return float(self._mscale[code])
        return float(self._field(target).scale[code])

    def set_protease(self, activity: float | np.ndarray) -> None:
        """Set protease activity (1/min): extra decay ``activity * protease_sensitivity``.

        Parameters
        ----------
        activity
            A scalar >= 0 for the whole lattice or a float array of the lattice shape
            (z, y, x) with values >= 0. It also cleaves membrane SCF by the factor
            ``1 / (1 + activity / protease_half_activity_per_min)``.
        """
        if isinstance(activity, np.ndarray):
            a = np.asarray(activity)
            if a.shape != self.lattice.shape:
                raise ValueError(
                    f"activity map has shape {a.shape}; expected the lattice shape "
                    f"{self.lattice.shape} or a scalar"
                )
            if a.dtype.kind not in "fiu":
                raise ValueError(f"activity map must be numeric, got dtype {a.dtype}")
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.all(np.isfinite(a)) or a.min() < 0:
                raise ValueError("activity map must be finite and >= 0 everywhere")
            new: float | np.ndarray = a
        else:
            try:
                v = float(activity)
            except (TypeError, ValueError):
                raise ValueError(
                    f"activity must be a number >= 0 or an array of the lattice shape, "
                    f"got {activity!r}"
                ) from None
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"activity must be a finite number >= 0, got {activity!r}")
            new = v
        self._protease = new
        self._membrane = None
        for f in self._fields.values():
            f.dirty = True
            f.skip.sources_changed = True

    @property
    def protease(self) -> float | np.ndarray:
        """Current protease activity (scalar or per-voxel float32 map), 1/min."""
        return self._protease

    # ------------------------------------------------------------------ operator
    def _op(self, f: _Field, old: np.ndarray | None = None,
            inv_dt: float = 0.0) -> DynamicOperator:
        """What a solve of ``f`` passes to its hierarchy (the static part is ``f.static``)."""
        decay = f.decay.copy()
        prot_map = None
        if isinstance(self._protease, np.ndarray):
            prot_map = self._protease
        else:
            decay += self._protease * f.cfg.protease_sensitivity
        return DynamicOperator(
            decay=decay,
            secretion=f.secretion * f.scale,
            cells=self._cells_key,
            uptake=f.cfg.uptake_per_min,
            protease=prot_map,
            psens=f.cfg.protease_sensitivity,
            old=old,
            inv_dt=inv_dt,
        )

    def _check_solvable(self, f: _Field) -> None:
        """Every permeable region needs a sink (decay > 0 somewhere or a fixed-value face)."""
        labels = self.lattice.labels
        present = np.unique(labels)
        if all(f.decay[t] > 0 or f.diffusion[t] == 0 for t in present):
            return
        active = f.diffusion[labels] > 0
        comp, n = ndimage.label(active)
        sink = np.zeros(n + 1, bool)
        sink[np.unique(comp[(f.decay[labels] > 0) & active])] = True
        for i in range(6):
            if f.bkind[i] == VALUE:
                axis = i // 2
                sl = np.take(comp, [0 if i % 2 == 0 else comp.shape[axis] - 1], axis=axis)
                sink[np.unique(sl)] = True
        sink[0] = True
        if not sink.all():
            raise ValueError(
                f"field {f.name!r}: a permeable region has no decay and touches no fixed-value "
                "face, so the steady problem has no unique solution; give decay_per_min > 0 "
                "for every permeable tissue or a boundary of kind 'value'"
            )

    def _set_cells(self, cell_voxels: np.ndarray | None) -> None:
        if cell_voxels is None:
            idx = np.zeros(0, np.int64)
        else:
            arr = np.asarray(cell_voxels)
            if arr.ndim != 1:
                raise ValueError(
                    f"cell_voxels must be a 1D array of flat voxel indices, got shape {arr.shape}"
                )
            if arr.size and arr.dtype.kind not in "iu":
                raise ValueError(f"cell_voxels must be integers, got dtype {arr.dtype}")
            idx = arr.astype(np.int64)
            if idx.size > 1 and not np.all(idx[1:] > idx[:-1]):  # sorted input: no sort
                idx = np.unique(idx)
            if idx.size and (idx[0] < 0 or idx[-1] >= self.lattice.size):
                bad = idx[0] if idx[0] < 0 else idx[-1]
                raise ValueError(
                    f"cell_voxels contains {int(bad)}; allowed flat indices are "
                    f"0..{self.lattice.size - 1}"
                )
        if np.array_equal(idx, self._cells_key):
            return
        self._cells_key = idx
        for f in self._fields.values():
            f.dirty = True

    # ------------------------------------------------------------------ solve
    def solve(
        self, cell_voxels: np.ndarray | None = None, *, dt_minutes: float | None = None,
        skip_below: Mapping[str, float] | None = None,
    ) -> SolveReport:
        """Solve every diffusible field, warm-started from the current solution.

        Parameters
        ----------
        cell_voxels
            int64 flat indices (into ``lattice.labels.ravel()``) of voxels holding a cell;
            each such voxel adds the field's ``uptake_per_min`` to the decay there (a voxel
            listed twice counts once). None = no cells.
        dt_minutes
            None for the quasi-steady solve; a positive number for one backward-Euler step
            of that length (``(c_new - c_old) / dt = div(D grad c_new) - k c_new + S``).
        skip_below
            Per field name, an absolute tolerance (field units) under which a quasi-steady
            re-solve after a cells-only change is skipped: the voxels whose cell changed
            are corrected locally, and if the estimated largest change a full solve would
            still make is below the tolerance (and fewer than ``max_skipped_solves`` were
            skipped in a row), no global cycle is run (:mod:`niche3d.fields._skip`).
            Fields not listed, a tolerance of 0, a backward-Euler step, or any change of
            sources, decay or protease since the field's last solve: always solved.

        Returns
        -------
        SolveReport
            Cycles and relative residuals per field.
        """
        t0 = time.perf_counter()
        inv_dt = 0.0
        skip = self._skip_tolerances(skip_below)
        if dt_minutes is not None:
            try:
                dt = float(dt_minutes)
            except (TypeError, ValueError):
                raise ValueError(f"dt_minutes must be None or a number > 0, got {dt_minutes!r}") from None
            if not (math.isfinite(dt) and dt > 0):
                raise ValueError(f"dt_minutes must be None or a finite number > 0, got {dt_minutes!r}")
            inv_dt = 1.0 / dt
        # one thread or all allowed, whichever is faster on this machine now (_threads)
        with self._governor() as work:
            rep = self._solve_all(cell_voxels, inv_dt, dt_minutes, skip)
            # a solve that ran no cycle (skipped, or already converged) is not timed: it
            # says nothing about which thread count cycles faster
            work.units = sum(rep.cycles.values())
        object.__setattr__(rep, "seconds", time.perf_counter() - t0)
        return rep

    def _skip_tolerances(self, skip_below: Mapping[str, float] | None) -> dict[str, float]:
        if skip_below is None:
            return {}
        if not isinstance(skip_below, Mapping):
            raise TypeError(f"skip_below must be a mapping of field name -> tolerance, got "
                            f"{type(skip_below).__name__}")
        out: dict[str, float] = {}
        for name, v in skip_below.items():
            self._field(name)
            try:
                tol = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"skip_below[{name!r}] must be a number >= 0, got {v!r}") from None
            if not (math.isfinite(tol) and tol >= 0):
                raise ValueError(f"skip_below[{name!r}] must be a finite number >= 0, got {v!r}")
            out[name] = tol
        return out

    def _solve_all(self, cell_voxels: np.ndarray | None, inv_dt: float,
                   dt_minutes: float | None, skip_below: dict[str, float]) -> SolveReport:
        self._set_cells(cell_voxels)
        tol = self.config.tolerance
        rep = SolveReport(mode="implicit" if inv_dt > 0 else "steady",
                          dt_minutes=None if inv_dt == 0 else float(dt_minutes))  # type: ignore[arg-type]
        for name, f in self._fields.items():
            old = None
            if inv_dt > 0:
                old = K.solution(f.hi, f.lo).astype(np.float32)
            op = self._op(f, old, inv_dt)
            s = f.skip
            s.solves += 1
            tol_abs = skip_below.get(name, 0.0) if inv_dt == 0 else 0.0
            rmax = None
            est = math.inf
            tried = tol_abs > 0 and not s.sources_changed and s.cells is not None and s.try_local()
            if tried:
                floor = q_floor(f.diffusion, op)
                # a quick local correction first, the full one if that is not enough
                for radius, sweeps in ((QUICK_RADIUS, QUICK_SWEEPS), (LOCAL_RADIUS, LOCAL_SWEEPS)):
                    rbox = local_correction(f.static, f.hi, f.lo, op, s.cells, self._cells_key,
                                            radius, sweeps)
                    # too many cells changed (or a NaN): solve in full
                    rmax = max(s.r_left, rbox) if math.isfinite(rbox) else None
                    est = s.estimate(rmax, floor) if rmax is not None else math.inf
                    # the full correction lowers the estimate about LOCAL_GAIN-fold: no
                    # use trying it when the quick one left more than that
                    if est <= tol_abs or est > LOCAL_GAIN * tol_abs:
                        break
            rep.estimate[name] = est
            # after a backward-Euler step the steady solution is not in hi: solve in full
            s.sources_changed = inv_dt > 0
            s.cells = self._cells_key
            if rep.estimate[name] <= tol_abs and s.in_row < self.config.max_skipped_solves:
                s.r_left = float(rmax)  # type: ignore[arg-type]
                s.fails = 0
                s.in_row += 1
                s.skipped += 1
                rep.cycles[name] = 0
                rep.initial_residual[name] = rep.residual[name] = math.nan
                rep.converged[name] = True
                rep.skipped[name] = True
                continue
            s.in_row = 0
            if tried:
                s.fails += 1
            rebuild = f.dirty or f.built_inv_dt != inv_dt
            cycles, r0, r = f.mg.solve(
                op, f.hi, f.lo, tol=tol, max_cycles=self.config.max_cycles, rebuild=rebuild
            )
            f.dirty = False
            f.built_inv_dt = inv_dt
            if r > tol and not f.warned:
                f.warned = True  # once per field: a run solves thousands of times
                why = ("it stalled at the resolution of the stored solution, ~1e-12 to 1e-9 "
                       "depending on the operator: raise fields.tolerance"
                       if cycles < self.config.max_cycles else "raise fields.max_cycles")
                warnings.warn(
                    f"field {name!r}: the solve stopped at relative residual {r:.2e} after "
                    f"{cycles} cycles, above fields.tolerance = {tol:g} ({why}); this "
                    f"warning is given once per field", RuntimeWarning, stacklevel=3)
            if rmax is not None:
                s.observe(f.mg.change_bound, rmax)
            s.r_left = f.mg.residual_max
            rep.skipped[name] = False
            rep.cycles[name] = cycles
            rep.initial_residual[name] = r0
            rep.residual[name] = r
            rep.converged[name] = bool(r <= tol)
        return rep

    @property
    def solve_counts(self) -> dict[str, tuple[int, int]]:
        """Per field: (scheduled solves, of which skipped) since the start of the run."""
        return {n: (f.skip.solves, f.skip.skipped) for n, f in self._fields.items()}

    def residual(self, name: str) -> float:
        """Relative steady-state residual ||b - A c|| / ||b|| of the current solution."""
        f = self._field(name)
        op = self._op(f)
        b = f.mg.rhs_norm(op)
        r = f.mg.residual_norm(op, f.hi, f.lo)
        return r / b if b > 0 else r

    def mass_balance(self, name: str) -> dict[str, float]:
        """Steady-state budget of a field over the lattice (field unit · voxel / min).

        Returns
        -------
        dict
            ``secretion`` (total production), ``decay`` (tissue decay + protease),
            ``uptake`` (by cells), ``boundary_out`` (net outflow through fixed-value
            faces) and ``imbalance`` = (secretion - decay - uptake - boundary_out) /
            secretion (0 when secretion is 0). At a converged steady solution the
            imbalance is of the order of the solver tolerance.
        """
        f = self._field(name)
        lab = self.lattice.labels
        c = K.solution(f.hi, f.lo)
        active = f.diffusion[lab] > 0
        op = self._op(f)
        S = (op.secretion[lab] * active).sum()
        kmap = op.decay[lab]
        if op.protease is not None:
            kmap = kmap + op.psens * op.protease
        dec = (kmap * c * active).sum()
        cells = self._cells_key
        upt = f.cfg.uptake_per_min * (c.reshape(-1)[cells] * active.reshape(-1)[cells]).sum()
        out = 0.0
        D = f.diffusion[lab]
        for i in range(6):
            if f.bkind[i] != VALUE:
                continue
            axis = i // 2
            j = 0 if i % 2 == 0 else lab.shape[axis] - 1
            cs = np.take(c, j, axis=axis)
            ds = np.take(D, j, axis=axis)
            out += (2.0 * ds * (cs - f.bvalue[i])).sum()
        imb = (S - dec - upt - out) / S if S > 0 else 0.0
        return {"secretion": float(S), "decay": float(dec), "uptake": float(upt),
                "boundary_out": float(out), "imbalance": float(imb)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that restore solutions, source scales and protease exactly.

        Keys: ``field.<name>`` (float32) and ``field_lo.<name>`` (int16): the solution
        ``hi + lo * |hi| * 2**-39`` (see :mod:`niche3d.fields._solution_storage`),
        ``scale.<name>`` and ``scale.membrane_scf`` (float64, per tissue code),
        ``protease`` (float32; 0-d for a uniform activity), ``skip.<name>`` (float64) and
        ``skip_cells.<name>`` (int64): what decides whether the next re-solve is skipped
        (:class:`~niche3d.fields._skip.SkipState`).
        """
        out: dict[str, np.ndarray] = {}
        for name, f in self._fields.items():
            out[f"field.{name}"] = f.hi.copy()
            out[f"field_lo.{name}"] = f.lo.copy()
            out[f"scale.{name}"] = f.scale.copy()
            out[f"skip.{name}"], out[f"skip_cells.{name}"] = f.skip.to_arrays()
        out[f"scale.{MEMBRANE_SCF}"] = self._mscale.copy()
        p = self._protease
        out["protease"] = p.copy() if isinstance(p, np.ndarray) else np.array(p, np.float64)
        return out

    def reset_solver_state(self) -> None:
        """Make the next solve rebuild every multigrid hierarchy from scratch (optional).

        Not needed for reproducibility: the hierarchy is a function of the current
        operator only (an incremental update after cells moved is bit-identical to a full
        rebuild, and cached block factorisations are reused only for an identical
        matrix), so a run resumed from a checkpoint continues bit-identically with or
        without this call, which costs one full rebuild per field and changes no result.
        """
        for f in self._fields.values():
            f.dirty = True
            f.mg.forget_build()

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (keys and shapes are checked)."""
        if not isinstance(d, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(d).__name__}")
        need = [f"field.{n}" for n in self._fields] + [f"field_lo.{n}" for n in self._fields]
        need += [f"scale.{n}" for n in self._fields] + [f"scale.{MEMBRANE_SCF}", "protease"]
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"state is missing keys {missing}; expected {need}")
        for name in self._fields:
            for key in (f"field.{name}", f"field_lo.{name}"):
                if np.shape(d[key]) != self.lattice.shape:
                    raise ValueError(
                        f"state[{key!r}] has shape {np.shape(d[key])}, expected {self.lattice.shape}"
                    )
            for key in (f"scale.{name}",):
                if np.shape(d[key]) != (_NCODES,):
                    raise ValueError(f"state[{key!r}] has shape {np.shape(d[key])}, expected (16,)")
        if np.shape(d[f"scale.{MEMBRANE_SCF}"]) != (_NCODES,):
            raise ValueError(f"state['scale.{MEMBRANE_SCF}'] must have shape (16,)")
        p = np.asarray(d["protease"])
        self.set_protease(p.astype(np.float32) if p.ndim else float(p))
        for name, f in self._fields.items():
            f.hi[...] = np.asarray(d[f"field.{name}"], np.float32)
            low = np.asarray(d[f"field_lo.{name}"])
            if low.dtype == np.int16:
                f.lo[...] = low
            elif low.dtype == np.float32:
                # store format 1 kept the low part as a float32 (double-float): keep the
                # 15 bits of it that the int16 holds
                f.lo[...] = K.lo_from_values(f.hi, low)
            else:
                raise ValueError(f"state['field_lo.{name}'] must be int16 (or float32 from "
                                 f"store format 1), got {low.dtype}")
            f.scale[...] = np.asarray(d[f"scale.{name}"], np.float64)
            f.dirty = True
            # a checkpoint from before skipping was introduced has no skip state: the next
            # solve of the field is then a full one
            if f"skip.{name}" in d and f"skip_cells.{name}" in d:
                try:
                    f.skip = SkipState.from_arrays(d[f"skip.{name}"], d[f"skip_cells.{name}"])
                    if f.skip.cells is not None:
                        DynamicOperator(f.decay, f.secretion, f.skip.cells).cell_list(self.lattice.size)
                except ValueError as exc:
                    raise ValueError(f"state['skip.{name}']: {exc}") from None
            else:
                f.skip = SkipState()
        self._mscale[...] = np.asarray(d[f"scale.{MEMBRANE_SCF}"], np.float64)
        self._membrane = None

    @property
    def nbytes(self) -> int:
        """Bytes held by solutions, multigrid hierarchies, the level-0 work arrays shared
        by the fields' solves, the cell list and the protease map."""
        n = self._cells_key.nbytes + sum(a.nbytes for v in self._scratch.values() for a in v)
        if isinstance(self._protease, np.ndarray):
            n += self._protease.nbytes
        for f in self._fields.values():
            n += f.hi.nbytes + f.lo.nbytes + f.mg.nbytes
        if self._membrane is not None:
            n += self._membrane.nbytes
        return n

    def __repr__(self) -> str:
        return f"FieldSet({', '.join(self.names)} on {self.lattice!r})"
