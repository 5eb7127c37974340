"""Typed, frozen sections of a resolved config: what the engine below ``merx.pipeline`` reads.

The resolved dict (``merx.config.load``) stays what a run stores, hashes and prints; the
pipeline turns it into an :class:`Experiment` once (``Experiment.from_config(cfg)``) and hands
each stage only its section: the feature stage a :class:`FeatureSettings`, the model builder a
:class:`ModelSettings`, the trainer a :class:`TrainSettings`, augmentation planning an
:class:`AugmentSettings`. A typo in a field name is then an ``AttributeError`` where it is
written, not a ``KeyError`` deep in a run.

Every default comes from ``SCHEMA``, so ``FeatureSettings(n_mels=16)`` is the resolved
``[features]`` table of an experiment that sets only ``n_mels``. Nothing here imports torch.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from merx.config.schema import EXECUTOR, SCHEMA, F, PluginTable


def _spec(dotted: str):
    node: Any = SCHEMA
    for part in dotted.split("."):
        node = node[part]
    return node


def _default(dotted: str):
    spec = _spec(dotted)
    value = spec.default
    if isinstance(spec, F) and isinstance(value, list):
        value = tuple(value)
    return field(default_factory=lambda: copy.deepcopy(value))


def _plugin_default(dotted: str):
    spec = _spec(dotted)
    assert isinstance(spec, PluginTable)
    return field(default_factory=lambda: PluginChoice(spec.default))


class _Section:
    """A table of the resolved config as a frozen dataclass. ``from_table`` reads every field by
    name; a field typed as another section (or plugin choice), or a tuple of them, is converted
    from its nested table; a tuple field from a list (TOML has no tuples)."""

    @classmethod
    def from_table(cls, table: dict):
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):
            value, hint = table[f.name], hints[f.name]
            if typing.get_origin(hint) is tuple:
                item = typing.get_args(hint)[0]
                value = tuple(item.from_table(v) if hasattr(item, "from_table") else v for v in value)
            elif hasattr(hint, "from_table"):
                value = hint.from_table(value)
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class PluginChoice:
    """A plugin table (``[model.fusion]``, ``[data.source]``): which plugin, and its own settings.

    ``name`` is plain (``concat``) or qualified (``merx:concat``), as the experiment wrote it;
    ``settings`` are the factory's keyword arguments, every default filled in."""

    name: str
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: dict) -> PluginChoice:
        return cls(table["name"], {k: v for k, v in table.items() if k != "name"})

    def as_table(self) -> dict:
        """The table again, as the resolved config holds it."""
        return {"name": self.name, **self.settings}


@dataclass(frozen=True)
class AugmentChoice(PluginChoice):
    """One ``[[augment.audio]]`` / ``[[augment.text]]`` entry: a plugin applied with probability ``p``."""

    p: float = 1.0

    @classmethod
    def from_table(cls, table: dict) -> AugmentChoice:
        return cls(table["name"], {k: v for k, v in table.items() if k not in ("name", "p")},
                   float(table.get("p", 1.0)))

    def as_table(self) -> dict:
        return {"name": self.name, **self.settings, "p": self.p}


@dataclass(frozen=True)
class DataSettings(_Section):
    source: PluginChoice = _plugin_default("data.source")
    cache_dir: str = _default("data.cache_dir")
    on_overlap: str = _default("data.on_overlap")


@dataclass(frozen=True)
class FeatureSettings(_Section):
    """How audio becomes the mel spectrogram a model sees (``[features]``)."""

    sample_rate: int = _default("features.sample_rate")
    n_fft: int = _default("features.n_fft")
    hop_length: int = _default("features.hop_length")
    n_mels: int = _default("features.n_mels")
    duration: float = _default("features.duration")
    ref: str = _default("features.ref")
    ref_value: float = _default("features.ref_value")
    top_db: float = _default("features.top_db")
    crop: str = _default("features.crop")
    workers: int = _default("features.workers")


@dataclass(frozen=True)
class HeadSettings(_Section):
    hidden: tuple[int, ...] = _default("model.head.hidden")
    dropout: float = _default("model.head.dropout")


@dataclass(frozen=True)
class ModelSettings(_Section):
    """The parts of the model (``[model]``): towers, fusion and head, and which modalities are used."""

    modalities: str = _default("model.modalities")
    audio: PluginChoice = _plugin_default("model.audio")
    text: PluginChoice = _plugin_default("model.text")
    fusion: PluginChoice = _plugin_default("model.fusion")
    head: HeadSettings = field(default_factory=HeadSettings)

    @property
    def uses_audio(self) -> bool:
        return self.modalities in ("both", "audio")

    @property
    def uses_text(self) -> bool:
        return self.modalities in ("both", "text")


@dataclass(frozen=True)
class AugmentSettings(_Section):
    """Training-only augmentations (``[augment]``), in the order they apply."""

    audio: tuple[AugmentChoice, ...] = ()
    text: tuple[AugmentChoice, ...] = ()
    strategy: str = _default("augment.strategy")
    variants: int = _default("augment.variants")


@dataclass(frozen=True)
class LearningRates(_Section):
    """One learning rate per part of the model (``[train.lr]``)."""

    audio: float = _default("train.lr.audio")
    text: float = _default("train.lr.text")
    fusion: float = _default("train.lr.fusion")
    head: float = _default("train.lr.head")

    def of(self, part: str) -> float:
        return getattr(self, part)


@dataclass(frozen=True)
class SchedulerSettings(_Section):
    name: str = _default("train.scheduler.name")
    step_size: int = _default("train.scheduler.step_size")
    gamma: float = _default("train.scheduler.gamma")


@dataclass(frozen=True)
class EarlyStoppingSettings(_Section):
    monitor: str = _default("train.early_stopping.monitor")
    mode: str = _default("train.early_stopping.mode")
    patience: int = _default("train.early_stopping.patience")
    min_delta: float = _default("train.early_stopping.min_delta")


@dataclass(frozen=True)
class TrainSettings(_Section):
    """How the model is trained (``[train]``)."""

    device: str = _default("train.device")
    amp: bool = _default("train.amp")
    deterministic: bool = _default("train.deterministic")
    optimizer: str = _default("train.optimizer")
    weight_decay: float = _default("train.weight_decay")
    lr: LearningRates = field(default_factory=LearningRates)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    batch_size: int = _default("train.batch_size")
    epochs: int = _default("train.epochs")
    grad_clip: float = _default("train.grad_clip")
    num_workers: int = _default("train.num_workers")
    data_on_device: str | bool = _default("train.data_on_device")
    compile: bool = _default("train.compile")
    channels_last: bool = _default("train.channels_last")
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment, typed: what one run computes, section by section."""

    name: str = "experiment"
    task: str = _default("task")
    seed: int = _default("seed")
    description: str = _default("description")
    tags: tuple[str, ...] = _default("tags")
    data: DataSettings = field(default_factory=DataSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    @classmethod
    def from_config(cls, cfg: dict) -> Experiment:
        """From a resolved config (``merx.config.resolve``/``load``): every key must be there."""
        return cls(name=cfg["name"], task=cfg["task"], seed=int(cfg["seed"]), description=cfg["description"],
                   tags=tuple(cfg["tags"]), data=DataSettings.from_table(cfg["data"]),
                   features=FeatureSettings.from_table(cfg["features"]),
                   model=ModelSettings.from_table(cfg["model"]),
                   augment=AugmentSettings.from_table(cfg["augment"]),
                   train=TrainSettings.from_table(cfg["train"]))

    @property
    def out_dim(self) -> int:
        """Outputs of the model: one logit per quadrant, or valence and arousal."""
        from merx.data.songs import QUADRANTS

        return len(QUADRANTS) if self.task == "classification" else 2


def _executor_default(key: str):
    return field(default=EXECUTOR[key].default)


@dataclass(frozen=True)
class ExecutorSettings(_Section):
    """Where the runs of a sweep or seed group execute: the experiment's ``[executor]`` table
    (``merx.config.schema.EXECUTOR``) with the command line's options applied over it. Not part
    of any run's config: it changes where runs happen, never what they compute."""

    name: str = _executor_default("name")
    jobs: int = _executor_default("jobs")
    cpus_per_run: int = _executor_default("cpus_per_run")
    gpus_per_run: float = _executor_default("gpus_per_run")
    max_retries: int = _executor_default("max_retries")
    ray_address: str = _executor_default("ray_address")
    partition: str = _executor_default("partition")
    time: int = _executor_default("time")
    account: str = _executor_default("account")
    parallel: int = _executor_default("parallel")
    folder: str = _executor_default("folder")
    cluster: str = _executor_default("cluster")
