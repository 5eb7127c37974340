"""The results store when things go wrong, on real SQLite files; a lock is held by a second real
process."""

import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore


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
