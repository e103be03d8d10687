"""How a run looks in the viewer: cells drawn at cell size, the cells near the current plane,
the time on the canvas and on the slider, a scale bar, axes and colour bars.

:func:`decorate` is applied by ``niche3d view``, the run panel and the widgets (once per
viewer); the layer styles of :func:`cell_point_style` are part of every cells layer the
reader makes, so a plain File > Open gets cells at cell size too.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any

import numpy as np

__all__ = [
    "CELL_DIAMETER_UM",
    "DEFAULT_DEPTH_UM",
    "cell_point_style",
    "format_time",
    "decorate",
    "Decor",
]

#: drawn diameter of a cell (µm): mouse HSCs are 6-8 µm across, one lattice voxel at the
#: default 8 µm (docs/tissue.md), so a cell fills its voxel
CELL_DIAMETER_UM = 8.0
#: in 2D, cells whose centre lies within this distance (µm) of the plane are shown,
#: drawn smaller the farther they are (linearly; see Decor.slab_margin_um)
DEFAULT_DEPTH_UM = 16.0


def cell_point_style(voxel_um: float) -> dict[str, Any]:
    """Points-layer settings that draw each cell as a disc of :data:`CELL_DIAMETER_UM` with a
    contrasting border, shown within a slab around the plane (``projection_mode``).

    Parameters
    ----------
    voxel_um
        The lattice's voxel edge (µm): points live in voxel coordinates before the layer's
        scale, so the size is the diameter in voxels.
    """
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number of µm, got {voxel_um!r}")
    return {
        "size": CELL_DIAMETER_UM / float(voxel_um),
        "border_width": 0.2,
        "border_width_is_relative": True,
        "border_color": "white",
        # cells within the slab around the plane (the dims margins Decor sets) are drawn,
        # shrinking linearly with their distance from the plane: nearer cells look larger.
        # (Not "rescale_spherical": it drops every cell whose own radius does not reach the
        # plane, i.e. every cell off the plane, whatever the slab.)
        "projection_mode": "rescale_linear",
    }


def format_time(t_hours: float) -> str:
    """``"day 3, 12 h"`` for 84 hours (whole hours; minutes when not whole)."""
    if not math.isfinite(t_hours):
        raise ValueError(f"t_hours must be finite, got {t_hours!r}")
    sign = "-" if t_hours < 0 else ""
    t = abs(float(t_hours))
    days = int(t // 24)
    hours = t - 24 * days
    if abs(hours - round(hours)) < 1e-6:
        h = int(round(hours))
        if h == 24:
            days, h = days + 1, 0
        return f"{sign}day {days}, {h} h"
    return f"{sign}day {days}, {int(hours)} h {round(60 * (hours - int(hours))):d} min"


class Decor:
    """The overlays of one viewer; made by :func:`decorate`, kept until the viewer goes."""

    def __init__(self, viewer: Any, depth_um: float) -> None:
        self._viewer = weakref.ref(viewer)
        self.depth_um = float(depth_um)
        viewer.scale_bar.visible = True
        viewer.scale_bar.ticks = False
        viewer.scale_bar.box = True
        viewer.axes.visible = True
        viewer.axes.labels = True
        viewer.axes.colored = True
        viewer.text_overlay.visible = True
        viewer.text_overlay.position = "top_right"  # the axes take the top left
        viewer.text_overlay.font_size = 12
        self._meshed: set[Any] = set()
        viewer.dims.events.point.connect(self.update)
        viewer.dims.events.ndisplay.connect(self.update)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        viewer.layers.events.inserted.connect(self._on_layer)
        for layer in list(viewer.layers):
            self._on_layer(layer)
        self.update()

    @property
    def viewer(self) -> Any:
        return self._viewer()

    def set_depth(self, depth_um: float) -> None:
        """Show the cells within ``depth_um`` of the plane in 2D (0: only the plane's own)."""
        if not (isinstance(depth_um, int | float) and math.isfinite(depth_um) and depth_um >= 0):
            raise ValueError(f"depth_um must be a number >= 0 (µm), got {depth_um!r}")
        self.depth_um = float(depth_um)
        self.update()

    def slab_margin_um(self) -> float:
        """The dims margin (µm) either side of the plane in 2D: the depth plus half a voxel
        of the cells layer, so that a cell exactly ``depth_um`` away (its size shrinks
        linearly to nothing at the margin) is still drawn, a fifth of its size at the
        default 16 µm and 8 µm voxels, and one a voxel farther is not."""
        if self.depth_um == 0:
            return 0.0
        v = self.viewer
        voxels = [float(ly.scale[-3]) for ly in (v.layers if v is not None else []) if _role(ly) == "cells"]
        return self.depth_um + (min(voxels) / 2 if voxels else 0.0)

    def _on_layer(self, event_or_layer: Any) -> None:
        layer = getattr(event_or_layer, "value", event_or_layer)
        meta = getattr(layer, "metadata", {}) or {}
        role = meta.get("niche3d", {}).get("role") if isinstance(meta, dict) else None
        if role == "field" and hasattr(layer, "colorbar"):
            # the field's colour bar, in its unit, whenever the field is shown
            layer.colorbar.visible = True
        # a new layer resets the dims' axis labels to the layers' ("t"): label the time again
        self.update()

    def time_text(self) -> str:
        """What the canvas shows: the time of the current record in days and hours."""
        v = self.viewer
        labels = tuple(v.dims.axis_labels)
        if not labels or not (labels[0] == "t" or labels[0].startswith("t:")):
            return ""  # not a run's time axis
        return f"t = {format_time(float(v.dims.point[0]))}"

    def _on_ndisplay(self, *_: Any) -> None:
        """3D: smooth surfaces of the vessels and bone in place of the tissue's voxel cubes
        (meshed the first time, :mod:`napari_niche3d._surfaces`); 2D: the tissue slice."""
        v = self.viewer
        if v is None:
            return
        three = v.dims.ndisplay == 3
        if three:
            self._add_surfaces()
        for layer in list(v.layers):
            role = _role(layer)
            if role == "tissue":
                layer.visible = not three
            elif role == "niche" and three:
                layer.visible = False  # opaque site voxels would hide the cells
            elif role == "surface":
                layer.visible = three
            elif role == "cells":
                # lit spheres in 3D; flat discs of the state colour in 2D (the legend's colour)
                layer.shading = "spherical" if three else "none"

    def _add_surfaces(self) -> None:
        from napari.layers import Surface
        from napari.utils import Colormap

        from napari_niche3d._surfaces import SURFACE_TISSUES, tissue_surfaces
        from niche3d.tissue.codes import TISSUE_COLORS, tissue_code

        v = self.viewer
        for layer in list(v.layers):
            meta = layer.metadata.get("niche3d", {}) if isinstance(layer.metadata, dict) else {}
            path = meta.get("path")
            if meta.get("role") != "tissue" or path in self._meshed:
                continue
            self._meshed.add(path)
            labels, scale, translate = _first_tissue(layer)
            at = v.layers.index(layer) + 1
            for name, (verts, faces, values) in tissue_surfaces(labels).items():
                rgb = TISSUE_COLORS[tissue_code(SURFACE_TISSUES[name][0])][:3]
                surf = Surface(
                    (verts, faces, values), name=f"{name} surface", scale=scale, translate=translate,
                    units=tuple(layer.units[1:]), axis_labels=tuple(layer.axis_labels[1:]),
                    colormap=Colormap([[*rgb, 1.0], [*rgb, 1.0]], name=f"niche3d-{name}"),
                    opacity=_SURFACE_OPACITY.get(name, 0.5), shading="smooth", blending="translucent",
                    metadata={"niche3d": {"path": path, "role": "surface", "structure": name}},
                )
                v.layers.insert(at, surf)
                at += 1

    def update(self, *_: Any) -> None:
        v = self.viewer
        if v is None:
            return
        text = self.time_text()
        v.text_overlay.text = text
        labels = list(v.dims.axis_labels)
        if labels and labels[0].startswith("t"):
            # the slider's label is the axis label: the time reads there too
            new = f"t: {format_time(float(v.dims.point[0]))}" if text else "t"
            if labels[0] != new:
                labels[0] = new
                v.dims.axis_labels = tuple(labels)
        if v.dims.ndim >= 4:
            # a slab around the plane along z (world µm) in 2D; none in 3D, where every
            # cell is drawn anyway
            depth = self.slab_margin_um() if v.dims.ndisplay == 2 else 0.0
            left = list(v.dims.margin_left)
            right = list(v.dims.margin_right)
            z = v.dims.ndim - 3
            if left[z] != depth or right[z] != depth:
                both = right[z] != depth
                left[z] = right[z] = depth
                # the viewer slices on each margin's change, and one margin set without
                # the other divides by a zero slab half (rescale_linear): slice once, when
                # both are set
                with v.dims.events.margin_left.blocker() if both else contextlib.nullcontext():
                    v.dims.margin_left = tuple(left)
                v.dims.margin_right = tuple(right)


def _first_tissue(layer: Any) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """The first record's tissue of a tissue layer (one record read) with the scale and
    translation that place it: of a multiscale layer, the finest level small enough to mesh
    whole (MAX_SURFACE_VOXELS), its voxels centred on the fine blocks they summarise."""
    from napari_niche3d._surfaces import MAX_SURFACE_VOXELS

    scale = np.asarray(layer.scale[1:], dtype=float)
    translate = np.asarray(layer.translate[1:], dtype=float)
    if not getattr(layer, "multiscale", False):
        return np.asarray(layer.data[0]), tuple(scale), tuple(translate)
    shapes = [np.asarray(s[1:], dtype=float) for s in layer.level_shapes]
    k = next((i for i, s in enumerate(shapes) if s.prod() <= MAX_SURFACE_VOXELS), len(shapes) - 1)
    # levels halve their axes (rounding up): the factor is the power of two nearest the ratio
    factor = 2.0 ** np.round(np.log2(shapes[0] / shapes[k]))
    labels = np.asarray(layer.data[k][0])
    return labels, tuple(scale * factor), tuple(translate + (factor - 1) / 2 * scale)


#: opacity of the 3D surfaces: the cells inside must show through
_SURFACE_OPACITY = {"sinusoids": 0.45, "arterioles": 0.6, "bone": 0.3}


def _role(layer: Any) -> str | None:
    meta = getattr(layer, "metadata", None)
    return meta.get("niche3d", {}).get("role") if isinstance(meta, dict) else None


_DECORS: weakref.WeakKeyDictionary[Any, Decor] = weakref.WeakKeyDictionary()


def decorate(viewer: Any, *, depth_um: float = DEFAULT_DEPTH_UM) -> Decor:
    """Give ``viewer`` the niche3d overlays (once; later calls return the same
    :class:`Decor`): a scale bar in µm, z/y/x axes, the time in days and hours on the canvas
    and on the slider, colour bars of the field layers, and the slab of cells shown in 2D.

    Parameters
    ----------
    viewer
        A napari ``Viewer`` or ``ViewerModel``.
    depth_um
        Cells within this distance (µm) of the plane are shown in 2D.
    """
    d = _DECORS.get(viewer)
    if d is None:
        d = Decor(viewer, depth_um)
        _DECORS[viewer] = d
    return d
