"""What an experiment file may hold: every key, its type, default and help, in one table.

``SCHEMA`` is read by validation (``merx.config.load``), by the typed settings
(``merx.config.settings``, whose defaults come from here) and by :func:`schema_markdown`,
which writes the README's config reference (``python -m merx.config``), so the three cannot drift.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from typing import Any

#: A bound's word in messages and in the README, and its test.
_BOUNDS = {"gt": (">", operator.gt), "ge": ("≥", operator.ge), "lt": ("<", operator.lt), "le": ("≤", operator.le)}
_MIRROR = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


@dataclass
class F:
    """One setting: its type(s), default, help, and the range a number must lie in.

    ``gt``/``ge``/``lt``/``le`` bound a number (``ge=0``: at least 0); a bound may also name a
    setting of the same table (``le="n_fft"``). For a list, ``items`` is each item's type and
    the bounds apply to each item. The bounds are checked when a config is resolved, before any
    work, and :func:`schema_markdown` prints them, so this is the one place that states them."""

    type: Any
    default: Any
    help: str = ""
    choices: tuple | None = None
    gt: float | str | None = None
    ge: float | str | None = None
    lt: float | str | None = None
    le: float | str | None = None
    items: Any = None

    def bounds(self) -> list[tuple[str, float | str]]:
        return [(op, getattr(self, op)) for op in _BOUNDS if getattr(self, op) is not None]

    def range_text(self) -> str:
        """``"≥ 0"``, ``"> 0, ≤ n_fft"``, or an interval: ``"in [0, 1)"``; empty without bounds."""
        b = dict(self.bounds())
        low = [op for op in ("gt", "ge") if isinstance(b.get(op), (int, float))]
        high = [op for op in ("lt", "le") if isinstance(b.get(op), (int, float))]
        if len(b) == 2 and low and high:
            return (f"in {'(' if low[0] == 'gt' else '['}{b[low[0]]}, "
                    f"{b[high[0]]}{')' if high[0] == 'lt' else ']'}")
        return ", ".join(f"{_BOUNDS[op][0]} {bound}" for op, bound in b.items())

    def range_problem(self, value: Any, table: dict | None = None) -> tuple[str, str | None, str | None] | None:
        """None if ``value`` (a number) is in range; else the message (``"must be > 0, got -0.001"``).
        For a bound naming another setting of ``table``, also that setting's name and the message
        as that setting's own (``"must be ≥ hop_length (512), got 256"``), for when it is the one
        the user gave."""
        for op, bound in self.bounds():
            if isinstance(bound, str):
                other, bound = bound, (table or {}).get(bound)
                if bound is not None and not _BOUNDS[op][1](value, bound):
                    return (f"must be {_BOUNDS[op][0]} {other} ({bound}), got {value!r}", other,
                            f"must be {_BOUNDS[_MIRROR[op]][0]} {{key}} ({value!r}), got {bound!r}")
            elif not _BOUNDS[op][1](value, bound):
                whole = self.range_text()
                wanted = whole if whole.startswith("in ") else f"{_BOUNDS[op][0]} {bound}"
                return f"must be {wanted}, got {value!r}", None, None
        return None


def finite_problem(value: Any) -> str | None:
    """The check every float setting gets, schema or plugin: nan passes every bound unnoticed
    (each comparison is false) and no setting of a run means anything at inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return None


@dataclass
class PluginTable:
    """A table naming a plugin of ``kind`` plus that plugin's settings."""

    kind: str
    default: str | None
    help: str = ""


@dataclass
class PluginList:
    """An ordered list of plugin tables (augmentations), each with a probability ``p``."""

    kind: str
    help: str = ""
    default: list = field(default_factory=list)


#: The probability ``p`` of every augmentation list item.
AUGMENT_P = F(float, 1.0, "Probability that the augmentation is applied.", ge=0, le=1)

#: Ranges of plugin settings, applied by the setting's name alone. A plugin's settings have no
#: schema (its factory's signature is one), but whatever the plugin, ``dropout`` is the chance of
#: zeroing a unit: 1 zeroes them all and trains nothing, so the head's range holds for it too.
PLUGIN_SETTINGS: dict[str, F] = {
    "dropout": F(float, None, "Dropout probability.", ge=0, lt=1),
}

LR_PARTS = ("audio", "text", "fusion", "head")

SCHEMA: dict[str, Any] = {
    "name": F(str, None, "Experiment name; defaults to the file's stem."),
    "description": F(str, "", "Free text stored with every run."),
    "extends": F(str, None, "Another experiment file (relative to this one) to start from."),
    "seed": F(int, 0, "Seed for python, numpy, torch and DataLoader workers.", ge=0),
    "task": F(str, "regression", "What to predict: valence/arousal or the quadrant.",
              ("regression", "classification")),
    "tags": F(list, [], "Labels for finding runs later.", items=str),
    "data": {
        "source": PluginTable("data_sources", "synthetic", "Where songs come from."),
        "cache_dir": F(str, ".merx/cache", "Cache for generated data, features and embeddings."),
        "on_overlap": F(str, "error", "A song in two splits (same id or same audio): stop, or warn.",
                        ("error", "warn")),
    },
    "features": {
        "sample_rate": F(int, 22050, "Audio is resampled to this rate (Hz).", ge=1),
        "n_fft": F(int, 2048, "FFT window length (samples).", ge=1),
        "hop_length": F(int, 512, "Hop between frames (samples); a hop longer than the window would skip samples.",
                        ge=1, le="n_fft"),
        "n_mels": F(int, 128, "Mel bands.", ge=1),
        "duration": F(float, 30.0, "Seconds of audio the model sees; shorter clips are padded.", gt=0),
        "ref": F(str, "fixed", "dB reference: a fixed power (absolute scale) or the training split's "
                 "maximum power.", ("fixed", "train_max")),
        "ref_value": F(float, 1.0, "The fixed reference power when ref = 'fixed'.", gt=0),
        "top_db": F(float, 80.0, "Floor: dB values below -top_db (relative to the reference) are clipped; "
                    "padding uses the floor.", gt=0),
        "crop": F(str, "middle", "Which frames of a longer clip to keep; 'random' draws a fresh crop "
                  "each epoch in training (middle in evaluation).", ("head", "middle", "max_energy", "random")),
        "workers": F(int, 0, "Feature extraction: 0 = automatic (threads in this process, one per usable core, "
                     "at most 16); 1 = one song after another; N > 1 = N worker processes.", ge=0),
    },
    "model": {
        "modalities": F(str, "both", "Use both towers, or one alone for ablations.",
                        ("both", "audio", "text")),
        "audio": PluginTable("audio_towers", "vggish", "The audio tower."),
        "text": PluginTable("text_towers", "huggingface", "The text tower."),
        "fusion": PluginTable("fusions", "concat", "How the two towers' outputs are combined."),
        "head": {
            "hidden": F(list, [100], "Hidden layer sizes of the prediction head.", items=int, ge=1),
            "dropout": F(float, 0.5, "Dropout before each head layer.", ge=0, lt=1),
        },
    },
    "augment": {
        "audio": PluginList("audio_augmentations", "Audio augmentations, applied in order (training only)."),
        "text": PluginList("text_augmentations", "Text augmentations, applied in order (training only)."),
        "strategy": F(str, "precompute", "Waveform augmentations: precompute `variants` versions per training "
                      "song into the feature cache (cheap epochs), or apply them in the data loader every "
                      "epoch (fresh draws, an extraction per song per epoch).", ("precompute", "on_the_fly")),
        "variants": F(int, 4, "Augmented versions per training song (precomputed audio; text always).", ge=1),
    },
    "train": {
        "device": F(str, "auto", "auto (cuda, then mps, then cpu), or cpu, cuda, cuda:1, mps."),
        "amp": F(bool, True, "Mixed precision on CUDA (bf16 where supported); off elsewhere."),
        "deterministic": F(bool, False, "Deterministic algorithms (torch, cuDNN, cuBLAS), so that GPU runs repeat "
                           "exactly; slower on GPU, and an operation with no deterministic GPU kernel stops the "
                           "run. CPU runs repeat without it."),
        "optimizer": F(str, "adam", "Optimizer.", ("adam", "adamw")),
        "weight_decay": F(float, 0.0, "Weight decay.", ge=0),
        "lr": {
            "audio": F(float, 1e-3, "Learning rate of the audio tower.", gt=0),
            "text": F(float, 1e-5, "Learning rate of the text tower (when trainable).", gt=0),
            "fusion": F(float, 1e-3, "Learning rate of the fusion.", gt=0),
            "head": F(float, 1e-3, "Learning rate of the head.", gt=0),
        },
        "scheduler": {
            "name": F(str, "step", "Learning-rate schedule.", ("step", "cosine", "none")),
            "step_size": F(int, 15, "StepLR: epochs between decays.", ge=1),
            "gamma": F(float, 0.5, "StepLR: decay factor.", gt=0, le=1),
        },
        "batch_size": F(int, 16, "Songs per batch.", ge=1),
        "epochs": F(int, 50, "Maximum epochs.", ge=1),
        "grad_clip": F(float, 1.0, "Clip the gradient norm to this; 0 switches clipping off.", ge=0),
        "num_workers": F(int, 0, "DataLoader worker processes (the DataLoader path only; the feature bank "
                         "needs none).", ge=0),
        "data_on_device": F((str, bool), "auto", "Where the feature bank keeps a run's inputs: on the training "
                            "device (true), in host memory with each batch copied from pinned memory (false), or on "
                            "the device when all splits fit in half its free memory (auto). CPU runs keep them in "
                            "memory either way. Runs with on-the-fly waveform augmentation, text augmentation, or a "
                            "spectrogram augmentation plugin other than frequency_mask/time_mask use the DataLoader "
                            "instead.",
                            ("auto", True, False)),
        "compile": F(bool, False, "torch.compile the model; if compilation fails, the run warns naming the failure "
                     "and trains uncompiled."),
        "channels_last": F(bool, True, "channels_last memory format for the audio tower on CUDA (faster cuDNN "
                           "convolutions); ignored elsewhere."),
        "early_stopping": {
            "monitor": F(str, "val_loss", "Validation metric to watch (val_loss, val_macro_f1, "
                         "val_valence_mae, ...)."),
            "mode": F(str, "min", "Whether lower or higher is better.", ("min", "max")),
            "patience": F(int, 10, "Epochs without improvement before stopping; 0 = never stop early.",
                          ge=0),
            "min_delta": F(float, 0.0, "Smallest change that counts as an improvement.", ge=0),
        },
    },
}

#: The ``[executor]`` table: where the runs of a sweep or seed group execute. Like ``[sweep]``
#: it says how to run, not what a run computes, so it is not part of any run's config or hash
#: (``merx.sweep.load_plan`` takes it out); command-line options win over it.
EXECUTOR: dict[str, Any] = {
    "name": F(str, "local", "Where the runs of a sweep or seed group execute (`--executor`): processes on this "
              "machine, Ray tasks, or Slurm jobs through submitit.", ("local", "ray", "slurm")),
    "jobs": F(int, 1, "local: runs at once (`--jobs`); 1 runs them one after another in this process. Spread over "
              "the GPUs (several per GPU when there are more jobs than GPUs); without GPUs the CPU threads are "
              "split between them.", ge=1),
    "cpus_per_run": F(int, 1, "ray, slurm: CPU cores each run asks for (`--cpus-per-run`); its torch threads.",
                      ge=1),
    "gpus_per_run": F(float, 0.0, "ray: GPUs each run asks for, fractions allowed (0.25: four runs share a GPU); "
                      "slurm: whole GPUs per job (`--gpus-per-run`).", ge=0),
    "max_retries": F(int, 1, "Times a lost or interrupted run (its worker died, its job was pre-empted) is resumed "
                     "before the sweep gives up on it (`--max-retries`).", ge=0),
    "ray_address": F(str, "", "ray: the cluster to join (`--ray-address`; else `RAY_ADDRESS`); empty starts a "
                     "local Ray instance."),
    "partition": F(str, "", "slurm: the partition (`--partition`); empty: the cluster's default."),
    "time": F(int, 60, "slurm: time limit of each job in minutes (`--time`).", ge=1),
    "account": F(str, "", "slurm: the account to charge; empty: your default."),
    "parallel": F(int, 0, "slurm: at most this many jobs at once (Slurm's array throttle, `--array=...%N`); "
                  "0: as many as the cluster gives.", ge=0),
    "folder": F(str, ".merx/slurm", "slurm: where submitit keeps each job's task, output and log (on a cluster, a "
                "folder on a shared filesystem)."),
    "cluster": F(str, "slurm", "slurm: submit to Slurm, or run the same jobs as processes on this machine through "
                 "submitit's local executor (to try a setup without a cluster).", ("slurm", "local")),
}


def schema_markdown() -> str:
    """The config reference table of the README, generated from ``SCHEMA`` so it cannot drift."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(node: dict, prefix: str):
        for k, spec in node.items():
            key = f"{prefix}{k}"
            if isinstance(spec, dict):
                walk(spec, f"{key}.")
            elif isinstance(spec, PluginTable):
                rows.append(f"| `{key}.name` | plugin ({spec.kind}) | `{spec.default}` | {spec.help} "
                            f"Other keys of `[{key}]` are the plugin's own settings (`merx list-plugins`){by_name}. |")
            elif isinstance(spec, PluginList):
                rows.append(f"| `{key}` | list of plugin tables ({spec.kind}) | `[]` | {spec.help} "
                            f"Each item: `name`, `p` (probability {AUGMENT_P.range_text()}, default "
                            f"{AUGMENT_P.default}) and the plugin's settings{by_name}. |")
            else:
                rows.append(f"| `{key}` | {_type_text(spec)} | `{_default_text(key, spec)}` | {spec.help}"
                            f"{_choices_text(spec)} |")

    by_name = "".join(f"; any setting `{name}`: {spec.range_text()}" for name, spec in PLUGIN_SETTINGS.items())

    walk(SCHEMA, "")
    walk(EXECUTOR, "executor.")
    return "\n".join(rows)



_TYPE_WORDS = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list"}


def _type_text(spec: F) -> str:
    """``integer ≥ 0``, ``number in [0, 1)``, ``list of integers ≥ 1``: the range beside the type."""
    if spec.items is not None:
        words = f"list of {_TYPE_WORDS.get(spec.items, spec.items.__name__)}s"
    else:
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
    return f"{words} {spec.range_text()}".strip()


def _default_text(key: str, spec: F) -> str:
    return "file stem" if key == "name" else json.dumps(spec.default)


def _choices_text(spec: F) -> str:
    return f" One of: {', '.join(f'`{json.dumps(c) if isinstance(c, bool) else c}`' for c in spec.choices)}." \
        if spec.choices else ""
