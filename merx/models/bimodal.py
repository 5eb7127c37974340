"""The whole model: audio tower + text tower -> fusion -> head, and its builder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from merx.hookspecs import KINDS
from merx.models.contracts import check_built, check_fusion_output, check_tower_output, running
from merx.models.head import Head
from merx.models.outputs import TowerOutput
from merx.plugins import PluginBuildError

if TYPE_CHECKING:
    from merx.config.settings import ModelSettings, PluginChoice
    from merx.plugins import Plugin

MODALITIES = ("both", "audio", "text")


def _trainable(module: nn.Module | None) -> list[nn.Parameter]:
    return [] if module is None else [p for p in module.parameters() if p.requires_grad]


class BimodalModel(nn.Module):
    """Towers, fusion and head joined. With one modality the head sits on that tower's pooled
    vector and there is no fusion.

    ``forward(batch)`` reads ``batch["mel"]`` ``[B, 1, n_mels, n_frames]`` when audio is used,
    and for text either ``input_ids``/``attention_mask`` (the text tower runs) or the frozen
    tower's precomputed ``text_pooled`` ``[B, D]`` (plus ``text_sequence``/``text_mask`` when
    the fusion reads token sequences).

    ``plugins`` maps a part ("audio", "text", "fusion") to the registry plugin that built it: when
    that part's code fails or breaks its contract (``merx.models.contracts``), the error names
    the plugin and where it comes from."""

    def __init__(self, audio_tower: nn.Module | None, text_tower: nn.Module | None,
                 fusion: nn.Module | None, head: nn.Module, modalities: str = "both",
                 plugins: dict[str, Plugin] | None = None):
        super().__init__()
        if modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(MODALITIES)}; got {modalities!r}")
        if modalities in ("both", "audio") and audio_tower is None:
            raise ValueError(f"modalities {modalities!r} needs an audio tower")
        if modalities in ("both", "text") and text_tower is None:
            raise ValueError(f"modalities {modalities!r} needs a text tower")
        if modalities == "both" and fusion is None:
            raise ValueError("modalities 'both' needs a fusion")
        self.modalities = modalities
        self.audio_tower = audio_tower if modalities != "text" else None
        self.text_tower = text_tower if modalities != "audio" else None
        self.fusion = fusion if modalities == "both" else None
        self.head = head
        self.plugins = dict(plugins or {})

    @property
    def uses_audio(self) -> bool:
        return self.audio_tower is not None

    @property
    def uses_text(self) -> bool:
        return self.text_tower is not None

    @property
    def needs_text_sequence(self) -> bool:
        """Whether the fusion reads token sequences (then precomputed text must keep them)."""
        # A plugin fusion that does not say is assumed to read them: slower, never wrong.
        return self.fusion is not None and bool(getattr(self.fusion, "needs_sequence", True))

    def _text(self, batch: dict) -> TowerOutput:
        if "text_pooled" in batch:
            sequence, mask = batch.get("text_sequence"), batch.get("text_mask")
            if self.needs_text_sequence and sequence is None:
                raise ValueError("the fusion reads text token sequences, but the batch holds only "
                                 "precomputed pooled vectors; encode with keep_sequence=True")
            return TowerOutput(batch["text_pooled"], sequence, mask)
        if "input_ids" not in batch:
            raise KeyError("batch has no text: expected 'input_ids'/'attention_mask' or 'text_pooled'")
        ids, tower, plugin = batch["input_ids"], self.text_tower, self.plugins.get("text")
        with running(plugin, "text tower", tower):
            out = tower(ids, batch["attention_mask"])
        return check_tower_output(out, ids.shape[0], tower, plugin, "text tower")

    def _audio(self, mel: torch.Tensor) -> TowerOutput:
        tower, plugin = self.audio_tower, self.plugins.get("audio")
        with running(plugin, "audio tower", tower):
            out = tower(mel)
        return check_tower_output(out, mel.shape[0], tower, plugin, "audio tower")

    def _fuse(self, audio: TowerOutput, text: TowerOutput) -> torch.Tensor:
        fusion, plugin = self.fusion, self.plugins.get("fusion")
        with running(plugin, "fusion", fusion):
            out = fusion(audio, text)
        return check_fusion_output(out, audio.pooled.shape[0], fusion, plugin)

    def forward(self, batch: dict) -> torch.Tensor:
        audio = self._audio(batch["mel"]) if self.uses_audio else None
        text = self._text(batch) if self.uses_text else None
        if self.modalities == "both":
            fused = self._fuse(audio, text)
        else:
            fused = (audio if audio is not None else text).pooled
        return self.head(fused)

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per part (audio, text, fusion, head), for per-part learning rates."""
        return {"audio": _trainable(self.audio_tower), "text": _trainable(self.text_tower),
                "fusion": _trainable(self.fusion), "head": _trainable(self.head)}


def build_model(model: ModelSettings, registry, *, n_mels: int, n_frames: int, out_dim: int,
                pretrained: bool = True) -> BimodalModel:
    """Build the model ``model`` describes, every part through the plugin registry.

    ``n_mels``/``n_frames`` size the spectrogram the audio tower reads; ``out_dim`` is the number
    of outputs (2 for valence/arousal, 4 for quadrants); ``pretrained=False`` builds
    architectures only (dry runs: no weights are loaded)."""
    if model.modalities not in MODALITIES:
        raise ValueError(f"model.modalities must be one of {', '.join(MODALITIES)}; got {model.modalities!r}")
    plugins: dict[str, Plugin] = {}

    def build(part: str, kind: str, choice: PluginChoice, attrs: tuple[str, ...], **context):
        plugin = plugins[part] = registry.get(kind, choice.name)
        try:
            return check_built(plugin.build(dict(choice.settings), **context), kind, choice.name, attrs)
        except PluginBuildError:
            raise
        except Exception as exc:  # a plugin's own error: name the plugin and the settings to look at
            raise PluginBuildError(plugin, KINDS[kind].table, f"{type(exc).__name__}: {exc}") from exc

    audio = text = fusion = None
    if model.uses_audio:
        audio = build("audio", "audio_towers", model.audio, ("out_dim", "seq_dim"), n_mels=n_mels, n_frames=n_frames)
    if model.uses_text:
        text = build("text", "text_towers", model.text, ("out_dim", "seq_dim"), pretrained=pretrained)
    if model.modalities == "both":
        fusion = build("fusion", "fusions", model.fusion, ("out_dim",), audio_dim=audio.out_dim,
                       text_dim=text.out_dim, audio_seq_dim=audio.seq_dim, text_seq_dim=text.seq_dim)
        in_dim = fusion.out_dim
    else:
        in_dim = (audio if audio is not None else text).out_dim
    head = Head(in_dim, out_dim, hidden=model.head.hidden, dropout=model.head.dropout)
    return BimodalModel(audio, text, fusion, head, model.modalities, plugins)
