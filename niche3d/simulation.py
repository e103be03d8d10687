"""The multi-rate step loop that ties tissue, fields, cells and interventions together.

One cell step (``run.dt_hours``) is::

    effects = interventions at t            (doses, knockouts)
    if effects changed by > 1 % or the solve interval (fields.solve_every_hours) passed:
        fields.solve(cells as sinks)        (quasi-steady, warm-started)
    cells.step(signals, modifiers)          (motility sub-steps, adhesion, cycle, fate, blood)
    t += dt; record at every output interval; checkpoint every N records

Examples
--------
>>> from niche3d import Scenario, Simulation
>>> sc = Scenario.default().with_overrides({"domain.shape": [24, 32, 32], "run.days": 1})
>>> sim = Simulation(sc)                       # doctest: +SKIP
>>> sim.run(days=2)                            # doctest: +SKIP
>>> sim.metrics()["hsc_total"]                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from niche3d._jit import set_threads
from niche3d._version import code_version
from niche3d.cells import EVENT_NAMES, STATE_NAMES, CellModel, Modifiers, Signals
from niche3d.fields import FieldSet
from niche3d.guards import SimulationError, check_cells, check_field
from niche3d.interventions import Effects, InterventionSchedule
from niche3d.names import CXCL12, MEMBRANE_SCF, SCF
from niche3d.scenario import Scenario, ScenarioError
from niche3d.tissue import Lattice, build_lattice

__all__ = ["Simulation"]

ProgressFn = Callable[[float, float], None]


def _check_checkpoint(meta: dict[str, Any], pos: dict[str, Any], committed: dict[str, Any]) -> None:
    """The position and counters of a checkpoint: integers within what the store holds."""
    def count(v: Any, what: str, top: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            raise ValueError(f"{what} = {v!r}, not an integer in 0..{top}")
        return v

    n = count(pos.get("n_records_written"), "checkpoint record", committed["n_records_written"])
    rows = pos.get("rows")
    if not isinstance(rows, dict):
        raise ValueError(f"checkpoint rows = {rows!r}, not a table of row counts")
    for t, top in committed["rows"].items():
        count(rows.get(t), f"checkpoint rows of {t}", top)
    if count(meta.get("records_written"), "records_written", n) != n:
        raise ValueError(f"records_written = {meta['records_written']} but the checkpoint is at "
                         f"record {n}")
    count(meta.get("step_index"), "step_index", 10**12)
    last = meta.get("last_solve_step")
    if isinstance(last, bool) or not isinstance(last, int):
        raise ValueError(f"last_solve_step = {last!r}, not an integer")
    t = meta.get("effects_t_hours")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ValueError(f"effects_t_hours = {t!r}, not a number")


class Simulation:
    """A niche3d run: build from a scenario, step, run, read state, write a store.

    Parameters
    ----------
    scenario
        A validated :class:`~niche3d.scenario.Scenario`.
    out
        Run store path, or None to keep everything in memory.
    overwrite
        Replace an existing run store at ``out`` (never anything that is not a store).
    lattice
        Use this lattice instead of building one from ``scenario.tissue``.

    Notes
    -----
    Calling :meth:`run` again continues from the current time and keeps writing to the
    same store. The same scenario and seed give identical results for any thread count.
    """

    def __init__(
        self,
        scenario: Scenario,
        out: str | Path | None = None,
        *,
        overwrite: bool = False,
        lattice: Lattice | None = None,
        _restore: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a niche3d Scenario, got {type(scenario).__name__}")
        # before any expensive work: Python code may have removed a field after validation
        scenario.check()
        self.scenario = scenario
        rc = scenario.run
        # the store's writer lock and output checks come before any set-up (a second
        # writer, an existing store without overwrite, an unwritable directory)
        self._lock: Any = None
        if out is not None and _restore is None:
            from niche3d.io.lock import WriterLock
            from niche3d.io.writer import check_free_space, check_target, first_records_bytes

            self._lock = WriterLock(out).acquire()
            check_target(out, overwrite=overwrite)
            n_fields = len(scenario.fields.diffusible) if scenario.output.fields else 0
            check_free_space(out, first_records_bytes(scenario.domain.shape, n_fields))
        self.threads = set_threads(rc.threads)
        self.dt_hours = float(rc.dt_hours)
        self.record_hours = float(scenario.output.interval_hours)
        ratio = self.record_hours / self.dt_hours
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ScenarioError(
                f"output.interval_hours = {self.record_hours:g} must be a whole multiple of "
                f"run.dt_hours = {self.dt_hours:g}"
            )
        self._steps_per_record = int(round(ratio))
        solve_every = scenario.fields.solve_every_hours / self.dt_hours
        self._steps_per_solve = max(1, int(round(solve_every)))

        self.lattice = lattice if lattice is not None else build_lattice(
            scenario.domain.shape, scenario.domain.voxel_um, scenario.tissue, seed=rc.seed
        )
        self._marrow = self.lattice.enterable
        self.fields = FieldSet(self.lattice, scenario.fields)
        try:
            self.schedule = InterventionSchedule(scenario.interventions, self.fields.names)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
        self.cells = CellModel(
            scenario.cells,
            self.lattice,
            seed=rc.seed,
            dt_hours=self.dt_hours,
            motility_substeps=rc.motility_substeps,
        )
        self.step_index = 0
        self.records_written = 0
        self._effects: Effects | None = None
        self._effects_t = 0.0
        self._last_solve_step = -(10**9)
        self._cancel = threading.Event()
        self.writer: Any = None
        self.out = Path(out) if out is not None else None

        if _restore is not None:
            state, meta = _restore
            self._load_state(state, meta)
        else:
            self._apply_effects(force=True)
            self.fields.solve(None)
            self.cells.seed_initial(self._signals())
            # every seeded cell is new: a full solve, no local correction to try first
            self.fields.solve(self.cells.occupied_flat())
            self._last_solve_step = 0

        if self.out is not None and _restore is None:
            from niche3d.io import RunWriter
            from niche3d.io.background import BackgroundWriter

            self.writer = RunWriter.create(
                self.out,
                scenario=scenario,
                labels=self.lattice.labels,
                voxel_um=self.lattice.voxel_um,
                record_hours=self.record_hours,
                n_records=self._records_for(rc.days),
                fields=[(n, self.fields.units[n], self.fields.windows[n]) for n in self.fields.names]
                if scenario.output.fields
                else [],
                seed=rc.seed,
                code_version=code_version(),
                dt_hours=self.dt_hours,
                overwrite=overwrite,
                niche=True,  # labels/niche: the niche-site map of every record (_record)
                keepbits=scenario.output.field_keepbits,
            )
            self.writer.set_categories("cells", "state", STATE_NAMES)
            self.writer.set_categories("events", "kind", EVENT_NAMES)
            self.writer.set_categories("events", "state", STATE_NAMES)
            self.writer.set_categories("events", "other_state", STATE_NAMES)
            self.writer = BackgroundWriter(self.writer)
            self._record()
            # a checkpoint right after set-up: a run killed before its first interval
            # resumes from record 0 instead of being lost
            if self.records_written % scenario.output.checkpoint_every_records != 0:
                self._queue_checkpoint()
            self.writer.flush()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_toml(cls, path: str | Path, out: str | Path | None = None, **kw: Any) -> Simulation:
        """Build from a TOML scenario file (``overrides=[...]`` accepted)."""
        from niche3d.scenario import load_scenario

        overrides = kw.pop("overrides", None)
        return cls(load_scenario(path, overrides), out, **kw)

    @classmethod
    def resume(cls, path: str | Path) -> Simulation:
        """Reopen a run store and continue from its last checkpoint.

        Records and events written after that checkpoint are dropped and recomputed
        (bit-identically: the random streams are counter-based). A store killed before
        its first checkpoint (written right after set-up) is set up again from its
        scenario, seed and record-0 tissue and rewritten from record 0.
        """
        from niche3d.io import RunWriter, open_run
        from niche3d.io.background import BackgroundWriter
        from niche3d.io.lock import WriterLock, lock_path

        if not Path(path).is_dir() and not lock_path(path).exists():
            from niche3d.io import check_store

            check_store(path)  # "does not exist" / "not a directory", no lock file made
        lock = WriterLock(path).acquire()  # before anything is read or rewound
        run = open_run(path)
        scenario = run.scenario  # a scenario this code cannot run is refused before any write
        writer = RunWriter.open_append(path)  # (which upgrades a store of an older format)
        # the same code replays bit for bit: readers keep seeing what was committed
        same_code = run.code_version == code_version()
        if not writer.has_checkpoint:
            writer.rewind_to_start(keep_shown=same_code)
            lattice = Lattice(writer.initial_labels, run.voxel_um)
            sim = cls(scenario, None, lattice=lattice)
            sim.out, sim._lock = Path(path), lock
            sim.writer = BackgroundWriter(writer)
            sim._record()
            sim._queue_checkpoint()
            sim.writer.flush()
            return sim
        from niche3d.io import StoreError
        from niche3d.io.writer import _read_checkpoint

        # the checkpoint is read, checked and restored before the store is rewound to it:
        # a checkpoint that cannot be restored leaves the store as it was
        state, meta, pos = _read_checkpoint(path)
        committed = {"n_records_written": writer.n_records_written, "rows": writer.rows}
        try:
            _check_checkpoint(meta, pos, committed)
            lattice = Lattice(state.pop("lattice_labels"), run.voxel_um)
            sim = cls(scenario, None, lattice=lattice, _restore=(state, meta))
        except (KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
            raise StoreError(f"{path}: its checkpoint cannot be restored ({type(exc).__name__}: "
                             f"{exc}); the store is damaged (its records still read with "
                             "open_run)") from None
        writer.rewind_to_checkpoint(keep_shown=same_code)
        sim.out = Path(path)
        sim._lock = lock
        sim.writer = BackgroundWriter(writer)
        sim.records_written = int(meta["records_written"])
        return sim

    # ------------------------------------------------------------------ state
    @property
    def t_hours(self) -> float:
        """Current simulated time in hours."""
        return self.step_index * self.dt_hours

    @property
    def t_days(self) -> float:
        """Current simulated time in days."""
        return self.t_hours / 24.0

    @property
    def effects(self) -> Effects:
        """Interventions in force at the current time."""
        assert self._effects is not None
        return self._effects

    def snapshot(self) -> dict[str, np.ndarray]:
        """Current cells, one row per living cell (see :meth:`CellModel.snapshot`)."""
        return self.cells.snapshot()

    def metrics(self) -> dict[str, float]:
        """Current population and field metrics."""
        m: dict[str, float] = {"t_hours": self.t_hours}
        m.update(self.cells.metrics())
        marrow = self._marrow
        for name in self.fields.names:
            m[f"{name}_mean"] = float(np.mean(self.fields[name][marrow], dtype=np.float64))
        for name, (solves, skipped) in self.fields.solve_counts.items():
            m[f"{name}_solves"] = float(solves)
            m[f"{name}_solves_skipped"] = float(skipped)
        m["protease_per_min"] = self.effects.protease
        m["cxcr4_blockade"] = self.effects.cxcr4_blockade
        m["cytotoxic_per_h"] = self.effects.cytotoxic
        return m

    def cancel(self) -> None:
        """Ask a running :meth:`run` (possibly in another thread) to stop after this step."""
        self._cancel.set()

    # ------------------------------------------------------------------ stepping
    def step(self, n: int = 1) -> None:
        """Advance ``n`` cell steps, recording and checkpointing on schedule; on return
        everything recorded is in the store."""
        self._check_open()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a whole number >= 0, got {n!r}")
        self._reserve_records(int(n))
        try:
            for _ in range(n):
                self._one_step()
        finally:
            self._flush()

    def run(
        self,
        days: float | None = None,
        *,
        progress: ProgressFn | bool | None = None,
    ) -> Simulation:
        """Advance by ``days`` (default: the scenario's ``run.days``) and return self.

        Parameters
        ----------
        days
            Simulated days to add to the current time; must be a whole number of steps.
        progress
            ``True`` for a tqdm bar, or a callable ``progress(fraction, t_hours)``.
        """
        self._check_open()
        days = self.scenario.run.days if days is None else float(days)
        if not (math.isfinite(days) and days > 0):
            raise ValueError(f"days must be a positive number, got {days!r}")
        n_steps = int(round(days * 24.0 / self.dt_hours))
        if abs(n_steps * self.dt_hours - days * 24.0) > 1e-6:
            raise ValueError(
                f"days = {days:g} is not a whole number of run.dt_hours = {self.dt_hours:g} steps"
            )
        self._reserve_records(n_steps)
        bar = None
        if progress is True:
            from tqdm import tqdm

            bar = tqdm(total=n_steps, unit="h", unit_scale=self.dt_hours, desc="simulating",
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} h [{elapsed}<{remaining}]")
        self._cancel.clear()
        try:
            for k in range(n_steps):
                if self._cancel.is_set():
                    break
                self._one_step()
                if bar is not None:
                    bar.update(1)
                elif callable(progress):
                    progress((k + 1) / n_steps, self.t_hours)
        finally:
            if bar is not None:
                bar.close()
            self._flush()
        return self

    def _reserve_records(self, n_steps: int) -> None:
        """Grow the store's time axis for the records the next ``n_steps`` steps write
        (``step`` and ``run`` alike, so a run may be continued either way)."""
        if self.writer is not None:
            end_records = (self.step_index + n_steps) // self._steps_per_record + 1
            if end_records > self.writer.n_records:
                self.writer.extend(end_records - self.writer.n_records)

    def _one_step(self) -> None:
        changed = self._apply_effects()
        if changed or self.step_index - self._last_solve_step >= self._steps_per_solve:
            self._solve()
        for ir in self.schedule.irradiations_in(self.t_hours, self.t_hours + self.dt_hours):
            self.cells.irradiate(ir.survival, self.step_index, self.t_hours)
        for tp in self.schedule.transplants_in(self.t_hours, self.t_hours + self.dt_hours):
            self.cells.add_circulating(tp.cells, donor=True, state=tp.state, t_hours=self.t_hours)
        self.cells.step(self.step_index, self.t_hours, self._signals(), self._modifiers())
        diag = check_cells(self.cells.n_cells, self.scenario.run.max_cells,
                           self.cells.occupied_flat(), self._marrow)
        if diag is not None:
            self._fail(diag)
        self.step_index += 1
        if self.writer is not None and self.step_index % self._steps_per_record == 0:
            self._record()

    # ------------------------------------------------------------------ internals
    def close(self) -> None:
        """Finish writing the store and release its writer lock (idempotent); a closed
        simulation cannot be stepped (continue its store with :meth:`resume`). The lock
        is also released when the object is garbage-collected or the process ends."""
        if self.out is not None:
            self._closed = True
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.writer = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fail(self, diag: dict[str, Any]) -> None:
        """Stop the run: the diagnostic (what, where, when) into the store after every
        record committed before, then :class:`~niche3d.guards.SimulationError`."""
        diag = {**diag, "t_hours": self.t_hours, "day": self.t_days, "step": self.step_index}
        where = diag.get("where")
        at = f" at voxel (z, y, x) = {tuple(where)}" if where else ""
        msg = (f"run stopped at day {self.t_days:g} (step {self.step_index}): "
               f"{diag['what']}{at}")
        if self.writer is not None:
            self.writer.write_failure({**diag, "message": msg})
            self.writer.flush()
            msg += (f"; the store keeps the {self.records_written} records before and this "
                    f"diagnostic (niche3d info {self.out})")
        raise SimulationError(msg, diag)

    def _check_open(self) -> None:
        if getattr(self, "_closed", False):
            raise RuntimeError(f"this simulation was closed; continue its store with "
                               f"Simulation.resume({str(self.out)!r})")

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush(self) -> None:
        # the store is complete whenever run() or step() returns (records are written by
        # a background thread while the steps compute: niche3d.io.background)
        if self.writer is not None:
            self.writer.flush()

    def _records_for(self, days: float) -> int:
        return int(round(days * 24.0 / self.dt_hours)) // self._steps_per_record + 1

    def _signals(self) -> Signals:
        f = self.fields  # Scenario.check() made sure the cell fields exist
        return Signals(cxcl12=f[CXCL12], scf=f[SCF], membrane_scf=f.membrane_scf)

    def _modifiers(self) -> Modifiers:
        e = self.effects
        return Modifiers(cxcr4_blockade=e.cxcr4_blockade, protease=e.protease, cytotoxic=e.cytotoxic)

    def _apply_effects(self, force: bool = False) -> bool:
        return self._set_effects(self.t_hours, force)

    def _set_effects(self, t_hours: float, force: bool) -> bool:
        # Effects are re-applied only when they moved by > 1 %; the time they were taken
        # at is checkpointed so a resumed run applies exactly the same values.
        new = self.schedule.at(t_hours)
        old = self._effects
        if not force and old is not None and new.close_to(old):
            return False
        targets = set(self.fields.names) | {MEMBRANE_SCF}
        prev = old.source_scale if old is not None else {}
        for target in targets:
            for tissue in set(new.source_scale.get(target, {})) | set(prev.get(target, {})):
                self.fields.set_source_scale(target, tissue, new.source_scale.get(target, {}).get(tissue, 1.0))
        self.fields.set_protease(new.protease)
        self._effects = new
        self._effects_t = t_hours
        return True

    def _solve(self) -> None:
        rep = self.fields.solve(self.cells.occupied_flat(), skip_below=self._skip_below)
        self._last_solve_step = self.step_index
        for name, skipped in rep.skipped.items():
            if not skipped:  # a skipped solve changed nothing
                diag = check_field(name, self.fields[name], rep.residual[name],
                                   self.fields.units[name])
                if diag is not None:
                    self._fail(diag)

    @property
    def _skip_below(self) -> dict[str, float]:
        # What the cells can sense: each field is read through a saturating receptor,
        # c / (c + K), whose occupancy moves by at most dc / K; a re-solve is skipped when
        # it would move no occupancy by more than fields.skip_tolerance.
        eps = self.scenario.fields.skip_tolerance
        cells = self.scenario.cells
        return {CXCL12: eps * cells.motility.cxcr4_kd_nM, SCF: eps * cells.death.scf_half}

    def _record(self) -> None:
        w = self.writer
        idx = self.step_index // self._steps_per_record
        events = self.cells.drain_events()
        if len(next(iter(events.values()), ())):
            w.append_events(events)
        w.write_record(
            idx,
            self.t_hours,
            # fields at every output.fields_every_records-th record (NaN between)
            fields={n: self.fields[n] for n in self.fields.names}
            if self.scenario.output.fields and idx % self.scenario.output.fields_every_records == 0
            else None,
            labels=self.lattice.labels,
            cells=self.cells.snapshot(),
            metrics=self.metrics(),
            # the map the niche_sites* metrics of this record count; a store written before
            # niche sites were recorded (resumed here) has no place for it
            niche=self.cells.niche_sites() if w.has_niche else None,
        )
        self.records_written = idx + 1
        if self.records_written % self.scenario.output.checkpoint_every_records == 0:
            self._queue_checkpoint()

    def checkpoint(self) -> None:
        """Write the full state into the store's checkpoint (atomically); on return it is
        on disk."""
        if self.writer is None:
            raise RuntimeError("this simulation has no run store to checkpoint into")
        self._queue_checkpoint()
        self._flush()

    def _queue_checkpoint(self) -> None:
        assert self.writer is not None
        state: dict[str, np.ndarray] = {}
        for k, v in self.cells.state_dict().items():
            state[f"cells/{k}"] = np.asarray(v)
        for k, v in self.fields.state_dict().items():
            state[f"fields/{k}"] = np.asarray(v)
        state["lattice_labels"] = self.lattice.labels
        meta = {
            "step_index": self.step_index,
            "records_written": self.records_written,
            "last_solve_step": self._last_solve_step,
            "effects_t_hours": self._effects_t,
        }
        # No solver reset here: the multigrid hierarchy is a pure function of the current
        # operator (incremental cell updates equal a full rebuild bit for bit), so a run
        # resumed from this checkpoint, with its freshly built hierarchy, continues exactly
        # as this one does, and the checkpoint cadence cannot change any result.
        self.writer.write_checkpoint(state, meta)

    def _load_state(self, state: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        cells = {k.removeprefix("cells/"): v for k, v in state.items() if k.startswith("cells/")}
        fields = {k.removeprefix("fields/"): v for k, v in state.items() if k.startswith("fields/")}
        self.step_index = int(meta["step_index"])
        self._last_solve_step = int(meta["last_solve_step"])
        self._set_effects(float(meta["effects_t_hours"]), force=True)
        self.fields.load_state_dict(fields)
        self.cells.load_state_dict(cells)

    def __repr__(self) -> str:
        return (
            f"Simulation({self.scenario.name!r}, t={self.t_days:.2f} d, "
            f"{self.cells.n_cells} cells, {self.lattice!r})"
        )
