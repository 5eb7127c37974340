"""Every hook a merx plugin can implement.

Each ``register_<kind>`` hook receives a ``register(name, factory)`` callback. A *factory* is a
callable (function or class) that builds the component. merx reads its signature:

* parameters named in ``KINDS[kind].context`` are supplied by merx at build time (input sizes and
  the like); a factory asks for the ones it needs and may ignore the rest;
* every other parameter is a user setting, configured in the experiment file next to the
  plugin's ``name``; its default is the default, its annotation (or default's type) its type,
  and a parameter without a default is required.

The factory's docstring is its help text (first line shown by ``merx list-plugins``). Keep the
module that registers a factory light: import torch and friends inside the factory, so that
``merx list-plugins`` and ``merx --help`` stay instant.

Hook implementations may accept any subset of a hook's arguments (pluggy matches by name), so
adding an argument to a hook later never breaks an existing plugin.
"""

from dataclasses import dataclass

import pluggy

hookspec = pluggy.HookspecMarker("merx")


@dataclass(frozen=True)
class Kind:
    """One kind of plugin: everything merx knows about it, stated once."""

    #: The plural key used everywhere inside merx ("fusions"); also the registry's key.
    name: str
    #: The one word a person writes for one of them ("fusion"); ``merx plugin new fusion x``.
    singular: str
    #: The hook a plugin implements to register this kind.
    hook: str
    #: Factory parameters merx fills in itself at build time (a factory takes any subset).
    context: frozenset[str]
    #: One line for help texts and the plugin guide.
    description: str
    #: Where the experiment file configures it ("model.fusion"), or None when it is not a
    #: single table (augmentations are lists under ``augment.audio`` / ``augment.text``).
    table: str | None

    @property
    def label(self) -> str:
        """The singular in words, for messages: "audio tower"."""
        return self.singular.replace("_", " ")


#: The plugin kinds, in the order ``merx list-plugins`` shows them.
KINDS: dict[str, Kind] = {k.name: k for k in (
    # cache_dir: the folder where a source may write generated or downloaded files.
    Kind("data_sources", "data_source", "register_data_sources", frozenset({"cache_dir"}),
         "Where songs come from: returns songs with audio, lyrics, labels and split.", "data.source"),
    # sample_rate: the rate of the waveform the augmentation will see.
    Kind("audio_augmentations", "audio_augmentation", "register_audio_augmentations",
         frozenset({"sample_rate"}), "Training-only transforms of the waveform or the mel spectrogram.", None),
    Kind("text_augmentations", "text_augmentation", "register_text_augmentations", frozenset(),
         "Training-only transforms of the lyrics text.", None),
    # n_mels, n_frames: the shape of the spectrogram the tower receives.
    Kind("audio_towers", "audio_tower", "register_audio_towers", frozenset({"n_mels", "n_frames"}),
         "Mel spectrogram -> pooled vector + token sequence.", "model.audio"),
    # pretrained: False when merx needs only the architecture (``merx run --dry-run``).
    Kind("text_towers", "text_tower", "register_text_towers", frozenset({"pretrained"}),
         "Lyrics -> pooled vector + token sequence.", "model.text"),
    # Pooled and per-token sizes of the two towers' outputs.
    Kind("fusions", "fusion", "register_fusions",
         frozenset({"audio_dim", "text_dim", "audio_seq_dim", "text_seq_dim"}),
         "Two tower outputs -> one vector for the prediction head.", "model.fusion"),
)}


def kind(name: str) -> Kind:
    """The kind a person means: ``fusion``, ``fusions``, ``audio-tower``, ``Audio_Towers`` ...

    Raises KeyError naming the kinds when nothing matches."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    for k in KINDS.values():
        if key in (k.name, k.singular):
            return k
    raise KeyError(f"unknown plugin kind {name!r}; kinds: {', '.join(k.singular for k in KINDS.values())}")


@hookspec
def register_data_sources(register):
    """Register data sources: ``register("name", factory)``.

    The factory returns an object with ``load() -> merx.data.songs.SongTable``."""


@hookspec
def register_audio_augmentations(register):
    """Register audio augmentations: ``register("name", factory)``.

    The factory returns a callable with ``level`` "waveform" (``aug(samples, rng) -> samples``,
    before the mel stage) or "spectrogram" (``aug(db, rng) -> db``, after the crop); wrap a
    function with ``merx.augment.waveform`` / ``merx.augment.spectrogram``."""


@hookspec
def register_text_augmentations(register):
    """Register text augmentations: ``register("name", factory)``.

    The factory returns a callable ``aug(text, rng) -> text``."""


@hookspec
def register_audio_towers(register):
    """Register audio towers: ``register("name", factory)``.

    The factory returns a ``torch.nn.Module`` with ``out_dim`` and ``seq_dim`` attributes whose
    ``forward(mel)`` (mel: ``[batch, 1, n_mels, n_frames]``) returns a
    ``merx.models.outputs.TowerOutput``."""


@hookspec
def register_text_towers(register):
    """Register text towers: ``register("name", factory)``.

    The factory returns a ``torch.nn.Module`` with ``out_dim``, ``seq_dim``, ``frozen`` (bool:
    when true merx computes its outputs once per song instead of every batch),
    ``tokenize(texts)`` and ``forward(input_ids, attention_mask) -> TowerOutput``."""


@hookspec
def register_fusions(register):
    """Register fusions: ``register("name", factory)``.

    The factory returns a ``torch.nn.Module`` with an ``out_dim`` attribute whose
    ``forward(audio: TowerOutput, text: TowerOutput)`` returns ``[batch, out_dim]``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``merx`` command group."""
