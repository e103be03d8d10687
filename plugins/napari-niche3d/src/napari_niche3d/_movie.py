"""Time-lapse movies of a run with napari-animation: ``niche3d movie RUN -o run.mp4`` and
the legend's "Save movie..." button.

A movie steps through the records (one key frame per record) in a 2D slice or in a 3D view
that turns once around the block over the run; the time overlay of
:func:`napari_niche3d._display.decorate` is in every frame. mp4/mov/avi/mkv go through
imageio-ffmpeg and .gif through imageio; the frames are napari-animation's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MOVIE_SUFFIXES", "movie_frames", "save_movie", "render_movie"]

MOVIE_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".gif")
#: ffmpeg's H.264 encoder works on 16 x 16 blocks: frames are cut to multiples of it
_BLOCK = 16


def _check(out: str | os.PathLike[str], mode: str, fps: Any, frames_per_record: Any) -> Path:
    dest = Path(out)
    if dest.suffix.lower() not in MOVIE_SUFFIXES:
        raise ValueError(f"the movie's file name must end in one of {', '.join(MOVIE_SUFFIXES)}, got {str(out)!r}")
    if not dest.parent.is_dir():
        raise ValueError(f"{dest.parent} does not exist; make it first or write the movie elsewhere")
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' (a slice) or '3d' (a turning view), got {mode!r}")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 1 <= fps <= 60:
        raise ValueError(f"fps must be a number in 1..60, got {fps!r}")
    if isinstance(frames_per_record, bool) or not isinstance(frames_per_record, int) or not 1 <= frames_per_record <= 60:
        raise ValueError(f"frames_per_record must be a whole number in 1..60, got {frames_per_record!r}")
    return dest


def movie_frames(n_records: int, frames_per_record: int) -> int:
    """Frames of a movie through ``n_records`` records: one for the first record and
    ``frames_per_record`` for each step to the next."""
    return 1 + max(n_records - 1, 0) * frames_per_record


def save_movie(
    viewer: Any,
    out: str | os.PathLike[str],
    *,
    mode: str = "2d",
    fps: float = 6,
    frames_per_record: int = 1,
    degrees: float = 360.0,
) -> Path:
    """Animate ``viewer`` through its time axis and write the movie to ``out``.

    Parameters
    ----------
    viewer
        A napari ``Viewer`` showing a run (a time axis first).
    out
        The movie file (see :data:`MOVIE_SUFFIXES`).
    mode
        ``"2d"``: the current slice; ``"3d"``: the 3D view, turning ``degrees`` about the
        vertical over the run.
    fps
        Frames per second.
    frames_per_record
        Frames from one record to the next (in 3D more give a smoother turn; in 2D the
        frames between records repeat the earlier record: time does not interpolate).
    degrees
        The turn of the 3D view over the whole movie.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        A bad file name, mode, fps or frame count, or a viewer without a time axis.
    """
    from napari_animation import Animation

    from napari_niche3d._display import decorate

    dest = _check(out, mode, fps, frames_per_record)
    if viewer.dims.ndim < 4 or viewer.dims.nsteps[0] < 2:
        raise ValueError("the viewer shows no time course (a run with at least two records)")
    decorate(viewer)
    n = int(viewer.dims.nsteps[0])
    viewer.dims.ndisplay = 3 if mode == "3d" else 2
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    camera = scene.camera if scene is not None else viewer.camera
    if mode == "3d":
        camera.angles = (-20.0, -35.0, -40.0)
        viewer.reset_view(reset_camera_angle=False)
    start = np.array(camera.angles, dtype=float)
    animation = Animation(viewer)
    for k in range(n):
        viewer.dims.set_current_step(0, k)
        if mode == "3d":
            a = start.copy()
            a[1] = start[1] + degrees * k / max(n - 1, 1)
            camera.angles = tuple(a)
        animation.capture_keyframe(steps=frames_per_record)
    frames = animation._frames.iter_frames(viewer, True, None)  # napari-animation 0.0.x
    _write(dest, frames, fps)
    return dest


def _write(dest: Path, frames: Any, fps: float) -> None:
    """Write the frames to ``dest`` under a temporary name, then rename it into place (a
    killed render leaves no half movie). Frames are cut to whole 16-pixel blocks, which
    H.264 needs (imageio would otherwise rescale every frame)."""
    import imageio

    tmp = dest.with_name(f".{dest.stem}.partial{dest.suffix}")
    try:
        if dest.suffix.lower() == ".gif":
            writer = imageio.get_writer(tmp, mode="I", duration=1000.0 / fps, loop=0)
        else:
            writer = imageio.get_writer(tmp, fps=fps, quality=7, macro_block_size=_BLOCK,
                                        ffmpeg_log_level="error")
        shape: tuple[int, int] | None = None
        with writer:
            for image in frames:
                rgb = np.asarray(image)[..., :3]
                if shape is None:
                    h, w = rgb.shape[:2]
                    shape = (max(_BLOCK, h - h % _BLOCK), max(_BLOCK, w - w % _BLOCK))
                writer.append_data(np.ascontiguousarray(rgb[: shape[0], : shape[1]]))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def render_movie(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mode: str = "2d",
    fps: float = 6,
    frames_per_record: int | None = None,
    z_um: float | None = None,
    size: tuple[int, int] = (960, 720),
) -> Path:
    """Open the run at ``path`` in a hidden viewer and write its movie (``niche3d movie``).

    Parameters
    ----------
    path
        A niche3d run store.
    out, mode, fps
        As :func:`save_movie`.
    frames_per_record
        Default 1 in 2D, 4 in 3D.
    z_um
        The 2D slice (µm); default the plane with most cells at the last record.
    size
        Window size (width, height), each 200..4000.
    """
    from napari_niche3d._screenshot import busiest_slice, open_hidden

    fpr = (4 if mode == "3d" else 1) if frames_per_record is None else frames_per_record
    _check(out, mode, fps, fpr)
    store, viewer = open_hidden(path, size)
    try:
        win = viewer.window._qt_window
        win.resize(int(size[0]), int(size[1]))
        win.grab()  # a hidden window renders black until it has painted once
        last = float(viewer.dims.range[0].stop)
        viewer.dims.set_point(1, busiest_slice(store, last) if z_um is None else float(z_um))
        viewer.reset_view()
        return save_movie(viewer, out, mode=mode, fps=fps, frames_per_record=fpr)
    finally:
        viewer.close()
