"""The cell, event and metric tables as CSV and Parquet, and the cell tracks as a napari
tracks CSV with its lineage graph.

Tables: ``<name>.csv`` with a CSV on the Web metadata file ``<name>.csv-metadata.json``
beside it (each column's datatype and unit as ``schema:unitText``; a categorical column
is a string column whose ``format`` lists its categories in code order, ``a|b|c``), and
``<name>.parquet`` (categoricals as dictionary-encoded strings, each field's unit in its
Arrow field metadata under ``unit``, the export's provenance under the schema metadata key
``niche3d``). Floats are written with Python's shortest round-trip repr: read the CSV with
``pandas.read_csv(..., float_precision="round_trip")`` to get the stored values exactly.

napari tracks: ``tracks_napari.csv`` holds ``track_id, t, z, y, x`` (napari's Tracks data:
t the exported frame index, z, y, x voxel indices) followed by per-point properties, and
``tracks_napari.json`` the lineage ``graph`` ({child track: [parent track]}) with the
``scale`` and ``translate`` that put the layer in hours and µm (voxel centres), the frame
of the niche3d napari plugin and of the exported TIFFs opened with the same scale. napari
draws a division from the last point of the parent track to the first point of the child,
so a mother's track is cut at each of her divisions: her points after it form a new track
whose parent is the one before, beside the daughter's. ``cell_id`` keeps the niche3d cell.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from niche3d.export import (
    ExportError,
    RecordSelection,
    as_run,
    atomic_file,
    check_out_dir,
    select_records,
)
from niche3d.export.trackmate import spot_graph

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from niche3d.io import Run

__all__ = ["NAPARI_CSV", "NAPARI_JSON", "TABLES", "to_napari_tracks", "to_tables"]

TABLES: tuple[str, ...] = ("cells", "events", "metrics")
NAPARI_CSV = "tracks_napari.csv"
NAPARI_JSON = "tracks_napari.json"
_TABLE_FORMATS = ("csv", "parquet")


def _provenance(run: Run, sel: RecordSelection) -> dict[str, Any]:
    return {"store": str(run.path), "seed": run.seed, "code_version": run.code_version,
            "voxel_um": run.voxel_um, "record_hours": run.record_hours,
            "records": [int(r) for r in sel.indices]}


def select_rows(run: Run, name: str, sel: RecordSelection) -> pd.DataFrame:
    """The rows of table ``name`` that belong to the selected records: ``cells`` and
    ``metrics`` by their ``record`` column, ``events`` by time (after the record before the
    first selected one, up to and including the last selected record)."""
    df = getattr(run, name)
    if len(sel.indices) == run.n_records:
        return df
    if "record" in df.columns:
        keep = np.isin(df["record"].to_numpy(np.int64), sel.indices)
    elif "t_hours" in df.columns:
        after, until = sel.time_window(np.asarray(run.times_h, float))
        t = df["t_hours"].to_numpy(float)
        keep = (t > after) & (t <= until)
    else:
        keep = np.ones(len(df), bool)
    out = df[keep].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def to_tables(
    run_or_path: Run | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    formats: str | Iterable[str] = _TABLE_FORMATS,
    tables: str | Iterable[str] = TABLES,
    records: RecordSelection | slice | str | None = None,
    overwrite: bool = False,
    on_file: Callable[[Path], Any] | None = None,
) -> list[Path]:
    """Write the cells, events and metrics tables as CSV and/or Parquet.

    Parameters
    ----------
    run_or_path
        An opened :class:`~niche3d.io.Run` or a run store path.
    out_dir
        Output directory (made if missing).
    formats
        ``csv`` (``<name>.csv`` + ``<name>.csv-metadata.json``) and/or ``parquet``, as a
        list or a comma-separated string.
    tables
        Any of ``cells``, ``events``, ``metrics`` (list or comma-separated string).
    records
        Records whose rows are written (slice, its text ``"0:10"``, or None: all rows).
    overwrite
        Replace files of the same names.
    on_file
        Called with each file's path when it is complete.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ExportError
        An unknown format or table, an empty record selection, or files in the way
        without ``overwrite``.
    """
    fmts = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str)
                                         else map(str, formats)) if f.strip()]
    names = [t.strip() for t in (tables.split(",") if isinstance(tables, str)
                                 else map(str, tables)) if t.strip()]
    if not fmts or any(f not in _TABLE_FORMATS for f in fmts):
        raise ExportError(f"table formats must be among {', '.join(_TABLE_FORMATS)}, got {fmts}")
    unknown = [t for t in names if t not in TABLES]
    if unknown or not names:
        raise ExportError(f"tables must be among {', '.join(TABLES)}, got {names}")
    run = as_run(run_or_path)
    sel = select_records(run, records)
    files = [f"{t}.{ext}" for t in names for f in fmts
             for ext in (("csv", "csv-metadata.json") if f == "csv" else ("parquet",))]
    out = check_out_dir(out_dir, run, files, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def done(p: Path) -> None:
        written.append(p)
        if on_file is not None:
            on_file(p)

    prov = _provenance(run, sel)
    for t in names:
        df = select_rows(run, t, sel)
        units = dict(df.attrs.get("units", {}))
        if "csv" in fmts:
            for p in _write_csv(df, out / f"{t}.csv", units, t, prov):
                done(p)
        if "parquet" in fmts:
            done(_write_parquet(df, out / f"{t}.parquet", units, t, prov))
    return written


def _csvw_column(name: str, s: pd.Series, unit: str) -> dict[str, Any]:
    import pandas as pd

    col: dict[str, Any] = {"name": name, "titles": name, "schema:unitText": unit}
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in s.cat.categories]
        if any("|" in c for c in cats):
            raise ExportError(f"column {name!r} has a category with '|': {cats}")
        col["datatype"] = {"base": "string", "format": "|".join(cats)}
    elif pd.api.types.is_bool_dtype(s.dtype):
        col["datatype"] = {"base": "boolean", "format": "True|False"}
    elif pd.api.types.is_integer_dtype(s.dtype):
        col["datatype"] = "integer"
    elif pd.api.types.is_float_dtype(s.dtype):
        col["datatype"] = "double"
    else:
        col["datatype"] = "string"
    return col


def _write_csv(df: pd.DataFrame, path: Path, units: dict[str, str], table: str,
               prov: dict[str, Any]) -> list[Path]:
    meta = {
        "@context": "http://www.w3.org/ns/csvw",
        "url": path.name,
        "dc:title": f"niche3d {table} table",
        "dc:source": prov["store"],
        "null": "",
        "tableSchema": {"columns": [_csvw_column(c, df[c], units.get(c, "1")) for c in df.columns]},
        "niche3d": prov,
    }
    with atomic_file(path) as tmp:
        df.to_csv(tmp, index=False, na_rep="", lineterminator="\n")
    side = path.with_name(path.name + "-metadata.json")
    with atomic_file(side) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return [path, side]


def _write_parquet(df: pd.DataFrame, path: Path, units: dict[str, str], table: str,
                   prov: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tab = pa.Table.from_pandas(df, preserve_index=False)
    fields = [f.with_metadata({**(f.metadata or {}), b"unit": units.get(f.name, "1").encode()})
              for f in tab.schema]
    meta = dict(tab.schema.metadata or {})
    meta[b"niche3d"] = json.dumps({"table": table, **prov}).encode()
    tab = pa.Table.from_arrays(tab.columns, schema=pa.schema(fields, metadata=meta))
    with atomic_file(path) as tmp:
        pq.write_table(tab, tmp)
    return path


# ---------------------------------------------------------------------- napari tracks
def napari_tracks(run: Run, records: RecordSelection | slice | str | None = None
                  ) -> tuple[pd.DataFrame, dict[int, list[int]], dict[str, Any]]:
    """napari Tracks data of ``run``: a table (``track_id, t, z, y, x`` then properties),
    the lineage graph and the layer keywords (``scale``, ``translate``, ...).

    A track is a run of spots of one cell without a division in between
    (:func:`niche3d.export.trackmate.spot_graph`): the graph maps the first track after each
    split (the daughter's, and the mother's continuation) to the track that ends at the
    split.
    """
    import pandas as pd

    g = spot_graph(run, records)
    sel = g.selection
    n = g.n_spots
    outdeg = np.bincount(g.source, minlength=n)
    indeg = np.bincount(g.target, minlength=n)
    pred = np.full(n, -1, np.int64)
    pred[g.target] = g.source
    # a track starts at a spot without one predecessor, after a split, and at a
    # daughter's first spot (a division link, even when the mother does not go on)
    start = indeg != 1
    start[g.target] |= (outdeg[g.source] != 1) | g.division
    succ = np.full(n, -1, np.int64)
    cont = ~start[g.target]
    succ[g.source[cont]] = g.target[cont]
    starts = np.flatnonzero(start)
    track = np.full(n, -1, np.int64)
    graph: dict[int, list[int]] = {}
    frame = g.rows["frame"].to_numpy(np.int64)
    for k, s in enumerate(starts[np.lexsort((starts, frame[starts]))], 1):
        i = int(s)
        while i >= 0:
            track[i] = k
            i = int(succ[i])
    for s in starts:
        if indeg[s] == 1:
            graph[int(track[s])] = [int(track[pred[s]])]
    rows = g.rows
    v = run.voxel_um
    data: dict[str, Any] = {"track_id": track}
    data["t"] = rows["frame"].to_numpy(np.int64)
    for ax in ("z", "y", "x"):
        data[ax] = np.rint(rows[ax].to_numpy(float) / v - 0.5).astype(np.int64)
    data["cell_id"] = rows["track_id"].to_numpy(np.int64)
    for col in ("parent", "generation", "state", "bound", "donor"):
        if col in rows.columns:
            data[col] = rows[col].to_numpy() if col != "state" else rows[col].astype(str).to_numpy()
    data["record"] = rows["record"].to_numpy(np.int64)
    data["t_hours"] = rows["t"].to_numpy(float)
    table = pd.DataFrame(data).sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)
    layer = {
        "scale": [sel.frame_hours, v, v, v],
        "translate": [float(sel.times_h[0]), v / 2, v / 2, v / 2],
        "axis_labels": ["t", "z", "y", "x"],
        "units": ["hour", "micrometer", "micrometer", "micrometer"],
    }
    return table, graph, layer


def to_napari_tracks(
    run_or_path: Run | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    records: RecordSelection | slice | str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``tracks_napari.csv`` and ``tracks_napari.json`` (lineage graph, scale).

    Load them with::

        df = pd.read_csv("tracks_napari.csv"); meta = json.load(open("tracks_napari.json"))
        graph = {int(k): v for k, v in meta["graph"].items()}
        viewer.add_tracks(df[["track_id", "t", "z", "y", "x"]].to_numpy(), graph=graph,
                          features=df[meta["feature_columns"]], **meta["layer"])

    Parameters
    ----------
    run_or_path
        An opened :class:`~niche3d.io.Run` or a run store path.
    out_dir
        Output directory (made if missing).
    records
        Records to export (slice, its text ``"0:10"``, or None: all); ``t`` is the index
        of the record among them.
    overwrite
        Replace existing files.

    Returns
    -------
    list of Path
        The CSV and the JSON file.

    Raises
    ------
    ExportError
        An empty record selection, or files in the way without ``overwrite``.
    """
    run = as_run(run_or_path)
    sel = select_records(run, records)
    out = check_out_dir(out_dir, run, [NAPARI_CSV, NAPARI_JSON], overwrite)
    table, graph, layer = napari_tracks(run, sel)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / NAPARI_CSV, out / NAPARI_JSON
    with atomic_file(csv_path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    meta = {
        "format": "napari tracks (niche3d export)",
        "data_columns": ["track_id", "t", "z", "y", "x"],
        "feature_columns": [c for c in table.columns if c not in ("track_id", "t", "z", "y", "x")],
        "graph": {str(k): v for k, v in sorted(graph.items())},
        "layer": layer,
        "note": "t: frame index (store record records[t]); z, y, x: voxel indices; "
                "scale and translate give hours and µm at voxel centres",
        **_provenance(run, sel),
    }
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [csv_path, json_path]

