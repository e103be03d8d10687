"""Test data and fixtures of the plugin tests . There is no conftest.py here, so the core
tests' ``from conftest import ...`` never picks up this directory's; each test module binds
the fixtures it uses with :func:`store_fixture`.

A small run store with known content, written by niche3d's RunWriter.

Content (every number below is asserted somewhere):

- lattice (12, 16, 20) voxels of 8 µm; 3 records every 12 h (t = 0, 12, 24 h);
- field ``cxcl12`` (nM, window (0, 5000)) = 1000 t_index + 100 z + 10 y + x at voxel (z, y, x);
  field ``scf`` (ng/mL, window (0, 2)) = 1.0 everywhere;
- tissue: bone for z < 3, endosteum at z == 3, sinusoid where (y - 8)^2 + (x - 10)^2 <= 4 and
  z >= 4, marrow elsewhere; at record 2 the endosteum is ablated (marrow);
- cells: track 1 (founder, dormant, bound) at voxel (6, 4, 5) at every record; at record 1 it
  divides into tracks 2 and 3 (parent 1, generation 1, active) at (6, 4, 6) and (6, 5, 5);
  track 4 (founder, mpp) circulates (-1) at every record; track 5 (donor, dormant) appears at
  record 2 at (10, 12, 15).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHAPE = (12, 16, 20)
VOXEL = 8.0
RECORD_H = 12.0
N_REC = 3
STATES = ["dormant", "active", "mpp", "circulating", "dead"]
EVENTS = ["birth", "division", "state_change", "death", "egress", "homing"]


def cxcl12_value(t_index: int, z: int, y: int, x: int) -> float:
    """The known cxcl12 value of the test store."""
    return 1000.0 * t_index + 100.0 * z + 10.0 * y + x


def _labels(record: int) -> np.ndarray:
    from niche3d.tissue.codes import Tissue

    z, y, x = np.indices(SHAPE)
    lab = np.full(SHAPE, Tissue.MARROW, dtype=np.uint8)
    lab[z < 3] = Tissue.BONE
    lab[z == 3] = Tissue.ENDOSTEUM if record < 2 else Tissue.MARROW
    lab[((y - 8) ** 2 + (x - 10) ** 2 <= 4) & (z >= 4)] = Tissue.SINUSOID
    return lab


def _cells(record: int) -> dict[str, np.ndarray]:
    rows = [(1, -1, 0, 0, 6, 4, 5, True, False, 1 if record >= 1 else 0)]
    if record >= 1:
        rows += [(2, 1, 1, 1, 6, 4, 6, False, False, 0), (3, 1, 1, 1, 6, 5, 5, False, False, 0)]
    rows.append((4, -1, 0, 2, -1, -1, -1, False, False, 0))
    if record >= 2:
        rows.append((5, -1, 0, 0, 10, 12, 15, False, True, 0))
    cols = list(zip(*rows, strict=True))
    return {
        "track_id": np.array(cols[0], np.int64),
        "parent": np.array(cols[1], np.int64),
        "generation": np.array(cols[2], np.int32),
        "state": np.array(cols[3], np.int8),
        "z": np.array(cols[4], np.int32),
        "y": np.array(cols[5], np.int32),
        "x": np.array(cols[6], np.int32),
        "bound": np.array(cols[7], bool),
        "donor": np.array(cols[8], bool),
        "divisions": np.array(cols[9], np.int32),
    }


def write_test_store(path: Path, *, interventions: list[dict] | None = None) -> Path:
    """Write the documented test store at ``path`` with niche3d's RunWriter."""
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario

    sc = Scenario.default().with_overrides(
        {"name": "plugin-test", "domain.shape": list(SHAPE), "domain.voxel_um": VOXEL,
         "output.interval_hours": RECORD_H, "run.days": 1.0, "run.seed": 3}
    )
    if interventions:
        sc = Scenario.from_dict({**sc.to_dict(), "interventions": interventions})
    w = RunWriter.create(
        path, scenario=sc, labels=_labels(0), voxel_um=VOXEL, record_hours=RECORD_H,
        n_records=N_REC, fields=[("cxcl12", "nM", (0.0, 5000.0)), ("scf", "ng/mL", (0.0, 2.0))],
        seed=3, code_version="test", dt_hours=1.0,
    )
    w.set_categories("cells", "state", STATES)
    w.set_categories("events", "kind", EVENTS)
    w.set_categories("events", "state", STATES)
    z, y, x = np.indices(SHAPE)
    for r in range(N_REC):
        if r == 1:
            w.append_events({
                "t_hours": np.array([12.0, 12.0]), "kind": np.array([1, 1], np.int8),
                "cell": np.array([1, 1], np.int64), "other": np.array([2, 3], np.int64),
                "z": np.array([6, 6], np.int32), "y": np.array([4, 5], np.int32),
                "x": np.array([6, 5], np.int32), "state": np.array([1, 1], np.int8),
            })
        w.write_record(
            r, r * RECORD_H,
            fields={"cxcl12": (1000.0 * r + 100.0 * z + 10.0 * y + x).astype(np.float32),
                    "scf": np.ones(SHAPE, np.float32)},
            labels=_labels(r), cells=_cells(r),
            metrics={"n_hsc": float(len(_cells(r)["track_id"])), "bound_fraction": 1.0 / len(_cells(r)["track_id"])},
        )
    return path


def display_possible() -> bool:
    """Whether GUI tests have a display: a real one, or the Xvfb that pytest-xvfb starts
    (and exports as DISPLAY) before collection when the Xvfb binary is installed."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


INTERVENTIONS = [
    {"kind": "amd3100", "dose_days": [0.25, 0.5], "half_life_hours": 1.0},
    {"kind": "gcsf", "start_day": 0.0, "doses": 2, "protease_half_life_hours": 2.0},
    {"kind": "knockout", "field": "cxcl12", "sources": {"stroma": 0.0}, "start_day": 0.5},
]


def store_fixture(interventions: list[dict] | None = None) -> Any:
    """A session fixture returning the path of the test store (one of each intervention kind
    in the scenario if ``interventions``); test modules bind it to a name (no conftest.py)."""

    @pytest.fixture(scope="session")
    def _store(tmp_path_factory: pytest.TempPathFactory) -> str:
        return str(write_test_store(tmp_path_factory.mktemp("store") / "run.zarr", interventions=interventions).resolve())

    return _store


if not display_possible():
    # no screen and no Xvfb: GUI tests skip; widget tests on a ViewerModel run offscreen
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
