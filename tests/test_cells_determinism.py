"""Same seed -> bit-identical cells and events for 1 and 2 threads; checkpoints resume exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

SCENARIO = textwrap.dedent(
    """
    import sys
    import numpy as np
    import numba
    from niche3d.cells import CellModel, CellsConfig, Modifiers, Signals
    from niche3d.tissue.codes import Tissue
    from niche3d.tissue.lattice import Lattice

    from cells_testdata import niche_world as world

    def config():
        # fast kinetics so that every rule fires many times in a short run
        return CellsConfig.model_validate({
            "hsc_per_mm3": 60000.0,
            "speed_um_min": 2.0,
            "motility": {"persistence": 0.3},
            "cycle": {"g0_exit_per_day": 2.0, "g1_mean_hours": 8.0, "sg2m_mean_hours": 6.0,
                      "activation_per_day": 0.5, "return_per_day": 0.5},
            # the block is the whole mouse: every blood cell homes here (homing events)
            "blood": {"egress_per_h": 0.3, "homing_per_h": 0.5, "clearance_per_h": 0.1,
                      "block_fraction": 1.0},
            "death": {"hsc_per_day": 0.05, "mpp_exit_per_day": 2.0},
            "fate": {"divisional_asymmetry": 0.2},
        })

    def run(model, sig, start, stop):
        for s in range(start, stop):
            mods = Modifiers(cxcr4_blockade=0.8 if 20 <= s < 30 else 0.0,
                             protease=0.01 if s >= 40 else 0.0,
                             cytotoxic=0.05 if 50 <= s < 55 else 0.0)
            model.step(s, float(s), sig, mods)

    if __name__ == "__main__":
        import niche3d.cells.model as cm

        out = sys.argv[1]
        cm.PARALLEL_MIN_CELLS = int(sys.argv[2])  # 0: always the parallel kernels
        lat, sig = world()
        model = CellModel(config(), lat, seed=2024, dt_hours=1.0, motility_substeps=4)
        model.seed_initial(sig)
        run(model, sig, 0, 72)
        res = {f"snap_{k}": v for k, v in model.snapshot().items()}
        res.update({f"ev_{k}": v for k, v in model.drain_events().items()})
        res["metrics"] = np.array(list(model.metrics().values()))
        res["threads"] = np.array([numba.get_num_threads()])
        np.savez(out, **res)
    """
)


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint8) if a.dtype.kind in "fb" else a


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("det") / "scenario_cells.py"
    p.write_text(SCENARIO)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("parallel_min", [0, 10**9], ids=["parallel-kernels", "serial-twins"])
def test_same_seed_bit_identical_for_1_and_2_threads(script, tmp_path, parallel_min):
    results = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                               os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, str(script), str(out), str(parallel_min)],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[threads] = dict(np.load(out))
    a, b = results[1], results[2]
    assert int(a["threads"][0]) == 1 and int(b["threads"][0]) == 2
    assert a.keys() == b.keys()
    # the run must exercise every rule for the comparison to mean something
    kinds = set(np.unique(a["ev_kind"]).tolist())
    assert {0, 1, 2, 3, 4, 5, 6}.issubset(kinds), kinds
    for k in a:
        if k == "threads":
            continue
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(_bits(a[k]), _bits(b[k])), k


def test_parallel_kernels_equal_their_serial_twins(script, monkeypatch):
    """In one process with 2 threads: parallel kernels and serial twins agree bit for bit."""
    sys.path.insert(0, str(script.parent))
    try:
        import scenario_cells as sc  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    import numba

    import niche3d.cells.model as cm
    from niche3d.cells import CellModel

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    numba.set_num_threads(2)
    lat, sig = sc.world()
    snaps = []
    for threshold in (0, 10**9):
        monkeypatch.setattr(cm, "PARALLEL_MIN_CELLS", threshold)
        m = CellModel(sc.config(), lat, seed=99, dt_hours=1.0, motility_substeps=4)
        m.seed_initial(sig)
        sc.run(m, sig, 0, 40)
        snaps.append((m.snapshot(), m.drain_events()))
    for part in range(2):
        for k in snaps[0][part]:
            assert np.array_equal(_bits(snaps[0][part][k]), _bits(snaps[1][part][k])), k


def test_checkpoint_restore_continues_bit_identically(script):
    sys.path.insert(0, str(script.parent))
    try:
        import scenario_cells as sc  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    from niche3d.cells import CellModel

    lat, sig = sc.world()
    a = CellModel(sc.config(), lat, seed=7, dt_hours=1.0, motility_substeps=4)
    a.seed_initial(sig)
    sc.run(a, sig, 0, 30)
    ev_first = a.drain_events()
    sc.run(a, sig, 30, 36)  # leave undrained events in the checkpoint
    state = {k: v.copy() for k, v in a.state_dict().items()}
    sc.run(a, sig, 36, 70)
    b = CellModel(sc.config(), lat, seed=7, dt_hours=1.0, motility_substeps=4)
    b.load_state_dict(state)
    sc.run(b, sig, 36, 70)
    sa, sb = a.snapshot(), b.snapshot()
    for k in sa:
        assert np.array_equal(_bits(sa[k]), _bits(sb[k])), k
    ea, eb = a.drain_events(), b.drain_events()
    assert ea["t_hours"].size > 0 and ev_first["t_hours"].size > 0
    for k in ea:
        assert np.array_equal(_bits(ea[k]), _bits(eb[k])), k
    assert a.metrics() == b.metrics()
    assert np.array_equal(a.occupied_flat(), b.occupied_flat())


def test_different_seeds_differ(script):
    sys.path.insert(0, str(script.parent))
    try:
        import scenario_cells as sc  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    from niche3d.cells import CellModel

    lat, sig = sc.world()
    snaps = []
    for seed in (1, 2):
        m = CellModel(sc.config(), lat, seed=seed, dt_hours=1.0, motility_substeps=4)
        m.seed_initial(sig)
        sc.run(m, sig, 0, 5)
        snaps.append(m.snapshot())
    assert not np.array_equal(snaps[0]["x"], snaps[1]["x"]) or snaps[0]["x"].size != snaps[1]["x"].size
