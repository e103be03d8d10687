"""Dock widgets: run panel, metrics panel, cell inspector, intervention timeline.

Each widget takes the viewer (napari injects it) and finds runs through the
``metadata["niche3d"]["path"]`` of the layers the reader made.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_niche3d._analysis import (
    cell_history,
    cell_lineage,
    field_values_at,
    intervention_schedule,
    nearest_record,
)
from napari_niche3d._display import decorate
from napari_niche3d._launch import add_run_layers, run_paths

__all__ = ["CellInspector", "InterventionTimeline", "MetricsPanel", "RunPanel", "open_run_cached"]

_RUN_CACHE: dict[str, tuple[int, Any]] = {}
_NOT_METRICS = frozenset({"t", "t_hours", "record"})


def _records_written(path: str) -> int:
    from niche3d.io import records_written

    return records_written(path)


def open_run_cached(path: str) -> Any:
    """``niche3d.io.open_run(path)``, reopened only when the store gained records.

    Parameters
    ----------
    path
        A niche3d run store.

    Returns
    -------
    niche3d.io.Run
    """
    from niche3d.io import open_run

    n = _records_written(path)
    hit = _RUN_CACHE.get(path)
    if hit is not None and hit[0] == n and n >= 0:
        return hit[1]
    run = open_run(path)
    _RUN_CACHE[path] = (n, run)
    return run


def _time_axis(viewer: Any) -> int | None:
    labels = tuple(viewer.dims.axis_labels)
    for i, label in enumerate(labels):
        if label == "t" or label.startswith("t:"):  # "t: day 3, 12 h" (napari_niche3d._display)
            return i
    return 0 if viewer.dims.ndim == 4 else None


def _current_t(viewer: Any) -> float:
    ax = _time_axis(viewer)
    return float(viewer.dims.point[ax]) if ax is not None else 0.0


def _set_t(viewer: Any, t_hours: float) -> None:
    ax = _time_axis(viewer)
    if ax is not None:
        viewer.dims.set_point(ax, float(t_hours))


class _RunChooser(QComboBox):
    """A combo box of the run stores open in the viewer; follows layer additions."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        paths = run_paths(self._viewer)
        current = self.currentText()
        if paths == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(paths)
        self.blockSignals(False)
        if current in paths:
            self.setCurrentText(current)
        elif paths:
            self.setCurrentIndex(len(paths) - 1)
            self.currentTextChanged.emit(self.currentText())
        else:
            self.currentTextChanged.emit("")


# ====================================================================== run panel
class _Bridge(QObject):
    progress = Signal(float, float, int)


class RunPanel(QWidget):
    """Pick a scenario, edit its main parameters, run it in a worker thread.

    Records stream into the viewer as the store grows (layers update in place and the
    time slider follows the newest record); Cancel stops after the current step and
    leaves a valid store.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    #: (scenario key, label, kind, min, max, decimals)
    PARAMS: tuple[tuple[str, str, str, float, float, int], ...] = (
        ("run.days", "days", "float", 0.01, 3650.0, 2),
        ("run.seed", "seed", "int", 0, 2**31 - 1, 0),
        ("domain.shape.0", "shape z", "int", 8, 4096, 0),
        ("domain.shape.1", "shape y", "int", 8, 4096, 0),
        ("domain.shape.2", "shape x", "int", 8, 4096, 0),
        ("domain.voxel_um", "voxel (µm)", "float", 1.0, 50.0, 2),
        ("output.interval_hours", "record every (h)", "float", 0.01, 8760.0, 2),
        ("cells.hsc_per_mm3", "HSC per mm³", "float", 0.0, 1e6, 1),
    )

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from niche3d.scenario import Scenario

        self.viewer = viewer
        self._base = Scenario.default()
        self._sim: Any = None
        self._worker: Any = None
        self._cancel_requested = threading.Event()
        self._shown_records = 0
        self._last_refresh = 0.0
        self.out_path: str | None = None
        self.error: BaseException | None = None

        self.scenario_edit = QLineEdit()
        self.scenario_edit.setPlaceholderText("built-in defaults")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        load = QPushButton("Load")
        load.clicked.connect(lambda: self.load_scenario(self.scenario_edit.text()))
        row = QHBoxLayout()
        row.addWidget(self.scenario_edit)
        row.addWidget(browse)
        row.addWidget(load)

        form = QFormLayout()
        self.editors: dict[str, QSpinBox | QDoubleSpinBox] = {}
        for key, label, kind, lo, hi, dec in self.PARAMS:
            if kind == "int":
                ed: QSpinBox | QDoubleSpinBox = QSpinBox()
                ed.setRange(int(lo), int(hi))
            else:
                ed = QDoubleSpinBox()
                ed.setDecimals(dec)
                ed.setRange(lo, hi)
            self.editors[key] = ed
            form.addRow(label, ed)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("a new folder in the temp directory")
        self.overwrite = QCheckBox("overwrite an existing run store")
        form.addRow("output store", self.out_edit)
        form.addRow("", self.overwrite)

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("scenario file"))
        lay.addLayout(row)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)
        self._fill(self._base)

    # ---------------------------------------------------------------- scenario
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Scenario", "", "TOML scenarios (*.toml)")
        if path:
            self.scenario_edit.setText(path)
            self.load_scenario(path)

    def load_scenario(self, path: str) -> bool:
        """Load a TOML scenario (empty path: built-in defaults) into the editors.

        Returns
        -------
        bool
            False (and the error in the status line) if the file is not a valid scenario.
        """
        from niche3d.scenario import Scenario, ScenarioError, load_scenario

        try:
            self._base = load_scenario(path) if path.strip() else Scenario.default()
        except ScenarioError as exc:
            self.status.setText(f"scenario error: {exc}")
            return False
        self._fill(self._base)
        self.status.setText(f"loaded {path or 'defaults'} ({self._base.name})")
        return True

    def _fill(self, sc: Any) -> None:
        data = sc.to_dict()
        for key, ed in self.editors.items():
            node: Any = data
            for part in key.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
            ed.setValue(int(node) if isinstance(ed, QSpinBox) else float(node))

    def scenario(self) -> Any:
        """The loaded scenario with the editors' values applied (validated).

        Raises
        ------
        niche3d.scenario.ScenarioError
            If the combination is invalid.
        """
        over: dict[str, Any] = {}
        shape = [self.editors[f"domain.shape.{i}"].value() for i in range(3)]
        over["domain.shape"] = shape
        for key, ed in self.editors.items():
            if not key.startswith("domain.shape"):
                over[key] = ed.value()
        return self._base.with_overrides(over)

    # ---------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._worker is not None

    def start(self) -> None:
        """Validate the scenario and start the run in a worker thread."""
        from napari.qt.threading import create_worker

        from niche3d.scenario import ScenarioError

        if self.running:
            return
        try:
            sc = self.scenario()
        except ScenarioError as exc:
            self.status.setText(f"scenario error: {exc}")
            return
        out = self.out_edit.text().strip() or str(
            Path(tempfile.mkdtemp(prefix="niche3d-")) / f"{sc.name}.zarr"
        )
        self.out_path = str(Path(out).resolve())
        self.error = None
        self._cancel_requested.clear()
        self._shown_records = 0
        self.progress.setValue(0)
        self.status.setText(f"building {sc.name} …")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        # errors are shown in the status line (and kept in .error), not re-raised in the GUI loop
        worker = create_worker(self._work, sc, self.out_path, self.overwrite.isChecked(), _ignore_errors=True)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _work(self, sc: Any, out: str, overwrite: bool) -> str:
        from niche3d.simulation import Simulation

        sim = Simulation(sc, out=out, overwrite=overwrite)
        self._sim = sim
        try:
            self._bridge.progress.emit(0.0, sim.t_hours, sim.records_written)
            if self._cancel_requested.is_set():
                return "cancelled"

            def progress(fraction: float, t_hours: float) -> None:
                self._bridge.progress.emit(float(fraction), float(t_hours), int(sim.records_written))

            sim.run(sc.run.days, progress=progress)
            return "cancelled" if self._cancel_requested.is_set() else "finished"
        finally:
            sim.close()  # the store complete and its writer lock released

    def cancel(self) -> None:
        """Ask the running simulation to stop after its current step (thread-safe)."""
        self._cancel_requested.set()
        if self._sim is not None:
            self._sim.cancel()
        self.status.setText("cancelling …")

    def _on_progress(self, fraction: float, t_hours: float, records: int) -> None:
        self.progress.setValue(int(round(1000 * fraction)))
        self.status.setText(f"t = {t_hours:g} h ({t_hours / 24:.2f} d), {records} records")
        now = time.monotonic()
        if records > self._shown_records and (now - self._last_refresh > 0.25 or fraction >= 1):
            self._show()

    def _show(self) -> None:
        # The simulation counts a record when it hands it to its background writer; the
        # store commits it a moment later. Remember what the store held when the layers
        # were read (never the simulation's count), so the final refresh is not skipped.
        committed = _records_written(self.out_path)
        add_run_layers(self.viewer, self.out_path)
        decorate(self.viewer)  # scale bar, time, axes, the 2D slab of cells (once)
        self._shown_records = committed
        self._last_refresh = time.monotonic()
        run = open_run_cached(self.out_path)
        if run.n_records:
            _set_t(self.viewer, float(run.times_h[-1]))

    def _on_done(self, how: str) -> None:
        if self.out_path and _records_written(self.out_path) > self._shown_records:
            self._show()
        if how == "finished":
            self.progress.setValue(1000)
        self.status.setText(f"{how}: {self.out_path}")

    def _on_error(self, exc: BaseException) -> None:
        self.error = exc
        self.status.setText(f"run failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        self._sim = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


# ====================================================================== plots
class _PlotWidget(QWidget):
    def __init__(self, viewer: Any, height: float = 3.0) -> None:
        super().__init__()
        self.viewer = viewer
        self.figure = Figure(figsize=(4.0, height), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        # a dock shared with other widgets must not squeeze the plot to a strip
        self.canvas.setMinimumHeight(int(70 * height))
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.chooser = _RunChooser(viewer)
        self.chooser.currentTextChanged.connect(lambda _: self.redraw())
        self.cursors: list[Any] = []
        self._drawn_records = -1
        viewer.dims.events.current_step.connect(self._on_time)
        viewer.dims.events.range.connect(self._on_range)

    @property
    def path(self) -> str | None:
        """The selected run store (None if no run is open)."""
        return self.chooser.currentText() or None

    def run(self) -> Any:
        """The selected run, or None."""
        return open_run_cached(self.path) if self.path else None

    def _on_time(self, *_: Any) -> None:
        t = _current_t(self.viewer)
        for line in self.cursors:
            line.set_xdata([t, t])
        if self.cursors:
            self.canvas.draw_idle()

    def _on_click(self, event: Any) -> None:
        if event.inaxes is None or event.xdata is None or self.path is None:
            return
        run = self.run()
        if run is not None and run.n_records:
            _set_t(self.viewer, float(run.times_h[nearest_record(run.times_h, event.xdata)]))

    def _on_range(self, *_: Any) -> None:
        # the store grew (a run streaming into the viewer): redraw once per new record
        if self.path is not None and _records_written(self.path) != self._drawn_records:
            self.redraw()


#: what the metrics panel plots first: the HSCs in the block, the dormant ones, and the
#: HSCs in the mouse's blood (the trafficking a mobilization changes)
DEFAULT_METRICS: tuple[str, ...] = ("hsc_total", "n_dormant", "blood_hsc_per_mouse")


class MetricsPanel(_PlotWidget):
    """Time series of the selected run's metrics, with a cursor at the time slider.

    Clicking a plot moves the time slider to the nearest record.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, height=4.0)
        self.metric_list = QListWidget()
        self.metric_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.metric_list.setMaximumHeight(110)
        self.metric_list.itemSelectionChanged.connect(self._draw)
        lay = QVBoxLayout(self)
        lay.addWidget(self.chooser)
        lay.addWidget(self.metric_list)
        lay.addWidget(self.canvas, 1)
        self.redraw()

    def selected(self) -> list[str]:
        """The metric columns being plotted."""
        return [it.text() for it in self.metric_list.selectedItems()]

    def select(self, names: list[str]) -> None:
        """Plot exactly these metric columns.

        Raises
        ------
        ValueError
            If a name is not a metric of the selected run.
        """
        have = [self.metric_list.item(i).text() for i in range(self.metric_list.count())]
        bad = [n for n in names if n not in have]
        if bad:
            raise ValueError(f"unknown metrics {bad}; the run has: {', '.join(have)}")
        self.metric_list.blockSignals(True)
        for i in range(self.metric_list.count()):
            it = self.metric_list.item(i)
            it.setSelected(it.text() in names)
        self.metric_list.blockSignals(False)
        self._draw()

    def redraw(self) -> None:
        """Re-read the selected run's metric list and redraw."""
        run = self.run()
        self._drawn_records = _records_written(self.path) if self.path else -1
        keep = set(self.selected())
        self.metric_list.blockSignals(True)
        self.metric_list.clear()
        cols: list[str] = []
        if run is not None:
            m = run.metrics
            cols = [c for c in m.columns if c not in _NOT_METRICS and np.issubdtype(m[c].dtype, np.number)]
        self.metric_list.addItems(cols)
        chosen = [c for c in cols if c in keep] or [c for c in DEFAULT_METRICS if c in cols] or cols[:3]
        for i in range(self.metric_list.count()):
            it = self.metric_list.item(i)
            it.setSelected(it.text() in chosen)
        self.metric_list.blockSignals(False)
        self._draw()

    def _draw(self) -> None:
        self.figure.clear()
        self.cursors = []
        run = self.run()
        names = self.selected()
        if run is None or not names:
            ax = self.figure.add_subplot(111)
            ax.text(0.5, 0.5, "no run open" if run is None else "select metrics", ha="center", va="center")
            ax.set_axis_off()
            self.canvas.draw_idle()
            return
        m = run.metrics
        axes = self.figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
        t = _current_t(self.viewer)
        for ax, name in zip(axes, names, strict=True):
            ax.plot(m["t"].to_numpy(), m[name].to_numpy(), marker=".", lw=1.2)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
            self.cursors.append(ax.axvline(t, color="crimson", lw=1.0))
        axes[-1].set_xlabel("t (h)", fontsize=8)
        self.canvas.draw_idle()


class InterventionTimeline(_PlotWidget):
    """When each intervention of the selected run's scenario acted, with a time cursor.

    Bars span the interval each intervention acted (see
    :func:`napari_niche3d._analysis.intervention_schedule`); ticks mark doses.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, height=2.0)
        self.schedule = intervention_schedule(_empty_scenario(), 0.0)
        lay = QVBoxLayout(self)
        lay.addWidget(self.chooser)
        lay.addWidget(self.canvas, 1)
        self.redraw()

    def redraw(self) -> None:
        """Recompute the schedule of the selected run and redraw."""
        self.figure.clear()
        self.cursors = []
        ax = self.figure.add_subplot(111)
        run = self.run()
        self._drawn_records = _records_written(self.path) if self.path else -1
        if run is None:
            self.schedule = intervention_schedule(_empty_scenario(), 0.0)
            ax.text(0.5, 0.5, "no run open", ha="center", va="center")
            ax.set_axis_off()
            self.canvas.draw_idle()
            return
        t_end = max(float(run.scenario.run.days) * 24.0, float(run.times_h[-1]) if run.n_records else 0.0)
        self.schedule = intervention_schedule(run.scenario, t_end)
        n = len(run.scenario.interventions)
        if n == 0:
            ax.text(0.5, 0.5, "no interventions in this scenario", ha="center", va="center")
        palette = {"knockout": "tab:purple", "amd3100": "tab:orange", "gcsf": "tab:green",
                   "5fu": "tab:red", "transplant": "tab:blue", "irradiation": "tab:brown"}
        labels: dict[int, str] = {}
        for r in self.schedule.itertuples():
            y = n - 1 - r.row
            labels[y] = r.label
            ax.broken_barh([(r.start_h, max(r.end_h - r.start_h, 1e-9))], (y - 0.35, 0.7),
                           color=palette.get(r.kind, "gray"), alpha=0.6)
            for d in r.doses_h:
                ax.plot([d, d], [y - 0.4, y + 0.4], color="black", lw=1.5)
        ax.set_yticks(sorted(labels), [labels[k] for k in sorted(labels)], fontsize=7)
        ax.set_ylim(-0.6, max(n, 1) - 0.4)
        ax.set_xlim(0.0, max(t_end, 1.0))
        ax.set_xlabel("t (h)", fontsize=8)
        ax.tick_params(labelsize=7)
        self.cursors.append(ax.axvline(_current_t(self.viewer), color="crimson", lw=1.0))
        self.canvas.draw_idle()


def _empty_scenario() -> Any:
    from niche3d.scenario import Scenario

    return Scenario.default().model_copy(update={"interventions": []})


# ====================================================================== inspector
class CellInspector(QWidget):
    """Click a cell (or select it) in a ``cells`` Points layer to see its history,
    lineage, events and the local field values at the current time.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    HISTORY_COLUMNS: tuple[str, ...] = ("t", "state", "z", "y", "x", "bound", "generation", "divisions")

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.track_id: int | None = None
        self.path: str | None = None
        self.title = QLabel("click a cell in a 'cells' layer")
        self.title.setWordWrap(True)
        self.lineage = QLabel("")
        self.lineage.setWordWrap(True)
        self.local = QLabel("")
        self.local.setWordWrap(True)
        self.table = QTableWidget(0, len(self.HISTORY_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.HISTORY_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.events = QLabel("")
        self.events.setWordWrap(True)
        lay = QVBoxLayout(self)
        for w in (self.title, self.lineage, self.local, self.table, self.events):
            lay.addWidget(w)
        self._hooked: set[int] = set()
        viewer.layers.events.inserted.connect(self._hook_layers)
        viewer.dims.events.current_step.connect(self._update_local)
        self._hook_layers()

    def _hook_layers(self, *_: Any) -> None:
        for ly in self.viewer.layers:
            role = ly.metadata.get("niche3d", {}).get("role") if isinstance(ly.metadata, dict) else None
            if role == "cells" and id(ly) not in self._hooked:
                self._hooked.add(id(ly))
                ly.mouse_drag_callbacks.append(self._on_click)
                ly.selected_data.events.items_changed.connect(
                    lambda *_, layer=ly: self._on_selection(layer)
                )

    def _on_selection(self, layer: Any) -> None:
        sel = sorted(layer.selected_data)
        if sel:
            self._show_point(layer, sel[-1])

    def _on_click(self, layer: Any, event: Any) -> None:
        idx = layer.get_value(
            event.position,
            view_direction=event.view_direction,
            dims_displayed=event.dims_displayed,
            world=True,
        )
        if idx is not None:
            self._show_point(layer, int(idx))

    def _show_point(self, layer: Any, index: int) -> None:
        tid = int(layer.features["track_id"].iloc[index])
        self.show_cell(tid, path=layer.metadata["niche3d"]["path"])

    def show_cell(self, track_id: int, path: str | None = None) -> None:
        """Show one cell of the run at ``path`` (default: the last run inspected or opened).

        Raises
        ------
        ValueError
            If no run is open or ``track_id`` is not a cell of the run.
        """
        path = path or self.path or (run_paths(self.viewer) or [None])[-1]
        if path is None:
            raise ValueError("no niche3d run is open in the viewer")
        run = open_run_cached(path)
        hist = cell_history(run.cells, track_id)
        lin = cell_lineage(run.cells, track_id)
        self.path, self.track_id = path, int(track_id)
        last = hist.iloc[-1]
        self.title.setText(
            f"cell {self.track_id}: {len(hist)} records, {hist['t'].iloc[0]:g}–{hist['t'].iloc[-1]:g} h, "
            f"last state {last['state']}"
        )
        anc = " ← ".join(str(a) for a in lin["ancestors"]) or "none (founder)"
        daughters = ", ".join(str(d) for d in lin["daughters"]) or "none"
        self.lineage.setText(
            f"generation {lin['generation']}; ancestors: {anc}; daughters: {daughters}; "
            f"descendants: {lin['descendants']}"
        )
        self.table.setRowCount(len(hist))
        for r, row in enumerate(hist.itertuples(index=False)):
            rec = row._asdict()
            for c, col in enumerate(self.HISTORY_COLUMNS):
                v = rec.get(col, "")
                text = f"{v:.1f}" if isinstance(v, float) else str(v)
                self.table.setItem(r, c, QTableWidgetItem(text))
        ev = run.events
        if len(ev):
            mine = ev[(ev["cell"].to_numpy() == self.track_id) | (ev["other"].to_numpy() == self.track_id)]
            self.events.setText(
                "events: " + "; ".join(f"{t:g} h {k}" for t, k in zip(mine["t_hours"], mine["kind"], strict=True))
                if len(mine) else "events: none"
            )
        else:
            self.events.setText("events: none")
        self._update_local()

    def local_values(self) -> dict[str, float]:
        """Field values in the inspected cell's voxel at the current time ({} if off-lattice)."""
        if self.track_id is None or self.path is None:
            return {}
        run = open_run_cached(self.path)
        t = _current_t(self.viewer)
        hist = cell_history(run.cells, self.track_id)
        at = hist.iloc[nearest_record(hist["t"].to_numpy(), t)]
        if abs(float(at["t"]) - float(run.times_h[nearest_record(run.times_h, t)])) > 1e-9:
            return {}
        if not all(math.isfinite(float(at[d])) for d in ("z", "y", "x")):
            return {}
        return field_values_at(run.fields, float(at["t"]), float(at["z"]), float(at["y"]), float(at["x"]))

    def _update_local(self, *_: Any) -> None:
        if self.track_id is None:
            return
        vals = self.local_values()
        run = open_run_cached(self.path)
        units = {n: run.fields[n].attrs.get("units", "") for n in run.fields.data_vars}
        t = _current_t(self.viewer)
        if vals:
            self.local.setText(f"at t = {t:g} h: " + ", ".join(f"{k} = {v:.4g} {units[k]}" for k, v in vals.items()))
        else:
            self.local.setText(f"at t = {t:g} h: not on the lattice (circulating, dead or not yet born)")

