"""Executors: a sweep of 3 cells × 2 seeds run by several real workers at once (local processes,
a local Ray instance, submitit's local executor), one worker killed mid-run and its run resumed,
and Ctrl-C (a real SIGINT to a real driver) cancelling what is in flight."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.config import config_hash
from merx.store import RunStore
from merx.sweep import load_plan

from tiny_experiment import tiny_toml

SWEEP = '''
    extends = "base.toml"
    [sweep]
    "train.lr.head" = [1e-3, 3e-4, 1e-4]
    seeds = 2
'''


#: Epochs of the sweeps whose workers are killed or interrupted after their first: enough left
#: (a tiny epoch is a few tens of milliseconds on warm features) that the signal lands mid-run.
EPOCHS = 8


def write_sweep(folder: Path, bert_dir, cache, epochs: int = EPOCHS, extra: str = "", sweep: str = SWEEP) -> Path:
    (folder / "base.toml").write_text(tiny_toml(bert_dir, cache, epochs=epochs))
    text = sweep
    sweep = folder / "sweep.toml"
    sweep.write_text(textwrap.dedent(text) + textwrap.dedent(extra))
    return sweep


def start_driver(folder: Path, *args, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    """``merx run sweep.toml ARGS`` as a real process; its output goes to a file (no pipe to fill)."""
    log = folder / "driver.log"
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "merx", "run", "sweep.toml", *map(str, args)], cwd=folder,
                                stdout=out, stderr=subprocess.STDOUT, env=full_env, preexec_fn=_hear_sigint)
    return proc, log


def _hear_sigint():
    """SIGINT at its default in the driver, whatever this test process inherited (a shell's
    background job ignores it, and children inherit that): the test sends it a real SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def running_with_epochs(db, timeout: float = 180.0, proc=None, pid: bool = True) -> dict:
    """The first run seen ``running`` with at least one finished epoch (and its worker's pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the driver ended before any run was mid-way")
        if Path(str(db)).exists() or "://" in str(db):
            store = RunStore(db)
            try:
                for row in store.list_runs(status="running", limit=None):
                    run = store.get_run(row["id"])
                    if run["epochs"] and (run.get("pid") or not pid):
                        return run
            finally:
                store.close()
        time.sleep(0.05)
    raise AssertionError("no run reached its first epoch in time")


def kill_mid_run(db, proc) -> int:
    run = running_with_epochs(db, proc=proc)
    kill(db, run)
    return run["id"]


def kill(db, run: dict) -> None:
    os.kill(int(run["pid"]), signal.SIGKILL)
    store = RunStore(db)
    assert store.get_run(run["id"])["status"] != "completed", "the run ended before the kill: raise EPOCHS"
    store.close()


def finish(proc, log: Path, timeout: float = 300.0) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return log.read_text()


def assert_all_completed_once(db, sweep: Path, killed: int | None, output: str) -> None:
    store = RunStore(db)
    runs = store.list_runs(limit=None)
    plan = load_plan(sweep)
    assert [r["status"] for r in runs] == ["completed"] * plan.size, output
    wanted = sorted(config_hash(cfg) for cell in plan.cells for cfg in cell.configs)
    assert sorted(r["config_hash"] for r in runs) == wanted  # every cell × seed once: no duplicate rows
    if killed is not None:
        assert f"resuming run{killed}" in output, output
        run = store.get_run(killed)
        assert run["status"] == "completed" and run["epochs_run"] == EPOCHS
        assert sorted(run["epochs"]) == list(range(1, EPOCHS + 1))  # each epoch once: resumed, not rerun beside
    store.close()


def workers_in(folder: Path) -> list[int]:
    """Live merx worker processes (local jobs) whose working directory is ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (b"merx.executors.worker" in (proc / "cmdline").read_bytes()
                    and os.readlink(proc / "cwd") == str(folder)):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "tiny-data-cache"  # shared with the other modules' runs


# -- the three executors, each with a worker killed -----------------------------------------------

def test_ray_sweep_on_postgresql_resumes_a_killed_worker(tmp_path, cache, tiny_bert_dir, postgres_url):
    pytest.importorskip("ray")
    write_sweep(tmp_path, tiny_bert_dir, cache)
    proc, log = start_driver(tmp_path, "--executor", "ray", "--db", postgres_url, env={"RAY_ADDRESS": ""})
    killed = kill_mid_run(postgres_url, proc)
    output = finish(proc, log)
    assert proc.returncode == 0, output
    assert "on a local Ray instance (2 CPUs" in output
    assert "Ray worker died" in output
    assert_all_completed_once(postgres_url, tmp_path / "sweep.toml", killed, output)


def test_slurm_sweep_through_submitit_resumes_a_killed_job(tmp_path, cache, tiny_bert_dir):
    pytest.importorskip("submitit")
    # parallel = 2: the local executor would start all six jobs at once on two cores.
    write_sweep(tmp_path, tiny_bert_dir, cache, extra='[executor]\ncluster = "local"\nfolder = "jobs"\nparallel = 2\n')
    proc, log = start_driver(tmp_path, "--executor", "slurm", "--time", 10, "--db", "r.db")
    killed = kill_mid_run(tmp_path / "r.db", proc)
    output = finish(proc, log)
    assert proc.returncode == 0, output
    assert "submitit's local executor" in output and "ended without a result" in output
    assert any((tmp_path / "jobs").iterdir())  # submitit's job folders: the cluster code path ran
    assert_all_completed_once(tmp_path / "r.db", tmp_path / "sweep.toml", killed, output)


def test_local_jobs_spread_over_gpus_and_resume_a_killed_worker(tmp_path, cache, tiny_bert_dir):
    write_sweep(tmp_path, tiny_bert_dir, cache)
    # Two GPUs as the driver sees them: a CPU build of torch ignores the variable, so the runs
    # train on the CPU while the assignment each worker got can be read from its environment.
    proc, log = start_driver(tmp_path, "--jobs", 2, "--db", "r.db", env={"CUDA_VISIBLE_DEVICES": "3,5"})
    run = running_with_epochs(tmp_path / "r.db", proc=proc)
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{run['pid']}/environ").read_text().split("\0") if "=" in item)
    assert environ["CUDA_VISIBLE_DEVICES"] in ("3", "5") and environ["OMP_NUM_THREADS"] == "1"
    kill(tmp_path / "r.db", run)
    output = finish(proc, log)
    assert proc.returncode == 0, output
    assert "2 local worker process(es) at once on 2 GPU(s) (3, 5)" in output
    assert "worker process killed by signal 9" in output
    assert_all_completed_once(tmp_path / "r.db", tmp_path / "sweep.toml", run["id"], output)


# -- Ctrl-C --------------------------------------------------------------------------------------

def test_ctrl_c_cancels_a_parallel_sweep_and_the_next_run_resumes_it(tmp_path, cache, tiny_bert_dir):
    # One cell × 3 seeds: two in flight when Ctrl-C comes, one queued.
    write_sweep(tmp_path, tiny_bert_dir, cache, sweep='extends = "base.toml"\n[sweep]\nseeds = 3\n')
    proc, log = start_driver(tmp_path, "--jobs", 2, "--db", "r.db")
    run = running_with_epochs(tmp_path / "r.db", proc=proc, pid=False)
    assert len(workers_in(tmp_path)) == 2
    proc.send_signal(signal.SIGINT)
    output = finish(proc, log, timeout=60)
    assert proc.returncode == 130, output
    assert "cancelling 2 run(s) in flight and 1 queued" in output and "interrupted by Ctrl-C" in output
    store = RunStore(tmp_path / "r.db")
    runs = store.list_runs(limit=None)
    assert "running" not in {r["status"] for r in runs} and "lost" not in {r["status"] for r in runs}
    interrupted = [r["id"] for r in runs if r["status"] == "interrupted"]
    assert run["id"] in interrupted
    store.close()
    assert workers_in(tmp_path) == []  # the workers are gone, not left training

    proc, log = start_driver(tmp_path, "--jobs", 2, "--db", "r.db")
    output = finish(proc, log)
    assert proc.returncode == 0, output
    for run_id in interrupted:
        assert f"resuming run{run_id}, which was lost or interrupted" in output
    assert_all_completed_once(tmp_path / "r.db", tmp_path / "sweep.toml", None, output)


# -- settings and missing extras -----------------------------------------------------------------

def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_the_executor_table_is_checked_and_is_not_part_of_a_runs_config(tmp_path):
    (tmp_path / "a.toml").write_text("seed = 3\n")
    (tmp_path / "b.toml").write_text('seed = 3\n[executor]\nname = "ray"\ngpus_per_run = 0.25\n')
    a, b = load_plan(tmp_path / "a.toml"), load_plan(tmp_path / "b.toml")
    assert config_hash(a.cells[0].configs[0]) == config_hash(b.cells[0].configs[0])
    assert "executor" not in b.cells[0].configs[0]
    assert b.executor["name"] == "ray" and b.executor["gpus_per_run"] == 0.25 and b.executor["max_retries"] == 1
    (tmp_path / "c.toml").write_text("[executor]\njobs = 0\n")
    result = invoke("run", tmp_path / "c.toml", "--dry-run")
    assert result.exit_code == 2 and "executor.jobs: must be ≥ 1, got 0" in result.output
    (tmp_path / "d.toml").write_text('[executor]\nnmae = "ray"\n')
    result = invoke("run", tmp_path / "d.toml", "--dry-run")
    assert result.exit_code == 2 and "did you mean 'name'" in result.output


@pytest.mark.parametrize("executor, module, extra", [("ray", "ray", "merx[ray]"), ("slurm", "submitit", "merx[slurm]")])
def test_a_missing_extra_is_named_with_its_install_command(tmp_path, monkeypatch, executor, module, extra):
    (tmp_path / "a.toml").write_text("seed = 3\n")
    monkeypatch.setitem(sys.modules, module, None)  # Python's own way to make an import fail
    result = invoke("run", tmp_path / "a.toml", "--executor", executor, "--db", tmp_path / "r.db")
    assert result.exit_code == 2  # merx.errors.MissingExtra: one wording for every extra
    assert f"--executor {executor} needs" in result.output and "which is not installed" in result.output
    assert f"hint: pip install '{extra}'" in result.output
    assert not RunStore(tmp_path / "r.db").list_runs(limit=None)  # nothing ran, nothing recorded


def test_an_option_of_another_executor_is_a_usage_error(tmp_path):
    (tmp_path / "a.toml").write_text("seed = 3\n")
    result = invoke("run", tmp_path / "a.toml", "--executor", "ray", "--jobs", 2, "--db", tmp_path / "r.db")
    assert result.exit_code == 2 and "--jobs does not apply to --executor ray" in result.output
    assert "it is for --executor local" in result.output
    result = invoke("run", tmp_path / "a.toml", "--partition", "gpu", "--db", tmp_path / "r.db")
    assert result.exit_code == 2 and "--partition does not apply to --executor local" in result.output


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine is a Slurm node")
def test_slurm_without_a_cluster_says_how_to_try_it_locally(tmp_path):
    pytest.importorskip("submitit")
    (tmp_path / "a.toml").write_text("seed = 3\n")
    result = invoke("run", tmp_path / "a.toml", "--executor", "slurm", "--db", tmp_path / "r.db")
    assert result.exit_code != 0 and "cannot submit Slurm jobs from here" in result.output
    assert 'cluster = "local"' in result.output


def test_a_serial_sweep_resumes_a_lost_cell_under_its_id(tmp_path, cache, tiny_bert_dir):
    """--jobs 1 (in the driver's process) also continues a cell whose newest run was lost."""
    write_sweep(tmp_path, tiny_bert_dir, cache, epochs=2, sweep='extends = "base.toml"\n[sweep]\nseeds = 2\n')
    cfg = load_plan(tmp_path / "sweep.toml").cells[0].configs[1]
    store = RunStore(tmp_path / "r.db", write=True)
    lost = store.start_run(cfg["name"], str(tmp_path / "sweep.toml"), cfg, config_hash(cfg),
                           config_hash(cfg, include_seed=False), cfg["seed"], cfg["task"], "cpu", {}, None)
    # Its process on another host, silent since 2020: lost by the heartbeat.
    store.update_run(lost, host="elsewhere", heartbeat_at="2020-01-01T00:00:00.000+00:00")
    assert store.get_run(lost)["status"] == "lost"
    result = invoke("run", tmp_path / "sweep.toml", "--db", tmp_path / "r.db")
    assert result.exit_code == 0, result.output
    assert f"seed 2: resuming run{lost}, which was lost or interrupted" in result.output
    assert_all_completed_once(tmp_path / "r.db", tmp_path / "sweep.toml", None, result.output)
    assert sorted(store.get_run(lost)["epochs"]) == [1, 2]
