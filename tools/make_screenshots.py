"""Regenerate the README screenshots of a real run in napari.

Runs a small real simulation (or opens a given run store), shows it in a hidden napari
viewer and saves ``docs/img/viewer_2d.png`` (a z slice with tissue, cells and lineage
tails) and ``docs/img/viewer_3d.png`` (the 3D view).

A real viewer needs OpenGL: on a machine without a screen run it under Xvfb::

    xvfb-run -a -s "-screen 0 1600x1200x24" python tools/make_screenshots.py

Options: ``--store RUN`` to use an existing store, ``--days``, ``--shape Z Y X``, ``--seed``,
``--out-dir``, ``--size W H``, ``--window`` (whole window with layer list, controls and the
docks of ``niche3d view``: legend, run metrics, cell inspector, instead of the canvas only).

``--tutorial HOMEOSTASIS_RUN GCSF_RUN`` writes the pictures of docs/napari.md's tutorial
instead (``docs/img/tutorial_*.png``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def simulate(path: Path, *, days: float, shape: tuple[int, int, int], seed: int) -> Path:
    """Run the screenshot scenario (built-in homeostasis defaults on a small block)."""
    from napari_niche3d._sample_data import make_sample_run

    return make_sample_run(
        path, overwrite=True, run__days=days, domain__shape=list(shape), run__seed=seed,
        output__interval_hours=6.0,
    )


def save_png(path: Path, img: np.ndarray) -> None:
    """Write an RGBA uint8 image as PNG (matplotlib's writer, no extra dependency)."""
    import matplotlib.image

    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, img)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="an existing run store (default: simulate one)")
    ap.add_argument("--days", type=float, default=4.0, help="simulated days (default 4)")
    ap.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--size", type=int, nargs=2, default=(1400, 900), metavar=("W", "H"))
    ap.add_argument("--window", action="store_true", help="whole window, not just the canvas")
    a = ap.parse_args(argv)

    from napari_niche3d._reader import is_run_store
    from napari_niche3d._screenshot import render_views

    with tempfile.TemporaryDirectory(prefix="niche3d-shots-") as tmp:
        if a.store is not None:
            if not is_run_store(a.store):
                print(f"error: --store {a.store} is not a niche3d run store", file=sys.stderr)
                return 2
            store = a.store
        else:
            store = simulate(Path(tmp) / "screenshot.zarr", days=a.days, shape=tuple(a.shape), seed=a.seed)
        shots = render_views(store, size=tuple(a.size), canvas_only=not a.window,
                             angles=(-20.0, -35.0, -40.0), docks=a.window)
    for key, img in shots.items():
        lit = float((img[..., :3].max(axis=-1) > 10).mean())
        if lit < 0.01:
            print(f"error: the {key} screenshot is black ({lit:.1%} lit pixels)", file=sys.stderr)
            return 1
        out = a.out_dir / f"viewer_{key}.png"
        save_png(out, img)
        print(f"{out}  {img.shape[1]}x{img.shape[0]}  {lit:.0%} lit pixels")
    return 0


def tutorial(homeostasis: Path, gcsf: Path, out_dir: Path, size: tuple[int, int] = (1500, 950)) -> list[Path]:
    """The pictures of docs/napari.md's tutorial: the whole window of ``niche3d view`` on the
    default run, its dormant HSCs alone at the last record (the endosteum in green), and the
    G-CSF run during its course (the blood curve in the metrics, the doses in the timeline)."""
    import napari
    from napari_niche3d._launch import PLUGIN_NAME, dock_widgets
    from napari_niche3d._screenshot import busiest_slice

    out: list[Path] = []

    def window(path: Path, t_hours: float, name: str, *, dormant_only: bool = False,
               metrics: list[str] | None = None) -> None:
        v = napari.Viewer(show=False, title="niche3d")
        try:
            v.open(str(path), plugin=PLUGIN_NAME)
            dock_widgets(v, path)
            win = v.window._qt_window
            win.resize(*size)
            win.grab()
            v.dims.set_point(0, t_hours)
            cells = v.layers["cells"]
            centre = None
            if dormant_only:
                # the console line of the tutorial: only the dormant HSCs
                cells.shown = np.asarray(cells.features["state"] == "dormant")
                here = cells.data[cells.shown & (cells.data[:, 0] == cells.data[:, 0].max())]
                if len(here):
                    # the plane with most dormant HSCs within the slab, centred on them
                    zs = here[:, 1]
                    z = max(np.unique(zs), key=lambda q: int(np.sum(np.abs(zs - q) <= 2)))
                    near = here[np.abs(zs - z) <= 2]
                    world = near[:, 1:] * np.asarray(cells.scale[1:]) + np.asarray(cells.translate[1:])
                    v.dims.set_point(1, float(world[0, 0]))
                    centre = world.mean(axis=0)
            else:
                v.dims.set_point(1, busiest_slice(path, t_hours))
            if metrics:
                v.window.dock_widgets["Run metrics"].select(metrics)
            v.reset_view()
            if centre is not None:
                v.camera.center = (float(centre[1]), float(centre[2]))
                v.camera.zoom *= 2.5
            img = np.asarray(v.screenshot(canvas_only=False, flash=False))
            dest = out_dir / f"tutorial_{name}.png"
            save_png(dest, img)
            out.append(dest)
        finally:
            v.close()

    from niche3d.io import open_run

    t_end = float(open_run(homeostasis).times_h[-1])
    window(homeostasis, t_end, "open")
    window(homeostasis, t_end, "dormant", dormant_only=True)
    window(gcsf, 7 * 24.0, "gcsf", metrics=["hsc_total", "blood_hsc_per_mouse"])
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tutorial":
        ap = argparse.ArgumentParser(description="the tutorial pictures of docs/napari.md")
        ap.add_argument("--tutorial", nargs=2, type=Path, metavar=("HOMEOSTASIS_RUN", "GCSF_RUN"), required=True)
        ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
        t = ap.parse_args()
        for f in tutorial(*t.tutorial, t.out_dir):
            print(f)
        raise SystemExit(0)
    raise SystemExit(main())
