"""What an experiment file may hold: every key, its type, default and help, in one table.

``SCHEMA`` is read by validation (``merx.config.load``), by the typed settings
(``merx.config.settings``, whose defaults come from here) and by :func:`schema_markdown`,
which writes the README's config reference (``python -m merx.config``), so the three cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class F:
    """One setting: its type(s), default and help."""

    type: Any
    default: Any
    help: str = ""
    choices: tuple | None = None


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


LR_PARTS = ("audio", "text", "fusion", "head")

SCHEMA: dict[str, Any] = {
    "name": F(str, None, "Experiment name; defaults to the file's stem."),
    "description": F(str, "", "Free text stored with every run."),
    "extends": F(str, None, "Another experiment file (relative to this one) to start from."),
    "seed": F(int, 0, "Seed for python, numpy, torch and DataLoader workers."),
    "task": F(str, "regression", "What to predict: valence/arousal or the quadrant.",
              ("regression", "classification")),
    "tags": F(list, [], "Labels for finding runs later."),
    "data": {
        "source": PluginTable("data_sources", "synthetic", "Where songs come from."),
        "cache_dir": F(str, ".merx/cache", "Cache for generated data, features and embeddings."),
        "on_overlap": F(str, "error", "A song in two splits (same id or same audio): stop, or warn.",
                        ("error", "warn")),
    },
    "features": {
        "sample_rate": F(int, 22050, "Audio is resampled to this rate (Hz)."),
        "n_fft": F(int, 2048, "FFT window length (samples)."),
        "hop_length": F(int, 512, "Hop between frames (samples)."),
        "n_mels": F(int, 128, "Mel bands."),
        "duration": F(float, 30.0, "Seconds of audio the model sees; shorter clips are padded."),
        "ref": F(str, "fixed", "dB reference: a fixed power (absolute scale) or the training split's "
                 "maximum power.", ("fixed", "train_max")),
        "ref_value": F(float, 1.0, "The fixed reference power when ref = 'fixed'."),
        "top_db": F(float, 80.0, "Floor: dB values below -top_db (relative to the reference) are clipped; "
                    "padding uses the floor."),
        "crop": F(str, "middle", "Which frames of a longer clip to keep; 'random' draws a fresh crop "
                  "each epoch in training (middle in evaluation).", ("head", "middle", "max_energy", "random")),
        "workers": F(int, 0, "Processes for feature extraction; 0 = one per CPU core."),
    },
    "model": {
        "modalities": F(str, "both", "Use both towers, or one alone for ablations.",
                        ("both", "audio", "text")),
        "audio": PluginTable("audio_towers", "vggish", "The audio tower."),
        "text": PluginTable("text_towers", "huggingface", "The text tower."),
        "fusion": PluginTable("fusions", "concat", "How the two towers' outputs are combined."),
        "head": {
            "hidden": F(list, [100], "Hidden layer sizes of the prediction head."),
            "dropout": F(float, 0.5, "Dropout before each head layer."),
        },
    },
    "augment": {
        "audio": PluginList("audio_augmentations", "Audio augmentations, applied in order (training only)."),
        "text": PluginList("text_augmentations", "Text augmentations, applied in order (training only)."),
        "strategy": F(str, "precompute", "Waveform augmentations: precompute `variants` versions per training "
                      "song into the feature cache (cheap epochs), or apply them in the data loader every "
                      "epoch (fresh draws, an extraction per song per epoch).", ("precompute", "on_the_fly")),
        "variants": F(int, 4, "Augmented versions per training song (precomputed audio; text always)."),
    },
    "train": {
        "device": F(str, "auto", "auto (cuda, then mps, then cpu), or cpu, cuda, cuda:1, mps."),
        "amp": F(bool, True, "Mixed precision on CUDA (bf16 where supported); off elsewhere."),
        "optimizer": F(str, "adam", "Optimizer.", ("adam", "adamw")),
        "weight_decay": F(float, 0.0, "Weight decay."),
        "lr": {
            "audio": F(float, 1e-3, "Learning rate of the audio tower."),
            "text": F(float, 1e-5, "Learning rate of the text tower (when trainable)."),
            "fusion": F(float, 1e-3, "Learning rate of the fusion."),
            "head": F(float, 1e-3, "Learning rate of the head."),
        },
        "scheduler": {
            "name": F(str, "step", "Learning-rate schedule.", ("step", "cosine", "none")),
            "step_size": F(int, 15, "StepLR: epochs between decays."),
            "gamma": F(float, 0.5, "StepLR: decay factor."),
        },
        "batch_size": F(int, 16, "Songs per batch."),
        "epochs": F(int, 50, "Maximum epochs."),
        "grad_clip": F(float, 1.0, "Clip the gradient norm to this; 0 switches clipping off."),
        "num_workers": F(int, 0, "DataLoader worker processes."),
        "early_stopping": {
            "monitor": F(str, "val_loss", "Validation metric to watch (val_loss, val_macro_f1, "
                         "val_valence_mae, ...)."),
            "mode": F(str, "min", "Whether lower or higher is better.", ("min", "max")),
            "patience": F(int, 10, "Epochs without improvement before stopping; 0 = never stop early."),
            "min_delta": F(float, 0.0, "Smallest change that counts as an improvement."),
        },
    },
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
                            f"Other keys of `[{key}]` are the plugin's own settings (`merx list-plugins`). |")
            elif isinstance(spec, PluginList):
                rows.append(f"| `{key}` | list of plugin tables ({spec.kind}) | `[]` | {spec.help} "
                            f"Each item: `name`, `p` (probability, default 1.0) and the plugin's settings. |")
            else:
                tname = {int: "integer", float: "number", str: "string", bool: "boolean",
                         list: "list"}.get(spec.type, spec.type.__name__)
                default = "file stem" if key == "name" else json.dumps(spec.default)
                choices = f" One of: {', '.join(f'`{c}`' for c in spec.choices)}." if spec.choices else ""
                rows.append(f"| `{key}` | {tname} | `{default}` | {spec.help}{choices} |")

    walk(SCHEMA, "")
    return "\n".join(rows)

