"""``niche3d export RUN --to DIR``: a run store in formats other tools read.

    niche3d export runs/h.zarr --to exports/h
    niche3d export runs/h.zarr --to exports/h-tracks --format trackmate,napari --records 0:20
    niche3d export runs/h.zarr --to exports/h-cxcl12 --format tiff --fields cxcl12,tissue

Bad input (a missing or damaged store, an unknown format, field or record range, a --to
that is a file or a non-empty directory without --overwrite) prints one line on stderr and
exits with status 2 before anything is written. Each file is listed with its size as soon
as it is complete; files are renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_export"]

EXIT_USAGE = 2
#: OSError numbers of a full, read-only or forbidden output (a clear message, exit 2)
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command to ``niche3d``'s sub-parsers (the parser class is the
    one ``sub`` was made with)."""
    from niche3d.export import FORMATS

    e = sub.add_parser(
        "export", help="write a run store as TIFF, TrackMate XML, napari tracks, CSV, Parquet",
        description="Write RUN's fields and labels as ImageJ hyperstack TIFFs, its cell "
        "tracks as a TrackMate XML file and a napari tracks CSV (with the lineage graph), "
        "and its cells, events and metrics tables as CSV and Parquet, into DIR. "
        "See docs/export.md for what each file holds and how to open it.")
    e.add_argument("run", help="run store path")
    e.add_argument("--to", "-o", required=True, metavar="DIR",
                   help="output directory (made if missing; must be empty unless --overwrite)")
    e.add_argument("--format", default=",".join(FORMATS), metavar="LIST",
                   help=f"comma-separated formats among {','.join(FORMATS)} or all "
                        "(default: all)")
    e.add_argument("--records", metavar="START:STOP[:STEP]",
                   help="records to export, Python slice syntax over record indices "
                        "(5, 0:10, ::4; from the end: --records=-3:); default: all")
    e.add_argument("--fields", metavar="NAME,...",
                   help="images to write as TIFF: field names and tissue, niche, "
                        "occupancy (default: all the run holds)")
    e.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty DIR, replacing files of the same names")


def _size(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"


def cmd_export(a: argparse.Namespace) -> int:
    """``niche3d export``: returns the exit status (0; 2 for bad input or a storage error;
    130 when interrupted)."""
    from niche3d.export import ExportError, export_run, parse_formats
    from niche3d.io import StoreError

    total = [0, 0]

    def say(p: Path) -> None:
        n = p.stat().st_size
        total[0] += 1
        total[1] += n
        print(f"  {_size(n):>10}  {p}", flush=True)

    try:
        export_run(a.run, a.to, parse_formats(a.format), records=a.records, fields=a.fields,
                   overwrite=a.overwrite, on_file=say)
    except (ExportError, StoreError) as exc:
        return _fail(exc)
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}; the {total[0]} files listed above are "
                     "complete, no partial file was left")
    except KeyboardInterrupt:
        print(f"\nniche3d export: interrupted; the {total[0]} files listed above are "
              "complete, no partial file was left", file=sys.stderr)
        return 130
    print(f"wrote {total[0]} files, {_size(total[1])}, to {a.to}")
    return 0


def _fail(exc: Any) -> int:
    print(f"niche3d export: error: {exc}", file=sys.stderr)
    return EXIT_USAGE
