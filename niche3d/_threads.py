"""Use more threads only while they help: a governor that times 1 thread against all.

Why this exists (measured by ``benchmarks/bench_threads.py``, 2 cores): numba's OpenMP
layer spin-waits between parallel regions. On an idle machine that is what makes two
threads 1.5-1.6x faster than one on the field solve; with one core busy with another
process, a waiting or descheduled thread stalls every region and two threads take twice
as long as one. ``OMP_WAIT_POLICY=PASSIVE`` removes the stall but also most of the idle
gain (1.16x), and the ``workqueue`` layer is slower than both. No fixed setting is right
on a shared machine, so niche3d keeps numba's layer and decides per piece of repeated
work (the field solve, the cell step) from its own timings:

* the first eight calls alternate all allowed threads and one; the first timing of each
  is dropped (it pays for starting the thread pool and first-touch page faults);
* after that each call uses whichever count has the lower median of its last ``window``
  timings (seconds per unit of work), and every ``probe_every``-th call tries the other
  count (every ``4 * probe_every``-th when that count was more than 25 % slower), so a
  change of load is noticed within a few dozen calls at a cost of a few per cent. A median, not a mean: a solve that overlaps the background writer's
  compression takes up to twice as long, whatever its thread count.

Results never depend on the thread count (``niche3d._jit``), so the governor changes
speed only. ``NICHE3D_ADAPTIVE_THREADS=0`` turns it off (every call uses all allowed
threads); ``run.threads`` / ``--threads`` set the most a run may use.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numba

__all__ = ["ThreadGovernor", "adaptive_threads_enabled", "untimed"]


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
    window
        Timings kept per thread count (the estimate is their median).
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
        probe_every: int = 6,
        window: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if probe_every < 2:
            raise ValueError(f"probe_every must be >= 2, got {probe_every}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.probe_every = int(probe_every)
        self.window = int(window)
        self._clock = clock
        self._times: dict[int, deque[float]] = {}  # thread count -> last seconds per unit
        self.calls = 0
        self.counts: dict[int, int] = {}  # thread count -> calls run with it

    def choose(self, most: int) -> int:
        """The thread count for the next call when up to ``most`` are allowed."""
        if most <= 1 or not adaptive_threads_enabled():
            return max(1, most)
        if self.calls < 8:  # most, 1, most, 1, ...: four timings each, the first dropped
            return most if self.calls % 2 == 0 else 1
        for n in (most, 1):  # (a count that was never timed: `most` changed)
            if not self._times.get(n):
                return n
        best = min((most, 1), key=self.estimate)
        other = 1 if best == most else most
        # a count that was clearly slower (by > 25 %) is probed 4x less often: under load
        # two threads cost ~2x, and each probe of them is a slow call
        every = self.probe_every * (4 if self.estimate(other) > 1.25 * self.estimate(best) else 1)
        if self.calls % every == every - 1:
            return other
        return best

    def record(self, threads: int, seconds: float, units: float = 1.0) -> None:
        """Add one call's timing (``seconds`` for ``units`` of work with ``threads``)."""
        self.calls += 1
        self.counts[threads] = self.counts.get(threads, 0) + 1
        if not units > 0 or self.counts[threads] == 1:  # the first call of a count warms up
            return
        self._times.setdefault(threads, deque(maxlen=self.window)).append(seconds / units)

    def estimate(self, threads: int) -> float:
        """Median of the last timings (seconds per unit) with ``threads``; inf if none."""
        t = self._times.get(threads)
        return float(statistics.median(t)) if t else math.inf

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
        avg = ", ".join(f"{k}t {self.estimate(k) * 1e3:.3g} ms/unit" for k in sorted(self._times))
        return f"ThreadGovernor({self.calls} calls; {avg or 'no timings yet'})"


@contextmanager
def untimed() -> Iterator[Work]:
    """The governor's interface for work that needs none (serial kernels): no timing,
    the thread count untouched."""
    yield Work(numba.get_num_threads())
