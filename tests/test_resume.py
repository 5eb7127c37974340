"""Resumable runs: per-epoch checkpoints, resuming with the draws of an uninterrupted run,
best weights on disk without frozen towers, liveness (lost runs), run folders, rm and gc.

The headline test is real: ``merx run`` in a child process, killed with SIGKILL after its second
epoch, shown ``lost`` by ``merx runs``, completed by ``merx resume``, and compared with a
straight run of the same experiment: identical epochs, metrics, predictions and weights."""

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from test_train import CPU, train_cfg
from torch.utils.data import Dataset

from merx.checkpoints import LAST, RunCheckpoints, frozen_prefixes, load_weights, trained_state
from merx.cli import cli
from merx.config import to_toml
from merx.dataset import make_loader
from merx.errors import RunError
from merx.store import RunStore, StoreError, is_lost
from merx.train import Trainer

from tiny_experiment import tiny_raw

# -- the trainer: stop after epoch 2, resume, compare with a straight run -------------------------


class NoisySongs(Dataset):
    """Each item draws from python's random, numpy's global generator and torch's: a resumed
    run that did not put every RNG state back would train on other numbers."""

    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        noise = random.gauss(0, 0.1) + float(np.random.normal(0, 0.1)) + float(torch.randn(()) * 0.1)
        return {"x": self.x[i] + noise, "target": self.y[i], "song_id": f"s{i}"}


class DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio = nn.Linear(3, 16)
        self.drop = nn.Dropout(0.3)  # torch's global RNG, every training step
        self.head = nn.Linear(16, 2)

    def forward(self, batch):
        return self.head(self.drop(torch.relu(self.audio(batch["x"]))))

    def parts(self):
        return {"audio": list(self.audio.parameters()), "head": list(self.head.parameters())}


def _trainer(folder, epochs=5, on_epoch=None):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    cfg = train_cfg(epochs=epochs, lr={"audio": 0.01, "head": 0.01}, early_stopping={"patience": 0},
                    scheduler={"name": "step", "step_size": 2, "gamma": 0.5})
    train = make_loader(NoisySongs(), 5, shuffle=True, num_workers=0, seed=3)
    val = make_loader(NoisySongs(8), 8, shuffle=False, num_workers=0, seed=3)
    return Trainer(DropNet(), train, val, cfg, "regression", CPU, progress=False, on_epoch=on_epoch,
                   checkpoints=RunCheckpoints(folder))


def _without_times(history):
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


def test_a_trainer_resumed_after_epoch_2_ends_exactly_as_a_straight_one(tmp_path):
    straight = _trainer(tmp_path / "straight")
    fit = straight.fit()

    class Stop(Exception):
        pass

    def stop_after_2(epoch, metrics):
        if epoch == 2:
            raise Stop  # on_epoch runs before the epoch's checkpoint: this one has epoch 1
    first = _trainer(tmp_path / "stopped", on_epoch=stop_after_2)
    with pytest.raises(Stop):
        first.fit()
    state = torch.load(tmp_path / "stopped" / LAST, weights_only=True)
    assert state["epoch"] == 1
    # The process goes on drawing random numbers (data loading, another run) before resuming.
    torch.rand(100), random.random(), np.random.rand()

    resumed = _trainer(tmp_path / "stopped")
    resumed.load_state_dict(state)
    fit2 = resumed.fit()
    assert _without_times(fit2.history) == _without_times(fit.history)
    assert (fit2.best_epoch, fit2.epochs_run) == (fit.best_epoch, fit.epochs_run)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()


def test_best_weights_from_another_attempt_of_an_epoch_are_said_not_hidden(tmp_path):
    # Off a CPU, an epoch trained again after a crash between its best.pt and its last.pt can
    # come out differently; the best.pt left then is not the best epoch's. Made here by hand.
    _trainer(tmp_path, epochs=3).fit()
    state = torch.load(tmp_path / LAST, weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["best_epoch"] == state["early_stopping"]["best_epoch"]
    torch.save({**best, "best_epoch": 4}, tmp_path / "best.pt")
    resumed = _trainer(tmp_path, epochs=3)
    resumed.load_state_dict(state)
    with pytest.warns(RuntimeWarning, match="the best weights on disk are epoch 4's, not those of the best epoch"):
        fit = resumed.fit()
    assert fit.epochs_run == 3 and len(fit.notes) == 1


def test_checkpoints_hold_plain_values_only_and_every_state(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    trainer.fit()
    state = torch.load(tmp_path / LAST, weights_only=True)  # raises on anything but plain values
    assert {"epoch", "model", "optimizer", "scheduler", "scaler", "early_stopping", "history", "rng"} <= set(state)
    assert {"python", "numpy", "torch"} <= set(state["rng"]) and state["epoch"] == 2
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["best_epoch"] == trainer.early_stopping.best_epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # only the last and the best


# -- frozen towers stay out of checkpoints --------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self, frozen):
        super().__init__()
        self.frozen, self.identity = frozen, "encoder-v1"
        self.big = nn.Linear(64, 64)


class WithTower(nn.Module):
    def __init__(self, frozen=True):
        super().__init__()
        self.text_tower = Encoder(frozen)
        self.head = nn.Linear(4, 2)


def test_frozen_towers_are_left_out_and_load_weights_checks_what_is_missing(tmp_path):
    model = WithTower()
    assert frozen_prefixes(model) == {"text_tower.": "encoder-v1"}
    assert set(trained_state(model)) == {"head.weight", "head.bias"}
    RunCheckpoints(tmp_path).save_best(model, 3)
    other = WithTower()
    ckpt = load_weights(other, tmp_path / "best.pt")
    assert ckpt["best_epoch"] == 3 and torch.equal(other.head.weight, model.head.weight)
    # A trainable tower's weights are in the checkpoint: missing them is an error, not a silent init.
    with pytest.raises(RunError, match=r"weights 2 missing \(e\.g\. text_tower\.big"):
        load_weights(WithTower(frozen=False), tmp_path / "best.pt")
    renamed = WithTower()
    renamed.text_tower.identity = "encoder-v2"
    with pytest.raises(RunError, match="trained on top of the frozen text_tower 'encoder-v1'"):
        load_weights(renamed, tmp_path / "best.pt")


# -- a real run killed with SIGKILL, shown lost, resumed, compared with a straight run -----------


def merx(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "merx", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def recorded_epochs(db, run_id) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(distinct epoch) from epochs where run_id = ?", (run_id,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _kill_after_epoch_2(exp, db):
    proc = merx("run", exp, "--db", db)
    deadline = time.monotonic() + 300
    while recorded_epochs(db, 1) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate()[0][-4000:])
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # reaped: the pid is gone, not a zombie
    return proc


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_after_epoch_2_is_lost_then_resumed_to_the_results_of_a_straight_run(tmp_path, tiny_bert_dir):
    raw = tiny_raw(tiny_bert_dir, Path.cwd() / ".merx" / "cache", task="classification")
    del raw["name"]
    raw["train"]["epochs"] = 6
    exp = tmp_path / "tiny.toml"
    exp.write_text(to_toml(raw))
    assert invoke("prepare", exp).exit_code == 0  # features cached: the subprocess trains at once
    db = tmp_path / "results.db"
    proc = _kill_after_epoch_2(exp, db)
    assert proc.returncode == -signal.SIGKILL

    listing = invoke("runs", "--db", db)
    assert "lost: run1 (process gone, or silent for 300 s); merx resume RUN continues one" in \
        " ".join(listing.stdout.split()), listing.stdout
    store = RunStore(db)
    killed = store.get_run(1)
    assert killed["status"] == "lost" and killed["ended_at"] is None and killed["pid"] == proc.pid
    assert killed["host"] == socket.gethostname()
    kept = sorted(killed["epochs"])
    assert 2 <= len(kept) < 6 and kept == list(range(1, len(kept) + 1))  # every finished epoch kept
    assert "merx resume run1 continues it" in " ".join(invoke("show", "run1", "--db", db).stdout.split())

    # A copy of the lost run in another database resumes from the original's checkpoint but
    # writes only into its own run folder: the original's files stay as they were.
    copy = tmp_path / "copy.db"
    assert invoke("db", "copy", db, copy).exit_code == 0
    source_files = {a["path"]: Path(a["path"]).read_bytes() for a in killed["artifacts"]}
    assert {Path(p).name for p in source_files} == {"last.pt", "best.pt"}
    copied = invoke("resume", "run1", "--db", copy)
    assert copied.exit_code == 0, copied.output
    assert {p: Path(p).read_bytes() for p in source_files} == source_files
    in_copy = RunStore(copy).get_run(1)
    assert Path(in_copy["checkpoint_path"]).parent == RunStore(copy).run_folder(1) != store.run_folder(1)

    resumed = invoke("resume", "run1", "--db", db)
    assert resumed.exit_code == 0, resumed.output
    assert "run1 resumed after epoch" in resumed.stdout
    straight = invoke("run", exp, "--db", db)
    assert straight.exit_code == 0, straight.output

    a, b = store.get_run(1), store.get_run(2)
    assert a["status"] == b["status"] == "completed" and a["id"] == 1
    assert (a["best_epoch"], a["epochs_run"]) == (b["best_epoch"], b["epochs_run"]) and a["epochs_run"] == 6

    def curve(run):
        return {e: {k: v for k, v in m.items() if k != "epoch_seconds"} for e, m in run["epochs"].items()}
    assert curve(a) == curve(b)
    assert a["metrics"] == b["metrics"] and a["baselines"] == b["baselines"]
    assert in_copy["metrics"] == a["metrics"] and in_copy["best_epoch"] == a["best_epoch"]

    def predictions(run_id):
        return [{k: v for k, v in p.items() if k != "run_id"} for p in store.get_predictions(run_id)]
    assert predictions(1) == predictions(2)
    wa, wb = _weights(a["checkpoint_path"]), _weights(b["checkpoint_path"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # The frozen text tower is not in the checkpoint; a model built from the config gets it back.
    assert not any(k.startswith("text_tower.encoder.") for k in wa)
    from merx.pipeline import build
    from merx.plugins import get_registry

    model = build(a["config"], get_registry())
    ckpt = load_weights(model, a["checkpoint_path"])
    assert ckpt["best_epoch"] == a["best_epoch"] and ckpt["ref_power"] is not None

    again = invoke("resume", "run1", "--db", db)
    assert again.exit_code == 2 and "run1 is completed: only an interrupted, failed or lost run" in again.output


# -- liveness -------------------------------------------------------------------------------------


def _start(store):
    return store.start_run("e", None, {"task": "regression"}, "h", "g", 0, "regression", "cpu", {}, None)


def test_a_running_run_is_lost_when_its_heartbeat_is_older_than_the_timeout(any_db, monkeypatch):
    store = RunStore(any_db)
    run_id = _start(store)
    run = store.get_run(run_id)
    assert run["status"] == "running" and run["pid"] == os.getpid() and run["host"] == socket.gethostname()
    # Another host: its pid cannot be checked here, so only the heartbeat tells.
    store.update_run(run_id, host="elsewhere", heartbeat_at="2020-01-01T00:00:00.000+00:00")
    assert store.get_run(run_id)["status"] == "lost"
    store.update_run(run_id, heartbeat_at=store.get_run(run_id)["started_at"])
    assert store.get_run(run_id)["status"] == "running"
    monkeypatch.setenv("MERX_HEARTBEAT_TIMEOUT", "0")
    time.sleep(0.01)
    assert store.get_run(run_id)["status"] == "lost" and is_lost(store.get_run(run_id))
    assert [r["id"] for r in store.list_runs(status="lost")] == [run_id]
    monkeypatch.setenv("MERX_HEARTBEAT_TIMEOUT", "soon")
    with pytest.raises(StoreError, match="MERX_HEARTBEAT_TIMEOUT='soon' is not a number of seconds"):
        store.get_run(run_id)


def test_the_heartbeat_is_refreshed_only_by_the_process_running_the_run(any_db):
    store = RunStore(any_db)
    run_id = _start(store)
    store.update_run(run_id, heartbeat_at="2020-01-01T00:00:00.000+00:00")
    store.heartbeat(run_id)
    assert store.get_run(run_id)["heartbeat_at"] > "2025"
    store.update_run(run_id, pid=os.getpid() + 1, heartbeat_at="2020-01-01T00:00:00.000+00:00")
    store.heartbeat(run_id)  # this process no longer runs it (resumed elsewhere): no beat
    assert store.get_run(run_id)["heartbeat_at"].startswith("2020")


def test_the_background_thread_beats_while_the_run_trains(any_db):
    from merx.store.liveness import Heartbeat

    store = RunStore(any_db)
    run_id = _start(store)
    store.update_run(run_id, heartbeat_at="2020-01-01T00:00:00.000+00:00")
    with Heartbeat(store, run_id, interval=0.05):
        deadline = time.monotonic() + 10
        while store.get_run(run_id)["heartbeat_at"].startswith("2020") and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not store.get_run(run_id)["heartbeat_at"].startswith("2020")
    store.update_run(run_id, heartbeat_at="2020-01-01T00:00:00.000+00:00")
    time.sleep(0.2)  # the thread stopped with the block
    assert store.get_run(run_id)["heartbeat_at"].startswith("2020")


def test_only_interrupted_failed_or_lost_runs_are_reopened(any_db):
    store = RunStore(any_db)
    run_id = _start(store)
    with pytest.raises(StoreError, match=rf"run{run_id} is running: .*\(pid {os.getpid()} on .* \(alive\)"):
        store.reopen_run(run_id)
    store.finish_run(run_id, "interrupted", error="Ctrl-C")
    assert store.reopen_run(run_id)["status"] == "interrupted"
    run = store.get_run(run_id)
    assert run["status"] == "running" and run["error"] is None and run["ended_at"] is None
    store.finish_run(run_id, "completed")
    with pytest.raises(StoreError, match="is completed"):
        store.reopen_run(run_id)


def test_resume_refuses_what_it_cannot_continue_before_preparing_anything(any_db):
    db = any_db
    store = RunStore(db)
    run_id = _start(store)
    store.finish_run(run_id, "completed")
    for args in (("resume", "run1"), ("run", "--resume", "run1")):
        result = invoke(*args, "--db", db)
        assert result.exit_code == 2 and "run1 is completed: only an interrupted, failed or lost run" in result.output
    mixed = invoke("run", "exp.toml", "--resume", "run1", "--db", db)
    assert mixed.exit_code == 2 and "--resume RUN continues the run with its own recorded config" in mixed.output
    bare = invoke("run", "--db", db)
    assert bare.exit_code == 2 and "missing the experiment FILE" in bare.output
    unknown = invoke("resume", "run7", "--db", db)
    assert unknown.exit_code == 2 and "no run run7" in unknown.output


# -- run folders, rm, gc ----------------------------------------------------------------------------


def test_two_databases_never_share_run_folders(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    beside = RunStore(tmp_path / "a" / "results.db").run_folder(1)
    assert beside.parent.parent == tmp_path / "a" / "runs" and beside.name == "run1"
    monkeypatch.setenv("MERX_RUNS_DIR", str(tmp_path / "shared"))
    one, two = RunStore(tmp_path / "a" / "results.db"), RunStore(tmp_path / "b" / "results.db")
    assert one.run_folder(1).parent.parent == two.run_folder(1).parent.parent == tmp_path / "shared"
    assert one.run_folder(1) != two.run_folder(1)
    chosen = RunStore(tmp_path / "a" / "results.db", runs_dir=tmp_path / "x")
    assert chosen.run_folder(1).parent.parent == tmp_path / "x"


def _run_with_files(store):
    run_id = _start(store)
    folder = store.run_folder(run_id)
    folder.mkdir(parents=True)
    for kind in ("best", "last"):
        (folder / f"{kind}.pt").write_bytes(b"x" * 100)
        store.add_artifact(run_id, kind, folder / f"{kind}.pt")
    store.add_artifact(run_id, "best", folder / "best.pt")  # listed once
    store.add_epoch(run_id, 1, {"val_loss": 1.0})
    store.finish_run(run_id, "completed")
    return run_id, folder


def test_rm_deletes_runs_with_their_rows_and_files_after_confirming(any_db):
    db = any_db
    store = RunStore(db)
    (one, f1), (two, f2) = _run_with_files(store), _run_with_files(store)
    assert len(store.get_run(one)["artifacts"]) == 2
    kept = invoke("rm", f"run{one}", "--db", db, input="n\n")
    assert kept.exit_code == 1 and f1.exists() and store.get_run(one)
    done = invoke("rm", f"run{one}", "--db", db, input="y\n")
    assert done.exit_code == 0, done.output
    assert "deleted run1 (2 files" in done.stdout
    assert not f1.exists() and f2.exists() and store.run_ids() == {two}
    with store.engine.connect() as con:
        for table in ("epochs", "artifacts"):
            assert con.exec_driver_sql(f"select count(*) from {table} where run_id = {one}").scalar() == 0
    running = _start(store)
    refused = invoke("rm", f"run{running}", f"run{two}", "--db", db, "--yes")
    assert refused.exit_code == 2 and f"run{running} is running" in refused.output
    assert store.run_ids() == {two, running} and f2.exists()  # nothing deleted: one transaction
    missing = invoke("rm", "run99", "--db", db, "--yes")
    assert missing.exit_code == 2 and "no run run99" in missing.output


def test_gc_removes_the_files_of_deleted_runs_only(tmp_path):
    db = tmp_path / "r.db"
    store = RunStore(db)
    (one, f1), (two, f2) = _run_with_files(store), _run_with_files(store)
    with sqlite3.connect(db) as con:  # deleted behind merx's back: rows gone, files left
        con.execute("pragma foreign_keys = on")
        con.execute("delete from runs where id = ?", (one,))
    stray = f2 / ".last.pt.abc.tmp"  # a write cut short by SIGKILL
    stray.write_bytes(b"partial")
    other = store.runs_dir / "notes.txt"
    other.write_text("mine")
    shown = invoke("gc", "--db", db, "--dry-run")
    assert shown.exit_code == 0 and f1.exists() and "run1" in shown.stdout
    done = invoke("gc", "--db", db)
    assert done.exit_code == 0, done.output
    assert not f1.exists() and f2.exists() and (f2 / "best.pt").exists() and not stray.exists()
    assert other.read_text() == "mine"  # gc touches only run folders and merx's temporary files
    assert json.loads(invoke("runs", "--db", db, "--json").stdout)[0]["id"] == two


# -- runs recorded by an older merx; liveness through the whole run ---------------------------------


class WatchedStore(RunStore):
    """A real store that notes, when the run records its data notes (after the run is this
    process's, before the model is built, lyrics are encoded and the feature bank is filled),
    which heartbeat threads are alive."""

    beating: list[str] | None = None

    def add_data_notes(self, run_id, notes):
        import threading

        self.beating = [t.name for t in threading.enumerate() if t.name.startswith("merx-heartbeat")]
        return super().add_data_notes(run_id, notes)


def test_a_run_recorded_before_todays_config_keys_resumes_beating_throughout_and_predicts(tmp_path, tiny_bert_dir):
    import copy
    import threading

    from merx.config import resolve
    from merx.inference.model import load_from_run
    from merx.pipeline import resume

    cfg = resolve(tiny_raw(tiny_bert_dir, tmp_path / "cache"))
    old = copy.deepcopy(cfg)
    del old["train"]["data_on_device"]  # a key added today: a run recorded yesterday lacks it
    store = WatchedStore(tmp_path / "results.db")
    run_id = store.start_run("tiny", None, old, "h", "g", 1, "regression", "cpu", {}, None)
    store.finish_run(run_id, "interrupted", error="Ctrl-C")

    result = resume(store, f"run{run_id}", progress=False)
    assert result.status == "completed" and result.epochs_run == 2
    assert store.beating == [f"merx-heartbeat-run{run_id}"]  # beating before the model is built
    assert not [t for t in threading.enumerate() if t.name.startswith("merx-heartbeat")]  # and stopped
    run = store.get_run(run_id)
    assert run["status"] == "completed" and "data_on_device" not in run["config"]["train"]  # kept as recorded
    trained = load_from_run(store, run_id)
    assert trained.exp.train.data_on_device == cfg["train"]["data_on_device"]


def _old_layout_run(store, db: Path):
    """A run as merx recorded it before store folders had a hash and files were listed: its
    best.pt in ``<database folder>/runs/<database stem>/run<id>``, named only by checkpoint_path."""
    run_id = _start(store)
    folder = db.resolve().parent / "runs" / db.stem / f"run{run_id}"
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"x" * 100)
    store.finish_run(run_id, "completed", best_epoch=1, epochs_run=1, checkpoint_path=str(folder / "best.pt"))
    assert store.get_run(run_id)["artifacts"] == []
    return run_id, folder


def test_rm_and_gc_delete_the_files_of_runs_recorded_in_the_old_layout_but_not_a_copy_sources(tmp_path):
    (tmp_path / "a").mkdir()
    db = tmp_path / "a" / "results.db"
    store = RunStore(db)
    (one, f1), (two, f2) = _old_layout_run(store, db), _old_layout_run(store, db)

    # A copy elsewhere names the original's old-layout file: deleting the copy's run leaves it.
    copy = tmp_path / "b" / "copy.db"
    copy.parent.mkdir()
    assert invoke("db", "copy", db, copy).exit_code == 0
    in_copy = invoke("rm", f"run{one}", "--db", copy, "--yes")
    assert in_copy.exit_code == 0, in_copy.output
    assert (f1 / "best.pt").read_bytes() == b"x" * 100 and "left 1 file(s) in place" in in_copy.stdout

    done = invoke("rm", f"run{one}", "--db", db, "--yes")
    assert done.exit_code == 0, done.output
    assert "deleted run1 (1 files, 100 B)" in done.stdout
    assert not f1.exists() and (f2 / "best.pt").exists()

    with sqlite3.connect(db) as con:  # deleted behind merx's back: row gone, old-layout folder left
        con.execute("pragma foreign_keys = on")
        con.execute("delete from runs where id = ?", (two,))
    collected = invoke("gc", "--db", db)
    assert collected.exit_code == 0, collected.output
    assert not f2.exists() and f"deleted run{two}" in collected.stdout


def test_a_checkpoint_that_cannot_be_read_or_is_not_merx_s_is_said_once_for_resume_and_predict(tmp_path):
    from merx.checkpoints import load_checkpoint
    from merx.errors import PredictError
    from merx.inference.model import load_from_run

    store = RunStore(tmp_path / "r.db")
    cut, foreign = tmp_path / "cut.pt", tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, cut)
    cut.write_bytes(cut.read_bytes()[:40])  # truncated
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(RunError, match="cannot read the checkpoint .*cut.pt"):
        load_checkpoint(cut)
    with pytest.raises(RunError, match=r"foreign.pt is not a merx checkpoint \(no 'model' weights\)"):
        load_checkpoint(foreign)
    for path, why in ((cut, "cannot read the checkpoint"), (foreign, "is not a merx checkpoint")):
        run_id = _start(store)
        store.finish_run(run_id, "completed", checkpoint_path=str(path))
        with pytest.raises(PredictError, match=f"run{run_id}: .*{why}") as err:
            load_from_run(store, run_id)
        assert "exported model folder" in err.value.hint


def test_a_copied_run_whose_source_best_weights_are_gone_records_no_best_epoch_not_a_missing_file(
        tmp_path, tiny_bert_dir):
    from merx.config import resolve
    from merx.pipeline import resume, run

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store = RunStore(tmp_path / "a" / "results.db")
    done = run(resolve(tiny_raw(tiny_bert_dir, tmp_path / "cache")), None, store, progress=False)
    assert done.best_epoch is not None
    # It failed after its last epoch's checkpoint (testing, say): resumable, with nothing left to train.
    store.update_run(done.run_id, status="failed", error="failed while testing")
    copy = tmp_path / "b" / "copy.db"
    assert invoke("db", "copy", store.location, copy).exit_code == 0
    Path(store.get_run(done.run_id)["checkpoint_path"]).unlink()  # the source's best.pt is gone

    with pytest.warns(RuntimeWarning, match=r"the best epoch \(\d\) was before this run resumed and its weights"):
        resumed = resume(RunStore(copy), done.run_id, progress=False)
    row = RunStore(copy).get_run(done.run_id)
    assert resumed.best_epoch is None and row["status"] == "completed" and row["best_epoch"] is None
    assert "its weights were gone" in row["note"] and "no best epoch" in row["note"]
    best = Path(row["checkpoint_path"])  # the weights tested, in the copy's own folder
    assert best.parent == RunStore(copy).run_folder(done.run_id) and best.is_file()
    assert torch.load(best, weights_only=True)["best_epoch"] is None


# -- resuming on the feature bank with random crops, masks and waveform variants --------------------


class StopAtEpoch3(RunStore):
    """A real store whose process is interrupted (Ctrl-C) as epoch 3 is recorded: epoch 2's
    checkpoint is the last written, so the resumed run trains epochs 3 and 4."""

    def add_epoch(self, run_id, epoch, metrics):
        if epoch == 3:
            raise KeyboardInterrupt
        return super().add_epoch(run_id, epoch, metrics)


def test_a_run_on_the_feature_bank_with_random_crops_masks_and_variants_resumes_to_a_straight_run(
        tmp_path, tiny_bert_dir):
    import io

    from rich.console import Console

    from merx.config import resolve
    from merx.pipeline import resume, run

    raw = tiny_raw(tiny_bert_dir, tmp_path / "cache", task="classification")
    raw["features"]["crop"] = "random"  # songs of 1-2 s, a 1 s window: a fresh crop every epoch
    raw["augment"] = {"audio": [{"name": "gain", "p": 0.8},  # precomputed waveform variants, drawn per epoch
                                {"name": "frequency_mask", "max_width": 5, "n_masks": 2, "p": 0.8},
                                {"name": "time_mask", "max_width": 9, "fill": "min", "p": 0.7}],
                      "variants": 2}
    raw["train"].update(epochs=4, device="cpu")
    cfg = resolve(raw)
    db = tmp_path / "results.db"

    said = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        run(cfg, None, StopAtEpoch3(db), progress=False, console=Console(file=said, width=300))
    assert "inputs: feature bank" in said.getvalue(), said.getvalue()
    store = RunStore(db)
    assert store.get_run(1)["status"] == "interrupted" and sorted(store.get_run(1)["epochs"]) == [1, 2]
    torch.rand(100), random.random(), np.random.rand()  # the process draws on before resuming
    resumed = resume(store, 1, progress=False)
    straight = run(cfg, None, store, progress=False)

    a, b = store.get_run(1), store.get_run(straight.run_id)
    assert a["status"] == b["status"] == "completed" and a["epochs_run"] == b["epochs_run"] == 4
    assert resumed.best_epoch == straight.best_epoch

    def curve(r):
        return {e: {k: v for k, v in m.items() if k != "epoch_seconds"} for e, m in r["epochs"].items()}
    assert curve(a) == curve(b)
    assert a["metrics"] == b["metrics"]
    wa, wb = _weights(a["checkpoint_path"]), _weights(b["checkpoint_path"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_process_whose_run_was_resumed_elsewhere_records_neither_epochs_nor_its_end(any_db):
    from merx.store.errors import RunTakenOver

    store = RunStore(any_db)
    run_id = _start(store)
    store.add_epoch(run_id, 1, {"val_loss": 1.0})
    # Reported lost and resumed by another process: reopen_run recorded that process's pid.
    store.update_run(run_id, pid=os.getpid() + 1)
    with pytest.raises(RunTakenOver, match=rf"run{run_id} is now run by pid {os.getpid() + 1} on .*no longer records"):
        store.add_epoch(run_id, 2, {"val_loss": 0.5})
    with pytest.raises(RunTakenOver):
        store.finish_run(run_id, "failed", error="this process's view")
    run = store.get_run(run_id)
    assert sorted(run["epochs"]) == [1] and run["ended_at"] is None and run["error"] is None
    store.update_run(run_id, pid=os.getpid())  # its own again: written as before
    store.add_epoch(run_id, 2, {"val_loss": 0.5})
    store.finish_run(run_id, "completed")
    assert store.get_run(run_id)["status"] == "completed" and sorted(store.get_run(run_id)["epochs"]) == [1, 2]
    # A store that never ran a run (a tool closing a dead worker's run) is no superseded runner.
    other = _start(store)
    store.update_run(other, pid=os.getpid() + 1)
    RunStore(any_db).finish_run(other, "failed", error="closed by a tool")
    assert store.get_run(other)["status"] == "failed"


def test_a_frozen_hub_tower_recorded_before_its_commit_was_named_still_loads_and_another_tower_does_not():
    import torch

    from merx.checkpoints import load_weights, trained_state
    from merx.errors import RunError

    class Tower(torch.nn.Module):
        frozen = True

        def __init__(self, identity):
            super().__init__()
            self.identity, self.layer = identity, torch.nn.Linear(2, 2)

    class Model(torch.nn.Module):
        def __init__(self, identity):
            super().__init__()
            self.text, self.head = Tower(identity), torch.nn.Linear(2, 1)

    sha = "0123456789abcdef0123456789abcdef01234567"
    trained = Model("hub:org/bert 5.0|pooling=mean|max_length=128")  # as recorded before commits were named
    ckpt = {"model": trained_state(trained), "frozen": {"text.": trained.text.identity}}
    now = Model(f"hub:org/bert 5.0@{sha}|pooling=mean|max_length=128")
    load_weights(now, ckpt)
    assert torch.equal(now.head.weight, trained.head.weight)
    with pytest.raises(RunError, match="trained on top of the frozen text"):
        load_weights(Model(f"hub:org/other 5.0@{sha}|pooling=mean|max_length=128"), ckpt)
    pinned = {**ckpt, "frozen": {"text.": f"hub:org/bert 5.0@{sha}|pooling=mean|max_length=128"}}
    with pytest.raises(RunError, match="trained on top of the frozen text"):  # a named commit must match
        load_weights(Model(f"hub:org/bert 5.0@{'f' * 40}|pooling=mean|max_length=128"), pinned)
