"""The ``niche sites`` labels layer (issue 14, point 5): built from ``run.niche`` with one
colour per site code, following the time slider, and absent for stores without a niche map.

The store is written with niche3d's RunWriter and holds known maps (3 records, 6 h apart,
voxels of 5 µm): on plane z = 2 a block of free sites y 2..5, x 2..9 (32 voxels), of which
(2, 3, 2 + r) and (2, 4, 6 + r) are held by an HSC at record r, and at record 2 also
(2, 5, 9) is taken by another cell; on plane z = 5 free sites y 8..9, x 4..11.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from napari_niche3d import read_run
from napari_niche3d._reader import niche_colormap
from plugin_testdata import display_possible, store_fixture

SHAPE = (8, 12, 16)
VOXEL = 5.0
RECORD_H = 6.0
N_REC = 3
FREE_GREEN = (0.6, 1.0, 0.6, 1.0)
HSC_MAGENTA = (1.0, 0.0, 1.0, 1.0)
OTHER_GREY = (0.6, 0.6, 0.6, 1.0)

plain_store = store_fixture()  # the plugin's usual test store: written without niche sites


def niche_of(r: int) -> np.ndarray:
    n = np.zeros(SHAPE, np.uint8)
    n[2, 2:6, 2:10] = 1
    n[2, 3, 2 + r] = 2
    n[2, 4, 6 + r] = 2
    if r == 2:
        n[2, 5, 9] = 3
    n[5, 8:10, 4:12] = 1
    return n


@pytest.fixture(scope="module")
def niche_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario

    path = tmp_path_factory.mktemp("niche") / "run.zarr"
    sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE), "domain.voxel_um": VOXEL,
                                            "output.interval_hours": RECORD_H})
    w = RunWriter.create(
        path, scenario=sc, labels=np.ones(SHAPE, np.uint8), voxel_um=VOXEL, record_hours=RECORD_H,
        n_records=N_REC, fields=[], seed=1, code_version="test", dt_hours=1.0, niche=True,
    )
    w.set_categories("cells", "state", ["dormant", "active", "mpp"])
    for r in range(N_REC):
        cells = {k: np.array([v], np.int32) for k, v in zip("zyx", (2, 3, 2 + r), strict=True)}
        cells = {"track_id": np.array([1], np.int64), "state": np.array([0], np.int8), **cells}
        w.write_record(r, r * RECORD_H, fields=None, labels=None, cells=cells,
                       metrics={"niche_sites_hsc": 2.0}, niche=niche_of(r))
    return str(path.resolve())


def test_niche_colormap_colours() -> None:
    cmap = niche_colormap()
    got = cmap.map(np.array([0, 1, 2, 3, 7]))
    np.testing.assert_allclose(got, [(0, 0, 0, 0), FREE_GREEN, HSC_MAGENTA, OTHER_GREY, (0, 0, 0, 0)], atol=1e-6)


def test_niche_layer_from_the_store(niche_store: str) -> None:
    from niche3d.io import open_run

    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in read_run(niche_store)}
    assert list(layers) == ["tissue", "niche sites", "lineage", "cells"]  # no fields stored
    data, kw, kind = layers["niche sites"]
    assert kind == "labels" and kw["visible"] is False and kw["opacity"] == 0.8
    assert kw["scale"] == layers["tissue"][1]["scale"] == (RECORD_H, VOXEL, VOXEL, VOXEL)
    assert kw["translate"] == layers["tissue"][1]["translate"] == (0.0, VOXEL / 2, VOXEL / 2, VOXEL / 2)
    assert kw["metadata"]["niche3d"] == {"path": niche_store, "role": "niche"}
    run = open_run(niche_store)
    assert data.shape == (N_REC, *SHAPE) and data.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(data), np.asarray(run.niche))
    for r in range(N_REC):
        np.testing.assert_array_equal(np.asarray(data[r]), niche_of(r))
    feats = kw["features"]
    assert dict(zip(feats["index"], feats["niche site"], strict=True)) == {0: "none", 1: "free", 2: "hsc", 3: "other"}
    np.testing.assert_allclose(kw["colormap"].map(np.array([2]))[0], HSC_MAGENTA, atol=1e-6)


def test_store_without_niche_has_no_niche_layer(plain_store: str) -> None:
    from niche3d.io import open_run

    assert open_run(plain_store).niche is None
    names = [kw["name"] for _, kw, _ in read_run(plain_store)]
    assert names == ["cxcl12", "scf", "tissue", "lineage", "cells"]


def test_niche_layer_follows_the_time_slider(niche_store: str) -> None:
    import npe2
    from napari.components import ViewerModel

    from niche3d.io import open_run

    npe2.PluginManager.instance().discover()
    vm = ViewerModel()
    vm.open(niche_store, plugin="napari-niche3d")
    layer = vm.layers["niche sites"]
    assert layer.visible is False
    layer.visible = True  # napari reads no value from a hidden layer
    run = open_run(niche_store)
    np.testing.assert_allclose(layer.colormap.map(np.array([2]))[0], HSC_MAGENTA, atol=1e-6)
    for r in range(N_REC):
        vm.dims.set_point(0, r * RECORD_H)
        step = vm.dims.current_step[0]
        assert step == r
        np.testing.assert_array_equal(np.asarray(layer.data[step]), np.asarray(run.niche[step]))
        # world coordinates (h, µm voxel centres) read the site code at this time
        def at(z: int, y: int, x: int, t: float = r * RECORD_H) -> Any:
            world = (t, *((np.array([z, y, x]) + 0.5) * VOXEL))
            for axis, value in enumerate(world):
                vm.dims.set_point(axis, value)
            return layer.get_value(world, world=True)

        assert at(2, 3, 2 + r) == 2 and at(2, 4, 6 + r) == 2
        assert at(2, 3, 2 + (r + 1) % N_REC) == 1  # held at another record, free now
        assert at(2, 5, 9) == (3 if r == 2 else 1)
        assert at(0, 0, 0) == 0


@pytest.mark.gui
@pytest.mark.skipif(not display_possible(), reason="no display and no Xvfb: a real viewer cannot start")
def test_niche_layer_pixels(niche_store: str, qtbot: Any) -> None:
    """Drawn alone at record 2 on plane z = 2: 29 free (green), 2 HSC-held (magenta) and
    1 other (grey) site, each colour o * a * rgb over the black canvas (o = 0.8)."""
    import napari

    viewer = napari.Viewer(show=False)
    try:
        viewer.window._qt_window.resize(900, 650)
        viewer.window._qt_window.grab()
        viewer.open(niche_store, plugin="napari-niche3d")
        for ly in viewer.layers:
            ly.visible = ly.name == "niche sites"
        o = viewer.layers["niche sites"].opacity
        viewer.dims.set_point(0, 2 * RECORD_H)
        viewer.dims.set_point(1, 2.5 * VOXEL)
        viewer.reset_view()
        img = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)

        def count(rgba: tuple[float, ...]) -> int:
            want = np.rint(255 * o * rgba[3] * np.array(rgba[:3]))
            return int((np.abs(img - want[None, None, :]) <= 3).all(axis=-1).sum())

        free, hsc, other = count(FREE_GREEN), count(HSC_MAGENTA), count(OTHER_GREY)
        assert free > 1000
        assert hsc / free == pytest.approx(2 / 29, rel=0.1)
        assert other / free == pytest.approx(1 / 29, rel=0.1)
        assert (img.max(axis=-1) > 0).sum() == pytest.approx(free + hsc + other, rel=0.02)
    finally:
        viewer.close()

