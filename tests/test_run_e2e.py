"""End-to-end runs through the CLI: real synthetic audio, a real (tiny) BERT, real SQLite."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore

from tiny_experiment import tiny_toml

REPO = Path(__file__).resolve().parents[1]


def write_exp(tmp_path, bert_dir, name="tiny.toml", epochs=2) -> Path:
    """A whole experiment that trains in seconds (tests/tiny_experiment.py), cached in ./.merx."""
    path = tmp_path / name
    path.write_text(tiny_toml(bert_dir, Path.cwd() / ".merx" / "cache", epochs=epochs))
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_run_records_everything_and_runs_show_display_it(tmp_path, tiny_bert_dir):
    exp = write_exp(tmp_path, tiny_bert_dir)
    result = invoke("run", exp)
    assert result.exit_code == 0, result.output
    assert "run1" in result.stdout and "majority" in result.stdout

    run = RunStore("results.db").get_run(1)
    assert run["status"] == "completed" and run["experiment"] == "tiny"
    assert sorted(run["epochs"]) == [1, 2]
    assert {"train_loss", "val_loss", "val_macro_f1", "grad_norm_pre_clip", "lr_audio"} <= set(run["epochs"][1])
    assert {"accuracy", "macro_f1"} <= set(run["metrics"]["test"])
    assert {"majority", "random"} <= set(run["baselines"])
    assert {"python", "merx", "torch", "transformers", "librosa"} <= set(run["versions"])
    assert {p["name"] for p in run["plugins"]} == {"synthetic", "vggish", "huggingface", "concat"}
    assert run["config"]["model"]["text"]["model"] == tiny_bert_dir
    # Beside the database, in a folder of its own (its name and a hash of where it is): not
    # relative to where merx was started, never shared with another database.
    folder = Path(run["checkpoint_path"]).parent
    assert folder == RunStore("results.db").run_folder(1) and folder.name == "run1"
    assert folder.parent.parent == Path("results.db").resolve().parent / "runs"
    assert folder.parent.name.startswith("results-")
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]
    assert sorted((a["kind"], a["path"]) for a in run["artifacts"]) == [("best", str(folder / "best.pt")),
                                                                       ("last", str(folder / "last.pt"))]
    preds = RunStore("results.db").get_predictions(1)
    n_test = len([p for p in preds if p["split"] == "test"])
    assert n_test == run["prediction_count"] and n_test > 0
    assert all(p["pred_quadrant"] in {"Q1", "Q2", "Q3", "Q4"} and len(p["probs"]) == 4 for p in preds)

    listing = invoke("runs", "--json")
    assert json.loads(listing.stdout)[0]["id"] == 1
    shown = invoke("show", "run1")
    assert shown.exit_code == 0
    assert "learning curve" in shown.stdout and "[train.lr]" in shown.stdout and "majority" in shown.stdout
    missing = CliRunner().invoke(cli, ["show", "run99"])
    assert missing.exit_code == 2 and "run99" in missing.stderr


def test_regression_run_reports_implied_quadrants_and_all_baselines(tmp_path, tiny_bert_dir):
    exp = write_exp(tmp_path, tiny_bert_dir, epochs=1)
    result = invoke("run", exp, "--set", "task=regression", "--set", "model.modalities=audio")
    assert result.exit_code == 0, result.output
    run = RunStore("results.db").get_run(1)
    assert {"valence_mae", "arousal_r2", "valence_ccc", "quadrant_macro_f1"} <= set(run["metrics"]["test"])
    assert set(run["baselines"]) == {"mean", "quadrant_centre", "random", "majority"}
    assert {p["name"] for p in run["plugins"]} == {"synthetic", "vggish"}


COUNTING_TOWER = '''
from merx import hookimpl

ROWS = []   # batch sizes seen by the encoder

@hookimpl
def register_text_towers(register):
    register("counting", counting)

def counting(model: str = "minilm", freeze: bool = True, max_length: int = 32):
    """The huggingface tower, counting the songs its encoder sees."""
    from merx.models.text import HuggingFaceTower
    tower = HuggingFaceTower(model=model, freeze=freeze, max_length=max_length)
    tower.encoder.register_forward_hook(lambda mod, args, kwargs, out: ROWS.append(kwargs["input_ids"].shape[0]),
                                        with_kwargs=True)
    return tower
'''


def test_frozen_encoder_runs_once_per_song_not_once_per_batch(tmp_path, tiny_bert_dir):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "counting.py").write_text(COUNTING_TOWER)
    exp = write_exp(tmp_path, tiny_bert_dir, epochs=3)
    result = invoke("run", exp, "--set", "model.text.name=counting", "--set", f"model.text.model={tiny_bert_dir}")
    assert result.exit_code == 0, result.output
    rows = sys.modules["merx_local_plugins.counting"].ROWS
    run = RunStore("results.db").get_run(1)
    assert run["epochs_run"] == 3
    assert sum(rows) == 24  # every song once, over 3 epochs of training and 2 evaluations


def test_dry_run_prints_parameter_counts_without_data(tmp_path, tiny_bert_dir):
    exp = write_exp(tmp_path, tiny_bert_dir)
    result = CliRunner().invoke(cli, ["run", str(exp), "--dry-run"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "VGGishTower" in result.stdout and "total" in result.stdout
    assert not Path("results.db").exists() and not (tmp_path / ".merx").exists()


def _counts(result):
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 4 and cells[2].replace(",", "").isdigit():
            rows[cells[0]] = (int(cells[2].replace(",", "")), int(cells[3].replace(",", "")))
    return rows


def conv_block(cin, cout, convs):
    total = 0
    for i in range(convs):
        c_in = cin if i == 0 else cout
        total += 9 * c_in * cout + cout + 2 * cout  # conv weight + bias, BatchNorm scale + shift
    return total


def notebook_audio_params(convs: int, gate: bool) -> int:
    chans = [1, 64, 128, 256, 512]
    total = sum(conv_block(chans[i], chans[i + 1], convs) for i in range(4))
    total += 512 * 256 + 256 + 256 * 64 + 64             # Linear 512->256, Linear 256->64
    if gate:
        total += 256 * 64 + 64 + 64 * 256 + 256           # gate on the 256-d hidden vector
    return total


BERT_BASE = 109_482_240  # bert-base-uncased BertModel, pooler included
HEAD = 832 * 100 + 100 + 100 * 2 + 2


@pytest.mark.parametrize("n, convs, gate, text_trainable", [
    (2, 1, False, 0), (3, 1, True, 0), (4, 2, True, 0), (5, 1, True, BERT_BASE)])
def test_notebook_models_have_the_notebooks_parameter_counts(n, convs, gate, text_trainable):
    result = CliRunner().invoke(cli, ["run", str(REPO / "experiments" / f"model{n}.toml"), "--dry-run"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    counts = _counts(result)
    audio = notebook_audio_params(convs, gate)
    assert counts["audio"] == (audio, audio)
    assert counts["text"] == (BERT_BASE, text_trainable)
    assert counts["fusion"] == (0, 0)
    assert counts["head"] == (HEAD, HEAD)


def _merx(args, cwd, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "merx.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for_epoch(db, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("select count(*) from epochs").fetchone()[0] > 0:
                        return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    raise AssertionError("no epoch was recorded in time")


def test_ctrl_c_records_the_run_as_interrupted_with_its_epochs(tmp_path, tiny_bert_dir):
    exp = write_exp(tmp_path, tiny_bert_dir, epochs=500)
    proc = _merx(["run", exp], tmp_path)
    _wait_for_epoch(tmp_path / "results.db")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    run = RunStore(tmp_path / "results.db").get_run(1)
    assert run["status"] == "interrupted" and run["ended_at"]
    assert len(run["epochs"]) >= 1 and run["epochs_run"] == len(run["epochs"])


def test_sigterm_records_the_run_as_interrupted_and_exits_143(tmp_path, tiny_bert_dir):
    """What `timeout`, Slurm and `docker stop` send: handled as Ctrl-C is, with the shell's 128 + 15."""
    exp = write_exp(tmp_path, tiny_bert_dir, epochs=500)
    proc = _merx(["run", exp], tmp_path)
    _wait_for_epoch(tmp_path / "results.db")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "interrupted by SIGTERM: run1 is recorded as 'interrupted'" in out and "Traceback" not in out
    run = RunStore(tmp_path / "results.db").get_run(1)
    assert run["status"] == "interrupted" and run["ended_at"] and "SIGTERM" in run["error"]
    assert len(run["epochs"]) >= 1 and run["epochs_run"] == len(run["epochs"])


def test_two_runs_writing_one_database_at_once_both_land(tmp_path, tiny_bert_dir):
    exp = write_exp(tmp_path, tiny_bert_dir, epochs=3)
    # Generate the data and features once, so both processes train at the same time.
    assert invoke("prepare", exp).exit_code == 0
    procs = [_merx(["run", exp, "--set", f"seed={s}"], tmp_path) for s in (1, 2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for seed, out in zip((1, 2), outs, strict=True):
        print(f"--- merx run, seed {seed}:\n{out}")  # whole, in the report of a failure (an assert's is cut)
    assert [p.returncode for p in procs] == [0, 0]
    store = RunStore(tmp_path / "results.db")
    runs = store.list_runs()
    assert sorted(r["seed"] for r in runs) == [1, 2]
    for r in runs:
        full = store.get_run(r["id"])
        assert full["status"] == "completed" and sorted(full["epochs"]) == [1, 2, 3]


NAN_FUSION = '''
from merx import hookimpl

@hookimpl
def register_fusions(register):
    register("nan_fusion", make)

def make(audio_dim, text_dim):
    """Concatenation that turns to NaN while training (to test divergence handling)."""
    import torch

    class NanFusion(torch.nn.Module):
        out_dim = audio_dim + text_dim
        needs_sequence = False
        def forward(self, audio, text):
            x = torch.cat([audio.pooled, text.pooled], dim=1)
            return x * float("nan") if self.training else x
    return NanFusion()
'''


def test_nan_loss_fails_the_run_with_a_clear_message_and_keeps_it(tmp_path, tiny_bert_dir):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "nanfusion.py").write_text(NAN_FUSION)
    exp = write_exp(tmp_path, tiny_bert_dir)
    result = CliRunner().invoke(cli, ["run", str(exp), "--set", "model.fusion.name=nan_fusion"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "grad_clip" in result.stderr
    run = RunStore("results.db").get_run(1)
    assert run["status"] == "failed" and "TrainingDiverged" in run["error"]


def test_missing_merge_folder_names_the_fix(tmp_path):
    exp = tmp_path / "m.toml"
    exp.write_text('[data.source]\nname = "merge"\nroot = "nowhere/MERGE_Bimodal_Complete"\n')
    result = CliRunner().invoke(cli, ["prepare", str(exp)])
    assert result.exit_code == 2
    assert "zenodo.org/records/13939205" in result.stderr and "data.source.root" in result.stderr


def test_unavailable_hub_model_fails_with_the_fix_and_no_traceback(tmp_path, tiny_bert_dir):
    exp = write_exp(tmp_path, tiny_bert_dir)
    result = CliRunner().invoke(cli, ["run", str(exp), "--set", "model.text.model=no-such-org/no-such-model"])
    assert result.exit_code == 2, result.output
    assert "model.text" in result.stderr and "downloaded once" in result.stderr
    assert "Traceback" not in result.output
    assert RunStore("results.db").get_run(1)["status"] == "failed"


def test_plugin_returning_a_non_module_is_a_config_error_naming_it(tmp_path, tiny_bert_dir):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bad.py").write_text(
        "from merx import hookimpl\n@hookimpl\ndef register_fusions(register):\n"
        "    register('not_a_module', lambda audio_dim, text_dim: 42)\n")
    exp = write_exp(tmp_path, tiny_bert_dir)
    result = CliRunner().invoke(cli, ["run", str(exp), "--dry-run", "--set", "model.fusion.name=not_a_module"])
    assert result.exit_code == 2
    assert "fusion 'not_a_module'" in result.stderr and "bad.py" in result.stderr and "nn.Module" in result.stderr



LOPSIDED_FUSION = '''
from merx import hookimpl

@hookimpl
def register_fusions(register):
    register("lopsided", lopsided)
    register("crashing", crashing)

def lopsided(audio_dim, text_dim):
    """Concatenation that loses a column: narrower than the out_dim it declares."""
    import torch

    class Lopsided(torch.nn.Module):
        out_dim = audio_dim + text_dim
        needs_sequence = False
        def forward(self, audio, text):
            return torch.cat([audio.pooled, text.pooled], dim=1)[:, 1:]
    return Lopsided()

def crashing(audio_dim, text_dim):
    """A fusion whose forward multiplies matrices that do not fit."""
    import torch

    class Crashing(torch.nn.Module):
        out_dim = audio_dim
        needs_sequence = False
        def forward(self, audio, text):
            return audio.pooled @ text.pooled
    return Crashing()
'''


def _write_plugin(tmp_path, name, code) -> Path:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    path = tmp_path / "plugins" / name
    path.write_text(code)
    return path


def test_a_fusion_returning_the_wrong_shape_fails_the_run_with_one_message_naming_it(tmp_path, tiny_bert_dir):
    plugin = _write_plugin(tmp_path, "lopsided.py", LOPSIDED_FUSION)
    exp = write_exp(tmp_path, tiny_bert_dir)
    result = CliRunner().invoke(cli, ["run", str(exp), "--set", "model.fusion.name=lopsided"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "fusion 'lopsided'" in errors[0] and f"(local: {plugin})" in errors[0]
    assert "returned shape [8, 39]" in errors[0] and "[batch, out_dim] = [8, 40]" in errors[0]
    assert "merx plugin check fusion lopsided" in errors[0]
    run = RunStore("results.db").get_run(1)
    assert run["status"] == "failed" and "fusion 'lopsided'" in run["error"] and "PluginRuntimeError" in run["error"]


def test_dry_run_runs_one_forward_pass_and_names_a_plugin_that_fails_in_it(tmp_path, tiny_bert_dir):
    from merx.config import load
    from merx.dry_run import dry_run
    from merx.errors import PluginRuntimeError

    plugin = _write_plugin(tmp_path, "lopsided.py", LOPSIDED_FUSION)
    exp = write_exp(tmp_path, tiny_bert_dir)
    rows = dry_run(load(exp))
    assert [r.part for r in rows] == ["audio", "text", "fusion", "head", "total"]
    with pytest.raises(PluginRuntimeError) as info:
        dry_run(load(exp, ["model.fusion.name=lopsided"]))
    message = str(info.value)
    assert "fusion 'lopsided'" in message and str(plugin) in message and "returned shape [2, 39]" in message
    assert "merx plugin check fusion lopsided" in message and info.value.exit_code == 1
    with pytest.raises(PluginRuntimeError, match=r"fusion 'crashing' \(local: .*\) failed in its forward: "
                                                 r"RuntimeError: .*merx plugin check fusion crashing"):
        dry_run(load(exp, ["model.fusion.name=crashing"]))
    # No data was read and nothing recorded: the forward pass ran on a generated batch.
    assert not Path("results.db").exists() and not (tmp_path / ".merx").exists()
