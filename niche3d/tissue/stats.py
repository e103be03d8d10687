"""Geometry statistics of a lattice, in physical units.

Bone morphometry follows the direct 3D definitions used by micro-CT software and BoneJ:
trabecular thickness Tb.Th and separation Tb.Sp are the voxel-averaged *local thickness*
(diameter of the largest sphere that fits in the phase and contains the voxel;
Hildebrand & Rüegsegger 1997) of bone and of the non-bone space. BV/TV is the bone share
of the tissue volume (every voxel that is not ``OUTSIDE``). Vascular statistics describe
the sinusoid network (lumen ``SINUSOID`` plus wall ``ENDOTHELIUM``).

Examples
--------
>>> import numpy as np
>>> from niche3d.tissue import Lattice, Tissue, local_thickness
>>> slab = np.zeros((9, 9, 9), bool); slab[:, :, 2:7] = True
>>> float(local_thickness(slab, 10.0)[4, 4, 4])   # a 5-voxel slab at 10 µm (+0.5 voxel)
55.0
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba
import numpy as np
from scipy import ndimage

from niche3d._jit import jit
from niche3d.tissue.codes import Tissue
from niche3d.tissue.distance import edt
from niche3d.tissue.lattice import Lattice

if TYPE_CHECKING:
    from niche3d.tissue.config import TissueConfig

__all__ = [
    "local_thickness",
    "geometry_stats",
    "geometry_report",
    "format_geometry_report",
    "cortical_mask",
    "femur_metaphyses",
    "edt",
]

# ----------------------------------------------------------------------------- kernels
#: The distance transform measures to the nearest *background voxel centre*, which lies
#: 0.5 voxel beyond an axis-aligned surface but close to 0 beyond an oblique or curved
#: one. Subtracting 0.5 voxel per side (1 from the diameter) is exact for axis-aligned
#: slabs and 1 voxel low for balls and rods; 0.5 (used here) makes both errors at most
#: half a voxel (tests check this on slabs, rods and balls).
_SURFACE_GAP = 0.5

_OFFS = np.array(
    [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)],
    dtype=np.int64,
)


@jit
def _axis_offset(dt: np.ndarray, z: int, y: int, x: int, ax: int, d: float) -> float:  # pragma: no cover
    """Sub-voxel offset of a distance peak along one axis (0 if there is no tent peak).

    With samples ``lo, d, hi`` (``hi >= lo``) of a tent profile of slope 1 peaking between
    this voxel and the ``hi`` side, the peak is ``(hi - lo) / 2`` away and as much higher.
    A plateau that ends (``d == hi`` but no descent beyond ``hi``) is not a peak.
    """
    z = np.int64(z)  # prange indices may be unsigned: keep the arithmetic signed
    y = np.int64(y)
    x = np.int64(x)
    n = dt.shape[ax]
    i = z if ax == 0 else (y if ax == 1 else x)
    if i == 0 or i == n - 1:
        return 0.0
    if ax == 0:
        a, b = dt[z + 1, y, x], dt[z - 1, y, x]
    elif ax == 1:
        a, b = dt[z, y + 1, x], dt[z, y - 1, x]
    else:
        a, b = dt[z, y, x + 1], dt[z, y, x - 1]
    if a <= 0.0 or b <= 0.0:
        return 0.0
    step = 1
    if b > a:
        a, b = b, a
        step = -1
    if d < a - 1e-6:
        return 0.0  # not a local maximum along this axis
    j = i + 2 * step
    if 0 <= j < n:
        if ax == 0:
            beyond = dt[j, y, x]
        elif ax == 1:
            beyond = dt[z, j, x]
        else:
            beyond = dt[z, y, j]
        if a - beyond < 0.5:
            return 0.0  # plateau edge, not a tent
    return min(0.5 * (a - b), 0.5)


@jit(parallel=True)
def _ridge_radii(dt: np.ndarray, offs: np.ndarray, kappa: float) -> np.ndarray:  # pragma: no cover
    """Corrected sphere radius at distance-ridge voxels, 0 elsewhere.

    A voxel is on the ridge unless a 26-neighbour's distance exceeds its own by at least
    ``kappa`` times their separation (its maximal sphere is then, up to discretisation,
    inside the neighbour's). The radius is corrected for the sub-voxel position of the
    ridge: along each axis a tent profile through three samples peaks ``|d+ - d-| / 2``
    above the centre sample (at most half a voxel).
    """
    nz, ny, nx = dt.shape
    out = np.zeros(dt.shape, dtype=np.float32)
    no = offs.shape[0]
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                d = dt[z, y, x]
                if d <= 0.0:
                    continue
                ridge = True
                for k in range(no):
                    zz = z + offs[k, 0]
                    yy = y + offs[k, 1]
                    xx = x + offs[k, 2]
                    if zz < 0 or yy < 0 or xx < 0 or zz >= nz or yy >= ny or xx >= nx:
                        continue
                    sep = math.sqrt(offs[k, 0] ** 2 + offs[k, 1] ** 2 + offs[k, 2] ** 2)
                    if dt[zz, yy, xx] - d >= kappa * sep:
                        ridge = False
                        break
                if not ridge:
                    continue
                corr2 = 0.0
                for ax in range(3):
                    c = _axis_offset(dt, z, y, x, ax, d)
                    corr2 += c * c
                out[z, y, x] = d + math.sqrt(corr2)
    return out


@jit(parallel=True)
def _paint_spheres(
    shape_z: int,
    shape_y: int,
    shape_x: int,
    cz: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    reach: np.ndarray,
    value: np.ndarray,
    zstart: np.ndarray,
    rmax: float,
) -> np.ndarray:  # pragma: no cover
    """Max-paint ``value[i]`` into voxels closer than ``reach[i]`` to centre i.

    Centres are sorted by z; ``zstart[z]`` is the first centre with ``cz >= z``. Each
    output slice is owned by one thread (no write races).
    """
    out = np.zeros((shape_z, shape_y, shape_x), dtype=np.float32)
    n = cz.shape[0]
    ir = int(math.ceil(rmax))
    for z in numba.prange(shape_z):
        lo = z - ir
        if lo < 0:
            lo = 0
        hi = z + ir + 1
        if hi > shape_z:
            hi = shape_z
        i0 = zstart[lo]
        i1 = zstart[hi] if hi < shape_z else n
        for i in range(i0, i1):
            r = reach[i]
            dz = z - cz[i]
            rem = r * r - dz * dz
            if rem <= 0.0:
                continue
            v = value[i]
            ry = int(math.sqrt(rem))
            y0 = max(cy[i] - ry, 0)
            y1 = min(cy[i] + ry + 1, shape_y)
            for y in range(y0, y1):
                dy = y - cy[i]
                rem2 = rem - dy * dy
                if rem2 <= 0.0:
                    continue
                rx = int(math.sqrt(rem2))
                x0 = max(cx[i] - rx, 0)
                x1 = min(cx[i] + rx + 1, shape_x)
                for x in range(x0, x1):
                    dx = x - cx[i]
                    if dx * dx < rem2 and out[z, y, x] < v:
                        out[z, y, x] = v
    return out


# ----------------------------------------------------------------------------- public
def local_thickness(mask: np.ndarray, voxel_um: float = 1.0) -> np.ndarray:
    """Local thickness of a 3D binary phase, in µm (0 outside the phase).

    The local thickness of a voxel is the diameter of the largest sphere that lies in
    the phase and contains the voxel (Hildebrand & Rüegsegger 1997, as BoneJ and
    micro-CT software compute Tb.Th / Tb.Sp). Sphere centres are the voxels of the
    distance ridge; each radius is corrected for the sub-voxel position of the ridge,
    so odd and even sizes are treated alike; an axis-aligned N-voxel slab measures
    N + 0.5 voxels and a rasterised rod or ball of diameter D about D - 0.5 (see
    ``_SURFACE_GAP``). The array border is
    open: the phase is assumed to continue beyond it (spheres are clipped, not shrunk).

    Parameters
    ----------
    mask
        3D boolean array (z, y, x); True marks the phase.
    voxel_um
        Voxel edge in µm (the result is scaled by it).

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape; NaN everywhere in the phase if the phase fills
        the whole array (no boundary, thickness undefined).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x), got shape {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if not (np.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    out = np.zeros(mask.shape, dtype=np.float32)
    if not mask.any():
        return out
    if mask.all():
        out[...] = np.nan
        return out
    dt = ndimage.distance_transform_edt(mask).astype(np.float32)
    radii = _ridge_radii(dt, _OFFS, 0.9)
    cz, cy, cx = np.nonzero(radii)
    rad = radii[cz, cy, cx]
    reach = dt[cz, cy, cx].astype(np.float64)  # voxels strictly inside are in the phase
    value = (2.0 * rad - _SURFACE_GAP).astype(np.float32)
    order = np.argsort(cz, kind="stable")
    cz, cy, cx, reach, value = cz[order], cy[order], cx[order], reach[order], value[order]
    zstart = np.searchsorted(cz, np.arange(mask.shape[0] + 1)).astype(np.int64)
    painted = _paint_spheres(
        mask.shape[0],
        mask.shape[1],
        mask.shape[2],
        cz.astype(np.int64),
        cy.astype(np.int64),
        cx.astype(np.int64),
        reach,
        value,
        zstart,
        float(reach.max()) if reach.size else 0.0,
    )
    # a voxel is always inside its own inscribed sphere
    own = 2.0 * dt - _SURFACE_GAP
    np.maximum(painted, own, out=painted)
    painted[~mask] = 0.0
    painted *= np.float32(voxel_um)
    return painted


def cortical_mask(lattice: Lattice, thickness_um: float) -> np.ndarray:
    """Bone voxels of a cortical shell on the two x faces of a lattice.

    The generator puts the cortex (``cortical_shell = true``) on the x faces; this picks
    the bone voxels within ``thickness_um`` of those faces, so that trabecular statistics
    can leave the cortex out, as micro-CT trabecular regions of interest do.
    """
    if not (np.isfinite(thickness_um) and thickness_um >= 0):
        raise ValueError(f"thickness_um must be a number >= 0, got {thickness_um!r}")
    n = int(round(thickness_um / lattice.voxel_um))
    m = np.zeros(lattice.shape, dtype=bool)
    if n > 0:
        n = min(n, lattice.shape[2])
        m[:, :, :n] = True
        m[:, :, -n:] = True
    return m & (lattice.labels == Tissue.BONE)


def _summary(values: np.ndarray) -> tuple[float, float, float, float]:
    if values.size == 0:
        return (math.nan,) * 4
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return float(values.mean()), float(p10), float(p50), float(p90)


def femur_metaphyses(shape: tuple[int, int, int], voxel_um: float, config: TissueConfig) -> np.ndarray:
    """Boolean mask of a femur lattice's metaphyses (``tissue.geometry = "femur"``): the
    cavity inside the cortex over ``metaphysis_fraction`` of the length at each x end."""
    from niche3d.tissue.generator import femur_cortex

    m = int(round(config.metaphysis_fraction * shape[2]))
    ends = np.zeros(shape[2], dtype=bool)
    ends[:m] = True
    ends[shape[2] - m:] = True
    return ~femur_cortex(shape, voxel_um, config.cortical_thickness_um) & ends[None, None, :]


def geometry_stats(
    lattice: Lattice, *, cortical_um: float = 0.0, region: np.ndarray | None = None
) -> dict[str, float | np.ndarray]:
    """Measured geometry of a lattice, in physical units.

    Parameters
    ----------
    lattice
        Any tissue lattice (procedural or imported).
    cortical_um
        Thickness of a cortical shell on the x faces to leave out of the trabecular
        statistics (BV/TV, Tb.Th, Tb.Sp are then computed in the trabecular region
        only). 0 (default) uses the whole lattice.
    region
        Boolean mask of the lattice's shape: the trabecular region of interest (e.g. a
        femur's metaphyses inside its cortex, :func:`femur_metaphyses`); BV/TV, Tb.Th
        and Tb.Sp are computed there only. None (default): see ``cortical_um``.

    Returns
    -------
    dict
        Scalars (float; NaN where undefined, e.g. no sinusoid) and distributions
        (1D float32 arrays, one value per voxel):

        - ``bv_tv`` [-]: bone / tissue volume (tissue = not ``OUTSIDE``);
        - ``tb_th_um``, ``tb_sp_um`` [µm]: mean local thickness of bone / of non-bone;
        - ``tb_n_per_mm`` [1/mm]: 1 / (Tb.Th + Tb.Sp);
        - ``vascular_fraction`` [-]: (sinusoid + endothelium) / non-bone tissue volume;
        - ``sinusoid_diameter_um`` [µm] (mean) and ``..._p10/_p50/_p90``, and the
          distribution ``sinusoid_diameters_um`` (local thickness of the lumen);
        - ``sinusoid_connectivity`` [-]: share of sinusoid (lumen + wall) voxels in the
          largest 26-connected component;
        - ``sinusoid_spacing_um`` [µm]: 1/sqrt(L_V), L_V = lumen centre-line length per
          non-bone volume (the spacing of an equivalent square array of parallel tubes);
        - ``dist_marrow_to_{sinusoid,endosteum,arteriole}_um``: distributions over
          enterable voxels (marrow + stroma), with ``mean_…`` and ``median_…`` scalars,
          and ``frac_marrow_within_10um_of_sinusoid``;
        - volume fractions of every tissue (``frac_<name>``, of tissue volume),
          ``sno_share_of_endosteum``, ``arteriole_fraction``, ``enterable_fraction``.
    """
    if not isinstance(lattice, Lattice):
        raise TypeError(f"lattice must be a niche3d Lattice, got {type(lattice).__name__}")
    v = lattice.voxel_um
    lab = lattice.labels
    region_mask = None
    if region is not None:
        region_mask = np.asarray(region)
        if region_mask.shape != lab.shape or region_mask.dtype != bool:
            raise ValueError(f"region must be a boolean mask of shape {lab.shape}, got "
                             f"{region_mask.dtype} of shape {region_mask.shape}")
    tissue = lab != Tissue.OUTSIDE
    bone = lab == Tissue.BONE
    out: dict[str, float | np.ndarray] = {}

    # ---- trabecular morphometry (optionally without the cortex)
    region = tissue
    tb_bone = bone
    if region_mask is not None:
        region = tissue & region_mask
        tb_bone = bone & region
    elif cortical_um > 0:
        n = min(int(round(cortical_um / v)), lab.shape[2] // 2)
        region = tissue.copy()
        region[:, :, :n] = False
        if n:
            region[:, :, -n:] = False
        tb_bone = bone & region
    tv = int(region.sum())
    bv = int(tb_bone.sum())
    out["bv_tv"] = bv / tv if tv else math.nan
    if bv:
        th = local_thickness(tb_bone, v)[tb_bone]
        out["tb_th_um"] = float(np.nanmean(th)) if np.isfinite(th).any() else math.nan
    else:
        out["tb_th_um"] = math.nan
    space = region & ~tb_bone
    if space.any():
        sp = local_thickness(space, v)[space]
        out["tb_sp_um"] = float(np.nanmean(sp)) if np.isfinite(sp).any() else math.nan
    else:
        out["tb_sp_um"] = math.nan
    tb_th, tb_sp = float(out["tb_th_um"]), float(out["tb_sp_um"])
    out["tb_n_per_mm"] = 1000.0 / (tb_th + tb_sp) if np.isfinite(tb_th + tb_sp) else math.nan

    # ---- vessels
    lumen = lab == Tissue.SINUSOID
    vessel = lumen | (lab == Tissue.ENDOTHELIUM)
    nonbone = int((tissue & ~bone).sum())
    out["vascular_fraction"] = float(vessel.sum()) / nonbone if nonbone else math.nan
    if lumen.any():
        diam = local_thickness(lumen, v)[lumen]
        diam = diam[np.isfinite(diam)]
    else:
        diam = np.zeros(0, dtype=np.float32)
    mean, p10, p50, p90 = _summary(diam)
    out["sinusoid_diameter_um"] = mean
    out["sinusoid_diameter_p10_um"] = p10
    out["sinusoid_diameter_p50_um"] = p50
    out["sinusoid_diameter_p90_um"] = p90
    out["sinusoid_diameters_um"] = diam.astype(np.float32)
    if vessel.any():
        comp, ncomp = ndimage.label(vessel, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(comp.ravel())[1:]
        out["sinusoid_connectivity"] = float(sizes.max() / sizes.sum())
        out["sinusoid_components"] = float(ncomp)
    else:
        out["sinusoid_connectivity"] = math.nan
        out["sinusoid_components"] = 0.0
    if lumen.any() and nonbone:
        from skimage.morphology import skeletonize

        skel = skeletonize(lumen)
        length_um = _skeleton_length(skel) * v
        lv = length_um / (nonbone * v**3)
        out["sinusoid_spacing_um"] = 1.0 / math.sqrt(lv) if lv > 0 else math.nan
    else:
        out["sinusoid_spacing_um"] = math.nan

    # ---- distances from HSC-enterable voxels
    ent = lattice.enterable
    for key, dist in (
        ("sinusoid", lattice.dist_sinusoid_um),
        ("endosteum", lattice.dist_endosteum_um),
        ("arteriole", lattice.dist_arteriole_um),
    ):
        d = dist[ent]
        name = f"dist_marrow_to_{key}_um"
        out[name] = d.astype(np.float32)
        finite = d[np.isfinite(d)]
        out[f"mean_{name}"] = float(finite.mean()) if finite.size else math.nan
        out[f"median_{name}"] = float(np.median(finite)) if finite.size else math.nan
    ds = lattice.dist_sinusoid_um[ent]
    out["frac_marrow_within_10um_of_sinusoid"] = float((ds <= 10.0).mean()) if ds.size else math.nan

    # ---- composition
    ntis = int(tissue.sum())
    counts = lattice.counts()
    for name, c in counts.items():
        if name == "outside":
            continue
        out[f"frac_{name}"] = c / ntis if ntis else math.nan
    lining = counts["endosteum"] + counts["sno"]
    out["sno_share_of_endosteum"] = counts["sno"] / lining if lining else math.nan
    out["arteriole_fraction"] = counts["arteriole"] / nonbone if nonbone else math.nan
    out["enterable_fraction"] = float(ent.sum()) / ntis if ntis else math.nan
    if counts["arteriole"]:
        _, nart = ndimage.label(lab == Tissue.ARTERIOLE, structure=np.ones((3, 3, 3), bool))
        out["arteriole_segments"] = float(nart)
    else:
        out["arteriole_segments"] = 0.0
    out["voxel_um"] = v
    return out


def _skeleton_length(skel: np.ndarray) -> float:
    """Centre-line length (voxels) of a 1-voxel skeleton: half the summed neighbour links."""
    s = skel.astype(bool)
    if not s.any():
        return 0.0
    total = 0.0
    p = np.pad(s, 1)
    core = p[1:-1, 1:-1, 1:-1]
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dz, dy, dx) == (0, 0, 0):
                    continue
                sh = p[1 + dz : p.shape[0] - 1 + dz, 1 + dy : p.shape[1] - 1 + dy, 1 + dx : p.shape[2] - 1 + dx]
                total += math.sqrt(dz * dz + dy * dy + dx * dx) * float((core & sh).sum())
    return total / 2.0


#: (stat key, display name, config target attribute or None, unit)
_REPORT_ROWS: tuple[tuple[str, str, str | None, str], ...] = (
    ("bv_tv", "BV/TV", "bv_tv", "-"),
    ("tb_th_um", "Tb.Th", "tb_th_um", "µm"),
    ("tb_sp_um", "Tb.Sp", "tb_sp_um", "µm"),
    ("tb_n_per_mm", "Tb.N", None, "1/mm"),
    ("vascular_fraction", "vascular fraction", "vascular_fraction", "-"),
    ("sinusoid_diameter_um", "sinusoid diameter (mean)", "sinusoid_diameter_um", "µm"),
    ("sinusoid_diameter_p10_um", "sinusoid diameter p10", None, "µm"),
    ("sinusoid_diameter_p90_um", "sinusoid diameter p90", None, "µm"),
    ("sinusoid_spacing_um", "sinusoid spacing", "sinusoid_spacing_um", "µm"),
    ("sinusoid_connectivity", "sinusoid connectivity (largest component)", None, "-"),
    ("sno_share_of_endosteum", "SNO share of endosteum", "sno_fraction", "-"),
    ("frac_endosteum", "endosteum fraction", None, "-"),
    ("frac_stroma", "stroma fraction", None, "-"),
    ("arteriole_fraction", "arteriole fraction of non-bone", None, "-"),
    ("arteriole_segments", "arteriole pieces (26-connected)", None, "-"),
    ("enterable_fraction", "HSC-enterable fraction (marrow + stroma)", None, "-"),
    ("mean_dist_marrow_to_sinusoid_um", "marrow -> sinusoid distance (mean)", None, "µm"),
    ("median_dist_marrow_to_sinusoid_um", "marrow -> sinusoid distance (median)", None, "µm"),
    ("frac_marrow_within_10um_of_sinusoid", "marrow within 10 µm of sinusoid", None, "-"),
    ("mean_dist_marrow_to_endosteum_um", "marrow -> endosteum distance (mean)", None, "µm"),
    ("median_dist_marrow_to_endosteum_um", "marrow -> endosteum distance (median)", None, "µm"),
    ("mean_dist_marrow_to_arteriole_um", "marrow -> arteriole distance (mean)", None, "µm"),
    ("median_dist_marrow_to_arteriole_um", "marrow -> arteriole distance (median)", None, "µm"),
)


def geometry_report(
    lattice: Lattice, config: TissueConfig
) -> list[tuple[str, float, float | None, str]]:
    """Measured statistics beside the scenario's targets, one row per statistic.

    Parameters
    ----------
    lattice
        The lattice to measure.
    config
        The ``[tissue]`` section whose targets are shown (for an imported image the
        targets are still the section's values, for comparison). With
        ``cortical_shell = true`` the trabecular statistics leave the cortex out.

    Returns
    -------
    list of (name, measured, target or None, unit)
    """
    from niche3d.tissue.config import TissueConfig

    if not isinstance(config, TissueConfig):
        raise TypeError(f"config must be a TissueConfig, got {type(config).__name__}")
    if config.geometry == "femur":  # the bv_tv target is the metaphyses'
        stats = geometry_stats(lattice, region=femur_metaphyses(lattice.shape, lattice.voxel_um, config))
    else:
        cort = config.cortical_thickness_um if config.cortical_shell else 0.0
        stats = geometry_stats(lattice, cortical_um=cort)
    rows: list[tuple[str, float, float | None, str]] = []
    for key, name, target_attr, unit in _REPORT_ROWS:
        target = None
        if target_attr is not None:
            target = float(getattr(config, target_attr))
        rows.append((name, float(stats[key]), target, unit))  # type: ignore[arg-type]
    return rows


def format_geometry_report(rows: list[tuple[str, float, float | None, str]]) -> str:
    """Format report rows as aligned text, one line per statistic.

    Each line reads ``name  measured  target  unit`` (target ``-`` when there is none),
    followed by the relative deviation from the target where one exists.
    """
    if not rows:
        return ""
    w = max(len(r[0]) for r in rows)
    lines = [f"{'statistic':<{w}}  {'measured':>10}  {'target':>10}  unit   deviation"]
    for name, meas, target, unit in rows:
        m = _fmt(meas)
        t = "-" if target is None else _fmt(target)
        dev = ""
        if target is not None and target != 0 and np.isfinite(meas):
            dev = f"{100.0 * (meas - target) / target:+.1f} %"
        lines.append(f"{name:<{w}}  {m:>10}  {t:>10}  {unit:<5}  {dev}".rstrip())
    return "\n".join(lines)


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    if x == int(x) and abs(x) < 1e6:
        return f"{int(x)}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"
