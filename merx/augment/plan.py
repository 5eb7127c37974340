"""An experiment's ``[augment]`` settings -> the chains a run applies to its training songs.

``build_plan(augment, features)`` calls every configured plugin's factory once, before any data is loaded, so
that a problem (missing WordNet data, an unknown audiomentations transform, a mask wider than
the spectrogram, a waveform step listed after a spectrogram step) stops the run at once with
the config key that caused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from merx.augment.chain import Chain, Step
from merx.augment.text import check_text_augmentation
from merx.errors import ConfigError
from merx.hookspecs import KINDS

if TYPE_CHECKING:
    from merx.config.settings import AugmentChoice, AugmentSettings, FeatureSettings


class AugmentationError(ConfigError):
    """A configured augmentation cannot be built; the message names its config key."""


@dataclass
class AugmentPlan:
    """What a run does to its training songs.

    ``waveform`` runs on the decoded signal before the mel spectrogram, ``spectrogram`` on the
    cropped dB spectrogram, ``text`` on the lyrics. ``strategy`` says where ``waveform`` runs:
    ``precompute`` = ``variants`` versions per training song, cached with the features;
    ``on_the_fly`` = every epoch afresh in the data loader. Text is always precomputed as
    ``variants`` versions (a frozen text tower then encodes each version once)."""

    waveform: Chain
    spectrogram: Chain
    text: Chain
    strategy: str
    variants: int

    @property
    def audio(self) -> bool:
        return bool(self.waveform) or bool(self.spectrogram)

    def __bool__(self) -> bool:
        return self.audio or bool(self.text)


def _steps(kind: str, items: Sequence[AugmentChoice], context: dict, registry,
           key: str) -> list[tuple[Step, object]]:
    """Build each configured plugin; ``(Step, the built object)`` in config order."""
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}] ({item.name})"
        try:
            plugin = registry.get(kind, item.name)
            obj = plugin.build(dict(item.settings), **context)
        except Exception as exc:
            raise AugmentationError(f"{where}: {exc}") from exc
        label = f"{KINDS[kind].label} {item.name!r} ({plugin.origin_label})"
        out.append((Step(item.name, float(item.p), obj, item.as_table(), _code_version(plugin), label), obj))
    return out


def _code_version(plugin) -> str:
    """What identifies a plugin's code, for cache keys: a local file's content, else its version."""
    if plugin.origin == "local file":
        from merx.hashing import file_digest

        try:
            return f"local:{file_digest(plugin.source)}"
        except OSError:
            pass
    return f"{plugin.origin}:{plugin.source}:{plugin.version or ''}"


def audio_chains(items: Sequence[AugmentChoice], sample_rate: int, n_mels: int | None = None,
                 n_frames: int | None = None, registry=None,
                 plugin_dirs: list[str] | None = None) -> tuple[Chain, Chain]:
    """``(waveform chain, spectrogram chain)`` of the ``[[augment.audio]]`` entries."""
    from merx.augment.audio import level_of

    registry, plugin_dirs = _registry(registry, plugin_dirs)
    built = _steps("audio_augmentations", items, {"sample_rate": sample_rate}, registry, "augment.audio")
    levels, first_spectrogram = [], None
    for i, (step, obj) in enumerate(built):
        where = f"augment.audio[{i}] ({step.name})"
        try:
            level = level_of(obj, f"audio augmentation {step.name!r}")
            if level == "spectrogram" and n_mels is not None and hasattr(obj, "check"):
                obj.check(n_mels, n_frames)
        except (TypeError, ValueError) as exc:
            raise AugmentationError(f"{where}: {exc}") from exc
        if level == "waveform" and first_spectrogram is not None:
            raise AugmentationError(
                f"{where} works on the waveform, which exists only before the mel spectrogram is computed, "
                f"but it is listed after the spectrogram-level augmentation at {first_spectrogram}; "
                "list waveform-level augmentations first")
        if level == "spectrogram" and first_spectrogram is None:
            first_spectrogram = where
        levels.append(level)
    wave_items = [item for item, level in zip(items, levels, strict=True) if level == "waveform"]
    spec_items = [item for item, level in zip(items, levels, strict=True) if level == "spectrogram"]
    wave = Chain([s for (s, _), level in zip(built, levels, strict=True) if level == "waveform"],
                 recipe=(f"{__name__}._rebuild_audio", "waveform", wave_items, sample_rate, plugin_dirs))
    spec = Chain([s for (s, _), level in zip(built, levels, strict=True) if level == "spectrogram"],
                 recipe=(f"{__name__}._rebuild_audio", "spectrogram", spec_items, sample_rate, plugin_dirs))
    return wave, spec


def text_chain(items: Sequence[AugmentChoice], registry=None, plugin_dirs: list[str] | None = None) -> Chain:
    """The chain of the ``[[augment.text]]`` entries."""
    registry, plugin_dirs = _registry(registry, plugin_dirs)
    built = _steps("text_augmentations", items, {}, registry, "augment.text")
    for i, (step, obj) in enumerate(built):
        try:
            check_text_augmentation(obj, f"text augmentation {step.name!r}")
        except TypeError as exc:
            raise AugmentationError(f"augment.text[{i}] ({step.name}): {exc}") from exc
    return Chain([s for s, _ in built], recipe=(f"{__name__}._rebuild_text", items, plugin_dirs))


def build_plan(augment: AugmentSettings, features: FeatureSettings, registry=None) -> AugmentPlan:
    """Build every augmentation of an experiment (the checks happen here, before training);
    ``features`` gives the sample rate and the spectrogram's size they must fit."""
    from merx.features.crop import n_frames

    wave, spec = audio_chains(augment.audio, features.sample_rate, features.n_mels, n_frames(features),
                              registry=registry)
    text = text_chain(augment.text, registry=registry)
    return AugmentPlan(wave, spec, text, augment.strategy, augment.variants)


def _registry(registry, plugin_dirs):
    from merx import plugins

    if plugin_dirs is None:
        # Folders of local plugins as this process sees them, so another process finds the same ones.
        plugin_dirs = [str(d) for d in plugins.local_plugin_dirs(plugins._extra_dirs)]
    return registry or plugins.get_registry(), plugin_dirs


def _worker_registry(plugin_dirs):
    from merx import plugins

    if plugins._registry is None:
        plugins.set_plugin_dirs(plugin_dirs)
    return plugins.get_registry()


def _rebuild_audio(level: str, items: Sequence[AugmentChoice], sample_rate: int, plugin_dirs: list[str]) -> Chain:
    wave, spec = audio_chains(items, sample_rate, registry=_worker_registry(plugin_dirs), plugin_dirs=plugin_dirs)
    return wave if level == "waveform" else spec


def _rebuild_text(items: Sequence[AugmentChoice], plugin_dirs: list[str]) -> Chain:
    return text_chain(items, registry=_worker_registry(plugin_dirs), plugin_dirs=plugin_dirs)
