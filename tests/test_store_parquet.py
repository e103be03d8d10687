"""Parquet tables inside the run store (format 3): any Arrow reader opens them, niche3d
reads them lazily, a killed batch never shows, and older stores upgrade losslessly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from niche3d.cli import main
from niche3d.io import RunWriter, check_store, open_run
from niche3d.io._format import FORMAT_VERSION, TABLES, StoreError
from niche3d.io.lock import StoreLocked, WriterLock
from niche3d.io.upgrade import upgrade

REFERENCE = REPO / "tests" / "data" / "reference_stores"


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    run = open_run(path)
    return {t: getattr(run, t) for t in TABLES}


def _as_format3(tables: dict[str, pd.DataFrame], voxel_um: float) -> dict[str, pd.DataFrame]:
    """Format 1-2 tables as format 3 holds them: the events' second position in µm voxel
    centres (NaN for none) and its state with names."""
    ev = tables["events"].copy()
    for k in ("other_z", "other_y", "other_x"):
        v = ev[k].to_numpy(dtype=float)
        ev[k] = np.where(v < 0, np.nan, (v + 0.5) * voxel_um)
    names = list(ev["state"].cat.categories)
    codes = ev["other_state"].to_numpy()
    ev["other_state"] = pd.Categorical.from_codes(np.where(codes < 0, -1, codes), categories=names)
    return {**tables, "events": ev}


def test_any_arrow_reader_opens_the_tables_without_niche3d(tiny_run: Path) -> None:
    run = open_run(tiny_run)
    assert run.format_version == FORMAT_VERSION == 3
    for t in TABLES:
        ours = getattr(run, t)
        directory = tiny_run / "tables" / t
        # pyarrow's dataset discovery and pandas see exactly the committed rows
        plain = ds.dataset(directory, format="parquet").to_table().to_pandas()
        assert len(plain) == len(ours) == run.attrs["rows"][t] > 0
        assert list(plain.columns) == list(ours.columns)
        via_pandas = pd.read_parquet(directory)
        assert len(via_pandas) == len(ours)
        for col in ours.columns:
            if isinstance(ours[col].dtype, pd.CategoricalDtype):
                # names, not codes, in the plain reader too
                assert list(plain[col].astype(str)) == list(ours[col].astype(str)), col
            else:
                np.testing.assert_array_equal(plain[col].to_numpy(dtype=float),
                                              ours[col].to_numpy(dtype=float), err_msg=col)
    # units travel in the Arrow field metadata, the schema in the file metadata
    part = sorted((tiny_run / "tables" / "cells").glob("part-*.parquet"))[0]
    schema = pq.read_schema(part)
    assert schema.field("z").metadata[b"unit"] == b"micrometer"
    assert schema.field("t").metadata[b"unit"] == b"hour"
    assert json.loads(schema.metadata[b"niche3d_table"])["name"] == "cells"
    # an event's second cell (a division's daughter) is placed in µm like the first
    ev = run.events
    div = ev[ev["kind"] == "division"]
    assert len(div) > 0 and ev.attrs["units"]["other_z"] == "micrometer"
    for k in ("other_z", "other_y", "other_x"):
        v = div[k].dropna().to_numpy() / run.voxel_um - 0.5
        np.testing.assert_array_equal(v, np.round(v))  # voxel centres
        assert (v >= 0).all()
    assert set(div["other_state"].astype(str)) <= set(ev["state"].cat.categories)


def test_lazy_scans_read_only_what_a_query_asks(tiny_run: Path) -> None:
    run = open_run(tiny_run)
    cells = run.cells
    last = int(cells["record"].max())
    d = run.dataset("cells")
    assert isinstance(d, ds.Dataset) and d.count_rows() == len(cells)
    # a filtered scan touches only the part of that record (one part per record)
    assert len(list(d.get_fragments(filter=ds.field("record") == last))) >= 1
    got = run.read_table("cells", columns=["record", "state", "z"], filter=ds.field("record") == last)
    want = cells.loc[cells["record"] == last, ["record", "state", "z"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert got.attrs["units"]["z"] == "micrometer"
    with pytest.raises(ValueError, match="has no columns \\['nope'\\]"):
        run.read_table("cells", columns=["nope"])
    with pytest.raises(ValueError, match="table must be one of cells, events, metrics"):
        run.dataset("cell")


def _small_writer(path: Path) -> RunWriter:
    from niche3d.scenario import Scenario

    shape = (8, 8, 8)
    w = RunWriter.create(
        path, scenario=Scenario.default().with_overrides({"domain.shape": list(shape)}),
        labels=np.ones(shape, np.uint8), voxel_um=10.0, record_hours=1.0, n_records=6,
        fields=[("cxcl12", "nM", (0.0, 40.0))], seed=3, code_version="t", dt_hours=1.0,
    )
    w.set_categories("cells", "state", ["dormant", "active"])
    return w


def _record(w: RunWriter, i: int, n: int = 3) -> None:
    cells = {"track_id": np.arange(n, dtype=np.int64) + 10 * i, "state": np.arange(n, dtype=np.int8) % 2,
             "z": np.full(n, 1, np.int32), "y": np.full(n, 2, np.int32), "x": np.full(n, 3, np.int32)}
    w.write_record(i, float(i), fields={"cxcl12": np.full((8, 8, 8), float(i), np.float32)}, labels=None,
                   cells=cells, metrics={"n": n, "frac": 0.5})


def test_a_killed_batch_never_shows_and_the_next_writer_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    w = _small_writer(path)
    for i in range(3):
        _record(w, i)
    # a batch written but never committed (the process died before the root commit)
    stray = path / "tables" / "cells" / "part-000000000009-000000000012.parquet"
    shutil.copy(next((path / "tables" / "cells").glob("part-000000000000-*")), stray)
    run = open_run(path)
    assert len(run.cells) == 9 and run.dataset("cells").count_rows() == 9
    check_store(path)
    del w
    w2 = RunWriter.open_append(path)
    assert not stray.exists()  # a plain Arrow reader now sees the committed rows only
    assert ds.dataset(path / "tables" / "cells", format="parquet").count_rows() == 9
    _record(w2, 3)
    assert open_run(path).cells["track_id"].tolist()[-3:] == [30, 31, 32]


def test_categories_must_come_before_the_first_row(tmp_path: Path) -> None:
    w = _small_writer(tmp_path / "r.zarr")
    _record(w, 0)
    with pytest.raises(ValueError, match="cells already has 3 rows; set the categories"):
        w.set_categories("cells", "state", ["a", "b"])


def test_a_truncated_part_is_named(tmp_path: Path, tiny_run: Path) -> None:
    broken = tmp_path / "b.zarr"
    shutil.copytree(tiny_run, broken)
    part = sorted((broken / "tables" / "events").glob("part-*.parquet"))[1]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(StoreError, match=rf"{part.name}: a table part is truncated"):
        open_run(broken)


@pytest.mark.parametrize("version", [1, 2])
def test_old_stores_upgrade_losslessly_and_resume(version: int, tmp_path: Path) -> None:
    store = tmp_path / f"v{version}.zarr"
    shutil.copytree(REFERENCE / f"v{version}.zarr", store)
    before = _as_format3(_tables(store), open_run(store).voxel_um)
    assert open_run(store).format_version == version
    old_ds = open_run(store).dataset("metrics")  # old stores: an in-memory dataset
    assert old_ds.count_rows() == len(before["metrics"])
    assert main(["upgrade", str(store)]) == 0
    run = open_run(store)
    assert run.format_version == FORMAT_VERSION
    assert run.attrs["upgraded"][-1]["from"] == version
    after = _tables(store)
    for t in TABLES:
        pd.testing.assert_frame_equal(after[t], before[t], check_categorical=False, obj=t)
        assert not (store / "tables" / t / "rows").exists()
        assert not (store / "tables" / t / "zarr.json").exists()
        assert ds.dataset(store / "tables" / t, format="parquet").count_rows() == len(before[t])
    # cells are cut per record, so a scan of one record reads one part
    n_rec = before["cells"]["record"].nunique()
    assert len(list((store / "tables" / "cells").glob("part-*"))) == n_rec
    assert upgrade(store) is None  # a second time: nothing to do


def test_an_interrupted_upgrade_leaves_a_store_that_opens_and_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import niche3d.io._atomic as atomic

    store = tmp_path / "v2.zarr"
    shutil.copytree(REFERENCE / "v2.zarr", store)
    before = _tables(store)
    real = atomic.atomic_write_bytes
    calls = {"n": 0}

    def dying(p, data, *, durable=True):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if Path(p).name == "zarr.json" and Path(p).parent == store:
            raise OSError("killed before the commit")
        return real(p, data, durable=durable)

    monkeypatch.setattr(atomic, "atomic_write_bytes", dying)
    with pytest.raises(StoreError, match="could not be upgraded.*run the upgrade again"):
        upgrade(store)
    monkeypatch.setattr(atomic, "atomic_write_bytes", real)
    assert calls["n"] > 3  # parts were written before the failed commit
    run = open_run(store)  # still format 2, every row there
    assert run.format_version == 2
    for t in TABLES:
        pd.testing.assert_frame_equal(getattr(run, t), before[t], obj=t)
    assert upgrade(store)["to"] == FORMAT_VERSION
    want = _as_format3(before, run.voxel_um)
    for t, df in _tables(store).items():
        pd.testing.assert_frame_equal(df, want[t], check_categorical=False, obj=t)


def test_a_writer_on_an_old_store_upgrades_it_and_continues_the_chain(tmp_path: Path) -> None:
    """What a resume does to a format-2 store: open_append upgrades it, a rewind drops the
    parts after it, and the replayed rows make the chain again. Replaying the stored rows
    gives the tables back."""
    store = tmp_path / "v2.zarr"
    shutil.copytree(REFERENCE / "v2.zarr", store)
    run = open_run(store)
    before = _tables(store)
    fields = {n: np.asarray(run.fields[n]) for n in run.field_names}
    niche = None if run.niche is None else np.asarray(run.niche)
    w = RunWriter.open_append(store)
    assert open_run(store).format_version == FORMAT_VERSION
    # its checkpoint is at its last record: replay it all, from a rewind to the start
    w.rewind_to_start(keep_shown=False)
    k, rows = w.n_records_written, w.rows
    assert k == 0 and rows == {t: 0 for t in TABLES}
    for t in TABLES:  # nothing after the checkpoint is left for a plain reader
        assert ds.dataset(store / "tables" / t, format="parquet").count_rows() == rows[t]
    ev = before["events"].iloc[rows["events"]:]
    w.append_events({c: (ev[c].cat.codes.to_numpy() if isinstance(ev[c].dtype, pd.CategoricalDtype)
                         else ev[c].to_numpy()) for c in ev.columns})
    for i in range(k, run.n_records):
        c = before["cells"][before["cells"]["record"] == i].drop(columns=["record", "t"])
        cells = {col: (c[col].cat.codes.to_numpy().astype(np.int8)
                       if isinstance(c[col].dtype, pd.CategoricalDtype) else c[col].to_numpy())
                 for col in c.columns}
        m = before["metrics"].iloc[i].drop(["record", "t"])
        w.write_record(i, float(run.times_h[i]), fields={n: f[i] for n, f in fields.items()},
                       labels=None, cells=cells, metrics={key: m[key] for key in m.index},
                       niche=None if niche is None else niche[i])
    after = _tables(store)
    want = _as_format3(before, run.voxel_um)
    for t in TABLES:
        pd.testing.assert_frame_equal(after[t], want[t], check_categorical=False,
                                      check_dtype=t != "metrics", obj=t)


def test_upgrade_refuses_a_store_being_written_and_bad_paths(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "v2.zarr"
    shutil.copytree(REFERENCE / "v2.zarr", store)
    lock = WriterLock(store).acquire()
    try:
        with pytest.raises(StoreLocked):
            upgrade(store)
    finally:
        lock.release()
    assert open_run(store).format_version == 2
    assert main(["upgrade", str(store), str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert "missing.zarr: does not exist" in err
    assert open_run(store).format_version == 2  # checked all before changing any
    assert main(["upgrade", str(store)]) == 0
    assert "format 2 -> 3" in capsys.readouterr().out


def test_metrics_appearing_later_read_as_missing_before(tmp_path: Path) -> None:
    path = tmp_path / "m.zarr"
    w = _small_writer(path)
    _record(w, 0)
    w.write_record(1, 1.0, fields={"cxcl12": np.zeros((8, 8, 8), np.float32)}, labels=None,
                   cells={"track_id": np.array([1]), "state": np.array([0], np.int8),
                          "z": np.array([0], np.int32), "y": np.array([0], np.int32),
                          "x": np.array([0], np.int32)},
                   metrics={"n": 1, "frac": 0.25, "late": 7})
    m = open_run(path).metrics
    assert m["late"].isna().tolist() == [True, False] and m.loc[1, "late"] == 7
    assert m["n"].tolist() == [3, 1]
    # a plain reader unifies the parts' schemas by name
    files = sorted(str(p) for p in (path / "tables" / "metrics").glob("part-*"))
    merged = pa.unify_schemas([pq.read_schema(f) for f in files])
    assert "late" in merged.names


def test_upgrade_cuts_parts_where_a_resume_rewinds_to() -> None:
    """Cells per record, every table at the checkpoint's row, and at most 1e6 rows a part:
    a resumed run's first part then starts where a part of the upgrade ended."""
    from niche3d.io.upgrade import _cuts

    schema = {"columns": [{"name": "record", "dtype": "int64"}, {"name": "t", "dtype": "float64"}]}
    rows = np.array([[0, 0], [0, 0], [1, 8], [1, 8], [1, 8], [2, 16]], dtype=np.float64)
    assert _cuts("cells", rows, schema, 6, None) == [2, 5, 6]
    assert _cuts("events", rows, schema, 6, 4) == [4, 6]
    assert _cuts("events", rows, schema, 6, 6) == [6]
    assert _cuts("metrics", np.zeros((2_500_000, 2)), schema, 2_500_000, None) == [1_000_000, 2_000_000, 2_500_000]


def test_categories_are_every_stored_name_in_code_order(tmp_path: Path) -> None:
    """As format 2 read them: names no row has are still categories (a viewer colours by
    them), and an unnamed code reads as unknown_<code>."""
    path = tmp_path / "c.zarr"
    w = _small_writer(path)  # names: dormant, active
    w.write_record(0, 0.0, fields={"cxcl12": np.zeros((8, 8, 8), np.float32)}, labels=None,
                   cells={"track_id": np.array([1, 2]), "state": np.array([1, 5], np.int8),
                          "z": np.array([0, 1], np.int32), "y": np.array([0, 1], np.int32),
                          "x": np.array([0, 1], np.int32)}, metrics={"n": 2})
    state = open_run(path).cells["state"]
    assert list(state.cat.categories) == ["dormant", "active", "unknown_5"]
    assert state.astype(str).tolist() == ["active", "unknown_5"]
    one = open_run(path).read_table("cells", columns=["state"], filter=ds.field("track_id") == 1)["state"]
    assert list(one.cat.categories) == ["dormant", "active", "unknown_5"]


def test_info_shows_a_store_of_a_retired_model(capsys: pytest.CaptureFixture[str]) -> None:
    """The v2 reference store was written by the model before finite niches: its scenario
    no longer validates, but the store reads, and info says so instead of failing."""
    assert main(["info", str(REFERENCE / "v2.zarr")]) == 0
    out = capsys.readouterr().out
    assert "not valid with this niche3d: written by an older model" in out
    assert "format 2 (float64 table arrays; 'niche3d upgrade RUN' converts them to Parquet)" in out
    assert "cells       414 rows" in out
