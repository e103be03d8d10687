"""The viewer's overlays without a screen: the time text, the slider label, the slab of
cells around the plane and the cell style, on a ViewerModel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from plugin_testdata import store_fixture

run_store = store_fixture()


def test_time_reads_in_days_and_hours() -> None:
    from napari_niche3d._display import format_time

    assert format_time(0.0) == "day 0, 0 h"
    assert format_time(84.0) == "day 3, 12 h"
    assert format_time(1.5) == "day 0, 1 h 30 min"
    assert format_time(47.9999999) == "day 2, 0 h"
    assert format_time(-6.0) == "-day 0, 6 h"
    with pytest.raises(ValueError, match="finite"):
        format_time(math.nan)


def test_cells_are_drawn_at_cell_size() -> None:
    from napari_niche3d._display import CELL_DIAMETER_UM, cell_point_style

    st = cell_point_style(4.0)
    assert st["size"] == CELL_DIAMETER_UM / 4.0 == 2.0  # voxels across: 8 µm at 4 µm a voxel
    assert st["border_color"] == "white" and st["border_width"] > 0
    with pytest.raises(ValueError, match="voxel_um must be a positive number"):
        cell_point_style(0.0)


def test_overlays_follow_time_layers_and_depth(run_store: str) -> None:
    from napari.components import ViewerModel
    from napari_niche3d._display import DEFAULT_DEPTH_UM, decorate
    from napari_niche3d._launch import add_run_layers
    from napari_niche3d._widgets import _current_t, _set_t

    vm = ViewerModel()
    add_run_layers(vm, run_store)
    d = decorate(vm)
    assert decorate(vm) is d  # once per viewer
    assert vm.scale_bar.visible and vm.axes.visible and vm.text_overlay.visible
    _set_t(vm, 24.0)
    assert vm.text_overlay.text == "t = day 1, 0 h" and vm.dims.axis_labels[0] == "t: day 1, 0 h"
    assert _current_t(vm) == 24.0  # the widgets still find the time axis by its label
    vm.add_points(np.zeros((1, 4)), name="extra")  # a new layer resets the labels: labelled again
    assert vm.text_overlay.text == "t = day 1, 0 h" and vm.dims.axis_labels[0] == "t: day 1, 0 h"
    voxel = vm.layers["cells"].scale[-3]
    assert vm.dims.margin_left[1] == vm.dims.margin_right[1] == DEFAULT_DEPTH_UM + voxel / 2
    d.set_depth(40.0)
    assert vm.dims.margin_left[1] == 40.0 + voxel / 2
    d.set_depth(0.0)
    assert vm.dims.margin_left[1] == 0.0
    vm.dims.ndisplay = 3  # no slab in 3D: every cell is drawn
    assert vm.dims.margin_left[1] == 0.0
    with pytest.raises(ValueError, match="depth_um must be a number >= 0"):
        d.set_depth(-1.0)
    fields = [ly for ly in vm.layers if ly.metadata.get("niche3d", {}).get("role") == "field"]
    assert fields and all(ly.colorbar.visible for ly in fields)


def test_cells_near_the_plane_are_shown_smaller_with_distance() -> None:
    """What napari draws in 2D: cells 0, 1 and 2 voxels (0, 8, 16 µm) from the plane, at
    full, 3/5 and 1/5 of the cell size; one 3 voxels (24 µm) away, or at another time, not."""
    from napari.components import ViewerModel
    from napari_niche3d._display import DEFAULT_DEPTH_UM, cell_point_style, decorate

    assert DEFAULT_DEPTH_UM == 16.0
    vm = ViewerModel()
    pts = np.array([[0, 5, 2, 2], [0, 6, 4, 4], [0, 3, 6, 6], [0, 8, 8, 8], [1, 5, 9, 9]], float)
    layer = vm.add_points(pts, scale=(12.0, 8.0, 8.0, 8.0), name="cells",
                          metadata={"niche3d": {"role": "cells"}}, **cell_point_style(8.0))
    decorate(vm)
    vm.dims.set_point(0, 0.0)
    vm.dims.set_point(1, 5 * 8.0)
    shown = dict(zip(layer._view_indices.tolist(), (layer._view_size / layer.size[0]).tolist(), strict=True))
    assert set(shown) == {0, 1, 2}
    assert shown[0] == pytest.approx(1.0) and shown[1] == pytest.approx(0.6) and shown[2] == pytest.approx(0.2)
    vm.dims.ndisplay = 3  # in 3D every cell of the record, at full size
    assert set(layer._view_indices.tolist()) == {0, 1, 2, 3}
