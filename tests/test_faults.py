"""What a long run meets besides bugs: SIGTERM, a killed parent, a full disk, a split left empty.

Real processes, real signals, real limits: merx runs as ``python -m merx`` in a child process,
which the tests signal or start under a file-size limit, and whose own children they look up in
/proc (Linux only)."""

import csv
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.config import to_toml
from merx.store import RunStore

from tiny_experiment import tiny_raw, tiny_toml

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads processes from /proc")


def merx(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "merx", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += (task / "children").read_text().split()
        except OSError:
            pass
    return [int(c) for c in found]


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie is dead (a container's pid 1 may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def extraction_experiment(tmp_path, bert_dir) -> Path:
    """60 songs, features in 2 worker processes: extraction takes seconds, not milliseconds."""
    raw = tiny_raw(bert_dir, Path.cwd() / ".merx" / "cache", task="classification")
    del raw["name"]
    raw["data"]["source"].update(n_songs=60, duration=4.0, min_duration=3.0)
    raw["features"]["workers"] = 2
    raw["model"]["modalities"] = "audio"
    path = tmp_path / "extract.toml"
    path.write_text(to_toml(raw))
    return path


def start_with_workers(*args) -> tuple[subprocess.Popen, list[int]]:
    """``merx *args`` started, once both extraction workers exist; with all of its children then."""
    proc = merx(*args)

    def workers():
        return len([c for c in children(proc.pid) if "spawn_main" in cmdline(c)]) >= 2

    try:
        wait_until(workers, 240, "two feature extraction workers")
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[0][-4000:]) from None
    return proc, children(proc.pid)  # the workers and multiprocessing's resource tracker


def assert_all_gone(pids: list[int], timeout: float = 10.0):
    try:
        wait_until(lambda: not any(alive(p) for p in pids), timeout, "the parent's children to exit")
    except AssertionError:
        left = {p: cmdline(p) for p in pids if alive(p)}
        for p in left:
            os.kill(p, signal.SIGKILL)  # this test's own leftovers
        raise AssertionError(f"outlived their parent: {left}") from None


# -- feature workers never outlive merx ---------------------------------------------------------

def test_feature_workers_die_with_a_parent_killed_by_sigkill(tmp_path, tiny_bert_dir):
    exp = extraction_experiment(tmp_path, tiny_bert_dir)
    proc, kids = start_with_workers("prepare", exp)
    assert len(kids) >= 3, [cmdline(k) for k in kids]
    proc.kill()  # SIGKILL: nothing of merx runs any more, only the workers can notice
    proc.wait(timeout=30)
    proc.stdout.close()  # not read to its end: a surviving worker would hold it open
    assert_all_gone(kids)


def test_sigterm_while_a_run_prepares_features_ends_the_workers_and_records_nothing(tmp_path, tiny_bert_dir):
    exp = extraction_experiment(tmp_path, tiny_bert_dir)
    proc, kids = start_with_workers("run", exp)
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "interrupted by SIGTERM" in out and "nothing was recorded" in out, out
    assert "recorded as 'interrupted'" not in out and "Traceback" not in out
    assert RunStore(tmp_path / "results.db").list_runs() == []
    assert_all_gone(kids, timeout=5)


def test_ctrl_c_during_prepare_is_one_line_exit_130_and_ends_the_workers(tmp_path, tiny_bert_dir):
    exp = extraction_experiment(tmp_path, tiny_bert_dir)
    proc, kids = start_with_workers("prepare", exp)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out  # click's own "Aborted!" would exit 1
    assert "interrupted by Ctrl-C: nothing is recorded" in out and "Traceback" not in out, out
    assert_all_gone(kids, timeout=5)


def test_sigterm_becomes_terminated_once_and_the_previous_handler_comes_back():
    from merx.interrupts import Terminated, sigterm_as_interrupt

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(Terminated), sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # not reached: the handler raised
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # a second one while cleaning up is ignored
                time.sleep(0.05)
        assert seen == []
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert seen == [signal.SIGTERM]  # the handler from before is back
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- SIGTERM in a sweep --------------------------------------------------------------------------

def test_sigterm_in_a_sweep_interrupts_the_current_run_and_keeps_the_finished_one(tmp_path, tiny_bert_dir):
    (tmp_path / "base.toml").write_text(tiny_toml(tiny_bert_dir, Path.cwd() / ".merx" / "cache"))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('extends = "base.toml"\n[sweep]\n"train.epochs" = [1, 500]\n')
    db = tmp_path / "results.db"
    proc = merx("run", sweep, "--db", db)

    def second_run_trained_an_epoch():
        try:
            with sqlite3.connect(db) as con:
                return con.execute("select count(*) from epochs where run_id = 2").fetchone()[0] > 0
        except sqlite3.OperationalError:
            return False

    try:
        wait_until(second_run_trained_an_epoch, 240, "an epoch of the sweep's second run")
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[0][-4000:]) from None
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "the current run, run2, is recorded as 'interrupted'; finished runs are kept" in out, out
    store = RunStore(db)
    first, second = store.get_run(1), store.get_run(2)
    assert first["status"] == "completed"
    assert second["status"] == "interrupted" and "SIGTERM" in second["error"]
    assert second["epochs_run"] >= 1 and second["epochs_run"] == len(second["epochs"])


# -- a full disk ---------------------------------------------------------------------------------

#: Below the tiny model's checkpoint (about 4 MB: the BERT's embeddings), far above the whole
#: results database of its run (under 100 KB) and every cache file.
FILE_SIZE_LIMIT = 1 << 20


@pytest.fixture(params=["file-size limit", "full file system"])
def no_room(request, tmp_path):
    """How the run's checkpoint write will fail: EFBIG (RLIMIT_FSIZE) or ENOSPC (a tiny tmpfs
    holding the run folders; needs root, skipped elsewhere)."""
    if request.param == "file-size limit":
        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG, not the process
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
        yield {"preexec_fn": limit}
        return
    runs = tmp_path / "runs"
    runs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(runs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield {}
    finally:
        if subprocess.run(["umount", str(runs)]).returncode != 0:
            subprocess.run(["umount", "-l", str(runs)])


def test_a_full_disk_fails_the_run_without_a_partial_checkpoint_and_keeps_the_database(
        tmp_path, tiny_bert_dir, no_room):
    raw = tiny_raw(tiny_bert_dir, Path.cwd() / ".merx" / "cache", task="classification")
    del raw["name"]
    raw["model"]["text"]["freeze"] = False  # a trained BERT is in the checkpoint: about 4 MB
    exp = tmp_path / "tiny.toml"
    exp.write_text(to_toml(raw))
    assert CliRunner().invoke(cli, ["prepare", str(exp)]).exit_code == 0  # data and features, unlimited
    db = tmp_path / "results.db"
    proc = merx("run", exp, "--db", db, **no_room)
    out, _ = proc.communicate(timeout=300)
    folder = RunStore(db).run_folder(1)
    assert proc.returncode == 1, out
    assert f"error: no space left on device ({folder / 'best.pt'})" in out, out
    assert "Traceback" not in out
    run = RunStore(db).get_run(1)
    assert run["status"] == "failed" and run["error"] == f"DiskFull: no space left on device ({folder / 'best.pt'})"
    # The epoch is recorded before its checkpoint is written: it is kept.
    assert run["epochs_run"] == 1 and sorted(run["epochs"]) == [1] and run["checkpoint_path"] is None
    assert list(folder.iterdir()) == []  # neither a truncated best.pt nor its temporary file
    with sqlite3.connect(db) as con:
        assert con.execute("pragma integrity_check").fetchall() == [("ok",)]


# -- a split with nothing usable says why ----------------------------------------------------------

def test_an_empty_split_lists_its_failures_grouped_with_where_they_are(tmp_path, tiny_bert_dir):
    from merx.data.synthetic import SyntheticMerge, SyntheticSpec

    generated = SyntheticMerge(tmp_path / "gen", SyntheticSpec(n_songs=24, duration=2.0, min_duration=1.0)).ensure()
    root = tmp_path / "MERGE_Bimodal_Complete"
    shutil.copytree(generated, root)
    with open(root / "merge_bimodal_complete_metadata.csv", newline="") as f:
        meta = {row["Audio_Song"]: row for row in csv.DictReader(f)}
    with open(root / "tvt_dataframes" / "tvt_70_15_15" / "tvt_70_15_15_test_bimodal_complete.csv", newline="") as f:
        test = [row["Song"] for row in csv.DictReader(f)]
    assert len(test) == 4
    audio = {sid: root / "audio" / meta[sid]["Quadrant"] / f"{sid}.mp3" for sid in test}
    audio[test[0]].write_bytes(b"")                                   # the reader refuses it
    audio[test[1]].write_bytes(b"")
    audio[test[2]].write_bytes(b"this is not an mp3 file" * 40)       # only decoding finds out
    lyrics = root / "lyrics" / meta[test[3]]["Quadrant"] / f"{meta[test[3]]['Lyric_Song']}.txt"
    lyrics.write_bytes(b"\xff\xfe" + lyrics.read_bytes())

    raw = tiny_raw(tiny_bert_dir, Path.cwd() / ".merx" / "cache", task="classification")
    del raw["name"]
    raw["data"]["source"] = {"name": "merge", "root": str(root)}
    exp = tmp_path / "broken.toml"
    exp.write_text(to_toml(raw))
    result = CliRunner().invoke(cli, ["prepare", str(exp)])
    assert result.exit_code == 2, result.output
    message = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert message.startswith("error: no usable songs in the 'test' split: 4 songs failed"), message
    folders = sorted({str(p.parent) for p in (audio[test[0]], audio[test[1]])})
    assert f"2 songs: audio file is empty (in {', '.join(folders)})" in message
    assert f"1 song: lyrics file is not valid UTF-8 (byte 0: b'\\xff') (in {lyrics.parent})" in message
    assert "1 song: librosa could not decode the audio: " in message and "'<file>'" in message
    assert str(audio[test[2]]) not in message.split(" (in ")[0]


def test_an_empty_split_whose_songs_all_failed_decoding_says_so():
    from merx.data.failures import empty_split_message
    from merx.data.songs import Failure, SongTable

    paths = [f"/data/audio/Q{1 + i % 2}/A{i}.mp3" for i in range(3)]
    table = SongTable([], [Failure(f"A{i}", "audio", f"cannot decode {p}: bad header", p) for i, p in enumerate(paths)]
                      + [Failure("B1", "audio", "cannot decode /data/audio/Q1/B1.mp3: bad header", "/x/B1.mp3")])
    message = empty_split_message("test", table, {"A0": "test", "A1": "test", "A2": "test", "B1": "train"})
    assert message == ("no usable songs in the 'test' split: all of its 3 songs failed. 3 songs: cannot decode "
                       "<file>: bad header (in /data/audio/Q1, /data/audio/Q2)")
    assert "the data source lists none there" in empty_split_message("validate", SongTable([], [], "MERGE at /d"), {})
