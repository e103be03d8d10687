"""Movies of a run (``niche3d movie`` and the legend's button), rendered by a real napari
viewer under Xvfb: the file holds one frame per record (or per step between records) and
the frames change as time runs (the time text, the cells, the turning view)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio
import numpy as np
import pytest
from plugin_testdata import display_possible, store_fixture

run_store = store_fixture()

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not display_possible(), reason="no display and no Xvfb: a real viewer cannot start"),
]


def _frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path) as r:
        return [np.asarray(f) for f in r]


def _changes(frames: list[np.ndarray]) -> list[float]:
    return [float(np.abs(b.astype(int) - a.astype(int)).mean()) for a, b in zip(frames, frames[1:], strict=False)]


def _n_records(store: str) -> int:
    from niche3d.io import open_run

    return open_run(store).n_records


def test_a_2d_movie_has_a_frame_per_record_and_time_runs(run_store: str, tmp_path: Path, qtbot: Any) -> None:
    from napari_niche3d._movie import movie_frames, render_movie

    out = render_movie(run_store, tmp_path / "run.mp4", fps=4, size=(700, 560))
    frames = _frames(out)
    n = _n_records(run_store)
    assert len(frames) == movie_frames(n, 1) == n
    h, w = frames[0].shape[:2]
    assert h % 16 == 0 and w % 16 == 0 and h > 300 and w > 300
    assert all(c > 0.2 for c in _changes(frames))  # every record differs from the last
    assert (frames[0][..., :3].max(axis=-1) > 40).mean() > 0.02  # not black
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.mp4"]  # no temporary file left


def test_a_3d_movie_turns_between_records(run_store: str, tmp_path: Path, qtbot: Any) -> None:
    from napari_niche3d._movie import movie_frames, render_movie

    out = render_movie(run_store, tmp_path / "run.mp4", mode="3d", fps=10, frames_per_record=2,
                       size=(640, 480))
    frames = _frames(out)
    assert len(frames) == movie_frames(_n_records(run_store), 2)
    # the view turns in every frame, between records too
    assert all(c > 0.2 for c in _changes(frames))


def test_the_legend_button_saves_the_view_as_shown(run_store: str, tmp_path: Path, qtbot: Any) -> None:
    import napari
    from napari_niche3d._legend import Legend

    viewer = napari.Viewer(show=False)
    try:
        viewer.open(run_store, plugin="napari-niche3d")
        viewer.window._qt_window.resize(800, 600)
        viewer.window._qt_window.grab()  # a hidden window renders black until it has painted once
        legend = Legend(viewer)
        legend.save_movie(str(tmp_path / "run.gif"))
        assert legend.movie_status.text() == "saved run.gif"
        frames = _frames(tmp_path / "run.gif")
        assert len(frames) == _n_records(run_store) and all(c > 0.2 for c in _changes(frames))
        legend.save_movie(str(tmp_path / "run.txt"))
        assert legend.movie_status.text().startswith("not saved: the movie's file name must end in")
        assert not (tmp_path / "run.txt").exists()
    finally:
        viewer.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "OUT/run.txt"], "must end in one of .mp4"),
        (["-o", "OUT/run.mp4", "--fps", "0"], "fps must be a number in 1..60"),
        (["-o", "OUT/nodir/run.mp4"], "does not exist; make it first"),
        (["-o", "OUT/run.mp4", "--size", "big"], "--size must be WIDTHxHEIGHT"),
        (["-o", "OUT/run.mp4", "--size", "50x50"], "--size must be in 200..4000"),
    ],
)
def test_movie_bad_input_is_one_line_and_exit_2(args: list[str], message: str, run_store: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from niche3d.cli import main

    argv = ["movie", run_store, *[a.replace("OUT", str(tmp_path)) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert list(tmp_path.iterdir()) == []
