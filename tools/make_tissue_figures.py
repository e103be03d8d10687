"""Make the pictures and the statistics table of docs/tissue.md.

Generates the default lattice (C57BL/6 targets, domain (48, 96, 96) at 8 µm, seed 1),
saves three orthogonal slices and a 3D surface rendering as PNG under ``docs/img/``, and
prints the statistics table (measured beside target and mouse values) as Markdown.

Needs only numpy, scipy, scikit-image and matplotlib (Agg backend: no display, no Xvfb).

Usage::

    python tools/make_tissue_figures.py [--out docs/img] [--seed 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402
from skimage.measure import marching_cubes  # noqa: E402

from niche3d.tissue import (  # noqa: E402
    TISSUE_COLORS,
    TISSUE_NAMES,
    Tissue,
    TissueConfig,
    build_lattice,
    format_geometry_report,
    geometry_report,
)

#: mouse reference values (shared/BIOLOGY.md section 3) for the docs table
MOUSE = {
    "BV/TV": "C57BL/6 ~0.11, BALB/c ~0.20",
    "Tb.Th": "50-60 µm",
    "Tb.Sp": "150-200 µm",
    "Tb.N": "4.4-5.2 /mm",
    "sinusoid diameter (mean)": "10-30 µm",
    "vascular fraction": "not well measured (calibrate)",
}


def _opaque_cmap() -> ListedColormap:
    lut = np.zeros((256, 4))
    for code, rgba in TISSUE_COLORS.items():
        r, g, b, _a = rgba
        lut[int(code)] = (r, g, b, 1.0)
    lut[Tissue.MARROW] = (0.99, 0.95, 0.90, 1.0)  # marrow light, but visible in a figure
    return ListedColormap(lut)


def slices(labels: np.ndarray, voxel_um: float, path: Path) -> None:
    cmap = _opaque_cmap()
    nz, ny, nx = labels.shape
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
    views = [
        (labels[nz // 2], f"z = {nz // 2 * voxel_um:.0f} µm (x-y plane)", ("x (µm)", "y (µm)"), (nx, ny)),
        (labels[:, ny // 2], f"y = {ny // 2 * voxel_um:.0f} µm (x-z plane)", ("x (µm)", "z (µm)"), (nx, nz)),
        (labels[:, :, nx // 2], f"x = {nx // 2 * voxel_um:.0f} µm (y-z plane)", ("y (µm)", "z (µm)"), (ny, nz)),
    ]
    for ax, (img, title, (xl, yl), (w, h)) in zip(axes, views, strict=True):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=255, interpolation="nearest", origin="lower",
                  extent=(0, w * voxel_um, 0, h * voxel_um))
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    handles = [
        Patch(color=cmap(int(c)), label=TISSUE_NAMES[int(c)])
        for c in Tissue if c != Tissue.OUTSIDE
    ]
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rendering(labels: np.ndarray, voxel_um: float, path: Path) -> None:
    fig = plt.figure(figsize=(8, 7))
    ax = fig.add_subplot(projection="3d")
    parts = [
        ((labels == Tissue.BONE), TISSUE_COLORS[Tissue.BONE], 0.55, 2),
        ((labels == Tissue.SINUSOID) | (labels == Tissue.ENDOTHELIUM), TISSUE_COLORS[Tissue.SINUSOID], 0.9, 1),
        ((labels == Tissue.ARTERIOLE), TISSUE_COLORS[Tissue.ARTERIOLE], 1.0, 1),
    ]
    for mask, rgba, alpha, step in parts:
        if mask.sum() < 8:
            continue
        padded = np.pad(mask, 1).astype(np.float32)
        verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=(voxel_um,) * 3, step_size=step)
        verts -= voxel_um
        # axes: plot x horizontally, y in depth, z up
        tri = verts[faces][:, :, ::-1]
        coll = Poly3DCollection(tri, facecolor=(*rgba[:3], alpha), edgecolor="none", linewidth=0)
        ax.add_collection3d(coll)
    nz, ny, nx = labels.shape
    ax.set_xlim(0, nx * voxel_um)
    ax.set_ylim(0, ny * voxel_um)
    ax.set_zlim(0, nz * voxel_um)
    ax.set_box_aspect((nx, ny, nz))
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_zlabel("z (µm)")
    ax.view_init(elev=28, azim=-55)
    ax.set_title("bone (ivory), sinusoids (red), arterioles (purple)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def table(rows: list[tuple[str, float, float | None, str]]) -> str:
    out = ["| statistic | measured | target | unit | mouse |", "|---|---|---|---|---|"]
    for name, meas, target, unit in rows:
        t = "-" if target is None else f"{target:g}"
        out.append(f"| {name} | {meas:.4g} | {t} | {unit} | {MOUSE.get(name, '')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = TissueConfig()
    shape, voxel = (48, 96, 96), 8.0
    lat = build_lattice(shape, voxel, cfg, seed=args.seed)
    slices(lat.labels, voxel, args.out / "tissue_slices.png")
    rendering(lat.labels, voxel, args.out / "tissue_3d.png")
    rows = geometry_report(lat, cfg)
    print(format_geometry_report(rows))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
