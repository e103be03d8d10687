"""The HSC cellular automaton: :class:`CellModel` and its step.

:class:`CellModel` owns the units and composes the parts: the population storage
(:mod:`niche3d.cells.population`), the lineage compartments
(:mod:`niche3d.cells.lineage`), the parameter vector (:mod:`niche3d.cells.params`) and
the rules, which are kernels in :mod:`niche3d.cells._kernels`. One :meth:`CellModel.step` of ``dt_hours`` does, in order:

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
import zlib

import numba
import numpy as np

from niche3d._threads import ThreadGovernor, untimed
from niche3d.cells import _kernels as K
from niche3d.cells import codes as C
from niche3d.cells import params as P
from niche3d.cells.blood import CLASSES, Blood
from niche3d.cells.codes import EVENT_NAMES, STATE_NAMES, state_code
from niche3d.cells.config import CellsConfig
from niche3d.cells.lineage import LINEAGES, Lineage
from niche3d.cells.population import COLUMNS, EVENT_COLUMNS, EventLog, Population
from niche3d.cells.rng import Purpose, uniform_array
from niche3d.cells.seeding import adhesion_scores, initial_cells, phase_timers
from niche3d.cells.signals import Modifiers, Signals, flat_signals
from niche3d.tissue.codes import Tissue
from niche3d.tissue.contact import ang1_map, contact_maps
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

#: below this many cells the serial twins of the kernels run (thread start-up dominates)
PARALLEL_MIN_CELLS = 20_000


def _signal_key(cxcl: np.ndarray, mscf: np.ndarray) -> tuple[int, int]:
    """Checksums of the CXCL12 and membrane SCF maps (what the cached maps depend on)."""
    return zlib.crc32(memoryview(cxcl).cast("B")), zlib.crc32(memoryview(mscf).cast("B"))


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
    reach_voxels : int
        A daughter's reach in face steps (``fate.daughter_reach_um``, at least 1).
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
            raise TypeError(f"config must be a CellsConfig, got {type(config).__name__}")
        if not isinstance(lattice, Lattice):
            raise TypeError(f"lattice must be a niche3d Lattice, got {type(lattice).__name__}")
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
        # a daughter's reach in face steps (at least the mother's face neighbours)
        self.reach_voxels = max(1, int(round(config.fate.daughter_reach_um / h)))
        self.lodging_reach_voxels = int(round(config.blood.lodging_reach_um / h))

        # static per-voxel maps (computed once; O(voxels) only here)
        self._enter = np.ascontiguousarray(lattice.enterable.astype(np.uint8).ravel())
        self._mark = np.zeros(self._enter.size, np.uint8)  # scratch of the daughters' walk
        # thread governors of the parallel parts (serial kernels need none: a no-op one)
        self._governors = {"niche": ThreadGovernor(), "cells": ThreadGovernor(),
                           "serial": untimed}
        self._contact, self._vcam = contact_maps(
            lattice, config.death.opn_range_um, config.adhesion.endothelial_vcam1_factor
        )
        self._ang1 = ang1_map(lattice, self._contact, config.cycle.ang1_range_um)
        touch_endo = (self._contact & C.C_ENDO) != 0
        self._home_sites = np.flatnonzero(touch_endo & (self._enter != 0)).astype(np.int64)

        self._par = self._base_params()
        self._pop = Population(self.shape, self._enter)
        self._events = EventLog()
        self._counters = np.zeros(C.N_COUNTERS, dtype=np.int64)
        self._lineage = Lineage(config.lineage, self.dt_hours)
        # the demand set point is the body's: the MPP inflow per mm³ of marrow, times the
        # block's marrow volume (never the number of HSCs seeded)
        self.marrow_mm3 = float(np.count_nonzero(self._enter)) * lattice.voxel_volume_mm3
        self._lineage.set_homeostasis(self.marrow_mm3)
        bc = config.blood
        f = bc.block_fraction if bc.block_fraction is not None else min(
            1.0, self.marrow_mm3 / bc.mouse_marrow_mm3)
        if f <= 0.0:
            raise ValueError("the lattice has no marrow: the block is no fraction of a mouse's marrow")
        self.block_fraction = float(f)
        self._blood = Blood(bc, self.block_fraction, self.dt_hours)
        self._site_kind: np.ndarray | None = None
        # niche_sites() of the current state: each record asks twice (metrics and store)
        # ((version, niche-signal key), (site indices, codes)): see _site_codes
        self._sites_cache: tuple[tuple[object, ...], tuple[np.ndarray, np.ndarray]] | None = None
        self._version = 0  # bumped whenever cells may have moved, appeared or left
        # the niche signal per voxel (flat, 0 off the marrow) and the key of the signals it
        # was derived from; see _update_niche
        self._nsig = np.zeros(self._enter.size, np.float64)
        self._nsig_key: tuple[int, int] | None = None
        self._accept_cache: tuple[tuple, np.ndarray] | None = None
        self._marrow_vox = np.flatnonzero(self._enter).astype(np.int64)
        self._last_step = -1
        self._last_t = 0.0

    # ------------------------------------------------------------------ parameters
    def _base_params(self) -> np.ndarray:
        return P.pack(self.config, {"p_hop": self.p_hop, "p_hop_mpp": self.p_hop_mpp,
                                    "dt_hours": self.dt_hours,
                                    "reach_voxels": self.reach_voxels})

    @property
    def n_cells(self) -> int:
        """Number of living cells (on the lattice and circulating)."""
        return self._pop.n

    @property
    def _occ(self) -> np.ndarray:
        # the occupancy grid (int32 per voxel, -1 = empty, else the cell's slot); tests read it
        return self._pop.occ

    def _lineage_step(self, exits: int, cyto: float) -> None:
        # one step of the lineage compartments alone (the lineage tests drive it directly)
        self._lineage.step(exits, cyto)

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
        if code not in C.LATTICE_STATES:
            raise ValueError(
                f"state = {state!r} cannot be placed on the lattice; allowed: "
                + ", ".join(STATE_NAMES[k] for k in C.LATTICE_STATES)
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
        if flat.size and (self._pop.occ[flat] >= 0).any():
            bad = int(flat[self._pop.occ[flat] >= 0][0])
            raise ValueError(f"voxel {np.unravel_index(bad, self.shape)} is already occupied")
        if np.unique(flat).size != flat.size:
            raise ValueError("z, y, x contain the same voxel more than once")
        b = np.broadcast_to(np.asarray(bound, dtype=bool), flat.shape)
        m = flat.size
        ids = self._pop.append(m, code, donor=bool(donor))
        sl = slice(self._pop.n - m, self._pop.n)
        c = self._pop.cols
        c["z"][sl] = zz
        c["y"][sl] = yy
        c["x"][sl] = xx
        c["bound"][sl] = b.astype(np.uint8) if code != C.S_MPP else 0
        self._pop.occ[flat] = np.arange(self._pop.n - m, self._pop.n, dtype=np.int32)
        self._init_timers(sl, code, residual)
        self._events.births(self._pop, ids, t_hours)
        self._version += 1
        return ids

    def add_circulating(self, n: int, *, donor: bool = True, state: str | int = "active_g0",
                        t_hours: float = 0.0) -> None:
        """Put ``n`` HSCs into the mouse's blood (a transplant dose, per mouse).

        They circulate in the blood compartment (:mod:`niche3d.cells.blood`); the block
        receives its share of their arrests, and those that cross the endothelium lodge
        as cells in ``state``.

        Parameters
        ----------
        n
            Number of cells (>= 0), per mouse.
        donor
            Donor flag of the cells.
        state
            State they take when they lodge: ``dormant`` or ``active_g0``.
        t_hours
            Time of the injection (kept for the signature; the cells enter at once).
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n = {n!r} must be an integer >= 0")
        code = state if isinstance(state, int | np.integer) else state_code(str(state))
        if int(code) not in (C.S_DORMANT, C.S_G0):
            raise ValueError(f"state = {state!r} must be 'dormant' or 'active_g0'")
        self._blood.add(float(n), donor=bool(donor), dormant=int(code) == C.S_DORMANT)

    def irradiate(self, survival: float, step_index: int, t_hours: float) -> int:
        """Whole-body irradiation (or another non-selective conditioning) at ``t_hours``:
        each HSC and MPP in the block survives with probability ``survival``, and so does
        each HSC in the blood and each cell of the progenitor compartments (expected
        values). The other marrow is the block's mean field and follows it. Killed cells
        leave their niche sites free. Returns the number of cells killed in the block.

        Parameters
        ----------
        survival
            Surviving share in [0, 1] (e.g. ``exp(-dose / D0)``).
        step_index
            Step of the exposure (a key of the per-cell random numbers).
        t_hours
            Time written into the death events.
        """
        if not (isinstance(survival, int | float | np.floating) and 0.0 <= float(survival) <= 1.0):
            raise ValueError(f"survival = {survival!r} must be a number in [0, 1]")
        if isinstance(step_index, bool) or not isinstance(step_index, int | np.integer) \
                or step_index < 0:
            raise ValueError(f"step_index = {step_index!r} must be an integer >= 0")
        n = self._pop.n
        c = self._pop.cols
        alive = np.flatnonzero(c["state"][:n] != C.S_DEAD)
        u = uniform_array(self.seed, int(step_index), c["ids"][alive], Purpose.IRRADIATION)
        dead = alive[u >= float(survival)]
        if dead.size:
            self._events.deaths(self._pop, dead, float(t_hours))
            flat, on = self._pop._flat(n)
            self._pop.occ[flat[dead][on[dead]]] = -1
            c["state"][dead] = C.S_DEAD
            self._counters[C.N_DEATH] += dead.size
            self._pop.compact()
        self._blood.counts *= float(survival)
        self._lineage.comp *= float(survival)
        self._version += 1
        return int(dead.size)

    def _init_timers(self, sl: slice, code: int, residual: bool) -> None:
        ids = self._pop.cols["ids"][sl]
        if code in (C.S_G1, C.S_SG2M) and ids.size:
            self._pop.cols["timer"][sl] = phase_timers(self.seed, ids, code, self._par, residual)

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
        if self._pop.next_id != 0:
            raise ValueError("seed_initial() must be called once, before any cell is added")
        cxcl, _, mscf = flat_signals(signals, self.shape)
        self._update_niche(cxcl, mscf, self._par, force=True)
        n, groups = initial_cells(self.config, self._par, self._enter, self._contact,
                                  self._vcam, self.shape, self.lattice.voxel_volume_mm3,
                                  self.seed, cxcl, mscf)
        for code, zz, yy, xx, bnd in groups:
            self.add_cells(zz, yy, xx, state=code, bound=bnd, residual=True)
        if n > 0:
            self._pop.sort_by_id()

    def _adhesion_scores(self, vox: np.ndarray, cxcl: np.ndarray, mscf: np.ndarray,
                         p: np.ndarray) -> np.ndarray:
        """Vector form of the kernels' adhesion score at voxels ``vox`` (no modifiers)."""
        return adhesion_scores(vox, cxcl, mscf, self._contact, self._vcam, p)

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
            raise TypeError(f"modifiers must be a niche3d.cells.Modifiers, got {type(modifiers).__name__}")
        modifiers.validated()
        cxcl, scf, mscf = flat_signals(signals, self.shape)
        step = int(step_index)
        t0 = float(t_hours)
        par = self._par.copy()
        par[P.K_DEMAND] = self._lineage.demand
        par[P.K_BLOCK] = float(modifiers.cxcr4_blockade)
        par[P.K_PROT] = float(modifiers.protease)
        par[P.K_CYTO] = float(modifiers.cytotoxic)
        # one checksum of the signals per step, shared by the niche map and the homing
        # acceptance (both are re-derived only when the signals or modifiers changed)
        sig_key = _signal_key(cxcl, mscf)
        self._update_niche(cxcl, mscf, par, key=sig_key)
        nsig = self._nsig
        c = self._pop.cols
        s = self._pop.scratch
        occ = self._pop.occ
        nz, ny, nx = self.shape
        n = self._pop.n

        par_ok = n >= PARALLEL_MIN_CELLS and numba.get_num_threads() > 1
        propose = K.propose_moves_par if par_ok else K.propose_moves_ser
        resolve = K.resolve_moves_par if par_ok else K.resolve_moves_ser
        move = K.apply_moves_par if par_ok else K.apply_moves_ser
        rules = K.cell_rules_par if par_ok else K.cell_rules_ser
        # 1. motility and 2. rules: in parallel above PARALLEL_MIN_CELLS cells, with one
        # thread or all, whichever the governor has timed faster lately (niche3d._threads)
        with self._governors["cells" if par_ok else "serial"]() as work:
            work.units = max(n, 1)
            if n > 0 and (par[P.K_PHOP] > 0 or par[P.K_PHOP_MPP] > 0):
                for sub in range(self.n_micro):
                    propose(n, c["ids"], c["state"], c["bound"], c["z"], c["y"], c["x"],
                            c["lastdir"], occ, self._enter, cxcl, nsig, nz, ny, nx, par,
                            self.seed, step, sub, s["target"], s["tdir"], s["prio"])
                    resolve(n, s["target"], s["prio"], occ, nz, ny, nx, s["win"])
                    move(n, s["target"], s["tdir"], s["win"], occ, c["z"], c["y"],
                         c["x"], c["lastdir"], ny, nx)
            rules(n, c["ids"], c["state"], c["bound"], c["z"], c["y"], c["x"], c["timer"],
                  c["lag"], cxcl, scf, mscf, self._contact, self._vcam, self._ang1, nsig, nz,
                  ny, nx, par, self.seed, step, t0, s["act"], s["ev_time"], s["changed"],
                  s["k_egress"])
        # egress hazards per blood class, for the other marrow's mean field
        rates = self._class_sums(s["k_egress"][:n], c["state"][:n] == C.S_DORMANT,
                                 c["donor"][:n] != 0)
        n_div = int(np.count_nonzero(s["act"][:n] == C.A_DIVIDE))
        self._pop.ensure(n + n_div)
        c = self._pop.cols
        s = self._pop.scratch
        # 3. serial apply
        cap_ev = 2 * (int(np.count_nonzero(s["act"][:n])) + int(np.count_nonzero(s["changed"][:n]))) + 1
        ev_t = np.empty(cap_ev, np.float64)
        ev_i8 = np.empty((cap_ev, 3), np.int8)
        ev_cell = np.empty((cap_ev, 2), np.int64)
        ev_i4 = np.empty((cap_ev, 6), np.int32)
        exits_before = int(self._counters[C.N_EXIT])
        n_total, next_id, ne = K.apply_actions(
            n, n, self._pop.next_id, c["ids"], c["parent"], c["generation"], c["divisions"],
            c["state"], c["prev_state"], c["z"], c["y"], c["x"], c["bound"], c["donor"],
            c["timer"], c["lag"], c["lastdir"], c["birth"], s["act"], s["ev_time"],
            s["changed"], occ, self._enter, nsig, self._mark, nz, ny, nx, par,
            self.seed, step, t0 + self.dt_hours, ev_t, ev_i8, ev_cell, ev_i4, self._counters)
        self._pop.n = int(n_total)
        self._pop.next_id = int(next_id)
        self._events.kernel_rows(ne, ev_t, ev_i8, ev_cell, ev_i4)
        # cells that left for the blood, by class (read before compaction)
        eg = np.flatnonzero(s["act"][:n] == C.A_EGRESS)
        left = self._class_sums(np.ones(eg.size), c["prev_state"][eg] == C.S_DORMANT,
                                c["donor"][eg] != 0)
        # 4. compaction, compartments, blood and homing into the block
        self._pop.compact()
        exits = int(self._counters[C.N_EXIT]) - exits_before
        self._lineage.step(exits, float(modifiers.cytotoxic))
        accept = self._acceptance(cxcl, mscf, par, sig_key)
        attempts = self._blood.step(left, rates, float(accept.mean()) if accept.size else 0.0,
                                    self.seed, step)
        self._lodge(attempts, accept, step, t0 + self.dt_hours)
        self._last_step = step
        self._last_t = t0 + self.dt_hours
        self._version += 1

    # ------------------------------------------------------------------ blood and homing
    @staticmethod
    def _class_sums(values: np.ndarray, dormant: np.ndarray, donor: np.ndarray) -> np.ndarray:
        # sums of values per blood class (donor, dormant) in the order of blood.CLASSES
        return np.array([float(values[(donor == d) & (dormant == q)].sum()) for d, q in CLASSES])

    def _acceptance(self, cxcl: np.ndarray, mscf: np.ndarray, par: np.ndarray,
                    sig_key: tuple[int, int]) -> np.ndarray:
        """Transendothelial migration probability ``s / (s + homing_half)`` at each
        endothelial homing site (``s`` the adhesion score with the step's modifiers);
        kept until the signals or a modifier change (a pure function of them)."""
        if self._home_sites.size == 0:
            return np.zeros(0)
        key = (sig_key, float(par[P.K_BLOCK]), float(par[P.K_PROT]))
        if self._accept_cache is not None and self._accept_cache[0] == key:
            return self._accept_cache[1]
        sc = adhesion_scores(self._home_sites, cxcl, mscf, self._contact, self._vcam, par)
        acc = sc / (sc + self.config.blood.homing_half)
        acc.flags.writeable = False
        self._accept_cache = (key, acc)
        return acc

    def _lodge(self, attempts: np.ndarray, accept: np.ndarray, step: int, t_end: float) -> None:
        """Arrests in the block: each picks an endothelial site, crosses with its
        acceptance and migrates to the free voxel of highest niche signal within
        ``lodging_reach_um`` (:func:`_kernels.settle`); failures return to the blood."""
        total = int(attempts.sum())
        if total == 0:
            return
        nsite = self._home_sites.size
        keys = np.arange(total, dtype=np.int64)
        if nsite == 0:
            pick = np.zeros(total, np.int64)
            ok = np.zeros(total, bool)
        else:
            pick = np.minimum((uniform_array(self.seed, step, keys, Purpose.HOME_SITE) * nsite)
                              .astype(np.int64), nsite - 1)
            ok = uniform_array(self.seed, step, keys, Purpose.HOME_ACCEPT) < accept[pick]
        vox = self._home_sites[pick] if nsite else np.zeros(total, np.int64)
        place = uniform_array(self.seed, step, keys, Purpose.HOME_PLACE)
        cls = np.repeat(np.arange(len(CLASSES)), attempts)
        nz, ny, nx = self.shape
        occ = self._pop.occ
        for j, (donor, dormant) in enumerate(CLASSES):
            sel = np.flatnonzero(cls == j)
            good = []
            for k in sel:  # in attempt order: a voxel taken by an earlier attempt is not free
                if not ok[k]:
                    continue
                g = int(K.settle(int(vox[k]), self.lodging_reach_voxels, nz, ny, nx, occ,
                                 self._enter, self._nsig, self._mark, float(place[k]), self._par))
                if g >= 0:
                    occ[g] = 0  # held until the cells are appended below
                    good.append(g)
            fail = sel.size - len(good)
            if fail:
                self._blood.add(float(fail), donor=donor, dormant=dormant)
                self._counters[C.N_HOME_FAIL] += fail
            if not good:
                continue
            g = np.array(sorted(good), np.int64)
            zz, rem = np.divmod(g, ny * nx)
            yy, xx = np.divmod(rem, nx)
            code = C.S_DORMANT if dormant else C.S_G0
            ids = self._pop.append(g.size, code, donor=donor)
            sl = slice(self._pop.n - g.size, self._pop.n)
            col = self._pop.cols
            col["z"][sl], col["y"][sl], col["x"][sl] = zz, yy, xx
            col["bound"][sl] = 0
            self._pop.occ[g] = np.arange(self._pop.n - g.size, self._pop.n, dtype=np.int32)
            self._events.births(self._pop, ids, t_end, kind=C.E_HOMING)
            self._counters[C.N_HOMING] += g.size
            self._blood.lodged(g.size, donor)

    # ------------------------------------------------------------------ outputs
    def occupied_flat(self) -> np.ndarray:
        """Flat voxel indices (int64) of the cells on the lattice, in id order."""
        return self._pop.occupied_flat()

    def _update_niche(self, cxcl: np.ndarray, mscf: np.ndarray, par: np.ndarray,
                      force: bool = False, key: tuple[int, int] | None = None) -> None:
        """Re-derive the niche signal map when the signals changed and no transient
        modifier (protease, CXCR4 blockade) is in force.

        Niche sites are the niche's cellular structure, where ligands are produced and
        presented: they follow the tissue and lasting changes of its signals (a knockout,
        a new steady state), while a drug's transient protease or blockade changes how
        HSCs are held and released, not where the niches are. While one is active the last
        map holds.
        """
        if not force and (par[P.K_PROT] != 0.0 or par[P.K_BLOCK] != 0.0):
            return
        if key is None:
            key = _signal_key(cxcl, mscf)
        if not force and key == self._nsig_key:
            return
        nz, ny, nx = self.shape
        sig = np.empty(self._marrow_vox.size, np.float64)
        with self._governors["niche"]():  # one thread or all, whichever is faster now
            K.niche_signal_map(self._marrow_vox, nz, ny, nx, cxcl, mscf, self._contact, par, sig)
        self._nsig[self._marrow_vox] = sig
        self._nsig_key = key

    def niche_signal(self) -> np.ndarray:
        """Niche signal ``S`` at every voxel ((z, y, x) float64, 0 where no HSC can sit),
        as the cell rules read it (see :meth:`_update_niche` and
        :class:`~niche3d.cells.config.FateConfig`).

        Raises
        ------
        RuntimeError
            Before the first :meth:`seed_initial` or :meth:`step`: the signals are not known.
        """
        if self._nsig_key is None:
            raise RuntimeError("niche sites need the signals of a step: call seed_initial() or step() first")
        return self._nsig.reshape(self.shape).copy()

    def niche_sites(self) -> np.ndarray:
        """Niche sites and who holds them, one uint8 per voxel (z, y, x): 0 not a site,
        1 free site, 2 site held by an HSC, 3 site taken by another cell (an MPP).

        A site is an enterable voxel whose :meth:`niche_signal` reaches
        ``cells.fate.site_threshold``.
        """
        idx, codes = self._site_codes()
        out = np.zeros(self._nsig.size, np.uint8)
        out[idx] = codes
        return out.reshape(self.shape)

    def _site_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the niche sites and their :meth:`niche_sites` codes (1, 2, 3).

        O(sites) per record: the sites are found again only when the niche signal
        changed (a few thousand on a femur, among 2.6e7 voxels), and only their voxels
        are looked up for occupancy."""
        if self._nsig_key is None:
            self.niche_signal()  # raises the explanatory error
        # cells move only in step(), add_cells() and load_state_dict(), which bump the
        # version or clear the cache; the sites change only with the signal's key
        key = (self._version, self._nsig_key)
        if self._sites_cache is not None and self._sites_cache[0] == key:
            return self._sites_cache[1]
        if self._sites_cache is not None and self._sites_cache[0][1] == self._nsig_key:
            idx = self._sites_cache[1][0]
        else:
            idx = np.flatnonzero(self._nsig >= self._par[P.K_SITE])
        who = self._pop.occ[idx]
        codes = np.ones(idx.size, np.uint8)
        held = who >= 0
        st = self._pop.cols["state"]
        codes[held] = np.where(st[who[held]] <= C.S_SG2M, 2, 3).astype(np.uint8)
        self._sites_cache = (key, (idx, codes))
        return idx, codes

    def site_kinds(self) -> np.ndarray:
        """Niche kind of every voxel by the nearest niche structure, uint8 (z, y, x):
        1 endosteal (endosteum or SNO nearest), 2 sinusoidal/perivascular (sinusoid wall),
        3 arteriolar (arteriole); ties go to endosteal, then arteriolar; 0 off the marrow.
        Computed once (:meth:`~niche3d.tissue.Lattice.nearest`: three distance maps in
        turn, kept on disk)."""
        if self._site_kind is None:
            lat = self.lattice
            # nearest of (1) endosteum/SNO, (2) arteriole, (3) sinusoid; 0: none anywhere
            near = lat.nearest((Tissue.ENDOSTEUM, Tissue.SNO), (Tissue.ARTERIOLE,),
                               (Tissue.SINUSOID, Tissue.ENDOTHELIUM))
            kind = np.array([2, 1, 3, 2], np.uint8)[near]
            kind[~lat.enterable] = 0
            self._site_kind = kind
        return self._site_kind

    def snapshot(self) -> dict[str, np.ndarray]:
        """One row per living cell (on the lattice and circulating), sorted by id.

        Columns: track_id (int64), parent (int64, -1 for founders), generation (int32,
        depth in the lineage tree), state (int8, code into :data:`STATE_NAMES`), z, y, x
        (int32 voxel, -1 when circulating), bound (bool), donor (bool), divisions (int32,
        divisions in the cell's ancestry: label-dilution age), birth_hours (float64),
        phase_hours_left (float64, remaining G1 or S/G2/M time).
        """
        return self._pop.snapshot()

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
        return self._events.drain()

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
        lodging attempts), ``hsc_donor`` and ``donor_chimerism`` (donor share of the
        block's HSCs).
        """
        n = self._pop.n
        c = self._pop.cols
        st = c["state"][:n]
        counts = np.bincount(st.astype(np.int64), minlength=len(STATE_NAMES))
        m: dict[str, float] = {"n_cells": float(n)}
        for code, name in enumerate(STATE_NAMES):
            m[f"n_{name}"] = float(counts[code])
        hsc = sum(counts[k] for k in C.HSC_STATES)
        m["hsc_total"] = float(hsc)
        bl = self._blood
        blood = float(bl.counts.sum())
        m["hsc_marrow_and_blood"] = float(hsc) + self.block_fraction * blood
        den = max(int(hsc), 1)
        m["frac_g0"] = float(counts[C.S_DORMANT] + counts[C.S_G0]) / den if hsc else 0.0
        m["frac_sg2m"] = float(counts[C.S_SG2M]) / den if hsc else 0.0
        m["frac_dormant"] = float(counts[C.S_DORMANT]) / den if hsc else 0.0
        is_hsc = st <= C.S_SG2M
        m["bound_fraction"] = float(np.count_nonzero(c["bound"][:n][is_hsc])) / den if hsc else 0.0
        m["blood_pool"] = blood
        m["blood_hsc_per_mouse"] = blood
        m["blood_hsc_per_ul"] = blood / self.config.blood.blood_volume_ul
        m["blood_donor_per_mouse"] = float(bl.counts[[k for k, c in enumerate(CLASSES) if c[0]]].sum())
        m["block_fraction"] = self.block_fraction
        m["hsc_per_mouse"] = float(hsc) / self.block_fraction
        m["blood_inflow_per_day"] = bl.last_inflow_per_day
        m["marrow_exchange_per_day"] = bl.last_inflow_per_day / m["hsc_per_mouse"] if hsc else math.nan
        m["blood_residence_minutes"] = 60.0 / bl.k_out if bl.k_out > 0 else math.inf
        for k, v in bl.totals.items():
            m[f"mouse_{k}_total"] = v
        m["donor_cells"] = float(np.count_nonzero(c["donor"][:n]))
        donor_hsc = int(np.count_nonzero((c["donor"][:n] != 0) & is_hsc))
        m["hsc_donor"] = float(donor_hsc)
        m["donor_chimerism"] = float(donor_hsc) / den if hsc else math.nan
        m.update(self._lineage.metrics())
        for k, name in enumerate(C.COUNTER_NAMES):
            m[f"total_{name}"] = float(self._counters[k])
        cnt = self._counters
        asym = cnt[C.N_ASYM_BORDER] + cnt[C.N_ASYM_SAME]
        m["asymmetric_border_share"] = float(cnt[C.N_ASYM_BORDER]) / asym if asym else math.nan
        m.update(self._niche_metrics(int(hsc)))
        return m

    def _niche_metrics(self, hsc: int) -> dict[str, float]:
        keys = ["niche_sites", "niche_sites_free", "niche_sites_hsc", "niche_sites_other",
                "hsc_on_site_fraction"]
        kinds = ("endosteal", "sinusoidal", "arteriolar")
        keys += [f"niche_sites_{w}_{k}" for k in kinds for w in ("total", "free", "hsc")]
        if self._nsig_key is None:
            return dict.fromkeys(keys, math.nan)
        idx, sites = self._site_codes()
        kind = self.site_kinds().ravel()[idx]
        m = {"niche_sites": float(sites.size),
             "niche_sites_free": float(np.count_nonzero(sites == 1)),
             "niche_sites_hsc": float(np.count_nonzero(sites == 2)),
             "niche_sites_other": float(np.count_nonzero(sites == 3))}
        m["hsc_on_site_fraction"] = m["niche_sites_hsc"] / hsc if hsc else math.nan
        for code, k in enumerate(kinds, start=1):
            here = kind == code
            m[f"niche_sites_total_{k}"] = float(np.count_nonzero(here & (sites > 0)))
            m[f"niche_sites_free_{k}"] = float(np.count_nonzero(here & (sites == 1)))
            m[f"niche_sites_hsc_{k}"] = float(np.count_nonzero(here & (sites == 2)))
        return m

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """Full state as flat numpy arrays (columns, counters, compartments, pending events)."""
        lin = self._lineage
        d: dict[str, np.ndarray] = self._pop.state_dict()
        d["counters"] = self._counters.copy()
        d["scalars_i8"] = np.array([self._pop.n, self._pop.next_id, self._last_step, self.seed,
                                    *self.shape], dtype=np.int64)
        d["scalars_f8"] = np.array([lin.p_ref, lin.demand, lin.last_exit_rate,
                                    self._last_t, self.dt_hours, lin.deviation],
                                   dtype=np.float64)
        d["compartments"] = lin.comp.copy()
        d["blood"] = self._blood.state()
        d["niche_signal"] = self._nsig.copy()
        d["niche_key"] = np.array(self._nsig_key if self._nsig_key is not None else (-1, -1),
                                  dtype=np.int64)
        d["output_rate"] = lin.out_rate.copy()
        d["output_total"] = lin.out_total.copy()
        d.update(self._events.state_dict())
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; continuing gives bit-identical results.

        Raises
        ------
        ValueError
            If a key is missing or the state belongs to another lattice shape, seed or
            time step.
        """
        need = [f"col_{k}" for k in COLUMNS] + ["counters", "scalars_i8", "scalars_f8",
                                                  "compartments", "output_rate", "output_total",
                                                  "blood", "niche_signal", "niche_key"]
        need += [f"event_{k}" for k in EVENT_COLUMNS]
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
        self._pop.load_state_dict(d, int(si[0]), int(si[1]))
        self._last_step = int(si[2])
        self._counters = np.asarray(d["counters"], dtype=np.int64).copy()
        lin = self._lineage
        lin.p_ref, lin.demand, lin.last_exit_rate, self._last_t = (float(v) for v in sf[:4])
        lin.deviation = float(sf[5])
        lin.comp = np.asarray(d["compartments"], dtype=np.float64).copy()
        lin.out_rate = np.asarray(d["output_rate"], dtype=np.float64).copy()
        lin.out_total = np.asarray(d["output_total"], dtype=np.float64).copy()
        self._blood.load_state(d["blood"])
        nsig = np.asarray(d["niche_signal"], np.float64)
        if nsig.shape != self._nsig.shape:
            raise ValueError(f"state dict niche_signal has shape {nsig.shape}, expected {self._nsig.shape}")
        self._nsig = nsig.copy()
        k = [int(v) for v in np.asarray(d["niche_key"], np.int64)]
        self._nsig_key = None if k == [-1, -1] else (k[0], k[1])
        self._events.load_state_dict(d)
        self._sites_cache = None

    def __repr__(self) -> str:
        return f"CellModel({self._pop.n} cells, {self.lattice!r}, dt={self.dt_hours:g} h)"

