"""The figures of the analysis functions (matplotlib), shared by ``niche3d report`` and
``tools/analysis_figures.py`` (docs/analysis.md): each takes what its analysis function
returned and gives a :class:`matplotlib.figure.Figure`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no screen needed, and never a GUI window from a report
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from niche3d.analysis.dynamics import MODES  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from niche3d.analysis.dynamics import DivisionModes
    from niche3d.analysis.lineage import LineageTree
    from niche3d.analysis.spatial import DistanceDistributions

__all__ = ["fig_distances", "fig_fractions", "fig_division_modes", "fig_clone_sizes", "fig_lineage",
           "fig_circulating", "fig_fields", "fig_niche_occupancy", "fig_lineage_output",
           "mark_interventions", "STATE_COLORS"]

STATE_COLORS = {"dormant": "#4c72b0", "active_g0": "#55a868", "active_g1": "#dd8452",
                "active_sg2m": "#c44e52", "mpp": "#8172b3"}
CAT_COLORS = {**STATE_COLORS, "G0": "#55a868", "G1": "#dd8452", "S/G2/M": "#c44e52",
              "niche_site": "#c44e52", "marrow": "#937860", "blood": "#4c72b0",
              "perisinusoidal": "#c44e52", "endosteal": "#55a868", "periarteriolar": "#8172b3",
              "other": "#7f7f7f"}
MODE_COLORS = {"symmetric_renewal": "#55a868", "asymmetric": "#dd8452",
               "symmetric_differentiation": "#8172b3"}
STRUCTURE_LABEL = {"sinusoid": "sinusoid wall", "endosteum": "endosteum", "arteriole": "arteriole"}
_RC = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10}


def fig_distances(dd: DistanceDistributions) -> Figure:
    s = dd.summary
    present = [k for k in s.index if s.loc[k, "present"]]
    if not present:
        raise ValueError("the geometry has none of the structures asked for")
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.9), squeeze=False)
    for ax, name in zip(axes[0], present, strict=True):
        e = dd.ecdf[dd.ecdf.structure == name]
        r = s.loc[name]
        # the step functions start at 0 µm with nothing below the first lattice distance
        x = np.concatenate([[0.0], e.distance_um.to_numpy()])

        def at0(col: str, e: pd.DataFrame = e) -> np.ndarray:
            return np.concatenate([[0.0], e[col].to_numpy()])

        ax.fill_between(x, at0("null_low"), at0("null_high"), step="post", color="0.75",
                        label=f"95 % band: random sets of {int(r.n_eff)}")
        ax.step(x, at0("null"), where="post", color="0.25", ls="--", lw=1.2,
                label="uniform placement (exact)")
        ax.step(x, at0("cells"), where="post", color="#c44e52", lw=2,
                label=f"HSCs (n = {int(r.n_cells)})")
        ax.axvline(r.within_um, color="0.4", lw=0.8, ls=":")
        ax.set_xlim(0, float(np.quantile(x, 0.98)))
        ax.set_ylim(0, 1.01)
        ax.set_xlabel(f"distance to the {STRUCTURE_LABEL[name]} (µm)")
        ax.set_title(f"{name}: KS D = {r.ks_statistic:.2f}, p = {r.p_value:.2g}\n"
                     f"median {r.median_um:.0f} µm vs {r.null_median_um:.0f} µm at random")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cumulative fraction")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def fig_fractions(f: pd.DataFrame) -> Figure:
    groups = list(dict.fromkeys(f["by"]))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    titles = {"state": "HSC state", "phase": "cell-cycle phase (dormant in G0)",
              "location": "niche site / off-site marrow / blood", "zone": "nearest wall within 10 µm",
              "binding": "adhesion"}
    for ax in axes.ravel()[len(groups):]:
        ax.set_visible(False)
    for ax, g in zip(axes.ravel(), groups, strict=False):
        sub = f[f["by"] == g]
        for cat, d in sub.groupby("category", sort=False):
            t = d.t_hours.to_numpy() / 24
            c = CAT_COLORS.get(cat, None)
            ax.plot(t, d.fraction, color=c, lw=1.6, label=cat)
            ax.fill_between(t, d.ci_low, d.ci_high, color=c, alpha=0.18, lw=0)
        ax.set_title(titles[g])
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of HSCs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("time (days)")
    fig.tight_layout()
    return fig


def fig_division_modes(dm: DivisionModes) -> Figure:
    br = dm.by_record
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.9), gridspec_kw={"width_ratios": [2.2, 1]})
    bottom = None
    for m in MODES:
        d = br[br["mode"] == m]
        t = d.t_hours.to_numpy() / 24
        a.bar(t, d["count"], bottom=bottom, width=0.8, color=MODE_COLORS[m], label=m.replace("_", " "))
        bottom = d["count"].to_numpy() if bottom is None else bottom + d["count"].to_numpy()
    a.set_xlabel("time (days; divisions in the day before each record)")
    a.set_ylabel("divisions per day")
    a.legend(fontsize=8)
    a.grid(alpha=0.3, axis="y")
    o = dm.overall
    x = np.arange(len(o))
    b.bar(x, o.fraction, color=[MODE_COLORS[m] for m in o.index],
          yerr=[o.fraction - o.ci_low, o.ci_high - o.fraction], capsize=4)
    for i, m in enumerate(o.index):
        if o.loc[m, "same_side"] + o.loc[m, "border"] > 0:
            b.text(i, min(o.loc[m, "ci_high"] + 0.03, 0.97),
                   f"{o.loc[m, 'border_share']:.0%} at\na border", ha="center", fontsize=8)
    b.set_xticks(x, [m.replace("symmetric_", "sym. ").replace("_", " ") for m in o.index],
                 fontsize=8)
    b.set_ylim(0, 1)
    b.set_ylabel("fraction of all divisions (95 % CI)")
    span = float(br.t_hours.max() - br.t_hours.min()) / 24 if len(br) else 0.0
    b.set_title(f"{int(o['count'].sum())} divisions in {span:.3g} days")
    fig.tight_layout()
    return fig


def fig_clone_sizes(cs: pd.DataFrame) -> Figure:
    if cs.empty:
        raise ValueError("no founders: the run has no HSC lineages")
    last = cs[cs.record == cs.record.max()]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.9))
    size = last.n_cells.to_numpy()
    k = np.arange(size.max() + 1)
    hsc = np.array([np.sum((size == v) & (last.n_hsc.to_numpy() > 0)) for v in k])
    none = np.array([np.sum((size == v) & (last.n_hsc.to_numpy() == 0)) for v in k])
    a.bar(k, hsc, color="#55a868", label="clone still holds an HSC")
    a.bar(k, none, bottom=hsc, color="#8172b3", label="MPPs only, or extinct (0)")
    a.set_xlabel(f"cells of the clone in the block at day {last.t_hours.iloc[0] / 24:.0f}")
    a.set_ylabel("founders")
    a.legend(fontsize=8)
    a.grid(alpha=0.3, axis="y")
    g = cs.groupby("t_hours")
    t = np.array(list(g.groups)) / 24
    alive = g.apply(lambda d: float(np.mean(d.n_hsc > 0)), include_groups=False).to_numpy()
    mean = g.apply(lambda d: float(d.n_cells[d.n_cells > 0].mean()), include_groups=False).to_numpy()
    b.plot(t, alive, color="#55a868", lw=1.8, label="founders whose clone holds an HSC")
    b.set_ylim(0, 1.05)
    b.set_ylabel("fraction of founders")
    b.set_xlabel("time (days)")
    b2 = b.twinx()
    b2.plot(t, mean, color="#4c72b0", lw=1.5, ls="--", label="mean size of surviving clones")
    b2.set_ylabel("cells per surviving clone", color="#4c72b0")
    b2.set_ylim(0, None)
    h1, l1 = b.get_legend_handles_labels()
    h2, l2 = b2.get_legend_handles_labels()
    b.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fig_lineage(tree: LineageTree, founders: list[int], t_end_h: float) -> Figure:
    n = tree.nodes.set_index("track_id")
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(n.loc[n.founder.isin(founders)]) + 1.6))
    y = 0
    ticks, labels = [], []
    for f in founders:
        order: list[int] = []
        todo = [f]
        while todo:  # depth first, daughters in birth order
            k = todo.pop()
            order.append(k)
            todo.extend(reversed(tree.children(k)))
        ypos = {}
        for k in order:
            ypos[k] = y
            row = n.loc[k]
            t0 = row.birth_hours / 24
            t1 = (row.end_hours if row.end_hours == row.end_hours else t_end_h) / 24
            colour = STATE_COLORS.get(row.birth_state, "0.4") if row.birth_state is not None else "0.4"
            ax.plot([t0, t1], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
            if row.parent >= 0 and row.parent in ypos:
                ax.plot([t0, t0], [ypos[row.parent], y], color="0.5", lw=0.8)
            end = row.end_kind
            if end in ("death", "exit", "egress"):
                ax.plot(t1, y, marker={"death": "x", "exit": ">", "egress": "^"}[end], color="k", ms=5)
            elif row.alive:
                ax.plot(t1, y, marker="o", color=STATE_COLORS.get(row.last_state, "k"), ms=4)
            ticks.append(y)
            labels.append(f"{k}")
            y += 1
        y += 0.8
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time (days)")
    ax.set_ylabel("track id")
    handles = [plt.Line2D([], [], color=c, lw=2.2, label=f"born {s}") for s, c in STATE_COLORS.items()
               if s in set(n.birth_state.dropna())]
    handles += [plt.Line2D([], [], marker=m, color="k", ls="", label=lab) for m, lab in
                (("x", "death"), (">", "exit to progenitors"), ("^", "egress to blood"))]
    handles.append(plt.Line2D([], [], marker="o", color="k", ls="",
                              label="alive at the end\n(colour: its state then)"))
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(f"track trees of the {len(founders)} founders with the most tracks (a division "
                 "keeps the mother's track; grey: a daughter's birth)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def fig_circulating(c: pd.DataFrame, marks: list[tuple[float, str]] = ()) -> Figure:
    t = c.t_hours.to_numpy() / 24
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6.2), sharex=True)
    a.plot(t, c.blood_hsc_per_mouse, color="#c44e52", lw=1.8, label="HSCs in blood, per mouse")
    a.set_ylabel("HSCs in blood per mouse")
    a2 = a.twinx()
    a2.plot(t, c.blood_hsc_per_ul, color="#c44e52", lw=0)
    a2.set_ylabel(f"per µL of blood ({c.blood_volume_ul.iloc[0]:g} µL)")
    a2.set_ylim(np.array(a.get_ylim()) / c.blood_volume_ul.iloc[0])
    a.grid(alpha=0.3)
    a.set_title("blood pool (expected number, whole mouse)")
    if marks:
        mark_interventions(a, list(marks))
        a.legend(fontsize=8, loc="upper left")
    for col, colour, lab in (("mouse_egress_per_day", "#c44e52", "egress from marrow"),
                             ("mouse_homed_per_day", "#55a868", "homed to marrow"),
                             ("mouse_cleared_per_day", "#7f7f7f", "cleared")):
        b.plot(t, c[col], color=colour, lw=1.6, label=f"{lab} (mouse)")
    b.set_ylabel("HSCs per day, whole mouse")
    flows = c[["mouse_egress_per_day", "mouse_homed_per_day", "mouse_cleared_per_day"]].to_numpy()
    b.set_ylim(0, 1.45 * float(np.nanmax(flows)))
    b2 = b.twinx()
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0  # days between records
    b2.bar(t - 0.2 * step, c.block_egress_per_day, width=0.4 * step, color="#dd8452", alpha=0.7,
           label="egress events in the block")
    b2.bar(t + 0.2 * step, c.block_homing_per_day, width=0.4 * step, color="#4c72b0", alpha=0.7,
           label="homing events in the block")
    b2.set_ylabel("events per day in the block")
    b2.set_ylim(0, max(3.0, float(np.nanmax(c.block_egress_per_day)) + 1))
    h1, l1 = b.get_legend_handles_labels()
    h2, l2 = b2.get_legend_handles_labels()
    b.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left", ncol=2)
    b.set_xlabel("time (days)")
    b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fig_fields(samples: dict[str, Any]) -> Figure:
    fig, axes = plt.subplots(2, len(samples), figsize=(5 * len(samples), 7))
    for j, (name, fs) in enumerate(samples.items()):
        s = fs.summary
        t = s.t_hours.to_numpy() / 24
        a = axes[0, j]
        for key, colour, lab in (("cells", "#c44e52", "at HSCs"), ("random", "0.35", "random marrow voxels")):
            a.plot(t, s[f"{key}_median"], color=colour, lw=1.8, label=f"{lab}: median")
            a.fill_between(t, s[f"{key}_q25"], s[f"{key}_q75"], color=colour, alpha=0.2, lw=0,
                           label=f"{lab}: IQR")
        unit = s.unit.iloc[0]
        a.set_ylabel(f"{name.upper()} ({unit})")
        a.set_xlabel("time (days)")
        a.set_ylim(0, None)
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
        a.set_title(f"{name.upper()} at HSCs vs random marrow")
        v = fs.values[fs.values.record == s.record.max()]
        b = axes[1, j]
        lo, hi = float(v.value.min()), float(v.value.max())
        bins = np.linspace(lo * 0.98, hi * 1.02 if hi > lo else lo * 1.02 + 1e-9, 40)
        b.hist(v.value[v.group == "random"], bins=bins, density=True, color="0.6", alpha=0.8,
               label=f"random voxels (n = {int((v.group == 'random').sum())})")
        b.hist(v.value[v.group == "cells"], bins=bins, density=True, color="#c44e52", alpha=0.7,
               label=f"HSCs (n = {int((v.group == 'cells').sum())})")
        last = s.iloc[-1]
        b.set_title(f"day {last.t_hours / 24:.0f}: P(HSC > random) = {last.prob_cells_higher:.2f}, "
                    f"Mann-Whitney p = {last.mwu_p_value:.1e}", fontsize=9)
        b.set_xlabel(f"{name.upper()} ({unit})")
        b.set_ylabel(f"density (1/{unit})")
        b.legend(fontsize=8)
        b.grid(alpha=0.3)
    fig.tight_layout()
    return fig




def mark_interventions(ax: Any, marks: list[tuple[float, str]]) -> None:
    """Dotted vertical lines at the intervention days (``(day, label)``), labelled once."""
    seen: set[str] = set()
    for day, label in marks:
        ax.axvline(day, color="#8c564b", lw=0.9, ls=":", label=None if label in seen else label)
        seen.add(label)


def fig_niche_occupancy(metrics: pd.DataFrame, marks: list[tuple[float, str]] = ()) -> Figure:
    """Niche sites over time: held by an HSC, taken by another cell, free (stacked), and
    the HSC number; by site kind when the run records it."""
    need = ("niche_sites", "niche_sites_free", "niche_sites_hsc", "niche_sites_other")
    missing = [c for c in need if c not in metrics.columns]
    if missing:
        raise ValueError(f"the run has no niche-site metrics {missing} (written before niche sites)")
    t = metrics["t"].to_numpy() / 24
    kinds = [k for k in ("endosteal", "sinusoidal", "arteriolar") if f"niche_sites_total_{k}" in metrics.columns]
    fig, axes = plt.subplots(1, 2 if kinds else 1, figsize=(11 if kinds else 7, 3.9), squeeze=False)
    a = axes[0, 0]
    stack = [metrics[c].to_numpy(dtype=float) for c in ("niche_sites_hsc", "niche_sites_other", "niche_sites_free")]
    a.stackplot(t, *stack, labels=["held by an HSC", "taken by another cell (MPP)", "free"],
                colors=["#c44e52", "#8172b3", "#b5dfb5"], alpha=0.9)
    if "hsc_total" in metrics.columns:
        a.plot(t, metrics["hsc_total"], color="k", lw=1.4, label="HSCs in the block")
    mark_interventions(a, list(marks))
    a.set_xlabel("time (days)")
    a.set_ylabel("niche sites")
    a.set_title("niche occupancy")
    a.legend(fontsize=8, loc="lower left")
    a.grid(alpha=0.3)
    if kinds:
        b = axes[0, 1]
        colours = {"endosteal": "#55a868", "sinusoidal": "#c44e52", "arteriolar": "#8172b3"}
        for k in kinds:
            total = metrics[f"niche_sites_total_{k}"].to_numpy(dtype=float)
            held = metrics[f"niche_sites_hsc_{k}"].to_numpy(dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                b.plot(t, np.where(total > 0, held / total, np.nan), color=colours[k], lw=1.6,
                       label=f"{k} ({int(np.nanmax(total)) if np.isfinite(total).any() else 0} sites)")
        b.set_ylim(0, 1)
        b.set_xlabel("time (days)")
        b.set_ylabel("share of the sites held by an HSC")
        b.set_title("occupancy by site kind")
        b.legend(fontsize=8)
        b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fig_lineage_output(metrics: pd.DataFrame, marks: list[tuple[float, str]] = ()) -> Figure:
    """MPP output of the niche and the mature output per lineage over time (per day)."""
    cols = [c for c in metrics.columns if c.startswith("output_") and c.endswith("_per_day")]
    if not cols and "mpp_output_per_day" not in metrics.columns:
        raise ValueError("the run has no output metrics (output_<lineage>_per_day, mpp_output_per_day)")
    t = metrics["t"].to_numpy() / 24
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.9))
    if "mpp_output_per_day" in metrics.columns:
        a.plot(t, metrics["mpp_output_per_day"], color="#8172b3", lw=1.6)
    mark_interventions(a, list(marks))
    a.set_xlabel("time (days)")
    a.set_ylabel("MPPs leaving the niche per day")
    a.set_title("MPP output of the block")
    a.grid(alpha=0.3)
    palette = ["#c44e52", "#dd8452", "#55a868", "#4c72b0", "#8172b3", "#937860"]
    for i, c in enumerate(cols):
        v = metrics[c].to_numpy(dtype=float)
        b.plot(t, v, color=palette[i % len(palette)], lw=1.6,
               label=c.removeprefix("output_").removesuffix("_per_day").replace("_", " "))
    if cols and np.nanmax(metrics[cols].to_numpy(dtype=float), initial=0.0) > 0:
        b.set_yscale("log")
    mark_interventions(b, list(marks))
    b.set_xlabel("time (days)")
    b.set_ylabel("cells per day")
    b.set_title("mature output per lineage")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    return fig
