"""The suite's numba settings: kernels run with bounds checking, from a cache of their own."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from niche3d._jit import jit


def test_suite_compiles_kernels_with_boundscheck() -> None:
    # an out-of-range read must raise, not return whatever lies past the array
    @jit(cache=False)
    def read(a: np.ndarray, i: int) -> float:
        return a[i]

    a = np.arange(4.0)
    assert read(a, 3) == 3.0
    with pytest.raises(IndexError):
        read(a, 4)


def test_suite_numba_cache_is_separate_from_the_users() -> None:
    # what counts is where niche3d's kernels cache, chosen when they were decorated
    from niche3d.cells import rng
    from niche3d.fields import _uniform_kernels

    assert os.environ["NICHE3D_BOUNDSCHECK"] == "1"
    suite_cache = Path(os.environ["NUMBA_CACHE_DIR"]).resolve()
    for kernel in (_uniform_kernels.residual, rng.hash64):
        assert type(kernel._cache).__name__ == "FunctionCache", kernel
        path = Path(kernel._cache.cache_path).resolve()
        assert path.is_relative_to(suite_cache), (kernel, path)
        assert not path.is_relative_to(REPO / "niche3d"), (kernel, path)


def test_a_checked_build_without_a_cache_dir_does_not_cache(tmp_path: Path) -> None:
    # run as a user would: NICHE3D_BOUNDSCHECK=1 but no NUMBA_CACHE_DIR
    import subprocess
    import sys

    script = tmp_path / "kernel.py"  # a file, so that numba could cache it
    script.write_text(
        "from niche3d._jit import jit\n\n"
        "@jit\n"
        "def f(a):\n"
        "    return a[0]\n\n"
        "print(type(f._cache).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    seen = {}
    for flag in ("1", "0"):
        env["NICHE3D_BOUNDSCHECK"] = flag
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                             text=True, cwd=REPO, check=True)
        seen[flag] = out.stdout.strip()
    assert seen == {"1": "NullCache", "0": "FunctionCache"}
