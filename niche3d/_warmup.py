"""Compile every kernel a run needs, up front and with a visible message.

numba compiles a kernel the first time it is called and caches the machine code on
disk (``niche3d._jit``). Without this module the first run of a fresh install sat
silent for one to three minutes before its first line of progress. :func:`warm_up` runs
a small copy of the default scenario (the kernels' types do not depend on the lattice
size, so this compiles what a full run calls) stage by stage, and ``niche3d run``
calls it when :func:`niche3d._jit.uncached_kernels` is non-empty; ``tools/install.sh``
calls ``niche3d warmup`` so that even the first run starts warm.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["warm_up"]

#: a lattice just big enough for every tissue kind of the generator
_SHAPE = [24, 48, 48]


def warm_up(say: Callable[[str], None] | None = None) -> float:
    """Compile (or load from the cache) every kernel of a default run; returns seconds.

    Parameters
    ----------
    say
        Called with one line per stage (default: print to stderr).
    """
    from niche3d.scenario import Scenario
    from niche3d.simulation import Simulation

    if say is None:
        def say(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    sc = Scenario.default().with_overrides({"domain.shape": _SHAPE, "run.days": 2.0,
                                            "output.interval_hours": 24.0})
    stages = ["tissue, fields and cell set-up", "cell steps and the store", "continuing a run"]
    with tempfile.TemporaryDirectory(prefix="niche3d-warmup-") as d:
        say(f"  [1/{len(stages)}] {stages[0]} ...")
        sim = Simulation(sc, Path(d) / "warm.zarr")
        say(f"  [2/{len(stages)}] {stages[1]} ...")
        sim.run(1)
        say(f"  [3/{len(stages)}] {stages[2]} ...")
        sim.checkpoint()
        Simulation.resume(Path(d) / "warm.zarr").run(1)
    return time.perf_counter() - t0
