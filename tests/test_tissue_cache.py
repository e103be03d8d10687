"""The on-disk lattice cache: bit-identical reuse, keys that change with every input,
damaged entries regenerated, a size limit, and off when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import niche3d.tissue.build as B
import niche3d.tissue.cache as C
from niche3d.tissue import TissueConfig, build_lattice

SHAPE = (16, 24, 24)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NICHE3D_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lattices"


def _count_generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = B.generate_marrow

    def counted(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(B, "generate_marrow", counted)
    return calls


def test_second_build_is_read_from_the_cache_bit_identically(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_generations(monkeypatch)
    a = build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    b = build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    assert len(calls) == 1 and len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(a.labels, b.labels)
    fresh = build_lattice(SHAPE, 8.0, TissueConfig(), seed=3, cache=False)
    np.testing.assert_array_equal(a.labels, fresh.labels)
    assert b.voxel_um == 8.0


@pytest.mark.parametrize("change", ["seed", "shape", "voxel", "config"])
def test_every_input_is_part_of_the_key(cache: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    calls = _count_generations(monkeypatch)
    build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    args = {"seed": (SHAPE, 8.0, TissueConfig(), 4), "shape": ((16, 24, 32), 8.0, TissueConfig(), 3),
            "voxel": (SHAPE, 10.0, TissueConfig(), 3),
            "config": (SHAPE, 8.0, TissueConfig(seed=9), 3)}[change]
    build_lattice(*args)
    assert len(calls) == 2


def test_damaged_entry_is_regenerated_and_replaced(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(b"not an array")
    calls = _count_generations(monkeypatch)
    b = build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    assert len(calls) == 1
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.load(entry).shape == SHAPE


def test_size_limit_removes_least_recently_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NICHE3D_CACHE_MB", str(2.5 * np.prod(SHAPE) / 2**20))  # room for two
    for seed in (1, 2, 3):
        build_lattice(SHAPE, 8.0, TissueConfig(), seed=seed)
    assert len(list(cache.glob("*.npy"))) == 2


def test_off_and_unwritable_cache_still_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NICHE3D_CACHE_DIR", "off")
    assert C.cache_dir() is None
    calls = _count_generations(monkeypatch)
    build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    build_lattice(SHAPE, 8.0, TissueConfig(), seed=3)
    assert len(calls) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("NICHE3D_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    assert build_lattice(SHAPE, 8.0, TissueConfig(), seed=3).shape == SHAPE
