"""A test kit for plugin authors: one call checks a fusion or a tower the way merx will use it.

    from merx.testing import check_fusion

    def test_my_fusion():
        check_fusion(my_fusion, dim=32)  # a factory, or a registered name: "film", "merx-gmu:gmu"

Each ``check_*`` builds the component as merx does (context values from merx, settings
validated like an experiment file's), feeds it a tiny generated batch and raises
:class:`PluginCheckError` (an ``AssertionError``, so pytest shows it as a failed test) naming
the first broken rule and how to fix it. On success it returns a :class:`CheckReport`.

Settings whose names are context values (``audio_dim``, ``n_mels``, ...) override the small
sizes the kit uses by default. ``registered(module_or_file)`` loads a plugin module the way
merx loads plugins and returns what it registers, failing on any warning merx would print.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from merx.hookspecs import KINDS

__all__ = ["check_fusion", "check_audio_tower", "check_text_tower", "registered", "CheckReport",
           "PluginCheckError", "SAMPLE_LYRICS"]

#: Lyrics of different lengths (so that shorter ones are padded), used by ``check_text_tower``.
SAMPLE_LYRICS = [
    "I walk alone through the rain tonight, the city lights are fading and my heart is cold",
    "dance with me",
    "Sunshine on my face, we are singing, we are free, nothing in the world can stop us now "
    "because the summer lasts forever when you are here with me",
]

# The kit's values for every context name of the kinds it checks (which names a kind has is
# KINDS[kind].context). Small, and all different, so a component that mixes up two sizes fails
# the shape checks.
_CONTEXT_VALUES = {"audio_dim": 12, "text_dim": 20, "audio_seq_dim": 8, "text_seq_dim": 16,
                   "n_mels": 16, "n_frames": 32, "pretrained": True}
_BATCH = 3


class PluginCheckError(AssertionError):
    """A plugin breaks a rule merx relies on; the message names the rule and the fix."""


@dataclass
class CheckReport:
    """What a check did: the checks passed, and notes worth reading (not failures)."""

    kind: str
    name: str
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{KINDS[self.kind].label} {self.name!r}: {len(self.passed)} checks passed"]
        lines += [f"  ok    {p}" for p in self.passed]
        lines += [f"  note  {n}" for n in self.notes]
        return "\n".join(lines)


# -- finding and building the component --------------------------------------------------------

class _OnePlugin:
    """Just enough of a registry for the config validator to check one plugin's settings."""

    def __init__(self, plugin):
        self.plugin = plugin

    def get(self, kind, name):
        return self.plugin

    def names(self, kind):
        return [self.plugin.name]


def _plugin(kind: str, target):
    """A ``merx.plugins.Plugin`` for a registered name (plain or qualified, ``"merx:concat"``),
    a Plugin, or a bare factory."""
    from merx.errors import PluginError
    from merx.plugins import Plugin, describe_factory, get_registry

    if isinstance(target, Plugin):
        return target
    if isinstance(target, str):
        try:
            return get_registry().get(kind, target)
        except PluginError as exc:  # unknown, or contested: a qualified name picks one
            raise PluginCheckError(f"{exc}; {exc.hint}" if exc.hint else str(exc)) from None
    if not callable(target):
        raise PluginCheckError(f"expected a factory (function or class), a registered name or a Plugin, "
                               f"got {type(target).__name__}")
    try:
        params, context = describe_factory(kind, target)
    except (TypeError, ValueError) as exc:
        raise PluginCheckError(f"merx cannot use this factory's signature: {exc}") from None
    name = getattr(target, "__name__", type(target).__name__)
    return Plugin(kind, name, target, "test", getattr(target, "__module__", "?"), None, KINDS[kind].hook,
                  params, context)


def _build(kind: str, target, settings: dict, report_attrs: tuple[str, ...]):
    """Validate settings as an experiment file's, then build with merx's context values.

    Returns ``(plugin, builder, module, context, report)``; ``builder()`` makes a fresh instance."""
    from merx.config import ConfigError, _validate_plugin_table

    plugin = _plugin(kind, target)
    defaults = {k: _CONTEXT_VALUES[k] for k in KINDS[kind].context}
    context = {**defaults, **{k: v for k, v in settings.items() if k in KINDS[kind].context}}
    user = {k: v for k, v in settings.items() if k not in KINDS[kind].context}
    try:
        table = _validate_plugin_table({"name": plugin.name, **user}, kind, None, KINDS[kind].table or kind,
                                       _OnePlugin(plugin))
    except ConfigError as exc:
        raise PluginCheckError(f"merx would refuse these settings: {exc}") from None
    table.pop("name")

    def builder():
        return plugin.build(dict(table), **context)

    report = CheckReport(kind, plugin.name)
    obj = _call(builder, f"building {KINDS[kind].label} {plugin.name!r}")
    _require_module(obj, kind, plugin.name, report_attrs)
    report.passed.append(f"builds an nn.Module with {', '.join(report_attrs)} "
                         f"({', '.join(f'{a}={getattr(obj, a)}' for a in report_attrs)})")
    return plugin, builder, obj, context, report


def _call(fn, what: str):
    try:
        return fn()
    except PluginCheckError:
        raise
    except Exception as exc:
        raise PluginCheckError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _require_module(obj, kind: str, name: str, attrs: tuple[str, ...]) -> None:
    from torch import nn

    what = f"{KINDS[kind].label} {name!r}"
    if not isinstance(obj, nn.Module):
        raise PluginCheckError(f"{what}: the factory returned {type(obj).__name__}, not a torch.nn.Module")
    for attr in attrs:
        value = getattr(obj, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PluginCheckError(f"{what}: needs a positive integer attribute {attr!r} (got {value!r}); "
                                   "merx sizes the next layer from it")


# -- tensors -------------------------------------------------------------------------------------

def _tensor_like(value, shape: tuple, what: str, name: str) -> None:
    import torch

    if not isinstance(value, torch.Tensor):
        raise PluginCheckError(f"{name}: {what} is {type(value).__name__}, expected a tensor of shape {shape}")
    if tuple(value.shape) != tuple(shape):
        raise PluginCheckError(f"{name}: {what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if value.dtype != torch.float32:
        raise PluginCheckError(f"{name}: {what} has dtype {value.dtype}, expected torch.float32 "
                               "(float32 inputs must give float32 outputs)")
    if not torch.isfinite(value).all():
        raise PluginCheckError(f"{name}: {what} holds NaN or inf values")


def _close(a, b) -> bool:
    import torch

    return torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _tower_output(out, name: str):
    for attr in ("pooled", "sequence", "mask"):
        if not hasattr(out, attr):
            raise PluginCheckError(f"{name}: forward returned {type(out).__name__}, expected a TowerOutput "
                                   "(pooled, sequence, mask): from merx.api import TowerOutput")
    return out


def _check_sequence(out, batch: int, seq_dim: int, name: str) -> int | None:
    """Validate sequence/mask of a tower output; returns the token count (None without sequence)."""
    import torch

    if out.sequence is None:
        return None
    if out.sequence.dim() != 3:
        raise PluginCheckError(f"{name}: sequence has shape {tuple(out.sequence.shape)}, expected "
                               f"[batch, tokens, seq_dim={seq_dim}]")
    tokens = out.sequence.shape[1]
    _tensor_like(out.sequence, (batch, tokens, seq_dim), "sequence", name)
    if out.mask is not None:
        if out.mask.dtype != torch.bool or tuple(out.mask.shape) != (batch, tokens):
            raise PluginCheckError(f"{name}: mask must be a bool tensor [batch, tokens] = {(batch, tokens)}, "
                                   f"got {out.mask.dtype} {tuple(out.mask.shape)}")
    return tokens


def _state_round_trip(builder, first, run, name: str, report: CheckReport) -> None:
    """A fresh instance loading the first one's state_dict must compute the same thing: what a
    saved checkpoint restores is all the module's state."""
    import torch

    torch.manual_seed(12345)
    second = builder()
    try:
        second.load_state_dict(first.state_dict())
    except Exception as exc:
        raise PluginCheckError(f"{name}: a second instance cannot load the first one's state_dict "
                               f"({type(exc).__name__}: {exc}); building must be deterministic in shape") from None
    first.eval()
    second.eval()
    with torch.no_grad():
        if not _close(run(first), run(second)):
            raise PluginCheckError(f"{name}: a fresh instance loading the state_dict computes something else; "
                                   "keep every tensor the module uses in parameters or buffers "
                                   "(register_buffer), or a saved checkpoint will not restore it")
    report.passed.append("state_dict restores the module (checkpoints work)")


def _training_step(module, forward, params, name: str, report: CheckReport) -> None:
    """One SGD step of ``module`` plus a linear head on a regression loss: the loss must be
    finite, the gradient finite, and the step must change the module's parameters."""
    import math

    import torch

    params = [p for p in params if p.requires_grad]
    before = [p.detach().clone() for p in params]
    module.zero_grad(set_to_none=True)  # forget the gradients of earlier checks
    module.train()
    out = forward()
    head = torch.nn.Linear(out.shape[1], 2)
    everything = params + list(head.parameters())
    loss = torch.nn.functional.mse_loss(head(out), torch.rand(out.shape[0], 2))
    if not math.isfinite(loss.item()):
        raise PluginCheckError(f"{name}: the training loss is {loss.item()} on a tiny batch")
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(everything, 1.0)  # clipped as merx's trainer does
    if not math.isfinite(norm.item()):
        raise PluginCheckError(f"{name}: the gradient norm is {norm.item()} after one step")
    ids = {id(p): n for n, p in module.named_parameters()}
    idle = [ids.get(id(p), "?") for p in params if p.grad is None or not p.grad.abs().sum() > 0]
    # Plain SGD by hand: torch.optim's first use imports torch._dynamo (seconds) for nothing here.
    with torch.no_grad():
        for p in everything:
            if p.grad is not None:
                p -= 0.1 * p.grad
                p.grad = None
    changed = sum(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    if params and not changed:
        raise PluginCheckError(f"{name}: one training step changed none of its parameters")
    if idle:
        report.notes.append(f"{len(idle)} parameter(s) got no gradient in training (unused?): "
                            f"{', '.join(idle[:5])}")
    report.passed.append(f"one training step: loss finite, {changed} of {len(params)} trainable tensors changed"
                         if params else "one training step: loss finite (no trainable parameters)")


# -- fusions -------------------------------------------------------------------------------------

def _fusion_inputs(ctx: dict, batch: int, audio_tokens: int = 10, text_tokens: int = 9):
    """Random tower outputs with padded tokens: audio rows with 10, 7, 10 real tokens, text rows
    with 9, 4, 1 (batch 1: the first row)."""
    import torch

    from merx.models.outputs import TowerOutput

    real_a = [audio_tokens, 7, audio_tokens][:batch] + [audio_tokens] * max(0, batch - 3)
    real_t = [text_tokens, 4, 1][:batch] + [2] * max(0, batch - 3)
    a_mask = torch.arange(audio_tokens)[None, :] < torch.tensor(real_a)[:, None]
    t_mask = torch.arange(text_tokens)[None, :] < torch.tensor(real_t)[:, None]
    audio = TowerOutput(torch.randn(batch, ctx["audio_dim"]), torch.randn(batch, audio_tokens, ctx["audio_seq_dim"]),
                        a_mask)
    text = TowerOutput(torch.randn(batch, ctx["text_dim"]), torch.randn(batch, text_tokens, ctx["text_seq_dim"]),
                       t_mask)
    return audio, text


def check_fusion(fusion, /, **settings) -> CheckReport:
    """Check a fusion: ``fusion`` is its factory, its registered name, or a ``Plugin``.

    ``settings`` are the fusion's own settings (as in ``[model.fusion]``), plus optionally the
    context sizes ``audio_dim``, ``text_dim``, ``audio_seq_dim``, ``text_seq_dim``. Checks:
    nn.Module with ``out_dim``; output ``[batch, out_dim]`` float32 and finite; batch size 1 in
    train and eval mode; deterministic in eval mode; padded tokens (mask False) and dropped
    trailing padding do not change the output; runs without text token sequences when it
    declares ``needs_sequence = False``; gradient reaches both towers' outputs; the
    state_dict restores it; one training step on a tiny batch."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plugin, builder, module, ctx, report = _build("fusions", fusion, settings, ("out_dim",))
        name = f"fusion {plugin.name!r}"
        out_dim = module.out_dim

        def run(m, audio, text, when=""):
            return _call(lambda: m(audio, text), f"{name}: forward{when}")

        audio, text = _fusion_inputs(ctx, _BATCH)
        module.eval()
        with torch.no_grad():
            out = run(module, audio, text)
            _tensor_like(out, (_BATCH, out_dim), "the output", name)
            report.passed.append(f"output [batch, out_dim] = [{_BATCH}, {out_dim}], float32, finite")

            if not torch.equal(out, run(module, audio, text)):
                raise PluginCheckError(f"{name}: two forward passes in eval mode differ; eval mode must be "
                                       "deterministic (dropout and random draws only in training)")
            report.passed.append("deterministic in eval mode")

            noisy = []
            for side in (audio, text):
                seq = side.sequence.clone()
                pad = ~side.mask
                seq[pad] = torch.randn(int(pad.sum()), seq.shape[-1]) * 100
                noisy.append(side._replace(sequence=seq))
            if not _close(out, run(module, *noisy)):
                raise PluginCheckError(f"{name}: changing padded tokens (mask False) changed the output; "
                                       "use the masks: exclude padding from attention (key_padding_mask=~mask) "
                                       "and from averages (merx.api.masked_mean)")
            longer = [side._replace(
                sequence=torch.cat((side.sequence, torch.randn(_BATCH, 5, side.sequence.shape[-1])), dim=1),
                mask=torch.cat((side.mask, torch.zeros(_BATCH, 5, dtype=torch.bool)), dim=1)) for side in (audio, text)]
            if not _close(out, run(module, *longer)):
                raise PluginCheckError(f"{name}: appending padded tokens changed the output; merx stores frozen "
                                       "lyrics tokens without trailing padding, so the result must not depend "
                                       "on how much padding follows the real tokens")
            report.passed.append("padded tokens and trailing padding do not change the output")

            needs_sequence = getattr(module, "needs_sequence", None)
            if needs_sequence is False:
                pooled_only = run(module, audio, text._replace(sequence=None, mask=None),
                                  " without text token sequences (it declares needs_sequence = False)")
                if not _close(out, pooled_only):
                    raise PluginCheckError(f"{name}: declares needs_sequence = False but its output changes "
                                           "when the text token sequence is absent")
                report.passed.append("needs_sequence = False: runs on pooled text vectors alone")
            elif needs_sequence is None:
                report.notes.append("no needs_sequence attribute: merx assumes the fusion reads token "
                                    "sequences; set needs_sequence = False if it reads only pooled vectors "
                                    "(frozen lyrics then need far less memory)")

        for mode in ("eval", "train"):
            module.train(mode == "train")
            with torch.no_grad():
                one = run(module, *_fusion_inputs(ctx, 1), f" on a batch of 1 in {mode} mode")
            _tensor_like(one, (1, out_dim), f"the output for a batch of 1 in {mode} mode", name)
        report.passed.append("batch size 1 in train and eval mode")

        module.train()
        audio_g = audio._replace(pooled=audio.pooled.clone().requires_grad_(),
                                 sequence=audio.sequence.clone().requires_grad_())
        text_g = text._replace(pooled=text.pooled.clone().requires_grad_(),
                               sequence=text.sequence.clone().requires_grad_())
        out = run(module, audio_g, text_g)
        (out * torch.randn_like(out)).sum().backward()
        for label, side in (("audio", audio_g), ("text", text_g)):
            if not any(t.grad is not None and t.grad.abs().sum() > 0 for t in (side.pooled, side.sequence)):
                raise PluginCheckError(f"{name}: no gradient reaches the {label} tower's outputs; the fusion "
                                       f"ignores (or detaches) the {label} side, so that tower would never train")
        report.passed.append("gradient reaches both towers' outputs")

        _state_round_trip(builder, module, lambda m: m(audio, text), name, report)
        _training_step(module, lambda: module(audio, text), list(module.parameters()), name, report)
    return report


# -- audio towers ----------------------------------------------------------------------------------

def check_audio_tower(tower, /, **settings) -> CheckReport:
    """Check an audio tower: ``tower`` is its factory, its registered name, or a ``Plugin``.

    ``settings`` are the tower's own settings (as in ``[model.audio]``), plus optionally
    ``n_mels`` and ``n_frames``. Checks: nn.Module with ``out_dim`` and ``seq_dim``; returns a
    TowerOutput with pooled ``[batch, out_dim]``, sequence ``[batch, tokens, seq_dim]`` and a bool
    mask (or None), float32 and finite; batch size 1 in train and eval mode; deterministic in
    eval mode; gradient reaches the spectrogram; the state_dict restores it; one training step."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plugin, builder, module, ctx, report = _build("audio_towers", tower, settings, ("out_dim", "seq_dim"))
        name = f"audio tower {plugin.name!r}"
        mel = torch.randn(_BATCH, 1, ctx["n_mels"], ctx["n_frames"])

        def run(m, x, when=""):
            return _tower_output(_call(lambda: m(x), f"{name}: forward{when}"), name)

        module.eval()
        with torch.no_grad():
            out = run(module, mel)
            _tensor_like(out.pooled, (_BATCH, module.out_dim), "pooled", name)
            tokens = _check_sequence(out, _BATCH, module.seq_dim, name)
            report.passed.append(f"TowerOutput: pooled [{_BATCH}, {module.out_dim}]"
                                 + (f", sequence [{_BATCH}, {tokens}, {module.seq_dim}]" if tokens else "")
                                 + ", float32, finite")
            if tokens is None:
                report.notes.append("sequence is None: fusions that read audio tokens (cross_attention) "
                                    "cannot use this tower")
            again = run(module, mel)
            if not (torch.equal(out.pooled, again.pooled)
                    and (out.sequence is None or torch.equal(out.sequence, again.sequence))):
                raise PluginCheckError(f"{name}: two forward passes in eval mode differ; eval mode must be "
                                       "deterministic")
            report.passed.append("deterministic in eval mode")

        for mode in ("eval", "train"):
            module.train(mode == "train")
            with torch.no_grad():
                one = run(module, mel[:1], f" on a batch of 1 in {mode} mode")
            _tensor_like(one.pooled, (1, module.out_dim), f"pooled for a batch of 1 in {mode} mode", name)
        report.passed.append("batch size 1 in train and eval mode")

        module.train()
        x = mel.clone().requires_grad_()
        out = run(module, x)
        loss = (out.pooled * torch.randn_like(out.pooled)).sum()
        if out.sequence is not None:
            loss = loss + (out.sequence * torch.randn_like(out.sequence)).sum()
        loss.backward()
        if x.grad is None or not x.grad.abs().sum() > 0:
            raise PluginCheckError(f"{name}: no gradient flows from its outputs back to the spectrogram; "
                                   "the tower detaches its input somewhere")
        report.passed.append("gradient flows back to the spectrogram")

        _state_round_trip(builder, module, lambda m: run(m, mel).pooled, name, report)
        _training_step(module, lambda: module(mel).pooled, list(module.parameters()), name, report)
    return report


# -- text towers -----------------------------------------------------------------------------------

def check_text_tower(tower, /, texts: list[str] | None = None, **settings) -> CheckReport:
    """Check a text tower: ``tower`` is its factory, its registered name, or a ``Plugin``.

    ``settings`` are the tower's own settings (as in ``[model.text]``); ``texts`` replaces
    :data:`SAMPLE_LYRICS`. Checks: nn.Module with ``out_dim``, ``seq_dim``, a bool ``frozen``
    and ``tokenize``; tokens ``[batch, length]``; TowerOutput shapes, float32, finite; batch
    size 1; deterministic in eval mode; padded tokens do not change the pooled vector or the
    real tokens' vectors; a frozen tower has no trainable parameter, gives the same output in
    train mode and works with merx's one-time encoding; a trainable one gets gradients and
    survives one training step; the state_dict restores it."""
    import torch

    texts = list(texts or SAMPLE_LYRICS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plugin, builder, module, ctx, report = _build("text_towers", tower, settings, ("out_dim", "seq_dim"))
        name = f"text tower {plugin.name!r}"
        frozen = getattr(module, "frozen", None)
        if not isinstance(frozen, bool):
            raise PluginCheckError(f"{name}: needs a bool attribute 'frozen' (True: merx computes its outputs "
                                   f"once per song; False: it trains inside the model), got {frozen!r}")
        if not callable(getattr(module, "tokenize", None)):
            raise PluginCheckError(f"{name}: needs a method tokenize(texts) -> "
                                   "{'input_ids': ..., 'attention_mask': ...}")
        tokens = _call(lambda: module.tokenize(texts), f"{name}: tokenize")
        if not isinstance(tokens, dict) or not {"input_ids", "attention_mask"} <= set(tokens):
            raise PluginCheckError(f"{name}: tokenize must return a dict with 'input_ids' and 'attention_mask'")
        ids, att = tokens["input_ids"], tokens["attention_mask"]
        if not (isinstance(ids, torch.Tensor) and isinstance(att, torch.Tensor) and ids.dim() == 2
                and ids.shape == att.shape and ids.shape[0] == len(texts)):
            raise PluginCheckError(f"{name}: tokenize must return two tensors of shape [batch, length] "
                                   f"(batch = {len(texts)} texts)")
        report.passed.append(f"tokenize: input_ids and attention_mask [{len(texts)}, {ids.shape[1]}]")

        def run(m, i, a, when=""):
            return _tower_output(_call(lambda: m(i, a), f"{name}: forward{when}"), name)

        module.eval()
        with torch.no_grad():
            out = run(module, ids, att)
            _tensor_like(out.pooled, (len(texts), module.out_dim), "pooled", name)
            n_tokens = _check_sequence(out, len(texts), module.seq_dim, name)
            report.passed.append(f"TowerOutput: pooled [{len(texts)}, {module.out_dim}]"
                                 + (f", sequence [{len(texts)}, {n_tokens}, {module.seq_dim}]" if n_tokens else "")
                                 + ", float32, finite")
            if not torch.equal(out.pooled, run(module, ids, att).pooled):
                raise PluginCheckError(f"{name}: two forward passes in eval mode differ")
            report.passed.append("deterministic in eval mode")

            pad = att == 0
            if pad.any():
                changed_ids = ids.clone()
                changed_ids[pad] = int(ids[~pad].max())  # a real token where the padding was
                other = run(module, changed_ids, att)
                same = _close(out.pooled, other.pooled)
                if same and out.sequence is not None and out.sequence.shape[1] == ids.shape[1]:
                    real = ~pad
                    same = _close(out.sequence[real], other.sequence[real])
                if not same:
                    raise PluginCheckError(f"{name}: changing padded token ids (attention_mask 0) changed the "
                                           "output; pass the attention mask to the encoder and pool over real "
                                           "tokens only")
                report.passed.append("padded tokens do not change the output")
            else:
                report.notes.append("tokenize padded nothing for texts of different lengths; padding not checked")

        for mode in ("eval", "train"):
            module.train(mode == "train")
            with torch.no_grad():
                one = run(module, ids[:1], att[:1], f" on a batch of 1 in {mode} mode")
            _tensor_like(one.pooled, (1, module.out_dim), f"pooled for a batch of 1 in {mode} mode", name)
        report.passed.append("batch size 1 in train and eval mode")

        trainable = [p for p in module.parameters() if p.requires_grad]
        if frozen:
            if trainable:
                raise PluginCheckError(f"{name}: frozen = True but {len(trainable)} parameter tensors require "
                                       "grad; merx computes a frozen tower's outputs once, so they would never "
                                       "train: call requires_grad_(False) on them, or set frozen = False")
            module.train()
            with torch.no_grad():
                if not _close(out.pooled, run(module, ids, att).pooled):
                    raise PluginCheckError(f"{name}: frozen, yet its output in train mode differs from eval "
                                           "mode (dropout?); keep the encoder in eval mode (override train())")
            from merx.models.text import encode_frozen

            once = _call(lambda: encode_frozen(module, texts, batch_size=2, keep_sequence=True),
                         f"{name}: merx's one-time encoding (encode_frozen)")
            if not _close(once.pooled, out.pooled):
                raise PluginCheckError(f"{name}: encoding in batches of 2 gives other vectors than one batch "
                                       "of 3; the output of a text must not depend on its batch")
            report.passed.append("frozen: no trainable parameters, same output in train mode, encoded once by merx")
        else:
            module.train()
            out = run(module, ids, att)
            (out.pooled * torch.randn_like(out.pooled)).sum().backward()
            if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable):
                raise PluginCheckError(f"{name}: frozen = False but no parameter receives a gradient")
            report.passed.append("trainable: gradient reaches its parameters")
            _training_step(module, lambda: module(ids, att).pooled, trainable, name, report)

        _state_round_trip(builder, module, lambda m: run(m, ids, att).pooled, name, report)
    return report


# -- loading a plugin module -----------------------------------------------------------------------

def _import_file(path: Path) -> ModuleType:
    modname = f"merx_local_plugins.{path.stem}"  # the name merx gives local plugin files
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PluginCheckError(f"cannot import {path}: not a python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(modname, None)
        raise PluginCheckError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def registered(plugin: ModuleType | str | Path) -> dict[str, dict[str, Callable]]:
    """What a plugin registers, ``{kind: {name: factory}}``, loaded as merx loads plugins.

    ``plugin`` is a module, a path to a ``.py`` file, or an importable module name. merx's
    built-ins are loaded first, so taking a built-in's name (which makes it contested) is caught.
    Any warning merx would print (bad hook name or signature, contested name, unusable factory
    signature, an exception inside a hook) raises :class:`PluginCheckError`."""
    from merx import plugins

    if isinstance(plugin, Path) or (isinstance(plugin, str) and plugin.endswith(".py")):
        module, source = _import_file(Path(plugin)), str(Path(plugin))
    elif isinstance(plugin, str):
        try:
            module = importlib.import_module(plugin)
        except Exception as exc:
            raise PluginCheckError(f"plugin module {plugin!r} failed to import: {type(exc).__name__}: {exc}") from exc
        source = plugin
    else:
        module, source = plugin, getattr(plugin, "__name__", repr(plugin))

    reg = plugins.Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", plugins.PluginWarning)  # collected in reg.warnings instead
        plugins._load_builtins(reg)
        builtin_warnings = len(reg.warnings)
        reg.add_module(module, "local file", source, None)
        reg.collect()
    problems = reg.warnings[builtin_warnings:]
    if problems:
        raise PluginCheckError("merx would warn about this plugin:\n" + "\n".join(f"- {p}" for p in problems))
    return {kind: {name: p.factory for name, regs in by_name.items() for p in regs if p.source == source}
            for kind, by_name in reg.registrations.items()}
