"""What the analysis functions read: one adapter over a run store and a live simulation.

Every function of :mod:`niche3d.analysis` takes ``src``: a :class:`niche3d.io.Run`, a
path to a run store, a live :class:`niche3d.simulation.Simulation`, or a :class:`Source`
(built by :func:`as_source`, or by :meth:`Source.from_arrays` from hand-made data such as
segmented imaging). They all read it through :class:`Source`, which gives

- a sequence of **time points** (``record`` 0, 1, ... with their times ``times_h``),
- the cells of every time point (the ``Run.cells`` layout: ``z, y, x`` in µm at voxel
  centres, NaN for cells in blood; ``state`` as names), the events (``Run.events``
  layout, with ``other_state`` as names and ``other_z, other_y, other_x`` in µm too) and
  the metrics (one row per time point, ``record`` and ``t`` in hours),
- the lattice, the niche-site map and each field at a time point.

How a live simulation maps onto time points
-------------------------------------------
A :class:`~niche3d.simulation.Simulation` with a run store (``Simulation(scenario,
path)``) has its committed records as history: they are read with
:func:`~niche3d.io.open_run`, and its current state is added as one more time point only
when it is later than the last record (after ``sim.step(n)`` to a time between records).
When the simulation sits on a record (after ``sim.run()``), the current state *is* that
record, so the live simulation and ``open_run(path)`` give identical results. Events not
yet written (after the last record) are read from the model's pending event log without
draining it, so the store still receives them.

An in-memory simulation (``Simulation(scenario)``, no store) keeps no past snapshots or
metrics: it is **one** time point, its current state. It does keep every event since
set-up (nothing drains them without a store), so event-based results (division modes,
clone sizes and lineage trees, egress and homing counts) cover the whole run; results
over time (fractions, blood counts) have that one row per category. Record a store to get
the history.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from niche3d.analysis._common import (
    EVENT_COLUMNS,
    check_number,
    normalise_cells,
    normalise_events,
)
from niche3d.tissue.lattice import Lattice

__all__ = ["Source", "as_source", "SourceLike"]

#: what every analysis function accepts as ``src``
SourceLike = Any  # Run | Simulation | str | os.PathLike | Source


class _Now:
    """One time point held in memory (a live simulation's state, or hand-made arrays)."""

    def __init__(self, *, t_hours: float, lattice: Lattice, cells: pd.DataFrame,
                 events: pd.DataFrame, metrics: Mapping[str, float] | None,
                 fields: Callable[[str], np.ndarray | None], field_names: tuple[str, ...],
                 niche: Callable[[], np.ndarray | None], scenario: Any) -> None:
        self.t_hours, self.lattice, self.cells, self.events = t_hours, lattice, cells, events
        self.metrics, self.fields, self.field_names = metrics, fields, field_names
        self.niche, self.scenario = niche, scenario


class Source:
    """Time points of a run store and/or a state held in memory (see the module docstring).

    Build one with :func:`as_source` (from a Run, a path or a Simulation) or with
    :meth:`from_arrays`; the analysis functions do this themselves.

    Attributes
    ----------
    label
        What the source is, for messages (a store path or a simulation's repr).
    """

    def __init__(self, run: Any = None, now: _Now | None = None, *, label: str = "") -> None:
        if run is None and now is None:
            raise ValueError("a Source needs a run store, a state in memory, or both")
        self.run = run
        self.label = label or (str(run.path) if run is not None else "in-memory state")
        n_run = len(run.times_h) if run is not None else 0
        keep_now = now is not None and (n_run == 0 or now.t_hours > float(run.times_h[-1]) + 1e-9)
        self._now = now if keep_now else None
        self._lattices: list[Lattice] = [now.lattice] if now is not None else []
        self._n_run = n_run
        self._scenario = now.scenario if now is not None else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, lattice: Lattice, cells: Mapping[str, Any] | pd.DataFrame, *,
                    t_hours: float = 0.0, fields: Mapping[str, np.ndarray] | None = None,
                    niche: np.ndarray | None = None, events: Mapping[str, Any] | pd.DataFrame | None = None,
                    metrics: Mapping[str, float] | None = None, label: str = "arrays") -> Source:
        """One time point from hand-made data (a test geometry, segmented imaging).

        Parameters
        ----------
        lattice
            The geometry.
        cells
            Columns ``z, y, x`` (integer voxel indices, -1 for a cell in blood) and
            ``state`` (names such as ``"dormant"`` or codes); optional ``track_id``,
            ``parent``, ``generation``, ``bound``, ``donor``, ``divisions``, ``birth_hours``.
        t_hours
            Time of the state.
        fields
            Field name -> (z, y, x) array in its unit (nM), for :func:`field_at_cells`.
        niche
            Niche-site map (0 none, 1 free, 2 HSC, 3 other), for ``by="location"``.
        events
            An event table as ``CellModel.drain_events`` gives it (positions as voxel indices).
        metrics
            Metric name -> value (``blood_pool``, ``block_fraction``, ``total_*``, ...).
        label
            Name used in messages.

        Examples
        --------
        >>> import numpy as np
        >>> from niche3d.tissue import Lattice, Tissue
        >>> lab = np.full((4, 4, 10), Tissue.MARROW, np.uint8); lab[:, :, 0] = Tissue.ENDOTHELIUM
        >>> src = Source.from_arrays(Lattice(lab, 8.0), {"z": [1], "y": [1], "x": [3],
        ...                                               "state": ["dormant"]})
        >>> src.cells[["state", "x"]].values.tolist()
        [['dormant', 28.0]]
        """
        if not isinstance(lattice, Lattice):
            raise TypeError(f"lattice must be a niche3d Lattice, got {type(lattice).__name__}")
        v = lattice.voxel_um
        t = check_number(t_hours, "t_hours", low=-math.inf, low_open=True)
        df = normalise_cells(cells, v, voxels=True, record=0, t_hours=t)
        on = df["z"].notna().to_numpy()
        idx = np.round(df[["z", "y", "x"]].to_numpy()[on] / v - 0.5).astype(np.int64)
        if idx.size and ((idx < 0).any() or (idx >= np.array(lattice.shape)).any()):
            raise ValueError(f"cells: voxel indices must lie inside the lattice {lattice.shape}")
        fl = {str(k): np.asarray(a) for k, a in (fields or {}).items()}
        for k, a in fl.items():
            if a.shape != lattice.shape:
                raise ValueError(f"fields[{k!r}] has shape {a.shape}, the lattice {lattice.shape}")
        if niche is not None and np.shape(niche) != lattice.shape:
            raise ValueError(f"niche has shape {np.shape(niche)}, the lattice {lattice.shape}")
        ev = (normalise_events(events, v, voxels=True) if events is not None
              else normalise_events({k: np.zeros(0) for k in EVENT_COLUMNS}, v, voxels=True))
        now = _Now(t_hours=t, lattice=lattice, cells=df, events=ev,
                   metrics=dict(metrics) if metrics is not None else None,
                   fields=fl.get, field_names=tuple(fl),
                   niche=lambda: None if niche is None else np.asarray(niche), scenario=None)
        return cls(None, now, label=label)

    @classmethod
    def from_simulation(cls, sim: Any) -> Source:
        """A live simulation: its store's records (if it writes one) and its current state."""
        run = None
        if getattr(sim, "out", None) is not None:
            from niche3d.io import open_run

            run = open_run(sim.out)
        v = sim.lattice.voxel_um
        snap = sim.cells.snapshot()
        # pending events (since the last record; all since set-up without a store), read
        # without draining: the writer still receives them at the next record
        pending = {k.removeprefix("event_"): a for k, a in sim.cells.state_dict().items()
                   if k.startswith("event_")}
        now = _Now(t_hours=float(sim.t_hours), lattice=sim.lattice,
                   cells=normalise_cells(snap, v, voxels=True, t_hours=float(sim.t_hours),
                                         record=len(run.times_h) if run is not None else 0),
                   events=normalise_events(pending, v, voxels=True), metrics=sim.metrics(),
                   fields=lambda name: np.asarray(sim.fields[name]) if name in sim.fields.names else None,
                   field_names=tuple(sim.fields.names), niche=sim.cells.niche_sites,
                   scenario=sim.scenario)
        return cls(run, now, label=repr(sim))

    # ------------------------------------------------------------------ time points
    @property
    def n_records(self) -> int:
        """Number of time points."""
        return self._n_run + (self._now is not None)

    @cached_property
    def times_h(self) -> np.ndarray:
        """Time of every time point in hours."""
        t = np.asarray(self.run.times_h, dtype=np.float64) if self.run is not None else np.zeros(0)
        return np.append(t, self._now.t_hours) if self._now is not None else t

    @property
    def voxel_um(self) -> float:
        """Voxel edge in µm."""
        return float(self.run.voxel_um) if self.run is not None else self._lattices[0].voxel_um

    @property
    def scenario(self) -> Any:
        """The scenario (None for hand-made arrays)."""
        return self.run.scenario if self.run is not None else self._scenario

    def records(self, spec: Any, *, name: str = "records") -> np.ndarray:
        """Time-point indices from ``"all"``, ``"last"``, an int (negative from the end) or
        a sequence of ints; sorted, unique.

        Raises
        ------
        ValueError
            An unknown word, a non-integer, or an index out of range (the message gives
            the range).
        """
        n = self.n_records
        if isinstance(spec, str) and spec in ("all", "last"):
            if n == 0:
                raise ValueError(f"{name} = {spec!r}: {self.label} has no records yet")
            return np.arange(n) if spec == "all" else np.array([n - 1])
        if isinstance(spec, str):
            raise ValueError(f"{name} = {spec!r}: use 'all', 'last', a record index or a list of them")
        items = [spec] if isinstance(spec, int | np.integer) and not isinstance(spec, bool) else spec
        try:
            vals = list(items)
        except TypeError:
            raise ValueError(f"{name} = {spec!r}: use 'all', 'last', a record index or a list of "
                             "them") from None
        out = []
        for r in vals:
            if isinstance(r, bool) or not isinstance(r, int | np.integer):
                raise ValueError(f"{name} = {spec!r}: record indices must be integers, got {r!r}")
            if not -n <= r < n:
                raise ValueError(f"{name} = {spec!r}: record {r} is out of range; {self.label} has "
                                 f"records 0..{n - 1}" if n else f"{name} = {spec!r}: {self.label} "
                                 "has no records")
            out.append(int(r) % n)
        if not out:
            raise ValueError(f"{name} = {spec!r}: give at least one record")
        return np.unique(np.array(out, dtype=np.int64))

    # ------------------------------------------------------------------ tables
    @cached_property
    def cells(self) -> pd.DataFrame:
        """Cells of every time point (``Run.cells`` layout, positions in µm)."""
        parts = []
        if self.run is not None:
            parts.append(normalise_cells(self.run.cells, self.voxel_um, voxels=False))
        if self._now is not None:
            parts.append(self._now.cells)
        parts = [p for p in parts if len(p)] or parts[:1]
        df = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        df.attrs["units"] = parts[0].attrs["units"]
        return df

    def cells_at(self, record: int) -> pd.DataFrame:
        """Cells of one time point."""
        c = self.cells
        return c[c["record"].to_numpy() == record]

    @cached_property
    def events(self) -> pd.DataFrame:
        """Every event (``Run.events`` layout; positions in µm, both states as names)."""
        parts = []
        if self.run is not None:
            parts.append(normalise_events(self.run.events, self.voxel_um, voxels=False))
        if self._now is not None:
            parts.append(self._now.events)
        parts = [p for p in parts if len(p)] or parts[:1]
        df = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        df.attrs["units"] = parts[0].attrs["units"]
        return df

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per time point: ``record``, ``t`` (h) and the metrics (those the source
        has; hand-made arrays may have none)."""
        rows = []
        if self.run is not None:
            m = self.run.metrics.copy()
            m["record"] = np.arange(len(m), dtype=np.int64)
            rows.append(m)
        if self._now is not None:
            d = {"record": self._n_run, "t": self._now.t_hours, **(self._now.metrics or {})}
            rows.append(pd.DataFrame({k: [v] for k, v in d.items()}))
        df = rows[0] if len(rows) == 1 else pd.concat(rows, ignore_index=True)
        return df.reset_index(drop=True)

    def event_record(self, t_hours: np.ndarray) -> np.ndarray:
        """The time point whose interval ``(t[r-1], t[r]]`` holds each event time (the
        record that received it); -1 after the last time point."""
        r = np.searchsorted(self.times_h, np.asarray(t_hours, dtype=np.float64) - 1e-9, side="left")
        return np.where(r < self.n_records, r, -1)

    # ------------------------------------------------------------------ arrays
    def lattice(self, record: int) -> Lattice:
        """The geometry at a time point (one Lattice object per distinct tissue, so its
        distance maps are computed once)."""
        if self._now is not None and record == self._n_run:
            return self._now.lattice
        if self.run is None:
            return self._lattices[0]
        labels = np.asarray(self.run.tissue.isel(t=int(record)).values)
        for lat in self._lattices:
            if lat.labels.shape == labels.shape and np.array_equal(lat.labels, labels):
                return lat
        lat = Lattice(labels, self.run.voxel_um)
        self._lattices.append(lat)
        return lat

    @property
    def field_names(self) -> tuple[str, ...]:
        """Fields the source holds."""
        if self.run is not None:
            return tuple(self.run.field_names)
        assert self._now is not None
        return self._now.field_names

    def field(self, name: str, record: int) -> np.ndarray | None:
        """A field (z, y, x) at a time point in its unit, or None where the store did not
        record it (``output.fields_every_records``)."""
        if self._now is not None and record == self._n_run:
            return self._now.fields(name)
        a = np.asarray(self.run.fields[name].isel(t=int(record)).values)
        return None if a.size and not np.isfinite(a).any() else a

    def field_unit(self, name: str) -> str:
        """Unit of a field."""
        if self.run is not None:
            return str(self.run.fields[name].attrs.get("units", "nM"))
        sc = self.scenario
        cfg = sc.fields.diffusible.get(name) if sc is not None else None
        return str(getattr(cfg, "units", "nM")) if cfg is not None else "nM"

    def niche(self, record: int) -> np.ndarray | None:
        """The niche-site map at a time point (0 none, 1 free, 2 HSC, 3 other cell), or
        None when the source has none."""
        if self._now is not None and record == self._n_run:
            return self._now.niche()
        if self.run is None or self.run.niche is None:
            return None
        return np.asarray(self.run.niche.isel(t=int(record)).values)


def as_source(src: SourceLike) -> Source:
    """The :class:`Source` of a Run, a run-store path, a live Simulation or a Source.

    Examples
    --------
    >>> src = as_source("runs/homeostasis.zarr")          # doctest: +SKIP
    >>> src.n_records, src.times_h[-1]                    # doctest: +SKIP
    (31, 720.0)

    Raises
    ------
    TypeError
        Anything else.
    niche3d.io.StoreError
        A path that is not a readable run store.
    """
    if isinstance(src, Source):
        return src
    if isinstance(src, str | os.PathLike):
        from niche3d.io import open_run

        return Source(open_run(Path(src)))
    from niche3d.io import Run

    if isinstance(src, Run):
        return Source(src)
    sim_mod = sys.modules.get("niche3d.simulation")  # loaded if src can be a Simulation
    if sim_mod is not None and isinstance(src, sim_mod.Simulation):
        return Source.from_simulation(src)
    raise TypeError(f"src must be a niche3d Run, a run-store path, a Simulation or a Source, "
                    f"got {type(src).__name__}")
