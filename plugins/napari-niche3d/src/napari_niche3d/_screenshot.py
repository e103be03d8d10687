"""Render a run in a real (hidden) napari viewer: the README screenshots and the GUI test.

Needs a display with OpenGL (a desktop, or Xvfb with Mesa); ``QT_QPA_PLATFORM=offscreen``
is not enough for a real viewer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["busiest_slice", "open_hidden", "render_views"]


def open_hidden(path: str | os.PathLike[str], size: tuple[int, int]) -> tuple[str, Any]:
    """``(store path, viewer)``: a hidden napari Viewer showing the run at ``path``, for
    pictures and movies; the caller closes it.

    Raises
    ------
    ValueError
        If ``path`` is not a run store or ``size`` is not (width, height) in 200..4000.
    """
    import napari

    from napari_niche3d._launch import PLUGIN_NAME, add_run_layers
    from napari_niche3d._reader import is_run_store

    if not is_run_store(path):
        raise ValueError(f"path {str(path)!r} is not a niche3d run store")
    if len(size) != 2 or not all(200 <= int(s) <= 4000 for s in size):
        raise ValueError(f"size must be (width, height) with each in 200..4000, got {size!r}")
    store = str(Path(path).resolve())
    viewer = napari.Viewer(show=False, title="niche3d")
    try:
        if store.endswith(".zarr"):
            viewer.open(store, plugin=PLUGIN_NAME)
        else:
            add_run_layers(viewer, store)
    except BaseException:
        viewer.close()
        raise
    return store, viewer


def busiest_slice(path: str | os.PathLike[str], t_hours: float) -> float:
    """z (µm, a voxel centre) of the plane holding most cells at the record nearest ``t_hours``.

    Parameters
    ----------
    path
        A niche3d run store.
    t_hours
        Time.

    Returns
    -------
    float
        The z coordinate; the middle plane if no cell is on the lattice then.
    """
    from napari_niche3d._analysis import nearest_record
    from niche3d.io import open_run

    run = open_run(str(path))
    t = float(run.times_h[nearest_record(run.times_h, t_hours)])
    c = run.cells
    on = c[(c["t"].to_numpy() == t) & np.isfinite(c["z"].to_numpy(dtype=float))]
    zc = np.asarray(run.tissue["z"].values, dtype=float)
    if len(on) == 0:
        return float(zc[len(zc) // 2])
    values, counts = np.unique(on["z"].to_numpy(dtype=float), return_counts=True)
    return float(values[np.argmax(counts)])


def render_views(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (1100, 800),
    t_hours: float | None = None,
    z_um: float | None = None,
    angles: tuple[float, float, float] = (-20.0, -35.0, -40.0),
    canvas_only: bool = True,
    tracks_in_2d: bool = False,
    decorated: bool = True,
    docks: bool = False,
) -> dict[str, np.ndarray]:
    """Open ``path`` in a hidden napari Viewer and screenshot a 2D slice and a 3D view.

    Parameters
    ----------
    path
        A niche3d run store.
    size
        Window size (width, height) in pixels, each 200..4000.
    t_hours
        Time shown (default: the last record).
    z_um
        Slice shown in 2D (default: :func:`busiest_slice`).
    angles
        3D camera Euler angles (degrees).
    canvas_only
        Screenshot the canvas only, or the whole window (layer list and controls too).
    tracks_in_2d
        Show the lineage tracks in the 2D shot. napari draws tracks projected through all
        z, not sliced, so by default the 2D shot hides them (the 3D shot shows them).
    decorated
        As ``niche3d view`` shows a run (:func:`napari_niche3d._display.decorate`): scale
        bar, axes, the time, the 2D slab of cells, and surfaces in 3D.
    docks
        Also dock the widgets of ``niche3d view`` (legend, metrics, inspector); they show
        in a window shot (``canvas_only=False``).

    Returns
    -------
    dict
        ``{"2d": (h, w, 4) uint8, "3d": (h, w, 4) uint8}`` screenshots.

    Raises
    ------
    ValueError
        If ``path`` is not a run store or ``size`` is out of range.
    """
    store, viewer = open_hidden(path, size)
    try:
        if docks:
            from napari_niche3d._launch import dock_widgets

            dock_widgets(viewer, store)
        elif decorated:
            from napari_niche3d._display import decorate

            decorate(viewer)
        win: Any = viewer.window._qt_window
        win.resize(int(size[0]), int(size[1]))
        win.grab()  # a hidden window renders black until it has painted once
        tr = viewer.dims.range[0]
        t = float(tr.stop) if t_hours is None else float(t_hours)
        viewer.dims.set_point(0, t)
        viewer.dims.set_point(1, busiest_slice(store, t) if z_um is None else float(z_um))
        tracks = [ly for ly in viewer.layers if ly.metadata.get("niche3d", {}).get("role") == "tracks"]
        shown = [ly.visible for ly in tracks]
        for ly in tracks:
            ly.visible = ly.visible and tracks_in_2d
        viewer.dims.ndisplay = 2
        viewer.reset_view()
        shot2 = np.asarray(viewer.screenshot(canvas_only=canvas_only, flash=False))
        for ly, vis in zip(tracks, shown, strict=True):
            ly.visible = vis
        viewer.dims.ndisplay = 3
        scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        (scene.camera if scene is not None else viewer.camera).angles = angles
        viewer.reset_view(reset_camera_angle=False)
        shot3 = np.asarray(viewer.screenshot(canvas_only=canvas_only, flash=False))
    finally:
        viewer.close()
    return {"2d": shot2, "3d": shot3}
