"""Export a run store to formats other tools read: ImageJ TIFF, TrackMate XML, napari
tracks, CSV and Parquet tables (``niche3d export``; docs/export.md).

>>> from niche3d.export import export_run
>>> export_run("runs/homeostasis.zarr", "exports/homeostasis")   # doctest: +SKIP
[PosixPath('exports/homeostasis/field_cxcl12.tif'), ...]

The store is read only through :func:`niche3d.io.open_run`. Every file is written under a
temporary name and renamed into place when complete, so an interrupted export never
leaves a half-written file under a final name. Everything a call is given is checked
before the first byte is written.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche3d._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from niche3d.export.tables import to_napari_tracks, to_tables
    from niche3d.export.tiff import to_imagej_tiff
    from niche3d.export.trackmate import to_trackmate_xml
    from niche3d.io import Run

__all__ = [
    "FORMATS",
    "ExportError",
    "RecordSelection",
    "export_run",
    "to_imagej_tiff",
    "to_napari_tracks",
    "to_tables",
    "to_trackmate_xml",
]

#: the formats of :func:`export_run`, in the order they are written
FORMATS: tuple[str, ...] = ("tiff", "trackmate", "napari", "csv", "parquet")

_LAZY = {
    "to_imagej_tiff": "niche3d.export.tiff",
    "to_trackmate_xml": "niche3d.export.trackmate",
    "to_napari_tracks": "niche3d.export.tables",
    "to_tables": "niche3d.export.tables",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

#: suffix of the temporary files an export writes before renaming them into place
TMP_SUFFIX = ".niche3d-tmp"


class ExportError(ValueError):
    """Input an export cannot use: an unknown format, field or record range, or an
    output directory that is a file, not empty, or inside the run store."""


# ---------------------------------------------------------------------- the run
def as_run(run_or_path: Run | str | os.PathLike[str]) -> Run:
    """The :class:`~niche3d.io.Run` itself, or the store at a path opened with ``open_run``.

    Raises
    ------
    niche3d.io.StoreError
        The path is missing or not a readable run store.
    TypeError
        Neither a Run nor a path.
    """
    from niche3d.io import Run, open_run

    if isinstance(run_or_path, Run):
        return run_or_path
    if isinstance(run_or_path, str | os.PathLike):
        return open_run(run_or_path)
    raise TypeError(f"expected a niche3d Run or a run store path, got {type(run_or_path).__name__}")


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class RecordSelection:
    """The records an export covers: exported frame ``i`` is store record ``indices[i]``.

    Attributes
    ----------
    indices
        Store record indices, increasing, evenly spaced (int64).
    step
        Records between consecutive frames (1 when one record is selected).
    times_h
        Time of each selected record in hours.
    record_hours
        Nominal time between records of the store in hours.
    """

    indices: np.ndarray
    step: int
    times_h: np.ndarray
    record_hours: float

    @property
    def n(self) -> int:
        """Number of exported frames."""
        return int(self.indices.size)

    @property
    def frame_hours(self) -> float:
        """Nominal time between exported frames in hours (``step * record_hours``)."""
        return self.step * self.record_hours

    def frame_of(self, records: np.ndarray) -> np.ndarray:
        """Frame index of each store record index (-1 for records not selected)."""
        import numpy as np

        records = np.asarray(records, dtype=np.int64)
        pos = np.searchsorted(self.indices, records)
        pos = np.clip(pos, 0, max(self.n - 1, 0))
        hit = (self.indices[pos] == records) if self.n else np.zeros(records.shape, bool)
        return np.where(hit, pos, -1).astype(np.int64)

    def time_window(self, all_times_h: np.ndarray) -> tuple[float, float]:
        """``(after, until)``: events with ``after < t_hours <= until`` happened between the
        record before the first selected one and the last selected record."""
        first = int(self.indices[0])
        after = float(all_times_h[first - 1]) if first > 0 else -float("inf")
        return after, float(all_times_h[int(self.indices[-1])])

    def describe(self) -> str:
        """``records 0..4 (every 1)``-style text."""
        return (f"records {int(self.indices[0])}..{int(self.indices[-1])} "
                f"(every {self.step}; {self.n} frames)")


_SLICE_RE = re.compile(r"^\s*(-?\d+)?\s*(:\s*(-?\d+)?\s*(:\s*(-?\d+)?\s*)?)?$")


def parse_records(text: str) -> slice:
    """Parse ``"5"``, ``"2:10"``, ``":8"`` or ``"0::4"`` (Python slice syntax over record
    indices) into a slice; a single index selects that record.

    Raises
    ------
    ExportError
        The text is not of that form, or the step is 0.
    """
    m = _SLICE_RE.match(text)
    if not text.strip() or m is None:
        raise ExportError(f"--records {text!r} is not a record index or range such as 5, 0:10 "
                          "or 0::4 (start:stop:step, stop excluded)")
    start = int(m.group(1)) if m.group(1) else None
    if m.group(2) is None:  # a single index
        if start is None:
            raise ExportError(f"--records {text!r} names no record")
        return slice(start, None if start == -1 else start + 1)
    stop = int(m.group(3)) if m.group(3) else None
    step = int(m.group(5)) if m.group(5) else None
    if step is not None and step <= 0:
        raise ExportError(f"--records {text!r}: the step must be a positive integer")
    return slice(start, stop, step)


def select_records(run: Run, records: RecordSelection | slice | str | None) -> RecordSelection:
    """The records of ``run`` that ``records`` selects (None: every committed record).

    Parameters
    ----------
    run
        An opened run.
    records
        A slice over record indices (Python semantics, step > 0), its text form
        (:func:`parse_records`), None for all, or a selection made before (returned as is).

    Raises
    ------
    ExportError
        The run has no records, or the selection is empty or has a step <= 0.
    """
    import numpy as np

    if isinstance(records, RecordSelection):
        return records
    n = run.n_records
    if n == 0:
        raise ExportError(f"{run.path}: the run has no committed records; nothing to export")
    if records is None:
        sl = slice(None)
    elif isinstance(records, str):
        sl = parse_records(records)
    elif isinstance(records, slice):
        sl = records
    else:
        raise TypeError("records must be a slice, its text form or None, got "
                        f"{type(records).__name__}")
    if sl.step is not None and sl.step <= 0:
        raise ExportError(f"records {sl}: the step must be a positive integer")
    idx = np.arange(n, dtype=np.int64)[sl]
    if idx.size == 0:
        raise ExportError(f"records {_slice_text(sl)} select none of the {n} records "
                          f"(0..{n - 1}) of {run.path}")
    step = int(sl.step or 1)
    times = np.asarray(run.times_h, dtype=np.float64)
    return RecordSelection(indices=idx, step=step, times_h=times[idx],
                           record_hours=float(run.record_hours))


def _slice_text(sl: slice) -> str:
    parts = ["" if v is None else str(v) for v in (sl.start, sl.stop)]
    return ":".join(parts) + (f":{sl.step}" if sl.step not in (None, 1) else "")


# ---------------------------------------------------------------------- output
def check_out_dir(out_dir: str | os.PathLike[str], run: Run, names: Iterable[str] | None,
                  overwrite: bool) -> Path:
    """Check an output directory before anything is written; it is not created here.

    Parameters
    ----------
    out_dir
        The directory.
    run
        The run exported (the directory may not lie inside its store).
    names
        File names to be written in it: with ``overwrite=False`` none of them may exist.
        None: the whole directory must be empty (or not exist).
    overwrite
        Allow replacing files.

    Raises
    ------
    ExportError
        The path is a file, lies inside the run store, or holds files that would be
        replaced without ``overwrite``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --to needs a directory (it is made if missing)")
    existing = next((p for p in out.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ExportError(f"{out} cannot be made: {existing} is a file")
    store = Path(run.path).resolve()
    target = out.resolve()
    if target == store or store in target.parents:
        raise ExportError(f"{out} lies inside the run store {run.path}; export to a "
                          "directory outside it")
    if out.is_dir() and not overwrite:
        if names is None:
            present = sorted(p.name for p in out.iterdir())
            if present:
                shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
                raise ExportError(f"{out} is not empty ({len(present)} entries: {shown}); "
                                  "choose an empty or new directory, or add --overwrite "
                                  "to replace the files this export writes")
        else:
            clash = sorted(n for n in names if (out / n).exists())
            if clash:
                raise ExportError(f"{out} already holds {', '.join(clash)}; pass "
                                  "overwrite=True to replace them")
    return out


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error, the
    file written there is flushed to disk and renamed to ``path`` (``os.replace``).
    On any error, KeyboardInterrupt included, the temporary file is deleted."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def safe_name(name: str) -> str:
    """A file-name-safe form of a field name (letters, digits, ``._-``; others -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


# ---------------------------------------------------------------------- all formats
def parse_formats(formats: str | Iterable[str] | None) -> list[str]:
    """Check a format list (``"tiff,csv"``, ``["tiff", "csv"]``, ``"all"`` or None for all).

    Raises
    ------
    ExportError
        An unknown format, or none.
    """
    if formats is None:
        return list(FORMATS)
    items = formats.split(",") if isinstance(formats, str) else [str(f) for f in formats]
    items = [f.strip().lower() for f in items if f.strip()]
    if not items:
        raise ExportError(f"--format names no format; choose from {','.join(FORMATS)}")
    if "all" in items:
        return list(FORMATS)
    unknown = [f for f in items if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {', '.join(map(repr, unknown))}; "
                          f"choose from {','.join(FORMATS)} (comma-separated) or all")
    return [f for f in FORMATS if f in items]


def export_run(
    run_or_path: Run | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    formats: str | Iterable[str] | None = None,
    *,
    records: slice | str | None = None,
    fields: Sequence[str] | str | None = None,
    overwrite: bool = False,
    on_file: Callable[[Path], Any] | None = None,
) -> list[Path]:
    """Export a run store to ``out_dir`` in the chosen formats.

    Parameters
    ----------
    run_or_path
        An opened :class:`~niche3d.io.Run` or the path of a run store.
    out_dir
        Output directory, made if missing. It must be empty unless ``overwrite``.
    formats
        Any of ``tiff`` (:func:`to_imagej_tiff`), ``trackmate`` (:func:`to_trackmate_xml`),
        ``napari`` (:func:`to_napari_tracks`), ``csv`` and ``parquet`` (:func:`to_tables`),
        as a list or a comma-separated string; None or ``"all"``: every format.
    records
        Records to export (a slice over record indices or its text ``"0:10"``,
        ``"::4"``); None: all. Tables keep the rows of these records (events: those
        between the record before the first and the last one).
    fields
        Images to write as TIFF (field names, ``tissue``, ``niche``, ``occupancy``);
        None: all.
    overwrite
        Write into a non-empty directory, replacing files of the same names (other files
        are left alone, except temporary files a killed export left behind).
    on_file
        Called with each file's path as soon as it is complete.

    Returns
    -------
    list of Path
        The files written, in order.

    Raises
    ------
    ExportError
        Bad formats, records, fields or output directory; nothing has been written.
    niche3d.io.StoreError
        ``run_or_path`` is not a readable run store; nothing has been written.
    """
    from niche3d.export.tables import to_napari_tracks, to_tables
    from niche3d.export.tiff import select_images, to_imagej_tiff
    from niche3d.export.trackmate import to_trackmate_xml

    fmts = parse_formats(formats)
    run = as_run(run_or_path)
    sel = select_records(run, records)
    images = select_images(run, fields)
    out = check_out_dir(out_dir, run, None, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".*{TMP_SUFFIX}"):  # left by an export that was killed
        stale.unlink(missing_ok=True)
    written: list[Path] = []

    def done(p: Path) -> None:
        written.append(p)
        if on_file is not None:
            on_file(p)

    if "tiff" in fmts:
        to_imagej_tiff(run, out, records=sel, fields=images, overwrite=True, on_file=done)
    if "trackmate" in fmts:
        image = "labels_tissue.tif" if ("tiff" in fmts and "tissue" in images) else None
        done(to_trackmate_xml(run, out, records=sel, image=image, overwrite=True))
    if "napari" in fmts:
        for p in to_napari_tracks(run, out, records=sel, overwrite=True):
            done(p)
    table_fmts = [f for f in ("csv", "parquet") if f in fmts]
    if table_fmts:
        to_tables(run, out, formats=table_fmts, records=sel, overwrite=True, on_file=done)
    return written
