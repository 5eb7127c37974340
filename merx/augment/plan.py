"""An experiment's ``[augment]`` tables -> the chains a run applies to its training songs.

``build_plan(cfg)`` calls every configured plugin's factory once, before any data is loaded, so
that a problem (missing WordNet data, an unknown audiomentations transform, a mask wider than
the spectrogram, a waveform step listed after a spectrogram step) stops the run at once with
the config key that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass

from merx.augment.chain import Chain, Step
from merx.augment.text import check_text_augmentation

#: Where waveform-level audio augmentations run (``augment.strategy``).
STRATEGIES = ("precompute", "on_the_fly")
DEFAULT_STRATEGY = "precompute"
#: Augmented versions per training song, precomputed (``augment.variants``).
DEFAULT_VARIANTS = 4



from merx.errors import ConfigError  # noqa: E402


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
    strategy: str = DEFAULT_STRATEGY
    variants: int = DEFAULT_VARIANTS

    @property
    def audio(self) -> bool:
        return bool(self.waveform) or bool(self.spectrogram)

    def __bool__(self) -> bool:
        return self.audio or bool(self.text)


def settings(cfg: dict) -> tuple[str, int]:
    """``(strategy, variants)`` of ``cfg["augment"]``, defaults where the keys are absent."""
    aug = cfg.get("augment", {})
    strategy = aug.get("strategy", DEFAULT_STRATEGY)
    variants = aug.get("variants", DEFAULT_VARIANTS)
    if strategy not in STRATEGIES:
        raise AugmentationError(f"augment.strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
    if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
        raise AugmentationError(f"augment.variants must be a whole number of at least 1, got {variants!r}")
    return strategy, variants


def _steps(kind: str, items: list[dict], context: dict, registry, key: str) -> list[tuple[Step, object]]:
    """Build each configured plugin; ``(Step, the built object)`` in config order."""
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}] ({item['name']})"
        try:
            plugin = registry.get(kind, item["name"])
            obj = plugin.build({k: v for k, v in item.items() if k not in ("name", "p")}, **context)
        except Exception as exc:
            raise AugmentationError(f"{where}: {exc}") from exc
        out.append((Step(item["name"], float(item.get("p", 1.0)), obj, dict(item), _code_version(plugin)), obj))
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


def audio_chains(items: list[dict], sample_rate: int, n_mels: int | None = None, n_frames: int | None = None,
                 registry=None, plugin_dirs: list[str] | None = None) -> tuple[Chain, Chain]:
    """``(waveform chain, spectrogram chain)`` of ``[[augment.audio]]`` items."""
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
    wave_items = [item for item, level in zip(items, levels) if level == "waveform"]
    spec_items = [item for item, level in zip(items, levels) if level == "spectrogram"]
    wave = Chain([s for (s, _), level in zip(built, levels) if level == "waveform"],
                 recipe=(f"{__name__}._rebuild_audio", "waveform", wave_items, sample_rate, plugin_dirs))
    spec = Chain([s for (s, _), level in zip(built, levels) if level == "spectrogram"],
                 recipe=(f"{__name__}._rebuild_audio", "spectrogram", spec_items, sample_rate, plugin_dirs))
    return wave, spec


def text_chain(items: list[dict], registry=None, plugin_dirs: list[str] | None = None) -> Chain:
    """The chain of ``[[augment.text]]`` items."""
    registry, plugin_dirs = _registry(registry, plugin_dirs)
    built = _steps("text_augmentations", items, {}, registry, "augment.text")
    for i, (step, obj) in enumerate(built):
        try:
            check_text_augmentation(obj, f"text augmentation {step.name!r}")
        except TypeError as exc:
            raise AugmentationError(f"augment.text[{i}] ({step.name}): {exc}") from exc
    return Chain([s for s, _ in built], recipe=(f"{__name__}._rebuild_text", items, plugin_dirs))


def build_plan(cfg: dict, registry=None) -> AugmentPlan:
    """Build every augmentation of a resolved config (the checks happen here, before training)."""
    from merx.features.crop import n_frames

    strategy, variants = settings(cfg)
    feats = cfg["features"]
    wave, spec = audio_chains(cfg["augment"]["audio"], feats["sample_rate"], feats["n_mels"], n_frames(feats),
                              registry=registry)
    text = text_chain(cfg["augment"]["text"], registry=registry)
    return AugmentPlan(wave, spec, text, strategy, variants)


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


def _rebuild_audio(level: str, items: list[dict], sample_rate: int, plugin_dirs: list[str]) -> Chain:
    wave, spec = audio_chains(items, sample_rate, registry=_worker_registry(plugin_dirs), plugin_dirs=plugin_dirs)
    return wave if level == "waveform" else spec


def _rebuild_text(items: list[dict], plugin_dirs: list[str]) -> Chain:
    return text_chain(items, registry=_worker_registry(plugin_dirs), plugin_dirs=plugin_dirs)
