"""The one place that sets numba flags for every kernel of niche3d.

Kernels use ``@jit`` (serial) or ``@jit(parallel=True)``; nothing else calls
``numba.njit`` directly. ``fastmath`` is restricted to flags that cannot change results
between thread counts (no reassociation), so results are bit-identical for any
``NUMBA_NUM_THREADS``. Compiled kernels are cached on disk (``cache=True``) because
start-up compile time is visible in the CLI.

Set ``NICHE3D_BOUNDSCHECK=1`` to compile every kernel with bounds checking; the test suite
does (``tests/conftest.py``). numba's cache is keyed by source and signature, not by that
flag, so a checked build caches only into an explicitly given ``NUMBA_CACHE_DIR`` (the
suite's is ``.pytest_cache/numba-boundscheck-1``) and otherwise compiles without caching:
checked kernels never land next to the sources, where a normal run would load them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# libgomp (numba's OpenMP threading layer) reads its wait policy once, when it loads,
# which is at numba's first parallel call, after this import. Its default spins between
# parallel regions: on a machine with another busy process two threads were then 1.5-2x
# slower than one (benchmarks/bench_threads.py); sleeping threads lose far less, and the
# thread governor (niche3d._threads) recovers the idle speed-up by choosing per call.
# A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numba  # noqa: E402  (after the wait policy, before any kernel)

__all__ = ["jit", "set_threads", "uncached_kernels"]

#: every kernel made by jit(), for uncached_kernels()
_KERNELS: list[Any] = []

# 'contract' (FMA) and 'arcp' are deterministic per build; 'reassoc' is not used because
# it lets reductions depend on vector width / chunking.
_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract"}
# Kernels that must see NaN and inf (the run's health checks) drop 'nnan' and 'ninf',
# which let LLVM assume no value is NaN or inf and fold ``x != x`` to False.
_FASTMATH_FINITE_CHECKS = {"nsz", "arcp", "contract"}


def jit[F: Callable[..., Any]](
    fn: F | None = None,
    *,
    parallel: bool = False,
    cache: bool = True,
    error_model: str = "python",
    finite_checks: bool = False,
) -> Any:
    """Compile ``fn`` with the project's numba settings (``@jit`` or ``@jit(parallel=True)``).

    ``error_model="numpy"`` drops numba's division-by-zero checks, which is what lets
    LLVM vectorise loops that divide; use it only in kernels whose divisions are guarded
    (the field solver's). ``finite_checks=True`` compiles without the fast-math
    assumption that no value is NaN or inf, for kernels that test for them."""
    if error_model not in ("python", "numpy"):
        raise ValueError(f"error_model must be 'python' or 'numpy', got {error_model!r}")
    boundscheck = os.environ.get("NICHE3D_BOUNDSCHECK", "0") == "1"
    # a checked kernel must never share a cache with an unchecked one (see module doc)
    cache = cache and (not boundscheck or bool(numba.config.CACHE_DIR))

    def wrap(f: F) -> F:
        d = numba.njit(
            f,
            parallel=parallel,
            fastmath=_FASTMATH_FINITE_CHECKS if finite_checks else _FASTMATH,
            cache=cache,
            boundscheck=boundscheck,
            nogil=True,
            error_model=error_model,
        )
        _KERNELS.append(d)
        return d

    if fn is not None:
        return wrap(fn)
    return wrap


def set_threads(n: int) -> int:
    """Set the numba thread count (0 = all available); returns the count in force."""
    if n < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    top = numba.config.NUMBA_NUM_THREADS
    k = top if n == 0 else min(n, top)
    numba.set_num_threads(k)
    return k


def uncached_kernels() -> list[str]:
    """Kernels (of the modules imported so far) that have no compiled copy on disk yet.

    Non-empty on the first run after an install or a code change: their compilation
    (one to three minutes on two cores) is what the first run waits for, so the CLI
    says so and compiles them up front (:mod:`niche3d._warmup`). Reads numba's cache
    index paths; kernels built without a disk cache are not listed.
    """
    out = []
    for d in _KERNELS:
        index = getattr(getattr(getattr(d, "_cache", None), "_cache_file", None), "_index_path", None)
        if isinstance(index, str) and not os.path.exists(index):
            out.append(d.py_func.__qualname__)
    return out
