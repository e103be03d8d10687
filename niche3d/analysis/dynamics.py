"""HSC numbers over time: fractions by state, phase and place; division modes; blood.

Fractions are per time point (one snapshot: its cells are the sample, so the Wilson
intervals use the snapshot's count). Event-based quantities are counted per record
interval: record ``r`` holds the events with ``t[r-1] < t_hours <= t[r]`` (the events the
store received with that record; record 0 holds the founders' births at set-up, or, for
an in-memory simulation, everything since set-up).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from niche3d.analysis._common import check_choices, check_number
from niche3d.analysis.calibration import HSC_STATES, hsc_positions
from niche3d.analysis.localisation import COMPARTMENTS, wall_distance_um, wilson_interval
from niche3d.analysis.source import Source, SourceLike, as_source

__all__ = [
    "BY",
    "PHASES",
    "LOCATIONS",
    "ZONES",
    "MODES",
    "DivisionModes",
    "state_fractions",
    "division_modes",
    "circulating_counts",
]

#: groupings of :func:`state_fractions`
BY: tuple[str, ...] = ("state", "phase", "location", "binding", "zone")
#: cell-cycle phases (dormant HSCs count as G0)
PHASES: tuple[str, ...] = ("G0", "G1", "S/G2/M")
_PHASE_OF = {"dormant": "G0", "active_g0": "G0", "active_g1": "G1", "active_sg2m": "S/G2/M"}
#: where an HSC is: on a niche site, in the marrow off the sites, or in the blood (the
#: block's share of the mouse's blood HSCs)
LOCATIONS: tuple[str, ...] = ("niche_site", "marrow", "blood")
#: the nearest niche structure within ``within_um`` (else ``other``)
ZONES: tuple[str, ...] = ("perisinusoidal", "endosteal", "periarteriolar", "other")
_ZONE_OF = {"sinusoid": "perisinusoidal", "endosteum": "endosteal", "arteriole": "periarteriolar"}
#: division modes by the two daughters' fates (HSC + HSC, HSC + MPP, MPP + MPP)
MODES: tuple[str, ...] = ("symmetric_renewal", "asymmetric", "symmetric_differentiation")
#: the cumulative counters (metrics ``total_<name>_{same_side,border}``) of each mode
_MODE_COUNTER = {"symmetric_renewal": "renewal_divisions", "asymmetric": "asymmetric_divisions",
                 "symmetric_differentiation": "differentiating_divisions"}


def _interval(k: float, n: float, conf: float) -> tuple[float, float]:
    """Wilson interval of k in n (NaN for n = 0; rounding noise at 0 and 1 removed)."""
    if not n > 0:
        return math.nan, math.nan
    lo, hi = wilson_interval(k, n, conf)
    return (0.0 if lo < 1e-12 else lo), (1.0 if hi > 1 - 1e-12 else hi)


def _starts(s: Source) -> np.ndarray:
    """Start of each time point's event interval (h): the previous time point, and for
    the first one the start of the simulation (0)."""
    t = s.times_h
    return np.concatenate([[min(0.0, float(t[0]))], t[:-1]]) if t.size else t


def _metric(s: Source, name: str) -> np.ndarray:
    """A metric per time point (NaN where the source lacks it)."""
    m = s.metrics
    return m[name].to_numpy(dtype=np.float64) if name in m else np.full(len(m), np.nan)


def _zones(s: Source, record: int, pos: np.ndarray, within_um: float) -> np.ndarray:
    lat = s.lattice(record)
    best = np.full(len(pos), np.inf)
    zone = np.full(len(pos), "other", dtype=object)
    for name, label in _ZONE_OF.items():  # ties go to the earlier structure
        if not len(pos) or not lat.mask(*COMPARTMENTS[name]).any():
            continue
        d = wall_distance_um(lat, name)[pos[:, 0], pos[:, 1], pos[:, 2]]
        take = (d <= within_um) & (d < best)
        zone[take] = label
        best = np.where(take, d, best)
    return zone


def state_fractions(
    src: SourceLike,
    by: str | Iterable[str] = ("state", "phase", "location"),
    *,
    records: int | Iterable[int] | str = "all",
    within_um: float = 10.0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Fractions of HSCs by state, cycle phase and place, record by record.

    Parameters
    ----------
    src
        A Run, a run-store path, a live Simulation or a Source.
    by
        Groupings, one or more of

        - ``"state"``: dormant, active_g0, active_g1, active_sg2m (HSCs in the block);
        - ``"phase"``: G0 (dormant + active G0), G1, S/G2/M;
        - ``"location"``: ``niche_site`` (an HSC on a niche site, from the niche-site map),
          ``marrow`` (off the sites) and ``blood``: the block's share of the mouse's blood
          HSCs, ``block_fraction * blood_pool`` (an expected number, so not an integer;
          0 for a source without blood metrics);
        - ``"binding"``: bound / unbound (adhered to niche cells);
        - ``"zone"``: perisinusoidal, endosteal, periarteriolar (the nearest of those walls
          within ``within_um``; ties in that order) or other.
    records
        ``"all"`` (default), ``"last"``, a record index or a list.
    within_um
        Distance to a wall (cell centre to wall surface, µm) that places an HSC in a zone.
    confidence
        Level of the Wilson intervals, in (0, 1).

    Returns
    -------
    pandas.DataFrame
        One row per record x grouping x category: ``record``, ``t_hours``, ``by``,
        ``category``, ``count``, ``total`` (HSCs in the block, plus the blood share for
        ``location``), ``fraction`` (NaN when ``total`` is 0), ``ci_low``, ``ci_high``.
        Fractions of one record and grouping sum to 1.

    Raises
    ------
    ValueError
        An unknown grouping, a record out of range, a bad number; ``by="location"`` on a
        store without the niche-site map.

    Examples
    --------
    >>> from niche3d.analysis import state_fractions
    >>> f = state_fractions("runs/homeostasis.zarr", by="phase")        # doctest: +SKIP
    >>> f.pivot(index="t_hours", columns="category", values="fraction")  # doctest: +SKIP
    """
    s = as_source(src)
    groups = check_choices(by, BY, "by")
    recs = s.records(records)
    within_um = check_number(within_um, "within_um")
    conf = check_number(confidence, "confidence", high=1.0, high_open=True)
    block = np.nan_to_num(_metric(s, "block_fraction"), nan=0.0)
    blood = np.nan_to_num(_metric(s, "blood_pool"), nan=0.0) * block
    rows = []
    for r in recs:
        r = int(r)
        c = s.cells_at(r)
        hsc = c[c["state"].isin(HSC_STATES) & c["z"].notna()]
        n = len(hsc)
        states = hsc["state"].astype(str).to_numpy()
        for g in groups:
            total = float(n)
            if g == "state":
                cats, labels = HSC_STATES, states
            elif g == "phase":
                cats, labels = PHASES, np.array([_PHASE_OF[x] for x in states], dtype=object)
            elif g == "binding":
                cats = ("bound", "unbound")
                labels = np.where(hsc["bound"].to_numpy(bool), "bound", "unbound")
            elif g == "zone":
                cats = ZONES
                labels = _zones(s, r, hsc_positions(hsc, s.voxel_um), within_um)
            else:  # location
                niche = s.niche(r)
                if niche is None:
                    raise ValueError(f"by = {by!r}: 'location' needs the niche-site map, which "
                                     f"{s.label} does not hold (a store written before niche "
                                     "sites were recorded); use 'binding' or 'zone'")
                pos = hsc_positions(hsc, s.voxel_um)
                on = niche[pos[:, 0], pos[:, 1], pos[:, 2]] == 2 if n else np.zeros(0, bool)
                cats = LOCATIONS
                labels = np.where(on, "niche_site", "marrow")
                total = n + float(blood[r])
            for cat in cats:
                k = float(blood[r]) if cat == "blood" else float(np.count_nonzero(labels == cat))
                lo, hi = _interval(k, total, conf)
                rows.append((r, float(s.times_h[r]), g, cat, k, total,
                             k / total if total > 0 else math.nan, lo, hi))
    df = pd.DataFrame(rows, columns=["record", "t_hours", "by", "category", "count", "total",
                                     "fraction", "ci_low", "ci_high"])
    df["record"] = df["record"].astype(np.int64)
    df.attrs["units"] = {"t_hours": "hour", "count": "cells", "total": "cells", "fraction": "1"}
    df.attrs["source"] = s.label
    return df


@dataclass(frozen=True)
class DivisionModes:
    """Result of :func:`division_modes`.

    Attributes
    ----------
    by_record
        One row per record x mode: ``record``, ``t_start_hours``, ``t_hours`` (the
        interval ``(t_start, t]``), ``mode``, ``count`` (division events of this mode),
        ``total`` (divisions in the interval), ``fraction``, ``ci_low``, ``ci_high``
        (Wilson), and from the model's counters ``same_side`` and ``border`` (divisions of
        this mode whose daughters sit on one side of a niche border or on two sides) and
        ``border_share`` (NaN where the metrics lack the counters).
    overall
        The same over the whole source, one row per mode (index ``mode``), with
        ``border_ci_low``/``border_ci_high`` (Wilson interval of ``border_share``).
    divisions
        One row per division event: ``t_hours``, ``record``, ``mother``, ``daughter``
        (track ids; the mother keeps hers), ``mother_state``, ``daughter_state`` (fates
        after the division), ``mode``, ``mother_z_um``, ..., ``daughter_x_um``.
    """

    by_record: pd.DataFrame
    overall: pd.DataFrame
    divisions: pd.DataFrame


def _mode(mother: np.ndarray, daughter: np.ndarray) -> np.ndarray:
    hm = np.isin(mother, HSC_STATES)
    hd = np.isin(daughter, HSC_STATES)
    out = np.full(mother.shape, "unknown", dtype=object)
    out[hm & hd] = "symmetric_renewal"
    out[hm ^ hd] = "asymmetric"
    out[(mother == "mpp") & (daughter == "mpp")] = "symmetric_differentiation"
    return out


def division_modes(src: SourceLike, *, confidence: float = 0.95) -> DivisionModes:
    """Symmetric self-renewal, asymmetric and symmetric differentiating divisions.

    A division event carries both daughters' fates (the mother's state after it and the
    new daughter's): two HSCs is symmetric renewal, an HSC and an MPP asymmetric, two MPPs
    symmetric differentiation. Whether the daughters straddled a niche border is not in
    the events; it comes from the model's cumulative counters (metrics
    ``total_<mode>_divisions_{same_side,border}``), per record interval.

    Parameters
    ----------
    src
        A Run, a run-store path, a live Simulation (its whole event history, also without
        a store) or a Source.
    confidence
        Level of the Wilson intervals, in (0, 1).

    Returns
    -------
    DivisionModes
        ``by_record``, ``overall`` and ``divisions`` tables.

    Examples
    --------
    >>> from niche3d.analysis import division_modes
    >>> dm = division_modes("runs/homeostasis.zarr")                         # doctest: +SKIP
    >>> dm.overall[["count", "fraction", "ci_low", "ci_high", "border_share"]]  # doctest: +SKIP
    """
    s = as_source(src)
    conf = check_number(confidence, "confidence", high=1.0, high_open=True)
    ev = s.events
    d = ev[ev["kind"] == "division"]
    ms, ds = d["state"].astype(object).to_numpy(), d["other_state"].astype(object).to_numpy()
    div = pd.DataFrame({
        "t_hours": d["t_hours"].to_numpy(), "record": s.event_record(d["t_hours"].to_numpy()),
        "mother": d["cell"].to_numpy(), "daughter": d["other"].to_numpy(),
        "mother_state": ms, "daughter_state": ds, "mode": _mode(ms, ds),
        **{f"mother_{k}_um": d[k].to_numpy() for k in "zyx"},
        **{f"daughter_{k}_um": d[f"other_{k}"].to_numpy() for k in "zyx"}})
    starts = _starts(s)
    rows = []
    rec, mode = div["record"].to_numpy(), div["mode"].to_numpy()
    counts = {m: np.bincount(rec[(mode == m) & (rec >= 0)], minlength=s.n_records) for m in MODES}
    totals = np.bincount(rec[rec >= 0], minlength=s.n_records)
    inc = {}
    for m in MODES:
        for side in ("same_side", "border"):
            c = _metric(s, f"total_{_MODE_COUNTER[m]}_{side}")
            inc[m, side] = np.diff(c, prepend=0.0)
    for r in range(s.n_records):
        for m in MODES:
            k, n = int(counts[m][r]), int(totals[r])
            lo, hi = _interval(k, n, conf)
            same, border = inc[m, "same_side"][r], inc[m, "border"][r]
            both = same + border
            rows.append((r, float(starts[r]), float(s.times_h[r]), m, k, n,
                         k / n if n else math.nan, lo, hi, same, border,
                         border / both if both > 0 else math.nan))
    by_record = pd.DataFrame(rows, columns=["record", "t_start_hours", "t_hours", "mode", "count",
                                            "total", "fraction", "ci_low", "ci_high",
                                            "same_side", "border", "border_share"])
    over = []
    n_all = int(totals.sum())
    for m in MODES:
        sub = by_record[by_record["mode"] == m]
        k = int(sub["count"].sum())
        same = float(sub["same_side"].sum(min_count=1))
        border = float(sub["border"].sum(min_count=1))
        both = same + border
        lo, hi = _interval(k, n_all, conf)
        blo, bhi = _interval(border, both, conf) if both > 0 else (math.nan, math.nan)
        over.append({"mode": m, "count": k, "total": n_all, "fraction": k / n_all if n_all else math.nan,
                     "ci_low": lo, "ci_high": hi, "same_side": same, "border": border,
                     "border_share": border / both if both > 0 else math.nan,
                     "border_ci_low": blo, "border_ci_high": bhi})
    overall = pd.DataFrame(over).set_index("mode")
    units = {"t_hours": "hour", "t_start_hours": "hour", "count": "divisions", "total": "divisions",
             **{f"{w}_{k}_um": "micrometer" for w in ("mother", "daughter") for k in "zyx"}}
    for df in (by_record, overall, div):
        df.attrs["units"] = {k: v for k, v in units.items() if k in df.columns}
        df.attrs["source"] = s.label
    return DivisionModes(by_record, overall, div)


def _blood_volume_ul(s: Source) -> float:
    """The mouse blood volume of the source's scenario (µL); NaN without one (hand-made
    arrays, or a stored scenario this niche3d cannot validate)."""
    from niche3d.io import StoreError

    try:
        sc = s.scenario
    except StoreError:
        return math.nan
    return float(sc.cells.blood.blood_volume_ul) if sc is not None else math.nan


def circulating_counts(src: SourceLike) -> pd.DataFrame:
    """HSCs in the blood over time, and the traffic between block and blood.

    From the metrics: the mouse's blood HSCs (``blood_pool``, per mouse, an expected
    number), per µL of blood (the scenario's ``cells.blood.blood_volume_ul``), the block's
    share of them, and the whole mouse's egress, homing and clearance per day (from the
    cumulative ``mouse_*_total`` flows). From the events: the block's own egress and
    homing events per record interval and per day.

    Parameters
    ----------
    src
        A Run, a run-store path, a live Simulation or a Source.

    Returns
    -------
    pandas.DataFrame
        One row per record: ``record``, ``t_hours``, ``interval_days``,
        ``blood_hsc_per_mouse``, ``blood_volume_ul``, ``blood_hsc_per_ul``,
        ``blood_hsc_block_share`` (``block_fraction * blood_pool``), ``marrow_hsc_block``
        (HSCs in the block), ``hsc_per_mouse``, ``blood_residence_minutes`` (mean time in
        blood), ``mouse_egress_per_day``,
        ``mouse_homed_per_day``, ``mouse_cleared_per_day``, ``block_egress_events``,
        ``block_homing_events``, ``block_egress_per_day``, ``block_homing_per_day``
        (rates NaN for an empty interval; metric columns NaN where the source lacks them).

    Examples
    --------
    >>> from niche3d.analysis import circulating_counts
    >>> c = circulating_counts("runs/homeostasis.zarr")                          # doctest: +SKIP
    >>> c.plot(x="t_hours", y="blood_hsc_per_mouse")                              # doctest: +SKIP
    """
    s = as_source(src)
    t = s.times_h
    starts = _starts(s)
    days = (t - starts) / 24.0
    per_day = np.where(days > 0, 1.0 / np.where(days > 0, days, 1.0), np.nan)
    blood = _metric(s, "blood_pool")
    vol = _blood_volume_ul(s)
    per_ul = blood / vol if math.isfinite(vol) else _metric(s, "blood_hsc_per_ul")
    out = pd.DataFrame({"record": np.arange(s.n_records, dtype=np.int64), "t_hours": t,
                        "interval_days": days, "blood_hsc_per_mouse": blood,
                        "blood_volume_ul": vol, "blood_hsc_per_ul": per_ul,
                        "blood_hsc_block_share": blood * _metric(s, "block_fraction"),
                        "marrow_hsc_block": _metric(s, "hsc_total"),
                        "hsc_per_mouse": _metric(s, "hsc_per_mouse"),
                        "blood_residence_minutes": _metric(s, "blood_residence_minutes")})
    for flow, col in (("egress", "mouse_egress_per_day"), ("homed", "mouse_homed_per_day"),
                      ("cleared", "mouse_cleared_per_day")):
        out[col] = np.diff(_metric(s, f"mouse_{flow}_total"), prepend=0.0) * per_day
    ev = s.events
    for kind in ("egress", "homing"):
        tk = ev["t_hours"].to_numpy()[(ev["kind"] == kind).to_numpy()]
        rec = s.event_record(tk)
        k = np.bincount(rec[rec >= 0], minlength=s.n_records)
        out[f"block_{kind}_events"] = k.astype(np.int64)
        out[f"block_{kind}_per_day"] = k * per_day
    out.attrs["units"] = {"t_hours": "hour", "interval_days": "day", "blood_hsc_per_mouse": "cells",
                          "blood_volume_ul": "uL", "blood_hsc_per_ul": "cells/uL",
                          "blood_hsc_block_share": "cells", "marrow_hsc_block": "cells",
                          "hsc_per_mouse": "cells", "blood_residence_minutes": "minute",
                          **{c: "cells/day" for c in out.columns
                                                       if c.endswith("_per_day")}}
    out.attrs["source"] = s.label
    return out
