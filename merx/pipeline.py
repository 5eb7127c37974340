"""One experiment, end to end: data -> features -> model -> training -> evaluation -> store.

Each stage is a function so that ``merx prepare`` can run the first two alone and tests can
call any of them. Everything a run does is written to the results store as it happens, so a
crash or Ctrl-C keeps what was finished."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from merx.data.songs import QUADRANTS, Failure, SongTable


from merx.errors import RunError  # noqa: E402,F401


@dataclass
class Prepared:
    """The outcome of the data and feature stages."""

    table: SongTable
    features: object | None  # merx.features FeatureSet, None when audio is not used
    ref_power: float | None
    overlap_warnings: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    augment: object | None = None  # merx.augment.plan.AugmentPlan (training-only augmentations)
    audio_variants: object | None = None  # merx.augment.variants.AudioVariants, when precomputed


def uses_audio(cfg) -> bool:
    return cfg["model"]["modalities"] in ("both", "audio")


def uses_text(cfg) -> bool:
    return cfg["model"]["modalities"] in ("both", "text")


def _settings(table: dict) -> dict:
    return {k: v for k, v in table.items() if k not in ("name", "p")}


def load_songs(cfg, registry) -> SongTable:
    plugin = registry.get("data_sources", cfg["data"]["source"]["name"])
    cache_dir = Path(cfg["data"]["cache_dir"])
    source = plugin.build(_settings(cfg["data"]["source"]), cache_dir=str(cache_dir / "data"))
    table = source.load()
    # A modality the model needs but a song lacks is a per-song failure, not a crash mid-epoch.
    missing = []
    for s in table.songs:
        if uses_audio(cfg) and not s.audio_path:
            missing.append(Failure(s.id, "data", "no audio for this song (model.modalities needs audio)"))
        elif uses_text(cfg) and not (s.lyrics or "").strip():
            missing.append(Failure(s.id, "data", "no lyrics for this song (model.modalities needs lyrics)"))
        elif cfg["task"] == "regression" and (s.valence is None or s.arousal is None):
            missing.append(Failure(s.id, "data", "no valence/arousal values (task = 'regression' needs them)"))
    if missing:
        table.drop(missing)
    return table


def build_augmentations(cfg, registry=None):
    """The run's ``merx.augment.plan.AugmentPlan``; a ``RunError`` naming the config key when an
    augmentation cannot be built (e.g. WordNet data missing), before any data is touched."""
    from merx.augment.plan import AugmentationError, build_plan

    try:
        return build_plan(cfg, registry)
    except AugmentationError as exc:
        raise RunError(str(exc)) from exc


def prepare(cfg, registry=None, progress: bool = True) -> Prepared:
    """Data and feature stages: songs, split check, cached mel spectrograms, dB reference, and
    the precomputed waveform-augmented variants of the training songs."""
    from merx.data.integrity import check_overlap
    from merx.plugins import get_registry

    registry = registry or get_registry()
    plan = build_augmentations(cfg, registry)
    t0 = time.perf_counter()
    table = load_songs(cfg, registry)
    t_data = time.perf_counter() - t0
    warnings = check_overlap(table, cfg["data"]["on_overlap"])
    fs, ref = None, None
    t_feat = 0.0
    if uses_audio(cfg):
        from merx.features.mel import extract_features, reference_power

        t1 = time.perf_counter()
        workers = cfg["features"]["workers"] or None
        fs = extract_features(table.songs, cfg["features"], Path(cfg["data"]["cache_dir"]), workers=workers,
                              progress=progress)
        t_feat = time.perf_counter() - t1
        table.drop(fs.failures)
        ref = reference_power(fs, cfg["features"], [s.id for s in table.split("train")])
    for split in ("train", "validate", "test"):
        if not table.split(split):
            raise RunError(f"no usable songs in the {split!r} split "
                           f"({len(table.failures)} failures; see `merx prepare` for the reasons)")
    variants, t_aug = None, 0.0
    if uses_audio(cfg) and plan.waveform and plan.strategy == "precompute":
        from merx.augment.variants import precompute_audio_variants

        t2 = time.perf_counter()
        variants = precompute_audio_variants(table.split("train"), plan.waveform, cfg["features"],
                                             Path(cfg["data"]["cache_dir"]), cfg["seed"], plan.variants,
                                             workers=cfg["features"]["workers"], progress=progress)
        t_aug = time.perf_counter() - t2
    return Prepared(table, fs, ref, warnings, {"data_seconds": t_data, "feature_seconds": t_feat,
                                               "augment_seconds": t_aug}, plan, variants)


# -- run ------------------------------------------------------------------------------------

def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("merx", "torch", "transformers", "tokenizers", "librosa", "numpy", "soundfile",
                 "audiomentations", "nlpaug", "sqlalchemy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def out_dim(cfg) -> int:
    return len(QUADRANTS) if cfg["task"] == "classification" else 2


def build(cfg, registry, pretrained: bool = True):
    from merx.features.mel import n_frames
    from merx.models.bimodal import build_model

    return build_model(cfg, registry, n_mels=cfg["features"]["n_mels"], n_frames=n_frames(cfg["features"]),
                       out_dim=out_dim(cfg), pretrained=pretrained)


def plugins_used(cfg, registry) -> list:
    used = [registry.get("data_sources", cfg["data"]["source"]["name"])]
    if uses_audio(cfg):
        used.append(registry.get("audio_towers", cfg["model"]["audio"]["name"]))
    if uses_text(cfg):
        used.append(registry.get("text_towers", cfg["model"]["text"]["name"]))
    if cfg["model"]["modalities"] == "both":
        used.append(registry.get("fusions", cfg["model"]["fusion"]["name"]))
    # Augmentations of a modality the model does not read are never applied, so not "used".
    for kind, items, modality in (("audio_augmentations", cfg["augment"]["audio"], uses_audio(cfg)),
                                  ("text_augmentations", cfg["augment"]["text"], uses_text(cfg))):
        if modality:
            used += [registry.get(kind, item["name"]) for item in items]
    return used


def encode_texts(model, texts: list[str], device, batch_size: int, cache_dir=None) -> dict:
    """Text tensors for ``texts``: a frozen tower's outputs computed once, else tokens."""
    tower = getattr(model, "text_tower", None)
    if tower is None:
        return {}
    if tower.frozen:
        from merx.models.text import encode_frozen

        out = encode_frozen(tower, texts, batch_size=batch_size, keep_sequence=model.needs_text_sequence,
                            device=device, cache_dir=cache_dir)
        return {"text_pooled": out.pooled, "text_sequence": out.sequence, "text_mask": out.mask}
    tokens = tower.tokenize(texts)
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def text_inputs(model, songs, device, batch_size: int) -> dict:
    """Per-song text tensors: a frozen tower's outputs computed once, else tokens."""
    return encode_texts(model, [s.lyrics or "" for s in songs], device, batch_size)


def text_variant_inputs(model, songs, texts_by_variant: list[list[str]], device, batch_size: int,
                        cache_dir=None) -> list[dict]:
    """``text_inputs`` for each lyrics variant (``texts_by_variant[v][i]``), one dict per variant.

    All variants are encoded in one call, so token sequences share one padded length and any
    two variants batch together. A frozen tower's outputs go to its disk cache under
    ``cache_dir`` (per distinct text), so a rerun does not encode them again."""
    if getattr(model, "text_tower", None) is None:
        return []
    n = len(songs)
    flat = [text for texts in texts_by_variant for text in texts]
    encoded = encode_texts(model, flat, device, batch_size, cache_dir=cache_dir)
    return [{k: (None if t is None else t[v * n:(v + 1) * n]) for k, t in encoded.items()}
            for v in range(len(texts_by_variant))]


def datasets(cfg, prepared: Prepared, model, device) -> dict:
    """``{"train", "validate", "test"}`` -> ``SongDataset``. Only "train" gets augmentations;
    validation and test read the clean features and lyrics exactly as without ``[augment]``."""
    from merx.dataset import SongDataset

    table, plan, seed = prepared.table, prepared.augment, cfg["seed"]
    batch_size = max(cfg["train"]["batch_size"], 32)
    mel_view = train_view = None
    if uses_audio(cfg):
        from merx.features.mel import MelView

        mel_view = MelView(prepared.features, cfg["features"], prepared.ref_power)
        if plan is not None and plan.audio:
            from merx.augment.spectrograms import TrainingMelView

            train_view = TrainingMelView(mel_view, seed, cfg["features"], plan.waveform, plan.spectrogram,
                                         plan.strategy, prepared.audio_variants,
                                         {s.id: s.audio_path for s in table.split("train")})
    out = {}
    for split in ("train", "validate", "test"):
        songs = table.split(split)
        variants = None
        if split == "train" and plan is not None and plan.text and uses_text(cfg):
            from merx.augment.variants import text_variants

            texts = text_variants(songs, plan.text, seed, plan.variants)
            variants = text_variant_inputs(model, songs, texts, device, batch_size,
                                           cache_dir=Path(cfg["data"]["cache_dir"]))
        text = {} if variants else text_inputs(model, songs, device, batch_size)
        out[split] = SongDataset(songs, cfg["task"], mel_view, text, train=split == "train", seed=seed,
                                 audio_augment=train_view if split == "train" else None,
                                 text_variants=variants)
    return out


@dataclass
class RunResult:
    run_id: int
    status: str
    test_metrics: dict
    baselines: dict
    best_epoch: int | None
    epochs_run: int


def run(cfg, file: str | None, store, progress: bool = True, console=None) -> RunResult:
    """Train and evaluate one experiment, recording everything in ``store`` as it happens."""
    import numpy as np
    import torch

    from merx.baselines import compute_baselines
    from merx.config import config_hash
    from merx.dataset import make_loader
    from merx.plugins import get_registry
    from merx.train import Trainer, evaluate, seed_everything, select_device, worker_init_fn

    registry = get_registry()
    tcfg = cfg["train"]
    device = select_device(tcfg["device"])
    seed_everything(cfg["seed"])
    prepared = prepare(cfg, registry, progress=progress)
    table = prepared.table

    run_id = store.start_run(
        experiment=cfg["name"], experiment_file=str(file) if file else None, config=cfg,
        config_hash=config_hash(cfg), group_hash=config_hash(cfg, include_seed=False), seed=cfg["seed"],
        task=cfg["task"], device=str(device), versions=versions(), git_commit=git_commit(),
        description=cfg["description"], tags=cfg["tags"])
    started = time.perf_counter()
    epochs_done = {"n": 0}
    try:
        store.add_plugins(run_id, [p.provenance() for p in plugins_used(cfg, registry)])
        if table.failures:
            store.add_failures(run_id, [f.to_dict() for f in table.failures])
        if console is not None:
            console.print(f"[bold]run{run_id}[/bold] {cfg['name']}: "
                          + ", ".join(f"{len(table.split(s))} {s}" for s in ("train", "validate", "test"))
                          + f" songs on {device}"
                          + (f"; [yellow]{len(table.failures)} failed[/yellow] (merx show run{run_id})"
                             if table.failures else ""))
        seed_everything(cfg["seed"])
        model = build(cfg, registry)
        data = datasets(cfg, prepared, model, device)

        def loader(split):
            return make_loader(data[split], tcfg["batch_size"], shuffle=split == "train",
                               num_workers=tcfg["num_workers"], seed=cfg["seed"], worker_init_fn=worker_init_fn)

        train_loader, val_loader, test_loader = loader("train"), loader("validate"), loader("test")

        def on_epoch(epoch, metrics):
            store.add_epoch(run_id, epoch, metrics)
            epochs_done["n"] = epoch

        trainer = Trainer(model, train_loader, val_loader, tcfg, cfg["task"], device, on_epoch=on_epoch,
                          progress=progress)
        fit = trainer.fit()
        ckpt = Path("runs") / f"run{run_id}" / "best.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "config": cfg, "best_epoch": fit.best_epoch}, ckpt)
        store.update_run(run_id, checkpoint_path=str(ckpt), best_epoch=fit.best_epoch, epochs_run=fit.epochs_run)

        test_metrics, predictions = evaluate(model, test_loader, cfg["task"], device)
        val_metrics, _ = evaluate(model, val_loader, cfg["task"], device)
        store.add_metrics(run_id, "test", test_metrics)
        store.add_metrics(run_id, "validate", val_metrics)
        store.add_predictions(run_id, [{**p, "split": "test"} for p in predictions])

        def targets(songs):
            va = np.array([[s.valence if s.valence is not None else np.nan,
                            s.arousal if s.arousal is not None else np.nan] for s in songs], dtype=float)
            q = np.array([QUADRANTS.index(s.quadrant) for s in songs])
            return va, q

        baselines = compute_baselines(targets(table.split("train")), targets(table.split("test")), cfg["task"],
                                      cfg["seed"])
        for name, metrics in baselines.items():
            store.add_baselines(run_id, name, metrics)
        store.finish_run(run_id, "completed", best_epoch=fit.best_epoch, epochs_run=fit.epochs_run,
                         checkpoint_path=str(ckpt))
        return RunResult(run_id, "completed", test_metrics, baselines, fit.best_epoch, fit.epochs_run)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", error="interrupted by the user (Ctrl-C)",
                         epochs_run=epochs_done["n"])
        raise
    except BaseException as exc:
        store.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}", epochs_run=epochs_done["n"])
        raise
