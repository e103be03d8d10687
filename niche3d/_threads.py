"""Use more threads only while they help: a governor that times 1 thread against all.

Why this exists (measured by ``benchmarks/bench_threads.py``, 2 cores): numba's OpenMP
layer spin-waits between parallel regions. On an idle machine that is what makes two
threads 1.5-1.6x faster than one on the field solve; with one core busy with another
process, a waiting or descheduled thread stalls every region and two threads take twice
as long as one. ``OMP_WAIT_POLICY=PASSIVE`` removes the stall but also most of the idle
gain (1.16x), and the ``workqueue`` layer is slower than both. No fixed setting is right
on a shared machine, so niche3d keeps numba's layer and decides per piece of repeated
work (the field solve, the cell step) from its own timings:

* the first two calls run with all allowed threads and with one;
* after that each call uses whichever count has the lower moving average of seconds per
  unit of work, and every ``probe_every``-th call tries the other count, so a change of
  load is noticed within a few dozen calls at a cost of at most ~1/probe_every.

Results never depend on the thread count (``niche3d._jit``), so the governor changes
speed only. ``NICHE3D_ADAPTIVE_THREADS=0`` turns it off (every call uses all allowed
threads); ``run.threads`` / ``--threads`` set the most a run may use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numba

__all__ = ["ThreadGovernor", "adaptive_threads_enabled"]


def adaptive_threads_enabled() -> bool:
    """False when ``NICHE3D_ADAPTIVE_THREADS=0`` (always use every allowed thread)."""
    return os.environ.get("NICHE3D_ADAPTIVE_THREADS", "1") != "0"


class Work:
    """What a governed call reports: set ``units`` to the amount of work done (e.g.
    multigrid cycles), so calls of different size compare per unit."""

    __slots__ = ("units", "threads")

    def __init__(self, threads: int) -> None:
        self.units = 1.0
        self.threads = threads


class ThreadGovernor:
    """Chooses between one thread and all allowed threads for one kind of repeated work.

    Parameters
    ----------
    probe_every
        Every this many calls, run once with the count that is not the current choice.
    smoothing
        Weight of the newest timing in the moving average (0 < smoothing <= 1).
    clock
        Seconds since an arbitrary origin (``time.perf_counter``; tests pass a fake).

    Examples
    --------
    >>> gov = ThreadGovernor()
    >>> with gov() as work:          # doctest: +SKIP
    ...     cycles = solve()
    ...     work.units = cycles
    """

    def __init__(
        self,
        probe_every: int = 24,
        smoothing: float = 0.3,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if probe_every < 2:
            raise ValueError(f"probe_every must be >= 2, got {probe_every}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.probe_every = int(probe_every)
        self.smoothing = float(smoothing)
        self._clock = clock
        self._avg: dict[int, float] = {}  # thread count -> seconds per unit
        self.calls = 0
        self.counts: dict[int, int] = {}  # thread count -> calls run with it

    def choose(self, most: int) -> int:
        """The thread count for the next call when up to ``most`` are allowed."""
        if most <= 1 or not adaptive_threads_enabled():
            return max(1, most)
        for n in (most, 1):  # measure both first
            if n not in self._avg:
                return n
        best = min((most, 1), key=lambda n: self._avg[n])
        if self.calls % self.probe_every == self.probe_every - 1:
            return 1 if best == most else most
        return best

    def record(self, threads: int, seconds: float, units: float = 1.0) -> None:
        """Add one call's timing (``seconds`` for ``units`` of work with ``threads``)."""
        self.calls += 1
        self.counts[threads] = self.counts.get(threads, 0) + 1
        if not units > 0:
            return
        per = seconds / units
        old = self._avg.get(threads)
        self._avg[threads] = per if old is None else old + self.smoothing * (per - old)

    @contextmanager
    def __call__(self) -> Iterator[Work]:
        """Run the body with the chosen thread count, timed; restores the count after."""
        most = numba.get_num_threads()
        n = self.choose(most)
        work = Work(n)
        if n != most:
            numba.set_num_threads(n)
        t0 = self._clock()
        try:
            yield work
        finally:
            dt = self._clock() - t0
            if n != most:
                numba.set_num_threads(most)
        self.record(n, dt, work.units)

    def __repr__(self) -> str:
        avg = ", ".join(f"{k}t {v * 1e3:.3g} ms/unit" for k, v in sorted(self._avg.items()))
        return f"ThreadGovernor({self.calls} calls; {avg or 'no timings yet'})"
