"""Fields and label images as ImageJ hyperstack TIFF files, one file per image.

Each file is a TZYX hyperstack (one channel) that ImageJ/Fiji opens as is (File > Open,
or drag and drop) and Bio-Formats reads too. Calibration in the ImageJ metadata:
X/Y resolution ``1 / voxel_um`` pixels per µm, ``spacing = voxel_um``,
``unit = micron`` (ImageJ shows µm), ``finterval`` the time between frames in seconds,
``tunit = sec`` and ``fps = 1 / finterval`` (tifffile's convention; ImageJ plays anything
below 0.1 fps at 1 fps). ImageJ's pixel centres are then at ``(i + 0.5) * voxel_um``, the
store's voxel centres. Fields keep their float32 values exactly; label images (tissue,
niche sites, occupancy) are uint8 with a colour lookup table. Records whose fields were not
stored (``output.fields_every_records``) are kept as all-NaN frames, so frame ``i`` is the
same record in every file of an export (and in its TrackMate and napari tracks).

Files are written frame by frame: one record's volume is in memory at a time.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from niche3d.export import (
    ExportError,
    RecordSelection,
    as_run,
    atomic_file,
    check_out_dir,
    safe_name,
    select_records,
)

if TYPE_CHECKING:  # pragma: no cover
    from niche3d.io import Run

__all__ = ["image_names", "select_images", "tiff_file_name", "to_imagej_tiff"]

_LABEL_IMAGES = {"tissue": "labels_tissue.tif", "niche": "labels_niche.tif",
                 "occupancy": "occupancy.tif"}


def image_names(run: Run) -> list[str]:
    """Every image an ImageJ TIFF export can write: the fields, ``tissue``, ``niche`` (when
    stored) and ``occupancy`` (runs stored without fields)."""
    names = list(run.field_names)
    names.append("tissue")
    if run.has_niche:
        names.append("niche")
    if run.occupancy is not None:
        names.append("occupancy")
    return names


def select_images(run: Run, fields: Sequence[str] | str | None) -> list[str]:
    """Check the requested image names (None: all of :func:`image_names`).

    Raises
    ------
    ExportError
        A name the run does not hold, or an empty list.
    """
    available = image_names(run)
    if fields is None:
        return available
    wanted = [f.strip() for f in fields.split(",")] if isinstance(fields, str) else [
        str(f).strip() for f in fields]
    wanted = [f for f in wanted if f]
    if not wanted:
        raise ExportError("--fields names no image; give field or label names such as "
                          f"{','.join(available)}")
    unknown = [f for f in wanted if f not in available]
    if unknown:
        raise ExportError(f"{run.path} holds no image {', '.join(map(repr, unknown))}; "
                          f"it has {', '.join(available)}")
    return list(dict.fromkeys(wanted))


def tiff_file_name(run: Run, image: str) -> str:
    """File name of an image in an export: ``field_<name>.tif`` for fields,
    ``labels_tissue.tif``, ``labels_niche.tif`` and ``occupancy.tif`` for the others."""
    if image in run.field_names:
        return f"field_{safe_name(image)}.tif"
    if image in _LABEL_IMAGES:
        return _LABEL_IMAGES[image]
    raise ValueError(f"{run.path} holds no image {image!r}")


def to_imagej_tiff(
    run_or_path: Run | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    records: RecordSelection | slice | str | None = None,
    fields: Sequence[str] | str | None = None,
    overwrite: bool = False,
    on_file: Callable[[Path], Any] | None = None,
) -> list[Path]:
    """Write fields and label images as ImageJ hyperstack TIFF files.

    Parameters
    ----------
    run_or_path
        An opened :class:`~niche3d.io.Run` or a run store path.
    out_dir
        Output directory (made if missing).
    records
        Records to write (slice over record indices, its text ``"0:10"``, or None: all);
        frame ``i`` of every file is the ``i``-th selected record.
    fields
        Images to write: field names, ``tissue``, ``niche``, ``occupancy`` (None: all the
        run holds).
    overwrite
        Replace files of the same names; without it an existing one is an error.
    on_file
        Called with each file's path when it is complete.

    Returns
    -------
    list of Path
        One file per image: ``field_<name>.tif`` (float32), ``labels_tissue.tif``,
        ``labels_niche.tif``, ``occupancy.tif`` (uint8).

    Raises
    ------
    ExportError
        An unknown image, an empty record selection, or files in the way.
    """
    import tifffile

    run = as_run(run_or_path)
    sel = select_records(run, records)
    images = select_images(run, fields)
    names = [tiff_file_name(run, im) for im in images]
    out = check_out_dir(out_dir, run, names, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    v = run.voxel_um
    finterval = sel.frame_hours * 3600.0
    written = []
    for image, name in zip(images, names, strict=True):
        arr, dtype, meta = _image(run, image, sel)
        nz, ny, nx = run.shape
        meta.update({
            "axes": "TZYX", "spacing": v, "unit": "micron", "finterval": finterval,
            "fps": 1.0 / finterval, "tunit": "sec",
        })
        path = out / name
        with atomic_file(path) as tmp:
            tifffile.imwrite(tmp, _pages(arr, sel, dtype), shape=(sel.n, nz, ny, nx),
                             dtype=dtype, imagej=True, resolution=(1.0 / v, 1.0 / v),
                             metadata=meta)
        written.append(path)
        if on_file is not None:
            on_file(path)
    return written


def _pages(arr: Any, sel: RecordSelection, dtype: np.dtype) -> Iterator[np.ndarray]:
    """The z planes of each selected record in order, one record read at a time."""
    for r in sel.indices:
        frame = np.asarray(arr[int(r)].compute(scheduler="synchronous"), dtype=dtype)
        yield from frame


def _image(run: Run, image: str, sel: RecordSelection) -> tuple[Any, np.dtype, dict[str, Any]]:
    """(dask array (t, z, y, x), dtype, ImageJ metadata) of one image."""
    info = [f"niche3d export of {run.path}",
            f"image: {image}",
            f"{sel.describe()}; frame i is store record {int(sel.indices[0])} + i * {sel.step}",
            "record times (h): " + ", ".join(f"{t:g}" for t in sel.times_h),
            f"voxel: {run.voxel_um:g} um; voxel i is centred at (i + 0.5) * {run.voxel_um:g} um",
            f"seed {run.seed}, written by niche3d {run.code_version}"]
    props = {"niche3d_image": image, "niche3d_store": str(run.path),
             "niche3d_records": ",".join(str(int(r)) for r in sel.indices)}
    if image in run.field_names:
        var = run.fields[image]
        unit = str(var.attrs.get("units", "1"))
        lo, hi = (float(x) for x in var.attrs.get("window", (0.0, 1.0)))
        every = _fields_every_records(run)
        unstored = [int(r) for r in sel.indices if r % every] if every > 1 else []
        info.insert(2, f"unit: {unit}")
        if unstored:
            info.append(f"fields are stored at every {every}th record "
                        f"(output.fields_every_records); records {_ranges(unstored)} hold NaN")
        props["niche3d_unit"] = unit
        return var.data, np.dtype(np.float32), {
            "min": lo, "max": hi if hi > lo else lo + 1.0, "Info": "\n".join(info),
            "Properties": props}
    da_ = {"tissue": run.tissue, "niche": run.niche, "occupancy": run.occupancy}[image]
    names = da_.attrs.get("names", {0: "empty", 1: "cell"})
    colors = da_.attrs.get("colors", {0: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 1.0, 1.0, 1.0)})
    info.append("codes: " + ", ".join(f"{int(k)} {nm}" for k, nm in sorted(names.items())))
    return da_.data, np.dtype(np.uint8), {
        "mode": "color", "min": 0.0, "max": 255.0, "LUTs": [_lut(colors)],
        "Info": "\n".join(info),
        "Properties": props}


def _lut(colors: dict[int, tuple[float, ...]]) -> np.ndarray:
    """(3, 256) uint8 ImageJ lookup table; codes without a colour are black."""
    lut = np.zeros((3, 256), dtype=np.uint8)
    for code, rgba in colors.items():
        lut[:, int(code)] = np.round(np.clip(np.asarray(rgba[:3], float), 0, 1) * 255)
    return lut


def _fields_every_records(run: Run) -> int:
    """``output.fields_every_records`` of the stored scenario (1 when it does not say)."""
    try:
        value = tomllib.loads(run.scenario_toml).get("output", {}).get("fields_every_records", 1)
    except tomllib.TOMLDecodeError:
        return 1
    return int(value) if isinstance(value, int) and value >= 1 else 1


def _ranges(values: list[int]) -> str:
    """``1, 3, 5-7``."""
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)
