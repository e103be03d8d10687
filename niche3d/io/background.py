"""Write a run store off the step loop: a :class:`RunWriter` driven by one background thread.

Encoding and writing a record (compression above all) used to take a quarter to a half
of each simulated day, synchronously in the step loop. :class:`BackgroundWriter` takes
the same calls as :class:`~niche3d.io.writer.RunWriter`, copies what the simulation will
overwrite (fields, the niche map), puts the work on a bounded queue and returns; one
thread does the writes, in call order, so the store goes through exactly the states it
would go through synchronously. Commits stay atomic (the writer's), so crash safety and
bit-identical resume are unchanged: a kill loses at most the queued records, which a
resume recomputes from the last checkpoint as before.

* The queue holds at most ``max_pending`` calls; a full queue makes the caller wait, so
  memory stays bounded when the disk is slower than the simulation.
* An error in the thread is raised again in the caller's thread by the next call (or by
  :meth:`flush`): the same exception, with its traceback and a note; nothing queued
  after it is written.
* :meth:`flush` waits until everything queued is written; ``Simulation.run`` calls it
  before it returns, so a finished run's store is complete.

The numba kernels and Blosc release the GIL, so the thread writes while the next steps
compute.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from niche3d.io.writer import RunWriter

__all__ = ["BackgroundWriter"]

_STOP = object()
#: a writer thread with nothing to do for this long ends (a new one starts on the next call)
IDLE_SECONDS = 2.0


class BackgroundWriter:
    """Queue :class:`RunWriter` calls and run them in one background thread, in order.

    Parameters
    ----------
    writer
        The synchronous writer that does the work (it is used only by the thread while
        this object is open).
    max_pending
        Calls that may wait in the queue before a new call blocks (>= 1).

    Attributes
    ----------
    wait_seconds
        Time callers spent waiting for the thread (queue full or :meth:`flush`).
    write_seconds
        Time the thread spent writing.
    """

    def __init__(self, writer: RunWriter, *, max_pending: int = 2) -> None:
        if not isinstance(writer, RunWriter):
            raise TypeError(f"writer must be a RunWriter, got {type(writer).__name__}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self.writer = writer
        self.path = writer.path
        self._n_records = writer.n_records
        self._has_niche = writer.has_niche
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._closed = False
        self.wait_seconds = 0.0
        self.write_seconds = 0.0
        # the thread runs while there is work and ends after IDLE_SECONDS without any, so
        # an idle Simulation holds no thread; _lock orders its start and end with _put
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what RunWriter has
    @property
    def n_records(self) -> int:
        """Capacity of the time axis, including extensions still queued."""
        return self._n_records

    @property
    def has_niche(self) -> bool:
        """Whether the store has the niche-site label image."""
        return self._has_niche

    @property
    def n_records_written(self) -> int:
        """Committed records (after everything queued is written)."""
        self.flush()
        return self.writer.n_records_written

    def write_record(
        self,
        index: int,
        t_hours: float,
        *,
        fields: Mapping[str, np.ndarray] | None,
        labels: np.ndarray | None,
        cells: Mapping[str, np.ndarray],
        metrics: Mapping[str, float],
        niche: np.ndarray | None = None,
    ) -> None:
        """Queue :meth:`RunWriter.write_record`; arrays the caller may change are copied."""
        fields = None if fields is None else {k: np.array(v, copy=True) for k, v in fields.items()}
        niche = None if niche is None else np.array(niche, copy=True)
        cells = {k: np.array(v, copy=True) for k, v in cells.items()}
        self._put(self.writer.write_record, (index, t_hours), dict(
            fields=fields, labels=labels, cells=cells, metrics=dict(metrics), niche=niche))

    def append_events(self, events: Mapping[str, np.ndarray]) -> None:
        """Queue :meth:`RunWriter.append_events` (columns copied)."""
        self._put(self.writer.append_events, ({k: np.array(v, copy=True) for k, v in events.items()},))

    def write_checkpoint(self, state: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Queue :meth:`RunWriter.write_checkpoint` (arrays copied)."""
        self._put(self.writer.write_checkpoint,
                  ({k: np.array(v, copy=True) for k, v in state.items()}, dict(meta)))

    def write_failure(self, diagnostic: Mapping[str, Any]) -> None:
        """Queue :meth:`RunWriter.write_failure`."""
        self._put(self.writer.write_failure, (dict(diagnostic),))

    def set_categories(self, table: str, column: str, names: Sequence[str]) -> None:
        """Queue :meth:`RunWriter.set_categories`."""
        self._put(self.writer.set_categories, (table, column, list(names)))

    def extend(self, n_more: int) -> None:
        """Queue :meth:`RunWriter.extend`; :attr:`n_records` grows at once."""
        if isinstance(n_more, bool) or not isinstance(n_more, int | np.integer) or n_more < 1:
            raise ValueError(f"n_more must be an integer >= 1, got {n_more!r}")
        self._put(self.writer.extend, (int(n_more),))
        self._n_records += int(n_more)

    # ------------------------------------------------------------------ control
    def flush(self) -> None:
        """Wait until every queued call is written; raise the thread's error if one failed."""
        self._raise_error()
        if self._closed:
            return
        t0 = time.perf_counter()
        self._queue.join()
        self.wait_seconds += time.perf_counter() - t0
        self._raise_error()

    def close(self) -> None:
        """Flush, then stop the thread (idempotent). The synchronous writer stays usable."""
        if self._closed:
            self._raise_error()
            return
        try:
            self.flush()
        finally:
            self._closed = True
            with self._lock:
                thread = self._thread
                if thread is not None:
                    self._queue.put(_STOP)
            if thread is not None:
                thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _put(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
        self._raise_error()
        if self._closed:
            raise RuntimeError(f"{self.path}: the background writer is closed")
        t0 = time.perf_counter()
        with self._lock:
            self._queue.put((fn, args, kwargs or {}))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="niche3d-writer", daemon=True)
                self._thread.start()
        self.wait_seconds += time.perf_counter() - t0

    def _raise_error(self) -> None:
        # the original exception (its type is what callers of a RunWriter expect), with
        # its traceback from the writer thread and a note saying where it came from
        err = self._error
        if err is not None:
            if not getattr(err, "_niche3d_noted", False):
                err.add_note(f"(raised while writing {self.path} in the background writer thread)")
                err._niche3d_noted = True  # type: ignore[attr-defined]
            raise err

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                if item is _STOP:
                    with self._lock:
                        self._thread = None
                    return
                if self._error is None:  # after a failure nothing more is written
                    fn, args, kwargs = item
                    t0 = time.perf_counter()
                    try:
                        fn(*args, **kwargs)
                    except BaseException as exc:  # surfaced in the caller's thread
                        self._error = exc
                    self.write_seconds += time.perf_counter() - t0
            finally:
                self._queue.task_done()
