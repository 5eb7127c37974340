"""A trained model, ready to predict: from a run's best checkpoint or from an exported folder.

Weights are loaded in ONE place, :func:`load_weights`, through ``merx.checkpoints.load_weights``:
a run's ``best.pt`` holds ``{"model", "best_epoch", "ref_power", "config", "frozen"}`` without a
frozen text tower's weights (they are the pretrained source's, rebuilt with the model); a
checkpoint written before merx stored them holds every weight and no ``ref_power``. Both load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from merx.errors import PredictError, RunError
from merx.pipeline import as_experiment

#: The plugin kinds that build the model; a run's data source and augmentations are training-only.
MODEL_KINDS = ("audio_towers", "text_towers", "fusions")


@dataclass
class TrainedModel:
    """A model in eval mode with everything needed to feed it as its run did."""

    cfg: dict                 # the run's resolved config
    exp: object               # merx.config.settings.Experiment of cfg
    model: object             # merx.models.bimodal.BimodalModel, eval mode, on ``device``
    device: object            # torch.device
    ref_power: float | None   # the dB reference power (None for a text-only model)
    best_epoch: int | None
    label: str                # "run12" or the folder: what messages name
    plugins: list[dict] = field(default_factory=list)  # the run's plugin provenance records
    warnings: list[str] = field(default_factory=list)
    run: dict = field(default_factory=dict)            # the run row (from the store) or the folder's record
    from_folder: bool = False

    @property
    def task(self) -> str:
        return self.exp.task

    @property
    def cache_dir(self) -> str:
        """Where prediction caches features by default: the run's cache, or for a model folder
        (whose recorded cache is a path on the machine it was trained on) merx's default."""
        if self.from_folder:
            from merx.config.schema import SCHEMA

            return SCHEMA["data"]["cache_dir"].default
        return self.exp.data.cache_dir


def load(source: str, db: str | None = None, strict: bool = False, device: str = "cpu") -> TrainedModel:
    """A model folder when ``source`` is a folder, else the run ``source`` (``12``, ``run12``) in ``db``."""
    if Path(source).is_dir():
        return load_from_folder(source, strict=strict, device=device)
    if os.sep in source or source.startswith((".", "~")) or Path(source).exists():
        raise PredictError(f"model folder {source} does not exist" if not Path(source).exists()
                           else f"{source} is a file, not a model folder",
                           hint="give a folder written by merx model export, or a run id (merx runs)")
    from merx.store import RunStore
    from merx.store.errors import InvalidRunId
    from merx.store.ids import parse_run_id

    try:
        run_id = parse_run_id(source)
    except InvalidRunId:
        raise PredictError(f"{source!r} is neither a model folder nor a run id",
                           hint="give a run id (run12, see merx runs) or a folder written by merx model export"
                           ) from None
    return load_from_run(RunStore(db), run_id, strict=strict, device=device)


# -- from a run -----------------------------------------------------------------------------

def load_from_run(store, run_id, strict: bool = False, device: str = "cpu") -> TrainedModel:
    """The run's model with its best weights. Refuses a run that did not complete, has no
    checkpoint, or whose checkpoint file is gone, saying how to get the weights back."""
    run = store.get_run(run_id)
    label = f"run{run['id']}"
    rerun = _rerun_hint(run)
    if run["status"] == "running":
        raise PredictError(f"{label} is still running; only a completed run has the weights it was tested with",
                           hint=f"predict once it has completed (merx show {label})")
    if run["status"] != "completed":
        why = f": {run['error']}" if run.get("error") else ""
        raise PredictError(f"{label} is {run['status']}{why}; only a completed run has the weights it was tested with",
                           hint=f"finish it with merx resume {label}, or {rerun}")
    path = run.get("checkpoint_path")
    if not path:
        raise PredictError(f"{label} recorded no checkpoint", hint=rerun)
    path = Path(path)
    if not path.is_file():
        raise PredictError(
            f"{label}'s checkpoint {path} is gone (moved or deleted)",
            hint=f"{rerun}; or merx resume {label} where the run folder was kept elsewhere; or predict "
                 "from a model folder exported earlier (merx model export RUN --model-dir DIR)")
    checkpoint = read_checkpoint(path, label)
    cfg = run["config"]
    warnings = check_plugins(run.get("plugins") or [], label, strict)
    exp = as_experiment(cfg)
    ref = reference_power(exp, checkpoint.get("ref_power"), label)
    model, dev = build_model(cfg, exp, device, label)
    load_weights(model, checkpoint, f"{label} ({path})")
    return TrainedModel(cfg, exp, model.eval(), dev, ref, checkpoint.get("best_epoch", run.get("best_epoch")),
                        label, run.get("plugins") or [], warnings, run)


def _rerun_hint(run: dict) -> str:
    seed = f" --set seed={run['seed']}" if run.get("seed") is not None else ""
    file = run.get("experiment_file")
    return (f"re-run it (merx run {file}{seed})" if file else "re-run its experiment with merx run") + \
        " and predict with the new run"


def read_checkpoint(path: Path, label: str) -> dict:
    """The checkpoint at ``path`` (``merx.checkpoints.load_checkpoint``: weights only, no pickled
    code runs), or a ``PredictError`` naming the run and how to get a usable model."""
    from merx.checkpoints import load_checkpoint

    try:
        return load_checkpoint(path)
    except RunError as exc:
        raise PredictError(f"{label}: {exc}",
                           hint="re-run the experiment, or predict from an exported model folder") from exc


def reference_power(exp, stored: float | None, label: str) -> float | None:
    """The dB reference the run's spectrograms were put on: ``features.ref_value`` for a fixed
    reference, the stored training maximum for ``train_max`` (it depends on the training songs,
    which prediction does not read)."""
    if not exp.model.uses_audio:
        return None
    if stored is not None:
        return float(stored)
    if exp.features.ref == "fixed":
        return float(exp.features.ref_value)
    raise PredictError(
        f"{label} was trained with features.ref = 'train_max', and its checkpoint does not hold that "
        "reference power (it was written before merx stored it), so new songs cannot be put on its dB scale",
        hint="re-run the experiment with this merx (its checkpoint then stores the reference power)")


# -- plugins and weights --------------------------------------------------------------------

def check_plugins(records: list[dict], label: str, strict: bool, requirements: list[dict] | None = None) -> list[str]:
    """Warnings for each model plugin whose installed version differs from the one the run used
    (errors with ``strict``); a ``PredictError`` for one that is not installed. ``requirements``
    are further distributions the model needs (e.g. the packaged MiniLM), as ``{"distribution",
    "version"}``."""
    from merx.hookspecs import KINDS
    from merx.plugins import UnknownPlugin, get_registry, provenance_label

    registry = get_registry()
    problems = []
    for record in records:
        if record.get("kind") not in MODEL_KINDS:
            continue
        spec = KINDS[record["kind"]]
        was = provenance_label(record)
        try:
            plugin = registry.get(record["kind"], record["name"])
        except UnknownPlugin:
            raise PredictError(f"{label} needs the {spec.label} {was}, which is not installed here",
                               hint=_install_hint(record)) from None
        now = plugin.provenance()
        if record.get("origin") == "distribution" and (now["origin"], now["source"], now["version"]) != (
                record["origin"], record["source"], record["version"]):
            problems.append(f"{label} was trained with the {spec.label} {was}; installed is "
                            f"{provenance_label(now)}, so its predictions may differ ({_install_hint(record)})")
    import importlib.metadata as md

    for req in requirements or []:
        try:
            have = md.version(req["distribution"])
        except md.PackageNotFoundError:
            raise PredictError(f"{label} needs {req['distribution']} {req['version']}, which is not installed",
                               hint=f"pip install '{req['distribution']}=={req['version']}'") from None
        if have != req["version"]:
            problems.append(f"{label} was trained with {req['distribution']} {req['version']}; installed is {have}, "
                            f"so its predictions may differ (pip install '{req['distribution']}=={req['version']}')")
    if problems and strict:
        raise PredictError("; ".join(problems), hint="install the versions named, or leave out --strict to "
                                                     "predict with what is installed")
    return problems


def _install_hint(record: dict) -> str:
    if record.get("origin") == "distribution":
        return f"pip install '{record['source']}=={record['version']}'"
    if record.get("origin") == "local file":
        return (f"put the plugin file {os.path.basename(record['source'])} into ./plugins or name its folder "
                "with --plugins-dir")
    return "install the merx version the run used"


def build_model(cfg: dict, exp, device: str, label: str):
    """The model the config describes, its text tower from its pretrained source."""
    from merx.devices import select_device
    from merx.pipeline import build
    from merx.plugins import get_registry

    dev = select_device(device)
    try:
        model = build(exp, get_registry())
    except OSError as exc:  # merx.models.text.TextModelUnavailable and friends: say whose model it is
        raise PredictError(f"{label}: {exc}", hint=getattr(exc, "hint", None)) from exc
    return model.to(dev), dev


def load_weights(model, checkpoint: dict, label: str) -> None:
    """Put a checkpoint's (or a model folder's) ``model`` weights into ``model`` with
    ``merx.checkpoints.load_weights``, the one loader: only frozen towers' keys may be missing
    (the model was built with them from their pretrained source), and a recorded frozen tower
    must be the one built."""
    from merx.checkpoints import load_weights as load
    from merx.errors import RunError

    try:
        load(model, checkpoint)
    except RunError as exc:
        raise PredictError(f"{label}: {exc}", hint="a plugin's code or the frozen text model changed since "
                                                   "training: install the versions the run used (merx show "
                                                   "RUN lists them)") from None


# -- from a folder --------------------------------------------------------------------------

def load_from_folder(folder, strict: bool = False, device: str = "cpu") -> TrainedModel:
    """The model a folder written by :func:`merx.inference.modeldir.export_model` holds."""
    from merx.inference.modeldir import checkpoint_of, read_folder

    folder = Path(folder).resolve()
    label = str(folder)
    manifest, cfg, state = read_folder(folder)
    warnings = check_plugins(manifest.get("plugins") or [], label, strict, manifest.get("requirements") or [])
    exp = as_experiment(cfg)
    model, dev = build_model(cfg, exp, device, label)
    load_weights(model, checkpoint_of(manifest, state), label)
    ref = manifest["features"].get("ref_power")
    return TrainedModel(cfg, exp, model.eval(), dev, None if ref is None else float(ref),
                        manifest["run"].get("best_epoch"), label, manifest.get("plugins") or [], warnings,
                        manifest["run"], from_folder=True)
