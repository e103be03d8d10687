"""One run of a sweep, as a Dask task: start, resume or reuse its store, then summarise.

:func:`run_task` is what the workers execute. It never raises for a run's own failure:
the error and its traceback go into the returned result (and the run's result file
beside its store), so one bad run does not stop the sweep. A worker that dies mid-run
loses nothing committed: Dask reschedules the task on another worker, which finds the
store and resumes it from its last checkpoint (bit-identical, :meth:`Simulation.resume`).

Threads: a run uses ``NICHE3D_SWEEP_THREADS`` numba threads when that is set (the
LocalCluster of :mod:`niche3d.ensemble.engine` sets it to cores // workers), otherwise
the usable cores divided by the worker's task slots, so that concurrent runs do not
oversubscribe the cores. Results do not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_task", "summarise", "result_path", "read_result", "SUMMARIES"]

#: the two summaries of every metric: its value at the last record, and its mean over the
#: records of the second half of the run (which averages out a single record's noise)
SUMMARIES = ("final", "mean")

#: seconds between two looks at the sweep's cancel flag / two progress events
_POLL_S = 2.0


def result_path(store: str | Path) -> Path:
    """The result file of the run whose store is ``store`` (``<run>.json`` beside it)."""
    p = Path(store)
    return p.with_name(p.name.removesuffix(".zarr") + ".json")


def read_result(store: str | Path) -> dict[str, Any] | None:
    """The run's last result, or None when there is none (or it cannot be read)."""
    p = result_path(store)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write_result(store: Path, result: dict[str, Any]) -> None:
    from niche3d.io._atomic import atomic_write_bytes

    atomic_write_bytes(result_path(store), json.dumps(result, default=_json_default).encode())


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def summarise(metrics: Any, days: float) -> dict[str, float]:
    """``final.<metric>`` and ``mean.<metric>`` (records with t > days/2) of a run's metrics."""
    out: dict[str, float] = {}
    if metrics is None or len(metrics) == 0:
        return out
    t = metrics["t"].to_numpy(dtype=float)
    late = t > days * 24.0 / 2.0
    if not late.any():
        late = t >= t.max()
    for col in metrics.columns:
        if col in ("record", "t", "t_hours"):
            continue
        v = metrics[col].to_numpy()
        if v.dtype.kind not in "fiub":
            continue
        v = v.astype(float)
        out[f"final.{col}"] = float(v[-1])
        with np.errstate(invalid="ignore"):
            out[f"mean.{col}"] = float(np.nanmean(v[late])) if np.isfinite(v[late]).any() else math.nan
    return out


def _threads(scenario: Any) -> Any:
    """The scenario with ``run.threads`` set for this worker (when it asks for all cores)."""
    if scenario.run.threads != 0:
        return scenario
    env = os.environ.get("NICHE3D_SWEEP_THREADS")
    if env:
        n = max(1, int(env))
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        slots = 1  # not on a Dask worker (the serial baseline): every core
        with contextlib.suppress(ImportError, ValueError):
            from distributed import get_worker

            slots = max(1, int(get_worker().state.nthreads))
        n = max(1, cores // slots)
    return scenario.with_overrides({"run.threads": n})


class _Reporter:
    """Progress events to the sweep's client and the cancel flag, at most every few seconds."""

    def __init__(self, topic: str | None, cancel: str | None, run_id: str, sim: Any) -> None:
        self.topic, self.run_id, self.sim = topic, run_id, sim
        self.worker: Any = None
        self.event: Any = None
        self.last = -math.inf
        # off a Dask worker (the serial baseline) there is no one to report to
        with contextlib.suppress(ImportError, ValueError):
            from distributed import Event, get_worker

            self.worker = get_worker()
            self.event = Event(cancel) if cancel else None

    def send(self, state: str, fraction: float) -> None:
        if self.worker is not None and self.topic:
            with contextlib.suppress(Exception):  # progress is best effort, never a failure
                self.worker.log_event(self.topic, {"run_id": self.run_id, "state": state,
                                                   "fraction": fraction, "pid": os.getpid(),
                                                   "worker": self.worker.address})

    def __call__(self, fraction: float, _t_hours: float) -> None:
        now = time.monotonic()
        if now - self.last < _POLL_S:
            return
        self.last = now
        self.send("running", fraction)
        try:
            cancelled = self.event is not None and self.event.is_set()
        except Exception:  # the scheduler is going away (a cluster being closed): the run
            cancelled = False  # goes on until its worker stops; its store stays resumable
        if cancelled:
            self.sim.cancel()


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume, or reuse) one run of a sweep and return its result.

    Parameters
    ----------
    spec
        ``run_id``, ``store`` (path), ``scenario`` (TOML text, seed included), ``days``,
        and optionally ``topic`` (progress events), ``cancel`` (name of a
        ``distributed.Event`` that stops the run after its current step) and
        ``retry_failed``.

    Returns
    -------
    dict
        ``run_id``, ``status`` (``done``, ``failed`` or ``interrupted``), ``error``,
        ``traceback``, ``failure`` (``simulation``: stopped by a runtime guard, which a
        re-run repeats, so it is not retried without ``retry_failed``; ``error``: anything
        else, retried by a re-run), ``wall_s`` (this attempt), ``resumed_from_day``, ``attempt_pid``,
        ``worker`` and the summary readouts (:func:`summarise`).
    """
    store = Path(spec["store"])
    run_id = spec["run_id"]
    days = float(spec["days"])
    t0 = time.perf_counter()
    result: dict[str, Any] = {"run_id": run_id, "status": "failed", "error": None, "traceback": None,
                              "wall_s": 0.0, "resumed_from_day": None, "attempt_pid": os.getpid(),
                              "worker": None}
    previous = read_result(store)
    if previous and previous.get("status") == "done" and _complete(store, days):
        return {**previous, "reused": True}
    if (previous and previous.get("status") == "failed" and previous.get("failure") == "simulation"
            and not spec.get("retry_failed")):
        return {**previous, "reused": True}
    if _cancelled(spec.get("cancel")):  # the sweep was cancelled before this run started
        return {"run_id": run_id, "status": "pending"}
    sim = None
    try:
        from niche3d.errors import SimulationError
        from niche3d.io import StoreError
        from niche3d.io.lock import StoreLocked
        from niche3d.scenario import Scenario
        from niche3d.simulation import Simulation

        scenario = _threads(Scenario.from_toml_text(spec["scenario"], source=f"sweep run {run_id}"))
        try:
            if _complete(store, days):
                sim = None
            elif _resumable(store):
                try:
                    sim = Simulation.resume(store)
                    result["resumed_from_day"] = sim.t_days
                except StoreLocked:
                    raise
                except StoreError as exc:  # a checkpoint that cannot be restored: start over
                    result["restarted"] = str(exc)
                    sim = Simulation(scenario, store, overwrite=True)
            else:
                sim = Simulation(scenario, store, overwrite=store.exists())
            if sim is not None:
                report = _Reporter(spec.get("topic"), spec.get("cancel"), run_id, sim)
                result["worker"] = getattr(report.worker, "address", None)
                report.send("started", sim.t_days / days)
                remaining = days - sim.t_days
                if remaining > 1e-9:
                    sim.run(days=remaining, progress=report)
                done = sim.t_days >= days - 1e-9
                if not done:  # cancelled: resume from this step, not from the last interval
                    sim.checkpoint()
                sim.close()
                sim = None
                if not done:
                    result["status"] = "interrupted"
            if result["status"] != "interrupted":
                from niche3d.io import open_run

                result.update(summarise(open_run(store).metrics, days))
                result["status"] = "done"
        except SimulationError as exc:  # the model's own failure: the same again on a re-run
            result["error"] = str(exc)
            result["traceback"] = traceback.format_exc()
            result["failure"] = "simulation"
    except Exception as exc:  # a run's own failure is a result, not a sweep's failure
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        result["failure"] = "error"
    finally:
        if sim is not None:
            try:
                sim.close()
            except Exception as exc:  # the first error is the one reported
                result["error"] = result["error"] or f"{type(exc).__name__}: {exc}"
        result["wall_s"] = time.perf_counter() - t0
    _write_result(store, result)
    return result


def _cancelled(name: str | None) -> bool:
    """True when the sweep's cancel flag (a ``distributed.Event``) is set."""
    if not name:
        return False
    try:
        from distributed import Event, get_worker

        get_worker()
        return bool(Event(name).is_set())
    except Exception:  # not on a worker, or no scheduler to ask: not cancelled
        return False


def _complete(store: Path, days: float) -> bool:
    """True when ``store`` holds every record of a ``days``-day run and no failure."""
    if not store.is_dir():
        return False
    from niche3d.io import StoreError, open_run

    try:
        run = open_run(store)
        return (run.failure is None and run.n_records > 0
                and float(run.times_h[-1]) >= days * 24.0 - 1e-6)
    except (StoreError, OSError, ValueError, KeyError):
        return False


def _resumable(store: Path) -> bool:
    """True when ``store`` is a run store that :meth:`Simulation.resume` can continue
    (a store killed while being created, or damaged, is started again instead)."""
    if not store.is_dir():
        return False
    from niche3d.io import StoreError, check_store

    try:
        check_store(store)
    except (StoreError, OSError):
        return False
    return True
