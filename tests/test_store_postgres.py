"""The results store on a real PostgreSQL server (``postgres_url``): what differs from SQLite.

Several real processes write to one database at once; a lock is held by another real session
on the server; the server is unreachable, refuses the login, lacks the database, or the user
may not write; psycopg is missing. ``tests/test_store.py`` runs the common behaviour on both."""

import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore, StoreError, StoreLocked, StoreReadOnly, StoreUnreachable, resolve_url, schema
from merx.store.migrations import MIGRATIONS

from tiny_experiment import tiny_toml


def start(store, seed=0, experiment="exp"):
    return store.start_run(experiment=experiment, experiment_file=None, config={"seed": seed}, config_hash=f"c{seed}",
                           group_hash="g", seed=seed, task="classification", device="cpu", versions={},
                           git_commit=None)


def count(conn, table, distinct=False):
    """Rows of ``table``; with ``distinct``, rows that differ in at least one column."""
    cols = ", ".join(c.name for c in table.c)
    sql = f"SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {table.name}) d" if distinct else \
        f"SELECT count(*) FROM {table.name}"
    return conn.exec_driver_sql(sql).scalar()


# -- several processes ---------------------------------------------------------------------------

PROCS, RUNS, EPOCHS, TAGS = 4, 4, 15, 25


def _worker(url, barrier, shared_run, worker):
    """One process: RUNS runs with every kind of row, interleaved with tagging a run all share."""
    store = RunStore(url, write=True)
    barrier.wait()  # every process writes at the same moment
    for r in range(RUNS):
        run_id = start(store, seed=worker * 100 + r, experiment=f"w{worker}")
        store.add_plugins(run_id, [{"kind": "fusions", "name": "concat", "origin": "built-in",
                                    "source": "merx", "version": None}])
        for epoch in range(1, EPOCHS + 1):
            store.add_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
            if epoch <= TAGS // RUNS + 1:
                store.tag_run(shared_run, add=[f"w{worker}-r{r}-e{epoch}"])  # read-modify-write of one row
        store.add_metrics(run_id, "test", {"macro_f1": 0.5})
        store.add_baselines(run_id, "majority", {"macro_f1": 0.25})
        store.add_predictions(run_id, [{"song_id": f"S{i}", "split": "test", "true_quadrant": "Q1",
                                        "pred_quadrant": "Q2", "probs": [0.1, 0.6, 0.2, 0.1]} for i in range(10)])
        store.add_failures(run_id, [{"song_id": "X1", "stage": "audio", "reason": "unreadable", "path": None}])
        store.add_data_notes(run_id, {"in_hole": [("S1", "V/A (0.5, 0.5)")]})
        store.finish_run(run_id, "completed", best_epoch=EPOCHS, epochs_run=EPOCHS)
    store.close()


def test_several_processes_write_runs_to_one_server_at_once_without_duplicates(postgres_url):
    store = RunStore(postgres_url, write=True)
    shared = start(store, experiment="shared")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    procs = [ctx.Process(target=_worker, args=(postgres_url, barrier, shared, w)) for w in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCS

    runs = store.list_runs(limit=None)
    ids = [r["id"] for r in runs]
    assert len(ids) == len(set(ids)) == PROCS * RUNS + 1  # every start_run got its own id
    assert {r["status"] for r in runs if r["id"] != shared} == {"completed"}
    n = PROCS * RUNS
    expected = {"runs": n + 1, "run_plugins": n, "epochs": n * EPOCHS * 2, "metrics": n, "baselines": n,
                "predictions": n * 10, "failures": n, "data_notes": n}
    with store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            if table.name in expected:
                assert count(conn, table) == count(conn, table, distinct=True) == expected[table.name], table.name
    for r in runs:
        if r["id"] != shared:
            run = store.get_run(r["id"])
            assert sorted(run["epochs"]) == list(range(1, EPOCHS + 1)) and run["epochs_run"] == EPOCHS
    # No tag lost: every process's read-modify-write of the shared run waited for the others'.
    tags = store.get_run(shared)["tags"]
    assert len(tags) == len(set(tags)) == PROCS * RUNS * (TAGS // RUNS + 1)
    # The next id is still fresh.
    assert start(store) == max(ids) + 1


def _open(url, barrier, out):
    barrier.wait()
    out.put(RunStore(url).upgraded)


def test_processes_opening_a_new_database_at_once_migrate_it_once(postgres_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(postgres_url, barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    upgraded = sorted((out.get(timeout=5) for _ in procs), key=len)
    assert upgraded == [[], [], [fn.__name__ for fn in MIGRATIONS]]  # one migrated, the others found it done
    with RunStore(postgres_url).engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM migrations").scalar() == len(MIGRATIONS)


def _reopen(url, run_id, barrier, done, out):
    store = RunStore(url)
    barrier.wait()
    try:
        store.reopen_run(run_id)
        out.put("took it")
    except StoreError as exc:
        out.put(str(exc))
    done.wait()  # stay alive until every process has tried: a dead winner's run would be lost again


def test_processes_resuming_one_run_at_once_only_one_takes_it(postgres_url):
    store = RunStore(postgres_url)
    run_id = start(store)
    store.finish_run(run_id, "interrupted", error="SIGTERM")
    ctx = multiprocessing.get_context("spawn")
    barrier, done, out = ctx.Barrier(4), ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_reopen, args=(postgres_url, run_id, barrier, done, out)) for _ in range(4)]
    for p in procs:
        p.start()
    answers = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert answers.count("took it") == 1, answers
    assert all(re.search(rf"run{run_id} is running: .*\(alive\)", a) for a in answers if a != "took it"), answers
    assert store.get_run(run_id)["pid"] in {p.pid for p in procs}


def test_heartbeats_reach_the_server_and_a_silent_run_is_lost(postgres_url):
    from merx.store.liveness import Heartbeat

    store = RunStore(postgres_url)
    run_id = start(store)
    store.update_run(run_id, host="elsewhere", heartbeat_at="2020-01-01T00:00:00.000+00:00")
    assert store.get_run(run_id)["status"] == "lost"  # another host: only the heartbeat tells
    assert [r["id"] for r in store.list_runs(status="lost")] == [run_id]
    store.update_run(run_id, host=socket.gethostname())
    with Heartbeat(store, run_id, interval=0.05):
        deadline = time.monotonic() + 10
        while store.get_run(run_id)["heartbeat_at"].startswith("2020") and time.monotonic() < deadline:
            time.sleep(0.02)
    assert store.get_run(run_id)["status"] == "running"


# -- a lock held by another session ----------------------------------------------------------------

def _session(url):
    """A second, independent session on the server (what a psql shell or another merx is)."""
    u = sa.make_url(url)
    return psycopg.connect(host=u.query["host"], port=int(u.query["port"]), user=u.username, dbname=u.database)


def test_a_run_locked_elsewhere_waits_in_memory_while_other_runs_and_readers_go_ahead(postgres_url):
    store = RunStore(postgres_url, write=True, busy_timeout=0.3)
    run_id, other = start(store), start(store, seed=1)
    store.add_epoch(run_id, 1, {"train_loss": 1.0})
    holder = _session(postgres_url)
    holder.execute("SELECT * FROM runs WHERE id = %s FOR UPDATE", (run_id,))  # held until rollback
    try:
        store.add_epoch(run_id, 2, {"train_loss": 0.5})  # meets the lock: waits in memory, no exception
        assert store.pending_epochs == [(run_id, 2)]
        with pytest.raises(StoreLocked, match=r"is locked: a lock held by another connection was not released "
                                              r"within 0\.3 s \(lock_timeout.*MERX_DB_BUSY_TIMEOUT"):
            store.update_run(run_id, note="x")
        # Unlike SQLite's one writer at a time, another process's run is not held up, nor is any reader.
        elsewhere = RunStore(postgres_url, busy_timeout=0.3)
        elsewhere.add_epoch(other, 1, {"train_loss": 2.0})
        assert elsewhere.pending_epochs == []
        assert start(elsewhere, seed=2) == other + 1
        assert store.get_run(run_id)["epochs"] == {1: {"train_loss": 1.0}}
        assert store.get_run(other)["epochs"] == {1: {"train_loss": 2.0}}
    finally:
        holder.rollback()
        holder.close()
    store.finish_run(run_id, "completed", epochs_run=2)  # writes the waiting epoch first
    assert store.pending_epochs == []
    assert store.get_run(run_id)["epochs"] == {1: {"train_loss": 1.0}, 2: {"train_loss": 0.5}}
    assert store.get_run(other)["epochs"] == {1: {"train_loss": 2.0}}


def test_a_server_restarted_mid_run_costs_the_run_nothing(monkeypatch):
    """A server that goes away (a restart, the network) is waited for like a lock: the epoch
    waits in memory, training goes on, and it is written once the server is back."""
    from postgres_server import PostgresServer

    monkeypatch.setenv("MERX_DB_FINAL_WAIT", "60")
    server = PostgresServer().start()  # its own server: this test stops it
    try:
        url = server.url(server.new_database())
        store = RunStore(url, write=True)
        run_id = start(store)
        store.add_epoch(run_id, 1, {"train_loss": 1.0})
        server._run("pg_ctl", "-D", str(server.data), "-m", "fast", "-w", "stop")
        store.add_epoch(run_id, 2, {"train_loss": 0.5})  # no exception: the server is gone
        assert store.pending_epochs == [(run_id, 2)]
        with pytest.raises(StoreUnreachable, match="the server cannot be reached"):
            store.update_run(run_id, note="x")  # other writes say why (and are StoreLocked to retry)
        server.running = False
        server.start_again()
        store.finish_run(run_id, "completed", epochs_run=2)  # pooled connections were dead: replaced
        run = RunStore(url).get_run(run_id)
        assert run["epochs"] == {1: {"train_loss": 1.0}, 2: {"train_loss": 0.5}} and run["status"] == "completed"
    finally:
        server.stop()


# -- the server's failures, one line each ----------------------------------------------------------

def one_line_error(result, *patterns):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    return lines[0]


def test_an_unreachable_server_a_refused_login_and_a_missing_database_are_named(postgres_server, postgres_url):
    u = sa.make_url(postgres_url)
    gone = u.update_query_dict({"host": str(postgres_server.root / "no-such-folder")}).render_as_string(False)
    err = one_line_error(CliRunner().invoke(cli, ["runs", "--db", gone]),
                         r"cannot use the results database postgresql\+psycopg://postgres@/merx_test_\w+\?host=/",
                         "the server cannot be reached", "start the server, or check the host, port")
    assert "%2F" not in err
    stranger = u.set(username="stranger", password="secret").render_as_string(False)
    err = one_line_error(CliRunner().invoke(cli, ["runs", "--db", stranger]), "the server refused the login",
                         r'role "stranger" does not exist', "check the user and password in the URL")
    assert "secret" not in err  # the password is never printed
    nodb = u.set(database="nowhere").render_as_string(False)
    one_line_error(CliRunner().invoke(cli, ["runs", "--db", nodb]), "the database does not exist on that server",
                   r"createdb NAME")
    with pytest.raises(StoreError, match="the server cannot be reached"):
        RunStore(gone)


def test_a_user_who_may_not_write_is_refused_before_any_work(postgres_server, postgres_url):
    database = sa.make_url(postgres_url).database
    RunStore(postgres_url).close()  # the owner creates the tables
    postgres_server.admin("CREATE ROLE reader LOGIN")
    postgres_server.admin(f'GRANT CONNECT ON DATABASE "{database}" TO reader')
    reader = sa.make_url(postgres_url).set(username="reader").render_as_string(False)
    with _session(postgres_url) as conn:
        conn.execute("GRANT USAGE ON SCHEMA public TO reader")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
        conn.commit()
    assert RunStore(reader).list_runs() == []  # reading is allowed
    with pytest.raises(StoreReadOnly, match=r"cannot write the results database .*permission denied for table "
                                            r"migrations\. Connect as a user allowed to"):
        RunStore(reader, write=True)
    # A new database that user may not even create tables in.
    fresh = postgres_server.new_database()
    fresh_url = sa.make_url(postgres_server.url(fresh)).set(username="reader").render_as_string(False)
    one_line_error(CliRunner().invoke(cli, ["runs", "--db", fresh_url]), r"permission denied for schema public")


def test_a_value_longer_than_its_column_is_named_not_a_traceback(postgres_url):
    store = RunStore(postgres_url)
    with pytest.raises(StoreError, match=r"refused a value: value too long for type character varying\(200\)\. "
                                         r"PostgreSQL enforces the column lengths"):
        start(store, experiment="x" * 201)
    assert store.list_runs() == []


def test_a_plain_postgresql_url_gets_psycopg_and_a_missing_driver_names_the_extra(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    assert resolve_url(plain) == postgres_url
    assert RunStore(plain).list_runs() == []
    # A Python without psycopg (an import that fails, as on a machine without the extra).
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from merx.errors import MissingExtra\n"
            "from merx.store import RunStore\n"
            "try:\n    RunStore(sys.argv[1])\n"
            "except MissingExtra as exc:\n    print(exc, exc.hint)\n")
    out = subprocess.run([sys.executable, "-c", code, postgres_url], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert "needs the Python driver 'psycopg', which is not installed" in out.stdout
    assert "pip install 'merx[postgres]'" in out.stdout


def test_ids_are_never_reused_even_after_the_latest_run_is_deleted(postgres_url):
    store = RunStore(postgres_url)
    ids = [start(store, seed=i) for i in range(3)]
    with store.engine.begin() as conn:
        conn.execute(sa.delete(schema.runs).where(schema.runs.c.id == ids[-1]))
    assert start(store) == ids[-1] + 1  # the sequence, not max(id) + 1, hands out ids


# -- a real run ------------------------------------------------------------------------------------

def test_a_real_run_records_everything_on_the_server(tmp_path, tiny_bert_dir, postgres_url, monkeypatch):
    exp = tmp_path / "tiny.toml"
    exp.write_text(tiny_toml(tiny_bert_dir, Path.cwd() / ".merx" / "cache", epochs=2))
    result = CliRunner().invoke(cli, ["run", str(exp), "--db", postgres_url])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "results.db").exists()
    run = RunStore(postgres_url).get_run(1)
    assert run["status"] == "completed" and sorted(run["epochs"]) == [1, 2]
    assert {"accuracy", "macro_f1"} <= set(run["metrics"]["test"]) and run["prediction_count"] > 0
    assert {p["name"] for p in run["plugins"]} == {"synthetic", "vggish", "huggingface", "concat"}
    monkeypatch.setenv("MERX_DB", postgres_url)
    listing = CliRunner().invoke(cli, ["runs"])
    assert listing.exit_code == 0 and "run1" in listing.stdout and "completed" in listing.stdout, listing.output
