"""Cell tracks as a TrackMate XML file (Fiji: Plugins > Tracking > Load a TrackMate file).

Spots are the cells on the lattice, one per cell per exported record (a cell in the blood
at a record has no position and no spot). Edges link consecutive spots of one cell, across
records it spent in blood (a gap-closing edge), and each division links the mother's last
spot before it to the daughter's first spot, so TrackMate sees a split; a TrackMate track
is a lineage tree. The file holds what ``fiji.plugin.trackmate.io.TmXmlReader`` reads;
positions follow TrackMate's pixel convention (``POSITION_X = x_um - voxel_um / 2``, so
spots sit on the voxel centres of the exported TIFF), times are hours. See docs/export.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from niche3d.export import (
    ExportError,
    RecordSelection,
    as_run,
    atomic_file,
    check_out_dir,
    select_records,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from niche3d.io import Run

__all__ = ["TRACKMATE_FILE", "SpotGraph", "spot_graph", "to_trackmate_xml"]

#: the file name :func:`to_trackmate_xml` writes
TRACKMATE_FILE = "tracks_trackmate.xml"
#: the TrackMate file version written (TrackMate 7+ reads files from 2.1.0 on)
TRACKMATE_VERSION = "7.14.0"

#: extra spot features: feature -> (cells column, name, short name)
_CELL_FEATURES = {
    "CELL_ID": ("track_id", "niche3d cell id", "Cell"),
    "PARENT_ID": ("parent", "Mother cell id", "Mother"),
    "GENERATION": ("generation", "Generation", "Gen."),
    "STATE": ("state", "State code", "State"),
    "RECORD": ("record", "Store record", "Record"),
    "BOUND": ("bound", "Bound to niche", "Bound"),
    "DONOR": ("donor", "Donor cell", "Donor"),
    "DIVISIONS": ("divisions", "Divisions so far", "Div."),
}

#: feature declarations (feature, name, short name, dimension, isint)
_F = tuple[str, str, str, str, bool]
_SPOT_FEATURES: list[_F] = [
    ("QUALITY", "Quality", "Quality", "QUALITY", False),
    ("POSITION_X", "X", "X", "POSITION", False), ("POSITION_Y", "Y", "Y", "POSITION", False),
    ("POSITION_Z", "Z", "Z", "POSITION", False), ("POSITION_T", "T", "T", "TIME", False),
    ("FRAME", "Frame", "Frame", "NONE", True), ("RADIUS", "Radius", "R", "LENGTH", False),
    ("VISIBILITY", "Visibility", "Visibility", "NONE", True)]
_EDGE_FEATURES: list[_F] = [
    ("SPOT_SOURCE_ID", "Source spot ID", "Source ID", "NONE", True),
    ("SPOT_TARGET_ID", "Target spot ID", "Target ID", "NONE", True),
    ("LINK_COST", "Edge cost", "Cost", "COST", False),
    ("EDGE_TIME", "Edge time", "Edge T", "TIME", False),
    ("DISPLACEMENT", "Displacement", "Disp.", "LENGTH", False),
    ("DIVISION", "Division link", "Div.", "NONE", True)]
_TRACK_FEATURES: list[_F] = [
    ("TRACK_INDEX", "Track index", "Index", "NONE", True),
    ("TRACK_ID", "Track ID", "ID", "NONE", True),
    ("NUMBER_SPOTS", "Number of spots in track", "N spots", "NONE", True),
    ("NUMBER_GAPS", "Number of gaps", "N gaps", "NONE", True),
    ("NUMBER_SPLITS", "Number of split events", "N splits", "NONE", True),
    ("NUMBER_MERGES", "Number of merge events", "N merges", "NONE", True),
    ("TRACK_START", "Track start", "Track start", "TIME", False),
    ("TRACK_STOP", "Track stop", "Track stop", "TIME", False),
    ("TRACK_DURATION", "Track duration", "Duration", "TIME", False),
    ("ROOT_CELL_ID", "Founding cell id", "Root cell", "NONE", True)]


@dataclass(frozen=True)
class SpotGraph:
    """Spots (cells on the lattice at exported records) and the links between them.

    Attributes
    ----------
    rows
        The ``run.cells`` rows of the spots; spot ``i`` is row ``i`` (sorted by frame, then
        cell id), with a column ``frame``.
    source, target
        Edge endpoints (spot indices); the source is always in an earlier frame.
    division
        Per edge: True for a division link (mother's spot to daughter's first spot).
    selection
        The exported records.
    """

    rows: pd.DataFrame
    source: np.ndarray
    target: np.ndarray
    division: np.ndarray
    selection: RecordSelection

    @property
    def n_spots(self) -> int:
        """Number of spots."""
        return len(self.rows)

    def components(self) -> np.ndarray:
        """Connected component (lineage tree) label of every spot."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.n_spots
        adj = coo_matrix((np.ones(self.source.size), (self.source, self.target)), shape=(n, n))
        return connected_components(adj, directed=True, connection="weak")[1]


def spot_graph(run: Run, records: RecordSelection | slice | str | None = None) -> SpotGraph:
    """Build the spots and edges of ``run``'s cells over the selected records.

    A division (``events`` kind ``division``: ``cell`` mother, ``other`` daughter,
    ``t_hours``; the daughter's ``parent`` and ``birth_hours`` in ``cells`` for stores
    without events) links the latest spot of the mother taken before the division time to
    the daughter's first spot. A mother with no such spot (born and divided between two
    exported records, or before the first one) passes the link on to her own mother, and
    so on; a daughter with no recorded ancestor starts a lineage of her own.

    Parameters
    ----------
    run
        An opened run.
    records
        The records to use (see :func:`niche3d.export.select_records`).

    Returns
    -------
    SpotGraph
    """
    sel = select_records(run, records)
    cells = run.cells
    for col in ("record", "t", "track_id", "z", "y", "x"):
        if col not in cells.columns:
            raise ValueError(f"{run.path}: the cells table lacks column {col!r}")
    frame = sel.frame_of(cells["record"].to_numpy(dtype=np.int64))
    on = (frame >= 0) & np.isfinite(cells["z"].to_numpy(dtype=float))
    rows = cells[on].copy()
    rows["frame"] = frame[on]
    rows = rows.sort_values(["frame", "track_id"], kind="stable").reset_index(drop=True)
    cell = rows["track_id"].to_numpy(dtype=np.int64)
    fr = rows["frame"].to_numpy(dtype=np.int64)
    t = rows["t"].to_numpy(dtype=float)

    # continuation edges: consecutive spots of one cell
    order = np.lexsort((fr, cell))
    same = cell[order[1:]] == cell[order[:-1]]
    src = [order[:-1][same]]
    dst = [order[1:][same]]

    # division edges
    spots_of: dict[int, np.ndarray] = {}
    if len(order):
        breaks = np.flatnonzero(np.diff(cell[order])) + 1
        for grp in np.split(order, breaks):
            spots_of[int(cell[grp[0]])] = grp  # in frame order
    parent_of = _parents(run, cells)
    div_src, div_dst = [], []
    for c, grp in spots_of.items():
        first = int(grp[0])
        s = _division_source(c, fr[first], parent_of, spots_of, fr, t)
        if s is not None:
            div_src.append(s)
            div_dst.append(first)
    source = np.concatenate([*src, np.asarray(div_src, np.int64)]).astype(np.int64)
    target = np.concatenate([*dst, np.asarray(div_dst, np.int64)]).astype(np.int64)
    division = np.zeros(source.size, bool)
    division[source.size - len(div_src):] = True
    return SpotGraph(rows=rows, source=source, target=target, division=division, selection=sel)


def _parents(run: Run, cells: pd.DataFrame) -> dict[int, tuple[int, float]]:
    """daughter id -> (mother id, division time in h), from division events, completed
    from the cells table's ``parent`` and ``birth_hours``."""

    def num(df: pd.DataFrame, col: str) -> np.ndarray:  # nullable integers: NA -> NaN
        return df[col].to_numpy(dtype=float, na_value=np.nan)

    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if {"parent", "birth_hours"} <= set(cells.columns):
        first = cells.drop_duplicates("track_id")
        pairs.append((num(first, "track_id"), num(first, "parent"), num(first, "birth_hours")))
    ev = run.events
    if len(ev) and {"kind", "cell", "other", "t_hours"} <= set(ev.columns):
        div = ev[ev["kind"].astype(str) == "division"]
        pairs.append((num(div, "other"), num(div, "cell"), num(div, "t_hours")))
    out: dict[int, tuple[int, float]] = {}
    for child, mother, when in pairs:  # events last: they win
        ok = np.isfinite(child) & np.isfinite(mother) & (child >= 0) & (mother >= 0) & (
            child != mother)
        for c, m, w in zip(child[ok], mother[ok], when[ok], strict=True):
            out[int(c)] = (int(m), float(w))
    return out


def _division_source(cell: int, first_frame: int, parent_of: dict[int, tuple[int, float]],
                     spots_of: dict[int, np.ndarray], fr: np.ndarray, t: np.ndarray) -> int | None:
    """The spot a cell's first spot descends from: the latest spot of its nearest recorded
    ancestor taken before the division and in an earlier frame; None for a lineage root."""
    cur, seen = cell, {cell}
    while cur in parent_of:
        mother, t_div = parent_of[cur]
        if mother in seen:  # a malformed lineage loop: stop rather than spin
            return None
        seen.add(mother)
        grp = spots_of.get(mother)
        if grp is not None:
            ok = grp[(fr[grp] < first_frame) & (t[grp] < t_div)]
            if ok.size:
                return int(ok[-1])
        cur = mother
    return None


# ---------------------------------------------------------------------- the XML file
def _num(x: float) -> str:
    """A number as Java's ``Double.valueOf`` reads it (integers without a fraction)."""
    x = float(x)
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)


def _features(kind: str, items: list[_F]) -> str:
    lines = [f"      <{kind}>"]
    for feature, name, short, dim, isint in items:
        lines.append(f'        <Feature feature="{feature}" name={quoteattr(name)} '
                     f'shortname={quoteattr(short)} dimension="{dim}" '
                     f'isint="{"true" if isint else "false"}" />')
    lines.append(f"      </{kind}>")
    return "\n".join(lines)


def to_trackmate_xml(
    run_or_path: Run | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    records: RecordSelection | slice | str | None = None,
    image: str | None = "labels_tissue.tif",
    overwrite: bool = False,
) -> Path:
    """Write the cell tracks as ``tracks_trackmate.xml`` in ``out_dir``.

    Parameters
    ----------
    run_or_path
        An opened :class:`~niche3d.io.Run` or a run store path.
    out_dir
        Output directory (made if missing).
    records
        Records to export (slice, its text ``"0:10"``, or None: all); TrackMate frame
        ``i`` is the ``i``-th selected record.
    image
        File name (beside the XML) of the image TrackMate opens under the tracks, such as
        the ``labels_tissue.tif`` of the TIFF export; None: no image (TrackMate then shows
        the tracks on an empty image of the lattice's size).
    overwrite
        Replace an existing file.

    Returns
    -------
    Path
        The XML file.

    Raises
    ------
    ExportError
        An empty record selection, an existing file without ``overwrite``, or an
        ``image`` that is not a plain file name.
    """
    run = as_run(run_or_path)
    sel = select_records(run, records)
    out = check_out_dir(out_dir, run, [TRACKMATE_FILE], overwrite)
    if image is not None and (not image or os.sep in image or "/" in image):
        raise ExportError(f"image must be a file name beside the XML, got {image!r}")
    g = spot_graph(run, sel)
    out.mkdir(parents=True, exist_ok=True)
    path = out / TRACKMATE_FILE
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        _write_xml(fh, run, g, image)
    return path


def _write_xml(fh: IO[str], run: Run, g: SpotGraph, image: str | None) -> None:
    import pandas as pd

    sel = g.selection
    v = run.voxel_um
    rows = g.rows
    n = g.n_spots
    extra = {f: col for f, (col, _, _) in _CELL_FEATURES.items() if col in rows.columns}
    state_names: list[str] = []
    cols: dict[str, np.ndarray] = {}
    for f, col in extra.items():
        s = rows[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            state_names = [str(c) for c in s.cat.categories]
            cols[f] = s.cat.codes.to_numpy(np.int64)
        else:
            cols[f] = s.to_numpy(dtype=float, na_value=np.nan)
    pos = {ax: rows[ax].to_numpy(float) - v / 2 for ax in ("x", "y", "z")}
    t = rows["t"].to_numpy(float)
    fr = rows["frame"].to_numpy(np.int64)
    w = fh.write
    w('<?xml version="1.0" encoding="UTF-8"?>\n')
    w(f'<TrackMate version="{TRACKMATE_VERSION}">\n')
    log = [f"Exported by niche3d {run.code_version} from {run.path} (seed {run.seed}).",
           f"{sel.describe()}: TrackMate frame i is store record {int(sel.indices[0])} + "
           f"i * {sel.step}; times in hours.",
           f"Positions: POSITION_X = x_um - {v / 2:g} (TrackMate's pixel centres at "
           f"i * {v:g} um; voxel {v:g} um).",
           "Spot feature STATE codes: " + ", ".join(f"{i} {s}" for i, s in enumerate(state_names)),
           "Edges with DIVISION = 1 link a mother's last spot before a division to the "
           "daughter's first spot."]
    w(f"  <Log>{escape(chr(10).join(log))}</Log>\n")
    w('  <Model spatialunits="µm" timeunits="h">\n    <FeatureDeclarations>\n')
    spot_feats = [*_SPOT_FEATURES, *((f, *_CELL_FEATURES[f][1:], "NONE", True) for f in extra)]
    w(_features("SpotFeatures", spot_feats) + "\n")
    w(_features("EdgeFeatures", _EDGE_FEATURES) + "\n")
    w(_features("TrackFeatures", _TRACK_FEATURES) + "\n")
    w("    </FeatureDeclarations>\n")
    w(f'    <AllSpots nspots="{n}">\n')
    bounds = np.searchsorted(fr, np.arange(sel.n + 1))
    radius = _num(v / 2)
    names = rows["track_id"].to_numpy(np.int64)
    for f in range(sel.n):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        if lo == hi:
            w(f'      <SpotsInFrame frame="{f}" />\n')
            continue
        w(f'      <SpotsInFrame frame="{f}">\n')
        for i in range(lo, hi):
            feats = "".join(f' {k}="{_num(c[i])}"' for k, c in cols.items())
            w(f'        <Spot ID="{i}" name="cell {int(names[i])}" QUALITY="1" '
              f'POSITION_X="{_num(pos["x"][i])}" POSITION_Y="{_num(pos["y"][i])}" '
              f'POSITION_Z="{_num(pos["z"][i])}" POSITION_T="{_num(t[i])}" FRAME="{f}" '
              f'RADIUS="{radius}" VISIBILITY="1"{feats} />\n')
        w("      </SpotsInFrame>\n")
    w("    </AllSpots>\n")
    track_ids = _write_tracks(w, g, pos, t, fr, names)
    w("    <FilteredTracks>\n")
    for k in track_ids:
        w(f'      <TrackID TRACK_ID="{k}" />\n')
    w("    </FilteredTracks>\n  </Model>\n")
    _write_settings(w, run, sel, image)
    w('  <GUIState state="ConfigureViews" />\n  <DisplaySettings></DisplaySettings>\n')
    w("</TrackMate>\n")


def _write_tracks(w: Any, g: SpotGraph, pos: dict[str, np.ndarray], t: np.ndarray,
                  fr: np.ndarray, names: np.ndarray) -> list[int]:
    """Write ``AllTracks`` (one Track per lineage tree with at least one edge); returns
    the track ids."""
    w("    <AllTracks>\n")
    if g.source.size == 0:
        w("    </AllTracks>\n")
        return []
    comp = g.components()
    edge_comp = comp[g.source]
    outdeg = np.bincount(g.source, minlength=g.n_spots)
    indeg = np.bincount(g.target, minlength=g.n_spots)
    eorder = np.argsort(edge_comp, kind="stable")
    _, starts = np.unique(edge_comp[eorder], return_index=True)
    ends = [*starts[1:], eorder.size]
    # tracks numbered in order of their first spot
    firsts = np.asarray([min(g.source[eorder[a:b]].min(), g.target[eorder[a:b]].min())
                         for a, b in zip(starts, ends, strict=True)])
    ids: list[int] = []
    for k, j in enumerate(np.argsort(firsts, kind="stable")):
        e = eorder[starts[j]:ends[j]]
        spots = np.unique(np.concatenate([g.source[e], g.target[e]]))
        root = spots[indeg[spots] == 0]
        root_cell = int(names[root[0]]) if root.size else int(names[spots[0]])
        gaps = int(np.count_nonzero(fr[g.target[e]] - fr[g.source[e]] > 1))
        w(f'      <Track name="Lineage_{root_cell}" TRACK_ID="{k}" TRACK_INDEX="{k}" '
          f'NUMBER_SPOTS="{spots.size}" NUMBER_GAPS="{gaps}" '
          f'NUMBER_SPLITS="{int(np.count_nonzero(outdeg[spots] > 1))}" '
          f'NUMBER_MERGES="{int(np.count_nonzero(indeg[spots] > 1))}" '
          f'TRACK_START="{_num(t[spots].min())}" TRACK_STOP="{_num(t[spots].max())}" '
          f'TRACK_DURATION="{_num(t[spots].max() - t[spots].min())}" '
          f'ROOT_CELL_ID="{root_cell}">\n')
        for i in e[np.lexsort((g.target[e], g.source[e]))]:
            s, d = int(g.source[i]), int(g.target[i])
            disp = float(np.sqrt(sum((pos[a][d] - pos[a][s]) ** 2 for a in "xyz")))
            w(f'        <Edge SPOT_SOURCE_ID="{s}" SPOT_TARGET_ID="{d}" LINK_COST="0" '
              f'EDGE_TIME="{_num((t[s] + t[d]) / 2)}" DISPLACEMENT="{_num(disp)}" '
              f'DIVISION="{int(g.division[i])}" />\n')
        w("      </Track>\n")
        ids.append(k)
    w("    </AllTracks>\n")
    return ids


def _write_settings(w: Any, run: Run, sel: RecordSelection, image: str | None) -> None:
    nz, ny, nx = run.shape
    v = _num(run.voxel_um)
    w(f"""  <Settings>
    <ImageData filename={quoteattr(image or "")} folder="" width="{nx}" height="{ny}" \
nslices="{nz}" nframes="{sel.n}" pixelwidth="{v}" pixelheight="{v}" voxeldepth="{v}" \
timeinterval="{_num(sel.frame_hours)}" />
    <BasicSettings xstart="0" xend="{nx - 1}" ystart="0" yend="{ny - 1}" zstart="0" \
zend="{nz - 1}" tstart="0" tend="{sel.n - 1}" />
    <DetectorSettings DETECTOR_NAME="MANUAL_DETECTOR" RADIUS="{_num(run.voxel_um / 2)}" />
    <InitialSpotFilter feature="QUALITY" value="0.0" isabove="true" />
    <SpotFilterCollection />
    <TrackerSettings TRACKER_NAME="MANUAL_TRACKER" />
    <TrackFilterCollection />
    <AnalyzerCollection>
      <SpotAnalyzers />
      <EdgeAnalyzers />
      <TrackAnalyzers />
    </AnalyzerCollection>
  </Settings>
""")
