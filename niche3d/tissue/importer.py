"""Import of segmented label images (TIFF, zarr, OME-Zarr) as tissue lattices.

A label image holds integer labels; the scenario's ``[tissue.image.labels]`` table maps
each label value to a tissue name (an empty table means the values already are niche3d
tissue codes). The voxel size comes from the file (ImageJ hyperstack metadata, OME-TIFF
``PhysicalSize*``, TIFF resolution tags with a length unit, OME-Zarr ``scale`` with axis
units, or a ``voxel_um`` attribute on a plain zarr array) or from
``tissue.image.voxel_um``; if both are there and differ, that is an error. The image is
resampled (nearest neighbour, label-preserving) to the scenario's voxel edge, then the
layers an image usually lacks are derived: the endosteal lining (with its SNO share),
the sinusoid endothelium and the perivascular stroma.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from niche3d.tissue.codes import TISSUE_NAMES, Tissue, tissue_code
from niche3d.tissue.config import ImageConfig, TissueConfig
from niche3d.tissue.errors import LabelImageError
from niche3d.tissue.lattice import Lattice

__all__ = ["ImportReport", "LabelImageError", "check_label_image", "read_label_image",
           "load_label_image"]

#: a label image larger than this (voxels, as declared or after resampling) is refused
#: before it is read: a run's lattice is at most 4096 voxels a side, and the reader holds
#: the whole image in memory
MAX_IMAGE_VOXELS = 2**31
#: the declared voxel sizes a file may give (µm)
VOXEL_UM_RANGE = (0.01, 1e4)


class _Declared:
    """A label image's declared shape and dtype, read from its metadata (no voxel data)."""

    def __init__(self, shape: Any, dtype: Any) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def squeeze(self, axis: tuple[int, ...]) -> _Declared:
        return _Declared([n for i, n in enumerate(self.shape) if i not in axis], self.dtype)


def _check_declared(shape: Any, dtype: Any, path: Any) -> None:
    """Refuse an image whose declared size is beyond what can be imported, before reading."""
    n = math.prod(int(k) for k in shape)
    if n > MAX_IMAGE_VOXELS:
        raise LabelImageError(
            f"{path}: the file declares {' x '.join(str(int(k)) for k in shape)} = {n:,} "
            f"voxels, more than {MAX_IMAGE_VOXELS:,}; crop or downsample it first")
    if not np.issubdtype(np.dtype(dtype), np.integer) or np.dtype(dtype) == bool:
        raise LabelImageError(f"{path}: label images hold integer labels, the file declares "
                              f"dtype {np.dtype(dtype)}")

_UNIT_TO_UM = {
    "micron": 1.0,
    "microns": 1.0,
    "um": 1.0,
    "µm": 1.0,
    "\u03bcm": 1.0,
    "\\u00b5m": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}


@dataclass
class ImportReport:
    """What happened on import (attached to the lattice as ``lattice.import_report``)."""

    path: str
    source_shape: tuple[int, int, int]
    source_voxel_um: tuple[float, float, float]
    voxel_um_from: str
    shape: tuple[int, int, int]
    shape_requested: tuple[int, int, int] | None = None
    derived: list[str] = field(default_factory=list)

    @property
    def shape_mismatch(self) -> bool:
        """True if a requested domain shape differs from the imported shape."""
        return self.shape_requested is not None and tuple(self.shape_requested) != self.shape

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        vz, vy, vx = self.source_voxel_um
        out = [
            f"imported {self.path}: {self.source_shape} voxels of {vz:g} x {vy:g} x {vx:g} µm "
            f"(voxel size from {self.voxel_um_from}) -> lattice {self.shape}",
        ]
        if self.shape_mismatch:
            out.append(
                f"note: domain.shape {tuple(self.shape_requested)} differs from the imported "
                f"shape {self.shape}; the imported shape is used"
            )
        if self.derived:
            out.append("derived layers: " + ", ".join(self.derived))
        return out


# ----------------------------------------------------------------------------- reading
def _unit_factor(unit: Any, what: str) -> float:
    key = str(unit).strip().lower()
    if key in _UNIT_TO_UM:
        return _UNIT_TO_UM[key]
    if key.replace("\\", "") in _UNIT_TO_UM:
        return _UNIT_TO_UM[key.replace("\\", "")]
    raise LabelImageError(f"{what}: unknown length unit {unit!r}; allowed: {', '.join(sorted(set(_UNIT_TO_UM)))}")


def _squeeze_axes(data: np.ndarray, axes: str, path: str) -> tuple[np.ndarray, str]:
    """Drop singleton non-spatial axes; the rest must be (Z,) Y, X."""
    axes = axes.upper()
    if len(axes) != data.ndim:
        axes = "".join("ZYX"[-data.ndim:]) if data.ndim <= 3 else "?" * data.ndim
    keep_idx = []
    keep_ax = ""
    for i, a in enumerate(axes):
        if a in "ZYX":
            keep_idx.append(i)
            keep_ax += a
        elif data.shape[i] == 1:
            continue
        elif a in "QIS?" and "Z" not in axes:
            keep_idx.append(i)  # plain multi-page stack: pages are z
            keep_ax += "Z"
        else:
            raise LabelImageError(
                f"{path}: axis {a!r} has length {data.shape[i]}; a label image must be one "
                f"3D volume (Z, Y, X), not a series of channels or time points (axes {axes})"
            )
    drop = tuple(i for i in range(data.ndim) if i not in keep_idx)
    data = data.squeeze(axis=drop) if drop else data
    return data, keep_ax


def _read_tiff(path: Path, read: bool = True) -> tuple[Any, tuple[float, float, float] | None, str]:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises several types for "not a TIFF"
        raise LabelImageError(f"{path}: cannot read as TIFF ({exc})") from None
    with tif:
        series = tif.series[0]
        _check_declared(series.shape, series.dtype, path)
        data = series.asarray() if read else _Declared(series.shape, series.dtype)
        axes = series.axes
        data, axes = _squeeze_axes(data, axes, str(path))
        page = tif.pages[0]
        vx = vy = vz = None
        source = ""
        if tif.is_ome and tif.ome_metadata:
            xml = tif.ome_metadata
            vals: dict[str, float] = {}
            for ax in "XYZ":
                m = re.search(rf'PhysicalSize{ax}="([0-9.eE+-]+)"', xml)
                if m:
                    u = re.search(rf'PhysicalSize{ax}Unit="([^"]+)"', xml)
                    f = _unit_factor(u.group(1), str(path)) if u else 1.0
                    vals[ax] = float(m.group(1)) * f
            if vals:
                vx, vy, vz = vals.get("X"), vals.get("Y"), vals.get("Z")
                source = "OME-TIFF PhysicalSize"
        if vx is None and tif.is_imagej and tif.imagej_metadata is not None:
            md = tif.imagej_metadata
            unit = md.get("unit")
            if unit is not None and str(unit).lower() not in {"pixel", "pixels", ""}:
                f = _unit_factor(unit, str(path))
                xr = page.tags.get("XResolution")
                yr = page.tags.get("YResolution")
                if xr is not None and yr is not None:
                    xn, xd = xr.value
                    yn, yd = yr.value
                    if xn > 0 and yn > 0 and not (xn == xd == 1 and yn == yd == 1 and "spacing" not in md):
                        vx, vy = xd / xn * f, yd / yn * f
                if "spacing" in md:
                    vz = float(md["spacing"]) * f
                elif vx is not None:
                    vz = None
                source = "ImageJ metadata"
        if vx is None:
            ru = page.tags.get("ResolutionUnit")
            xr = page.tags.get("XResolution")
            yr = page.tags.get("YResolution")
            if ru is not None and int(ru.value) in (2, 3) and xr is not None and yr is not None:
                f = 25400.0 if int(ru.value) == 2 else 1e4  # inch, centimetre -> µm
                xn, xd = xr.value
                yn, yd = yr.value
                if xn > 0 and yn > 0 and not (xn == xd and yn == yd and xn in (1, 72)):
                    vx, vy = xd / xn * f, yd / yn * f
                    source = "TIFF resolution tags"
    if data.ndim != 3:
        raise LabelImageError(
            f"{path}: the label image is {data.ndim}D with shape {data.shape}; a 3D (z, y, x) "
            "volume is needed"
        )
    if vx is None or vy is None:
        return data, None, ""
    if vz is None:
        if data.shape[0] > 1:
            raise LabelImageError(
                f"{path}: the file gives the x/y pixel size ({vx:g} x {vy:g} µm) but no z spacing; "
                "set tissue.image.voxel_um or save the stack with its z spacing"
            )
        vz = vx
    return data, (float(vz), float(vy), float(vx)), source


def _read_zarr(path: Path, read: bool = True) -> tuple[Any, tuple[float, float, float] | None, str]:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for "not a zarr store"
        raise LabelImageError(f"{path}: cannot open as zarr ({exc})") from None
    if isinstance(node, zarr.Array):
        _check_declared(node.shape, node.dtype, path)
        data = np.asarray(node[...]) if read else _Declared(node.shape, node.dtype)
        attrs = dict(node.attrs)
        vox = attrs.get("voxel_um", attrs.get("voxel_size_um"))
        if data.ndim != 3:
            data, _ = _squeeze_axes(data, "?" * data.ndim, str(path))
        if data.ndim != 3:
            raise LabelImageError(f"{path}: the label array is {data.ndim}D with shape {data.shape}; a 3D (z, y, x) volume is needed")
        if vox is None:
            return data, None, ""
        v = [float(vox)] * 3 if np.isscalar(vox) else [float(x) for x in vox]
        if len(v) != 3:
            raise LabelImageError(f"{path}: attribute voxel_um must be a number or 3 numbers, got {vox!r}")
        return data, (v[0], v[1], v[2]), "zarr attribute voxel_um"
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales")
    if not ms and "labels" in ome:
        names = ome["labels"]
        if not names:
            raise LabelImageError(f"{path}: OME-Zarr labels group lists no label image")
        return _read_zarr(path / "labels" / str(names[0]), read)
    if not ms and "labels" in node:
        sub = dict(node["labels"].attrs)
        names = sub.get("ome", sub).get("labels") or []
        if names:
            return _read_zarr(path / "labels" / str(names[0]), read)
    if not ms:
        raise LabelImageError(
            f"{path}: a zarr group without OME-Zarr 'multiscales' metadata; give the path of "
            "the label array itself"
        )
    m0 = ms[0]
    axes = m0.get("axes", [])
    names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    ds = m0["datasets"][0]
    arr = node[ds["path"]]
    _check_declared(arr.shape, arr.dtype, path)
    data = np.asarray(arr[...]) if read else _Declared(arr.shape, arr.dtype)
    if not names:
        names = ["z", "y", "x"][-data.ndim:] if data.ndim <= 3 else ["?"] * data.ndim
    scale = [1.0] * data.ndim
    have_scale = False
    for tr in list(m0.get("coordinateTransformations", [])) + list(ds.get("coordinateTransformations", [])):
        if tr.get("type") == "scale":
            s = [float(x) for x in tr["scale"]]
            scale = [a * b for a, b in zip(scale, s, strict=True)]
            have_scale = True
    axstr = "".join(n[0].upper() if n else "?" for n in names)
    # convert spatial scales to µm (axes without a unit give no voxel size)
    sp: dict[str, float] = {}
    units_ok = True
    for i, a in enumerate(axes):
        nm = names[i].lower()
        if nm in ("z", "y", "x"):
            unit = a.get("unit") if isinstance(a, dict) else None
            if unit is None:
                units_ok = False
                continue
            sp[nm] = scale[i] * _unit_factor(unit, str(path))
    data, axstr = _squeeze_axes(data, axstr, str(path))
    if data.ndim != 3:
        raise LabelImageError(f"{path}: the label image is {data.ndim}D with shape {data.shape}; a 3D (z, y, x) volume is needed")
    if have_scale and units_ok and len(sp) == 3:
        return data, (sp["z"], sp["y"], sp["x"]), "OME-Zarr scale"
    return data, None, ""


def read_label_image(path: str | Path, read: bool = True) -> tuple[Any, tuple[float, float, float] | None, str]:
    """Read a 3D label image and the voxel size its file declares.

    Parameters
    ----------
    path
        A TIFF (``.tif``/``.tiff``, ImageJ hyperstack or OME-TIFF) or a zarr array / OME-Zarr
        image or labels group (a directory).

    read
        False: read the metadata only (``data`` is then an object with the declared
        ``shape``, ``ndim`` and ``dtype``).

    Returns
    -------
    data
        The label array (z, y, x), as stored (not yet validated).
    voxel_um
        (z, y, x) voxel size in µm, or None if the file does not declare one.
    source
        Where the voxel size came from (empty if None).
    """
    p = Path(path)
    if not p.exists():
        raise LabelImageError(f"tissue.image.path = {str(p)!r} does not exist")
    if not (p.is_file() or p.is_dir()):  # a FIFO or a device would block or never end
        raise LabelImageError(f"tissue.image.path = {str(p)!r} is not a regular file or a "
                              "zarr directory")
    suffix = p.suffix.lower()
    if p.is_dir() or suffix in (".zarr", ".zr", ".ome.zarr"):
        return _read_zarr(p, read)
    if suffix in (".tif", ".tiff", ".btf", ".tf8"):
        return _read_tiff(p, read)
    raise LabelImageError(
        f"tissue.image.path = {str(p)!r}: unsupported file type {suffix!r}; allowed: a .tif/.tiff "
        "file or a zarr / OME-Zarr directory"
    )


# ----------------------------------------------------------------------------- mapping
def _map_labels(data: np.ndarray, table: dict[str, str], path: str) -> np.ndarray:
    if data.dtype == bool or not np.issubdtype(data.dtype, np.integer):
        raise LabelImageError(
            f"{path}: label image has dtype {data.dtype}; a segmented label image must hold "
            "integers (uint8, uint16, uint32, int8..int64)"
        )
    values = np.unique(data)
    if table:
        lut_map = {int(k): tissue_code(v) for k, v in table.items()}
        source = "tissue.image.labels"
    else:
        lut_map = {c: c for c in TISSUE_NAMES}
        source = "niche3d tissue codes (tissue.image.labels is empty)"
    unknown = [int(v) for v in values if int(v) not in lut_map]
    if unknown:
        shown = ", ".join(str(u) for u in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        allowed = ", ".join(f"{k}={TISSUE_NAMES[c]}" for k, c in sorted(lut_map.items()))
        raise LabelImageError(
            f"{path}: label values {shown} are not mapped by {source}; mapped values: {allowed}"
        )
    vals = np.array(sorted(lut_map), dtype=np.int64)
    codes = np.array([lut_map[int(k)] for k in vals], dtype=np.uint8)
    idx = np.searchsorted(vals, data.astype(np.int64, copy=False))
    return codes[idx]


def _resample(labels: np.ndarray, src_um: tuple[float, float, float], dst_um: float) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume to an isotropic voxel edge."""
    out_shape = [max(1, int(round(n * s / dst_um))) for n, s in zip(labels.shape, src_um, strict=True)]
    if tuple(out_shape) == labels.shape and all(abs(s - dst_um) <= 1e-6 * dst_um for s in src_um):
        return labels
    idx = [
        np.minimum(np.floor((np.arange(m) + 0.5) * dst_um / s).astype(np.int64), n - 1)
        for m, s, n in zip(out_shape, src_um, labels.shape, strict=True)
    ]
    return labels[np.ix_(*idx)]


def _image_config(config: TissueConfig | ImageConfig) -> tuple[ImageConfig, TissueConfig]:
    if isinstance(config, TissueConfig):
        if config.image is None:
            raise LabelImageError("tissue.image is not set; give a [tissue.image] table with a path")
        return config.image, config
    if isinstance(config, ImageConfig):
        return config, TissueConfig()
    raise TypeError(f"config must be a TissueConfig or ImageConfig, got {type(config).__name__}")


def check_label_image(
    config: TissueConfig | ImageConfig, voxel_um: float
) -> tuple[tuple[int, int, int], tuple[float, float, float], str]:
    """Check a label image from its metadata alone, before any voxel is read.

    The path is a regular file or a zarr directory (a FIFO would block); the declared
    image is one 3D volume of integer labels of at most ``MAX_IMAGE_VOXELS``; the voxel
    size (declared by the file, or ``tissue.image.voxel_um``; a conflict is an error) is
    finite and within ``VOXEL_UM_RANGE``; the lattice it resamples to at ``voxel_um``
    has 8..4096 voxels a side, as ``domain.shape`` must.

    Returns
    -------
    shape
        The lattice shape after resampling (z, y, x).
    source_voxel_um
        The image's voxel size (z, y, x), µm.
    source
        Where that voxel size came from.

    Raises
    ------
    LabelImageError
        What is wrong, naming the file or key.
    """
    img, _ = _image_config(config)
    if isinstance(voxel_um, bool) or not (
        isinstance(voxel_um, numbers.Real) and math.isfinite(voxel_um) and voxel_um > 0
    ):
        raise LabelImageError(f"voxel_um must be a positive number of µm, got {voxel_um!r}")
    path = str(img.path)
    decl, file_vox, file_src = read_label_image(img.path, read=False)
    if decl.ndim != 3 or min(decl.shape) < 1:
        raise LabelImageError(f"{path}: the label image is {decl.ndim}D with shape {decl.shape}; "
                              "a non-empty 3D (z, y, x) volume is needed")
    lo, hi = VOXEL_UM_RANGE
    if file_vox is not None and not all(math.isfinite(v) and lo <= v <= hi for v in file_vox):
        raise LabelImageError(
            f"{path}: the file declares a voxel size of {' x '.join(f'{v:g}' for v in file_vox)} "
            f"µm (z, y, x; {file_src}); allowed: {lo:g}..{hi:g} µm. Fix the file's metadata or "
            "set tissue.image.voxel_um")
    if file_vox is not None and img.voxel_um is not None:
        if any(abs(f - img.voxel_um) > 1e-3 * img.voxel_um for f in file_vox):
            raise LabelImageError(
                f"{path}: the file declares a voxel size of {file_vox[0]:g} x {file_vox[1]:g} x "
                f"{file_vox[2]:g} µm (z, y, x; {file_src}) but tissue.image.voxel_um = "
                f"{img.voxel_um:g}; remove tissue.image.voxel_um or fix the file"
            )
    if file_vox is not None:
        src_vox, vsrc = file_vox, file_src
    elif img.voxel_um is not None:
        src_vox, vsrc = (float(img.voxel_um),) * 3, "tissue.image.voxel_um"
    else:
        raise LabelImageError(
            f"{path}: no voxel size in the file and tissue.image.voxel_um is not set; "
            "set tissue.image.voxel_um (µm)"
        )
    shape = tuple(max(1, int(round(n * s / float(voxel_um))))
                  for n, s in zip(decl.shape, src_vox, strict=True))
    if any(not 8 <= n <= 4096 for n in shape):
        raise LabelImageError(
            f"{path}: {' x '.join(map(str, decl.shape))} voxels of "
            f"{' x '.join(f'{v:g}' for v in src_vox)} µm make a lattice of "
            f"{' x '.join(map(str, shape))} voxels at domain.voxel_um = {voxel_um:g}; every "
            "axis must be 8..4096 voxels (as for domain.shape)")
    return shape, (float(src_vox[0]), float(src_vox[1]), float(src_vox[2])), vsrc  # type: ignore[return-value]


def load_label_image(
    config: TissueConfig | ImageConfig,
    voxel_um: float,
    *,
    shape_requested: tuple[int, int, int] | None = None,
    seed: int = 0,
) -> Lattice:
    """Import a segmented label image as a lattice at ``voxel_um``.

    Parameters
    ----------
    config
        The ``[tissue]`` section (its ``image`` table, ``sno_fraction`` and
        ``stroma_thickness_um`` are used) or just its ``[tissue.image]`` table (then the
        C57BL/6 defaults of the other two apply).
    voxel_um
        Voxel edge of the lattice (``domain.voxel_um``); the image is resampled to it.
    shape_requested
        The scenario's ``domain.shape``. The imported shape wins; a difference is
        recorded in ``lattice.import_report``, not raised.
    seed
        Seed of the SNO selection when the endosteum is derived.

    Returns
    -------
    Lattice
        With an ``import_report`` attribute (:class:`ImportReport`).

    Raises
    ------
    LabelImageError
        (a ValueError) Missing file, not a regular file, unsupported type, 2D image,
        non-integer dtype, a declared size beyond ``MAX_IMAGE_VOXELS``, label values the
        table does not map, no voxel size in file or scenario, a voxel size out of range or
        that differs from ``tissue.image.voxel_um``, a lattice of fewer than 8 or more
        than 4096 voxels a side (:func:`check_label_image`, all before reading).
    """
    img, tcfg = _image_config(config)
    _, src_vox, vsrc = check_label_image(img, voxel_um)  # all of it before reading
    path = str(img.path)
    data, _, _ = read_label_image(img.path)
    if data.ndim != 3:
        raise LabelImageError(f"{path}: the label image is {data.ndim}D; a 3D (z, y, x) volume is needed")
    codes = _map_labels(data, img.labels, path)
    labels = _resample(codes, src_vox, float(voxel_um))
    derived = _derive_layers(labels, float(voxel_um), img, tcfg, seed)
    lat = Lattice(labels, float(voxel_um))
    lat.import_report = ImportReport(  # type: ignore[attr-defined]
        path=path,
        source_shape=tuple(int(n) for n in codes.shape),  # type: ignore[arg-type]
        source_voxel_um=tuple(float(x) for x in src_vox),  # type: ignore[arg-type]
        voxel_um_from=vsrc,
        shape=lat.shape,
        shape_requested=tuple(int(n) for n in shape_requested) if shape_requested is not None else None,  # type: ignore[arg-type]
        derived=derived,
    )
    return lat


def _derive_layers(
    labels: np.ndarray, voxel_um: float, img: ImageConfig, tcfg: TissueConfig, seed: int
) -> list[str]:
    """Add endosteum/SNO, endothelium and perivascular stroma where the image has none."""
    derived: list[str] = []
    present = np.bincount(labels.ravel(), minlength=256) > 0
    marrow = labels == Tissue.MARROW
    bone = labels == Tissue.BONE
    if img.derive_endosteum and bone.any() and not (present[Tissue.ENDOSTEUM] or present[Tissue.SNO]):
        lining = ndimage.binary_dilation(bone, structure=ndimage.generate_binary_structure(3, 1)) & marrow
        labels[lining] = Tissue.ENDOSTEUM
        n_sno = int(round(tcfg.sno_fraction * int(lining.sum())))
        if n_sno:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x534E4F]))
            noise = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.5)
            idx = np.flatnonzero(lining.ravel())
            pick = idx[np.argsort(noise.ravel()[idx], kind="stable")[-n_sno:]]
            labels.ravel()[pick] = Tissue.SNO
        derived.append("endosteum")
    lumen = labels == Tissue.SINUSOID
    if img.derive_endothelium and lumen.any() and not present[Tissue.ENDOTHELIUM]:
        wall = ndimage.binary_dilation(lumen, structure=np.ones((3, 3, 3), bool)) & (labels == Tissue.MARROW)
        labels[wall] = Tissue.ENDOTHELIUM
        derived.append("endothelium")
    vessel = (labels == Tissue.SINUSOID) | (labels == Tissue.ENDOTHELIUM) | (labels == Tissue.ARTERIOLE)
    if img.derive_stroma and vessel.any() and not present[Tissue.STROMA] and tcfg.stroma_thickness_um > 0:
        dv = ndimage.distance_transform_edt(~vessel, sampling=voxel_um)
        sheath = (dv <= tcfg.stroma_thickness_um) & (labels == Tissue.MARROW)
        labels[sheath] = Tissue.STROMA
        derived.append("stroma")
    return derived
