"""Run a sweep on dask.distributed: :func:`sweep` and its live handle, :class:`Sweep`.

Every run is one Dask task (:func:`niche3d.ensemble.task.run_task`) writing its own
store; the client only schedules, follows progress and keeps the Parquet index. Where
the work runs is Dask's business: a ``LocalCluster`` by default, or any scheduler by
address (an HPC cluster through dask-jobqueue, a cloud cluster), or a ``Client`` the
caller made.

The default LocalCluster has one worker process per usable core and one task slot per
worker, each run using ``cores // workers`` numba threads (so ``workers = cores`` runs
single-threaded runs side by side, which on a memory-bound solver gives the most runs
per hour; ``--workers 1`` gives one run at a time with every core). Nothing is
oversubscribed: runs x threads = cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from niche3d.ensemble.design import Design, parse_vary
from niche3d.ensemble.results import (
    SweepError,
    SweepResults,
    open_sweep,
    param_column,
    prepare,
    write_index,
)
from niche3d.ensemble.task import read_result, run_task
from niche3d.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Sweep", "sweep", "usable_cores", "local_cluster", "store_bytes_bound"]

#: a killed worker's task is tried on another worker this many times (Dask's
#: ``distributed.scheduler.allowed-failures``, stated here rather than left to config)
ALLOWED_FAILURES = 3


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - not Linux


def local_cluster(workers: int | None = None, *, dashboard: bool = True) -> Any:
    """A LocalCluster sized so numba threads do not oversubscribe the cores.

    ``workers`` processes (default: one per usable core), one task slot each, and
    ``NICHE3D_SWEEP_THREADS = max(1, cores // workers)`` numba threads per run.
    """
    from distributed import LocalCluster

    cores = usable_cores()
    n = cores if workers is None else int(workers)
    if n < 1:
        raise ScenarioError(f"--workers {workers} must be at least 1")
    env = {"NICHE3D_SWEEP_THREADS": str(max(1, cores // n))}
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                        dashboard_address=":0" if dashboard else None,
                        silence_logs=logging.ERROR, env=env,
                        preload=["niche3d.ensemble._worker_setup"])


class Sweep:
    """A running (or finished) sweep: progress, results, cancel.

    Made by :func:`sweep`; not constructed directly. The work goes on in Dask while
    the caller does other things; :meth:`wait` blocks until it is over.
    """

    def __init__(self, path: Path, runs: pd.DataFrame, specs: dict[str, dict[str, Any] | None],
                 rows: dict[str, dict[str, Any]], client: Any, owned: list[Any],
                 keys: list[str]) -> None:
        self.path = path
        self.runs = runs
        self._specs = specs
        self._rows = rows
        self._client = client
        self._owned = owned  # the client and cluster this sweep made (closed at the end)
        self._keys = keys
        self._lock = threading.Lock()
        self._running: dict[str, dict[str, Any]] = {}
        self._started = time.monotonic()
        self._finished = threading.Event()
        self._cancelled = False
        self._error: BaseException | None = None
        self._futures: dict[Any, str] = {}
        #: the most bytes the runs still to do may write (:func:`store_bytes_bound`)
        self.bytes_bound = 0
        tag = uuid.uuid4().hex[:12]
        self._topic = f"niche3d-sweep-{tag}"
        self._cancel_name = f"niche3d-cancel-{tag}"
        todo = [rid for rid, spec in specs.items() if spec is not None]
        self._n_todo = len(todo)
        self._done_here = 0
        self._where = self._describe() if todo else "nothing to run"
        if not todo:
            self._close_cluster()
            self._finished.set()
            return
        client.subscribe_topic(self._topic, self._on_event)
        for rid in todo:
            spec = {**specs[rid], "topic": self._topic, "cancel": self._cancel_name}
            fut = client.submit(run_task, spec, key=f"niche3d-run-{tag}-{rid}", pure=False)
            self._futures[fut] = rid
        self._thread = threading.Thread(target=self._follow, name="niche3d-sweep", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    @property
    def n_to_run(self) -> int:
        """Runs this session runs (the others finished, or failed, in an earlier one)."""
        return self._n_todo

    def describe(self) -> str:
        """Where the runs go: the cluster's workers, task slots and numba threads per run
        (as the sweep started)."""
        return self._where

    def _describe(self) -> str:
        try:
            workers = self._client.scheduler_info(n_workers=-1)["workers"]
        except Exception:  # noqa: BLE001 - a description must not fail a sweep
            return "a Dask cluster"
        slots = sum(int(w.get("nthreads", 1)) for w in workers.values())
        hosts = len({w.get("host") for w in workers.values()})
        if len(self._owned) == 2:  # the client and the LocalCluster this sweep made
            per_run = max(1, usable_cores() // max(1, slots))
            return (f"LocalCluster: {len(workers)} worker processes x 1 run, {per_run} numba "
                    f"thread(s) per run on {usable_cores()} usable cores")
        return (f"Dask scheduler {self._client.scheduler.address}: {len(workers)} workers on "
                f"{hosts} host(s), {slots} runs at once")

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard of the cluster running this sweep (None when it has none)."""
        try:
            return self._client.dashboard_link if self._client is not None else None
        except (AttributeError, KeyError):
            return None

    def progress(self) -> dict[str, float]:
        """Counts of runs by status (``done``, ``failed``, ``interrupted``, ``running``,
        ``pending``), ``total``, ``fraction`` of this session's work done (running runs
        count by their simulated fraction) and ``eta_s`` (NaN until something moved)."""
        with self._lock:
            status = pd.Series([r["status"] for r in self._rows.values()]).value_counts().to_dict()
            running = len(self._running)
            partial = sum(r["fraction"] for r in self._running.values())
            done_here = self._done_here
        counts = {s: int(status.get(s, 0)) for s in ("done", "failed", "interrupted")}
        counts["running"] = running
        counts["pending"] = int(status.get("pending", 0)) - running
        elapsed = time.monotonic() - self._started
        work = done_here + partial
        frac = work / self._n_todo if self._n_todo else 1.0
        eta = elapsed * (self._n_todo - work) / work if work > 0 else float("nan")
        return {**counts, "total": len(self._rows), "fraction": frac,
                "eta_s": 0.0 if self.done() else eta, "elapsed_s": elapsed}

    def running(self) -> dict[str, dict[str, Any]]:
        """The runs in progress: run id -> ``fraction`` simulated, ``worker`` address and
        ``pid`` of the worker process (as last reported, every few seconds)."""
        with self._lock:
            return {k: dict(v) for k, v in self._running.items()}

    def done(self) -> bool:
        """True once every run has finished, failed or been cancelled."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep is over (or ``timeout`` seconds); True when it is over."""
        over = self._finished.wait(timeout)
        if over and self._error is not None:
            raise self._error
        return over

    def results(self) -> SweepResults:
        """The sweep's results (waits for the end); see :class:`SweepResults`."""
        self.wait()
        return open_sweep(self.path)

    def cancel(self, grace_s: float = 60.0) -> None:
        """Stop the sweep: runs not started stay pending, running runs stop after their
        current step and checkpoint there (their stores resume later), the index is
        written and the cluster this sweep made is closed. Tasks still unfinished after
        ``grace_s`` seconds are cancelled in Dask."""
        if self.done():
            return
        self._cancelled = True
        # every task decides for itself: one not started returns at once as pending, a
        # running one stops after its step and checkpoints (interrupted); the client
        # cannot tell reliably which tasks a worker has begun
        with contextlib.suppress(Exception):
            from distributed import Event

            Event(self._cancel_name, client=self._client).set()
        if not self._finished.wait(grace_s):
            with contextlib.suppress(Exception):
                self._client.cancel(list(self._futures))
            self._finished.wait(10.0)

    def close(self) -> None:
        """Cancel what is still running and release the cluster."""
        self.cancel()
        self._close_cluster()

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        p = self.progress()
        return (f"<Sweep {self.path}: {p['done']}/{p['total']} done, {p['running']} running, "
                f"{p['failed']} failed>")

    # ------------------------------------------------------------------ internals
    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        with self._lock:
            rid = msg.get("run_id")
            if rid in self._specs and self._rows[rid]["status"] == "pending":
                self._running[rid] = {"fraction": float(msg.get("fraction", 0.0)),
                                      "worker": msg.get("worker"), "pid": msg.get("pid")}

    def _follow(self) -> None:
        from distributed import as_completed

        try:
            last_write = 0.0
            for fut in as_completed(list(self._futures)):
                rid = self._futures[fut]
                self._record(rid, fut)
                if time.monotonic() - last_write > 1.0:
                    self._write()
                    last_write = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self._error = exc
        finally:
            with contextlib.suppress(Exception):
                self._write()
            with contextlib.suppress(Exception):
                self._client.unsubscribe_topic(self._topic)
            self._close_cluster()
            self._finished.set()

    def _record(self, rid: str, fut: Any) -> None:
        if fut.status == "finished":
            result = fut.result()
        elif fut.status == "cancelled":
            with self._lock:
                started = rid in self._running
            if self._cancelled:  # a run that never started is still to do
                result = {"status": "interrupted" if started else "pending"}
            else:
                result = {"status": "failed", "error": "the task was cancelled outside niche3d"}
        else:
            exc = fut.exception()
            import traceback as tb

            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": "".join(tb.format_tb(fut.traceback())) or None,
                      "failure": "error"}
        with self._lock:
            self._running.pop(rid, None)
            if result["status"] in ("done", "failed"):
                self._done_here += 1
            _fill(self._rows[rid], result)

    def _write(self) -> None:
        with self._lock:
            rows = pd.DataFrame(list(self._rows.values()))
        write_index(self.path, rows)

    def _close_cluster(self) -> None:
        for obj in self._owned:
            with contextlib.suppress(Exception):
                obj.close()
        self._owned = []


def _fill(row: dict[str, Any], result: dict[str, Any]) -> None:
    """Copy a run's result into its index row."""
    for key, value in result.items():
        if key in ("status", "error", "traceback", "failure", "wall_s", "resumed_from_day", "worker") \
                or key.startswith(("final.", "mean.")):
            row[key] = value


def sweep(
    scenario: Scenario | str | Path,
    vary: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    out: str | Path,
    design: str = "grid",
    n: int | None = None,
    replicates: int = 1,
    seed: int | None = None,
    seeds: str = "common",
    days: float | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    points: pd.DataFrame | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    client: Any = None,
    retry_failed: bool = False,
    dashboard: bool = True,
    before_start: Callable[[], None] | None = None,
) -> Sweep:
    """Start a sweep: every design point x replicate as its own run on Dask.

    Parameters
    ----------
    scenario
        A :class:`Scenario` or a TOML scenario path.
    vary
        Key -> values (``grid``, ``list``) or ranges ``(low, high[, "log"])`` (``random``,
        ``lhs``, ``sobol``); or CLI strings ``key=v1,v2`` / ``key=low:high[:log]``.
    out
        The sweep directory. Running the same sweep again into it skips finished runs
        and resumes interrupted ones; another sweep there is refused.
    design, n
        ``grid`` (every combination), ``list`` (i-th values together), or a sampled
        design of ``n`` points: ``random``, ``lhs`` (Latin hypercube), ``sobol``
        (scrambled Sobol'); samplers from numpy / scipy.stats.qmc.
    replicates, seed, seeds
        Runs per point; the sweep seed (default: the scenario's ``run.seed``) from which
        replicate seeds derive; ``common`` or ``independent`` seeds across points.
    days, overrides
        ``run.days`` and other ``key=value`` overrides applied to every run.
    points
        An explicit table of points (columns = keys), instead of ``vary`` + ``design``.
    scheduler, workers, client
        A Dask scheduler address, or the number of LocalCluster workers (default: one
        per core), or an existing ``distributed.Client``.
    retry_failed
        Run again the runs that a runtime guard stopped in an earlier attempt (a re-run
        would stop them again; other failures, e.g. a lost worker, are always retried).
    dashboard
        Serve the LocalCluster's Dask dashboard (on a free port).
    before_start
        Called once everything is validated, before the cluster starts; by default it
        compiles any numba kernel not yet cached, so that workers find them all on disk
        (the CLI does the same, saying so).

    Returns
    -------
    Sweep
        The live handle: ``progress()``, ``wait()``, ``results()``, ``cancel()``.

    Raises
    ------
    ScenarioError
        A bad scenario, key, value, range or design, before anything runs.
    SweepError
        ``out`` holds another sweep, or something that is not a sweep.
    """
    base = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    extra = dict(overrides) if isinstance(overrides, Mapping) else None
    if overrides and extra is None:
        base = base.with_overrides(list(overrides))  # type: ignore[arg-type]
    elif extra:
        base = base.with_overrides(extra)
    if days is not None:
        base = base.with_overrides({"run.days": float(days)})
    if points is not None:
        d = Design({}, points=points, replicates=replicates,
                   seed=base.run.seed if seed is None else seed, seeds=seeds)  # type: ignore[arg-type]
    else:
        d = Design(parse_vary(vary or {}), kind=design, n=n,  # type: ignore[arg-type]
                   replicates=replicates, seed=base.run.seed if seed is None else seed,
                   seeds=seeds)  # type: ignore[arg-type]
    scenarios = d.scenarios(base)  # every run validated before anything starts
    if scheduler is not None and client is not None:
        raise ScenarioError("give either scheduler= or client=, not both")
    path = Path(out)
    prepare(path, base, d)
    runs = d.runs()
    rows = runs[["run_id", "point", "replicate", "seed"]].copy()
    for k in d.keys:
        rows[f"param.{k}"] = param_column(runs[k])
    rows["status"] = "pending"
    for col in ("error", "traceback", "failure", "worker"):
        rows[col] = None
    rows["wall_s"] = np.nan
    rows["resumed_from_day"] = np.nan
    rows["store"] = [f"runs/{rid}.zarr" for rid in rows["run_id"]]
    row_of = {r["run_id"]: r for r in rows.to_dict("records")}
    specs: dict[str, dict[str, Any] | None] = {}
    for rid, sc in scenarios.items():
        store = path / "runs" / f"{rid}.zarr"
        prev = read_result(store)
        if prev and (prev.get("status") == "done" and store.is_dir()
                     or prev.get("status") == "failed" and prev.get("failure") == "simulation"
                     and not retry_failed):
            _fill(row_of[rid], prev)
            specs[rid] = None
            continue
        specs[rid] = {"run_id": rid, "store": str(store.resolve()), "scenario": sc.to_toml(),
                      "days": sc.run.days, "retry_failed": retry_failed}
    write_index(path, pd.DataFrame(list(row_of.values())))
    bound = sum(store_bytes_bound(scenarios[rid]) for rid, spec in specs.items() if spec is not None)
    owned: list[Any] = []
    if any(s is not None for s in specs.values()):
        (before_start or _compile_kernels)()
        client, owned = _connect(client, scheduler, workers, dashboard)
    sw = Sweep(path, runs, specs, row_of, client, owned, d.keys)  # type: ignore[arg-type]
    sw.bytes_bound = bound
    return sw


def store_bytes_bound(scenario: Scenario) -> int:
    """The most bytes one run of ``scenario`` writes, nothing compressed: its first
    records and checkpoint, then per record the stored fields (4 B per voxel each) and
    the two label images (tissue, niche sites; 1 B per voxel each). Real stores are
    smaller (labels compress to almost nothing, fields to ~70 %)."""
    import math

    from niche3d.io.writer import first_records_bytes

    n_fields = len(scenario.fields.diffusible) if scenario.output.fields else 0
    voxels = math.prod(int(k) for k in scenario.domain.shape)
    n_records = int(round(scenario.run.days * 24.0 / scenario.output.interval_hours)) + 1
    return first_records_bytes(scenario.domain.shape, n_fields) + n_records * voxels * (4 * n_fields + 2)


def _compile_kernels() -> None:
    """Compile uncached numba kernels here, once, before workers need them (each worker
    would otherwise compile its own copy)."""
    import niche3d.simulation  # noqa: F401  (imports every kernel module)
    from niche3d._warmup import cold_kernels, warm_up

    if cold_kernels():
        warm_up(say=lambda _msg: None)


def _connect(client: Any, scheduler: str | None, workers: int | None,
             dashboard: bool) -> tuple[Any, list[Any]]:
    import dask
    from distributed import Client

    if client is not None:
        return client, []
    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc})") from None
        return c, [c]
    # the scheduler reads this when it is made; an external scheduler keeps its own
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        cluster = local_cluster(workers, dashboard=dashboard)
    c = Client(cluster)
    return c, [c, cluster]
