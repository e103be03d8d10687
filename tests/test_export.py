"""niche3d export: ImageJ TIFF, TrackMate XML, napari tracks, CSV and Parquet tables.

Every format is read back with the tools a scientist would use (tifffile, a reader that
enforces what TrackMate's ``TmXmlReader`` requires plus ``pytrackmate``, napari's Tracks
layer, pandas and pyarrow) and compared with what ``open_run`` gives for the same store.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from niche3d.export import ExportError, atomic_file, export_run, parse_records
from niche3d.export.cli import add_parser, cmd_export
from niche3d.export.tables import to_napari_tracks, to_tables
from niche3d.export.tiff import to_imagej_tiff
from niche3d.export.trackmate import spot_graph, to_trackmate_xml
from niche3d.io import open_run

ALL_FILES = {
    "field_cxcl12.tif", "field_scf.tif", "labels_tissue.tif", "labels_niche.tif",
    "tracks_trackmate.xml", "tracks_napari.csv", "tracks_napari.json",
    "cells.csv", "cells.csv-metadata.json", "cells.parquet",
    "events.csv", "events.csv-metadata.json", "events.parquet",
    "metrics.csv", "metrics.csv-metadata.json", "metrics.parquet",
}


# ---------------------------------------------------------------------- fixtures
def _simulate(out: Path, scenario, overrides: dict) -> Path:
    from niche3d.simulation import Simulation

    with Simulation(scenario.with_overrides(overrides), out) as sim:
        sim.run()
    return out


@pytest.fixture(scope="module")
def run(tiny_run):
    return open_run(tiny_run)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("export") / "all"
    return out, export_run(tiny_run, out)


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, tiny_scenario) -> Path:
    """Fields stored at every 2nd record only: records 1 and 3 hold NaN."""
    return _simulate(tmp_path_factory.mktemp("runs") / "sparse.zarr", tiny_scenario,
                     {"output.fields_every_records": 2})


@pytest.fixture(scope="module")
def occupancy_run(tmp_path_factory, tiny_scenario) -> Path:
    """No fields stored: the image is the cell occupancy."""
    return _simulate(tmp_path_factory.mktemp("runs") / "occ.zarr", tiny_scenario,
                     {"output.fields": False})


# ---------------------------------------------------------------------- TIFF
def _ij(path: Path) -> tuple[np.ndarray, dict, object]:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        assert tf.is_imagej
        s = tf.series[0]
        assert s.axes == "TZYX"
        xres = tf.pages[0].tags["XResolution"].value
        yres = tf.pages[0].tags["YResolution"].value
        return tf.asarray(), dict(tf.imagej_metadata), (xres, yres)


def test_tiff_fields_and_labels_read_back_exactly(run, exported) -> None:
    out, _ = exported
    v, rh = run.voxel_um, run.record_hours
    for name in run.field_names:
        data, md, (xres, yres) = _ij(out / f"field_{name}.tif")
        want = run.fields[name].values
        assert data.dtype == np.float32 and data.shape == want.shape == (run.n_records, *run.shape)
        assert np.array_equal(data, want)
        assert xres[0] / xres[1] == pytest.approx(1 / v, rel=1e-12)
        assert yres[0] / yres[1] == pytest.approx(1 / v, rel=1e-12)
        assert md["spacing"] == v and md["unit"] == "micron"
        assert md["finterval"] == rh * 3600 and md["tunit"] == "sec"
        assert md["fps"] == pytest.approx(1 / (rh * 3600))
        assert (md["min"], md["max"]) == tuple(run.fields[name].attrs["window"])
        assert md["frames"] == run.n_records and md["slices"] == run.shape[0]
        assert md["Properties"]["niche3d_unit"] == run.fields[name].attrs["units"]
    from niche3d.tissue.codes import TISSUE_COLORS

    tissue, md, _ = _ij(out / "labels_tissue.tif")
    assert tissue.dtype == np.uint8 and np.array_equal(tissue, run.tissue.values)
    lut = np.asarray(md["LUTs"]).reshape(-1, 3, 256)[0]  # one (3, 256) table: R, G, B
    for code, rgba in TISSUE_COLORS.items():
        assert tuple(lut[:, int(code)]) == tuple(round(c * 255) for c in rgba[:3])
    assert "1 marrow" in md["Info"] and md["finterval"] == rh * 3600
    niche, md, _ = _ij(out / "labels_niche.tif")
    assert niche.dtype == np.uint8 and np.array_equal(niche, run.niche.values)
    # the niche_sites metric counts the sites of each record's map
    assert np.array_equal((niche > 0).sum(axis=(1, 2, 3)), run.metrics["niche_sites"].to_numpy())


def test_tiff_records_slice_sets_frames_and_interval(run, tmp_path) -> None:
    files = to_imagej_tiff(run, tmp_path, records="1:5:2", fields=["scf", "tissue"])
    assert [p.name for p in files] == ["field_scf.tif", "labels_tissue.tif"]
    data, md, _ = _ij(tmp_path / "field_scf.tif")
    assert np.array_equal(data, run.fields["scf"].values[[1, 3]])
    assert md["finterval"] == 2 * run.record_hours * 3600
    assert md["Properties"]["niche3d_records"] == "1,3"
    assert "record times (h): 12, 36" in md["Info"]


def test_tiff_unstored_field_records_are_nan_frames(sparse_run, tmp_path) -> None:
    r = open_run(sparse_run)
    to_imagej_tiff(r, tmp_path, fields=["cxcl12"])
    data, md, _ = _ij(tmp_path / "field_cxcl12.tif")
    want = r.fields["cxcl12"].values
    assert np.isnan(data[[1, 3]]).all() and np.isfinite(data[[0, 2, 4]]).all()
    assert np.array_equal(data, want, equal_nan=True)
    assert "records 1, 3 hold NaN" in md["Info"]


def test_tiff_of_a_run_without_fields_is_its_occupancy(occupancy_run, tmp_path) -> None:
    r = open_run(occupancy_run)
    files = export_run(r, tmp_path, "tiff")
    assert [p.name for p in files] == ["labels_tissue.tif", "labels_niche.tif", "occupancy.tif"]
    occ, md, _ = _ij(tmp_path / "occupancy.tif")
    assert occ.dtype == np.uint8 and np.array_equal(occ, r.occupancy.values)
    # one occupied voxel per cell on the lattice at each record
    on = r.cells[np.isfinite(r.cells["z"].to_numpy(float))]
    assert occ.sum(axis=(1, 2, 3)).tolist() == on.groupby("record").size().tolist()
    assert md["spacing"] == r.voxel_um


def test_tiff_is_written_page_by_page(run, tmp_path, monkeypatch) -> None:
    """tifffile gets an iterator of 2D planes, never the 4D array."""
    import tifffile

    real = tifffile.imwrite
    seen: list[tuple[int, ...]] = []

    def spy(path, data, **kw):
        assert not isinstance(data, np.ndarray)

        def planes():
            for page in data:
                seen.append(page.shape)
                yield page
        return real(path, planes(), **kw)

    monkeypatch.setattr(tifffile, "imwrite", spy)
    to_imagej_tiff(run, tmp_path, fields="tissue")
    assert seen == [run.shape[1:]] * (run.n_records * run.shape[0])


# ---------------------------------------------------------------------- TrackMate
#: Java literals as ``Integer.parseInt`` / ``Double.valueOf`` (jdom getIntValue,
#: getDoubleValue) accept them
_JAVA_INT = re.compile(r"^\s*[+-]?\d+\s*$")
_JAVA_DOUBLE = re.compile(r"^\s*[+-]?(NaN|Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fFdD]?)\s*$")
#: fiji.plugin.trackmate.Dimension
_DIMENSIONS = {"NONE", "QUALITY", "COST", "INTENSITY", "INTENSITY_SQUARED", "POSITION",
               "VELOCITY", "LENGTH", "AREA", "VOLUME", "TIME", "ANGLE", "RATE", "ANGLE_RATE",
               "STRING"}
_JDOM_BOOL = {"true", "false", "on", "off", "yes", "no", "1", "0"}
#: Spot.FEATURES: what every TrackMate spot carries
_SPOT_BASICS = ("QUALITY", "POSITION_X", "POSITION_Y", "POSITION_Z", "POSITION_T", "FRAME",
                "RADIUS", "VISIBILITY")


def _req(cond: bool, rule: str, detail: str) -> None:
    if not cond:
        raise AssertionError(f"[{rule}] {detail}")


def _int(el: ET.Element, name: str, rule: str) -> int:
    val = el.get(name)
    _req(val is not None, rule, f"<{el.tag}> lacks attribute {name}")
    _req(bool(_JAVA_INT.match(val)) and -2**31 <= int(val) < 2**31, rule,
         f"<{el.tag} {name}={val!r}> is not a Java int")
    return int(val)


def _double(el: ET.Element, name: str, rule: str) -> float:
    val = el.get(name)
    _req(val is not None, rule, f"<{el.tag}> lacks attribute {name}")
    _req(bool(_JAVA_DOUBLE.match(val)), rule, f"<{el.tag} {name}={val!r}> is not a Java double")
    return float(val.strip().rstrip("fFdD").replace("Infinity", "inf"))


def _child(el: ET.Element, tag: str, rule: str) -> ET.Element:
    c = el.find(tag)
    _req(c is not None, rule, f"<{el.tag}> has no <{tag}>")
    return c


@dataclass
class TrackMateFile:
    spots: dict[int, dict[str, float]]
    names: dict[int, str]
    frames: list[int]
    edges: list[dict[str, float]]
    tracks: dict[int, list[dict[str, float]]]
    track_attrs: dict[int, dict[str, float]]
    image: dict[str, float | str] = field(default_factory=dict)


def read_trackmate(path: Path, *, image_must_exist: bool = True) -> TrackMateFile:
    """Read a TrackMate XML file enforcing what Fiji's ``TmXmlReader`` (and
    ``LoadTrackMatePlugIn``) require; each rule is named after the Java code it mirrors."""
    root = ET.parse(path).getroot()  # TmXmlReader(File): SAXBuilder.build
    _req(root.tag == "TrackMate", "TmXmlKeys.ROOT_ELEMENT_KEY", f"root is <{root.tag}>")
    version = root.get("version", "")
    _req(bool(re.match(r"^\d+(\.\d+)*", version))
         and tuple(int(x) for x in re.findall(r"\d+", version)[:3]) >= (2, 1, 0),
         "LoadTrackMatePlugIn.run (VersionUtils.compare >= 2.1.0)", f"version {version!r}")
    model = _child(root, "Model", "TmXmlReader.getModel")
    for a in ("spatialunits", "timeunits"):
        _req(model.get(a) is not None, "TmXmlReader.getModel", f"<Model> lacks {a}")
    # readFeatureDeclarations / readSingleFeatureDeclaration
    decl = _child(model, "FeatureDeclarations", "TmXmlReader.readFeatureDeclarations")
    declared: dict[str, dict[str, bool]] = {}
    for kind in ("SpotFeatures", "EdgeFeatures", "TrackFeatures"):
        feats = _child(decl, kind, "TmXmlReader.readFeatureDeclarations")
        declared[kind] = {}
        for f in feats.findall("Feature"):
            rule = "TmXmlReader.readSingleFeatureDeclaration"
            for a in ("feature", "name", "shortname"):
                _req(f.get(a) is not None, rule, f"a {kind} <Feature> lacks {a}")
            _req(f.get("dimension") in _DIMENSIONS, rule + " (Dimension.valueOf)",
                 f"{f.get('feature')}: dimension {f.get('dimension')!r}")
            _req(str(f.get("isint", "")).lower() in _JDOM_BOOL, rule + " (isint)",
                 f"{f.get('feature')}: isint {f.get('isint')!r}")
            declared[kind][f.get("feature")] = f.get("isint").lower() in ("true", "on", "yes", "1")
    # getSpots / createSpotFrom
    rule = "TmXmlReader.getSpots"
    allspots = _child(model, "AllSpots", rule)
    nspots = _int(allspots, "nspots", rule)
    spots: dict[int, dict[str, float]] = {}
    names: dict[int, str] = {}
    frames = []
    for fr in allspots.findall("SpotsInFrame"):
        frame = _int(fr, "frame", rule)
        frames.append(frame)
        for sp in fr.findall("Spot"):
            sid = _int(sp, "ID", "TmXmlReader.createSpotFrom")
            _req(sid not in spots, "TmXmlReader.getSpots (cache.put)", f"duplicate spot ID {sid}")
            feats = {}
            for a in sp.attrib:
                if a not in ("ID", "name"):
                    feats[a] = _double(sp, a, "TmXmlReader.createSpotFrom (Double.valueOf)")
            for a in _SPOT_BASICS:
                _req(a in feats, "Spot.FEATURES", f"spot {sid} lacks {a}")
            _req(feats["FRAME"] == frame, "SpotCollection.fromMap",
                 f"spot {sid} has FRAME {feats['FRAME']} in SpotsInFrame {frame}")
            spots[sid] = feats
            names[sid] = sp.get("name", f"ID{sid}")
    _req(nspots == len(spots), "AllSpots nspots", f"nspots={nspots}, {len(spots)} spots")
    _req(frames == list(range(len(frames))), "frames", f"frames {frames} are not 0, 1, 2, ...")
    # readTracks / readTrackFeatures
    rule = "TmXmlReader.readTracks"
    alltracks = _child(model, "AllTracks", rule)
    tracks: dict[int, list[dict[str, float]]] = {}
    track_attrs: dict[int, dict[str, float]] = {}
    undirected: set[frozenset[int]] = set()
    edges = []
    spot_track: dict[int, int] = {}
    for tr in alltracks.findall("Track"):
        tid = _int(tr, "TRACK_ID", rule)
        _req(tid not in tracks, "TrackModel.from", f"two tracks with TRACK_ID {tid}")
        track_attrs[tid] = {a: _double(tr, a, "TmXmlReader.readTrackFeatures")
                            for a in tr.attrib if a != "name"}
        tracks[tid] = []
        for e in tr.findall("Edge"):
            s = _int(e, "SPOT_SOURCE_ID", rule)
            t = _int(e, "SPOT_TARGET_ID", rule)
            _req(s in spots, rule, f"Unknown spot ID: {s}")
            _req(t in spots, rule, f"Unknown spot ID: {t}")
            _req(s != t, rule, f"Bad link for track {tid}. Source = Target with ID: {s}")
            _req(frozenset((s, t)) not in undirected, rule + " (SimpleWeightedGraph.addEdge)",
                 f"Bad edge found for track {tid}: {s}-{t} twice")
            undirected.add(frozenset((s, t)))
            ed = {"SPOT_SOURCE_ID": s, "SPOT_TARGET_ID": t}
            for feat, isint in declared["EdgeFeatures"].items():
                if feat in e.attrib and feat not in ed:
                    ed[feat] = (_int if isint else _double)(e, feat, rule + " (edge features)")
            _req(spots[s]["FRAME"] < spots[t]["FRAME"], "edge direction",
                 f"edge {s}->{t} does not go forward in time")
            for sp in (s, t):
                _req(spot_track.setdefault(sp, tid) == tid, "TrackModel.from",
                     f"spot {sp} is in tracks {spot_track[sp]} and {tid}")
            tracks[tid].append(ed)
            edges.append(ed)
    for tid, eds in tracks.items():  # a Track is one connected component
        members = {eds[0]["SPOT_SOURCE_ID"]} if eds else set()
        grew = True
        while grew:
            grew = False
            for ed in eds:
                a, b = ed["SPOT_SOURCE_ID"], ed["SPOT_TARGET_ID"]
                if (a in members) != (b in members):
                    members |= {a, b}
                    grew = True
        _req(eds and members == {x for ed in eds for x in (ed["SPOT_SOURCE_ID"],
                                                            ed["SPOT_TARGET_ID"])},
             "TrackModel.from", f"track {tid} is not one connected component")
    # readFilteredTrackIDs
    rule = "TmXmlReader.readFilteredTrackIDs"
    filt = _child(model, "FilteredTracks", rule)
    for el in filt.findall("TrackID"):
        _req(_int(el, "TRACK_ID", rule) in tracks, rule,
             f"Invalid filtered track index: {el.get('TRACK_ID')}")
    # readSettings
    settings = _child(root, "Settings", "TmXmlReader.readSettings")
    img = _child(settings, "ImageData", "TmXmlReader.getImage")
    fname = img.get("filename") or ""
    if image_must_exist:  # else TrackMate logs these and shows the tracks on an empty image
        _req(bool(fname), "TmXmlReader.getImage", "Cannot find image file name in xml file")
        folder = img.get("folder") or str(path.parent)
        _req((Path(folder) / fname).is_file() or (path.parent / fname).is_file(),
             "TmXmlReader.getImage", f"Cannot read image file: {fname}")
    image: dict[str, float | str] = {"filename": fname}
    rule = "TmXmlReader.getBaseSettings"
    for a in ("pixelwidth", "pixelheight", "voxeldepth", "timeinterval"):
        image[a] = _double(img, a, rule)
    for a in ("width", "height", "nslices", "nframes"):
        image[a] = _int(img, a, rule)
    basic = settings.find("BasicSettings")
    if basic is not None:
        for a in ("zstart", "zend", "tstart", "tend"):
            _int(basic, a, rule)
    det = _child(settings, "DetectorSettings", "TmXmlReader.getDetectorSettings")
    _req(det.get("DETECTOR_NAME") == "MANUAL_DETECTOR", "TmXmlReader.getDetectorSettings",
         f"detector key {det.get('DETECTOR_NAME')!r}")
    _double(det, "RADIUS", "ManualDetectorFactory.unmarshall")
    trk = _child(settings, "TrackerSettings", "TmXmlReader.getTrackerSettings")
    _req(trk.get("TRACKER_NAME") == "MANUAL_TRACKER", "TmXmlReader.getTrackerSettings",
         f"tracker key {trk.get('TRACKER_NAME')!r}")
    init = _child(settings, "InitialSpotFilter", "TmXmlReader.getInitialFilter")
    _req(init.get("feature") is not None, "TmXmlReader.getInitialFilter", "no feature")
    _double(init, "value", "TmXmlReader.getInitialFilter")
    _req(str(init.get("isabove")).lower() in _JDOM_BOOL, "TmXmlReader.getInitialFilter",
         "isabove is not a boolean")
    _child(settings, "SpotFilterCollection", "TmXmlReader.getSpotFeatureFilters")
    _child(settings, "TrackFilterCollection", "TmXmlReader.getTrackFeatureFilters")
    an = _child(settings, "AnalyzerCollection", "TmXmlReader.readAnalyzers")
    for kind in ("SpotAnalyzers", "EdgeAnalyzers", "TrackAnalyzers"):
        _child(an, kind, "TmXmlReader.readAnalyzers")
    gui = _child(root, "GUIState", "TmXmlReader.getGUIState")
    _req(gui.get("state") is not None, "TmXmlReader.getGUIState", "no state attribute")
    ds = _child(root, "DisplaySettings", "TmXmlReader.getDisplaySettings")
    if (ds.text or "").strip():
        json.loads(ds.text)  # DisplaySettingsIO.fromJson
    return TrackMateFile(spots, names, frames, edges, tracks, track_attrs, image)


def _spot_index(tm: TrackMateFile) -> dict[tuple[int, int], int]:
    return {(int(f["CELL_ID"]), int(f["RECORD"])): sid for sid, f in tm.spots.items()}


def test_trackmate_file_loads_and_holds_every_lattice_cell_record(run, exported) -> None:
    out, _ = exported
    tm = read_trackmate(out / "tracks_trackmate.xml")
    cells = run.cells
    on = cells[np.isfinite(cells["z"].to_numpy(float))]
    assert len(tm.spots) == len(on)  # one spot per cell per record on the lattice
    assert tm.frames == list(range(run.n_records))
    v = run.voxel_um
    idx = _spot_index(tm)
    for row in on.itertuples(index=False):
        f = tm.spots[idx[(row.track_id, row.record)]]
        assert (f["POSITION_X"], f["POSITION_Y"], f["POSITION_Z"]) == (
            row.x - v / 2, row.y - v / 2, row.z - v / 2)
        assert f["POSITION_T"] == row.t and f["FRAME"] == row.record
        assert f["STATE"] == cells["state"].cat.categories.get_loc(row.state)
    assert tm.image == {"filename": "labels_tissue.tif", "pixelwidth": v, "pixelheight": v,
                        "voxeldepth": v, "timeinterval": run.record_hours,
                        "width": run.shape[2], "height": run.shape[1],
                        "nslices": run.shape[0], "nframes": run.n_records}
    # consecutive spots of one cell are linked
    out_edges = {(e["SPOT_SOURCE_ID"], e["SPOT_TARGET_ID"]) for e in tm.edges}
    for cid, grp in on.sort_values("record").groupby("track_id"):
        recs = grp["record"].tolist()
        for a, b in zip(recs[:-1], recs[1:], strict=True):
            assert (idx[(cid, a)], idx[(cid, b)]) in out_edges


def test_trackmate_divisions_are_splits(run, exported) -> None:
    out, _ = exported
    tm = read_trackmate(out / "tracks_trackmate.xml")
    idx = _spot_index(tm)
    on = run.cells[np.isfinite(run.cells["z"].to_numpy(float))]
    ev = run.events
    outgoing: dict[int, list[dict]] = {}
    for e in tm.edges:
        outgoing.setdefault(e["SPOT_SOURCE_ID"], []).append(e)
    linked, splits = 0, set()
    for m, d, t in ev.loc[ev["kind"] == "division", ["cell", "other", "t_hours"]].itertuples(
            index=False):
        dau = on[on["track_id"] == d]
        if dau.empty:
            continue
        first = int(dau["record"].min())
        mom = on[on["track_id"] == m]
        before = mom[(mom["record"] < first) & (mom["t"] < t)]
        if before.empty:
            continue
        src = idx[(m, int(before["record"].max()))]
        edge = [e for e in outgoing[src] if e["SPOT_TARGET_ID"] == idx[(d, first)]]
        assert len(edge) == 1 and edge[0]["DIVISION"] == 1
        linked += 1
        if (mom["record"] > before["record"].max()).any():  # the mother goes on: a split
            splits.add(src)
            assert len(outgoing[src]) == 2
    assert linked >= 3 and len(splits) >= 2  # the tiny run divides (7 links, 5 splits)
    assert sum(e["DIVISION"] for e in tm.edges) == linked
    assert {s for s, es in outgoing.items() if len(es) > 1} == splits
    assert sum(a["NUMBER_SPLITS"] for a in tm.track_attrs.values()) == len(splits)
    assert all(a["NUMBER_MERGES"] == 0 for a in tm.track_attrs.values())
    # tracks are the lineage trees: as many as components with an edge
    g = spot_graph(run)
    comp = g.components()
    assert len(tm.tracks) == len(set(comp[g.source].tolist()))


def test_trackmate_second_reader_pytrackmate(run, exported) -> None:
    from pytrackmate import trackmate_peak_import

    out, _ = exported
    path = out / "tracks_trackmate.xml"
    df = trackmate_peak_import(path, get_tracks=True)
    tm = read_trackmate(path)
    assert len(df) == len(tm.spots)
    by_id = df.set_index(df["spot_id"].astype(int))
    for sid, f in tm.spots.items():
        assert (by_id.at[sid, "x"], by_id.at[sid, "z"], by_id.at[sid, "t"]) == (
            f["POSITION_X"], f["POSITION_Z"], f["POSITION_T"])
    # one label per lineage tree: the two ends of every edge share it
    for e in tm.edges:
        assert by_id.at[e["SPOT_SOURCE_ID"], "label"] == by_id.at[e["SPOT_TARGET_ID"], "label"]
    linked = {s for e in tm.edges for s in (e["SPOT_SOURCE_ID"], e["SPOT_TARGET_ID"])}
    assert df["label"].nunique() == len(tm.tracks) + len(tm.spots) - len(linked)


def test_trackmate_skips_blood_and_bridges_the_gap(tiny_run, tmp_path) -> None:
    """A cell in blood at a record has no spot; its spots before and after are linked by a
    gap-closing edge (cells table edited in memory: the tiny run keeps no one in blood)."""
    r = open_run(tiny_run)
    cells = r.cells.copy()
    counts = cells.groupby("track_id")["record"].count()
    cid = int(counts[counts >= 3].index[0])
    recs = sorted(cells.loc[cells["track_id"] == cid, "record"])
    mid = (cells["track_id"] == cid) & (cells["record"] == recs[1])
    cells.loc[mid, ["z", "y", "x"]] = np.nan
    cells.loc[mid, "state"] = "circulating"
    r.__dict__["cells"] = cells
    p = to_trackmate_xml(r, tmp_path, image=None)
    with pytest.raises(AssertionError, match=r"\[TmXmlReader.getImage\] Cannot find image"):
        read_trackmate(p)
    tm = read_trackmate(p, image_must_exist=False)
    assert len(tm.spots) == len(cells) - 1
    idx = _spot_index(tm)
    assert (cid, recs[1]) not in idx
    gap = [e for e in tm.edges if e["SPOT_SOURCE_ID"] == idx[(cid, recs[0])]
           and e["SPOT_TARGET_ID"] == idx[(cid, recs[2])]]
    assert len(gap) == 1 and gap[0]["DIVISION"] == 0
    assert sum(a["NUMBER_GAPS"] for a in tm.track_attrs.values()) == 1


def test_trackmate_records_slice(run, tmp_path) -> None:
    p = to_trackmate_xml(run, tmp_path, records="2:", image=None)
    tm = read_trackmate(p, image_must_exist=False)
    on = run.cells[np.isfinite(run.cells["z"].to_numpy(float)) & (run.cells["record"] >= 2)]
    assert len(tm.spots) == len(on) and tm.frames == [0, 1, 2]
    assert {int(f["FRAME"]) for f in tm.spots.values()} == {0, 1, 2}
    assert all(f["FRAME"] == f["RECORD"] - 2 for f in tm.spots.values())
    assert tm.image["nframes"] == 3


# ---------------------------------------------------------------------- napari
def _napari_layer(out: Path):
    import napari

    df = pd.read_csv(out / "tracks_napari.csv")
    meta = json.loads((out / "tracks_napari.json").read_text(encoding="utf-8"))
    graph = {int(k): v for k, v in meta["graph"].items()}
    layer = napari.layers.Tracks(df[meta["data_columns"]].to_numpy(), graph=graph,
                                 features=df[meta["feature_columns"]], **meta["layer"])
    return layer, df, graph


def test_napari_tracks_load_with_the_lineage_graph(run, exported) -> None:
    out, _ = exported
    layer, df, graph = _napari_layer(out)
    on = run.cells[np.isfinite(run.cells["z"].to_numpy(float))]
    assert layer.data.shape == (len(on), 5) and layer.graph == graph
    v = run.voxel_um
    # data -> world: hours and µm voxel centres, the store's coordinates
    row = on.iloc[len(on) // 2]
    pt = df[(df["cell_id"] == row["track_id"]) & (df["record"] == row["record"])].iloc[0]
    world = layer.data_to_world(pt[["t", "z", "y", "x"]].to_numpy(float))
    assert np.allclose(world, [row["t"], row["z"], row["y"], row["x"]], rtol=0, atol=1e-9)
    assert (pt["z"] + 0.5) * v == row["z"] and pt["state"] == row["state"]
    # every division linked in the TrackMate file is a graph edge from the track ending at
    # the mother's spot to the track starting at the daughter's first spot
    tm = read_trackmate(out / "tracks_trackmate.xml")
    key = {(int(r.cell_id), int(r.record)): int(r.track_id) for r in df.itertuples()}
    ends = df.groupby("track_id").tail(1).set_index("track_id")
    for e in (e for e in tm.edges if e["DIVISION"] == 1):
        s, t = tm.spots[e["SPOT_SOURCE_ID"]], tm.spots[e["SPOT_TARGET_ID"]]
        parent = key[(int(s["CELL_ID"]), int(s["RECORD"]))]
        child = key[(int(t["CELL_ID"]), int(t["RECORD"]))]
        assert graph[child] == [parent]
        assert int(ends.at[parent, "record"]) == int(s["RECORD"])  # napari joins it here
    n_split = sum(1 for es in pd.Series([e["SPOT_SOURCE_ID"] for e in tm.edges]).value_counts()
                  if es > 1)
    assert len(graph) == sum(e["DIVISION"] for e in tm.edges) + n_split
    # within a track, t is consecutive frames of one cell
    for _tid, grp in df.groupby("track_id"):
        assert grp["cell_id"].nunique() == 1


# ---------------------------------------------------------------------- tables
def _read_csv(path: Path) -> pd.DataFrame:
    meta = json.loads(path.with_name(path.name + "-metadata.json").read_text())
    df = pd.read_csv(path, float_precision="round_trip", keep_default_na=False,
                     na_values=[meta["null"]])
    for col in meta["tableSchema"]["columns"]:
        name, dt = col["name"], col["datatype"]
        if isinstance(dt, dict) and dt["base"] == "string":
            df[name] = pd.Categorical(df[name], categories=dt["format"].split("|"))
        elif isinstance(dt, dict) and dt["base"] == "boolean":
            df[name] = df[name].astype(bool)
        elif dt == "integer":
            df[name] = df[name].astype("Int64" if df[name].isna().any() else np.int64)
        elif dt == "double":
            df[name] = df[name].astype(np.float64)
    return df


def test_tables_csv_and_parquet_equal_the_store(run, exported) -> None:
    import pyarrow.parquet as pq

    out, _ = exported
    for name in ("cells", "events", "metrics"):
        want = getattr(run, name)
        units = want.attrs["units"]
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), want,
                                      check_exact=True)
        pd.testing.assert_frame_equal(_read_csv(out / f"{name}.csv"), want, check_exact=True)
        schema = pq.read_schema(out / f"{name}.parquet")
        assert {f.name: f.metadata[b"unit"].decode() for f in schema} == units
        prov = json.loads(schema.metadata[b"niche3d"])
        assert prov["table"] == name and prov["records"] == list(range(run.n_records))
        csvw = json.loads((out / f"{name}.csv-metadata.json").read_text())
        assert {c["name"]: c["schema:unitText"] for c in csvw["tableSchema"]["columns"]} == units
    cells = pd.read_parquet(out / "cells.parquet")
    assert list(cells["state"].cat.categories) == list(run.cells["state"].cat.categories)
    assert pq.read_schema(out / "cells.parquet").field("z").metadata[b"unit"] == b"micrometer"


def test_tables_records_slice(run, tmp_path) -> None:
    to_tables(run, tmp_path, records="1:3", formats=["parquet"])
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    assert sorted(cells["record"].unique()) == [1, 2]
    assert len(cells) == int(run.cells["record"].isin([1, 2]).sum())
    assert pd.read_parquet(tmp_path / "metrics.parquet")["record"].tolist() == [1, 2]
    ev = pd.read_parquet(tmp_path / "events.parquet")
    t = run.events["t_hours"]
    after, until = run.times_h[0], run.times_h[2]
    assert len(ev) == int(((t > after) & (t <= until)).sum()) > 0
    assert not (tmp_path / "cells.csv").exists()


# ---------------------------------------------------------------------- API and CLI
def test_export_run_lists_what_it_wrote(exported) -> None:
    out, files = exported
    assert {p.name for p in files} == ALL_FILES == {p.name for p in out.iterdir()}


def test_export_of_a_store_without_niche_sites(tmp_path) -> None:
    """A format-1 reference store (written before niche sites were recorded)."""
    store = REPO / "tests" / "data" / "reference_stores" / "v1.zarr"
    r = open_run(store)
    files = export_run(store, tmp_path, ["tiff", "csv"])
    names = {p.name for p in files}
    assert "labels_niche.tif" not in names and "labels_tissue.tif" in names
    tissue, _, _ = _ij(tmp_path / "labels_tissue.tif")
    assert np.array_equal(tissue, r.tissue.values)


def test_bad_inputs_raise_before_writing(run, tiny_run, tmp_path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'gif'"):
        export_run(run, tmp_path / "a", "tiff,gif")
    with pytest.raises(ExportError, match="holds no image 'cxcl13'"):
        export_run(run, tmp_path / "a", fields="cxcl13")
    with pytest.raises(ExportError, match="select none of the 5 records"):
        export_run(run, tmp_path / "a", records="7:9")
    with pytest.raises(ExportError, match="inside the run store"):
        export_run(run, Path(tiny_run) / "export")
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cells.csv").write_text("mine")
    with pytest.raises(ExportError, match="already holds cells.csv"):
        to_tables(run, tmp_path / "b")
    with pytest.raises(ExportError, match="already holds tracks_napari.csv"):
        (tmp_path / "b" / "tracks_napari.csv").write_text("mine")
        to_napari_tracks(run, tmp_path / "b")
    assert (tmp_path / "b" / "cells.csv").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["cells.csv", "tracks_napari.csv"]
    with pytest.raises(TypeError, match="a niche3d Run or a run store path"):
        export_run(42, tmp_path / "c")  # type: ignore[arg-type]


@pytest.mark.parametrize("text, want", [
    ("5", slice(5, 6)), ("-1", slice(-1, None)), ("0:10", slice(0, 10)),
    ("::4", slice(None, None, 4)),
    (" 2 : 8 : 2 ", slice(2, 8, 2)), ("-3:", slice(-3, None)),
])
def test_parse_records(text, want) -> None:
    assert parse_records(text) == want


@pytest.mark.parametrize("text", ["", "a:b", "1:2:0", "1:2:-1", "1,2", ":::"])
def test_parse_records_refuses(text) -> None:
    with pytest.raises(ExportError, match="--records"):
        parse_records(text)


def test_atomic_file_leaves_nothing_on_error(tmp_path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _cli(argv: list[str]) -> int:
    from niche3d.cli import _Parser

    p = _Parser(prog="niche3d")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_parser(sub)
    a = p.parse_args(argv)
    assert isinstance(sub.choices["export"], _Parser)
    return cmd_export(a)


def test_cli_exports_and_lists_files(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "e"
    assert _cli(["export", str(tiny_run), "--to", str(out), "--format", "trackmate,parquet",
                 "--records", "0:5:2"]) == 0
    stdout = capsys.readouterr().out
    names = {"tracks_trackmate.xml", "cells.parquet", "events.parquet", "metrics.parquet"}
    assert {p.name for p in out.iterdir()} == names
    for n in names:
        assert re.search(rf"\d+(\.\d)? (B|kB|MB)\s+\S*{re.escape(n)}\n", stdout), n
    assert "wrote 4 files" in stdout
    assert read_trackmate(out / "tracks_trackmate.xml", image_must_exist=False).frames == [0, 1, 2]
    # --overwrite writes into the non-empty directory, leaving other files alone
    (out / "notes.txt").write_text("keep")
    assert _cli(["export", str(tiny_run), "--to", str(out), "--format", "csv",
                 "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep" and (out / "cells.csv").is_file()


@pytest.mark.parametrize("case", ["missing", "not_a_store", "format", "file", "under_file",
                                  "nonempty", "records", "fields", "inside"])
def test_cli_bad_input_is_one_line_and_status_2(case, tiny_run, tmp_path, capsys) -> None:
    to = tmp_path / "out"
    run_arg, extra = str(tiny_run), []
    if case == "missing":
        run_arg = str(tmp_path / "nope.zarr")
    elif case == "not_a_store":
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "a.txt").write_text("x")
        run_arg = str(tmp_path / "plain")
    elif case == "format":
        extra = ["--format", "tiff,xlsx"]
    elif case == "file":
        to.write_text("a file")
    elif case == "under_file":
        to.write_text("a file")
        to = to / "sub"
    elif case == "nonempty":
        to.mkdir()
        (to / "old.csv").write_text("x")
    elif case == "records":
        extra = ["--records", "1:x"]
    elif case == "fields":
        extra = ["--fields", "cxcl12,ang1"]
    elif case == "inside":
        to = Path(tiny_run) / "exports"
    before = sorted(os.listdir(tmp_path))
    store_before = sorted(os.listdir(tiny_run))
    assert _cli(["export", run_arg, "--to", str(to), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("niche3d export: error: "), err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
    assert sorted(os.listdir(tiny_run)) == store_before
    if case == "nonempty":
        assert os.listdir(to) == ["old.csv"]


def test_cli_interrupted_export_leaves_no_partial_file(tiny_run, tmp_path, monkeypatch,
                                                       capsys) -> None:
    import niche3d.export.tiff as tiff_mod

    real = tiff_mod._pages

    def interrupted(arr, sel, dtype):
        gen = real(arr, sel, dtype)
        yield next(gen)
        raise KeyboardInterrupt

    out = tmp_path / "e"
    monkeypatch.setattr(tiff_mod, "_pages", interrupted)
    assert _cli(["export", str(tiny_run), "--to", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no final file, no temporary file
