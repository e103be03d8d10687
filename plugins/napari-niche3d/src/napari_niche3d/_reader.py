"""Reader: a niche3d run store -> napari layers.

The reader claims a path only when its root ``zarr.json`` carries a ``niche3d``
attribute, checked by :func:`niche3d.io.is_run_store` (one small JSON file; no zarr, and
niche3d's lazy namespaces load nothing else), so it never steals other zarr stores and
answers in well under a millisecond for them.

Every layer shares one world frame: data coordinates are (record index, voxel z, y, x),
``scale = (record_hours, voxel_um, voxel_um, voxel_um)`` and ``translate`` = the first
record time and the first voxel centre, so world coordinates are hours and µm (voxel
centres) and the time slider steps one record at a time for every layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from napari_niche3d._display import cell_point_style

__all__ = [
    "AXIS_LABELS",
    "AXIS_UNITS",
    "FIELD_COLORMAPS",
    "is_run_store",
    "layers_from_run",
    "napari_get_reader",
    "niche_colormap",
    "read_run",
    "state_colors",
    "tissue_colormap",
    "world_frame",
]

#: axis labels of every layer (NGFF order).
AXIS_LABELS: tuple[str, str, str, str] = ("t", "z", "y", "x")
#: pint unit names of every layer's axes.
AXIS_UNITS: tuple[str, str, str, str] = ("hour", "micrometer", "micrometer", "micrometer")

#: napari colormap per known field name; other fields take :data:`_EXTRA_COLORMAPS` in turn.
FIELD_COLORMAPS: dict[str, str] = {
    "cxcl12": "magma",
    "scf": "viridis",
    "membrane_scf": "cividis",
}
_EXTRA_COLORMAPS: tuple[str, ...] = ("inferno", "plasma", "turbo", "twilight", "gray")

# state colours: matched on the lower-case state name, first key contained in it wins
_STATE_PALETTE: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("dormant", (0.00, 0.90, 1.00, 1.0)),  # cyan
    ("quiescent", (0.00, 0.90, 1.00, 1.0)),
    ("sg2m", (1.00, 0.20, 0.80, 1.0)),  # magenta: S/G2/M
    ("g1", (1.00, 0.60, 0.00, 1.0)),  # orange
    ("g0", (1.00, 0.95, 0.20, 1.0)),  # yellow: active, resting
    ("active", (1.00, 0.95, 0.20, 1.0)),
    ("cycling", (1.00, 0.60, 0.00, 1.0)),
    ("mpp", (1.00, 1.00, 1.00, 1.0)),  # white
    ("progenitor", (0.70, 0.70, 1.00, 1.0)),  # lavender
    ("circulating", (0.60, 0.60, 0.60, 1.0)),
    ("dead", (0.30, 0.30, 0.30, 1.0)),
)
_FALLBACK_COLORS: tuple[tuple[float, float, float, float], ...] = (
    (0.17, 0.63, 0.17, 1.0),
    (0.58, 0.40, 0.74, 1.0),
    (0.55, 0.34, 0.29, 1.0),
    (0.09, 0.75, 0.81, 1.0),
    (0.74, 0.74, 0.13, 1.0),
    (0.84, 0.15, 0.16, 1.0),
)

LayerDataTuple = tuple[Any, dict[str, Any], str]


class RunLike(Protocol):
    """What :func:`layers_from_run` reads from a run (``niche3d.io.Run`` satisfies it)."""

    voxel_um: float
    record_hours: float
    times_h: np.ndarray
    fields: Any  # xarray.Dataset, dims (t, z, y, x)
    tissue: Any  # xarray.DataArray (t, z, y, x) uint8
    cells: pd.DataFrame
    # optional: ``niche`` (xarray.DataArray (t, z, y, x) uint8 or None), read with getattr


# ---------------------------------------------------------------------- detection
def is_run_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a niche3d run store (:func:`niche3d.io.is_run_store`).

    Reads one small JSON file; never raises for a missing or malformed path.

    Parameters
    ----------
    path
        Any path.

    Returns
    -------
    bool
        True for a niche3d run store.
    """
    from niche3d.io import is_run_store as probe

    return probe(path)


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerDataTuple]] | None:
    """npe2 reader hook: return :func:`read_run` for a niche3d store, else None.

    Parameters
    ----------
    path
        A path or a list of paths (only a list of exactly one path is claimed).

    Returns
    -------
    callable or None
        The reader function, or None if ``path`` is not a niche3d run store.
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | os.PathLike):
        return None
    return read_run if is_run_store(path) else None


def read_run(path: str | list[str]) -> list[LayerDataTuple]:
    """Open a run store and return its layers (see :func:`layers_from_run`).

    Parameters
    ----------
    path
        The store path (or a one-element list of it).

    Returns
    -------
    list of LayerDataTuple
        Field images, tissue labels, niche-site labels (when recorded), cell points and
        lineage tracks.

    Raises
    ------
    ValueError
        If ``path`` is a list of more than one path, or not a niche3d run store
        (``niche3d.io.StoreError``).
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            raise ValueError(f"path must be one run store, got a list of {len(path)} paths")
        path = path[0]
    from niche3d.io import open_run

    store = str(Path(path).resolve())
    run = open_run(store)
    return layers_from_run(run, path=store)


# ---------------------------------------------------------------------- colours
def state_colors(states: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """Colour per cell state name: known states by name, others from a fixed palette.

    Parameters
    ----------
    states
        State names (categories), in their category order.

    Returns
    -------
    dict
        state name -> RGBA in 0..1. Deterministic for a given list.
    """
    out: dict[str, tuple[float, float, float, float]] = {}
    k = 0
    for name in states:
        low = str(name).lower()
        for key, rgba in _STATE_PALETTE:
            if key in low:
                out[str(name)] = rgba
                break
        else:
            out[str(name)] = _FALLBACK_COLORS[k % len(_FALLBACK_COLORS)]
            k += 1
    return out


def tissue_colormap(*, transparent: Sequence[str] = ("marrow",)) -> Any:
    """napari ``DirectLabelColormap`` with the niche3d tissue colours.

    Parameters
    ----------
    transparent
        Tissue names drawn fully transparent. By default the non-niche marrow, which
        fills most of the block: napari's 3D label rendering stops each ray at the first
        voxel whose colour is not fully transparent, so a faint marrow colour would hide
        the niche and the cells inside it. Hovering still reports its code.

    Returns
    -------
    napari.utils.colormaps.DirectLabelColormap
        Tissue colours from ``niche3d.tissue.codes.TISSUE_COLORS``; unknown codes transparent.

    Raises
    ------
    ValueError
        If a name in ``transparent`` is not a tissue name.
    """
    from napari.utils.colormaps import DirectLabelColormap

    from niche3d.tissue.codes import TISSUE_COLORS, tissue_code

    hidden = {tissue_code(name) for name in transparent}
    colors: dict[int | None, tuple[float, ...]] = {
        int(code): (0.0, 0.0, 0.0, 0.0) if int(code) in hidden else tuple(float(c) for c in rgba)
        for code, rgba in TISSUE_COLORS.items()
    }
    colors[None] = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict=colors)


def niche_colormap(colors: Any = None) -> Any:
    """napari ``DirectLabelColormap`` of the niche-site codes.

    Parameters
    ----------
    colors
        Mapping code -> RGBA in 0..1 (``run.niche.attrs["colors"]``); default
        ``niche3d.io._format.NICHE_SITE_COLORS``: 1 free site light green, 2 site held by an
        HSC magenta, 3 site taken by another cell grey.

    Returns
    -------
    napari.utils.colormaps.DirectLabelColormap
        Code 0 (not a site) and unknown codes fully transparent, so the sites can be shown
        over the tissue and in 3D.
    """
    from napari.utils.colormaps import DirectLabelColormap

    if colors is None:
        from niche3d.io._format import NICHE_SITE_COLORS

        colors = NICHE_SITE_COLORS
    cmap: dict[int | None, tuple[float, ...]] = {
        int(code): tuple(float(c) for c in rgba) for code, rgba in dict(colors).items()
    }
    cmap[0] = (0.0, 0.0, 0.0, 0.0)
    cmap[None] = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict=cmap)


# ---------------------------------------------------------------------- layers
def world_frame(run: RunLike) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scale, translate)`` shared by every layer of ``run``.

    Parameters
    ----------
    run
        An opened run.

    Returns
    -------
    scale, translate
        ``scale = (record_hours, voxel_um, voxel_um, voxel_um)``; ``translate`` is the first
        record time (h) and the first voxel centre (µm) along z, y, x.
    """
    v = float(run.voxel_um)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"run.voxel_um must be a positive number of µm, got {run.voxel_um!r}")
    rh = float(run.record_hours)
    if not (np.isfinite(rh) and rh > 0):
        raise ValueError(f"run.record_hours must be a positive number of hours, got {run.record_hours!r}")
    times = np.asarray(run.times_h, dtype=float)
    if times.size == 0:
        raise ValueError("the run has no records yet (n_records = 0); nothing to show")
    t0 = float(times[0])
    if callable(getattr(run, "pyramid", None)):  # a stored run: no xarray needed
        origin = tuple(float(o) for o in run.pyramid("tissue")[0].origin_um)
    else:
        coords = run.tissue.coords
        origin = tuple(float(coords[d].values[0]) if d in coords else 0.5 * v for d in ("z", "y", "x"))
    return (rh, v, v, v), (t0, *origin)


def _fields(run: RunLike) -> list[tuple[str, Any, str, Any]]:
    """(name, display window, unit, xarray variable or None) of each stored field; a stored
    run's from its attributes (its dask-backed ``fields`` are not built)."""
    if callable(getattr(run, "pyramid", None)) and isinstance(getattr(run, "attrs", None), dict):
        return [(str(f["name"]), tuple(f["window"]), str(f.get("unit", "")), None)
                for f in run.attrs["fields"]]  # type: ignore[attr-defined]
    out = []
    for name in run.fields.data_vars:
        var = run.fields[name]
        out.append((str(name), var.attrs.get("window", (0.0, 1.0)), str(var.attrs.get("units", "")), var))
    return out


def _niche(run: RunLike) -> tuple[dict[int, str], Any, Any] | None:
    """(site names, colours, xarray or None) of the run's niche-site map; None without one."""
    if callable(getattr(run, "pyramid", None)) and isinstance(getattr(run, "has_niche", None), bool):
        if not run.has_niche:  # type: ignore[attr-defined]
            return None
        from niche3d.io._format import NICHE_SITE_COLORS, NICHE_SITE_NAMES

        return dict(NICHE_SITE_NAMES), dict(NICHE_SITE_COLORS), None
    niche = getattr(run, "niche", None)
    if niche is None:
        return None
    return dict(niche.attrs.get("names", {})), niche.attrs.get("colors"), niche


def _image_data(run: RunLike, name: str, fallback: Callable[[], Any]) -> tuple[Any, bool]:
    """Layer data of one of the run's images and whether it is multiscale: every stored
    level of a run with a pyramid (napari then reads the level the view needs), read
    without dask (``Run.pyramid``); for other runs the data of ``fallback()`` (an xarray)."""
    pyramid = getattr(run, "pyramid", None)
    if not callable(pyramid):
        return fallback().data, False
    levels = [lv.array for lv in pyramid(name)]
    return (levels, True) if len(levels) > 1 else (levels[0], False)


def _record_index(t_hours: np.ndarray, times_h: np.ndarray) -> np.ndarray:
    """Index of the record whose time is nearest to each ``t_hours``."""
    times_h = np.asarray(times_h, dtype=float)
    if times_h.size == 0:
        return np.zeros(len(t_hours), dtype=np.int64)
    pos = np.searchsorted(times_h, t_hours)
    pos = np.clip(pos, 1, max(times_h.size - 1, 1)) if times_h.size > 1 else np.zeros_like(pos)
    if times_h.size > 1:
        left = times_h[pos - 1]
        right = times_h[pos]
        pos = np.where(np.abs(t_hours - left) <= np.abs(right - t_hours), pos - 1, pos)
    return pos.astype(np.int64)


def _categorical(series: pd.Series) -> pd.Categorical:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return pd.Categorical(series)
    values = series.to_numpy()
    cats = sorted(pd.unique(values).tolist())
    return pd.Categorical(values, categories=cats)


def cell_layer_data(run: RunLike) -> tuple[np.ndarray, pd.DataFrame]:
    """Points data (record index, voxel z, y, x) and features of cells on the lattice.

    Circulating cells (NaN position) are left out.

    Parameters
    ----------
    run
        An opened run.

    Returns
    -------
    data, features
        ``data`` (n, 4) float64 in layer data coordinates; ``features`` with columns
        track_id, state, bound, generation, donor (Categoricals), parent, divisions, t_hours.
    """
    cells = run.cells
    required = ("track_id", "t", "z", "y", "x", "state")
    missing = [c for c in required if c not in cells.columns]
    if missing:
        raise ValueError(f"run.cells lacks the columns {missing}; it has {list(cells.columns)}")
    (_, v, _, _), (_, z0, y0, x0) = world_frame(run)
    on = cells[np.isfinite(cells["z"].to_numpy(dtype=float))].reset_index(drop=True)
    tidx = _record_index(on["t"].to_numpy(dtype=float), run.times_h)
    data = np.column_stack(
        [
            tidx.astype(float),
            (on["z"].to_numpy(dtype=float) - z0) / v,
            (on["y"].to_numpy(dtype=float) - y0) / v,
            (on["x"].to_numpy(dtype=float) - x0) / v,
        ]
    ) if len(on) else np.zeros((0, 4))
    state = on["state"]
    if not isinstance(state.dtype, pd.CategoricalDtype) and isinstance(cells["state"].dtype, pd.CategoricalDtype):
        state = state.astype(cells["state"].dtype)
    feats: dict[str, Any] = {
        "track_id": on["track_id"].to_numpy(dtype=np.int64),
        "state": pd.Categorical(state) if isinstance(state.dtype, pd.CategoricalDtype) else _categorical(state),
    }
    for name in ("bound", "generation", "donor"):
        if name in on.columns:
            feats[name] = _categorical(on[name])
    for name in ("parent", "divisions"):
        if name in on.columns:
            feats[name] = on[name].to_numpy(dtype=np.int64)
    feats["t_hours"] = on["t"].to_numpy(dtype=float)
    return data, pd.DataFrame(feats)


def track_layer_data(run: RunLike) -> tuple[np.ndarray, dict[int, list[int]], pd.DataFrame]:
    """Tracks data (track_id, record index, z, y, x), lineage graph and features.

    Parameters
    ----------
    run
        An opened run.

    Returns
    -------
    data, graph, features
        ``data`` (n, 5) sorted by track then time; ``graph`` maps a daughter's track id to
        ``[mother track id]`` for every division whose mother was recorded on the lattice;
        ``features`` holds generation and divisions (numeric, for ``color_by``) and the state
        code.
    """
    points, feats = cell_layer_data(run)
    order = np.lexsort((points[:, 0], feats["track_id"].to_numpy()))
    tid = feats["track_id"].to_numpy()[order]
    data = np.column_stack([tid.astype(float), points[order]]) if len(order) else np.zeros((0, 5))
    present = set(np.unique(tid).tolist())
    graph: dict[int, list[int]] = {}
    if "parent" in feats.columns:
        pairs = pd.DataFrame({"id": tid, "parent": feats["parent"].to_numpy()[order]}).drop_duplicates("id")
        for child, parent in zip(pairs["id"].tolist(), pairs["parent"].tolist(), strict=True):
            if parent >= 0 and parent in present and parent != child:
                graph[int(child)] = [int(parent)]
    out: dict[str, Any] = {"state_code": feats["state"].cat.codes.to_numpy()[order].astype(np.int64)}
    if "generation" in feats.columns:
        out["generation"] = np.asarray(feats["generation"].to_numpy(), dtype=float)[order]
    if "divisions" in feats.columns:
        out["divisions"] = feats["divisions"].to_numpy()[order].astype(np.int64)
    return data, graph, pd.DataFrame(out)


def layers_from_run(run: RunLike, *, path: str | None = None) -> list[LayerDataTuple]:
    """Build napari layer data tuples from an opened run (pure; no viewer needed).

    Parameters
    ----------
    run
        A ``niche3d.io.Run`` or any object with the same attributes (:class:`RunLike`).
    path
        The store path, recorded in every layer's ``metadata["niche3d"]["path"]`` so the
        widgets can find the run behind a layer.

    Returns
    -------
    list of LayerDataTuple
        One hidden Image per field (lazy dask data, fixed contrast limits = the stored
        window, colormap from :data:`FIELD_COLORMAPS`), a visible ``tissue`` Labels layer
        (tissue colours with marrow transparent, see :func:`tissue_colormap`; feature table
        of names), a hidden ``niche sites`` Labels layer when the run recorded niche sites
        (``run.niche``; colours of :func:`niche_colormap`), a ``cells`` Points layer coloured by the
        categorical ``state`` feature and a ``lineage`` Tracks layer whose graph holds the
        divisions (left out when no cell was ever on the lattice). All share scale,
        translate, units (hour, micrometer) and axis labels (t, z, y, x).
    """
    from niche3d.tissue.codes import TISSUE_NAMES

    scale, translate = world_frame(run)
    common = {"scale": scale, "translate": translate, "units": AXIS_UNITS, "axis_labels": AXIS_LABELS}

    def meta(role: str, **extra: Any) -> dict[str, Any]:
        return {"niche3d": {"path": path, "role": role, **extra}}

    layers: list[LayerDataTuple] = []
    extra_cm = iter(_EXTRA_COLORMAPS * 4)
    for name, window, units, var in _fields(run):
        lo, hi = (float(x) for x in window)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"field {name!r} has window {(lo, hi)}; a window needs finite lo < hi")
        cmap = FIELD_COLORMAPS.get(str(name).lower()) or next(extra_cm)
        data, multiscale = _image_data(run, str(name), lambda var=var: var)
        layers.append(
            (
                data,
                {
                    "name": str(name),
                    "multiscale": multiscale,
                    "colormap": cmap,
                    "contrast_limits": (lo, hi),
                    "blending": "additive",
                    "visible": False,
                    "metadata": meta("field", field=str(name), units=units),
                    **common,
                },
                "image",
            )
        )
    codes = sorted(TISSUE_NAMES)
    data, multiscale = _image_data(run, "tissue", lambda: run.tissue)
    layers.append(
        (
            data,
            {
                "name": "tissue",
                "multiscale": multiscale,
                "colormap": tissue_colormap(),
                "features": pd.DataFrame(
                    {"index": codes, "tissue": [TISSUE_NAMES[c] for c in codes]}
                ),
                "opacity": 0.8,
                "visible": True,
                "metadata": meta("tissue"),
                **common,
            },
            "labels",
        )
    )
    niche = _niche(run)
    if niche is not None:
        names, colors, var = niche
        site_codes = sorted(int(c) for c in names) or [0, 1, 2, 3]
        data, multiscale = _image_data(run, "niche", lambda: var)
        layers.append(
            (
                data,
                {
                    "name": "niche sites",
                    "multiscale": multiscale,
                    "colormap": niche_colormap(colors),
                    "features": pd.DataFrame(
                        {"index": site_codes, "niche site": [str(names.get(c, c)) for c in site_codes]}
                    ),
                    "opacity": 0.8,
                    # hidden: a free or held site is opaque and would hide the tissue and the
                    # cells behind it (napari's 3D labels stop at the first coloured voxel)
                    "visible": False,
                    "metadata": meta("niche"),
                    **common,
                },
                "labels",
            )
        )
    # the lineage below the cells, and the cells last: drawn on top, and the layer napari
    # selects (not the tracks)
    tdata, graph, tfeats = track_layer_data(run)
    if len(tdata):
        layers.append(
            (
                tdata,
                {
                    "name": "lineage",
                    "graph": graph,
                    "features": tfeats,
                    "color_by": "generation" if "generation" in tfeats.columns else "track_id",
                    "tail_length": 4,
                    "tail_width": 3.0,
                    "opacity": 0.7,
                    "metadata": meta("tracks"),
                    **common,
                },
                "tracks",
            )
        )
    data, feats = cell_layer_data(run)
    cats = [str(c) for c in feats["state"].cat.categories]
    layers.append(
        (
            data,
            {
                "name": "cells",
                "features": feats,
                "face_color": "state",
                "face_color_cycle": state_colors(cats),
                **cell_point_style(float(run.voxel_um)),
                "metadata": meta("cells", state_colors=state_colors(cats)),
                **common,
            },
            "points",
        )
    )
    return layers
