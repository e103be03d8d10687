"""Open a run in a viewer: ``niche3d view RUN`` and the in-place layer refresh used when
a run streams records into an open viewer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_niche3d._reader import is_run_store, read_run

__all__ = [
    "PLUGIN_NAME",
    "add_run_layers",
    "dock_widgets",
    "find_run_layers",
    "label_colors_without_numba",
    "run_paths",
    "view",
]

#: npe2 plugin name (the distribution name).
PLUGIN_NAME = "napari-niche3d"


def _key(meta: dict[str, Any]) -> tuple[Any, ...]:
    n = meta.get("niche3d", {}) if isinstance(meta, dict) else {}
    return (n.get("path"), n.get("role"), n.get("field"))


def find_run_layers(viewer: Any, path: str | os.PathLike[str]) -> list[Any]:
    """Layers of ``viewer`` that came from the run store at ``path``.

    Parameters
    ----------
    viewer
        A napari ``Viewer`` or ``ViewerModel``.
    path
        The store path.

    Returns
    -------
    list of Layer
        In the viewer's layer order.
    """
    store = str(Path(path).resolve())
    return [ly for ly in viewer.layers if _key(ly.metadata)[0] == store]


def run_paths(viewer: Any) -> list[str]:
    """Paths of the run stores shown in ``viewer`` (first appearance order)."""
    out: list[str] = []
    for ly in viewer.layers:
        p = _key(ly.metadata)[0]
        if p and p not in out:
            out.append(p)
    return out


def add_run_layers(viewer: Any, path: str | os.PathLike[str]) -> list[Any]:
    """Show the run at ``path`` in ``viewer``, updating its layers in place if present.

    Layers are matched by store path, role and field name (not by layer name), so a run
    that is being written can be refreshed record by record without losing the user's
    layer settings.

    Parameters
    ----------
    viewer
        A napari ``Viewer`` or ``ViewerModel``.
    path
        A niche3d run store.

    Returns
    -------
    list of Layer
        The run's layers.

    Raises
    ------
    ValueError
        If ``path`` is not a niche3d run store.
    """
    from napari.layers import Layer

    if not is_run_store(path):
        raise ValueError(f"path {str(path)!r} is not a niche3d run store (no 'niche3d' attribute in zarr.json)")
    existing = {_key(ly.metadata): ly for ly in find_run_layers(viewer, path)}
    out: list[Any] = []
    for data, kwargs, kind in read_run(str(path)):
        ly = existing.get(_key(kwargs["metadata"]))
        with label_colors_without_numba():
            if ly is None:
                ly = viewer.add_layer(Layer.create(data, kwargs, kind))
            else:
                _update_layer(ly, data, kwargs, kind)
        out.append(ly)
    return out


@contextlib.contextmanager
def label_colors_without_numba() -> Iterator[None]:
    """napari's numpy colour mapping for label layers made inside the block.

    A uint8 label layer's colours come from a 256-entry table napari builds once per
    colormap; with numba installed it builds it through a numba typed dict, whose first use
    in a process compiles for 1.2 s (measured: a third of a run's first frame). The numpy
    path builds the same table at once. Rendering is unchanged: uint8 label textures are
    mapped on the GPU. napari's own setting is restored on leaving.
    """
    from napari.utils.colormap_backend import ColormapBackend, get_backend, set_backend

    before = get_backend()
    set_backend(ColormapBackend.pure_python)
    try:
        yield
    finally:
        set_backend(before)


def _update_layer(layer: Any, data: Any, kwargs: dict[str, Any], kind: str) -> None:
    if kind == "points":
        with layer.events.blocker_all():
            layer.data = data
        layer.features = kwargs["features"]
        layer.face_color_cycle = kwargs["face_color_cycle"]
        layer.face_color = kwargs["face_color"]
        layer.refresh()
    elif kind == "tracks":
        layer.color_by = "track_id"  # always present: no fallback warning while data changes
        layer.graph = {}
        layer.data = data
        layer.features = kwargs["features"]
        layer.graph = kwargs["graph"]
        layer.color_by = kwargs["color_by"]
    else:
        layer.data = data


def view(path: str) -> None:
    """Open ``path`` in a new napari window with the niche3d widgets, run the event loop.

    Parameters
    ----------
    path
        A niche3d run store.

    Raises
    ------
    ValueError
        If ``path`` is not a niche3d run store.
    """
    if not is_run_store(path):
        raise ValueError(f"path {str(path)!r} is not a niche3d run store (no 'niche3d' attribute in zarr.json)")
    import napari

    viewer = napari.Viewer(title=f"niche3d — {Path(path).name}")
    if str(path).rstrip("/").endswith(".zarr"):
        with label_colors_without_numba():
            viewer.open(str(Path(path).resolve()), plugin=PLUGIN_NAME)
    else:  # npe2 matches readers by file name; any store name works through the reader function
        add_run_layers(viewer, path)
    dock_widgets(viewer, path)
    napari.run()


def dock_widgets(viewer: Any, path: str | os.PathLike[str]) -> None:
    """Give ``viewer`` the niche3d overlays (:func:`napari_niche3d._display.decorate`) and
    docks: the legend, the run metrics, the cell inspector, and the intervention timeline
    only when the run's scenario has interventions (an empty timeline would only take room).

    Parameters
    ----------
    viewer
        A napari ``Viewer`` (with a window).
    path
        The run store shown.
    """
    from napari_niche3d._display import decorate
    from napari_niche3d._legend import Legend
    from napari_niche3d._widgets import (
        CellInspector,
        InterventionTimeline,
        MetricsPanel,
        open_run_cached,
    )

    decorate(viewer)
    viewer.window.add_dock_widget(Legend(viewer), name="Legend", area="left")
    viewer.window.add_dock_widget(MetricsPanel(viewer), name="Run metrics", area="right")
    viewer.window.add_dock_widget(CellInspector(viewer), name="Cell inspector", area="right")
    if _has_interventions(str(Path(path).resolve()), open_run_cached):
        viewer.window.add_dock_widget(InterventionTimeline(viewer), name="Intervention timeline", area="bottom")


def _has_interventions(path: str, opener: Any) -> bool:
    """Whether the run's scenario has interventions; False for a store whose scenario this
    niche3d cannot read (an older model's keys): its records still show."""
    from niche3d.io import StoreError

    try:
        return bool(opener(path).scenario.interventions)
    except StoreError:
        return False
