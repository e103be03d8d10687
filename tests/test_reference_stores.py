"""Old run stores still open: every kept reference store (one per store format version,
written by ``tools/make_reference_stores.py``) is read with the current code and compared
with the summary written next to it, and can be resumed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
from make_reference_stores import summary  # noqa: E402

from niche3d.io import check_store, open_run  # noqa: E402
from niche3d.io._format import FORMAT_VERSION, StoreError  # noqa: E402
from niche3d.simulation import Simulation  # noqa: E402

DATA = REPO / "tests" / "data" / "reference_stores"
SUMMARIES = sorted(DATA.glob("v*.json"))
#: scenario keys of the model before finite niche sites (issue 14): coin-flip renewal and a
#: demand set point from the seeded HSC number
RETIRED = ("renew_min", "renew_max", "renew_half", "demand_renewal_gain",
           "reference_mpp_per_hsc_per_day")


def test_the_current_format_version_has_a_reference_store() -> None:
    assert (DATA / f"v{FORMAT_VERSION}.json").is_file(), (
        "no reference store for the current FORMAT_VERSION: run "
        "python tools/make_reference_stores.py"
    )


@pytest.mark.parametrize("doc_path", SUMMARIES, ids=[p.stem for p in SUMMARIES])
def test_reference_store_reads_as_written(doc_path: Path) -> None:
    want = json.loads(doc_path.read_text())
    store = doc_path.with_suffix(".zarr")
    assert check_store(store)["format_version"] == want["format_version"]
    got = summary(store)
    got.pop("format_version")  # the summary stamps the current version
    for key, value in got.items():
        if key == "field_sums":
            for name, sums in value.items():
                np.testing.assert_allclose(sums, want[key][name], rtol=1e-6, err_msg=name)
        else:
            assert value == want[key], key


@pytest.mark.parametrize("doc_path", SUMMARIES, ids=[p.stem for p in SUMMARIES])
def test_reference_store_resumes_from_its_checkpoint(doc_path: Path, tmp_path: Path) -> None:
    want = json.loads(doc_path.read_text())
    store = tmp_path / "copy.zarr"
    shutil.copytree(doc_path.with_suffix(".zarr"), store)
    if any(key in open_run(store).scenario_toml for key in RETIRED):
        # written by the model before finite niches: its checkpoint belongs to other rules,
        # so it is refused with the key that no longer exists, and nothing is written
        before = sorted(p.name for p in store.rglob("*"))
        with pytest.raises(StoreError, match=r"(?s)resumes with the niche3d that wrote it.*renew_min"):
            Simulation.resume(store)
        assert sorted(p.name for p in store.rglob("*")) == before
        assert open_run(store).times_h[-1] == pytest.approx(want["times_h"][-1])
        return
    sim = Simulation.resume(store)
    sim.run(days=8 / 24)
    run = open_run(store)
    assert run.times_h[-1] == pytest.approx(want["times_h"][-1] + 8.0)
    assert run.seed == want["seed"]
