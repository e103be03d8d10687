"""The run store: OME-Zarr 0.5 fields and tissue, cell/event/metric tables, checkpoints.

Write with :class:`RunWriter`, read with :func:`open_run`; the format is described in
``docs/store.md``. :func:`is_run_store` and :func:`records_written` read one small JSON
file and import no zarr: they are what a viewer asks of a path. Names load lazily (see
:mod:`niche3d._lazy`).
"""

from __future__ import annotations

from niche3d._lazy import lazy_exports

_EXPORTS = {
    "RunWriter": "niche3d.io.writer",
    "check_target": "niche3d.io.writer",
    "WriterLock": "niche3d.io.lock",
    "StoreLocked": "niche3d.io.lock",
    "read_checkpoint": "niche3d.io.writer",
    "Run": "niche3d.io.reader",
    "open_run": "niche3d.io.reader",
    "check_store": "niche3d.io.reader",
    "StoreError": "niche3d.io._format",
    "is_run_store": "niche3d.io._format",
    "records_written": "niche3d.io._format",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
