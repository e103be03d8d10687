"""Storage of the HSC population: struct of arrays, occupancy grid and event log.

No rules live here: :class:`Population` owns the per-cell columns (sorted by id), the
per-voxel occupancy and the kernels' scratch arrays, and keeps them consistent when
cells are appended, removed or restored; :class:`EventLog` collects event rows until
they are drained. :class:`~niche3d.cells.model.CellModel` steps them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from niche3d.cells import codes as C

__all__ = ["COLUMNS", "EVENT_COLUMNS", "EVENT_DTYPES", "Population", "EventLog"]

#: per-cell columns and their dtypes
COLUMNS: dict[str, Any] = {
    "ids": np.int64,
    "parent": np.int64,
    "generation": np.int32,
    "divisions": np.int32,
    "state": np.int8,
    "prev_state": np.int8,
    "z": np.int32,
    "y": np.int32,
    "x": np.int32,
    "bound": np.uint8,
    "donor": np.uint8,
    "timer": np.float64,
    "lag": np.float64,
    "lastdir": np.int8,
    "birth": np.float64,
}

#: event table columns and their dtypes (see ``CellModel.drain_events``)
EVENT_DTYPES: dict[str, Any] = {
    "t_hours": np.float64, "kind": np.int8, "cell": np.int64, "other": np.int64,
    "z": np.int32, "y": np.int32, "x": np.int32, "state": np.int8,
    "other_z": np.int32, "other_y": np.int32, "other_x": np.int32, "other_state": np.int8,
}
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_DTYPES)

# per-cell work arrays of the kernels (grown with the columns, never stored)
_SCRATCH: dict[str, Any] = {
    "act": np.int8,
    "ev_time": np.float64,
    "changed": np.int8,
    "k_egress": np.float64,
    "target": np.int64,
    "tdir": np.int8,
    "prio": np.uint64,
    "win": np.uint8,
}


class Population:
    """Cells as a struct of arrays plus a one-cell-per-voxel occupancy grid.

    Parameters
    ----------
    shape
        Lattice shape (z, y, x).
    enter
        Flat uint8 mask of the voxels a cell may occupy.

    Attributes
    ----------
    cols : dict of numpy.ndarray
        The :data:`COLUMNS`, valid up to ``n`` (capacity grows by doubling).
    scratch : dict of numpy.ndarray
        Kernel work arrays of the same capacity.
    occ : numpy.ndarray
        int32 per voxel (flat): -1 = empty, else the slot of the cell there.
    n : int
        Living cells (on the lattice and circulating).
    next_id : int
        Id the next new cell gets (ids are never reused).

    Notes
    -----
    Columns are kept sorted by id (daughters are appended, removals compacted
    stably), so slot order is id order and every serial pass is deterministic.
    """

    def __init__(self, shape: tuple[int, int, int], enter: np.ndarray) -> None:
        self.shape = shape
        self.enter = enter
        self.occ = np.full(int(np.prod(shape)), -1, dtype=np.int32)
        self.n = 0
        self.next_id = 0
        self.cap = 0
        self.cols: dict[str, np.ndarray] = {}
        self.scratch: dict[str, np.ndarray] = {}
        self.alloc(1024)

    # ------------------------------------------------------------------ growth
    def alloc(self, cap: int) -> None:
        """Reallocate every column and scratch array to ``cap`` slots (keeps ``n`` rows)."""
        new: dict[str, np.ndarray] = {}
        for name, dt in COLUMNS.items():
            arr = np.zeros(cap, dtype=dt)
            old = self.cols.get(name)
            if old is not None:
                arr[: self.n] = old[: self.n]
            new[name] = arr
        self.cols = new
        self.scratch = {name: np.zeros(cap, dt) for name, dt in _SCRATCH.items()}
        self.cap = cap

    def ensure(self, n: int) -> None:
        """Grow (by doubling) to hold at least ``n`` cells."""
        if n > self.cap:
            cap = self.cap
            while cap < n:
                cap *= 2
            self.alloc(cap)

    def append(self, m: int, code: int, *, donor: bool) -> np.ndarray:
        """Append ``m`` founders in state ``code`` off the lattice; returns their new ids.

        The caller sets positions (and :attr:`occ`) of cells that go on the lattice.
        """
        self.ensure(self.n + m)
        sl = slice(self.n, self.n + m)
        ids = np.arange(self.next_id, self.next_id + m, dtype=np.int64)
        c = self.cols
        c["ids"][sl] = ids
        c["parent"][sl] = -1
        c["generation"][sl] = 0
        c["divisions"][sl] = 0
        c["state"][sl] = code
        c["prev_state"][sl] = code
        c["bound"][sl] = 0
        c["donor"][sl] = 1 if donor else 0
        c["timer"][sl] = 0.0
        c["lag"][sl] = 0.0
        c["lastdir"][sl] = -1
        c["birth"][sl] = 0.0
        self.n += m
        self.next_id += m
        return ids

    # ------------------------------------------------------------------ order and occupancy
    def _flat(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.cols
        on = c["z"][:m] >= 0
        nz, ny, nx = self.shape
        flat = (c["z"][:m].astype(np.int64) * ny + c["y"][:m]) * nx + c["x"][:m]
        return flat, on

    def sort_by_id(self) -> None:
        """Restore id order of the slots (after adding cells out of order)."""
        n = self.n
        order = np.argsort(self.cols["ids"][:n], kind="stable")
        if np.all(order == np.arange(n)):
            return
        for name in COLUMNS:
            a = self.cols[name]
            a[:n] = a[:n][order]
        self.rebuild_occ()

    def rebuild_occ(self) -> None:
        """Recompute the occupancy grid from the positions."""
        self.occ.fill(-1)
        flat, on = self._flat(self.n)
        self.occ[flat[on]] = np.flatnonzero(on).astype(np.int32)

    def compact(self) -> None:
        """Drop cells in state ``dead``, stably, and re-point the occupancy grid."""
        n = self.n
        c = self.cols
        keep = c["state"][:n] != C.S_DEAD
        m = int(np.count_nonzero(keep))
        if m == n:
            return
        for name in COLUMNS:
            a = c[name]
            a[:m] = a[:n][keep]
        self.n = m
        flat, on = self._flat(m)
        self.occ[flat[on]] = np.flatnonzero(on).astype(np.int32)

    def occupied_flat(self) -> np.ndarray:
        """Flat voxel indices (int64) of the cells on the lattice, in id order."""
        flat, on = self._flat(self.n)
        return flat[on]

    # ------------------------------------------------------------------ outputs
    def snapshot(self) -> dict[str, np.ndarray]:
        """One row per living cell, sorted by id (see ``CellModel.snapshot``)."""
        n = self.n
        c = self.cols
        return {
            "track_id": c["ids"][:n].copy(),
            "parent": c["parent"][:n].copy(),
            "generation": c["generation"][:n].copy(),
            "state": c["state"][:n].copy(),
            "z": c["z"][:n].copy(),
            "y": c["y"][:n].copy(),
            "x": c["x"][:n].copy(),
            "bound": c["bound"][:n].astype(bool),
            "donor": c["donor"][:n].astype(bool),
            "divisions": c["divisions"][:n].copy(),
            "birth_hours": c["birth"][:n].copy(),
            "phase_hours_left": c["timer"][:n].copy(),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Columns as ``col_<name>`` copies of the ``n`` living rows."""
        return {f"col_{k}": self.cols[k][: self.n].copy() for k in COLUMNS}

    def load_state_dict(self, d: dict[str, np.ndarray], n: int, next_id: int) -> None:
        """Restore ``col_<name>`` arrays of ``n`` cells after checking they fit the lattice.

        Raises
        ------
        ValueError
            If a column has the wrong length, or a cell sits outside the enterable
            voxels or shares a voxel.
        """
        for k in COLUMNS:
            if np.asarray(d[f"col_{k}"]).shape != (n,):
                raise ValueError(f"state dict column {k!r} has shape {np.asarray(d[f'col_{k}']).shape}, expected ({n},)")
        zz = np.asarray(d["col_z"], dtype=np.int64)
        yy = np.asarray(d["col_y"], dtype=np.int64)
        xx = np.asarray(d["col_x"], dtype=np.int64)
        on = zz >= 0
        nz, ny, nx = self.shape
        if on.any():
            inside = ((zz[on] < nz) & (yy[on] >= 0) & (yy[on] < ny) & (xx[on] >= 0)
                      & (xx[on] < nx)).all()
            flat = (zz[on] * ny + yy[on]) * nx + xx[on] if inside else np.zeros(0, np.int64)
            if not inside or not self.enter[flat].all() or np.unique(flat).size != flat.size:
                raise ValueError(
                    "state dict places cells outside the enterable voxels of this lattice "
                    "(or two cells in one voxel): it belongs to another geometry"
                )
        self.cols = {}
        self.n = 0
        self.alloc(max(1024, 1 << max(n - 1, 1).bit_length()))
        for k, dt in COLUMNS.items():
            self.cols[k][:n] = np.asarray(d[f"col_{k}"], dtype=dt)
        self.n = n
        self.next_id = int(next_id)
        self.rebuild_occ()


class EventLog:
    """Event rows collected since the last drain, as a list of column chunks."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []

    def births(self, pop: Population, ids: np.ndarray, t_hours: float,
               kind: int = C.E_BIRTH) -> None:
        """Log ``birth`` rows (or ``kind`` rows: ``homing``) of cells just appended (the
        last ``ids.size`` slots) and set their birth time."""
        if ids.size == 0:
            return
        c = pop.cols
        sl = slice(pop.n - ids.size, pop.n)
        m = ids.size
        self.chunks.append({
            "t_hours": np.full(m, float(t_hours)),
            "kind": np.full(m, kind, np.int8),
            "cell": ids.copy(),
            "other": np.full(m, -1, np.int64),
            "z": c["z"][sl].copy(),
            "y": c["y"][sl].copy(),
            "x": c["x"][sl].copy(),
            "state": c["state"][sl].copy(),
            "other_z": np.full(m, -1, np.int32),
            "other_y": np.full(m, -1, np.int32),
            "other_x": np.full(m, -1, np.int32),
            "other_state": np.full(m, -1, np.int8),
        })
        c["birth"][sl] = float(t_hours)

    def deaths(self, pop: Population, slots: np.ndarray, t_hours: float) -> None:
        """Log ``death`` rows of the cells at ``slots`` (before they are compacted)."""
        if slots.size == 0:
            return
        c = pop.cols
        m = slots.size
        self.chunks.append({
            "t_hours": np.full(m, float(t_hours)),
            "kind": np.full(m, C.E_DEATH, np.int8),
            "cell": c["ids"][slots].copy(),
            "other": np.full(m, -1, np.int64),
            "z": c["z"][slots].copy(),
            "y": c["y"][slots].copy(),
            "x": c["x"][slots].copy(),
            "state": np.full(m, C.S_DEAD, np.int8),
            "other_z": np.full(m, -1, np.int32),
            "other_y": np.full(m, -1, np.int32),
            "other_x": np.full(m, -1, np.int32),
            "other_state": np.full(m, -1, np.int8),
        })

    def kernel_rows(self, ne: int, ev_t: np.ndarray, ev_i8: np.ndarray, ev_cell: np.ndarray,
                    ev_i4: np.ndarray) -> None:
        """Log the first ``ne`` rows written by ``apply_actions``."""
        if not ne:
            return
        self.chunks.append({
            "t_hours": ev_t[:ne].copy(),
            "kind": ev_i8[:ne, 0].copy(),
            "cell": ev_cell[:ne, 0].copy(),
            "other": ev_cell[:ne, 1].copy(),
            "z": ev_i4[:ne, 0].copy(),
            "y": ev_i4[:ne, 1].copy(),
            "x": ev_i4[:ne, 2].copy(),
            "state": ev_i8[:ne, 1].copy(),
            "other_z": ev_i4[:ne, 3].copy(),
            "other_y": ev_i4[:ne, 4].copy(),
            "other_x": ev_i4[:ne, 5].copy(),
            "other_state": ev_i8[:ne, 2].copy(),
        })

    def drain(self) -> dict[str, np.ndarray]:
        """All rows since the last drain, as one table (and clears them)."""
        if not self.chunks:
            return {k: np.empty(0, dt) for k, dt in EVENT_DTYPES.items()}
        out = {k: np.concatenate([e[k] for e in self.chunks]).astype(EVENT_DTYPES[k], copy=False)
               for k in EVENT_COLUMNS}
        self.chunks = []
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Pending rows as ``event_<column>`` arrays (kept pending)."""
        ev = self.drain()
        self.chunks = [dict(ev)] if ev["t_hours"].size else []
        return {f"event_{k}": v.copy() for k, v in ev.items()}

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore pending rows from ``event_<column>`` arrays."""
        ev = {k: np.asarray(d[f"event_{k}"]).copy() for k in EVENT_COLUMNS}
        self.chunks = [ev] if ev["t_hours"].size else []
