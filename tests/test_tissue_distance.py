"""Distance maps and zones of a lattice: exact against scipy, bounded zones equal to the
thresholded map, the nearest structure, and derived maps kept in the disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import niche3d.tissue.contact as CT
from niche3d.fields import FieldSet
from niche3d.fields._blocks import BlockSolves
from niche3d.fields.config import FieldsConfig
from niche3d.tissue import Lattice, Tissue, TissueConfig, build_lattice
from niche3d.tissue.contact import contact_maps
from niche3d.tissue.distance import ball_offsets, squared_edt, within

GROUPS = ((Tissue.ENDOSTEUM, Tissue.SNO), (Tissue.SINUSOID, Tissue.ENDOTHELIUM),
          (Tissue.ARTERIOLE,))


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return build_lattice((24, 40, 48), 8.0, TissueConfig(), seed=5, cache=False).labels


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NICHE3D_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "derived"


@pytest.mark.parametrize("voxel", [8.0, 10.0, 7.3, 2.5])
@pytest.mark.parametrize("group", GROUPS)
def test_distance_equals_scipy_to_the_bit(labels: np.ndarray, voxel: float, group: tuple) -> None:
    lat = Lattice(labels, voxel)
    target = lat.mask(*group)
    assert target.any()
    ref = ndimage.distance_transform_edt(~target, sampling=voxel).astype(np.float32)
    np.testing.assert_array_equal(lat.distance_um(*group), ref)


def test_distance_to_an_absent_tissue_is_inf_and_its_zone_empty(labels: np.ndarray) -> None:
    lab = labels.copy()
    lab[lab == Tissue.ARTERIOLE] = Tissue.MARROW
    lat = Lattice(lab, 8.0)
    assert np.isinf(lat.distance_um(Tissue.ARTERIOLE)).all()
    assert not lat.within_um(50.0, Tissue.ARTERIOLE).any()
    assert np.isinf(squared_edt(np.zeros((2, 3, 4), bool))).all()


@pytest.mark.parametrize("r", [0.0, 5.0, 8.0, 11.3137, 11.32, 16.0, 20.0, 23.5, 40.0, 1e4])
@pytest.mark.parametrize("voxel", [8.0, 7.3])
def test_bounded_zone_is_exactly_the_thresholded_distance(labels: np.ndarray, r: float,
                                                           voxel: float) -> None:
    target = (labels == Tissue.ENDOSTEUM) | (labels == Tissue.SNO)
    ref = ndimage.distance_transform_edt(~target, sampling=voxel).astype(np.float32) <= r
    got = within(target, r, voxel)
    assert got.dtype == bool and got.shape == labels.shape
    np.testing.assert_array_equal(got, ref)
    lat = Lattice(labels, voxel)
    np.testing.assert_array_equal(lat.within_um(r, Tissue.ENDOSTEUM, Tissue.SNO), ref)
    lat.distance_um(Tissue.ENDOSTEUM, Tissue.SNO)  # now from the cached map
    np.testing.assert_array_equal(lat.within_um(r, Tissue.SNO, Tissue.ENDOSTEUM), ref)


def test_ball_offsets_count_the_lattice_points_of_the_ball() -> None:
    assert ball_offsets(0.0, 8.0).tolist() == [[0, 0, 0]]
    assert len(ball_offsets(8.0, 8.0)) == 7  # centre and the six faces
    assert len(ball_offsets(8.0 * 2**0.5, 8.0)) == 19  # and the twelve edges
    assert len(ball_offsets(8.0 * 3**0.5, 8.0)) == 27  # the whole 3x3x3 block
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="r_um"):
            ball_offsets(bad, 8.0)
    with pytest.raises(ValueError, match="voxel_um"):
        ball_offsets(8.0, 0.0)
    with pytest.raises(ValueError, match="3D"):
        within(np.zeros((4, 4), bool), 8.0, 8.0)


def test_nearest_group_is_the_argmin_of_the_distance_maps(labels: np.ndarray, cache: Path) -> None:
    lat = Lattice(labels, 8.0)
    d = np.stack([lat.distance_um(*g) for g in GROUPS])
    expect = (np.argmin(d, axis=0) + 1).astype(np.uint8)
    np.testing.assert_array_equal(lat.nearest(*GROUPS), expect)
    again = Lattice(labels, 8.0)  # a new lattice with the same content: read from disk
    assert len(list(cache.glob("nearest-*.npz"))) == 1
    np.testing.assert_array_equal(again.nearest(*GROUPS), expect)
    assert not again._distance_cache  # no distance map was needed, none is kept


def test_nearest_ties_go_to_the_earlier_group_and_none_is_0() -> None:
    lab = np.full((1, 1, 5), Tissue.MARROW, np.uint8)
    lab[0, 0, 0] = Tissue.ENDOSTEUM
    lab[0, 0, 4] = Tissue.ARTERIOLE
    lat = Lattice(lab, 8.0)
    near = lat.nearest((Tissue.ENDOSTEUM,), (Tissue.ARTERIOLE,))
    assert near.ravel().tolist() == [1, 1, 1, 2, 2]  # x = 2 is a tie: the first group
    assert lat.nearest((Tissue.SINUSOID,)).ravel().tolist() == [0] * 5
    with pytest.raises(ValueError, match="groups"):
        lat.nearest()
    with pytest.raises(ValueError, match="at least one tissue"):
        lat.nearest((), (Tissue.BONE,))


def test_digest_follows_content_not_identity(labels: np.ndarray) -> None:
    a, b = Lattice(labels, 8.0), Lattice(labels.copy(), 8.0)
    assert a.digest == b.digest
    assert Lattice(labels, 10.0).digest != a.digest
    lab = labels.copy()
    lab.flat[0] = Tissue.BONE if lab.flat[0] != Tissue.BONE else Tissue.MARROW
    assert Lattice(lab, 8.0).digest != a.digest


def test_contact_maps_are_read_back_from_the_cache(labels: np.ndarray, cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lat = Lattice(labels, 8.0)
    calls: list[int] = []
    real = CT._contact_maps

    def counted(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(CT, "_contact_maps", counted)
    c1, v1 = contact_maps(lat, 20.0, 3.0)
    c2, v2 = contact_maps(Lattice(labels, 8.0), 20.0, 3.0)
    assert len(calls) == 1
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(v1, v2)
    # the OPN bit is the 20 µm zone of the thresholded distance map
    opn = (c1 & CT.C_OPN) != 0
    np.testing.assert_array_equal(
        opn, (lat.distance_um(Tissue.ENDOSTEUM, Tissue.SNO) <= 20.0).ravel())
    contact_maps(lat, 24.0, 3.0)  # another parameter: another entry
    assert len(calls) == 2
    for entry in cache.glob("contact-*.npz"):  # damaged entries are recomputed
        entry.write_bytes(b"garbage")
    c3, _ = contact_maps(lat, 20.0, 3.0)
    assert len(calls) == 3
    np.testing.assert_array_equal(c1, c3)


def test_pockets_and_fjords_are_read_back_from_the_cache(labels: np.ndarray, cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lat = Lattice(labels, 8.0)
    fs = FieldSet(lat, FieldsConfig())
    static = fs._fields["cxcl12"].static
    calls: list[int] = []
    real = BlockSolves._find_pockets

    def counted(self, st):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(self, st)

    monkeypatch.setattr(BlockSolves, "_find_pockets", counted)
    a = BlockSolves((False, False, False), 1)
    a.find(static)
    b = BlockSolves((False, False, False), 1)
    b.find(static)
    assert len(calls) == 1
    np.testing.assert_array_equal(a.pockets, b.pockets)
    np.testing.assert_array_equal(a.fjords, b.fjords)
    assert a.fjords.size > 0
    BlockSolves((False, False, False), 2).find(static)  # another depth: searched again
    assert len(calls) == 2
    for entry in cache.glob("blocks-*.npz"):  # an entry with indices out of range
        np.savez(entry, pockets=np.array([10**12]), fjords=np.zeros(0, np.int64))
    c = BlockSolves((False, False, False), 1)
    c.find(static)
    np.testing.assert_array_equal(c.pockets, a.pockets)
