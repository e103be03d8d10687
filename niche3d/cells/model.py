"""The HSC population: struct of arrays + occupancy grid, stepped by numba kernels.

:class:`CellModel` owns the arrays and the units; the rules are kernels in
:mod:`niche3d.cells._kernels`. One :meth:`CellModel.step` of ``dt_hours`` does, in order:

1. motility micro-steps (propose / resolve by hashed priority / move),
2. per-cell rules in parallel: adhesion, apoptosis and egress (competing hazards),
   MPP exit, the cycle clock (exact transition times), homing and clearance in blood,
3. a serial pass in id order that applies them: divisions (daughter placement and
   fates), removals, egress, homing, and writes events,
4. compaction of removed cells and the downstream lineage compartments.

Every random number is ``uniform(seed, step, cell id, purpose)``, so the same seed gives
bit-identical results for any number of threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from niche3d.cells import _kernels as K
from niche3d.cells.config import CellsConfig
from niche3d.cells.rng import Purpose
from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice

__all__ = [
    "CellModel",
    "Signals",
    "Modifiers",
    "STATE_NAMES",
    "EVENT_NAMES",
    "LINEAGES",
    "state_code",
]

#: state codes (int8) used in snapshots and events, in code order
STATE_NAMES: tuple[str, ...] = (
    "dormant",
    "active_g0",
    "active_g1",
    "active_sg2m",
    "mpp",
    "circulating",
    "dead",
)
#: event kinds (int8) in code order
EVENT_NAMES: tuple[str, ...] = (
    "birth",
    "division",
    "state_change",
    "death",
    "egress",
    "homing",
    "exit",
    "clearance",
)
#: mature lineages of the compartment model (daily output per lineage in metrics)
LINEAGES: tuple[str, ...] = ("erythroid", "megakaryocyte", "granulocyte_monocyte", "lymphoid")

#: below this many cells the serial twins of the kernels run (thread start-up dominates)
PARALLEL_MIN_CELLS = 20_000

_SEED_STEP = 2**62  # step key of everything drawn outside step() (seeding, add_cells)

_COLUMNS: dict[str, Any] = {
    "ids": np.int64,
    "parent": np.int64,
    "generation": np.int32,
    "divisions": np.int32,
    "state": np.int8,
    "prev_state": np.int8,
    "z": np.int32,
    "y": np.int32,
    "x": np.int32,
    "bound": np.uint8,
    "donor": np.uint8,
    "timer": np.float64,
    "lag": np.float64,
    "lastdir": np.int8,
    "birth": np.float64,
}

_EVENT_COLUMNS: tuple[str, ...] = (
    "t_hours", "kind", "cell", "other", "z", "y", "x", "state",
    "other_z", "other_y", "other_x", "other_state",
)


def state_code(name: str) -> int:
    """Code of a state name (see :data:`STATE_NAMES`)."""
    key = str(name).strip().lower()
    if key not in STATE_NAMES:
        raise ValueError(f"unknown cell state {name!r}; allowed: {', '.join(STATE_NAMES)}")
    return STATE_NAMES.index(key)


@dataclass
class Signals:
    """Local signals on the lattice, all (z, y, x) float32, built by the simulation.

    Attributes
    ----------
    cxcl12
        Free CXCL12 in nM.
    scf
        Soluble SCF in field units (half-maximal support at ``death.scf_half``).
    membrane_scf
        Membrane SCF contact map (>= 0, about 0..1).
    """

    cxcl12: np.ndarray
    scf: np.ndarray
    membrane_scf: np.ndarray


@dataclass
class Modifiers:
    """Systemic effects of interventions at the current time (defaults: none).

    Attributes
    ----------
    cxcr4_blockade
        Share of CXCR4 blocked (AMD3100), 0..1: scales occupancy, raises unbinding.
    protease
        Neutrophil protease activity in 1/min (G-CSF): raises unbinding, cleaves VCAM1.
    cytotoxic
        Extra death hazard in 1/h of cycling cells (active G1, S/G2/M HSCs, MPPs and the
        downstream progenitor compartments), e.g. 5-FU. Quiescent HSCs are spared.
    """

    cxcr4_blockade: float = 0.0
    protease: float = 0.0
    cytotoxic: float = 0.0

    def validated(self) -> Modifiers:
        """Return self after checking ranges; raises ValueError naming the field."""
        for name, lo, hi in (("cxcr4_blockade", 0.0, 1.0), ("protease", 0.0, math.inf),
                             ("cytotoxic", 0.0, math.inf)):
            v = getattr(self, name)
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"Modifiers.{name} = {v!r} must be a number") from None
            if not (math.isfinite(fv) and lo <= fv <= hi):
                rng = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g} and finite"
                raise ValueError(f"Modifiers.{name} = {v!r} must be {rng}")
        return self


class CellModel:
    """HSC cellular automaton on a :class:`~niche3d.tissue.lattice.Lattice`.

    Parameters
    ----------
    config
        The ``[cells]`` scenario section.
    lattice
        Tissue lattice; cells live on ``lattice.enterable`` voxels (marrow, stroma).
    seed
        Master seed (>= 0) of every random decision.
    dt_hours
        Cell step in hours (> 0).
    motility_substeps
        Minimum number of motility micro-steps per cell step (>= 1). It is raised when
        needed so that the hop probability ``speed * dt_micro / voxel`` stays <= 1.

    Attributes
    ----------
    n_micro : int
        Motility micro-steps per cell step.
    micro_minutes : float
        Length of one micro-step (min).
    p_hop, p_hop_mpp : float
        Hop probability per micro-step of an unbound HSC / an MPP.
    shape : tuple of int
        Lattice shape (z, y, x).

    Notes
    -----
    Columns are kept sorted by id (daughters are appended, removals compacted
    stably), so slot order is id order and every serial pass is deterministic.
    """

    def __init__(
        self,
        config: CellsConfig,
        lattice: Lattice,
        *,
        seed: int,
        dt_hours: float,
        motility_substeps: int,
    ) -> None:
        if not isinstance(config, CellsConfig):
            raise ValueError(f"config must be a CellsConfig, got {type(config).__name__}")
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a niche3d Lattice, got {type(lattice).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed = {seed!r} must be an integer in [0, 2^63)")
        if not (isinstance(dt_hours, int | float | np.floating) and math.isfinite(dt_hours)
                and dt_hours > 0):
            raise ValueError(f"dt_hours = {dt_hours!r} must be a positive finite number")
        if isinstance(motility_substeps, bool) or not isinstance(motility_substeps, int | np.integer) \
                or motility_substeps < 1:
            raise ValueError(f"motility_substeps = {motility_substeps!r} must be an integer >= 1")
        self.config = config
        self.lattice = lattice
        self.seed = int(seed)
        self.dt_hours = float(dt_hours)
        self.shape = lattice.shape
        nz, ny, nx = self.shape
        self._nv = nz * ny * nx

        # motility: hop probability per micro-step
        dt_min = self.dt_hours * 60.0
        h = lattice.voxel_um
        v = config.speed_um_min
        vmax = v * max(1.0, config.motility.mpp_speed_factor)
        need = math.ceil(vmax * dt_min / h - 1e-12) if vmax > 0 else 1
        self.n_micro = int(max(int(motility_substeps), need, 1))
        tau = dt_min / self.n_micro
        self.p_hop = min(1.0, v * tau / h)
        self.p_hop_mpp = min(1.0, v * config.motility.mpp_speed_factor * tau / h)
        self.micro_minutes = tau

        # static per-voxel maps (computed once; O(voxels) only here)
        labels = lattice.labels
        self._enter = np.ascontiguousarray(lattice.enterable.astype(np.uint8).ravel())
        self._contact, self._vcam = _contact_maps(
            lattice, config.death.opn_range_um, config.adhesion.endothelial_vcam1_factor
        )
        self._ang1 = _ang1_map(lattice, self._contact, config.cycle.ang1_range_um)
        touch_endo = (self._contact & K.C_ENDO) != 0
        self._home_sites = np.flatnonzero(touch_endo & (self._enter != 0)).astype(np.int64)
        del labels

        self._par = self._base_params()
        self._occ = np.full(self._nv, -1, dtype=np.int32)
        self._cap = 0
        self._n = 0
        self._next_id = 0
        self._cols: dict[str, np.ndarray] = {}
        self._alloc(1024)
        self._counters = np.zeros(K.N_COUNTERS, dtype=np.int64)
        self._events: list[dict[str, np.ndarray]] = []
        # lineage compartments: [mpp, cmp, clp]; rates per day of the last step
        self._comp = np.zeros(3, dtype=np.float64)
        self._out_rate = np.zeros(4, dtype=np.float64)
        self._out_total = np.zeros(4, dtype=np.float64)
        self._p_ref = 0.0
        self._demand = 0.0
        self._deviation = 0.0
        self._last_exit_rate = 0.0
        self._last_step = -1
        self._last_t = 0.0

    # ------------------------------------------------------------------ parameters
    def _base_params(self) -> np.ndarray:
        c = self.config
        p = np.zeros(K.N_PAR, dtype=np.float64)
        m, a, cy, fa, de, bl = c.motility, c.adhesion, c.cycle, c.fate, c.death, c.blood
        p[K.K_PHOP] = self.p_hop
        p[K.K_PHOP_MPP] = self.p_hop_mpp
        p[K.K_PERSIST] = m.persistence
        p[K.K_KD] = m.cxcr4_kd_nM
        p[K.K_CHEMO_GAIN] = m.chemotaxis_gain
        p[K.K_CHEMO_THR] = m.gradient_threshold
        p[K.K_KON] = a.k_on_per_h
        p[K.K_W_SCF] = a.w_membrane_scf
        p[K.K_W_VCAM] = a.w_vcam1
        p[K.K_W_NCAD] = a.w_ncadherin
        p[K.K_W_ENDO] = a.w_endosteal
        p[K.K_OFF_ANG1] = a.ang1_retention
        p[K.K_W_CXCR4] = a.w_cxcr4
        p[K.K_BIND_HALF] = a.binding_half
        p[K.K_BIND_HILL] = a.binding_hill
        p[K.K_KOFF] = a.k_off_per_h
        p[K.K_OFF_PROT] = a.protease_gain
        p[K.K_OFF_BLOCK] = a.blockade_gain
        p[K.K_VCAM_PROT_HALF] = a.vcam1_protease_half
        p[K.K_EGRESS] = bl.egress_per_h
        p[K.K_RET_CXCR4] = bl.retention_cxcr4
        p[K.K_RET_VCAM] = bl.retention_vcam1
        p[K.K_RET_SCF] = bl.retention_membrane_scf
        p[K.K_ACT] = cy.activation_per_day / 24.0
        p[K.K_ACT_ANG1] = cy.ang1_quiescence
        p[K.K_RET] = cy.return_per_day / 24.0
        p[K.K_RET_ANG1] = cy.ang1_return_gain
        p[K.K_ENTRY] = cy.g0_exit_per_day / 24.0
        p[K.K_ENTRY_CXCL] = cy.cxcl12_quiescence
        p[K.K_DEMAND_GAIN] = cy.demand_gain
        p[K.K_G1_MEAN] = cy.g1_mean_hours
        p[K.K_G1_SHAPE] = cy.g1_shape
        p[K.K_S_MEAN] = cy.sg2m_mean_hours
        p[K.K_S_SHAPE] = cy.sg2m_shape
        p[K.K_F_W_SCF] = fa.w_membrane_scf
        p[K.K_F_W_CXCR4] = fa.w_cxcr4
        p[K.K_RENEW_MIN] = fa.renew_min
        p[K.K_RENEW_MAX] = fa.renew_max
        p[K.K_RENEW_K] = fa.renew_half
        p[K.K_RENEW_N] = fa.renew_hill
        p[K.K_ASYM] = fa.divisional_asymmetry
        p[K.K_PUSH] = 1.0 if fa.crowding == "push" else 0.0
        p[K.K_FATE_DEMAND] = fa.demand_renewal_gain
        p[K.K_DEATH] = de.hsc_per_day / 24.0
        p[K.K_DEATH_OPN] = de.opn_gain
        p[K.K_DEATH_NOSCF] = de.no_scf_gain
        p[K.K_SCF_HALF] = de.scf_half
        p[K.K_MPP_DEATH] = de.mpp_per_day / 24.0
        p[K.K_MPP_EXIT] = de.mpp_exit_per_day / 24.0
        p[K.K_HOME] = bl.homing_per_h
        p[K.K_HOME_HALF] = bl.homing_half
        p[K.K_CLEAR] = bl.clearance_per_h
        p[K.K_DT] = self.dt_hours
        return p

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap: int) -> None:
        new: dict[str, np.ndarray] = {}
        for name, dt in _COLUMNS.items():
            arr = np.zeros(cap, dtype=dt)
            old = self._cols.get(name)
            if old is not None:
                arr[: self._n] = old[: self._n]
            new[name] = arr
        self._cols = new
        self._scratch = {
            "act": np.zeros(cap, np.int8),
            "ev_time": np.zeros(cap, np.float64),
            "changed": np.zeros(cap, np.int8),
            "site": np.zeros(cap, np.int64),
            "target": np.zeros(cap, np.int64),
            "tdir": np.zeros(cap, np.int8),
            "prio": np.zeros(cap, np.uint64),
            "win": np.zeros(cap, np.uint8),
        }
        self._cap = cap

    def _ensure(self, n: int) -> None:
        if n > self._cap:
            cap = self._cap
            while cap < n:
                cap *= 2
            self._alloc(cap)

    @property
    def n_cells(self) -> int:
        """Number of living cells (on the lattice and circulating)."""
        return self._n

    # ------------------------------------------------------------------ signals
    def _flat_signals(self, signals: Signals) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(signals, Signals):
            raise ValueError(f"signals must be a niche3d.cells.Signals, got {type(signals).__name__}")
        out = []
        for name in ("cxcl12", "scf", "membrane_scf"):
            a = getattr(signals, name)
            if not isinstance(a, np.ndarray):
                raise ValueError(f"signals.{name} must be a numpy array, got {type(a).__name__}")
            if a.shape != self.shape:
                raise ValueError(
                    f"signals.{name} has shape {a.shape}; it must match the lattice {self.shape}"
                )
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"signals.{name} has dtype {a.dtype}; a float array is required")
            if a.dtype != np.float32 or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a, dtype=np.float32)
            out.append(a.reshape(-1))
        return out[0], out[1], out[2]

    # ------------------------------------------------------------------ adding cells
    def add_cells(
        self,
        z: np.ndarray,
        y: np.ndarray,
        x: np.ndarray,
        *,
        state: str | int = "active_g0",
        bound: bool | np.ndarray = False,
        donor: bool = False,
        t_hours: float = 0.0,
        residual: bool = False,
    ) -> np.ndarray:
        """Place new cells on free enterable voxels; returns their ids (int64).

        Parameters
        ----------
        z, y, x
            Voxel coordinates (equal-length integer arrays or scalars).
        state
            One of ``dormant, active_g0, active_g1, active_sg2m, mpp`` (name or code).
        bound
            Initial bound flag (scalar or per cell); MPPs are never bound.
        donor
            Donor flag (transplantation).
        t_hours
            Time written into the birth events.
        residual
            For G1 / S/G2/M cells: draw the remaining phase time as a uniform share of a
            full phase duration (a cell caught mid-phase), instead of a full duration.
        """
        zz = np.atleast_1d(np.asarray(z)).astype(np.int64, copy=False)
        yy = np.atleast_1d(np.asarray(y)).astype(np.int64, copy=False)
        xx = np.atleast_1d(np.asarray(x)).astype(np.int64, copy=False)
        if not (zz.shape == yy.shape == xx.shape) or zz.ndim != 1:
            raise ValueError(f"z, y, x must be 1D and of equal length, got {zz.shape}, {yy.shape}, {xx.shape}")
        code = state if isinstance(state, int | np.integer) else state_code(str(state))
        code = int(code)
        if code not in (K.S_DORMANT, K.S_G0, K.S_G1, K.S_SG2M, K.S_MPP):
            raise ValueError(
                f"state = {state!r} cannot be placed on the lattice; allowed: "
                + ", ".join(STATE_NAMES[:5])
            )
        nz, ny, nx = self.shape
        for name, a, hi in (("z", zz, nz), ("y", yy, ny), ("x", xx, nx)):
            if a.size and (a.min() < 0 or a.max() >= hi):
                raise ValueError(f"{name} coordinates must be in [0, {hi}), got range [{a.min()}, {a.max()}]")
        flat = (zz * ny + yy) * nx + xx
        if flat.size and not self._enter[flat].all():
            bad = int(flat[self._enter[flat] == 0][0])
            raise ValueError(
                f"voxel {np.unravel_index(bad, self.shape)} is not enterable (only marrow and stroma)"
            )
        if flat.size and (self._occ[flat] >= 0).any():
            bad = int(flat[self._occ[flat] >= 0][0])
            raise ValueError(f"voxel {np.unravel_index(bad, self.shape)} is already occupied")
        if np.unique(flat).size != flat.size:
            raise ValueError("z, y, x contain the same voxel more than once")
        b = np.broadcast_to(np.asarray(bound, dtype=bool), flat.shape)
        m = flat.size
        ids = self._append(m, code, donor=bool(donor))
        sl = slice(self._n - m, self._n)
        c = self._cols
        c["z"][sl] = zz
        c["y"][sl] = yy
        c["x"][sl] = xx
        c["bound"][sl] = b.astype(np.uint8) if code != K.S_MPP else 0
        self._occ[flat] = np.arange(self._n - m, self._n, dtype=np.int32)
        self._init_timers(sl, code, residual)
        self._log_births(ids, t_hours)
        return ids

    def add_circulating(self, n: int, *, donor: bool = True, state: str | int = "active_g0",
                        t_hours: float = 0.0) -> np.ndarray:
        """Put ``n`` HSCs into the blood pool (e.g. a transplant); returns their ids.

        Parameters
        ----------
        n
            Number of cells (>= 0).
        donor
            Donor flag of the new cells.
        state
            State they take when they home: ``dormant`` or ``active_g0``.
        t_hours
            Time written into the birth events.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n = {n!r} must be an integer >= 0")
        code = state if isinstance(state, int | np.integer) else state_code(str(state))
        if int(code) not in (K.S_DORMANT, K.S_G0):
            raise ValueError(f"state = {state!r} must be 'dormant' or 'active_g0'")
        ids = self._append(int(n), K.S_CIRC, donor=bool(donor))
        sl = slice(self._n - int(n), self._n)
        self._cols["prev_state"][sl] = int(code)
        for k in ("z", "y", "x"):
            self._cols[k][sl] = -1
        self._log_births(ids, t_hours)
        return ids

    def _append(self, m: int, code: int, *, donor: bool) -> np.ndarray:
        self._ensure(self._n + m)
        sl = slice(self._n, self._n + m)
        ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        c = self._cols
        c["ids"][sl] = ids
        c["parent"][sl] = -1
        c["generation"][sl] = 0
        c["divisions"][sl] = 0
        c["state"][sl] = code
        c["prev_state"][sl] = code
        c["bound"][sl] = 0
        c["donor"][sl] = 1 if donor else 0
        c["timer"][sl] = 0.0
        c["lag"][sl] = 0.0
        c["lastdir"][sl] = -1
        c["birth"][sl] = 0.0
        self._n += m
        self._next_id += m
        return ids

    def _init_timers(self, sl: slice, code: int, residual: bool) -> None:
        ids = self._cols["ids"][sl]
        if code not in (K.S_G1, K.S_SG2M) or ids.size == 0:
            return
        mean = self._par[K.K_G1_MEAN] if code == K.S_G1 else self._par[K.K_S_MEAN]
        shape = self._par[K.K_G1_SHAPE] if code == K.S_G1 else self._par[K.K_S_SHAPE]
        out = np.empty(ids.size, np.float64)
        K.draw_erlang(self.seed, _SEED_STEP, ids, Purpose.ERLANG, mean, shape, out)
        if residual:
            from niche3d.cells.rng import uniform_array

            out *= uniform_array(self.seed, _SEED_STEP, ids, Purpose.SEED_RESIDUAL)
        self._cols["timer"][sl] = out

    def _log_births(self, ids: np.ndarray, t_hours: float) -> None:
        if ids.size == 0:
            return
        c = self._cols
        sl = slice(self._n - ids.size, self._n)
        m = ids.size
        self._events.append({
            "t_hours": np.full(m, float(t_hours)),
            "kind": np.full(m, K.E_BIRTH, np.int8),
            "cell": ids.copy(),
            "other": np.full(m, -1, np.int64),
            "z": c["z"][sl].copy(),
            "y": c["y"][sl].copy(),
            "x": c["x"][sl].copy(),
            "state": c["state"][sl].copy(),
            "other_z": np.full(m, -1, np.int32),
            "other_y": np.full(m, -1, np.int32),
            "other_x": np.full(m, -1, np.int32),
            "other_state": np.full(m, -1, np.int8),
        })
        c["birth"][sl] = float(t_hours)

    # ------------------------------------------------------------------ seeding
    def seed_initial(self, signals: Signals) -> None:
        """Place the initial HSCs and set the lineage compartments to homeostasis.

        The count is ``hsc_per_mm3`` times the enterable (marrow + stroma) volume,
        rounded stochastically. ``initial_placement = "niche"`` samples voxels without
        replacement with weight ``0.01 + adhesion score`` (the niche contact that binds
        HSCs: membrane SCF, VCAM1, N-cadherin, times CXCR4 activation), ``"random"``
        uniformly. ``dormant_fraction`` of them are dormant; the others are
        spread over G0 / G1 / S/G2/M in proportion to the mean phase durations, with
        residual phase times. Cells start bound with their local steady-state
        probability ``k_on / (k_on + k_off)``.

        Raises
        ------
        ValueError
            If cells were already seeded or the lattice has too few free voxels.
        """
        if self._next_id != 0:
            raise ValueError("seed_initial() must be called once, before any cell is added")
        cxcl, scf, mscf = self._flat_signals(signals)
        del scf
        cfg = self.config
        free = np.flatnonzero(self._enter != 0).astype(np.int64)
        vol = free.size * self.lattice.voxel_volume_mm3
        expect = cfg.hsc_per_mm3 * vol
        from niche3d.cells.rng import uniform as _u

        frac = expect - math.floor(expect)
        n = int(math.floor(expect)) + (1 if _u(self.seed, _SEED_STEP, 0, Purpose.SEED_COUNT) < frac else 0)
        if n > free.size:
            raise ValueError(
                f"hsc_per_mm3 = {cfg.hsc_per_mm3:g} asks for {n} cells but only {free.size} "
                "enterable voxels exist"
            )
        if n > 0:
            u = np.empty(free.size, np.float64)
            K.voxel_uniforms(self.seed, _SEED_STEP, free, Purpose.SEED_PLACE, u)
            if cfg.initial_placement == "niche":
                w = 0.01 + self._adhesion_scores(free, cxcl, mscf, self._par)
            else:
                w = np.ones(free.size)
            # Efraimidis-Spirakis weighted sampling without replacement: top-n of u^(1/w)
            key = np.log(np.maximum(u, 1e-300)) / w
            pick = np.argpartition(-key, n - 1)[:n] if n < free.size else np.arange(free.size)
            vox = np.sort(free[pick])
            nz, ny, nx = self.shape
            zz, rem = np.divmod(vox, ny * nx)
            yy, xx = np.divmod(rem, nx)
            # states by hashed voxel keys
            us = np.empty(n, np.float64)
            K.voxel_uniforms(self.seed, _SEED_STEP, vox, Purpose.SEED_STATE, us)
            p = self._par
            m0 = 1.0 / max(p[K.K_ENTRY], 1e-300)
            m1 = p[K.K_G1_MEAN]
            m2 = p[K.K_S_MEAN]
            tot = m0 + m1 + m2
            df = cfg.dormant_fraction
            codes = np.where(
                us < df,
                K.S_DORMANT,
                np.where(
                    us < df + (1 - df) * m0 / tot,
                    K.S_G0,
                    np.where(us < df + (1 - df) * (m0 + m1) / tot, K.S_G1, K.S_SG2M),
                ),
            )
            ub = np.empty(n, np.float64)
            K.voxel_uniforms(self.seed, _SEED_STEP, vox, Purpose.SEED_BOUND, ub)
            sc = self._adhesion_scores(vox, cxcl, mscf, p)
            scn = np.power(np.maximum(sc, 0.0), p[K.K_BIND_HILL])
            kon = p[K.K_KON] * scn / (scn + p[K.K_BIND_HALF] ** p[K.K_BIND_HILL])
            koff = p[K.K_KOFF]
            pb = np.where(kon + koff > 0, kon / np.maximum(kon + koff, 1e-300), 0.0)
            bnd = ub < pb
            for code in (K.S_DORMANT, K.S_G0, K.S_G1, K.S_SG2M):
                sel = codes == code
                if sel.any():
                    self.add_cells(zz[sel], yy[sel], xx[sel], state=code, bound=bnd[sel],
                                   residual=True)
            self._sort_by_id()
        self.set_reference(n)

    def _adhesion_scores(self, vox: np.ndarray, cxcl: np.ndarray, mscf: np.ndarray,
                         p: np.ndarray) -> np.ndarray:
        """Vector form of the kernels' adhesion score at voxels ``vox`` (no modifiers)."""
        c = np.maximum(cxcl[vox].astype(np.float64), 0.0)
        th = c / (c + p[K.K_KD]) * (1.0 - p[K.K_BLOCK])
        vc = self._vcam[vox] / (1.0 + p[K.K_PROT] / p[K.K_VCAM_PROT_HALF])
        nc = ((self._contact[vox] & K.C_SNO) != 0).astype(np.float64)
        ob = ((self._contact[vox] & K.C_ANG1) != 0).astype(np.float64)
        m = np.maximum(mscf[vox].astype(np.float64), 0.0)
        return (p[K.K_W_SCF] * m + p[K.K_W_VCAM] * vc + p[K.K_W_NCAD] * nc + p[K.K_W_ENDO] * ob) * (
            1.0 + p[K.K_W_CXCR4] * th)

    def set_reference(self, n_hsc: int) -> None:
        """Set the demand set point to ``n_hsc`` HSCs' homeostatic MPP output.

        The lineage compartments are put at their steady state for that inflow.
        """
        if isinstance(n_hsc, bool) or not isinstance(n_hsc, int | np.integer) or n_hsc < 0:
            raise ValueError(f"n_hsc = {n_hsc!r} must be an integer >= 0")
        lc = self.config.lineage
        j = n_hsc * lc.reference_mpp_per_hsc_per_day / 24.0  # MPP per hour
        mpp = j * lc.mpp_residence_days * 24.0
        out = j * lc.mpp_amplification
        cmp_ = out * lc.cmp_fraction * lc.cmp_residence_days * 24.0
        clp = out * (1 - lc.cmp_fraction) * lc.clp_residence_days * 24.0
        self._comp[:] = (mpp, cmp_, clp)
        self._p_ref = float(mpp + cmp_ + clp)
        self._out_rate[:] = self._lineage_rates(out * lc.cmp_fraction, out * (1 - lc.cmp_fraction))
        self._demand = 0.0
        self._deviation = 0.0

    def _lineage_rates(self, cmp_in: float, clp_in: float) -> np.ndarray:
        """Mature output per day per lineage at steady throughput (inputs per hour)."""
        lc = self.config.lineage
        c = cmp_in * lc.cmp_amplification * 24.0
        gm = 1.0 - lc.erythroid_share - lc.megakaryocyte_share
        return np.array([c * lc.erythroid_share, c * lc.megakaryocyte_share, c * gm,
                         clp_in * lc.clp_amplification * 24.0])

    def _sort_by_id(self) -> None:
        n = self._n
        order = np.argsort(self._cols["ids"][:n], kind="stable")
        if np.all(order == np.arange(n)):
            return
        for name in _COLUMNS:
            a = self._cols[name]
            a[:n] = a[:n][order]
        self._rebuild_occ()

    def _rebuild_occ(self) -> None:
        n = self._n
        c = self._cols
        self._occ.fill(-1)
        on = c["z"][:n] >= 0
        nz, ny, nx = self.shape
        flat = (c["z"][:n].astype(np.int64) * ny + c["y"][:n]) * nx + c["x"][:n]
        self._occ[flat[on]] = np.flatnonzero(on).astype(np.int32)

    # ------------------------------------------------------------------ stepping
    def step(self, step_index: int, t_hours: float, signals: Signals, modifiers: Modifiers) -> None:
        """Advance one cell step of ``dt_hours`` (see the module docstring for the order).

        Parameters
        ----------
        step_index
            Global step counter (>= 0); a key of every random number of this step.
        t_hours
            Simulated time at the start of the step (for event times).
        signals
            Current fields on the lattice.
        modifiers
            Systemic intervention effects at this time.
        """
        if isinstance(step_index, bool) or not isinstance(step_index, int | np.integer) \
                or step_index < 0:
            raise ValueError(f"step_index = {step_index!r} must be an integer >= 0")
        try:
            t_ok = math.isfinite(float(t_hours))
        except (TypeError, ValueError):
            t_ok = False
        if not t_ok:
            raise ValueError(f"t_hours = {t_hours!r} must be a finite number")
        if not isinstance(modifiers, Modifiers):
            raise ValueError(f"modifiers must be a niche3d.cells.Modifiers, got {type(modifiers).__name__}")
        modifiers.validated()
        cxcl, scf, mscf = self._flat_signals(signals)
        step = int(step_index)
        t0 = float(t_hours)
        par = self._par.copy()
        par[K.K_DEMAND] = self._demand
        par[K.K_DEVIATION] = self._deviation
        par[K.K_BLOCK] = float(modifiers.cxcr4_blockade)
        par[K.K_PROT] = float(modifiers.protease)
        par[K.K_CYTO] = float(modifiers.cytotoxic)
        c = self._cols
        s = self._scratch
        nz, ny, nx = self.shape
        n = self._n

        par_ok = n >= PARALLEL_MIN_CELLS and numba.get_num_threads() > 1
        propose = K.propose_moves_par if par_ok else K.propose_moves_ser
        resolve = K.resolve_moves_par if par_ok else K.resolve_moves_ser
        move = K.apply_moves_par if par_ok else K.apply_moves_ser
        rules = K.cell_rules_par if par_ok else K.cell_rules_ser
        # 1. motility
        if n > 0 and (par[K.K_PHOP] > 0 or par[K.K_PHOP_MPP] > 0):
            for sub in range(self.n_micro):
                propose(n, c["ids"], c["state"], c["bound"], c["z"], c["y"], c["x"],
                                c["lastdir"], self._occ, self._enter, cxcl, nz, ny, nx, par,
                                self.seed, step, sub, s["target"], s["tdir"], s["prio"])
                resolve(n, s["target"], s["prio"], self._occ, nz, ny, nx, s["win"])
                move(n, s["target"], s["tdir"], s["win"], self._occ, c["z"], c["y"],
                              c["x"], c["lastdir"], ny, nx)
        # 2. rules
        rules(n, c["ids"], c["state"], c["bound"], c["z"], c["y"], c["x"], c["timer"],
                     c["lag"], cxcl, scf, mscf, self._contact, self._vcam, self._ang1, self._home_sites,
                     ny, nx, par, self.seed, step, t0, s["act"], s["ev_time"], s["changed"],
                     s["site"])
        n_div = int(np.count_nonzero(s["act"][:n] == K.A_DIVIDE))
        self._ensure(n + n_div)
        c = self._cols
        s = self._scratch
        # 3. serial apply
        cap_ev = 2 * (int(np.count_nonzero(s["act"][:n])) + int(np.count_nonzero(s["changed"][:n]))) + 1
        ev_t = np.empty(cap_ev, np.float64)
        ev_i8 = np.empty((cap_ev, 3), np.int8)
        ev_cell = np.empty((cap_ev, 2), np.int64)
        ev_i4 = np.empty((cap_ev, 6), np.int32)
        exits_before = int(self._counters[K.N_EXIT])
        n_total, next_id, ne = K.apply_actions(
            n, n, self._next_id, c["ids"], c["parent"], c["generation"], c["divisions"],
            c["state"], c["prev_state"], c["z"], c["y"], c["x"], c["bound"], c["donor"],
            c["timer"], c["lag"], c["lastdir"], c["birth"], s["act"], s["ev_time"],
            s["changed"], s["site"], self._occ, self._enter, cxcl, mscf, nz, ny, nx, par,
            self.seed, step, t0 + self.dt_hours, ev_t, ev_i8, ev_cell, ev_i4, self._counters)
        self._n = int(n_total)
        self._next_id = int(next_id)
        if ne:
            self._events.append({
                "t_hours": ev_t[:ne].copy(),
                "kind": ev_i8[:ne, 0].copy(),
                "cell": ev_cell[:ne, 0].copy(),
                "other": ev_cell[:ne, 1].copy(),
                "z": ev_i4[:ne, 0].copy(),
                "y": ev_i4[:ne, 1].copy(),
                "x": ev_i4[:ne, 2].copy(),
                "state": ev_i8[:ne, 1].copy(),
                "other_z": ev_i4[:ne, 3].copy(),
                "other_y": ev_i4[:ne, 4].copy(),
                "other_x": ev_i4[:ne, 5].copy(),
                "other_state": ev_i8[:ne, 2].copy(),
            })
        # 4. compaction and compartments
        self._compact()
        exits = int(self._counters[K.N_EXIT]) - exits_before
        self._lineage_step(exits, float(modifiers.cytotoxic))
        self._last_step = step
        self._last_t = t0 + self.dt_hours

    def _compact(self) -> None:
        n = self._n
        c = self._cols
        keep = c["state"][:n] != K.S_DEAD
        m = int(np.count_nonzero(keep))
        if m == n:
            return
        for name in _COLUMNS:
            a = c[name]
            a[:m] = a[:n][keep]
        self._n = m
        on = c["z"][:m] >= 0
        nz, ny, nx = self.shape
        flat = (c["z"][:m].astype(np.int64) * ny + c["y"][:m]) * nx + c["x"][:m]
        self._occ[flat[on]] = np.flatnonzero(on).astype(np.int32)

    def _lineage_step(self, exits: int, cyto: float) -> None:
        """Advance the downstream compartments one step, exactly.

        The compartments obey the linear ODE ``M' = J - M/tm - k M``,
        ``C' = a f M/tm - C/tc - k C``, ``L' = a (1-f) M/tm - L/tl - k L`` (``k`` the
        cytotoxic hazard) with the MPP inflow ``J`` constant over the step; the step is
        the matrix exponential of the system augmented by ``J`` and by the integrated
        outflows of CMP and CLP (which give the mature output per lineage).
        """
        dt = self.dt_hours
        j = exits / dt
        self._last_exit_rate = j * 24.0
        prop = self._lineage_propagator(float(cyto))
        x = np.array([self._comp[0], self._comp[1], self._comp[2], 0.0, 0.0, j])
        y = prop @ x
        self._comp[:] = np.maximum(y[:3], 0.0)
        rates = self._lineage_rates(y[3] / dt, y[4] / dt)
        self._out_rate[:] = rates
        self._out_total += rates * dt / 24.0
        pool = float(self._comp.sum())
        dev = 0.0 if self._p_ref <= 0 else float(min(max(1.0 - pool / self._p_ref, -1.0), 1.0))
        self._deviation = dev
        self._demand = max(dev, 0.0)

    def _lineage_propagator(self, cyto: float) -> np.ndarray:
        cache = self.__dict__.setdefault("_prop_cache", {})
        if cyto in cache:
            return cache[cyto]
        from scipy.linalg import expm

        lc = self.config.lineage
        tm = lc.mpp_residence_days * 24.0
        tc = lc.cmp_residence_days * 24.0
        tl = lc.clp_residence_days * 24.0
        a = lc.mpp_amplification
        f = lc.cmp_fraction
        A = np.zeros((6, 6))
        A[0, 0] = -1 / tm - cyto
        A[0, 5] = 1.0
        A[1, 0] = a * f / tm
        A[1, 1] = -1 / tc - cyto
        A[2, 0] = a * (1 - f) / tm
        A[2, 2] = -1 / tl - cyto
        A[3, 1] = 1 / tc
        A[4, 2] = 1 / tl
        prop = expm(A * self.dt_hours)
        if len(cache) < 64:
            cache[cyto] = prop
        return prop

    # ------------------------------------------------------------------ outputs
    def occupied_flat(self) -> np.ndarray:
        """Flat voxel indices (int64) of the cells on the lattice, in id order."""
        n = self._n
        c = self._cols
        on = c["z"][:n] >= 0
        nz, ny, nx = self.shape
        flat = (c["z"][:n].astype(np.int64) * ny + c["y"][:n]) * nx + c["x"][:n]
        return flat[on]

    def snapshot(self) -> dict[str, np.ndarray]:
        """One row per living cell (on the lattice and circulating), sorted by id.

        Columns: track_id (int64), parent (int64, -1 for founders), generation (int32,
        depth in the lineage tree), state (int8, code into :data:`STATE_NAMES`), z, y, x
        (int32 voxel, -1 when circulating), bound (bool), donor (bool), divisions (int32,
        divisions in the cell's ancestry: label-dilution age), birth_hours (float64),
        phase_hours_left (float64, remaining G1 or S/G2/M time).
        """
        n = self._n
        c = self._cols
        return {
            "track_id": c["ids"][:n].copy(),
            "parent": c["parent"][:n].copy(),
            "generation": c["generation"][:n].copy(),
            "state": c["state"][:n].copy(),
            "z": c["z"][:n].copy(),
            "y": c["y"][:n].copy(),
            "x": c["x"][:n].copy(),
            "bound": c["bound"][:n].astype(bool),
            "donor": c["donor"][:n].astype(bool),
            "divisions": c["divisions"][:n].copy(),
            "birth_hours": c["birth"][:n].copy(),
            "phase_hours_left": c["timer"][:n].copy(),
        }

    def drain_events(self) -> dict[str, np.ndarray]:
        """Events since the last drain (and clears them).

        Columns: t_hours (float64), kind (int8, code into :data:`EVENT_NAMES`), cell
        (int64), other (int64 or -1), z, y, x (int32, -1 in blood), state (int8, the
        state after the event; for ``exit`` the state the cell left in), other_z,
        other_y, other_x, other_state (the second daughter of a ``division`` row, the
        mother of a ``birth`` row, else -1). A division writes a ``division`` row
        (cell = mother, which keeps its id, other = new daughter) and a ``birth`` row
        for the daughter; both carry both positions and fates. Division and state-change
        times are exact within the step; other events carry the step's end time.
        """
        dtypes = {"t_hours": np.float64, "kind": np.int8, "cell": np.int64, "other": np.int64,
                  "z": np.int32, "y": np.int32, "x": np.int32, "state": np.int8,
                  "other_z": np.int32, "other_y": np.int32, "other_x": np.int32,
                  "other_state": np.int8}
        if not self._events:
            return {k: np.empty(0, dt) for k, dt in dtypes.items()}
        out = {k: np.concatenate([e[k] for e in self._events]).astype(dtypes[k], copy=False)
               for k in _EVENT_COLUMNS}
        self._events = []
        return out

    def metrics(self) -> dict[str, float]:
        """Current counts and rates (flat name -> number).

        Counts per state (``n_<state>``), ``hsc_total`` (HSCs on the lattice),
        ``hsc_marrow_and_blood``, fractions of lattice HSCs in G0 (dormant + active G0),
        S/G2/M and dormancy, ``bound_fraction`` of lattice HSCs, ``blood_pool``,
        ``demand`` (0..1), ``pool_deviation`` (``1 - pool / reference`` in [-1, 1]),
        ``progenitor_pool`` and its reference, compartment sizes,
        ``output_<lineage>_per_day``, ``mpp_output_per_day`` (last step) and cumulative
        event counters (``total_divisions``, ``total_activations`` = dormant -> active,
        ``total_quiescence_returns``, ``total_cycle_entries`` = G0 -> G1, deaths, egress,
        homing, exits, clearance, division waits/pushes, asymmetric divisions, failed
        lodging attempts).
        """
        n = self._n
        c = self._cols
        st = c["state"][:n]
        counts = np.bincount(st.astype(np.int64), minlength=len(STATE_NAMES))
        m: dict[str, float] = {"n_cells": float(n)}
        for code, name in enumerate(STATE_NAMES):
            m[f"n_{name}"] = float(counts[code])
        hsc = counts[K.S_DORMANT] + counts[K.S_G0] + counts[K.S_G1] + counts[K.S_SG2M]
        m["hsc_total"] = float(hsc)
        m["hsc_marrow_and_blood"] = float(hsc + counts[K.S_CIRC])
        den = max(int(hsc), 1)
        m["frac_g0"] = float(counts[K.S_DORMANT] + counts[K.S_G0]) / den if hsc else 0.0
        m["frac_sg2m"] = float(counts[K.S_SG2M]) / den if hsc else 0.0
        m["frac_dormant"] = float(counts[K.S_DORMANT]) / den if hsc else 0.0
        is_hsc = st <= K.S_SG2M
        m["bound_fraction"] = float(np.count_nonzero(c["bound"][:n][is_hsc])) / den if hsc else 0.0
        m["blood_pool"] = float(counts[K.S_CIRC])
        m["donor_cells"] = float(np.count_nonzero(c["donor"][:n]))
        m["demand"] = float(self._demand)
        m["pool_deviation"] = float(self._deviation)
        m["progenitor_pool"] = float(self._comp.sum())
        m["progenitor_pool_reference"] = float(self._p_ref)
        m["compartment_mpp"] = float(self._comp[0])
        m["compartment_cmp"] = float(self._comp[1])
        m["compartment_clp"] = float(self._comp[2])
        for k, name in enumerate(LINEAGES):
            m[f"output_{name}_per_day"] = float(self._out_rate[k])
            m[f"output_{name}_total"] = float(self._out_total[k])
        m["mpp_output_per_day"] = float(self._last_exit_rate)
        names = ("divisions", "deaths", "egress", "homing", "exits", "clearance",
                 "division_waits", "division_pushes", "asymmetric_divisions", "homing_failures",
                 "activations", "quiescence_returns", "cycle_entries")
        for k, name in enumerate(names):
            m[f"total_{name}"] = float(self._counters[k])
        return m

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """Full state as flat numpy arrays (columns, counters, compartments, pending events)."""
        n = self._n
        d: dict[str, np.ndarray] = {f"col_{k}": self._cols[k][:n].copy() for k in _COLUMNS}
        d["counters"] = self._counters.copy()
        d["scalars_i8"] = np.array([self._n, self._next_id, self._last_step, self.seed,
                                    *self.shape], dtype=np.int64)
        d["scalars_f8"] = np.array([self._p_ref, self._demand, self._last_exit_rate,
                                    self._last_t, self.dt_hours, self._deviation],
                                   dtype=np.float64)
        d["compartments"] = self._comp.copy()
        d["output_rate"] = self._out_rate.copy()
        d["output_total"] = self._out_total.copy()
        ev = self.drain_events()
        self._events = [dict(ev)] if ev["t_hours"].size else []
        for k, v in ev.items():
            d[f"event_{k}"] = v.copy()
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; continuing gives bit-identical results.

        Raises
        ------
        ValueError
            If a key is missing or the state belongs to another lattice shape, seed or
            time step.
        """
        need = [f"col_{k}" for k in _COLUMNS] + ["counters", "scalars_i8", "scalars_f8",
                                                  "compartments", "output_rate", "output_total"]
        need += [f"event_{k}" for k in _EVENT_COLUMNS]
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"state dict is missing keys: {', '.join(missing)}")
        si = np.asarray(d["scalars_i8"], dtype=np.int64)
        sf = np.asarray(d["scalars_f8"], dtype=np.float64)
        if si.shape != (7,) or sf.shape != (6,):
            raise ValueError("state dict scalars have the wrong length")
        if tuple(int(v) for v in si[4:7]) != self.shape:
            raise ValueError(f"state dict is for lattice shape {tuple(si[4:7])}, this model has {self.shape}")
        if int(si[3]) != self.seed:
            raise ValueError(f"state dict has seed {int(si[3])}, this model has seed {self.seed}")
        if float(sf[4]) != self.dt_hours:
            raise ValueError(f"state dict has dt_hours {sf[4]}, this model has {self.dt_hours}")
        n = int(si[0])
        for k in _COLUMNS:
            if np.asarray(d[f"col_{k}"]).shape != (n,):
                raise ValueError(f"state dict column {k!r} has shape {np.asarray(d[f'col_{k}']).shape}, expected ({n},)")
        zz = np.asarray(d["col_z"], dtype=np.int64)
        yy = np.asarray(d["col_y"], dtype=np.int64)
        xx = np.asarray(d["col_x"], dtype=np.int64)
        on = zz >= 0
        nz, ny, nx = self.shape
        if on.any():
            inside = ((zz[on] < nz) & (yy[on] >= 0) & (yy[on] < ny) & (xx[on] >= 0)
                      & (xx[on] < nx)).all()
            flat = (zz[on] * ny + yy[on]) * nx + xx[on] if inside else np.zeros(0, np.int64)
            if not inside or not self._enter[flat].all() or np.unique(flat).size != flat.size:
                raise ValueError(
                    "state dict places cells outside the enterable voxels of this lattice "
                    "(or two cells in one voxel): it belongs to another geometry"
                )
        self._cols = {}
        self._n = 0
        self._alloc(max(1024, 1 << max(n - 1, 1).bit_length()))
        for k, dt in _COLUMNS.items():
            self._cols[k][:n] = np.asarray(d[f"col_{k}"], dtype=dt)
        self._n = n
        self._next_id = int(si[1])
        self._last_step = int(si[2])
        self._counters = np.asarray(d["counters"], dtype=np.int64).copy()
        self._p_ref, self._demand, self._last_exit_rate, self._last_t = (float(v) for v in sf[:4])
        self._deviation = float(sf[5])
        self._comp = np.asarray(d["compartments"], dtype=np.float64).copy()
        self._out_rate = np.asarray(d["output_rate"], dtype=np.float64).copy()
        self._out_total = np.asarray(d["output_total"], dtype=np.float64).copy()
        ev = {k: np.asarray(d[f"event_{k}"]).copy() for k in _EVENT_COLUMNS}
        self._events = [ev] if ev["t_hours"].size else []
        self._rebuild_occ()

    def __repr__(self) -> str:
        return f"CellModel({self._n} cells, {self.lattice!r}, dt={self.dt_hours:g} h)"


def _contact_maps(
    lattice: Lattice, opn_range_um: float, endo_factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel contact bits (uint8) and VCAM1 contact in 0..1 (float32), flat, computed once.

    VCAM1 contact = ``min(1, (endo_factor * endothelium faces + stroma faces + own
    stroma) / 6)``: sinusoidal endothelium expresses VCAM1 constitutively and strongly,
    and a cell inside the reticular stroma is enveloped by it.
    """
    lab = lattice.labels
    contact = np.zeros(lab.shape, np.uint8)
    n_endo = np.zeros(lab.shape, np.float32)
    n_str = np.zeros(lab.shape, np.float32)
    endo = lab == Tissue.ENDOTHELIUM
    stroma = lab == Tissue.STROMA
    sno = lab == Tissue.SNO
    ang = sno | (lab == Tissue.ENDOSTEUM)
    for axis in range(3):
        for shift in (-1, 1):
            for src, bit in ((endo, K.C_ENDO), (ang, K.C_ANG1), (sno, K.C_SNO)):
                contact |= np.where(_shifted(src, axis, shift), np.uint8(bit), np.uint8(0))
            n_endo += _shifted(endo, axis, shift)
            n_str += _shifted(stroma, axis, shift)
    n_str += stroma
    vcam = np.minimum((np.float32(endo_factor) * n_endo + n_str) / np.float32(6.0), np.float32(1.0))
    if ang.any() and opn_range_um > 0:
        opn = lattice.dist_endosteum_um <= opn_range_um
        contact |= np.where(opn, np.uint8(K.C_OPN), np.uint8(0))
    return np.ascontiguousarray(contact.ravel()), np.ascontiguousarray(vcam.ravel(), dtype=np.float32)


def _ang1_map(lattice: Lattice, contact: np.ndarray, range_um: float) -> np.ndarray:
    """Per-voxel osteoblast quiescence signal (ANG1/OPN) in 0..1 (float32, flat), computed once.

    1 for a voxel touching endosteum or an SNO (face contact) and, if ``range_um > 0``,
    ``exp(-gap / range_um)`` elsewhere, with ``gap = max(0, d - h)`` the distance between
    the cell surface and the osteoblast surface (``d`` the centre-to-centre distance to
    the nearest endosteal/SNO voxel, ``h`` the voxel edge). ``range_um = 0`` is contact only;
    0 on voxels an HSC cannot occupy.
    """
    sig = ((contact & K.C_ANG1) != 0).astype(np.float32)
    if range_um > 0:
        d = lattice.dist_endosteum_um.ravel()
        if np.isfinite(d).any():
            gap = np.maximum(d - lattice.voxel_um, 0.0)
            sig = np.maximum(sig, np.exp(-gap / range_um).astype(np.float32))
    sig[~lattice.enterable.ravel()] = 0.0  # bone, linings and lumens hold no HSC
    return np.ascontiguousarray(sig, dtype=np.float32)


def _shifted(a: np.ndarray, axis: int, shift: int) -> np.ndarray:
    """``out[i] = a[i + shift]`` along ``axis`` (False beyond the edge)."""
    out = np.zeros_like(a)
    n = a.shape[axis]
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    if shift > 0:
        src[axis] = slice(shift, n)
        dst[axis] = slice(0, n - shift)
    else:
        src[axis] = slice(0, n + shift)
        dst[axis] = slice(-shift, n)
    out[tuple(dst)] = a[tuple(src)]
    return out
