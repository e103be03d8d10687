"""Contact maps derived from the tissue labels: what a cell in each voxel touches.

A cell in a voxel touches the tissues of its six face neighbours. Everything here is a
per-voxel map computed once from a :class:`~niche3d.tissue.lattice.Lattice` (O(voxels),
numpy only): face-neighbour sums and means of a per-tissue value (the membrane SCF map of
:mod:`niche3d.fields` is such a mean), the contact bits and VCAM1 contact read by the
cell rules, and the osteoblast (ANG1) quiescence signal.

Face neighbours are always visited in the order -z, +z, -y, +y, -x, +x, and a neighbour
beyond the lattice edge contributes 0, so float sums are reproducible to the bit.

Examples
--------
>>> import numpy as np
>>> from niche3d.tissue import Tissue
>>> lab = np.full((1, 1, 3), Tissue.MARROW, np.uint8); lab[0, 0, 0] = Tissue.STROMA
>>> table = np.zeros(16, np.float32); table[Tissue.STROMA] = 1.0
>>> (tissue_neighbour_mean(lab, table) * 6).tolist()
[[[0.0, 1.0, 0.0]]]
"""

from __future__ import annotations

import numpy as np

from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice

__all__ = [
    "C_ENDO",
    "C_ANG1",
    "C_SNO",
    "C_OPN",
    "neighbour_sum",
    "neighbour_mean",
    "tissue_neighbour_mean",
    "contact_maps",
    "ang1_map",
]

# contact bits (uint8 per voxel, from the six face neighbours' tissue codes)
C_ENDO = 1  #: touches sinusoidal endothelium (egress / homing site)
C_ANG1 = 2  #: touches endosteum or an SNO (osteoblast contact; ANG1 signal = 1 there)
C_SNO = 4  #: touches an SNO (N-cadherin)
C_OPN = 8  #: inside the osteopontin zone near the endosteum


def neighbour_sum(values: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Sum over each voxel's face neighbours, 0 beyond the edge.

    Parameters
    ----------
    values
        Array of any dimension (a (z, y, x) lattice map in niche3d).
    dtype
        Dtype of the sums; default ``values.dtype`` (``uint8`` for a boolean array, which
        gives neighbour counts).

    Returns
    -------
    numpy.ndarray
        ``out[i] = sum of values[j]`` over the face neighbours ``j`` of ``i``, accumulated
        axis by axis in the order -1, +1 (so float results do not depend on the caller).
    """
    a = np.asarray(values)
    if dtype is None:
        dtype = np.uint8 if a.dtype == np.bool_ else a.dtype
    out = np.zeros(a.shape, dtype=dtype)
    for axis in range(a.ndim):
        head = [slice(None)] * a.ndim
        tail = [slice(None)] * a.ndim
        head[axis] = slice(1, None)
        tail[axis] = slice(None, -1)
        out[tuple(head)] += a[tuple(tail)]  # neighbour at -1
        out[tuple(tail)] += a[tuple(head)]  # neighbour at +1
    return out


def neighbour_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the ``2 * ndim`` face neighbours (six in 3D), 0 beyond the edge.

    Parameters
    ----------
    values
        Float array of any dimension.

    Returns
    -------
    numpy.ndarray
        :func:`neighbour_sum` times ``1 / (2 ndim)`` in ``values.dtype``: a voxel whose
        neighbours all hold 1 reads 1, an edge voxel at most ``(2 ndim - 1) / (2 ndim)``.

    Raises
    ------
    ValueError
        If ``values`` is not a float array.
    """
    a = np.asarray(values)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"neighbour_mean needs a float array, got dtype {a.dtype}")
    s = neighbour_sum(a)
    s *= a.dtype.type(1.0 / (2 * a.ndim))
    return s


def tissue_neighbour_mean(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Mean of a per-tissue value over each voxel's six face neighbours.

    Parameters
    ----------
    labels
        3D uint8 tissue codes (``Lattice.labels``).
    table
        1D float array indexed by tissue code (e.g. membrane SCF expression per source
        tissue), of length > the largest code present.

    Returns
    -------
    numpy.ndarray
        ``neighbour_mean(table[labels])``, in ``table``'s dtype: the share of a cell's
        faces in contact with the value's source, weighted by the value.

    Raises
    ------
    ValueError
        If ``labels`` is not 3D or ``table`` is not a 1D float array covering its codes.
    """
    lab = np.asarray(labels)
    tab = np.asarray(table)
    if lab.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {lab.shape}")
    if tab.ndim != 1 or not np.issubdtype(tab.dtype, np.floating):
        raise ValueError(f"table must be a 1D float array, got shape {tab.shape}, dtype {tab.dtype}")
    if lab.size and int(lab.max()) >= tab.shape[0]:
        raise ValueError(f"table has {tab.shape[0]} entries; labels use code {int(lab.max())}")
    return neighbour_mean(tab[lab])


def contact_maps(
    lattice: Lattice, opn_range_um: float, endo_factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel contact bits and VCAM1 contact of the cell rules, flat, computed once.

    Parameters
    ----------
    lattice
        The tissue lattice.
    opn_range_um
        Width of the osteopontin zone from the endosteal lining in µm (``C_OPN`` within
        it; 0 switches the zone off).
    endo_factor
        VCAM1 weight of an endothelial face relative to a stromal one.

    Returns
    -------
    contact : numpy.ndarray
        uint8 bits ``C_ENDO | C_ANG1 | C_SNO | C_OPN`` per voxel (flat, C order).
    vcam : numpy.ndarray
        float32 VCAM1 contact in 0..1 per voxel (flat):
        ``min(1, (endo_factor * endothelium faces + stroma faces + own stroma) / 6)``.
        Sinusoidal endothelium expresses VCAM1 constitutively and strongly, and a cell
        inside the reticular stroma is enveloped by it.

    The pair is kept in the disk cache (:func:`~niche3d.tissue.cache.cached_arrays`),
    keyed by the lattice's digest and the two parameters.
    """
    from niche3d.tissue.cache import cached_arrays, code_digest

    n = lattice.size
    got = cached_arrays(
        "contact", {"lattice": lattice.digest, "opn_range_um": float(opn_range_um),
                    "endo_factor": float(endo_factor),
                    "code": code_digest([__file__, _distance_file()])},
        lambda: dict(zip(("contact", "vcam"),
                         _contact_maps(lattice, opn_range_um, endo_factor), strict=True)),
        check=lambda a: a.keys() >= {"contact", "vcam"} and a["contact"].shape == (n,)
        and a["contact"].dtype == np.uint8 and a["vcam"].shape == (n,)
        and a["vcam"].dtype == np.float32)
    return got["contact"], got["vcam"]


def _distance_file() -> str:
    from niche3d.tissue import distance

    return distance.__file__


def _contact_maps(lattice: Lattice, opn_range_um: float,
                  endo_factor: float) -> tuple[np.ndarray, np.ndarray]:
    lab = lattice.labels
    endo = lab == Tissue.ENDOTHELIUM
    stroma = lab == Tissue.STROMA
    sno = lab == Tissue.SNO
    ang = sno | (lab == Tissue.ENDOSTEUM)
    n_endo = neighbour_sum(endo, np.float32)
    n_str = neighbour_sum(stroma, np.float32)
    contact = np.zeros(lab.shape, np.uint8)
    for touches, bit in ((n_endo > 0, C_ENDO), (neighbour_sum(ang) > 0, C_ANG1),
                         (neighbour_sum(sno) > 0, C_SNO)):
        contact |= np.where(touches, np.uint8(bit), np.uint8(0))
    n_str += stroma
    vcam = np.minimum((np.float32(endo_factor) * n_endo + n_str) / np.float32(6.0), np.float32(1.0))
    if ang.any() and opn_range_um > 0:
        opn = lattice.within_um(opn_range_um, Tissue.ENDOSTEUM, Tissue.SNO)
        contact |= np.where(opn, np.uint8(C_OPN), np.uint8(0))
    return np.ascontiguousarray(contact.ravel()), np.ascontiguousarray(vcam.ravel(), dtype=np.float32)


def ang1_map(lattice: Lattice, contact: np.ndarray, range_um: float) -> np.ndarray:
    """Per-voxel osteoblast quiescence signal (ANG1/OPN) in 0..1, flat float32.

    Parameters
    ----------
    lattice
        The tissue lattice.
    contact
        Flat contact bits from :func:`contact_maps`.
    range_um
        Decay length of the signal away from the lining in µm (0: contact only).

    Returns
    -------
    numpy.ndarray
        1 for a voxel touching endosteum or an SNO (face contact) and, if
        ``range_um > 0``, ``exp(-gap / range_um)`` elsewhere, with ``gap = max(0, d - h)``
        the distance between the cell surface and the osteoblast surface (``d`` the
        centre-to-centre distance to the nearest endosteal/SNO voxel, ``h`` the voxel
        edge); 0 on voxels an HSC cannot occupy.
    """
    sig = ((contact & C_ANG1) != 0).astype(np.float32)
    if range_um > 0:
        d = lattice.dist_endosteum_um.ravel()
        if np.isfinite(d).any():
            gap = np.maximum(d - lattice.voxel_um, 0.0)
            sig = np.maximum(sig, np.exp(-gap / range_um).astype(np.float32))
    sig[~lattice.enterable.ravel()] = 0.0  # bone, linings and lumens hold no HSC
    return np.ascontiguousarray(sig, dtype=np.float32)
