"""Drawing new cells: the initial population and the phase timers of cycling founders.

Everything here is drawn with the step key ``SEED_STEP`` (outside any model step), from
voxel keys (placement, state, bound flag) or cell ids (phase times), so a founder's draws
do not depend on the order in which cells are added.
"""

from __future__ import annotations

import math

import numpy as np

from niche3d.cells import _kernels as K
from niche3d.cells import codes as C
from niche3d.cells import params as P
from niche3d.cells.config import CellsConfig
from niche3d.cells.rng import Purpose, uniform, uniform_array

__all__ = ["SEED_STEP", "adhesion_scores", "initial_cells", "phase_timers", "stem_probabilities",
           "stem_probability_of"]

#: step key of everything drawn outside ``CellModel.step`` (seeding, ``add_cells``)
SEED_STEP = 2**62


def adhesion_scores(vox: np.ndarray, cxcl: np.ndarray, mscf: np.ndarray, contact: np.ndarray,
                    vcam: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Vector form of the kernels' adhesion score at flat voxels ``vox``.

    Parameters
    ----------
    vox
        Flat voxel indices.
    cxcl, mscf
        Flat CXCL12 (nM) and membrane SCF maps.
    contact, vcam
        Flat contact bits and VCAM1 contact (:func:`niche3d.tissue.contact.contact_maps`).
    p
        Kernel parameter vector (modifier entries as set in it, 0 in the base vector).
    """
    c = np.maximum(cxcl[vox].astype(np.float64), 0.0)
    th = c / (c + p[P.K_KD]) * (1.0 - p[P.K_BLOCK])
    vc = vcam[vox] / (1.0 + p[P.K_PROT] / p[P.K_VCAM_PROT_HALF])
    nc = ((contact[vox] & C.C_SNO) != 0).astype(np.float64)
    ob = ((contact[vox] & C.C_ANG1) != 0).astype(np.float64)
    m = np.maximum(mscf[vox].astype(np.float64), 0.0)
    return (p[P.K_W_SCF] * m + p[P.K_W_VCAM] * vc + p[P.K_W_NCAD] * nc + p[P.K_W_ENDO] * ob) * (
        1.0 + p[P.K_W_CXCR4] * th)


def stem_probabilities(vox: np.ndarray, shape: tuple[int, int, int], cxcl: np.ndarray,
                       mscf: np.ndarray, contact: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Stem-cell probability ``h(S)`` of the niche signal at flat voxels ``vox`` (the
    kernels' :func:`~niche3d.cells._kernels.niche_signal` and ``stem_probability``)."""
    nz, ny, nx = shape
    sig = np.empty(vox.size, np.float64)
    K.niche_signal_map(np.ascontiguousarray(vox, dtype=np.int64), nz, ny, nx, cxcl, mscf,
                       contact, p, sig)
    return stem_probability_of(sig, p)


def stem_probability_of(sig: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Vector form of the kernels' ``stem_probability``: ``S^n / (S^n + K^n)``."""
    out = np.zeros(sig.shape, np.float64)
    pos = sig > 0
    with np.errstate(over="ignore"):  # (K / S)^n -> inf far below the threshold: h = 0
        out[pos] = 1.0 / (1.0 + (p[P.K_SITE] / sig[pos]) ** p[P.K_SITE_HILL])
    return out


def phase_timers(seed: int, ids: np.ndarray, code: int, par: np.ndarray,
                 residual: bool) -> np.ndarray:
    """Remaining G1 or S/G2/M time (h) of founders ``ids`` in state ``code``.

    A full Erlang phase duration, or with ``residual`` a uniform share of one (a cell
    caught mid-phase).
    """
    mean = par[P.K_G1_MEAN] if code == C.S_G1 else par[P.K_S_MEAN]
    shape = par[P.K_G1_SHAPE] if code == C.S_G1 else par[P.K_S_SHAPE]
    out = np.empty(ids.size, np.float64)
    K.draw_erlang(seed, SEED_STEP, ids, Purpose.ERLANG, mean, shape, out)
    if residual:
        out *= uniform_array(seed, SEED_STEP, ids, Purpose.SEED_RESIDUAL)
    return out


def initial_cells(
    cfg: CellsConfig, p: np.ndarray, enter: np.ndarray, contact: np.ndarray, vcam: np.ndarray,
    shape: tuple[int, int, int], voxel_volume_mm3: float, seed: int, cxcl: np.ndarray,
    mscf: np.ndarray,
) -> tuple[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """Draw the initial HSCs (see ``CellModel.seed_initial`` for the rules).

    Parameters
    ----------
    cfg
        The ``[cells]`` section.
    p
        Base kernel parameter vector.
    enter, contact, vcam
        Flat enterable mask, contact bits and VCAM1 contact of the lattice.
    shape
        Lattice shape (z, y, x).
    voxel_volume_mm3
        Volume of one voxel.
    seed
        Master seed.
    cxcl, mscf
        Flat CXCL12 and membrane SCF maps.

    Returns
    -------
    n : int
        Number of cells drawn.
    groups : list of (code, z, y, x, bound)
        Non-empty groups of cells per HSC state code, voxels in flat order.

    Raises
    ------
    ValueError
        If the lattice has fewer enterable voxels than cells to place.
    """
    free = np.flatnonzero(enter != 0).astype(np.int64)
    vol = free.size * voxel_volume_mm3
    expect = cfg.hsc_per_mm3 * vol
    frac = expect - math.floor(expect)
    n = int(math.floor(expect)) + (1 if uniform(seed, SEED_STEP, 0, Purpose.SEED_COUNT) < frac else 0)
    if n > free.size:
        raise ValueError(
            f"hsc_per_mm3 = {cfg.hsc_per_mm3:g} asks for {n} cells but only {free.size} "
            "enterable voxels exist"
        )
    if n == 0:
        return 0, []
    u = np.empty(free.size, np.float64)
    K.voxel_uniforms(seed, SEED_STEP, free, Purpose.SEED_PLACE, u)
    if cfg.initial_placement == "niche":
        # a homeostatic start: founders take niche sites (weight 1) while free sites last,
        # the rest go to the voxels of highest stem-cell probability h(S) (weight 1e-6 h:
        # below any site), where they differentiate unless they find a free site
        h = stem_probabilities(free, shape, cxcl, mscf, contact, p)
        on_site = h >= 0.5  # S >= K
        w = np.where(on_site, 1.0, 1e-6 * h + 1e-12)
    else:
        w = np.ones(free.size)
    # Efraimidis-Spirakis weighted sampling without replacement: top-n of u^(1/w)
    key = np.log(np.maximum(u, 1e-300)) / w
    pick = np.argpartition(-key, n - 1)[:n] if n < free.size else np.arange(free.size)
    vox = np.sort(free[pick])
    _, ny, nx = shape
    zz, rem = np.divmod(vox, ny * nx)
    yy, xx = np.divmod(rem, nx)
    # states by hashed voxel keys
    us = np.empty(n, np.float64)
    K.voxel_uniforms(seed, SEED_STEP, vox, Purpose.SEED_STATE, us)
    m0 = 1.0 / max(p[P.K_ENTRY], 1e-300)
    m1 = p[P.K_G1_MEAN]
    m2 = p[P.K_S_MEAN]
    tot = m0 + m1 + m2
    df = cfg.dormant_fraction
    codes = np.where(
        us < df,
        C.S_DORMANT,
        np.where(
            us < df + (1 - df) * m0 / tot,
            C.S_G0,
            np.where(us < df + (1 - df) * (m0 + m1) / tot, C.S_G1, C.S_SG2M),
        ),
    )
    # bound with the local steady-state probability k_on / (k_on + k_off)
    ub = np.empty(n, np.float64)
    K.voxel_uniforms(seed, SEED_STEP, vox, Purpose.SEED_BOUND, ub)
    sc = adhesion_scores(vox, cxcl, mscf, contact, vcam, p)
    scn = np.power(np.maximum(sc, 0.0), p[P.K_BIND_HILL])
    kon = p[P.K_KON] * scn / (scn + p[P.K_BIND_HALF] ** p[P.K_BIND_HILL])
    koff = p[P.K_KOFF]
    pb = np.where(kon + koff > 0, kon / np.maximum(kon + koff, 1e-300), 0.0)
    bnd = ub < pb
    groups = []
    for code in C.HSC_STATES:
        sel = codes == code
        if sel.any():
            groups.append((code, zz[sel], yy[sel], xx[sel], bnd[sel]))
    return n, groups
