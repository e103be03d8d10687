"""The legend dock: what each tissue colour and each cell colour means, the depth of the
slab of cells shown in 2D, and a button that saves a movie of the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtGui import QColor, QPainter, QPixmap
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_niche3d._display import DEFAULT_DEPTH_UM, decorate

if TYPE_CHECKING:
    import napari

__all__ = ["Legend", "legend_entries"]

_SWATCH_PX = 14


def legend_entries(viewer: Any) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """``{"tissue": [(name, rgba), ...], "cells": [(state, rgba), ...]}`` of the run layers
    shown in ``viewer`` (tissue names in code order, marrow left out as it is drawn
    transparent; cell states in their category order). Empty lists without run layers."""
    from niche3d.tissue.codes import TISSUE_COLORS, TISSUE_NAMES

    tissue: list[tuple[str, tuple[float, float, float, float]]] = []
    cells: list[tuple[str, tuple[float, float, float, float]]] = []
    for layer in viewer.layers:
        meta = (layer.metadata or {}).get("niche3d", {}) if isinstance(layer.metadata, dict) else {}
        role = meta.get("role")
        if role == "tissue" and not tissue:
            for code, name in TISSUE_NAMES.items():
                rgba = tuple(float(c) for c in TISSUE_COLORS[code])
                if name != "marrow" and rgba[3] > 0:
                    tissue.append((name, rgba))  # type: ignore[arg-type]
        elif role == "cells" and not cells:
            colours = meta.get("state_colors") or {}
            cells = [(str(k), tuple(float(c) for c in v)) for k, v in colours.items()]  # type: ignore[misc]
    return {"tissue": tissue, "cells": cells}


def _swatch(rgba: tuple[float, float, float, float]) -> QLabel:
    """A square of the colour in a grey frame (a white or pale colour still shows)."""
    pix = QPixmap(_SWATCH_PX, _SWATCH_PX)
    pix.fill(QColor.fromRgbF(*(min(max(c, 0.0), 1.0) for c in rgba[:3]), 1.0))
    painter = QPainter(pix)
    painter.setPen(QColor(90, 90, 90))
    painter.drawRect(0, 0, _SWATCH_PX - 1, _SWATCH_PX - 1)
    painter.end()
    lab = QLabel()
    lab.setPixmap(pix)
    return lab


class Legend(QWidget):
    """Colour keys of the tissue and the cell states of the run layers, and the 2D depth.

    Parameters
    ----------
    viewer
        The napari viewer; the legend follows its layers.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.decor = decorate(viewer)
        self.tissue_box = QGroupBox("tissue")
        self.cells_box = QGroupBox("cells (HSC states and MPPs)")
        self.depth = QDoubleSpinBox()
        self.depth.setRange(0.0, 500.0)
        self.depth.setSingleStep(8.0)
        self.depth.setSuffix(" µm")
        self.depth.setValue(self.decor.depth_um if self.decor.depth_um is not None else DEFAULT_DEPTH_UM)
        self.depth.setToolTip("In 2D, cells whose centre is within this distance of the plane are drawn, "
                              "smaller the farther they are")
        self.depth.valueChanged.connect(self.decor.set_depth)
        form = QFormLayout()
        form.addRow("cells shown within", self.depth)
        self.movie_button = QPushButton("Save movie...")
        self.movie_button.setToolTip("Step through every record of the run as shown now (2D slice or "
                                     "3D view, turning once in 3D) and save an mp4 or gif")
        self.movie_button.clicked.connect(self._ask_movie)
        self.movie_status = QLabel("")
        lay = QVBoxLayout(self)
        lay.addWidget(self.cells_box)
        lay.addWidget(self.tissue_box)
        lay.addLayout(form)
        lay.addWidget(self.movie_button)
        lay.addWidget(self.movie_status)
        lay.addStretch(1)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def _ask_movie(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save movie", "run.mp4", "Movies (*.mp4 *.mov *.avi *.mkv *.gif)")
        if path:
            self.save_movie(path)

    def save_movie(self, path: str) -> None:
        """Write the movie of the view as it is now (2D or 3D) to ``path``; errors are shown
        under the button."""
        from napari_niche3d._movie import save_movie

        mode = "3d" if self.viewer.dims.ndisplay == 3 else "2d"
        try:
            out = save_movie(self.viewer, path, mode=mode, frames_per_record=4 if mode == "3d" else 1)
        except ValueError as exc:
            self.movie_status.setText(f"not saved: {exc}")
            return
        self.movie_status.setText(f"saved {out.name}")

    def refresh(self, *_: Any) -> None:
        """Rebuild the keys from the viewer's run layers."""
        entries = legend_entries(self.viewer)
        for box, key in ((self.tissue_box, "tissue"), (self.cells_box, "cells")):
            old = box.layout()
            if old is not None:
                while old.count():
                    item = old.takeAt(0)
                    if item.widget() is not None:
                        item.widget().deleteLater()
                QWidget().setLayout(old)  # detach the old layout so a new one can be set
            grid = QGridLayout()
            grid.setHorizontalSpacing(6)
            grid.setVerticalSpacing(2)
            rows = entries[key]
            if not rows:
                grid.addWidget(QLabel("no run open"), 0, 0)
            for i, (name, rgba) in enumerate(rows):
                grid.addWidget(_swatch(rgba), i, 0)
                grid.addWidget(QLabel(name.replace("_", " ")), i, 1)
            box.setLayout(grid)
