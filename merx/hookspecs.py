"""Every hook a merx plugin can implement.

Each ``register_<kind>`` hook receives a ``register(name, factory)`` callback. A *factory* is a
callable (function or class) that builds the component. merx reads its signature:

* parameters named in ``CONTEXT[kind]`` are supplied by merx at build time (input sizes and
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

import pluggy

hookspec = pluggy.HookspecMarker("merx")

#: The plugin kinds, in the order ``merx list-plugins`` shows them, with the hook of each.
KINDS = {
    "data_sources": "register_data_sources",
    "audio_augmentations": "register_audio_augmentations",
    "text_augmentations": "register_text_augmentations",
    "audio_towers": "register_audio_towers",
    "text_towers": "register_text_towers",
    "fusions": "register_fusions",
}

#: Factory parameters that merx fills in itself, per kind (a factory takes any subset).
CONTEXT = {
    # The folder where a source may write generated or downloaded files (a cache).
    "data_sources": {"cache_dir"},
    # The sample rate of the waveform the augmentation will see.
    "audio_augmentations": {"sample_rate"},
    "text_augmentations": set(),
    # Mel bins and frames of the spectrogram the tower receives.
    "audio_towers": {"n_mels", "n_frames"},
    # False when merx needs only the architecture (``merx run --dry-run``): build without weights.
    "text_towers": {"pretrained"},
    # Pooled and per-token sizes of the two towers' outputs.
    "fusions": {"audio_dim", "text_dim", "audio_seq_dim", "text_seq_dim"},
}

#: One line per kind, for help texts and the plugin guide.
DESCRIPTIONS = {
    "data_sources": "Where songs come from: returns songs with audio, lyrics, labels and split.",
    "audio_augmentations": "Training-only transforms of the waveform or the mel spectrogram.",
    "text_augmentations": "Training-only transforms of the lyrics text.",
    "audio_towers": "Mel spectrogram -> pooled vector + token sequence.",
    "text_towers": "Lyrics -> pooled vector + token sequence.",
    "fusions": "Two tower outputs -> one vector for the prediction head.",
}


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
