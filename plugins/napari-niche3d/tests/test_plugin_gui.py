"""A real napari Viewer (OpenGL, under Xvfb via pytest-xvfb): open a run store, step time,
switch to 3D, and check the rendered pixels.

Expected colours follow from the layer settings: a label of colour (r, g, b, a) drawn
with layer opacity o over the black canvas ('translucent' blending) is o * a * (r, g, b).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plugin_testdata import display_possible, store_fixture

run_store = store_fixture()

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not display_possible(), reason="no display and no Xvfb: a real viewer cannot start"),
]


def _expected_rgb(code: int, opacity: float) -> np.ndarray:
    from niche3d.tissue.codes import TISSUE_COLORS

    r, g, b, a = TISSUE_COLORS[code]
    return np.rint(255 * opacity * a * np.array([r, g, b]))


def _mask(img: np.ndarray, rgb: np.ndarray, tol: int = 3) -> np.ndarray:
    return (np.abs(img[..., :3].astype(int) - rgb[None, None, :]) <= tol).all(axis=-1)


def _shot(viewer: Any) -> np.ndarray:
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


@pytest.fixture
def viewer(qtbot: Any) -> Any:
    import napari

    v = napari.Viewer(show=False)
    v.window._qt_window.resize(900, 650)
    v.window._qt_window.grab()  # a hidden window is black until it has painted once
    yield v
    v.close()


def test_viewer_2d_time_steps_and_tissue_pixels(viewer: Any, run_store: str) -> None:
    from napari_niche3d._reader import state_colors

    from niche3d.tissue.codes import Tissue

    viewer.open(run_store, plugin="napari-niche3d")
    opacity = viewer.layers["tissue"].opacity
    endosteum = _expected_rgb(Tissue.ENDOSTEUM, opacity)
    sinusoid = _expected_rgb(Tissue.SINUSOID, opacity)

    # z index 3 (28 µm) is endosteum at t = 0 and ablated (marrow, transparent) at 24 h
    viewer.dims.set_point(1, 28.0)
    viewer.dims.set_point(0, 0.0)
    viewer.reset_view()
    img = _shot(viewer)
    m = _mask(img, endosteum)
    ys, xs = np.nonzero(m)
    assert m.sum() > 1000
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    assert w / h == pytest.approx(20 / 16, rel=0.03)  # the full 16 x 20 voxel plane
    assert m.sum() / (h * w) > 0.97  # a filled rectangle
    viewer.dims.set_point(0, 24.0)  # step time: the endosteum is gone
    assert viewer.dims.point[0] == 24.0
    img = _shot(viewer)
    assert _mask(img, endosteum).sum() == 0

    # z index 6 (52 µm) at 24 h: the sinusoid is the disc (y-8)^2 + (x-10)^2 <= 4, 13 voxels
    # of its 5 x 5 bounding box; cells 1 (dormant) and 2, 3 (active) sit on this plane
    viewer.dims.set_point(1, 52.0)
    img = _shot(viewer)
    s = _mask(img, sinusoid)
    ys, xs = np.nonzero(s)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    assert w / h == pytest.approx(1.0, rel=0.03)
    assert s.sum() / (h * w) == pytest.approx(13 / 25, rel=0.03)
    colors = state_colors(["dormant", "active"])
    for state in ("dormant", "active"):
        rgb = np.rint(255 * np.array(colors[state][:3]))
        assert _mask(img, rgb).sum() > 50, state
    # nothing else on the plane but black (transparent marrow), the disc, cells and tracks
    assert (img[..., :3].max(axis=-1) > 0).mean() < 0.25


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a[..., :3].astype(int) - b[..., :3].astype(int)).max(axis=-1) > 30


def test_scale_bar_time_cells_and_legend_are_drawn(viewer: Any, run_store: str, tmp_path: Any) -> None:
    """What a user looks at: the scale bar and the time are drawn on the canvas, the cells
    are discs of their state colour ringed in white, and the legend shows the same colours."""
    from napari_niche3d._display import decorate
    from napari_niche3d._legend import Legend, legend_entries
    from napari_niche3d._reader import state_colors
    from PIL import Image

    viewer.open(run_store, plugin="napari-niche3d")
    viewer.dims.set_point(1, 52.0)  # the plane of cells 1 (dormant), 2 and 3 (active)
    viewer.dims.set_point(0, 24.0)
    viewer.reset_view()
    plain = _shot(viewer)
    decorate(viewer)
    day1 = _shot(viewer)
    h, w = day1.shape[:2]
    corner = (slice(int(0.85 * h), h), slice(int(0.6 * w), w))
    assert _diff(day1[corner], plain[corner]).sum() > 150  # the scale bar and its box
    top = (slice(0, int(0.12 * h)), slice(int(0.55 * w), w))  # top right (the axes are top left)
    assert _diff(day1[top], plain[top]).sum() > 50  # the time text
    viewer.dims.set_point(0, 0.0)
    day0 = _shot(viewer)
    assert _diff(day0[top], day1[top]).sum() > 20  # "day 0" is not "day 1"
    viewer.dims.set_point(0, 24.0)
    # the dormant cell: a disc of its colour inside a white ring
    rgb = np.rint(255 * np.array(state_colors(["dormant", "active"])["dormant"][:3]))
    m = _mask(day1, rgb)
    assert m.sum() > 30
    ys, xs = np.nonzero(m)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    r = int(np.sqrt(m.sum() / np.pi)) + 6
    ring = day1[max(cy - r, 0): cy + r, max(cx - r, 0): cx + r, :3]
    assert (ring.min(axis=-1) > 230).sum() > 10  # white border pixels around it
    # the legend: a swatch of every state colour, as drawn on the canvas
    legend = Legend(viewer)
    entries = legend_entries(viewer)
    assert [n for n, _ in entries["cells"]] == list(viewer.layers["cells"].features["state"].cat.categories)
    assert "sinusoid" in [n for n, _ in entries["tissue"]] and "marrow" not in [n for n, _ in entries["tissue"]]
    path = tmp_path / "legend.png"
    legend.adjustSize()  # its natural size, as in a dock
    legend.grab().save(str(path))
    pix = np.asarray(Image.open(path).convert("RGB"))
    for name, rgba in entries["cells"] + entries["tissue"]:
        want = np.rint(255 * np.array(rgba[:3]))
        # a 14 x 14 swatch in a 1-pixel frame (tolerance: pytest-xvfb's 16-bit screen keeps 5-6
        # bits a channel, so a widget's colours come back up to 8 off)
        assert _mask(pix, want, tol=9).sum() >= 100, name
    legend.depth.setValue(0.0)
    assert viewer.dims.margin_left[1] == 0.0
    legend.depth.setValue(24.0)  # and half a voxel, so a cell 24 µm away still shows
    half = viewer.layers["cells"].scale[-3] / 2
    assert viewer.dims.margin_left[1] == viewer.dims.margin_right[1] == 24.0 + half


def test_viewer_3d_render(viewer: Any, run_store: str) -> None:
    from niche3d.tissue.codes import Tissue

    viewer.open(run_store, plugin="napari-niche3d")
    viewer.dims.set_point(0, 24.0)
    viewer.dims.ndisplay = 3
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (-20.0, -35.0, -40.0)
    viewer.reset_view(reset_camera_angle=False)
    img = _shot(viewer)
    rgb = img[..., :3].astype(float)
    lit = rgb.max(axis=-1) > 10
    assert 0.1 < lit.mean() < 0.9  # the block fills part of the canvas, not all of it
    # shaded surfaces keep their hue: grey-white bone (r ~ g ~ b) and red sinusoid (r >> g, b)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    bone_like = lit & (np.abs(r - g) < 0.06 * r) & (b < r) & (b > 0.8 * r)
    red_like = lit & (r > 60) & (r > 3 * g) & (r > 3 * b)
    assert bone_like.sum() > 0.2 * lit.sum()
    assert red_like.sum() > 200
    assert Tissue.BONE in np.unique(np.asarray(viewer.layers["tissue"].data[2]))


def test_render_views_helper(run_store: str, qtbot: Any) -> None:
    from napari_niche3d._screenshot import busiest_slice, render_views

    assert busiest_slice(run_store, 24.0) == 52.0  # 3 of the 4 lattice cells are on z = 6
    shots = render_views(run_store, size=(800, 600))
    for key in ("2d", "3d"):
        img = shots[key]
        assert img.ndim == 3 and img.shape[2] == 4 and img.dtype == np.uint8
        assert (img[..., :3].max(axis=-1) > 10).mean() > 0.02, key  # not black
    with pytest.raises(ValueError, match="size"):
        render_views(run_store, size=(10, 10))


def test_view_opens_run_with_widgets(run_store: str, qtbot: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import napari
    from napari_niche3d._launch import view

    with pytest.raises(ValueError, match="not a niche3d run store"):
        view(str(tmp_path))
    monkeypatch.setattr(napari, "run", lambda *a, **k: None)  # do not block in the event loop
    view(run_store)
    v = napari.current_viewer()
    try:
        assert [ly.name for ly in v.layers] == ["cxcl12", "scf", "tissue", "lineage", "cells"]
        docks = set(v.window.dock_widgets)
        assert docks >= {"Legend", "Run metrics", "Cell inspector"}
        # the test run has no interventions: no empty timeline taking a fifth of the window
        assert "Intervention timeline" not in docks
        metrics = v.window.dock_widgets["Run metrics"]
        assert metrics.path == run_store
        # units and orientation: scale bar (µm, from the layers' units), axes, the time
        assert v.scale_bar.visible and v.axes.visible and v.axes.labels
        assert str(v.dims.units[1]) == "micrometer"
        v.dims.set_point(0, 24.0)
        assert v.text_overlay.visible and v.text_overlay.text == "t = day 1, 0 h"
        assert v.dims.axis_labels[0] == "t: day 1, 0 h"
    finally:
        v.close()


def test_view_docks_for_a_store_of_an_older_model(qtbot: Any) -> None:
    """The v2 reference store's scenario has keys this niche3d no longer has: it still
    opens with the legend and metrics, and no timeline (its interventions cannot be read)."""
    import napari
    from napari_niche3d._launch import add_run_layers, dock_widgets

    from niche3d.io import open_run

    store = Path(__file__).resolve().parents[3] / "tests" / "data" / "reference_stores" / "v2.zarr"
    v = napari.Viewer(show=False)
    try:
        add_run_layers(v, store)
        dock_widgets(v, store)
        docks = set(v.window.dock_widgets)
        assert {"Legend", "Run metrics", "Cell inspector"} <= docks
        assert "Intervention timeline" not in docks
        assert len(v.layers["cells"].data) == (open_run(store).cells["z"].notna()).sum()
    finally:
        v.close()


def test_widgets_from_the_plugins_menu(viewer: Any, run_store: str) -> None:
    from napari_niche3d._legend import Legend
    from napari_niche3d._widgets import CellInspector, InterventionTimeline, MetricsPanel, RunPanel

    viewer.open(run_store, plugin="napari-niche3d")
    expected = {
        "Run a scenario": RunPanel,
        "Run metrics": MetricsPanel,
        "Cell inspector": CellInspector,
        "Intervention timeline": InterventionTimeline,
        "Legend": Legend,
    }
    for name, cls in expected.items():
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-niche3d", name)
        assert isinstance(widget, cls)
        # napari injected (a proxy of) this viewer
        assert [ly.name for ly in widget.viewer.layers] == [ly.name for ly in viewer.layers]
        if cls in (MetricsPanel, InterventionTimeline):
            assert widget.path == run_store
