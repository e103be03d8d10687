"""The 3D surfaces of vessels and bone: marching cubes on known shapes, and the 3D view
that shows them in place of the tissue's voxel cubes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from plugin_testdata import display_possible, store_fixture

run_store = store_fixture()


def test_a_ball_gives_a_sphere_of_its_radius() -> None:
    from napari_niche3d._surfaces import tissue_surface
    from skimage.measure import mesh_surface_area

    z, y, x = np.mgrid[:40, :40, :40]
    ball = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 10**2
    verts, faces, values = tissue_surface(ball)
    assert verts.dtype == np.float32 and faces.dtype == np.int32 and len(values) == len(verts)
    r = np.linalg.norm(verts - 20.0, axis=1)
    assert abs(np.median(r) - 10.0) < 0.4  # the smoothed surface sits on the ball's edge
    assert mesh_surface_area(verts, faces) == pytest.approx(4 * np.pi * 10**2, rel=0.03)
    coarse = tissue_surface(ball, step=2)
    assert 0 < len(coarse[1]) < len(faces) / 3


def test_thin_vessels_stay_and_empty_masks_give_nothing() -> None:
    from napari_niche3d._surfaces import tissue_surface, tissue_surfaces

    line = np.zeros((10, 10, 30), bool)
    line[5, 5, 2:28] = True  # a vessel one voxel across
    verts, faces, _ = tissue_surface(line)
    assert len(faces) > 0
    assert verts[:, 2].min() < 2.5 and verts[:, 2].max() > 26.5  # its whole length
    assert np.abs(verts[:, :2] - 5.0).max() < 0.6  # and not wider than its voxel
    assert [len(a) for a in tissue_surface(np.zeros((5, 5, 5), bool))] == [0, 0, 0]
    from niche3d.tissue.codes import tissue_code

    labels = np.full((12, 12, 12), tissue_code("marrow"), np.uint8)
    labels[2:5, 2:10, 2:10] = tissue_code("bone")
    assert set(tissue_surfaces(labels)) == {"bone"}
    with pytest.raises(ValueError, match="mask must be 3D"):
        tissue_surface(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="step must be a whole number >= 1"):
        tissue_surface(line, step=0)


@pytest.mark.gui
@pytest.mark.skipif(not display_possible(), reason="no display and no Xvfb: a real viewer cannot start")
def test_the_3d_view_shows_surfaces_instead_of_voxel_cubes(run_store: str, qtbot: Any) -> None:
    import napari
    from napari_niche3d._display import decorate

    from niche3d.tissue.codes import TISSUE_COLORS, Tissue

    v = napari.Viewer(show=False)
    try:
        v.window._qt_window.resize(900, 650)
        v.window._qt_window.grab()
        v.open(run_store, plugin="napari-niche3d")
        decorate(v)
        assert not [ly for ly in v.layers if "surface" in ly.name]  # meshed only when asked
        v.dims.ndisplay = 3
        surfaces = {ly.name: ly for ly in v.layers if ly.metadata["niche3d"]["role"] == "surface"}
        assert set(surfaces) >= {"sinusoids surface", "bone surface"}
        assert all(ly.visible for ly in surfaces.values()) and not v.layers["tissue"].visible
        assert v.layers["cells"].shading == "spherical"  # HSCs as lit spheres among the vessels
        # in the block's frame: the surface's extent lies within the lattice (µm)
        extent = surfaces["bone surface"].extent.world
        tissue_extent = v.layers["tissue"].extent.world
        assert np.all(extent[0] >= tissue_extent[0][1:] - 8) and np.all(extent[1] <= tissue_extent[1][1:] + 8)
        v.scene.camera.angles = (-20.0, -35.0, -40.0)
        v.reset_view(reset_camera_angle=False)
        img = np.asarray(v.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        red = (r > 60) & (r > 2.5 * g) & (r > 2.5 * b)  # the sinusoids' colour, shaded
        assert TISSUE_COLORS[Tissue.SINUSOID][0] > 2.5 * TISSUE_COLORS[Tissue.SINUSOID][1]
        assert red.sum() > 100
        v.dims.ndisplay = 2  # back to the slice: the tissue again, no surfaces
        assert v.layers["tissue"].visible and not any(ly.visible for ly in surfaces.values())
        assert v.layers["cells"].shading == "none"
        n = len(v.layers)
        v.dims.ndisplay = 3  # meshed once
        assert len(v.layers) == n
    finally:
        v.close()
