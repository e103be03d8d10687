"""Dask preload of niche3d's LocalCluster workers: Ctrl-C belongs to the client.

A terminal's Ctrl-C reaches every process of the foreground group, the worker processes
included, which would die mid-step with a KeyboardInterrupt each. The client cancels a
sweep cleanly instead (running runs stop after their step, their stores intact), so its
workers ignore SIGINT.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (called by Dask once the worker starts)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
