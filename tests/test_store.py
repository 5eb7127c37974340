"""The results store on real SQLite files and a real PostgreSQL server (the ``any_db`` fixture):
every table, migrations, several writing processes."""

import math
import multiprocessing
import os
import re
import sqlite3

import pytest
import sqlalchemy as sa

from merx.data.songs import Failure
from merx.store import InvalidRunId, RunNotFound, RunStore, SchemaTooNew, StoreError, parse_run_id, resolve_url, schema
from merx.store.migrations import MIGRATIONS, migrate
from merx.store.runstore import create_store_engine

VERSIONS = {"python": "3.11", "merx": "0.1.0", "torch": "2.13.0"}


def start(store, experiment="exp", seed=0, **kw):
    args = dict(experiment=experiment, experiment_file="experiments/exp.toml",
                config={"name": experiment, "seed": seed, "train": {"lr": {"audio": 1e-3}}},
                config_hash=f"c{seed}", group_hash="g", seed=seed, task="regression", device="cpu",
                versions=VERSIONS, git_commit="abc123", description="a test", tags=("smoke",))
    args.update(kw)
    return store.start_run(**args)


# -- where the database is, and how SQLite is configured ---------------------------------------

def test_default_file_env_var_and_urls(tmp_path, monkeypatch):
    store = RunStore()
    assert os.path.exists(tmp_path / "results.db")
    assert store.location == str(tmp_path / "results.db")
    monkeypatch.setenv("MERX_DB", "from-env.db")
    assert resolve_url() == f"sqlite:///{tmp_path / 'from-env.db'}"
    assert resolve_url("sub/dir/x.db") == f"sqlite:///{tmp_path / 'sub/dir/x.db'}"
    assert resolve_url("sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"
    # A new file in an existing folder is created; a missing folder is a typo until shown otherwise.
    with pytest.raises(StoreError, match=r"sub/dir/x\.db: its folder .*sub/dir does not exist.*mkdir -p .*sub/dir$"):
        RunStore("sub/dir/x.db")
    assert not (tmp_path / "sub").exists()
    (tmp_path / "sub/dir").mkdir(parents=True)
    RunStore("sub/dir/x.db")
    assert (tmp_path / "sub/dir/x.db").exists()


def test_sqlite_is_configured_for_several_processes(tmp_path):
    store = RunStore(tmp_path / "r.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # A write transaction holds the write lock from its BEGIN (IMMEDIATE), before writing anything:
    # another writer that will not wait is refused at once.
    other = sqlite3.connect(tmp_path / "r.db", timeout=0, isolation_level=None)
    with store.engine.begin() as conn:
        conn.execute(sa.select(schema.runs.c.id)).all()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again after COMMIT
    other.execute("ROLLBACK")
    # Reads begin DEFERRED: they go ahead while another process holds the write lock.
    other.execute("BEGIN IMMEDIATE")
    assert store.list_runs() == []
    other.execute("ROLLBACK")
    other.close()


def test_not_a_database_gives_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is a text file, not SQLite\n" * 100)
    with pytest.raises(StoreError, match=r"cannot open the results database .*notes\.db.*--db"):
        RunStore(bogus)


# -- every table round trip ---------------------------------------------------------------------

def test_round_trip_of_every_table(any_db):
    store = RunStore(any_db)
    run_id = start(store)
    assert run_id == 1
    store.add_plugins(run_id, [
        {"kind": "fusions", "name": "concat", "origin": "built-in", "source": "merx.builtin.fusions", "version": None},
        {"kind": "audio_towers", "name": "mine", "origin": "distribution", "source": "merx-mine", "version": "1.2"}])
    for epoch in (1, 2, 3):
        store.add_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "lr_audio": 1e-3})
    store.add_metrics(run_id, "test", {"valence_mae": 0.11, "arousal_mae": 0.06, "quadrant_macro_f1": 0.5})
    store.add_metrics(run_id, "validate", {"valence_mae": 0.12})
    store.add_baselines(run_id, "mean", {"valence_mae": 0.2})
    store.add_baselines(run_id, "quadrant_centre", {"valence_mae": 0.05})
    preds = [{"song_id": "A001", "split": "test", "true_valence": 0.8, "true_arousal": 0.7, "pred_valence": 0.6,
              "pred_arousal": 0.65, "true_quadrant": "Q1", "pred_quadrant": "Q1"},
             {"song_id": "A002", "split": "test", "true_valence": 0.2, "true_arousal": 0.3, "pred_valence": 0.55,
              "pred_arousal": 0.4, "true_quadrant": "Q3", "pred_quadrant": "Q4", "probs": [0.1, 0.2, 0.3, 0.4]}]
    store.add_predictions(run_id, preds)
    store.add_failures(run_id, [{"song_id": "A003", "stage": "audio", "reason": "unreadable", "path": "a/A003.mp3"},
                                Failure("A004", "lyrics", "empty lyrics")])
    store.update_run(run_id, note="looks fine", tags=["smoke", "rerun"])
    store.finish_run(run_id, "completed", best_epoch=3, epochs_run=3, checkpoint_path="runs/run1/best.pt")

    run = RunStore(any_db).get_run("run1")  # a fresh store reads what the first wrote
    assert run["name"] == "run1" and run["experiment"] == "exp"
    assert run["experiment_file"] == "experiments/exp.toml" and run["description"] == "a test"
    assert run["config"] == {"name": "exp", "seed": 0, "train": {"lr": {"audio": 1e-3}}}
    assert (run["config_hash"], run["group_hash"], run["seed"], run["task"]) == ("c0", "g", 0, "regression")
    assert run["versions"] == VERSIONS and run["git_commit"] == "abc123" and run["device"] == "cpu"
    assert run["tags"] == ["smoke", "rerun"] and run["note"] == "looks fine"
    assert run["status"] == "completed" and run["error"] is None
    assert (run["best_epoch"], run["epochs_run"], run["checkpoint_path"]) == (3, 3, "runs/run1/best.pt")
    assert run["started_at"].endswith("+00:00") and run["ended_at"] >= run["started_at"]
    assert 0 <= run["wall_seconds"] < 60
    assert run["plugins"][1] == {"kind": "fusions", "name": "concat", "origin": "built-in",
                                 "source": "merx.builtin.fusions", "version": None}
    assert run["plugins"][0]["version"] == "1.2"
    assert run["epochs"] == {e: {"train_loss": 1.0 / e, "val_loss": 2.0 / e, "lr_audio": 1e-3} for e in (1, 2, 3)}
    assert run["metrics"] == {"test": {"valence_mae": 0.11, "arousal_mae": 0.06, "quadrant_macro_f1": 0.5},
                              "validate": {"valence_mae": 0.12}}
    assert run["baselines"] == {"mean": {"valence_mae": 0.2}, "quadrant_centre": {"valence_mae": 0.05}}
    assert run["failures"] == [{"song_id": "A003", "stage": "audio", "reason": "unreadable", "path": "a/A003.mp3"},
                               {"song_id": "A004", "stage": "lyrics", "reason": "empty lyrics", "path": None}]
    assert run["artifacts"] == []  # the table has no writer yet
    assert run["prediction_count"] == 2
    got = store.get_predictions(run_id)
    assert got[0] == {**preds[0], "probs": None}
    assert got[1] == preds[1]  # probs come back decoded
    assert store.get_predictions(run_id, split="validate") == []


def test_nan_and_inf_are_stored_as_null_and_non_numbers_rejected(any_db):
    np = pytest.importorskip("numpy")
    store = RunStore(any_db)
    run_id = start(store)
    store.add_epoch(run_id, 1, {"train_loss": float("nan"), "val_loss": float("inf"),
                                "grad_norm_pre_clip": np.float32(2.5)})
    store.add_metrics(run_id, "test", {"r2": -math.inf, "mae": np.float64(0.1)})
    store.add_baselines(run_id, "random", {"r2": float("nan")})
    store.add_predictions(run_id, [{"song_id": "A1", "split": "test", "pred_valence": float("nan"),
                                    "probs": np.array([0.5, float("nan"), 0.25, 0.25])}])
    run = store.get_run(run_id)
    assert run["epochs"][1] == {"train_loss": None, "val_loss": None, "grad_norm_pre_clip": 2.5}
    assert run["metrics"]["test"] == {"r2": None, "mae": 0.1}
    assert run["baselines"]["random"] == {"r2": None}
    pred = store.get_predictions(run_id)[0]
    assert pred["pred_valence"] is None and pred["probs"] == [0.5, None, 0.25, 0.25]
    with pytest.raises(TypeError, match=r"run1 epoch 2 metric 'val_loss': expected a number, got the string"):
        store.add_epoch(run_id, 2, {"train_loss": 0.1, "val_loss": "0.2"})
    assert 2 not in store.get_run(run_id)["epochs"]  # the bad epoch wrote nothing


def test_mistakes_in_writes_are_named(any_db):
    store = RunStore(any_db)
    run_id = start(store)
    store.add_epoch(run_id, 1, {"train_loss": 0.5})
    with pytest.raises(StoreError, match="epoch 1 is already recorded"):
        store.add_epoch(run_id, 1, {"train_loss": 0.4})
    with pytest.raises(ValueError, match="unknown field.*pred_valance.*the fields are"):
        store.add_predictions(run_id, [{"song_id": "A1", "split": "test", "pred_valance": 0.5}])
    with pytest.raises(ValueError, match="runs has no field 'colour'"):
        store.update_run(run_id, colour="red")
    with pytest.raises(ValueError, match="status must be one of"):
        store.update_run(run_id, status="done")
    with pytest.raises(ValueError, match="finishes as one of completed, failed, interrupted"):
        store.finish_run(run_id, "running")
    for write in (lambda: store.add_epoch(99, 1, {"x": 1.0}), lambda: store.finish_run(99, "failed"),
                  lambda: store.update_run(99, note="x"), lambda: store.get_predictions(99)):
        with pytest.raises(RunNotFound, match="no run run99"):
            write()


def test_failed_run_keeps_its_error_and_unset_fields(any_db):
    store = RunStore(any_db)
    run_id = start(store)
    store.update_run(run_id, best_epoch=4)
    for epoch in range(1, 6):
        store.add_epoch(run_id, epoch, {"train_loss": 1.0})
    store.finish_run(run_id, "failed", error="RuntimeError: CUDA out of memory", epochs_run=5)
    run = store.get_run(run_id)
    assert (run["status"], run["error"], run["best_epoch"], run["epochs_run"]) == \
        ("failed", "RuntimeError: CUDA out of memory", 4, 5)


def test_list_runs_newest_first_with_filters_and_test_metrics(any_db):
    store = RunStore(any_db)
    ids = [start(store, experiment=name, seed=i) for i, name in enumerate(["a", "b", "a", "a"])]
    store.add_metrics(ids[2], "test", {"valence_mae": 0.1})
    store.add_metrics(ids[2], "validate", {"valence_mae": 0.3})
    store.finish_run(ids[2], "completed")
    assert [r["id"] for r in store.list_runs()] == ids[::-1]
    assert [r["id"] for r in store.list_runs(experiment="a", limit=2)] == [ids[3], ids[2]]
    done = store.list_runs(status="completed")
    assert [r["id"] for r in done] == [ids[2]] and done[0]["metrics"] == {"valence_mae": 0.1}
    assert done[0]["config"]["seed"] == 2 and done[0]["name"] == f"run{ids[2]}"
    assert [r["id"] for r in store.list_runs(config_hash="c1")] == [ids[1]]
    assert len(store.list_runs(group_hash="g", limit=None)) == 4
    with pytest.raises(ValueError, match="status must be one of"):
        store.list_runs(status="complete")


def test_a_deleted_run_takes_everything_with_it_and_its_id_is_not_reused(any_db):
    # merx deletes nothing itself; a user may, with SQL: ON DELETE CASCADE and AUTOINCREMENT hold.
    store = RunStore(any_db)
    first = start(store)
    store.add_epoch(first, 1, {"train_loss": 1.0})
    store.add_failures(first, [{"song_id": "A1", "stage": "audio", "reason": "bad"}])
    second = start(store)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(schema.runs))
    with store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0, table.name
    assert start(store) == second + 1


def test_plugin_uses_names_the_runs_and_where_their_plugin_came_from(any_db):
    store = RunStore(any_db)
    lmf = {"kind": "fusions", "name": "lmf", "origin": "distribution", "source": "lowrank-fusion",
           "version": "0.1.0"}
    concat = {"kind": "fusions", "name": "concat", "origin": "built-in", "source": "merx.builtin.fusions",
              "version": None}
    for plugin in (concat, lmf, lmf):
        store.add_plugins(start(store), [plugin])
    assert store.plugin_uses("fusions", "lmf") == [
        {"run_id": 2, "origin": "distribution", "source": "lowrank-fusion", "version": "0.1.0"},
        {"run_id": 3, "origin": "distribution", "source": "lowrank-fusion", "version": "0.1.0"}]
    assert store.plugin_uses("audio_towers", "lmf") == []


# -- run ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("run12", 12), ("12", 12), (" RUN7 ", 7), ("Run 3", 3), (5, 5)])
def test_parse_run_id(text, expected):
    assert parse_run_id(text) == expected
    assert RunStore.parse_run_id(text) == expected


@pytest.mark.parametrize("text", ["", "run", "abc", "12a", "run-3", "0", "run0", "1.5", -2, True, None])
def test_parse_run_id_refuses_garbage(text):
    with pytest.raises(InvalidRunId, match="is not a run id: write it as run12 or 12"):
        parse_run_id(text)


def test_run_not_found_lists_the_latest_ids(any_db):
    store = RunStore(any_db)
    assert store.location == (any_db if "://" in any_db else str(any_db))  # a server: its URL, readable
    with pytest.raises(RunNotFound, match=f"no run run3 in {re.escape(store.location)}; it holds no runs yet"):
        store.get_run(3)
    for _ in range(7):
        start(store)
    with pytest.raises(RunNotFound) as info:
        store.get_run("run42")
    assert "no run run42" in str(info.value)
    assert "the latest are run7, run6, run5, run4, run3." in str(info.value)
    assert isinstance(info.value, LookupError) and isinstance(info.value, StoreError)


# -- migrations ---------------------------------------------------------------------------------

def _migration_names(db):
    engine = create_store_engine(resolve_url(db))
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT name FROM migrations ORDER BY name").scalars())
    finally:
        engine.dispose()


def test_migrations_are_recorded_once(any_db):
    first = RunStore(any_db)
    assert first.upgraded == [fn.__name__ for fn in MIGRATIONS]
    run_id = start(first)
    second = RunStore(any_db)  # opening again applies nothing and keeps the data
    assert second.upgraded == []
    assert _migration_names(any_db) == sorted(fn.__name__ for fn in MIGRATIONS)
    assert second.get_run(run_id)["experiment"] == "exp"


def test_an_older_database_is_upgraded(any_db):
    engine = create_store_engine(resolve_url(any_db))
    assert migrate(engine, MIGRATIONS[:1]) == ["m001_initial"]
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.runs).values(experiment="old", config_json="{}", config_hash="h", group_hash="g",
                                                   status="completed", started_at="2024-01-01T00:00:00+00:00"))
    engine.dispose()
    store = RunStore(any_db)
    assert store.upgraded == [fn.__name__ for fn in MIGRATIONS[1:]]
    assert store.upgraded[-1] == "m004_liveness"
    indexes = {ix["name"] for ix in sa.inspect(store.engine).get_indexes("runs")}
    assert {"ix_runs_experiment", "ix_runs_group_hash", "ix_runs_config_hash"} <= indexes
    assert store.list_runs()[0]["experiment"] == "old"
    old = store.get_run(1)
    assert old["status"] == "completed" and (old["host"], old["pid"], old["heartbeat_at"]) == (None, None, None)


def test_migrated_schema_matches_schema_py(any_db):
    store = RunStore(any_db)
    inspector = sa.inspect(store.engine)
    assert set(inspector.get_table_names()) == set(schema.metadata.tables) | {"migrations"}
    for table in schema.metadata.sorted_tables:
        assert [c["name"] for c in inspector.get_columns(table.name)] == list(table.c.keys()), table.name


def test_a_database_from_a_newer_merx_is_refused(any_db):
    store = RunStore(any_db)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO migrations (name, applied_at) VALUES ('m099_from_the_future', '2030-01-01')")
    store.close()
    with pytest.raises(SchemaTooNew, match=r"was written by a newer merx.*m099_from_the_future.*Upgrade merx"):
        RunStore(any_db)
    assert len(_migration_names(any_db)) == len(MIGRATIONS) + 1


# -- several processes --------------------------------------------------------------------------

EPOCHS = 100


def _write_a_run(path, barrier, finish):
    """One training process: a run, its epochs one transaction each, then (maybe) finish it."""
    store = RunStore(path)
    barrier.wait()  # every process writes at the same moment
    run_id = start(store, experiment=f"pid{os.getpid()}")
    store.add_plugins(run_id, [{"kind": "fusions", "name": "concat", "origin": "built-in",
                                "source": "merx", "version": None}])
    for epoch in range(1, EPOCHS + 1):
        store.add_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    if finish:
        store.finish_run(run_id, "completed", best_epoch=EPOCHS, epochs_run=EPOCHS)
    else:
        os._exit(3)  # the process dies: no finish_run, no close, no clean-up


def _run_processes(db, finishes):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(finishes))
    procs = [ctx.Process(target=_write_a_run, args=(str(db), barrier, f)) for f in finishes]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    return [p.exitcode for p in procs]


def test_several_processes_write_to_one_database_at_once(any_db):
    assert _run_processes(any_db, [True, True, True, True]) == [0, 0, 0, 0]
    store = RunStore(any_db)
    runs = store.list_runs(limit=None)
    assert len(runs) == 4 and {r["status"] for r in runs} == {"completed"}
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.epochs)).scalar() == 4 * EPOCHS * 2
    for r in runs:
        run = store.get_run(r["id"])
        assert sorted(run["epochs"]) == list(range(1, EPOCHS + 1)) and len(run["plugins"]) == 1
        assert run["epochs_run"] == EPOCHS and run["wall_seconds"] is not None


def test_a_run_whose_process_dies_keeps_its_epochs_and_reads_lost(any_db):
    assert _run_processes(any_db, [False]) == [3]
    (run,) = RunStore(any_db).list_runs()
    # Recorded running, but its process (on this host) is gone: lost, at once, with no timeout.
    assert run["status"] == "lost" and run["ended_at"] is None
    assert RunStore(any_db).list_runs(status="lost")[0]["id"] == run["id"]
    assert RunStore(any_db).list_runs(status="running") == []
    assert sorted(RunStore(any_db).get_run(run["id"])["epochs"]) == list(range(1, EPOCHS + 1))


def test_data_notes_are_recorded_and_read_back_and_reach_databases_made_before_them(any_db):
    engine = create_store_engine(resolve_url(any_db))
    migrate(engine, MIGRATIONS[:2])  # a database from before data notes existed
    engine.dispose()
    store = RunStore(any_db)
    assert store.upgraded == ["m003_data_notes", "m004_liveness"]
    run_id = store.start_run("e", None, {"task": "regression"}, "h", "g", 0, "regression", "cpu", {}, None)
    store.add_data_notes(run_id, {"label_disagrees": [("A2", "label Q1, V/A (0.2, 0.9) imply Q2")],
                                  "in_hole": [("A1", "V/A (0.55, 0.9)"), ("A3", "V/A (0.8, 0.45)")]})
    notes = store.get_run(run_id)["data_notes"]
    assert [(n["kind"], n["song_id"]) for n in notes] == [("in_hole", "A1"), ("in_hole", "A3"),
                                                          ("label_disagrees", "A2")]
    assert notes[2]["detail"] == "label Q1, V/A (0.2, 0.9) imply Q2"


def test_an_unfinished_run_counts_the_epochs_it_recorded_not_the_callers_count(any_db):
    # A signal between recording an epoch and counting it leaves the caller one behind.
    store = RunStore(any_db, write=True)
    run_id = start(store)
    for epoch in (1, 2, 3):
        store.add_epoch(run_id, epoch, {"train_loss": 1.0 / epoch})
    store.finish_run(run_id, "interrupted", error="SIGTERM", epochs_run=2)
    assert store.get_run(run_id)["epochs_run"] == 3
    done = start(store, seed=1)
    store.add_epoch(done, 1, {"train_loss": 1.0})
    store.finish_run(done, "completed", epochs_run=1)
    assert store.get_run(done)["epochs_run"] == 1
