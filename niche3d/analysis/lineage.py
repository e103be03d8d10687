"""Clones and lineage trees from the events and the cell snapshots.

Every cell of the block has a track id. A division keeps the mother's id and gives the
new daughter the next one (``parent`` = the mother), so a *track tree* has one node per
cell track and one edge per division (mother -> daughter, at the division time).
Founders are the cells with no parent: the HSCs seeded at set-up and every HSC that homed
in from the blood (a homed cell gets a new id; its ancestry in the other marrow is not
tracked). A founder's *clone* is the founder and all its descendants.

Ancestry comes from the ``birth`` and ``homing`` events (complete from set-up in a run
store, and in a live simulation's event log) and from the ``parent`` column of the
snapshots; where both know a cell they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from niche3d.analysis._common import check_int
from niche3d.analysis.calibration import HSC_STATES
from niche3d.analysis.source import Source, SourceLike, as_source
from niche3d.cells.codes import STATE_NAMES

__all__ = ["LineageTree", "clone_sizes", "lineage_tree"]

#: states a living cell of the block can be in (the snapshot's states)
_LIVING = tuple(s for s in STATE_NAMES if s != "dead")
#: events that end a cell track in the block
_ENDS = ("death", "exit", "egress", "clearance")


def _nodes(s: Source) -> pd.DataFrame:
    """One row per cell track ever seen: ``track_id``, ``parent``, ``founder``,
    ``generation``, ``origin``, ``birth_hours``, ``birth_state``, ``end_hours``,
    ``end_kind``, ``donor`` and the state at the last time point (``last_state``, NaN if
    the cell is gone)."""
    ev = s.events
    kind = ev["kind"].astype(object).to_numpy()
    born = ev[np.isin(kind, ("birth", "homing"))]
    born = born[~born["cell"].duplicated(keep="first")]
    cells = s.cells
    seen = cells.drop_duplicates("track_id", keep="last")
    ids = np.union1d(born["cell"].to_numpy(), seen["track_id"].to_numpy()).astype(np.int64)
    n = ids.size
    parent = np.full(n, -1, np.int64)
    bi = np.searchsorted(ids, born["cell"].to_numpy())
    parent[bi] = born["other"].to_numpy()
    si = np.searchsorted(ids, seen["track_id"].to_numpy())
    parent[si] = seen["parent"].to_numpy()
    birth = np.full(n, np.nan)
    birth[si] = seen["birth_hours"].to_numpy()
    birth[bi] = born["t_hours"].to_numpy()
    birth_state = np.full(n, None, dtype=object)
    birth_state[bi] = born["state"].astype(object).to_numpy()
    origin = np.where(parent >= 0, "division", "seeded").astype(object)
    homed = born["kind"].astype(object).to_numpy() == "homing"
    origin[bi[homed]] = "homed"
    donor = np.zeros(n, bool)
    donor[si] = seen["donor"].to_numpy(bool)
    # forest by pointer jumping: p -> root, dist -> depth (a parent never seen is a root)
    pidx = np.searchsorted(ids, parent)
    known = (parent >= 0) & (pidx < n) & (ids[np.minimum(pidx, n - 1)] == parent) if n else parent >= 0
    p = np.where(known, pidx, np.arange(n))
    dist = known.astype(np.int64)
    while n and not np.array_equal(p, p[p]):
        dist = dist + dist[p]
        p = p[p]
    founder = ids[p] if n else ids
    ends = ev[np.isin(kind, _ENDS) & (ev["cell"].to_numpy() >= 0)]
    ends = ends[~ends["cell"].duplicated(keep="first")]
    end_h = np.full(n, np.nan)
    end_k = np.full(n, None, dtype=object)
    ei = np.searchsorted(ids, ends["cell"].to_numpy())
    ok = (ei < n) & (ids[np.minimum(ei, n - 1)] == ends["cell"].to_numpy()) if n else ei < 0
    end_h[ei[ok]] = ends["t_hours"].to_numpy()[ok]
    end_k[ei[ok]] = ends["kind"].astype(object).to_numpy()[ok]
    last = s.cells_at(s.n_records - 1) if s.n_records else cells.iloc[:0]
    last_state = np.full(n, None, dtype=object)
    last_state[np.searchsorted(ids, last["track_id"].to_numpy())] = last["state"].astype(object).to_numpy()
    df = pd.DataFrame({"track_id": ids, "parent": parent, "founder": founder, "generation": dist,
                       "origin": origin, "birth_hours": birth, "birth_state": birth_state,
                       "end_hours": end_h, "end_kind": end_k, "donor": donor,
                       "last_state": last_state})
    df.attrs["units"] = {"birth_hours": "hour", "end_hours": "hour"}
    return df


def clone_sizes(src: SourceLike, *, records: int | Iterable[int] | str = "all") -> pd.DataFrame:
    """Size of every founder's clone in the block, by state, record by record.

    Parameters
    ----------
    src
        A Run, a run-store path, a live Simulation (its whole event log, also without a
        store) or a Source.
    records
        ``"all"`` (default), ``"last"``, a record index or a list.

    Returns
    -------
    pandas.DataFrame
        One row per record x founder born by then (extinct clones included, with 0
        cells): ``record``, ``t_hours``, ``founder`` (track id), ``origin`` (``seeded``
        or ``homed``), ``donor``, ``founder_birth_hours``, ``n_<state>`` for every living
        state (dormant ... mpp, circulating), ``n_hsc`` (the four HSC states) and
        ``n_cells`` (the clone's living cells in the block). Per record, ``n_cells`` sums
        to the number of cells in the snapshot.

    Examples
    --------
    >>> from niche3d.analysis import clone_sizes
    >>> cs = clone_sizes("runs/homeostasis.zarr", records="last")       # doctest: +SKIP
    >>> cs["n_hsc"].value_counts().sort_index()                          # doctest: +SKIP
    """
    s = as_source(src)
    recs = s.records(records)
    nodes = _nodes(s)
    founders = nodes[nodes["parent"] < 0]
    f_of = pd.Series(nodes["founder"].to_numpy(), index=nodes["track_id"].to_numpy())
    parts = []
    for r in recs:
        r = int(r)
        t = float(s.times_h[r])
        c = s.cells_at(r)
        f = f_of.reindex(c["track_id"].to_numpy()).to_numpy()
        counts = pd.crosstab(f, c["state"].astype(object).to_numpy()) if len(c) else pd.DataFrame()
        fr = founders[~(founders["birth_hours"] > t + 1e-9)]
        tab = pd.DataFrame({"record": r, "t_hours": t, "founder": fr["track_id"].to_numpy(),
                            "origin": fr["origin"].to_numpy(), "donor": fr["donor"].to_numpy(),
                            "founder_birth_hours": fr["birth_hours"].to_numpy()})
        for st in _LIVING:
            col = counts[st] if st in counts else pd.Series(dtype=np.int64)
            tab[f"n_{st}"] = col.reindex(tab["founder"].to_numpy(), fill_value=0).to_numpy(np.int64)
        tab["n_hsc"] = tab[[f"n_{x}" for x in HSC_STATES]].sum(axis=1).astype(np.int64)
        tab["n_cells"] = tab[[f"n_{x}" for x in _LIVING]].sum(axis=1).astype(np.int64)
        parts.append(tab)
    df = pd.concat(parts, ignore_index=True)
    df["record"] = df["record"].astype(np.int64)
    df.attrs["units"] = {"t_hours": "hour", "founder_birth_hours": "hour",
                         **{c: "cells" for c in df.columns if c.startswith("n_")}}
    df.attrs["source"] = s.label
    return df


@dataclass(frozen=True)
class LineageTree:
    """A forest of cell tracks (see :func:`lineage_tree`); plain tables, no graph library.

    Attributes
    ----------
    nodes
        One row per track: ``track_id``, ``parent`` (-1 for a founder), ``founder``,
        ``generation`` (divisions from the founder), ``origin`` (``seeded``, ``homed`` or
        ``division``), ``birth_hours``, ``birth_state`` (the state it was born or lodged
        in; a daughter's fate), ``end_hours`` and ``end_kind`` (``death``, ``exit`` into
        the progenitor compartments, ``egress`` into the blood; None while alive),
        ``donor``, ``last_state`` (at the last time point; None if gone) and ``alive``.
    edges
        One row per division: ``parent``, ``child``, ``t_hours``, ``parent_state`` (the
        mother's fate after the division; NaN where the division event is missing),
        ``child_state`` and ``child_generation``.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame

    def children(self, track_id: int) -> list[int]:
        """Track ids of the daughters of a track (in birth order)."""
        e = self.edges
        return e.loc[e["parent"] == track_id].sort_values("t_hours")["child"].astype(int).tolist()

    def descendants(self, track_id: int) -> list[int]:
        """Track ids of every descendant of a track (the track itself excluded), sorted."""
        kids = self.edges.groupby("parent")["child"].apply(list).to_dict()
        out, todo = [], list(kids.get(track_id, []))
        while todo:
            k = int(todo.pop())
            out.append(k)
            todo.extend(kids.get(k, []))
        return sorted(out)

    def living(self) -> pd.DataFrame:
        """The nodes alive at the last time point."""
        return self.nodes[self.nodes["alive"]]


def lineage_tree(src: SourceLike, root: int | None = None) -> LineageTree:
    """The track tree of the cells: who divided into whom, when, with which fates.

    Parameters
    ----------
    src
        A Run, a run-store path, a live Simulation or a Source.
    root
        A track id: keep only its subtree (the track and its descendants). None: every
        founder's tree.

    Returns
    -------
    LineageTree
        ``nodes`` and ``edges`` tables, with ``children``, ``descendants`` and ``living``.

    Raises
    ------
    ValueError
        ``root`` is not a track id of the source.

    Examples
    --------
    >>> from niche3d.analysis import clone_sizes, lineage_tree
    >>> cs = clone_sizes("runs/homeostasis.zarr", records="last")          # doctest: +SKIP
    >>> big = int(cs.sort_values("n_cells").founder.iloc[-1])               # doctest: +SKIP
    >>> tree = lineage_tree("runs/homeostasis.zarr", root=big)             # doctest: +SKIP
    >>> tree.edges[["parent", "child", "t_hours", "parent_state", "child_state"]]  # doctest: +SKIP
    """
    s = as_source(src)
    nodes = _nodes(s)
    if s.n_records:
        last = set(s.cells_at(s.n_records - 1)["track_id"].tolist())
        nodes["alive"] = nodes["track_id"].isin(last)
    else:
        nodes["alive"] = False
    ev = s.events
    div = ev[ev["kind"] == "division"]
    fate = pd.Series(div["state"].astype(object).to_numpy(), index=div["other"].to_numpy())
    fate = fate[~fate.index.duplicated(keep="first")]
    kids = nodes[nodes["parent"] >= 0]
    edges = pd.DataFrame({"parent": kids["parent"].to_numpy(), "child": kids["track_id"].to_numpy(),
                          "t_hours": kids["birth_hours"].to_numpy(),
                          "parent_state": fate.reindex(kids["track_id"].to_numpy()).to_numpy(),
                          "child_state": kids["birth_state"].to_numpy(),
                          "child_generation": kids["generation"].to_numpy()})
    if root is not None:
        root = check_int(root, "root", 0)
        if root not in set(nodes["track_id"].tolist()):
            ids = nodes["track_id"]
            span = f"{int(ids.min())}..{int(ids.max())}" if len(ids) else "none"
            raise ValueError(f"root = {root}: no such track in {s.label} (track ids {span})")
        tree = LineageTree(nodes, edges)
        keep = {root, *tree.descendants(root)}
        nodes = nodes[nodes["track_id"].isin(keep)].reset_index(drop=True)
        edges = edges[edges["child"].isin(keep) & (edges["child"] != root)].reset_index(drop=True)
    units = {"birth_hours": "hour", "end_hours": "hour", "t_hours": "hour"}
    for df in (nodes, edges):
        df.attrs["units"] = {k: v for k, v in units.items() if k in df.columns}
        df.attrs["source"] = s.label
    return LineageTree(nodes, edges)
