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

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["cold_kernels", "warm_up"]

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
        sim.close()  # its store's writer lock, before a resume takes it
        with Simulation.resume(Path(d) / "warm.zarr") as again:
            again.run(1)
    record_warm()
    return time.perf_counter() - t0


def _marker() -> Path | None:
    """Where the kernels a warm-up left uncompiled are listed (None: no cache dir)."""
    import numba

    from niche3d.tissue.cache import cache_dir

    root = cache_dir()
    if root is None:
        return None
    key = json.dumps([numba.__version__, sys.version, os.environ.get("NICHE3D_BOUNDSCHECK", "0"),
                      str(numba.config.CACHE_DIR or ""), str(Path(__file__).resolve().parent)])
    return root / "warmup" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def cold_kernels() -> list[str]:
    """Kernels without a compiled copy on disk that a run may need: those with no numba
    cache index, less those a completed warm-up left uncompiled (kernels a default run
    never calls, e.g. irradiation's; they compile on their first use)."""
    from niche3d._jit import uncached_kernels

    cold = uncached_kernels()
    m = _marker()
    if m is not None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            never = set(json.loads(m.read_text()))
            cold = [k for k in cold if k not in never]
    return cold


def record_warm() -> None:
    """Note, after a warm-up, the kernels it did not need (see :func:`cold_kernels`)."""
    from niche3d._jit import uncached_kernels

    m = _marker()
    if m is None:
        return
    with contextlib.suppress(OSError):
        m.parent.mkdir(parents=True, exist_ok=True)
        tmp = m.with_name(m.name + ".tmp")
        tmp.write_text(json.dumps(sorted(set(uncached_kernels()))))
        os.replace(tmp, m)
