"""The niche3d command line, through subprocesses as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY

CLI = [sys.executable, "-m", "niche3d.cli"]
TINY_SET = [f"--set={k}={v}" for k, v in TINY.items()]


def cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_help_of_every_command() -> None:
    for args in ([], ["run"], ["info"], ["scenario"], ["geometry"], ["view"], ["warmup"]):
        r = cli(*args, "--help")
        assert r.returncode == 0, r.stderr
        assert "usage: niche3d" in r.stdout


def test_run_writes_store_and_prints_where(tmp_path: Path) -> None:
    out = tmp_path / "r.zarr"
    r = cli("run", str(REPO / "scenarios/homeostasis.toml"), "-o", str(out), "--days", "1", "--seed", "3",
            "-q", *TINY_SET)
    assert r.returncode == 0, r.stderr
    assert f"run store: {out.resolve()}" in r.stdout
    assert f"niche3d view {out}" in r.stdout
    from niche3d.io import open_run

    run = open_run(out)
    assert run.seed == 3
    assert run.scenario.run.days == 1.0
    assert run.n_records == 3  # t = 0, 12, 24 h
    info = cli("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "records     3 every 12 h" in info.stdout
    assert "levels      1 (no pyramid" in info.stdout  # a small lattice
    # an existing store is never overwritten silently
    again = cli("run", str(REPO / "scenarios/homeostasis.toml"), "-o", str(out), "--days", "1", "-q", *TINY_SET)
    assert again.returncode == 2
    assert "exists" in again.stderr and "Traceback" not in again.stderr


def test_default_output_name_does_not_clobber(tmp_path: Path) -> None:
    (tmp_path / "runs" / "homeostasis.zarr").mkdir(parents=True)
    r = cli("run", str(REPO / "scenarios/homeostasis.toml"), "--days", "0.5", "-q", *TINY_SET, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "homeostasis-2.zarr").is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.toml"], "scenario file 'missing.toml' does not exist"),
        (["run", "SCEN", "--set", "run.dayz=3"], "did you mean 'days'"),
        (["run", "SCEN", "--set", "domain.voxel_um=-1"], "domain.voxel_um = -1"),
        (["run", "SCEN", "--set", "novalue"], "must look like key.path=value"),
        (["run"], "run needs a SCENARIO"),
        (["info", "/nonexistent/store.zarr"], "/nonexistent/store.zarr"),
        (["scenario", "validate", "SCEN", "--set", "cells.hsc_per_mm3=abc"], "cells.hsc_per_mm3 = 'abc'"),
        (["run", "SCEN", "--days", "0.3", "--out", "/tmp/niche3d-never-made.zarr"],
         "not a whole number of run.dt_hours"),
        (["run", "SCEN", "--set", "fields.diffusible.cxcl12.secretion_per_min.stroma=inf"],
         "finite number"),
        (["run", "SCEN", "--set", "run.dt_hours=0.0001"], "more than 1,000,000"),
    ],
)
def test_bad_input_exits_2_without_traceback(args: list[str], message: str) -> None:
    args = [str(REPO / "scenarios/homeostasis.toml") if a == "SCEN" else a for a in args]
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_info_on_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    r = cli("info", str(tmp_path))
    assert r.returncode == 2
    assert str(tmp_path) in r.stderr and "Traceback" not in r.stderr


def test_scenario_docs_and_show() -> None:
    r = cli("scenario", "docs")
    assert r.returncode == 0
    assert "| `run.days` |" in r.stdout
    r = cli("scenario", "show", str(REPO / "scenarios/amd3100.toml"), "--set", "run.seed=9")
    assert r.returncode == 0
    assert 'kind = "amd3100"' in r.stdout and "seed = 9" in r.stdout


def test_scenario_reference_in_docs_is_current() -> None:
    from niche3d.scenario import scenario_reference

    text = (REPO / "docs" / "scenario-reference.md").read_text(encoding="utf-8")
    assert text == scenario_reference("markdown"), "regenerate: niche3d scenario docs -o docs/scenario-reference.md"


def test_sigkill_leaves_a_readable_store(tmp_path: Path) -> None:
    """Kill -9 a running CLI; every record written before the kill is readable."""
    from niche3d.io import open_run

    out = tmp_path / "killed.zarr"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*CLI, "run", str(REPO / "scenarios/homeostasis.toml"), "-o", str(out), "-q",
         "--set=domain.shape=[20,32,32]", "--set=run.days=200", "--set=output.interval_hours=2",
         "--set=cells.hsc_per_mm3=20000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                if open_run(out).n_records >= 4:
                    break
            except Exception:  # noqa: BLE001 - store not created yet
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = open_run(out)
    n = run.n_records
    assert n >= 4
    assert list(run.times_h) == [2.0 * i for i in range(n)]
    assert sorted(run.cells.t.unique()) == [2.0 * i for i in range(n)]
    assert run.metrics.shape[0] == n
    assert run.fields["cxcl12"].isel(t=n - 1).max().compute() > 0


def test_first_run_says_it_compiles_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With kernels missing from numba's disk cache, `niche3d run` says it is compiling
    and compiles them up front (niche3d._warmup) before building the run; with a warm
    cache it says nothing."""
    import niche3d._jit as J
    import niche3d._warmup as WU
    from niche3d import cli as C

    calls: list[str] = []
    monkeypatch.setenv("NICHE3D_CACHE_DIR", str(tmp_path))
    uncached = ["residual", "cell_rules_par", "irradiate_cells"]
    monkeypatch.setattr(J, "uncached_kernels", lambda: list(uncached))

    def fake_warm(say=None):  # type: ignore[no-untyped-def]
        calls.append("warm")
        del uncached[:2]  # compiled by the warm-up; irradiate_cells is never called by it
        WU.record_warm()
        return 1.0

    monkeypatch.setattr(WU, "warm_up", fake_warm)
    C._compile_first(quiet=False)
    err = capsys.readouterr().err
    assert calls == ["warm"]
    assert "compiling 3 numba kernels (first run only" in err
    # the next run: the kernel the warm-up never needed does not count as cold
    C._compile_first(quiet=False)
    assert calls == ["warm"] and capsys.readouterr().err == ""


def test_uncached_kernels_lists_kernels_until_they_are_compiled() -> None:
    import niche3d._jit as J

    def plus_one_for_the_cache_test(x: float) -> float:
        return x + 1.0

    k = J.jit(plus_one_for_the_cache_test)
    try:
        index = k._cache._cache_file._index_path
        if os.path.exists(index):
            os.remove(index)  # left by an earlier run of this test
        name = plus_one_for_the_cache_test.__qualname__
        assert name in J.uncached_kernels()
        assert k(1.0) == 2.0  # compiles and writes the disk cache
        assert name not in J.uncached_kernels()
    finally:
        J._KERNELS.remove(k)
