"""Tissue contact maps: face-neighbour sums against a plain loop, the membrane SCF map of
FieldSet reproduced to the bit, and the cell contact maps against their former code."""

from __future__ import annotations

import numpy as np
import pytest

from niche3d.fields import FieldsConfig, FieldSet
from niche3d.tissue.codes import TISSUE_NAMES, Tissue
from niche3d.tissue.contact import (
    C_ANG1,
    C_ENDO,
    C_OPN,
    C_SNO,
    contact_maps,
    neighbour_mean,
    neighbour_sum,
    tissue_neighbour_mean,
)
from niche3d.tissue.lattice import Lattice

FACES = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def naive_neighbour_sum(a: np.ndarray, dtype) -> np.ndarray:
    """Plain loop over voxels and faces, in the documented face order."""
    out = np.zeros(a.shape, dtype)
    nz, ny, nx = a.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                s = dtype(0)
                for dz, dy, dx in FACES:
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx:
                        s = dtype(s + dtype(a[zz, yy, xx]))
                out[z, y, x] = s
    return out


def random_labels(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    codes = np.array([Tissue.MARROW, Tissue.MARROW, Tissue.MARROW, Tissue.STROMA,
                      Tissue.ENDOTHELIUM, Tissue.SINUSOID, Tissue.ENDOSTEUM, Tissue.SNO,
                      Tissue.BONE], np.uint8)
    return codes[rng.integers(0, codes.size, shape)]


@pytest.mark.parametrize("seed", range(6))
def test_neighbour_sum_matches_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 7, 3))
    a = rng.random(shape).astype(np.float32)
    got = neighbour_sum(a)
    assert got.dtype == np.float32
    assert got.tobytes() == naive_neighbour_sum(a, np.float32).tobytes()
    b = rng.random(shape) < 0.4
    counts = neighbour_sum(b)
    assert counts.dtype == np.uint8
    assert np.array_equal(counts, naive_neighbour_sum(b.astype(np.int64), np.int64))
    mean = neighbour_mean(a)
    assert mean.tobytes() == (naive_neighbour_sum(a, np.float32) * np.float32(1 / 6)).tobytes()


def test_neighbour_mean_of_ones_is_one_inside_and_needs_floats():
    m = neighbour_mean(np.ones((3, 3, 3), np.float32))
    assert m[1, 1, 1] == 1.0 and m[0, 0, 0] == np.float32(3) * np.float32(1 / 6)
    with pytest.raises(ValueError, match="float array"):
        neighbour_mean(np.ones((2, 2, 2), np.int32))


def test_tissue_neighbour_mean_validates_its_table():
    lab = np.full((2, 2, 2), Tissue.STROMA, np.uint8)
    with pytest.raises(ValueError, match="1D float"):
        tissue_neighbour_mean(lab, np.ones(16, np.int64))
    with pytest.raises(ValueError, match="entries"):
        tissue_neighbour_mean(lab, np.ones(2, np.float32))
    with pytest.raises(ValueError, match="3D"):
        tissue_neighbour_mean(lab[0], np.ones(16, np.float32))


def _membrane_table(fs: FieldSet) -> np.ndarray:
    """Expression per tissue code times its knockout scale, from the public FieldSet API."""
    expr = fs.config.membrane_scf.expression
    table = np.zeros(16, np.float64)
    for code, name in TISSUE_NAMES.items():
        table[code] = float(expr.get(name, 0.0)) * fs.source_scale("membrane_scf", name)
    return table.astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_tissue_neighbour_mean_reproduces_the_membrane_scf_of_fieldset(seed):
    rng = np.random.default_rng(100 + seed)
    lab = random_labels(rng, (6, 9, 11))
    lab[:, :, 0] = Tissue.BONE
    lat = Lattice(lab, 8.0)
    fs = FieldSet(lat, FieldsConfig())
    want = fs.membrane_scf
    got = tissue_neighbour_mean(lat.labels, _membrane_table(fs))
    assert got.dtype == want.dtype == np.float32
    assert got.tobytes() == want.tobytes()
    assert want.max() > 0
    # and after a knockout of the stroma's expression (a source scale of the public API)
    fs.set_source_scale("membrane_scf", "stroma", 0.3)
    got = tissue_neighbour_mean(lat.labels, _membrane_table(fs))
    assert got.tobytes() == fs.membrane_scf.tobytes()


# ---------------------------------------------------------------- the former cell contact code
def _old_shifted(a: np.ndarray, axis: int, shift: int) -> np.ndarray:
    out = np.zeros_like(a)
    n = a.shape[axis]
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    if shift > 0:
        src[axis] = slice(shift, n)
        dst[axis] = slice(0, n - shift)
    else:
        src[axis] = slice(0, n + shift)
        dst[axis] = slice(-shift, n)
    out[tuple(dst)] = a[tuple(src)]
    return out


def old_contact_maps(lattice: Lattice, opn_range_um: float, endo_factor: float):
    """``niche3d.cells.model._contact_maps`` as it was before the move (frozen)."""
    lab = lattice.labels
    contact = np.zeros(lab.shape, np.uint8)
    n_endo = np.zeros(lab.shape, np.float32)
    n_str = np.zeros(lab.shape, np.float32)
    endo = lab == Tissue.ENDOTHELIUM
    stroma = lab == Tissue.STROMA
    sno = lab == Tissue.SNO
    ang = sno | (lab == Tissue.ENDOSTEUM)
    for axis in range(3):
        for shift in (-1, 1):
            for src, bit in ((endo, C_ENDO), (ang, C_ANG1), (sno, C_SNO)):
                contact |= np.where(_old_shifted(src, axis, shift), np.uint8(bit), np.uint8(0))
            n_endo += _old_shifted(endo, axis, shift)
            n_str += _old_shifted(stroma, axis, shift)
    n_str += stroma
    vcam = np.minimum((np.float32(endo_factor) * n_endo + n_str) / np.float32(6.0),
                      np.float32(1.0))
    if ang.any() and opn_range_um > 0:
        opn = lattice.dist_endosteum_um <= opn_range_um
        contact |= np.where(opn, np.uint8(C_OPN), np.uint8(0))
    return np.ascontiguousarray(contact.ravel()), np.ascontiguousarray(vcam.ravel(), np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_contact_maps_equal_the_former_cell_code(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(2, 9, 3))
    lat = Lattice(random_labels(rng, shape), float(rng.uniform(4.0, 10.0)))
    opn = float(rng.choice([0.0, 12.0, 30.0]))
    factor = float(rng.uniform(0.0, 5.0))
    contact, vcam = contact_maps(lat, opn, factor)
    ref_c, ref_v = old_contact_maps(lat, opn, factor)
    assert contact.dtype == np.uint8 and vcam.dtype == np.float32
    assert np.array_equal(contact, ref_c)
    assert vcam.tobytes() == ref_v.tobytes()
