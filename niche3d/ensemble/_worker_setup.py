"""Dask preload of niche3d's workers: Ctrl-C belongs to the client, and kernels load once.

* A terminal's Ctrl-C reaches every process of the foreground group, the worker
  processes included, which would die mid-step with a KeyboardInterrupt each. The client
  cancels a sweep cleanly instead (running runs stop after their step, their stores
  intact), so its workers ignore SIGINT.
* A new process spends ~5 s loading niche3d's numba kernels from the disk cache and
  building its first lattice. Done here, as the worker starts, that is paid once per
  worker with the cluster's start, not inside the first run it is given.
  ``NICHE3D_SWEEP_WARMUP=0`` skips it.

``niche3d sweep`` uses it for its LocalCluster; give it to workers of your own cluster
with ``dask worker --preload niche3d.ensemble._worker_setup``.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT and load the kernels (called by Dask once the worker starts)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("NICHE3D_SWEEP_WARMUP", "1") != "0":
        from niche3d._warmup import warm_up

        warm_up(say=lambda _msg: None)
