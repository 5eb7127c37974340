"""``merx db copy``: a results.db with real runs into a real PostgreSQL server and back."""

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore, SchemaTooNew, StoreError, resolve_url, schema
from merx.store.copy import copy_runs, run_tables
from merx.store.migrations import MIGRATIONS, migrate
from merx.store.runstore import create_store_engine

from tiny_experiment import tiny_toml


def merx(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def start(store, seed, experiment="api"):
    return store.start_run(experiment=experiment, experiment_file=None, config={"seed": seed},
                           config_hash=f"c{seed}", group_hash="g", seed=seed, task="regression", device="cpu",
                           versions={"merx": "0.1.0"}, git_commit=None, tags=("copied",))


def api_runs(store, seeds=(1, 2)):
    """Runs written through the store API, covering what a tiny real run does not: a failed run,
    NULL metrics, failures, data notes, artifacts, a note."""
    ids = []
    for seed in seeds:
        run_id = start(store, seed)
        store.add_plugins(run_id, [{"kind": "fusions", "name": "concat", "origin": "built-in",
                                    "source": "merx.builtin.fusions", "version": None}])
        for epoch in (1, 2, 3):
            store.add_epoch(run_id, epoch, {"train_loss": 1.0 / (epoch + seed), "val_loss": float("nan")})
        store.add_metrics(run_id, "test", {"valence_mae": 0.1 * seed, "r2": float("-inf")})
        store.add_baselines(run_id, "mean", {"valence_mae": 0.2})
        store.add_predictions(run_id, [{"song_id": f"S{i}", "split": "test", "true_valence": 0.1 * i,
                                        "pred_valence": 1 / 3, "true_quadrant": "Q1", "pred_quadrant": "Q2"}
                                       for i in range(5)])
        store.add_failures(run_id, [{"song_id": "X1", "stage": "audio", "reason": "unreadable", "path": "a/X1.mp3"}])
        store.add_data_notes(run_id, {"in_hole": [("S1", "V/A (0.5, 0.45)")]})
        with store.engine.begin() as conn:  # (the artifacts table has its own writer elsewhere)
            conn.execute(sa.insert(schema.artifacts).values(run_id=run_id, kind="plot", path=f"/x/run{run_id}.png"))
        store.update_run(run_id, note=f"seed {seed}")
        store.finish_run(run_id, "failed" if seed == 2 else "completed", error="boom" if seed == 2 else None)
        ids.append(run_id)
    return ids


def dump(db, mapping=None):
    """Every row of every table of the store, as sorted tuples; run ids translated by ``mapping``."""
    engine = create_store_engine(resolve_url(db))
    out = {}
    try:
        with engine.connect() as conn:
            for table in schema.metadata.sorted_tables:
                key = "id" if table is schema.runs else "run_id"
                rows = []
                for row in conn.execute(sa.select(table)).mappings():
                    row = dict(row)
                    if mapping is not None:
                        row[key] = mapping.get(row[key], row[key])
                    rows.append(tuple(sorted(row.items())))
                out[table.name] = sorted(rows, key=repr)
    finally:
        engine.dispose()
    return out


@pytest.fixture
def three_runs(tmp_path, tiny_bert_dir):
    """results.db with a real tiny run (run1) and two store-API runs (run2, run3)."""
    exp = tmp_path / "tiny.toml"
    exp.write_text(tiny_toml(tiny_bert_dir, Path.cwd() / ".merx" / "cache", epochs=2))
    result = merx("run", exp)
    assert result.exit_code == 0, result.output
    store = RunStore("results.db")
    assert api_runs(store) == [2, 3]
    store.close()
    return tmp_path / "results.db"


def test_three_runs_into_postgresql_and_back_are_the_same_rows(three_runs, postgres_url, tmp_path):
    before = dump(three_runs)
    for table in run_tables():  # the copy below sees a row in every table that hangs off a run
        assert before[table.name], f"the test runs write no {table.name} row: add one"
    assert {t.name for t in run_tables()} == set(schema.metadata.tables) - {"runs"}

    into = merx("db", "copy", three_runs, postgres_url)
    assert into.exit_code == 0, into.output
    assert re.fullmatch(r"copied 3 run\(s\) from .*results\.db into postgresql\+psycopg://postgres@/merx_test_\w+"
                        r"\?host=/\S+ under the same ids\n", into.stdout), into.stdout
    assert dump(postgres_url) == before
    back = tmp_path / "back.db"
    out = merx("db", "copy", postgres_url, back)
    assert out.exit_code == 0 and "copied 3 run(s)" in out.stdout, out.output
    assert dump(back) == before  # identical rows, ids included

    # What reads a database reads the copy the same way.
    pg = RunStore(postgres_url)
    for run_id in (1, 2, 3):
        original, copy = RunStore(three_runs).get_run(run_id), pg.get_run(run_id)
        assert copy == original
        assert pg.get_predictions(run_id) == RunStore(three_runs).get_predictions(run_id)
    shown = merx("show", "run1", "--db", postgres_url)
    assert shown.exit_code == 0 and "learning curve" in shown.stdout, shown.output
    # The server's id sequence moved past the copied ids: the next run is run4, not a clash with run1.
    assert start(pg, 9) == 4

    again = merx("db", "copy", three_runs, postgres_url)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0].startswith("run1 is already in postgresql")
    assert again.stdout.splitlines()[-1].startswith("nothing copied into")
    assert len(pg.list_runs(limit=None)) == 4


def test_runs_copied_into_a_database_that_used_their_ids_get_new_ones_and_the_mapping_is_said(
        tmp_path, postgres_url):
    source = tmp_path / "src.db"
    store = RunStore(source)
    ids = api_runs(store, seeds=(1, 2, 3))
    dest = RunStore(postgres_url)
    assert [start(dest, 10), start(dest, 11)] == [1, 2]
    out = merx("db", "copy", source, postgres_url, "run2", "3")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == ["run2 -> run3", "run3 -> run4", out.stdout.splitlines()[-1]]
    assert out.stdout.splitlines()[-1].endswith("under new ids (above)")
    mapping = {2: 3, 3: 4}
    src_rows, dst_rows = dump(source, mapping), dump(postgres_url)
    for name, rows in src_rows.items():
        key = "id" if name == "runs" else "run_id"
        copied = [r for r in rows if dict(r)[key] in (3, 4)]
        assert copied and copied == [r for r in dst_rows[name] if dict(r)[key] in (3, 4)], name
    assert ids == [1, 2, 3] and start(dest, 12) == 5

    # Into SQLite, an id of a deleted run is not handed out again either.
    other = tmp_path / "other.db"
    keep = RunStore(other)
    start(keep, 20), start(keep, 21)
    with keep.engine.begin() as conn:
        conn.execute(sa.delete(schema.runs).where(schema.runs.c.id == 2))
    report = copy_runs(postgres_url, other, [3])
    assert [(r.source_id, r.dest_id, r.copied) for r in report.runs] == [(3, 3, True)]  # 3 was never used there
    report = copy_runs(source, other, [1, 2])
    # run1's id is taken (deleted or not): a new one; run2 went there as run3 through the server: skipped.
    assert [(r.source_id, r.dest_id, r.copied) for r in report.runs] == [(1, 4, True), (2, 3, False)]


def test_a_copy_changes_no_schema_and_refuses_what_it_cannot_copy(tmp_path, postgres_url):
    source = tmp_path / "src.db"
    api_runs(RunStore(source), seeds=(1,))
    engine = create_store_engine(resolve_url(postgres_url))
    migrate(engine, MIGRATIONS[:1])  # a server database of an older merx
    engine.dispose()
    out = merx("db", "copy", source, postgres_url)
    assert out.exit_code == 2 and "older schema than this merx" in out.stderr, out.output
    assert "merx db copy changes no schema. Upgrade it first" in out.stderr and "merx runs --db" in out.stderr
    engine = create_store_engine(resolve_url(postgres_url))
    with engine.connect() as conn:  # untouched: still one migration, no run
        assert conn.exec_driver_sql("SELECT count(*) FROM migrations").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 0
    engine.dispose()

    newer = tmp_path / "newer.db"
    RunStore(newer).close()
    with create_store_engine(resolve_url(newer)).begin() as conn:
        conn.exec_driver_sql("INSERT INTO migrations (name, applied_at) VALUES ('m099_future', '2030-01-01')")
    with pytest.raises(SchemaTooNew, match="newer merx"):
        copy_runs(source, newer)
    with pytest.raises(SchemaTooNew, match="newer merx"):
        copy_runs(newer, tmp_path / "fresh.db")

    old_source = tmp_path / "old.db"
    engine = create_store_engine(resolve_url(old_source))
    migrate(engine, MIGRATIONS[:1])
    engine.dispose()
    with pytest.raises(StoreError, match=r"source database .*old\.db has an older schema"):
        copy_runs(old_source, tmp_path / "fresh.db")

    with pytest.raises(StoreError, match=r"typo\.db does not exist"):
        copy_runs(tmp_path / "typo.db", tmp_path / "fresh.db")
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(StoreError, match="the same database"):
        copy_runs(source, f"sqlite:///{source}")
    out = merx("db", "copy", source, tmp_path / "fresh.db", "run7")
    assert out.exit_code == 2 and "no run run7 in" in out.stderr and "nothing was copied" in out.stderr

    start(RunStore(source), 5)  # a run still training
    out = merx("db", "copy", source, tmp_path / "fresh.db", "run2")
    assert out.exit_code == 0 and "run2 is recorded running: copied as it stands" in out.stdout, out.output


def test_deleting_a_copied_run_leaves_the_files_of_the_original(three_runs, postgres_url):
    """A copy lists the source's checkpoint files (paths are copied, files are not): merx rm of
    the copy must not delete them, nor the source run's folder."""
    original = RunStore(three_runs).get_run(1)
    files = [a["path"] for a in original["artifacts"]]
    assert files and all(Path(f).is_file() for f in files)
    assert merx("db", "copy", three_runs, postgres_url).exit_code == 0
    out = merx("rm", "run1", "--db", postgres_url, "--yes")
    assert out.exit_code == 0, out.output
    assert "deleted run1 (0 files" in out.stdout and f"left {len(files)} file(s) in place" in out.stdout
    assert all(Path(f).is_file() for f in files)  # the original's checkpoints are intact
    assert RunStore(postgres_url).run_ids() == {2, 3}
    assert RunStore(three_runs).get_run(1)["artifacts"] == original["artifacts"]


def test_db_is_a_command_group():
    out = merx("db", "--help")
    assert out.exit_code == 0 and "copy" in out.stdout
    assert re.search(r"^\s+db\s", merx("--help").stdout, re.M)
