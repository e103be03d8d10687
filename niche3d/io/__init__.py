"""The run store: OME-Zarr 0.5 fields and tissue, cell/event/metric tables, checkpoints.

Write with :class:`RunWriter`, read with :func:`open_run`; the format is described in
``docs/store.md``.
"""

from niche3d.io._format import StoreError
from niche3d.io.reader import Run, check_store, open_run
from niche3d.io.writer import RunWriter, read_checkpoint

__all__ = ["RunWriter", "Run", "open_run", "check_store", "read_checkpoint", "StoreError"]
