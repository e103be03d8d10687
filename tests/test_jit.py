"""The suite's numba settings: kernels run with bounds checking, from a cache of their own."""

from __future__ import annotations

import os
from pathlib import Path

import numba
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
    # numba read NUMBA_CACHE_DIR at import: the conftest must have set it before that
    assert os.environ["NICHE3D_BOUNDSCHECK"] == "1"
    assert Path(numba.config.CACHE_DIR) == Path(os.environ["NUMBA_CACHE_DIR"])
    assert Path(numba.config.CACHE_DIR) != REPO / "niche3d"
