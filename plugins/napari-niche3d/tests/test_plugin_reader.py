"""Reader and layer construction without Qt: the reader function and a ViewerModel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from napari_niche3d import is_run_store, layers_from_run, napari_get_reader, read_run
from napari_niche3d._analysis import (
    ACTIVE_FRACTION,
    cell_history,
    cell_lineage,
    field_values_at,
    intervention_schedule,
    nearest_record,
)
from napari_niche3d._reader import AXIS_LABELS, AXIS_UNITS, state_colors
from plugin_testdata import (
    INTERVENTIONS,
    N_REC,
    RECORD_H,
    SHAPE,
    VOXEL,
    cxcl12_value,
    store_fixture,
)

from niche3d.io.pyramid import LazyArray

run_store = store_fixture()
intervention_store = store_fixture(INTERVENTIONS)


# ---------------------------------------------------------------------- detection
def test_reader_refuses_other_paths(tmp_path: Path) -> None:
    import zarr

    plain = tmp_path / "plain.zarr"
    zarr.open_group(plain, mode="w").attrs["something"] = 1
    ome = tmp_path / "image.zarr"
    g = zarr.open_group(ome, mode="w")
    g.attrs["ome"] = {"version": "0.5", "multiscales": []}
    afile = tmp_path / "file.zarr"
    afile.write_text("not a store")
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    sub = tmp_path / "sub.zarr"  # a group with a 'niche3d' attribute that is not a run root
    zarr.open_group(sub, mode="w").attrs["niche3d"] = {"tables": ["cells"]}
    for p in (plain, ome, afile, broken, sub, tmp_path / "missing.zarr", tmp_path):
        assert not is_run_store(p)
        assert napari_get_reader(str(p)) is None
    assert napari_get_reader([str(plain), str(ome)]) is None


def test_reader_claims_run_store(run_store: str) -> None:
    assert is_run_store(run_store)
    assert napari_get_reader(run_store) is read_run
    assert napari_get_reader([run_store]) is read_run
    meta = json.loads((Path(run_store) / "zarr.json").read_text())
    assert "niche3d" in meta["attributes"]
    assert napari_get_reader(str(Path(run_store) / "tables")) is None  # sub-groups are not runs
    with pytest.raises(ValueError, match="one run store"):
        read_run([run_store, run_store])


# ---------------------------------------------------------------------- layers
def _by_name(layers: list) -> dict:
    return {kw["name"]: (data, kw, kind) for data, kw, kind in layers}


def test_layers_from_real_store(run_store: str) -> None:
    layers = _by_name(read_run(run_store))
    assert list(layers) == ["cxcl12", "scf", "tissue", "lineage", "cells"]
    kinds = {k: v[2] for k, v in layers.items()}
    assert kinds == {"cxcl12": "image", "scf": "image", "tissue": "labels", "cells": "points", "lineage": "tracks"}
    for _name, (_, kw, _) in layers.items():
        assert kw["scale"] == (RECORD_H, VOXEL, VOXEL, VOXEL)
        assert kw["translate"] == (0.0, VOXEL / 2, VOXEL / 2, VOXEL / 2)
        assert kw["units"] == AXIS_UNITS
        assert kw["axis_labels"] == AXIS_LABELS
        assert kw["metadata"]["niche3d"]["path"] == run_store

    data, kw, _ = layers["cxcl12"]
    assert isinstance(data, LazyArray) and not kw["multiscale"]  # lazy, one level on a small lattice
    assert data.shape == (N_REC, *SHAPE)
    assert kw["contrast_limits"] == (0.0, 5000.0)
    assert kw["colormap"] == "magma"
    assert kw["metadata"]["niche3d"]["units"] == "nM"
    assert float(data[2, 5, 7, 9]) == cxcl12_value(2, 5, 7, 9)
    assert layers["scf"][1]["contrast_limits"] == (0.0, 2.0)

    tdata, tkw, _ = layers["tissue"]
    assert isinstance(tdata, LazyArray) and tdata.dtype == np.uint8
    from niche3d.tissue.codes import TISSUE_COLORS, TISSUE_NAMES, Tissue

    t0 = np.asarray(tdata[0])
    assert (t0[:3] == Tissue.BONE).all() and (t0[3] == Tissue.ENDOSTEUM).all()
    assert (np.asarray(tdata[2])[3] == Tissue.MARROW).all()  # ablated at record 2
    assert tkw["visible"] is True
    feats = tkw["features"]
    assert dict(zip(feats["index"], feats["tissue"], strict=True)) == TISSUE_NAMES
    cmap = tkw["colormap"]
    for code, rgba in TISSUE_COLORS.items():
        want = (0.0, 0.0, 0.0, 0.0) if code == Tissue.MARROW else rgba  # marrow see-through
        np.testing.assert_allclose(cmap.map(np.array([int(code)]))[0], want, atol=1e-6)
    from napari_niche3d._reader import tissue_colormap

    opaque = tissue_colormap(transparent=())
    np.testing.assert_allclose(opaque.map(np.array([int(Tissue.MARROW)]))[0], TISSUE_COLORS[Tissue.MARROW], atol=1e-6)
    with pytest.raises(ValueError, match="unknown tissue name"):
        tissue_colormap(transparent=("cartilage",))

    # cells: 1 + 3 + 4 on-lattice rows over the three records; the circulating cell is absent
    pdata, pkw, _ = layers["cells"]
    assert pdata.shape == (1 + 3 + 4, 4)
    f = pkw["features"]
    assert 4 not in set(f["track_id"])
    for col in ("state", "bound", "generation", "donor"):
        assert isinstance(f[col].dtype, pd.CategoricalDtype), col
    assert list(f["state"].cat.categories) == ["dormant", "active", "mpp", "circulating", "dead"]
    assert pkw["face_color"] == "state"
    assert pkw["face_color_cycle"]["dormant"] != pkw["face_color_cycle"]["active"]
    # data coordinates = (record index, voxel index): cell 5 at record 2, voxel (10, 12, 15)
    row = np.flatnonzero(f["track_id"].to_numpy() == 5)
    np.testing.assert_allclose(pdata[row[0]], [2, 10, 12, 15])
    assert bool(f["donor"].iloc[row[0]]) is True

    trdata, trkw, _ = layers["lineage"]
    assert trkw["graph"] == {2: [1], 3: [1]}
    assert set(trdata[:, 0]) == {1.0, 2.0, 3.0, 5.0}
    # sorted by track then time, as napari wants
    keys = list(zip(trdata[:, 0], trdata[:, 1], strict=True))
    assert keys == sorted(keys)


def test_viewer_model_opens_store_with_plugin(run_store: str) -> None:
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    vm = ViewerModel()
    layers = vm.open(run_store, plugin="napari-niche3d")
    assert [ly.name for ly in layers] == ["cxcl12", "scf", "tissue", "lineage", "cells"]
    assert tuple(vm.dims.axis_labels) == AXIS_LABELS
    assert [str(u) for u in vm.dims.units] == ["hour", "micrometer", "micrometer", "micrometer"]
    t_range = vm.dims.range[0]
    assert (t_range.start, t_range.stop, t_range.step) == (0.0, 24.0, 12.0)
    z_range = vm.dims.range[1]
    assert (z_range.start, z_range.stop, z_range.step) == (4.0, 4.0 + 8.0 * (SHAPE[0] - 1), 8.0)

    cells = vm.layers["cells"]
    # world coordinates are hours and µm voxel centres: cell 5 at (24 h, 84, 100, 124 µm)
    i = int(np.flatnonzero(cells.features["track_id"].to_numpy() == 5)[0])
    np.testing.assert_allclose(cells.data_to_world(cells.data[i]), [24.0, 84.0, 100.0, 124.0])
    dormant = state_colors(["dormant"])["dormant"]
    np.testing.assert_allclose(cells.face_color[i], dormant, atol=1e-6)
    # the same world point reads the same voxel from the field image
    img = vm.layers["cxcl12"]
    img.visible = True
    for axis, value in enumerate((24.0, 84.0, 100.0, 124.0)):
        vm.dims.set_point(axis, value)
    assert img.get_value((24.0, 84.0, 100.0, 124.0), world=True) == cxcl12_value(2, 10, 12, 15)
    tissue = vm.layers["tissue"]
    for axis, value in enumerate((0.0, 4.0, 4.0, 4.0)):
        vm.dims.set_point(axis, value)
    assert tissue.get_value((0.0, 4.0, 4.0, 4.0), world=True) == 2  # bone at z = 0
    tracks = vm.layers["lineage"]
    assert tracks.graph == {2: [1], 3: [1]}


def test_viewer_model_default_reader_leaves_other_stores(tmp_path: Path) -> None:
    import npe2

    npe2.PluginManager.instance().discover()
    import zarr

    p = tmp_path / "other.zarr"
    zarr.open_group(p, mode="w").attrs["x"] = 1
    readers = [r.plugin_name for r in npe2.PluginManager.instance().iter_compatible_readers([str(p)])]
    assert "napari-niche3d" in readers  # the pattern matches *.zarr ...
    assert napari_get_reader(str(p)) is None  # ... but the hook declines it


def test_layers_reject_bad_run(run_store: str) -> None:
    from niche3d.io import open_run

    run = open_run(run_store)

    class Bad:
        voxel_um = -1.0
        record_hours = run.record_hours
        times_h = run.times_h
        fields = run.fields
        tissue = run.tissue
        cells = run.cells

    with pytest.raises(ValueError, match="voxel_um"):
        layers_from_run(Bad())
    Bad.voxel_um = run.voxel_um
    Bad.times_h = np.zeros(0)
    with pytest.raises(ValueError, match="no records"):
        layers_from_run(Bad())


# ---------------------------------------------------------------------- analysis
def test_cell_history_and_lineage(run_store: str) -> None:
    from niche3d.io import open_run

    run = open_run(run_store)
    h = cell_history(run.cells, 1)
    assert h["t"].tolist() == [0.0, 12.0, 24.0]
    assert h["divisions"].tolist() == [0, 1, 1]
    lin = cell_lineage(run.cells, 1)
    assert lin == {"ancestors": [], "daughters": [2, 3], "descendants": 2, "generation": 0}
    lin3 = cell_lineage(run.cells, 3)
    assert lin3["ancestors"] == [1] and lin3["generation"] == 1 and lin3["descendants"] == 0
    with pytest.raises(ValueError, match="track_id 99"):
        cell_history(run.cells, 99)
    with pytest.raises(ValueError, match="integer"):
        cell_lineage(run.cells, "abc")  # type: ignore[arg-type]


def test_field_values_at(run_store: str) -> None:
    from niche3d.io import open_run

    run = open_run(run_store)
    z, y, x = 10, 12, 15
    vals = field_values_at(run.fields, 23.0, (z + 0.5) * VOXEL, (y + 0.5) * VOXEL, (x + 0.5) * VOXEL + 3.0)
    assert vals == {"cxcl12": cxcl12_value(2, z, y, x), "scf": 1.0}
    with pytest.raises(ValueError, match="outside the lattice"):
        field_values_at(run.fields, 0.0, 4.0, 4.0, SHAPE[2] * VOXEL + 1.0)
    with pytest.raises(ValueError, match="finite"):
        field_values_at(run.fields, 0.0, math.nan, 4.0, 4.0)
    assert nearest_record(run.times_h, 17.9) == 1
    with pytest.raises(ValueError, match="t_hours"):
        nearest_record(run.times_h, math.inf)


def test_intervention_schedule_numbers(intervention_store: str) -> None:
    from niche3d.io import open_run

    run = open_run(intervention_store)
    s = intervention_schedule(run.scenario, 24.0)
    span_amd = 1.0 * math.log2(1 / ACTIVE_FRACTION)  # 6.64 h: blockade down to 1 %
    amd = s[s["kind"] == "amd3100"]
    # doses at 6 h and 12 h: windows [6, 12.64] and [12, 18.64] overlap and merge
    assert len(amd) == 1
    assert amd["start_h"].iloc[0] == 6.0
    assert amd["end_h"].iloc[0] == pytest.approx(12.0 + span_amd)
    assert amd["doses_h"].iloc[0] == (6.0, 12.0)
    g = s[s["kind"] == "gcsf"].iloc[0]
    assert (g["start_h"], g["doses_h"]) == (0.0, (0.0, 24.0))
    assert g["end_h"] == 24.0  # clipped to the run's end (24 + 2 * 6.64 h otherwise)
    k = s[s["kind"] == "knockout"].iloc[0]
    assert (k["start_h"], k["end_h"]) == (12.0, 24.0)
    assert "stroma×0" in k["label"]
    with pytest.raises(ValueError, match="t_end_hours"):
        intervention_schedule(run.scenario, -1.0)


def test_intervention_schedule_covers_every_kind() -> None:
    """5-FU doses act until their hazard is down to 1 %; a transplant and an irradiation
    are one-hour marks at their day (every kind of the scenario schema has a row)."""
    from niche3d.scenario import load_scenario

    repo = Path(__file__).resolve().parents[3]
    sc = load_scenario(repo / "scenarios" / "homeostasis.toml").with_overrides({"interventions": [
        {"kind": "5fu", "dose_days": [1.0], "half_life_hours": 6.0},
        {"kind": "irradiation", "day": 2.0, "dose_gy": 9.5},
        {"kind": "transplant", "day": 2.0, "cells": 500},
    ]})
    s = intervention_schedule(sc, 96.0)
    fu = s[s["kind"] == "5fu"].iloc[0]
    assert (fu["start_h"], fu["doses_h"]) == (24.0, (24.0,))
    assert fu["end_h"] == pytest.approx(24.0 + 6.0 * math.log2(1 / ACTIVE_FRACTION))
    for kind, word in (("irradiation", "9.5 Gy"), ("transplant", "500 HSCs")):
        row = s[s["kind"] == kind].iloc[0]
        assert (row["start_h"], row["end_h"], row["doses_h"]) == (48.0, 49.0, (48.0,))
        assert word in row["label"]
    import typing

    from niche3d.interventions.config import Intervention

    members = typing.get_args(typing.get_args(Intervention)[0])
    kinds = {m.model_fields["kind"].default for m in members}
    assert kinds == {"knockout", "amd3100", "gcsf", "5fu", "transplant", "irradiation"}


# ---------------------------------------------------------------------- sample data
@pytest.mark.slow
def test_sample_run_is_a_real_simulation(tmp_path: Path) -> None:
    from napari_niche3d._sample_data import SAMPLE_OVERRIDES, make_sample_run

    from niche3d.io import open_run
    from niche3d.tissue.codes import Tissue

    store = make_sample_run(tmp_path / "s.zarr", domain__shape=[16, 24, 24], run__days=0.5)
    run = open_run(store)
    assert run.n_records == 3  # 0, 6, 12 h
    np.testing.assert_allclose(run.times_h, [0.0, 6.0, 12.0])
    assert run.voxel_um == SAMPLE_OVERRIDES["domain.voxel_um"]
    layers = _by_name(read_run(str(store)))
    tissue = np.asarray(layers["tissue"][0][0])
    present = set(np.unique(tissue).tolist())
    assert {int(Tissue.BONE), int(Tissue.MARROW)} <= present
    pdata, pkw, _ = layers["cells"]
    # seeded at 20000 HSC/mm^3 in marrow: at least one cell on the lattice at t = 0
    assert (pdata[:, 0] == 0).sum() >= 1
    assert (pdata[:, 1:] >= -0.5).all()
    assert (pdata[:, 1:] <= np.array([16, 24, 24]) - 0.5).all()
    # every cell of the points layer sits on an enterable voxel (marrow or stroma)
    idx = np.rint(pdata).astype(int)
    codes = np.asarray(layers["tissue"][0])[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]]
    assert set(np.unique(codes).tolist()) <= {int(Tissue.MARROW), int(Tissue.STROMA)}


def test_manifest_is_discoverable_and_importable() -> None:
    import npe2

    m = npe2.PluginManifest.from_distribution("napari-niche3d")
    assert m.name == "napari-niche3d"
    ids = [c.id for c in m.contributions.commands]
    assert all(i.startswith("napari-niche3d.") for i in ids)
    assert {r.command for r in m.contributions.readers} == {"napari-niche3d.get_reader"}
    assert [s.key for s in m.contributions.sample_data] == ["synthetic_run"]
    assert len(m.contributions.widgets) == 5
    m.validate_imports()  # every python_name resolves
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert pm.get_manifest("napari-niche3d").contributions.commands[0].id == "napari-niche3d.get_reader"


def test_state_colors_distinguish_every_state() -> None:
    from niche3d.cells import STATE_NAMES

    colors = state_colors(list(STATE_NAMES))
    assert list(colors) == list(STATE_NAMES)
    assert len(set(colors.values())) == len(STATE_NAMES)  # no two states share a colour
    extra = state_colors(["dormant", "weird_a", "weird_b"])
    assert extra["weird_a"] != extra["weird_b"]


@pytest.mark.slow
def test_open_sample_through_npe2() -> None:
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    vm = ViewerModel()
    layers = vm.open_sample("napari-niche3d", "synthetic_run")
    names = [ly.name for ly in layers]
    # the sample is a simulation store: its niche-site labels sit right above the tissue
    assert names[-4:] == ["tissue", "niche sites", "lineage", "cells"] or \
        names[-3:] == ["tissue", "niche sites", "cells"]
    store = Path(vm.layers["tissue"].metadata["niche3d"]["path"])
    assert is_run_store(store) and store.name == "sample.zarr"
    t = vm.dims.range[0]
    assert (t.start, t.stop, t.step) == (0.0, 48.0, 6.0)  # 2 days recorded every 6 h
    assert vm.layers["tissue"].data.shape == (9, 24, 48, 48)
    assert len(vm.layers["cells"].data) > 0


def test_a_run_with_a_pyramid_opens_as_multiscale_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store with coarser levels (its threshold lowered here: the test lattice has 3,840
    voxels) gives multiscale field, tissue and niche layers in the same world frame; the 3D
    surfaces are meshed from the coarse tissue, placed on the fine blocks it summarises."""
    from napari.components import ViewerModel
    from napari_niche3d._display import _first_tissue
    from napari_niche3d._launch import add_run_layers
    from plugin_testdata import write_test_store

    import niche3d.io._layout as layout

    monkeypatch.setattr(layout, "PYRAMID_MIN_VOXELS", 1000)
    store = write_test_store(tmp_path / "p.zarr")
    layers = _by_name(read_run(str(store)))
    data, kw, _ = layers["cxcl12"]
    assert kw["multiscale"] and [d.shape for d in data] == [(N_REC, *SHAPE), (N_REC, 6, 8, 10)]
    assert float(data[1][2, 0, 0, 0]) == np.mean([cxcl12_value(2, z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)])
    vm = ViewerModel()
    add_run_layers(vm, str(store))
    tissue = vm.layers["tissue"]
    assert tissue.multiscale and vm.layers["cxcl12"].multiscale
    # the same world frame as a one-level layer: voxel centres from VOXEL / 2, in µm
    want = [[VOXEL / 2] * 3, [VOXEL / 2 + (n - 1) * VOXEL for n in SHAPE]]
    np.testing.assert_allclose(tissue.extent.world[:, 1:], want)
    assert tuple(tissue.scale[1:]) == (VOXEL,) * 3 and tuple(tissue.translate[1:]) == (VOXEL / 2,) * 3
    import napari_niche3d._surfaces as surfaces

    monkeypatch.setattr(surfaces, "MAX_SURFACE_VOXELS", 1000)
    labels, scale, translate = _first_tissue(tissue)
    assert labels.shape == (6, 8, 10)
    assert scale == (2 * VOXEL,) * 3 and translate == (VOXEL,) * 3  # centred on 2x2x2 blocks
    from niche3d.tissue.codes import Tissue

    z, y, x = np.argwhere(labels == Tissue.SINUSOID).mean(axis=0)
    world_y = translate[1] + y * scale[1]
    assert abs(world_y - (8 + 0.5) * VOXEL) < VOXEL  # the vessel's axis is at y = 8 voxels
