"""``niche3d report``: one self-contained HTML page, rendered by Debian's headless
Chromium (installed by ``tools/install.sh --test``) as a reader's browser would: no
console errors, every figure present, decoded and drawn (not blank) on the screenshot."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from niche3d.cli import main
from niche3d.report import make_report

CHROMIUM = "/usr/bin/chromium"
#: every figure the report draws for a run with fields, niche sites and divisions
FIGURES = ("fig-localisation", "fig-fractions", "fig-divisions", "fig-occupancy", "fig-blood",
           "fig-output", "fig-clones", "fig-lineage", "fig-fields")
#: the flags the machine's notes give for headless Chromium as root on a closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    # the tiny run lasts 2 days: a burn-in of half a day leaves records to validate
    make_report(tiny_run, out, skip_days=0.5, n_random=100, seed=0)
    return out


def test_the_page_holds_everything_and_nothing_from_elsewhere(report: Path, tiny_run: Path) -> None:
    page = report.read_text(encoding="utf-8")
    for fid in FIGURES:
        assert f'<figure id="{fid}">' in page, fid
    assert "Not available" not in page
    # self-contained: no script, and no image, style or link fetched from anywhere
    assert "<script" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    from niche3d.io import open_run

    run = open_run(tiny_run)
    assert run.code_version in page and f"<td>{run.seed}</td>" in page
    assert "[domain]" in page  # the stored scenario, whole
    # the validation table: one row per target, each with its status class
    from niche3d.analysis import validate

    v = validate(run, skip_days=0.5)
    rows = re.findall(r'<tr class="(pass|fail|not-measured)">', page)
    assert len(rows) == len(v.table)
    assert rows.count("pass") == len(v.passed) and rows.count("fail") == len(v.failed)


def test_chromium_renders_every_figure_without_console_errors(report: Path, tmp_path: Path) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: run bash tools/install.sh --test"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                    else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(report.as_uri(), wait_until="load")
            assert problems == []
            assert page.title().startswith("niche3d run report")
            for fid in FIGURES:
                img = page.locator(f"#{fid} img")
                size = img.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
                assert size[0] and size[1] > 300 and size[2] > 150, (fid, size)
                shot = Image.open(io.BytesIO(img.screenshot())).convert("L")
                px = np.asarray(shot, dtype=float)
                # drawn, not blank: a real plot has axes, text and data in several greys
                ink = np.mean(px < 200)
                assert 0.01 < ink < 0.9, (fid, ink)
                assert px.std() > 20, (fid, px.std())
                assert len(np.unique(px.astype(np.uint8))) > 20, fid
            full = page.screenshot(full_page=True)
            (tmp_path / "report.png").write_bytes(full)
            height = Image.open(io.BytesIO(full)).size[1]
            assert height > 5000  # ten sections, nine figures, the tables
        finally:
            browser.close()


def test_a_section_that_does_not_apply_says_why(tmp_path: Path, tiny_scenario) -> None:  # type: ignore[no-untyped-def]
    from niche3d.simulation import Simulation

    store = tmp_path / "nofields.zarr"
    sc = tiny_scenario.with_overrides({"output.fields": False, "run.days": 1.0})
    Simulation(sc, store).run()
    out = tmp_path / "r.html"
    assert main(["report", str(store), "-o", str(out), "--skip-days", "0.25", "--n-random", "50"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Not available for this run: the run stored no fields (output.fields = false)" in page
    assert '<figure id="fig-localisation">' in page and '<figure id="fig-fields">' not in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["MISSING"], "does not exist"),
        (["RUN", "-o", "NODIR/r.html"], "does not exist; make it first"),
        (["RUN", "-o", "TMP"], "is a directory; give the HTML file"),
        (["RUN", "--n-random", "3"], "n_random must be an integer >= 10, got 3"),
        (["RUN", "--skip-days", "-1"], "skip_days must be a number >= 0, got -1.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tiny_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    subst = {"MISSING": str(tmp_path / "missing.zarr"), "RUN": str(tiny_run), "TMP": str(tmp_path),
             "NODIR/r.html": str(tmp_path / "nodir" / "r.html")}
    assert main(["report", *[subst.get(a, a) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("niche3d report: error:")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_intervention_days_are_marked_dose_by_dose() -> None:
    from conftest import REPO

    from niche3d.report import intervention_marks
    from niche3d.scenario import load_scenario

    gcsf = load_scenario(REPO / "scenarios" / "gcsf_mobilization.toml")
    course = [iv for iv in gcsf.interventions if iv.kind == "gcsf"][0]
    assert intervention_marks(gcsf) == [(course.start_day + i, "gcsf") for i in range(course.doses)]
    tx = load_scenario(REPO / "scenarios" / "transplant.toml")
    assert intervention_marks(tx) == [(iv.day, "transplant") for iv in tx.interventions]
    from niche3d.scenario import Scenario

    assert intervention_marks(Scenario.default()) == []
