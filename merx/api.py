"""The public plugin API of merx: everything a plugin needs, in one import.

    from merx.api import hookimpl, TowerOutput

A plugin is a module with functions marked ``@hookimpl`` and named after a hook
(``register_fusions``, ``register_audio_towers``, ...). Each hook receives a
``register(name, factory)`` callback; a hook implementation may accept any subset of the hook's
arguments (matched by name), so arguments merx adds later never break an existing plugin.

``KINDS`` maps each kind's key (``"fusions"``) to a ``Kind`` record: ``name`` (that key),
``singular`` (``"fusion"``, what a person types), ``hook``, ``context`` (the factory parameters
merx fills in), ``description``, ``table`` (``"model.fusion"``; None for augmentations) and
``label`` (``"audio tower"``, for messages). ``CONTEXT`` and ``DESCRIPTIONS`` are views of it,
kept for plugins written against merx 0.1.

A name must not contain ``:``. Two plugins may register the same name; it is then contested,
and an experiment picks one by qualified name, ``"<distribution>:<name>"`` (a local file's
stem for a local plugin, ``merx`` for a built-in).

A *factory* is a function or class that builds the component. merx reads its signature:

* parameters named in ``KINDS[kind].context`` are filled in by merx at build time (tower sizes and
  the like); ask for the ones you need;
* every other parameter is a user setting, written in the experiment file next to ``name``;
  its default is the default, its annotation (``int``, ``float``, ``str``, ``bool``, ``list``)
  its type, and a parameter without a default is required. ``*args``/``**kwargs`` are refused.

The factory's docstring is its help: the first line is shown by ``merx list-plugins``.
Import torch inside the factory, not at the top of the plugin module, so that
``merx list-plugins`` and ``merx --help`` stay instant.

What each kind's factory returns (the full contracts are the hook docstrings in
``merx.hookspecs``):

* **fusion** (context: ``audio_dim``, ``text_dim``, ``audio_seq_dim``, ``text_seq_dim``): a
  ``torch.nn.Module`` with an integer ``out_dim``; ``forward(audio, text)`` receives two
  ``TowerOutput`` and returns a float tensor ``[batch, out_dim]`` (``merx run --dry-run``
  runs one forward pass, so a wrong shape fails there). Set the class attribute
  ``needs_sequence = False`` when it reads only the pooled vectors: a frozen text tower's
  token sequences are then never stored, and ``text.sequence``/``text.mask`` are ``None``.
* **audio tower** (context: ``n_mels``, ``n_frames``): a module with integer ``out_dim`` and
  ``seq_dim``; ``forward(mel)`` with mel ``[batch, 1, n_mels, n_frames]`` returns a
  ``TowerOutput``.
* **text tower** (context: ``pretrained``, False when only the architecture is needed): a
  module with integer ``out_dim`` and ``seq_dim``, a bool ``frozen`` (True: merx computes its
  outputs once per song, in eval mode), ``tokenize(texts) -> {"input_ids", "attention_mask"}``
  (tensors ``[batch, length]``) and ``forward(input_ids, attention_mask) -> TowerOutput``.
* **data source** (context: ``cache_dir``): an object whose ``load()`` returns a
  ``SongTable`` (``Song`` rows with a split; unusable songs as ``Failure`` rows, never
  dropped silently).
* **audio/text augmentation**: see ``merx.hookspecs``.

``merx.testing`` checks a fusion or tower against these contracts in one call; ``merx plugin
new KIND NAME`` writes a plugin and its test to start from (KIND in the singular or the plural:
``fusion`` or ``fusions``). Everything not exported here is
internal to merx and may change.
"""

from __future__ import annotations

from collections.abc import Callable

from merx import __version__, hookimpl
from merx.data.songs import QUADRANTS, SPLITS, Failure, Song, SongTable
from merx.hookspecs import KINDS, Kind
from merx.models.outputs import TowerOutput
from merx.plugins import PluginWarning

#: The type of the callback every ``register_<kind>`` hook receives: ``register(name, factory)``.
Register = Callable[[str, Callable], None]

#: Views of ``KINDS`` kept for plugins written against merx 0.1: kind -> context / description.
CONTEXT = {k.name: set(k.context) for k in KINDS.values()}
DESCRIPTIONS = {k.name: k.description for k in KINDS.values()}

# masked_mean is served by __getattr__ below (it needs torch), hence the noqa.
__all__ = ["hookimpl", "Register", "TowerOutput", "masked_mean", "KINDS", "Kind", "CONTEXT", "DESCRIPTIONS",  # noqa: F822
           "Song", "SongTable", "Failure", "SPLITS", "QUADRANTS", "PluginWarning", "__version__"]


def __getattr__(name: str):
    # Helpers that need torch are imported on first use, so `import merx.api` stays instant.
    if name == "masked_mean":
        from merx.models.fusions import masked_mean

        return masked_mean
    raise AttributeError(f"module 'merx.api' has no attribute {name!r}")
