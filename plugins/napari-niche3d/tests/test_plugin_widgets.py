"""Widgets with pytest-qt on a ViewerModel (no OpenGL needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from plugin_testdata import INTERVENTIONS, cxcl12_value, store_fixture

run_store = store_fixture()
intervention_store = store_fixture(INTERVENTIONS)

pytest.importorskip("pytestqt")


@pytest.fixture
def model(run_store: str) -> Any:
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    vm = ViewerModel()
    vm.open(run_store, plugin="napari-niche3d")
    return vm


def _click(widget: Any, x_data: float) -> None:
    """A matplotlib button press at data x on the first axes of a plot widget."""
    from matplotlib.backend_bases import MouseEvent

    ax = widget.figure.axes[0]
    widget.canvas.draw()
    xd, yd = ax.transData.transform((x_data, np.mean(ax.get_ylim())))
    widget.canvas.callbacks.process("button_press_event", MouseEvent("button_press_event", widget.canvas, xd, yd, 1))


def test_metrics_panel_plots_and_follows_time(qtbot: Any, model: Any, run_store: str) -> None:
    from napari_niche3d._widgets import MetricsPanel

    w = MetricsPanel(model)
    qtbot.addWidget(w)
    assert w.path == run_store
    names = [w.metric_list.item(i).text() for i in range(w.metric_list.count())]
    assert set(names) >= {"n_hsc", "bound_fraction"}
    w.select(["n_hsc"])
    line = w.figure.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [0.0, 12.0, 24.0])
    np.testing.assert_array_equal(line.get_ydata(), [2.0, 4.0, 5.0])  # cells per record incl. circulating
    model.dims.set_point(0, 12.0)
    assert w.cursors[0].get_xdata()[0] == 12.0
    _click(w, 22.0)  # clicking the plot moves the slider to the nearest record
    assert model.dims.point[0] == 24.0
    assert w.cursors[0].get_xdata()[0] == 24.0
    with pytest.raises(ValueError, match="unknown metrics"):
        w.select(["nope"])


def test_cell_inspector_history_lineage_local(qtbot: Any, model: Any) -> None:
    from napari_niche3d._widgets import CellInspector

    w = CellInspector(model)
    qtbot.addWidget(w)
    model.dims.set_point(0, 24.0)
    w.show_cell(2)
    assert w.table.rowCount() == 2  # records 1 and 2
    assert w.table.item(0, 1).text() == "active"
    assert "ancestors: 1" in w.lineage.text() and "generation 1" in w.lineage.text()
    # cell 2 sits at voxel (6, 4, 6) at t = 24 h
    assert w.local_values() == {"cxcl12": cxcl12_value(2, 6, 4, 6), "scf": 1.0}
    model.dims.set_point(0, 12.0)
    assert w.local_values()["cxcl12"] == cxcl12_value(1, 6, 4, 6)
    assert "division" in w.events.text()
    w.show_cell(1)
    assert "daughters: 2, 3" in w.lineage.text()
    model.dims.set_point(0, 0.0)
    w.show_cell(3)  # not born yet at t = 0
    assert w.local_values() == {}
    assert "not on the lattice" in w.local.text()
    with pytest.raises(ValueError, match="track_id 42"):
        w.show_cell(42)


def test_cell_inspector_follows_point_selection(qtbot: Any, model: Any) -> None:
    from napari_niche3d._widgets import CellInspector

    w = CellInspector(model)
    qtbot.addWidget(w)
    cells = model.layers["cells"]
    i = int(np.flatnonzero(cells.features["track_id"].to_numpy() == 5)[0])
    cells.selected_data = {i}
    assert w.track_id == 5
    assert w.table.rowCount() == 1
    # a mouse click on cell 2 (record 1, voxel (6, 4, 6)) in the 2D view
    j = int(np.flatnonzero((cells.features["track_id"].to_numpy() == 2) & (cells.data[:, 0] == 1))[0])
    world = tuple(cells.data_to_world(cells.data[j]))
    for axis, value in enumerate(world):
        model.dims.set_point(axis, value)
    event = SimpleNamespace(position=world, view_direction=None, dims_displayed=[2, 3])
    w._on_click(cells, event)
    assert w.track_id == 2
    assert w.local_values()["cxcl12"] == cxcl12_value(1, 6, 4, 6)


def test_intervention_timeline(qtbot: Any, intervention_store: str) -> None:
    import npe2
    from napari.components import ViewerModel
    from napari_niche3d._widgets import InterventionTimeline

    npe2.PluginManager.instance().discover()
    vm = ViewerModel()
    w = InterventionTimeline(vm)
    qtbot.addWidget(w)
    assert len(w.schedule) == 0  # nothing open yet
    vm.open(intervention_store, plugin="napari-niche3d")
    assert w.path == intervention_store
    assert sorted(w.schedule["kind"]) == ["amd3100", "gcsf", "knockout"]
    ax = w.figure.axes[0]
    assert len(ax.collections) == 3  # one bar per interval
    assert [t.get_text() for t in ax.get_yticklabels()][-1].startswith("0: AMD3100")
    vm.dims.set_point(0, 12.0)
    assert w.cursors[0].get_xdata()[0] == 12.0


def test_run_panel_scenario_editing(qtbot: Any, tmp_path: Path) -> None:
    from napari.components import ViewerModel
    from napari_niche3d._widgets import RunPanel

    w = RunPanel(ViewerModel())
    qtbot.addWidget(w)
    toml = tmp_path / "s.toml"
    toml.write_text('name = "edited"\n[run]\ndays = 3.0\nseed = 11\n[domain]\nshape = [16, 20, 24]\n')
    assert w.load_scenario(str(toml))
    assert w.editors["run.seed"].value() == 11
    assert w.editors["domain.shape.2"].value() == 24
    w.editors["run.days"].setValue(0.5)
    sc = w.scenario()
    assert (sc.name, sc.run.days, sc.run.seed, tuple(sc.domain.shape)) == ("edited", 0.5, 11, (16, 20, 24))
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nnope = 1\n")
    assert not w.load_scenario(str(bad))
    assert "nope" in w.status.text()
    # editors keep the last valid scenario
    assert w.editors["run.seed"].value() == 11


def _small_panel(qtbot: Any, tmp_path: Path, days: float) -> Any:
    from napari.components import ViewerModel
    from napari_niche3d._widgets import RunPanel

    vm = ViewerModel()
    w = RunPanel(vm)
    qtbot.addWidget(w)
    for key, value in {"run.days": days, "run.seed": 5, "domain.shape.0": 16, "domain.shape.1": 16,
                       "domain.shape.2": 16, "output.interval_hours": 6.0}.items():
        w.editors[key].setValue(value)
    w.out_edit.setText(str(tmp_path / "panel.zarr"))
    return w


@pytest.mark.slow
@pytest.mark.parametrize("lagging_store", [False, True], ids=["store", "lagging-store"])
def test_run_panel_runs_and_streams(qtbot: Any, tmp_path: Path, monkeypatch: Any,
                                    lagging_store: bool) -> None:
    from napari_niche3d._widgets import MetricsPanel

    from niche3d.io import open_run

    w = _small_panel(qtbot, tmp_path, days=1.0)
    metrics = MetricsPanel(w.viewer)
    qtbot.addWidget(metrics)
    if lagging_store:
        # The background writer commits nothing until the run's final flush (every call
        # kept, in order), and that flush waits until the panel has handled the run's
        # last progress report: the panel draws that report from a store that lags the
        # simulation by every record, and must still end with every record shown.
        import threading

        from niche3d.io.background import BackgroundWriter

        put, flush = BackgroundWriter._put, BackgroundWriter.flush
        last_report_handled = threading.Event()
        w._bridge.progress.connect(  # runs after the panel's own slot (connected first)
            lambda fraction, *_: last_report_handled.set() if fraction >= 1 else None)

        def deferred_put(self: Any, fn: Any, args: Any, kwargs: Any = None) -> None:
            self.__dict__.setdefault("_deferred", []).append((fn, args, kwargs))

        def deferred_flush(self: Any) -> None:
            deferred = self.__dict__.pop("_deferred", [])
            if sum(fn.__name__ == "write_record" for fn, _, _ in deferred) > 1:  # the run's end
                assert last_report_handled.wait(300), "the panel never handled the last report"
            for fn, args, kwargs in deferred:
                put(self, fn, args, kwargs)
            flush(self)

        monkeypatch.setattr(BackgroundWriter, "_put", deferred_put)
        monkeypatch.setattr(BackgroundWriter, "flush", deferred_flush)
    w.start()
    assert w.running
    qtbot.waitUntil(lambda: not w.running, timeout=300_000)
    assert w.error is None, w.error
    run = open_run(w.out_path)
    assert run.n_records == 5  # t = 0, 6, 12, 18, 24 h
    names = [ly.name for ly in w.viewer.layers]
    assert "tissue" in names and "cells" in names
    # the streamed layers hold every record and the slider sits on the last one
    assert w.viewer.layers["tissue"].data.shape[0] == 5
    assert w.viewer.dims.point[0] == 24.0
    assert w.progress.value() == 1000
    assert w.status.text().startswith("finished")
    # the metrics panel followed the growing store: one point per record
    assert metrics.path == w.out_path
    np.testing.assert_array_equal(metrics.figure.axes[0].lines[0].get_xdata(), [0.0, 6.0, 12.0, 18.0, 24.0])
    np.testing.assert_array_equal(metrics.figure.axes[0].lines[0].get_ydata(), run.metrics[metrics.selected()[0]])


@pytest.mark.slow
def test_run_panel_cancel_leaves_valid_store(qtbot: Any, tmp_path: Path) -> None:
    from niche3d.io import open_run

    w = _small_panel(qtbot, tmp_path, days=20.0)
    w.start()
    qtbot.waitUntil(lambda: w.progress.value() > 0, timeout=300_000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=300_000)
    assert w.error is None, w.error
    assert w.status.text().startswith("cancelled")
    run = open_run(w.out_path)
    assert 1 <= run.n_records < 20 * 4 + 1
    assert w.viewer.layers["tissue"].data.shape[0] == run.n_records
    np.testing.assert_allclose(run.times_h, np.arange(run.n_records) * 6.0)



@pytest.mark.slow
def test_run_panel_refuses_to_overwrite(qtbot: Any, tmp_path: Path, run_store: str) -> None:
    from niche3d.io import open_run

    w = _small_panel(qtbot, tmp_path, days=1.0)
    before = open_run(run_store).n_records
    w.out_edit.setText(run_store)  # an existing store, overwrite unchecked
    w.start()
    qtbot.waitUntil(lambda: not w.running, timeout=300_000)
    assert w.error is not None and isinstance(w.error, ValueError)
    assert w.status.text().startswith("run failed")
    assert w.run_button.isEnabled() and not w.cancel_button.isEnabled()
    assert open_run(run_store).n_records == before  # untouched
