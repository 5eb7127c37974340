"""One experiment, end to end: data -> features -> model -> training -> evaluation -> store.

Each stage is a function so that ``merx prepare`` can run the first two alone and tests can
call any of them. Everything a run does is written to the results store as it happens, so a
crash or Ctrl-C keeps what was finished.

The entry points (``prepare``, ``build``, ``datasets``, ``dry_run``, ``run``) take the resolved
config dict, as the CLI and sweeps hold it, or an :class:`~merx.config.settings.Experiment`;
they convert once, and each stage below receives only its typed section."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from merx.checkpoints import disk_full_named
from merx.config.settings import Experiment
from merx.data.failures import empty_split_message
from merx.data.songs import Failure, SongTable
from merx.errors import DiskFull, RunError
from merx.interrupts import Terminated, sigterm_as_interrupt
from merx.provenance import git_commit, versions


def as_experiment(cfg: dict | Experiment) -> Experiment:
    """The typed experiment of a resolved config (an ``Experiment`` is returned as it is).

    A config stored by an older merx (a run resumed, a checkpoint predicted from) lacks the keys
    added since; ``resolve`` fills them with their defaults. The stored config itself stays as
    it was recorded."""
    if isinstance(cfg, Experiment):
        return cfg
    try:
        return Experiment.from_config(cfg)
    except KeyError:
        from merx.config import resolve

        return Experiment.from_config(resolve(cfg))


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


def load_songs(exp: Experiment, registry) -> SongTable:
    """The data source's songs, less those lacking what the model or the task needs (recorded)."""
    return _load_songs(exp, registry)[0]


def _load_songs(exp: Experiment, registry) -> tuple[SongTable, dict[str, str]]:
    """``load_songs``, and the split of every song the source returned (failures do not keep it)."""
    source = exp.data.source
    plugin = registry.get("data_sources", source.name)
    table = plugin.build(dict(source.settings), cache_dir=str(Path(exp.data.cache_dir) / "data")).load()
    split_of = {s.id: s.split for s in table.songs}
    # A modality the model needs but a song lacks is a per-song failure, not a crash mid-epoch.
    missing = []
    for s in table.songs:
        if exp.model.uses_audio and not s.audio_path:
            missing.append(Failure(s.id, "data", "no audio for this song (model.modalities needs audio)"))
        elif exp.model.uses_text and not (s.lyrics or "").strip():
            missing.append(Failure(s.id, "data", "no lyrics for this song (model.modalities needs lyrics)"))
        elif exp.task == "regression" and (s.valence is None or s.arousal is None):
            missing.append(Failure(s.id, "data", "no valence/arousal values (task = 'regression' needs them)"))
    if missing:
        table.drop(missing)
    return table, split_of


def build_augmentations(cfg: dict | Experiment, registry=None):
    """The run's ``merx.augment.plan.AugmentPlan``; a ``RunError`` naming the config key when an
    augmentation cannot be built (e.g. WordNet data missing), before any data is touched."""
    from merx.augment.plan import AugmentationError, build_plan

    exp = as_experiment(cfg)
    try:
        return build_plan(exp.augment, exp.features, registry)
    except AugmentationError as exc:
        raise RunError(str(exc)) from exc


def prepare(cfg: dict | Experiment, registry=None, progress: bool = True) -> Prepared:
    """Data and feature stages: songs, split check, cached mel spectrograms, dB reference, and
    the precomputed waveform-augmented variants of the training songs.

    SIGTERM stops it like Ctrl-C (feature workers are ended first); a full disk is a ``DiskFull``."""
    with sigterm_as_interrupt(), disk_full_named():
        return _prepare(as_experiment(cfg), registry, progress)


def _prepare(exp: Experiment, registry, progress: bool) -> Prepared:
    from merx.data.integrity import check_overlap
    from merx.plugins import get_registry

    registry = registry or get_registry()
    plan = build_augmentations(exp, registry)
    cache_dir, features = Path(exp.data.cache_dir), exp.features
    t0 = time.perf_counter()
    table, split_of = _load_songs(exp, registry)
    t_data = time.perf_counter() - t0
    warnings = check_overlap(table, exp.data.on_overlap)
    fs, ref = None, None
    t_feat = 0.0
    if exp.model.uses_audio:
        from merx.features.mel import extract_features, reference_power

        t1 = time.perf_counter()
        fs = extract_features(table.songs, features, cache_dir, workers=features.workers or None, progress=progress)
        t_feat = time.perf_counter() - t1
        table.drop(fs.failures)
        if table.split("train"):
            ref = reference_power(fs, features, [s.id for s in table.split("train")])
    for split in ("train", "validate", "test"):
        if not table.split(split):
            raise RunError(empty_split_message(split, table, split_of))
    variants, t_aug = None, 0.0
    if exp.model.uses_audio and plan.waveform and plan.strategy == "precompute":
        from merx.augment.variants import precompute_audio_variants

        t2 = time.perf_counter()
        variants = precompute_audio_variants(table.split("train"), plan.waveform, features, cache_dir, exp.seed,
                                             plan.variants, workers=features.workers, progress=progress)
        t_aug = time.perf_counter() - t2
    return Prepared(table, fs, ref, warnings, {"data_seconds": t_data, "feature_seconds": t_feat,
                                               "augment_seconds": t_aug}, plan, variants)


# -- model ----------------------------------------------------------------------------------

def build(cfg: dict | Experiment, registry, pretrained: bool = True):
    """The experiment's model (``merx.models.bimodal.BimodalModel``), every part from the registry."""
    from merx.features.crop import n_frames
    from merx.models.bimodal import build_model

    exp = as_experiment(cfg)
    return build_model(exp.model, registry, n_mels=exp.features.n_mels, n_frames=n_frames(exp.features),
                       out_dim=exp.out_dim, pretrained=pretrained)


def plugins_used(exp: Experiment, registry) -> list:
    """The registry plugins a run of ``exp`` uses, for its provenance."""
    model = exp.model
    used = [registry.get("data_sources", exp.data.source.name)]
    if model.uses_audio:
        used.append(registry.get("audio_towers", model.audio.name))
    if model.uses_text:
        used.append(registry.get("text_towers", model.text.name))
    if model.modalities == "both":
        used.append(registry.get("fusions", model.fusion.name))
    # Augmentations of a modality the model does not read are never applied, so not "used".
    for kind, items, modality in (("audio_augmentations", exp.augment.audio, model.uses_audio),
                                  ("text_augmentations", exp.augment.text, model.uses_text)):
        if modality:
            used += [registry.get(kind, item.name) for item in items]
    return used


# -- run ------------------------------------------------------------------------------------

def datasets(cfg: dict | Experiment, prepared: Prepared, model, device) -> dict:
    """``{"train", "validate", "test"}`` -> ``SongDataset``. Only "train" gets augmentations;
    validation and test read the clean features and lyrics exactly as without ``[augment]``."""
    from merx.dataset import SongDataset
    from merx.features.text import text_inputs, text_variant_inputs

    exp = as_experiment(cfg)
    table, plan, seed, features = prepared.table, prepared.augment, exp.seed, exp.features
    batch_size = max(exp.train.batch_size, 32)
    mel_view = train_view = None
    if exp.model.uses_audio:
        from merx.features.mel import MelView

        mel_view = MelView(prepared.features, features, prepared.ref_power)
        if plan is not None and plan.audio:
            from merx.augment.spectrograms import TrainingMelView

            train_view = TrainingMelView(mel_view, seed, features, plan.waveform, plan.spectrogram,
                                         plan.strategy, prepared.audio_variants,
                                         {s.id: s.audio_path for s in table.split("train")})
    out = {}
    for split in ("train", "validate", "test"):
        songs = table.split(split)
        variants = None
        if split == "train" and plan is not None and plan.text and exp.model.uses_text:
            from merx.augment.variants import text_variants

            texts = text_variants(songs, plan.text, seed, plan.variants)
            variants = text_variant_inputs(model, songs, texts, device, batch_size,
                                           cache_dir=Path(exp.data.cache_dir))
        text = {} if variants else text_inputs(model, songs, device, batch_size, cache_dir=Path(exp.data.cache_dir))
        out[split] = SongDataset(songs, exp.task, mel_view, text, train=split == "train", seed=seed,
                                 audio_augment=train_view if split == "train" else None,
                                 text_variants=variants)
    return out


def loaders(cfg: dict | Experiment, data: dict, device) -> tuple[dict, str]:
    """``{"train", "validate", "test"}`` -> the loader of each split's batches, and which path
    they take, in words. The one place that chooses: the feature bank
    (``merx.features.bank``: inputs loaded once, batched by index on the device) unless the
    training inputs need per-song work each epoch (waveform augmentation on the fly, text
    augmentation, a spectrogram augmentation plugin), which keeps the DataLoader path
    (``merx.dataset``) with its workers."""
    from merx.features.bank import bank_loaders, unsupported

    exp = as_experiment(cfg)
    train = exp.train
    why = unsupported(data["train"])
    if why is None:
        return bank_loaders(data, train.batch_size, exp.seed, device, train.data_on_device)
    from merx.dataset import make_loader
    from merx.devices import worker_init_fn

    return ({split: make_loader(dataset, train.batch_size, shuffle=split == "train", num_workers=train.num_workers,
                                seed=exp.seed, worker_init_fn=worker_init_fn) for split, dataset in data.items()},
            f"DataLoader ({train.num_workers} workers), for {why}")


@dataclass
class RunResult:
    run_id: int
    status: str
    test_metrics: dict
    baselines: dict
    best_epoch: int | None
    epochs_run: int


def run(cfg: dict, file: str | None, store, progress: bool = True, console=None) -> RunResult:
    """Train and evaluate one experiment, recording everything in ``store`` as it happens.

    ``cfg`` is the resolved config: what the run stores and hashes. Ctrl-C and SIGTERM record
    the run as ``interrupted`` with its finished epochs, then propagate as ``KeyboardInterrupt``
    (SIGTERM as its subclass ``merx.interrupts.Terminated``) carrying ``run_id``; an interrupt
    before the run was recorded (while preparing data and features) carries none. Where nothing
    handled SIGTERM before, the process then ends by it (``merx.interrupts.sigterm_as_interrupt``).
    A full disk fails the run with ``DiskFull``; checkpoints are written atomically, never
    left truncated. Every epoch ends with a checkpoint (``merx.checkpoints``) that
    :func:`resume` continues from."""
    return _guarded(cfg, lambda: _run(cfg, file, store, progress, console))


def resume(store, run_id: int | str, progress: bool = True, console=None) -> RunResult:
    """Continue an ``interrupted``, ``failed`` or ``lost`` run under its own id, from the
    checkpoint of its last finished epoch (from the start when it finished none): the remaining
    epochs see the data order and random draws of a run never stopped, so on a CPU the final
    weights and metrics are those of an uninterrupted run. Epochs recorded before the checkpoint
    are kept and the resumed run appends to them; any recorded after it (the process died between
    recording an epoch and writing its checkpoint) are trained again. Interrupts and failures
    are recorded as :func:`run` records them. A run that completed, or is still running, is a
    ``StoreError`` saying so."""
    from merx.store.runstore import check_resumable

    row = store.get_run(run_id)
    check_resumable(row)  # a clear refusal before any data is prepared; reopen_run checks again, atomically
    cfg = row["config"]
    return _guarded(cfg, lambda: _run(cfg, row["experiment_file"], store, progress, console, resume_id=row["id"]))


def _guarded(cfg: dict, body):
    from merx.devices import deterministic_algorithms

    # Deterministic algorithms from the start, not only for the fit: cuBLAS reads its workspace
    # setting at its first use, which the frozen text encoder makes before training.
    with sigterm_as_interrupt(), disk_full_named(), deterministic_algorithms(as_experiment(cfg).train.deterministic):
        return body()


def _run(cfg: dict, file: str | None, store, progress: bool, console, resume_id: int | None = None) -> RunResult:
    from merx.baselines import Targets, compute_baselines
    from merx.checkpoints import RunCheckpoints, disk_full, load_checkpoint, no_space, save_checkpoint
    from merx.config import config_hash
    from merx.plugins import get_registry
    from merx.store.folders import owns_run_folder
    from merx.store.liveness import Heartbeat
    from merx.train import Trainer, evaluate, seed_everything, select_device

    exp = as_experiment(cfg)
    registry = get_registry()
    train = exp.train
    device = select_device(train.device)
    seed_everything(exp.seed)
    prepared = prepare(exp, registry, progress=progress)
    table = prepared.table

    if resume_id is None:
        run_id = store.start_run(
            experiment=exp.name, experiment_file=str(file) if file else None, config=cfg,
            config_hash=config_hash(cfg), group_hash=config_hash(cfg, include_seed=False), seed=exp.seed,
            task=exp.task, device=str(device), versions=versions(), git_commit=git_commit(),
            description=exp.description, tags=list(exp.tags))
        before = None
    else:
        run_id = resume_id
        store.reopen_run(run_id)  # now this process's; refused when another took it first
        store.update_run(run_id, device=str(device))  # where it trains from now on
        before = store.get_run(run_id)
    epochs_done = {"n": 0}
    # Beating from the moment the run is this process's until it is closed: building the model,
    # encoding lyrics and filling the feature bank can outlast the timeout, and a run that does
    # not beat then is reported lost and could be resumed by a second process while this one trains.
    with Heartbeat(store, run_id) as heartbeat:
        try:
            folder = store.run_folder(run_id)  # merx.store.folders
            state = None
            if before is not None:
                files = {a["kind"]: Path(a["path"]) for a in before["artifacts"]}
                last = files.get("last", folder / "last.pt")
                state = load_checkpoint(last) if last.exists() else None
                if owns_run_folder(store, run_id, last.parent):
                    folder = last.parent  # where it wrote before, even if the runs root has moved since
                elif state is not None and files.get("best", Path()).is_file():
                    # A run copied from another database (merx db copy) lists that database's files:
                    # read them, never write there; its best weights come along into its own folder.
                    save_checkpoint(load_checkpoint(files["best"]), folder / "best.pt")
                    store.add_artifact(run_id, "best", folder / "best.pt")
                epochs_done["n"] = state["epoch"] if state else 0
                store.drop_epochs_after(run_id, epochs_done["n"])
                store.clear_results(run_id)
            if before is None or not before.get("plugins"):
                store.add_plugins(run_id, [p.provenance() for p in plugins_used(exp, registry)])
                if table.failures:
                    store.add_failures(run_id, [f.to_dict() for f in table.failures])
                store.add_data_notes(run_id, table.notes())
            if console is not None:
                from rich.markup import escape

                what = (f"resumed after epoch {epochs_done['n']} " if state else "resumed from the start ") \
                    if before is not None else ""
                console.print(f"[bold]run{run_id}[/bold] {what}{escape(exp.name)}: "
                              + ", ".join(f"{len(table.split(s))} {s}" for s in ("train", "validate", "test"))
                              + f" songs on {device}"
                              + (f"; [yellow]{len(table.failures)} failed[/yellow] (merx show run{run_id})"
                                 if table.failures else ""))
            seed_everything(exp.seed)
            model = build(exp, registry)
            data = datasets(exp, prepared, model, device)

            batches, path = loaders(exp, data, device)
            if console is not None:  # which way the batches come, as the README's design notes describe
                from rich.markup import escape

                console.print(f"[dim]inputs: {escape(path)}[/dim]")
            train_loader, val_loader, test_loader = batches["train"], batches["validate"], batches["test"]

            def on_epoch(epoch, metrics):
                store.add_epoch(run_id, epoch, metrics)
                epochs_done["n"] = epoch
                heartbeat.beat()

            listed: set[str] = set()

            def on_write(kind, path):
                # Listed once, when first written: every file a run writes is in its artifacts.
                if str(path) in listed:
                    return
                store.add_artifact(run_id, kind, path)
                if kind == "best":  # a lost or failed run already names its best weights
                    store.update_run(run_id, checkpoint_path=str(path))
                listed.add(str(path))

            ref_power = None if prepared.ref_power is None else float(prepared.ref_power)
            checkpoints = RunCheckpoints(folder, extra={"ref_power": ref_power, "config": cfg}, on_write=on_write)
            trainer = Trainer(model, train_loader, val_loader, train, exp.task, device, on_epoch=on_epoch,
                              progress=progress, checkpoints=checkpoints)
            if state is not None:
                trainer.load_state_dict(state)
                del state
            fit = trainer.fit()
            if fit.notes:  # e.g. no epoch had a finite monitored value: kept with the run, and said
                store.update_run(run_id, note="; ".join(fit.notes))
                if console is not None:
                    from rich.text import Text

                    console.print(Text.assemble(("warning: ", "yellow"), "; ".join(fit.notes)))
            if fit.best_epoch is None:  # no best epoch: the weights tested are the last epoch's
                checkpoints.save_best(model, None)
            ckpt = checkpoints.best
            store.update_run(run_id, checkpoint_path=str(ckpt), best_epoch=fit.best_epoch, epochs_run=fit.epochs_run)

            test_metrics, predictions = evaluate(model, test_loader, exp.task, device)
            val_metrics, _ = evaluate(model, val_loader, exp.task, device)
            store.add_metrics(run_id, "test", test_metrics)
            store.add_metrics(run_id, "validate", val_metrics)
            store.add_predictions(run_id, [{**p, "split": "test"} for p in predictions])

            baselines = compute_baselines(Targets.from_songs(table.split("train")),
                                          Targets.from_songs(table.split("test")), exp.task, exp.seed)
            for name, metrics in baselines.items():
                store.add_baselines(run_id, name, metrics)
            store.finish_run(run_id, "completed", best_epoch=fit.best_epoch, epochs_run=fit.epochs_run,
                             checkpoint_path=str(ckpt))
            return RunResult(run_id, "completed", test_metrics, baselines, fit.best_epoch, fit.epochs_run)
        except KeyboardInterrupt as exc:
            why = ("stopped by SIGTERM (timeout, a scheduler, docker stop)" if isinstance(exc, Terminated)
                   else "interrupted by the user (Ctrl-C)")
            if _record_end(store, run_id, "interrupted", why, epochs_done["n"]):
                exc.run_id = run_id  # the CLI says "recorded as interrupted" only then
            raise
        except BaseException as exc:
            full = None if isinstance(exc, DiskFull) else no_space(exc)
            if full is not None:
                failure = disk_full(full)
                _record_end(store, run_id, "failed", f"{type(failure).__name__}: {failure}", epochs_done["n"])
                raise failure from exc
            _record_end(store, run_id, "failed", f"{type(exc).__name__}: {exc}", epochs_done["n"])
            raise


def _record_end(store, run_id: int, status: str, error: str, epochs_run: int) -> bool:
    """``finish_run``, unless the database itself fails (full, locked): then the error that ended
    the run is what the user must see, and this one is only a warning. Whether it was recorded."""
    try:
        store.finish_run(run_id, status, error=error, epochs_run=epochs_run)
    except Exception as exc:
        print(f"warning: run{run_id} could not be recorded as {status!r}: {exc}", file=sys.stderr)
        return False
    return True
