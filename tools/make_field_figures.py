"""Make the verification figures of docs/fields.md (docs/img/fields_*.png).

Run from the repository root::

    python tools/make_field_figures.py

Every number plotted is computed here by the real solver; the script also prints the
values quoted in docs/fields.md.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from niche3d.fields import FieldSet, Multigrid, OperatorSpec  # noqa: E402
from niche3d.fields import _solution_storage as K  # noqa: E402
from niche3d.fields.config import BoundaryConfig, FieldConfig, FieldsConfig  # noqa: E402
from niche3d.tissue.codes import Tissue  # noqa: E402
from niche3d.tissue.lattice import Lattice  # noqa: E402

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def _tables(d: float, k: float) -> tuple[np.ndarray, np.ndarray]:
    D = np.zeros(16)
    D[:9] = d
    D[Tissue.BONE] = 0.0
    K = np.zeros(16)
    K[:9] = k
    return D, K


def _solve(op: OperatorSpec, tol: float = 1e-11) -> tuple[np.ndarray, list[float]]:
    static, dyn = op.split()
    mg = Multigrid.from_static(static)
    hi = np.zeros(op.labels.shape, np.float32)
    lo = np.zeros(hi.shape, np.int16)
    hist = []
    for i in range(200):
        _c, r0, r = mg.solve(dyn, hi, lo, tol=tol, max_cycles=1, rebuild=i == 0)
        if i == 0:
            hist.append(r0)
        hist.append(r)
        if r <= tol:
            break
    return K.solution(hi, lo), hist


def point_source() -> None:
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for m, style in ((2, "o"), (4, "s")):
        n = 12 * m
        L = float(m)
        lab = np.full((n, n, n), Tissue.MARROW, np.uint8)
        c0 = n // 2
        lab[c0, c0, c0] = Tissue.STROMA
        D, K = _tables(1.0, 1 / L**2)
        S = np.zeros(16)
        S[Tissue.STROMA] = 1.0
        op = OperatorSpec(lab, D, K, S, np.zeros(6, np.int64), np.zeros(6), np.zeros(0, np.int64))
        c, _ = _solve(op)
        r = np.arange(1, n - c0)
        num = c[c0, c0, c0 + r]
        ex = np.exp(-r / L) / (4 * np.pi * r)
        # physical units: r / L, c scaled by the voxel (Q h / D)
        ax[0].semilogy(r / L, num * m, style, ms=4, label=f"solver, h = L/{m}")
        ax[1].plot(r / L, (num - ex) / ex * 100, style + "-", ms=4, label=f"h = L/{m}")
        for rr in (1.5, 2.0, 3.0):
            i = int(rr * m) - 1
            print(f"point source h=L/{m}: r={rr}L rel. error {(num[i] - ex[i]) / ex[i] * 100:+.2f} %")
    rr = np.linspace(0.3, 5.5, 200)
    ax[0].semilogy(rr, np.exp(-rr) / (4 * np.pi * rr), "k-", label="Q exp(-r/L) / (4πDr)")
    ax[0].set_xlabel("r / L")
    ax[0].set_ylabel("c · D L / Q")
    ax[0].legend()
    ax[0].set_title("Point source with decay")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set_xlabel("r / L")
    ax[1].set_ylabel("relative error (%)")
    ax[1].set_ylim(-5, 20)
    ax[1].legend()
    ax[1].set_title("Error falls ~4x when h halves")
    fig.tight_layout()
    fig.savefig(IMG / "fields_point_source.png", dpi=110)
    plt.close(fig)


def slab() -> None:
    lam, g0, g1 = 0.25, 2.0, 0.5
    errs, hs = [], []
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for n in (16, 32, 64, 128, 256):
        lab = np.full((4, 4, n), Tissue.MARROW, np.uint8)
        h = 1.0 / n
        D, K = _tables(1.0 / h**2, 1.0 / lam**2)
        bk = np.array([0, 0, 0, 0, 1, 1])
        bv = np.array([0, 0, 0, 0, g0, g1], float)
        op = OperatorSpec(lab, D, K, np.zeros(16), bk, bv, np.zeros(0, np.int64))
        c, _ = _solve(op, 1e-12)
        x = (np.arange(n) + 0.5) * h
        ex = (g0 * np.sinh((1 - x) / lam) + g1 * np.sinh(x / lam)) / np.sinh(1 / lam)
        errs.append(np.max(np.abs(c[0, 0] - ex)))
        hs.append(h)
        if n == 16:
            xx = np.linspace(0, 1, 200)
            ax[0].plot(xx, (g0 * np.sinh((1 - xx) / lam) + g1 * np.sinh(xx / lam))
                       / np.sinh(1 / lam), "k-", label="analytic")
            ax[0].plot(x, c[0, 0], "o", label="solver, 16 voxels")
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    print("slab max errors:", ", ".join(f"{e:.2e}" for e in errs))
    print("slab observed orders:", ", ".join(f"{o:.3f}" for o in orders))
    ax[0].set_xlabel("x / slab width")
    ax[0].set_ylabel("c")
    ax[0].legend()
    ax[0].set_title("Slab, fixed values 2 and 0.5, λ = 0.25")
    ax[1].loglog(hs, errs, "o-", label="max error")
    ax[1].loglog(hs, errs[0] * (np.array(hs) / hs[0]) ** 2, "k--", label="slope 2")
    ax[1].set_xlabel("h / slab width")
    ax[1].set_ylabel("max |c - exact|")
    ax[1].legend()
    ax[1].set_title("Second-order convergence")
    fig.tight_layout()
    fig.savefig(IMG / "fields_slab_convergence.png", dpi=110)
    plt.close(fig)


def tissue_example() -> None:
    """CXCL12, soluble SCF and membrane SCF on a small generated marrow block."""
    from niche3d.tissue import TissueConfig, build_lattice

    lat = build_lattice((48, 96, 96), 8.0, TissueConfig(), 3)
    fs = FieldSet(lat, FieldsConfig(tolerance=1e-6))
    rng = np.random.default_rng(0)
    ent = np.flatnonzero(lat.enterable.ravel())
    cells = rng.choice(ent, ent.size // 50, replace=False)
    rep = fs.solve(cells)
    print("tissue example:", rep.cycles, {k: f"{v:.1e}" for k, v in rep.residual.items()})
    z = 24
    from niche3d.tissue.codes import color_table

    lut = color_table()
    lut[:, 3] = np.where(lut[:, 3] > 0, 1.0, 0.0)
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.2))
    ax[0].imshow(lut[lat.labels[z]], interpolation="nearest")
    ax[0].set_title("tissue (z = 24)")
    for a, name in zip(ax[1:], ("cxcl12", "scf", "membrane_scf"), strict=True):
        lo, hi = fs.windows[name]
        im = a.imshow(fs[name][z], vmin=lo, vmax=hi, cmap="magma", interpolation="nearest")
        a.set_title(f"{name} ({fs.units[name]})")
        fig.colorbar(im, ax=a, fraction=0.046)
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(IMG / "fields_tissue_example.png", dpi=100)
    plt.close(fig)
    # bone wall check on the same block: concentration inside bone
    print("max concentration inside bone:", float(fs["cxcl12"][lat.mask("bone")].max()))


def convergence_history() -> None:
    """Residual per V-cycle, cold and warm (1 % source change), trabecular-like bone."""
    from scipy import ndimage

    n = 64
    rng = np.random.default_rng(0)
    g = ndimage.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), 2)
    lab = np.full((n, n, n), Tissue.MARROW, np.uint8)
    bone = g > np.quantile(g, 0.85)
    lab[bone] = Tissue.BONE
    lab[(rng.random(lab.shape) < 0.03) & ~bone] = Tissue.STROMA
    cfg = FieldConfig(secretion_per_min={"stroma": 1.0},
                      boundary={"zmin": BoundaryConfig(kind="value", value=0.0)})
    fs = FieldSet(Lattice(lab, 8.0), FieldsConfig(diffusible={"c": cfg}, tolerance=1e-9))
    f = fs._fields["c"]
    hist_cold = []
    for i in range(40):
        op = fs._op(f)
        _c, r0, r = f.mg.solve(op, f.hi, f.lo, tol=1e-12, max_cycles=1, rebuild=i == 0)
        if i == 0:
            hist_cold.append(r0)
        hist_cold.append(r)
        if r < 1e-9:
            break
    fs.set_source_scale("c", "stroma", 1.01)
    hist_warm = []
    for i in range(40):
        op = fs._op(f)
        _c, r0, r = f.mg.solve(op, f.hi, f.lo, tol=1e-12, max_cycles=1, rebuild=False)
        if i == 0:
            hist_warm.append(r0)
        hist_warm.append(r)
        if r < 1e-9:
            break
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.semilogy(hist_cold, "o-", label="cold start")
    ax.semilogy(hist_warm, "s-", label="warm, after a 1 % source change")
    ax.axhline(1e-6, color="k", lw=0.5, ls="--")
    ax.set_xlabel("V(2,2) cycle")
    ax.set_ylabel("relative residual")
    ax.set_title("Multigrid convergence, 64³ with 15 % bone")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "fields_convergence.png", dpi=110)
    plt.close(fig)
    rates = np.array(hist_cold[2:]) / np.array(hist_cold[1:-1])
    print(f"convergence: cold factor per cycle (median) {np.median(rates):.3f}, "
          f"cycles to 1e-6 cold {int(np.argmax(np.array(hist_cold) <= 1e-6))}, "
          f"warm {int(np.argmax(np.array(hist_warm) <= 1e-6))}")


if __name__ == "__main__":
    IMG.mkdir(parents=True, exist_ok=True)
    point_source()
    slab()
    convergence_history()
    tissue_example()
