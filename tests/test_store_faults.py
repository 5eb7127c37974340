"""The results store when things go wrong: locks held elsewhere, read-only files and folders,
damaged pages, dropped tables, a full disk. Real SQLite files throughout; a lock is held by a
second real process; a full disk is a real file-size limit in a child process.

Each failure reaches the user as one ``error:`` line naming the file and the fix, exit 2, and
never costs a run its training."""

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore, StoreCorrupt, StoreError, StoreLocked, StoreReadOnly

from tiny_experiment import tiny_toml

REPO = Path(__file__).resolve().parents[1]
PAGE = 4096  # SQLite's default page size, which merx does not change


def start(store, seed=0):
    config = {"name": "exp", "seed": seed, "task": "classification",
              "train": {"early_stopping": {"monitor": "val_loss"}}}
    return store.start_run(experiment="exp", experiment_file=None, config=config, config_hash=f"c{seed}",
                           group_hash="g", seed=seed, task="classification", device="cpu", versions={},
                           git_commit=None)


def record(store, seed=0, epochs=5, songs=40):
    """A completed classification run with epochs, metrics and predictions."""
    run_id = start(store, seed)
    for epoch in range(1, epochs + 1):
        store.add_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    store.add_metrics(run_id, "test", {"macro_f1": 0.5 + seed / 100, "accuracy": 0.6})
    store.add_predictions(run_id, [{"song_id": f"S{i:03d}", "split": "test", "true_quadrant": f"Q{i % 4 + 1}",
                                    "pred_quadrant": f"Q{(i + seed) % 4 + 1}", "probs": [0.4, 0.3, 0.2, 0.1]}
                                   for i in range(songs)])
    store.finish_run(run_id, "completed", best_epoch=epochs, epochs_run=epochs)
    return run_id


def make_db(path, runs=3, **kw) -> Path:
    """A database holding ``runs`` completed runs, everything checkpointed into the main file."""
    store = RunStore(path)
    for seed in range(runs):
        record(store, seed, **kw)
    store.close()
    assert not Path(f"{path}-wal").exists()  # the last connection checkpointed: the pages are in the file
    return Path(path)


def merx(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def one_line_error(result, *patterns):
    """The CLI's way to fail: exit 2, one ``error:`` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for pattern in patterns:
        assert pattern in lines[0], (pattern, lines[0])
    return lines[0]


# -- a second process holding the write lock ---------------------------------------------------

HOLDER = textwrap.dedent("""
    import os, sqlite3, sys, time
    path, mode, signals, hold_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN " + mode)
    # A real write, uncommitted: what a writer in the middle of its transaction looks like.
    conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('held by a test', 'now')")
    open(os.path.join(signals, "held"), "w").close()
    end = time.monotonic() + hold_s
    while time.monotonic() < end and not os.path.exists(os.path.join(signals, "stop")):
        time.sleep(0.02)
    conn.execute("ROLLBACK")
    open(os.path.join(signals, "released"), "w").close()
""")


class Lock:
    def __init__(self, signals: Path, proc: subprocess.Popen):
        self.signals, self.proc = signals, proc
        self.released = signals / "released"

    def release(self):
        (self.signals / "stop").touch()
        self.proc.wait(30)
        assert self.released.exists()


@contextmanager
def held_lock(db, signals, mode="EXCLUSIVE", hold_s=5.0):
    """Another process holds ``BEGIN <mode>`` on ``db`` for ``hold_s`` seconds (or until released);
    it touches ``signals/released`` when it lets go, so tests check order, not time."""
    signals.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), mode, str(signals), str(hold_s)])
    lock = Lock(signals, proc)
    try:
        deadline = time.monotonic() + 30
        while not (signals / "held").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.01)
        yield lock
    finally:
        (signals / "stop").touch()
        proc.wait(30)


# -- reading never waits for the write lock (issue 10, item 7) -------------------------------------

@pytest.mark.parametrize("mode", ["EXCLUSIVE", "IMMEDIATE"])
def test_reading_commands_go_ahead_while_another_process_holds_the_write_lock(tmp_path, mode):
    """Under WAL, BEGIN EXCLUSIVE and BEGIN IMMEDIATE are the same lock and leave readers alone.
    Opening the store used to start with BEGIN IMMEDIATE (for migrations), so `merx runs` waited
    for the lock -- and failed after 30 s when it was held longer. Now checking the schema is a
    read; only a database that needs migrating takes the write lock."""
    db = make_db(tmp_path / "r.db")
    with held_lock(db, tmp_path / "signals", mode) as lock:
        store = RunStore(db)
        assert store.upgraded == []
        assert [r["id"] for r in store.list_runs()] == [3, 2, 1]
        assert sorted(store.get_run(1)["epochs"]) == [1, 2, 3, 4, 5]
        assert len(store.get_predictions(2)) == 40
        assert store.experiments() == ["exp"] and store.group_hashes() == ["g"]
        listing = merx("runs", "--db", db)
        assert listing.exit_code == 0 and "run3" in listing.stdout, listing.output
        shown = merx("show", "run2", "--db", db)
        assert shown.exit_code == 0 and "run2" in shown.stdout, shown.output
        exported = merx("export", "--what", "epochs", "--format", "csv", "--db", db)
        assert exported.exit_code == 0 and exported.stdout.count("\n") > 15, exported.output
        assert not lock.released.exists()  # all of it while the other process still held the lock


def test_a_database_that_needs_migrating_waits_for_the_lock_and_then_migrates(tmp_path, monkeypatch):
    """The other side of the coin: migrations are writes, so they (and only they) wait."""
    from merx.store.migrations import MIGRATIONS, migrate
    from merx.store.runstore import create_store_engine

    db = tmp_path / "old.db"
    engine = create_store_engine(f"sqlite:///{db}")
    migrate(engine, MIGRATIONS[:1])
    engine.dispose()
    with held_lock(db, tmp_path / "signals", hold_s=1.0) as lock:
        store = RunStore(db)
        assert lock.released.exists()
    assert store.upgraded == [m.__name__ for m in MIGRATIONS[1:]]
    monkeypatch.setenv("MERX_DB_BUSY_TIMEOUT", "0.2")
    db3 = tmp_path / "three.db"
    engine = create_store_engine(f"sqlite:///{db3}")
    migrate(engine, MIGRATIONS[:1])
    engine.dispose()
    with held_lock(db3, tmp_path / "s3", hold_s=30):
        with pytest.raises(StoreLocked, match=r"three\.db is locked: .*more than 0\.2 s.*MERX_DB_BUSY_TIMEOUT"):
            RunStore(db3)


# -- a run never loses its training to the store (item 8) ------------------------------------------

def test_epochs_that_meet_a_lock_wait_in_memory_and_land_exactly_once(tmp_path, monkeypatch):
    """A run at epoch 3 of 300 must not fail because someone held the database for a minute:
    the epoch waits in memory, training goes on, and the next epoch write (after a back-off)
    or finish_run writes everything waiting, in order, once."""
    monkeypatch.setenv("MERX_DB_BUSY_TIMEOUT", "0.5")
    db = tmp_path / "r.db"
    store = RunStore(db, write=True)
    run_id = start(store)

    def epoch(n):
        store.add_epoch(run_id, n, {"train_loss": 1.0 / n, "val_loss": float("nan") if n == 2 else 2.0 / n})

    epoch(1)
    with held_lock(db, tmp_path / "signals", hold_s=60) as lock:
        epoch(2)  # meets the lock: returns after the busy timeout instead of raising
        epoch(3)
        assert store.pending_epochs == [(run_id, 2), (run_id, 3)]
        assert not lock.released.exists()
        lock.release()
    n, deadline = 3, time.monotonic() + 60
    while store.pending_epochs:  # the next epochs, once the back-off has passed, write the waiting ones
        assert time.monotonic() < deadline, "the waiting epochs were never written"
        n += 1
        epoch(n)
        time.sleep(0.1)
    assert sorted(RunStore(db).get_run(run_id)["epochs"]) == list(range(1, n + 1))

    # The same again at the end of training: finish_run keeps trying until the lock is free.
    with held_lock(db, tmp_path / "signals2", hold_s=2.0) as lock:
        epoch(n + 1)
        assert store.pending_epochs == [(run_id, n + 1)]
        store.finish_run(run_id, "completed", best_epoch=n + 1, epochs_run=n + 1)
        assert lock.released.exists()  # it waited for the holder rather than failing
    assert store.pending_epochs == []
    epoch(1)  # writing an epoch again with the same values changes nothing
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT epoch, metric, count(*) FROM epochs GROUP BY epoch, metric").fetchall()
        status = conn.execute("SELECT status, epochs_run FROM runs").fetchone()
    assert sorted({e for e, _, _ in rows}) == list(range(1, n + 2))
    assert len(rows) == 2 * (n + 1) and {c for _, _, c in rows} == {1}
    assert status == ("completed", n + 1)
    with pytest.raises(StoreError, match="epoch 1 is already recorded, with other values of train_loss"):
        store.add_epoch(run_id, 1, {"train_loss": 0.0})
    assert store.pending_epochs == []


def test_finish_run_gives_up_after_its_final_wait_and_says_what_is_unrecorded(tmp_path, monkeypatch):
    monkeypatch.setenv("MERX_DB_BUSY_TIMEOUT", "0.2")
    monkeypatch.setenv("MERX_DB_FINAL_WAIT", "1")
    db = tmp_path / "r.db"
    store = RunStore(db)
    run_id = start(store)
    with held_lock(db, tmp_path / "signals", hold_s=60) as lock:
        store.add_epoch(run_id, 1, {"train_loss": 0.5})
        with pytest.raises(StoreLocked, match=r"could not record that run1 ended \(failed\) and 1 epoch\(s\) waiting "
                                              r"in memory after retrying for 1 s \(MERX_DB_FINAL_WAIT"):
            store.finish_run(run_id, "failed", error="boom")
        with pytest.raises(StoreLocked, match=r"r\.db is locked: .*more than 0\.2 s"):
            start(store)  # other writes wait the busy timeout, then say so
        assert not lock.released.exists()
    store.finish_run(run_id, "failed", error="boom")  # the lock is gone: everything lands
    assert RunStore(db).get_run(run_id)["epochs"] == {1: {"train_loss": 0.5}}


def test_busy_timeout_must_be_a_number_of_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("MERX_DB_BUSY_TIMEOUT", "soon")
    with pytest.raises(StoreError, match=r"MERX_DB_BUSY_TIMEOUT='soon' is not a number of seconds"):
        RunStore(tmp_path / "r.db")
    monkeypatch.setenv("MERX_DB_BUSY_TIMEOUT", "2.5")
    with RunStore(tmp_path / "r.db").engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500


@pytest.fixture
def immutable():
    """``chattr +i``: a file or folder not even root may write (tests run as root here, where
    chmod stops nothing). Skips where the file system or the container does not allow it."""
    marked = []

    def mark(path):
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) \
            if shutil.which("chattr") else None
        if done is None or done.returncode != 0:
            pytest.skip(f"chattr +i is not available here ({done.stderr.strip() if done else 'no chattr'})")
        marked.append(path)

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def experiment(tmp_path, tiny_bert_dir):
    """A real experiment file; its data would be prepared into ./cache, so no ./cache means no work."""
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_toml(tiny_bert_dir, tmp_path / "cache", epochs=1))
    return path


def assert_no_work_done(tmp_path, result):
    assert not (tmp_path / "cache").exists() and "songs on" not in result.output


def test_a_read_only_database_file_is_refused_before_any_work(tmp_path, immutable, experiment):
    """An immutable file (chattr +i) is read-only for every user, root included, as a file on a
    read-only mount is: SQLite opens it read-only without complaint, and only a write fails."""
    db = make_db(tmp_path / "r.db", runs=1)
    immutable(db)
    assert [r["id"] for r in RunStore(db).list_runs()] == [1]  # reading is fine
    with pytest.raises(StoreReadOnly, match=r"cannot write the results database .*r\.db: it is read-only .*chattr -i"):
        RunStore(db, write=True)
    result = merx("run", experiment, "--db", db)
    one_line_error(result, "r.db: it is read-only")
    assert_no_work_done(tmp_path, result)


def test_a_read_only_folder_is_refused_even_for_reading(tmp_path, immutable, experiment):
    """SQLite creates r.db-wal and r.db-shm beside a WAL database, even to read it: a folder
    nothing may be created in (chattr +i, again binding root too) stops reads as well."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = make_db(folder / "r.db", runs=1)
    immutable(folder)
    with pytest.raises(StoreReadOnly, match=r"its folder .*ro is read-only, and SQLite must create r\.db-wal"):
        RunStore(db)
    one_line_error(merx("runs", "--db", db), "its folder", "is read-only")
    with pytest.raises(StoreReadOnly, match=r"cannot create the results database .*new\.db: its folder .* read-only"):
        RunStore(folder / "new.db")
    result = merx("run", experiment, "--db", db)
    one_line_error(result, "is read-only")
    assert_no_work_done(tmp_path, result)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes (chmod); the chattr +i tests cover this")
def test_a_database_file_without_write_permission_is_refused(tmp_path):
    db = make_db(tmp_path / "r.db", runs=1)
    db.chmod(0o444)
    with pytest.raises(StoreReadOnly, match="it is read-only"):
        RunStore(db, write=True)


def test_a_mistyped_db_path_is_refused_not_created(tmp_path, experiment):
    """--db a/b/x.db with no folder a/b: one line naming both fixes, and no folder appears."""
    line = one_line_error(merx("runs", "--db", "a/b/x.db"), "its folder", "does not exist", "mkdir -p")
    assert line.endswith(f"mkdir -p {tmp_path / 'a' / 'b'}")
    result = merx("run", experiment, "--db", "a/b/x.db")
    one_line_error(result, "does not exist")
    assert_no_work_done(tmp_path, result)
    assert not (tmp_path / "a").exists()
    assert merx("runs", "--db", "x.db").exit_code == 0  # a new file in an existing folder is fine


def test_a_damaged_database_is_refused_before_any_work(tmp_path, experiment):
    db = make_db(tmp_path / "r.db", runs=2)
    damage(db, root_page(db, "epochs"))  # `merx runs` never reads it; the write check does
    result = merx("run", experiment, "--db", db)
    one_line_error(result, "r.db is damaged (quick_check:", ".recover")
    assert_no_work_done(tmp_path, result)


# -- damaged pages, dropped tables (item 9) --------------------------------------------------------

def root_page(db, table) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def damage(db, page):
    """Overwrite the whole of ``page`` (1-based; page 1 holds the header and is left alone)."""
    assert page > 1
    with open(db, "r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(b"\xde\xad\xbe\xef" * (PAGE // 4))


def corrupt_error(location):
    return (f"the results database {location} is damaged (database disk image is malformed). Recover what is "
            f"readable into a new file: sqlite3 {location} \".recover\" | sqlite3 "
            f"{Path(location).with_name('r-recovered.db')}")


def test_damaged_pages_are_one_line_pointing_at_recover_when_opening_reading_and_writing(tmp_path):
    db = make_db(tmp_path / "r.db", runs=3, epochs=60)
    size = db.stat().st_size
    epochs_root = root_page(db, "epochs")
    assert 1 < epochs_root < size // PAGE

    # Opening reads the migrations table: damage it and opening says so.
    opening = tmp_path / "opening"
    opening.mkdir()
    shutil.copy(db, opening / "r.db")
    damage(opening / "r.db", root_page(db, "migrations"))
    with pytest.raises(StoreCorrupt) as err:
        RunStore(opening / "r.db")
    assert str(err.value).startswith(corrupt_error(opening / "r.db"))
    one_line_error(merx("runs", "--db", opening / "r.db"), "is damaged", ".recover", str(opening / "r.db"))

    # Epochs damaged: listing runs works (it never reads them); showing one and writing one say so.
    damage(db, epochs_root)
    store = RunStore(db)
    assert [r["id"] for r in store.list_runs()] == [3, 2, 1]
    assert merx("runs", "--db", db).exit_code == 0
    with pytest.raises(StoreCorrupt) as err:
        store.get_run(1)
    assert str(err.value).startswith(corrupt_error(db))
    one_line_error(merx("show", "run1", "--db", db), "r.db is damaged", ".recover")
    with pytest.raises(StoreCorrupt, match="is damaged"):
        store.add_epoch(1, 61, {"train_loss": 0.1})
    with pytest.raises(StoreCorrupt, match=r"is damaged \(quick_check: "):
        RunStore(db, write=True)

    # Runs damaged: `merx runs` says so too.
    damage(db, root_page(db, "runs"))
    one_line_error(merx("runs", "--db", db), "r.db is damaged", ".recover")


def test_damage_anywhere_past_the_first_page_is_never_a_traceback(tmp_path):
    """Bytes overwritten in the middle of the file, wherever they land: each operation either
    works or raises StoreCorrupt, and the write check (quick_check reads every page) catches it."""
    db = make_db(tmp_path / "r.db", runs=4, epochs=60)
    pages = db.stat().st_size // PAGE
    with open(db, "r+b") as f:
        f.seek(pages // 2 * PAGE + 100)
        f.write(os.urandom(3 * PAGE))
    with pytest.raises(StoreCorrupt, match=r"r\.db is damaged .*\.recover"):
        RunStore(db, write=True)
    for args in (["runs"], ["show", "run1"], ["show", "run2"], ["show", "run3"], ["show", "run4"]):
        result = merx(*args, "--db", db)
        assert result.exit_code == 0 or "is damaged" in one_line_error(result), (args, result.output)


@pytest.mark.parametrize("table", ["epochs", "runs"])
def test_a_dropped_table_is_named_in_one_line(tmp_path, table):
    db = make_db(tmp_path / "r.db", runs=2)
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TABLE {table}")
    lacking = f"r.db lacks the table {table} (dropped by hand?)"
    with pytest.raises(StoreCorrupt, match=rf"lacks the table\(s\) {table} .*from a backup.*\.recover"):
        RunStore(db, write=True)
    shown = merx("show", "run1", "--db", db)
    one_line_error(shown, lacking, "from a backup", ".recover")
    listing = merx("runs", "--db", db)
    if table == "runs":
        one_line_error(listing, lacking)
    else:
        assert listing.exit_code == 0 and "run2" in listing.stdout  # what is intact stays readable
    with pytest.raises(StoreCorrupt, match=re.escape(lacking)):
        RunStore(db).add_epoch(1, 9, {"train_loss": 0.1})


# -- the disk filling up (item 11, the store's part) -----------------------------------------------

FILL = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, sys.argv[3])
    from test_store_faults import record
    from merx.store import RunStore, StoreError
    store = RunStore(sys.argv[1])
    # Past the limit write() fails with EFBIG, as it fails with ENOSPC on a full disk, instead
    # of the default SIGXFSZ killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    seed = 0
    try:
        while True:
            print(record(store, seed, epochs=20, songs=200), flush=True)
            seed += 1
    except StoreError as exc:
        print(f"{type(exc).__name__}: {exc}", flush=True)
""")


def test_a_full_disk_mid_run_is_named_and_the_database_stays_intact(tmp_path):
    """A child process writes runs under a 1-MiB file-size limit until a write fails. It gets
    StoreFull naming the file, and SQLite's journal keeps the database whole: integrity_check
    is ok afterwards and every run recorded before the failure reads back complete."""
    db = tmp_path / "r.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", FILL, str(db), str(1 << 20), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    *finished, last = done.stdout.splitlines()
    assert last.startswith(f"StoreFull: no space left on device for the results database {db} ("), last
    assert "file size limit" in last and "intact" in last
    assert len(finished) >= 3, done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = RunStore(db)
    for run_id in map(int, finished):
        run = store.get_run(run_id)
        assert run["status"] == "completed" and sorted(run["epochs"]) == list(range(1, 21))
        assert run["prediction_count"] == 200


def test_a_new_database_another_process_is_writing_is_switched_to_wal_once_it_may_be(tmp_path):
    """Switching a database to WAL while another connection holds its write (RESERVED) lock gets
    "locked" at once, without SQLite's busy handler: two runs opening a new results.db together
    failed one of them now and then."""
    db = tmp_path / "new.db"
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        con = sqlite3.connect({str(db)!r}, isolation_level=None)
        con.execute("create table other (x)")
        con.execute("begin immediate")  # the write lock, rollback journal: not WAL yet
        print("reading", flush=True)
        time.sleep(1.5)
        con.execute("rollback")
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        started = time.monotonic()
        store = RunStore(db, write=True)  # waits for the reader instead of failing at once
        assert time.monotonic() - started > 0.5
        assert store.list_runs() == []
    finally:
        reader.wait(timeout=30)
    with sqlite3.connect(db) as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
