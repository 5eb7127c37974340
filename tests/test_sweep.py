"""Seeds and sweeps: grid expansion, seed forms and errors, and a real sweep that skips a done cell."""

import textwrap

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.config import ConfigError, config_hash, load, toml_value
from merx.store import RunStore
from merx.sweep import load_plan, parse_seeds

from tiny_experiment import tiny_toml


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


# -- planning (nothing runs) ------------------------------------------------------------------

def test_grid_expands_to_cells_in_order(tmp_path):
    exp = write(tmp_path / "grid.toml", '''
        seed = 5
        [sweep]
        "model.fusion.name" = ["concat", "audio_attention", "combined_attention"]
        "train.lr.head" = [1e-3, 3e-4]
    ''')
    plan = load_plan(exp)
    assert plan.keys == ["model.fusion.name", "train.lr.head"] and plan.seeds == [5]
    assert [c.label for c in plan.cells][:3] == ["model.fusion.name=concat, train.lr.head=0.001",
                                                 "model.fusion.name=concat, train.lr.head=0.0003",
                                                 "model.fusion.name=audio_attention, train.lr.head=0.001"]
    assert plan.size == 6 and not plan.is_single
    cfg = plan.cells[5].configs[0]
    assert cfg["model"]["fusion"] == {"name": "combined_attention", "reduction": 4}
    assert cfg["train"]["lr"]["head"] == 3e-4 and "sweep" not in cfg


def test_a_cell_has_the_config_of_a_plain_run_with_those_settings(tmp_path):
    """[sweep] and seeds are not part of a run's config: a cell's hash is the plain run's hash."""
    exp = write(tmp_path / "grid.toml", '''
        seed = 2
        [train]
        seeds = [2, 9]
        [sweep.model.fusion]
        name = ["concat", "audio_attention"]
    ''')
    plan = load_plan(exp)
    assert plan.keys == ["model.fusion.name"] and plan.seeds == [2, 9]
    plain = write(tmp_path / "plain.toml", "seed = 2\n")
    for cell, fusion in zip(plan.cells, ["concat", "audio_attention"], strict=True):
        for cfg, seed in zip(cell.configs, [2, 9], strict=True):
            same = load(plain, [f"model.fusion.name={fusion}", f"seed={seed}"])
            assert config_hash(cfg) == config_hash(same)
        assert config_hash(cell.configs[0], include_seed=False) == config_hash(cell.configs[1], include_seed=False)


def test_seed_forms_and_the_command_line_wins(tmp_path):
    assert parse_seeds(3, 5) == [5, 6, 7]
    assert parse_seeds("3", 0) == [0, 1, 2]
    assert parse_seeds("0,7,42", 0) == [0, 7, 42]
    assert parse_seeds([4, 1], 0) == [4, 1]
    exp = write(tmp_path / "s.toml", '''
        seed = 10
        [sweep]
        seeds = 2
    ''')
    assert load_plan(exp).seeds == [10, 11]
    assert load_plan(exp, seeds="4").seeds == [10, 11, 12, 13]
    assert load_plan(exp, seeds="1,2").seeds == [1, 2]
    single = write(tmp_path / "one.toml", "seed = 3\n")
    assert load_plan(single).is_single
    assert not load_plan(single, seeds="1").is_single  # asked for seeds: a group, even of one


@pytest.mark.parametrize("value, message", [
    ("0", "at least 1"), ("abc", "expected a number of seeds"), ([1, 1], "seeds repeat"), ([], "non-empty list"),
    (True, "expected a number of seeds"),
])
def test_bad_seeds_are_named(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_seeds(value, 0)


def test_sweep_mistakes_are_clear_before_anything_runs(tmp_path):
    not_list = write(tmp_path / "a.toml", '[sweep]\n"train.epochs" = 5\n')
    with pytest.raises(ConfigError, match=r"sweep\.train\.epochs: a swept key needs a non-empty list"):
        load_plan(not_list)
    bad_cell = write(tmp_path / "b.toml", '[sweep]\n"model.fusion.name" = ["concat", "concatt"]\n')
    with pytest.raises(ConfigError, match=r"sweep cell model\.fusion\.name=concatt: .*did you mean 'concat'"):
        load_plan(bad_cell)
    conflict = write(tmp_path / "c.toml", '[sweep]\n"train.epochs" = [1, 2]\n')
    with pytest.raises(ConfigError, match="--set train.epochs overrides a key the sweep varies"):
        load_plan(conflict, ["train.epochs=3"])
    seed = write(tmp_path / "e.toml", '[sweep]\nseed = [1, 2]\n')
    with pytest.raises(ConfigError, match=r"list the seeds as seeds = \[\.\.\.\]"):
        load_plan(seed)
    twice = write(tmp_path / "d.toml", '[train]\nseeds = 2\n[sweep]\nseeds = 3\n')
    with pytest.raises(ConfigError, match="seeds are given twice"):
        load_plan(twice)
    result = invoke("run", not_list, "--dry-run")
    assert result.exit_code == 2 and "a swept key needs a non-empty list" in result.output


def test_toml_literals_round_trip():
    import tomllib

    for value in ["concat", 'a "quoted" \\ name', 3, 1e-5, -2.5, True, [1, 2], ["x", 0.5], {"name": "concat"}]:
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


# -- a real sweep -------------------------------------------------------------------------------

def base_toml(bert_dir, cache_dir) -> str:
    return tiny_toml(bert_dir, cache_dir)


def test_a_sweep_with_one_cell_already_done_runs_only_the_others(tmp_path, tmp_path_factory, tiny_bert_dir):
    cache = tmp_path_factory.getbasetemp() / "tiny-data-cache"  # shared with the other modules' runs
    db = tmp_path / "r.db"
    write(tmp_path / "base.toml", base_toml(tiny_bert_dir, cache))
    result = invoke("run", tmp_path / "base.toml", "--db", db)  # a plain run: fusion concat
    assert result.exit_code == 0, result.output
    sweep = write(tmp_path / "sweep.toml", '''
        extends = "base.toml"
        [sweep]
        "model.fusion.name" = ["concat", "audio_attention"]
    ''')
    result = invoke("run", sweep, "--db", db)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "[1/2] model.fusion.name=concat, seed 1: already completed as run1, skipped" in out
    assert "[2/2] model.fusion.name=audio_attention, seed 1" in out
    assert "sweep summary" in out and "★ best" in out and "run1 (done before)" in out and "run2" in out
    runs = RunStore(db).list_runs(limit=None)
    assert len(runs) == 2  # only the new cell ran
    assert runs[0]["config"]["model"]["fusion"]["name"] == "audio_attention" and runs[0]["experiment"] == "sweep"

    again = invoke("run", sweep, "--db", db)  # everything done: nothing runs
    assert again.exit_code == 0 and again.output.count("skipped (--rerun runs it again)") == 2
    assert len(RunStore(db).list_runs(limit=None)) == 2
    plan = invoke("run", sweep, "--db", db, "--rerun", "--seeds", "2", "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert "2 cell(s) × 2 seed(s) (1, 2) = 4 runs" in plan.output and plan.output.count("to run") == 4
    plan = invoke("run", sweep, "--db", db, "--seeds", "2", "--dry-run")
    assert plan.output.count("to run") == 2 and "done as run1: skipped" in plan.output



RECORD = """
import json, sys
from merx.store import RunStore
from merx.config import config_hash
cfg = json.loads(sys.argv[2])
print(RunStore(sys.argv[1]).start_run(
    experiment="sweep", experiment_file=None, config=cfg, config_hash=config_hash(cfg),
    group_hash=config_hash(cfg, include_seed=False), seed=cfg["seed"], task=cfg["task"], device="cpu",
    versions={}, git_commit=None))
"""


def test_the_dry_run_plan_shows_what_the_real_run_will_do_with_each_cell(tmp_path, tiny_bert_dir):
    """One answer (merx.sweep.cell_state) for the plan and the run: a completed cell is skipped, a
    cell whose newest run was interrupted or lost is resumed, a failed one and a new one run."""
    import json
    import subprocess
    import sys

    write(tmp_path / "base.toml", base_toml(tiny_bert_dir, tmp_path / "cache"))
    sweep = write(tmp_path / "sweep.toml", '''
        extends = "base.toml"
        [sweep]
        "model.fusion.name" = ["concat", "audio_attention", "cross_attention"]
    ''')
    plan = load_plan(str(sweep), seeds=2)
    db = tmp_path / "r.db"
    configs = [cfg for cell in plan.cells for cfg in cell.configs]
    # Each run recorded by a process that then ends, as a run does: "running" with no process
    # left reads as lost; the others are finished with their status.
    for cfg, status in zip(configs[:4], ["completed", "interrupted", "lost", "failed"], strict=True):
        done = subprocess.run([sys.executable, "-c", RECORD, str(db), json.dumps(cfg)], capture_output=True,
                              text=True, check=True)
        if status != "lost":
            RunStore(db).finish_run(int(done.stdout), status)
    out = invoke("run", sweep, "--db", db, "--seeds", "2", "--dry-run")
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if "model.fusion.name=" in line]
    states = [next((s for s in ("done as run1: skipped", "resume run2", "resume run3", "to run") if s in row), row)
              for row in rows]
    assert states == ["done as run1: skipped", "resume run2", "resume run3", "to run", "to run", "to run"], out.output
