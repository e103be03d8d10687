"""Localisation statistics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from niche3d.analysis import localisation_table
from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice


def _slab_lattice() -> Lattice:
    lab = np.full((4, 4, 20), Tissue.MARROW, dtype=np.uint8)
    lab[:, :, 0] = Tissue.ENDOTHELIUM  # a sinusoid wall on the x = 0 face
    return Lattice(lab, voxel_um=5.0)


def test_null_is_share_of_enterable_voxels_within_distance() -> None:
    lat = _slab_lattice()
    # marrow columns x = 1..19 have centres 5..95 µm from the wall voxels' centres, so
    # 2.5..92.5 µm from the wall surface; within 10 µm: x = 1, 2 -> 2/19
    t = localisation_table(lat, np.zeros((0, 3), int), within_um=10.0)
    assert t.loc["sinusoid", "null"] == pytest.approx(2 / 19)
    assert "endosteum" not in t.index  # no endosteum in this lattice


def test_observed_share_interval_and_enrichment() -> None:
    lat = _slab_lattice()
    pos = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 10], [3, 3, 1]])
    t = localisation_table(lat, pos, within_um=10.0)
    row = t.loc["sinusoid"]
    assert row.n == 4 and row.observed == pytest.approx(0.75)
    assert row.enrichment == pytest.approx(0.75 / (2 / 19))
    assert row.ci_low < 0.75 < row.ci_high
    assert row.median_um == pytest.approx(5.0)  # surfaces at 2.5, 2.5, 7.5, 47.5 µm
    # exact binomial: P(X >= 3 | n=4, p=2/19) doubled-ish two-sided -> small
    assert row.p_value < 0.05


def test_bad_positions() -> None:
    lat = _slab_lattice()
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        localisation_table(lat, np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="inside the lattice"):
        localisation_table(lat, np.array([[9, 0, 0]]))
    with pytest.raises(ValueError, match="integer voxel indices"):
        localisation_table(lat, np.zeros((1, 3)))
