"""Lyrics as model inputs: tokens, or a frozen text tower's outputs computed once and cached.

A frozen tower gives the same vector for the same text every time, so merx runs it once per
distinct lyrics text (not once per batch and epoch) and keeps each result on disk under
``<cache_dir>/text/<sha1 of the tower's identity>/<sha1 of the text>.pt``: a rerun, another
seed, or an augmented variant seen before costs nothing. A trainable tower gets token ids
instead and runs inside the model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from merx.hashing import text_digest
from merx.models.outputs import TowerOutput


def _cache_folder(cache_dir, identity: str) -> Path:
    return Path(cache_dir) / "text" / hashlib.sha1(identity.encode()).hexdigest()[:16]


def _load_cached(path: Path, keep_sequence: bool):
    try:
        item = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return None  # missing or half-written: encode again
    if keep_sequence and "sequence" not in item:
        return None
    return item


def _save_cached(path: Path, item: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(item, tmp)
    os.replace(tmp, path)  # atomic: parallel runs never read a half-written file


@torch.no_grad()
def encode_frozen(tower, texts: list[str], batch_size: int = 32, keep_sequence: bool = False,
                  device="cpu", cache_dir=None) -> TowerOutput:
    """Run a frozen text tower once over every text; returns stacked CPU tensors.

    pooled ``[N, D]``; with ``keep_sequence`` also sequence ``[N, T, seq_dim]`` and mask
    ``[N, T]``, where T is the longest real token count (trailing padding is dropped; a
    fusion that honours the mask gives the same result). Without it sequence and mask are None.
    Identical texts are encoded once. With ``cache_dir``, each text's output is kept on disk
    under (tower.identity, sha1 of the text) and reused by later calls and runs. The tower's
    train/eval mode and device are restored afterwards."""
    if not getattr(tower, "frozen", True):
        raise ValueError("encode_frozen: this text tower trains (freeze = false); its outputs change "
                         "every step, so they cannot be computed once. Run it inside the model instead.")
    digests = [text_digest(t) for t in texts]
    items: dict[str, dict] = {}
    folder = _cache_folder(cache_dir, tower.identity) if cache_dir is not None else None
    if folder is not None:
        for d in dict.fromkeys(digests):
            hit = _load_cached(folder / f"{d}.pt", keep_sequence)
            if hit is not None:
                items[d] = hit
    todo = {d: t for d, t in zip(digests, texts, strict=True) if d not in items}

    was_training = tower.training
    first = next(tower.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    tower.eval().to(device)
    try:
        pending = list(todo.items())
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            tokens = tower.tokenize([t for _, t in chunk])
            out = tower(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
            for i, (d, _) in enumerate(chunk):
                # clone: a view would keep (and torch.save would write) the whole batch's storage.
                item = {"pooled": out.pooled[i].float().cpu().clone()}
                if keep_sequence:
                    real = out.mask[i].cpu() if out.mask is not None else slice(None)
                    item["sequence"] = out.sequence[i].float().cpu()[real].clone()
                items[d] = item
                if folder is not None:
                    _save_cached(folder / f"{d}.pt", item)
    finally:
        tower.to(home).train(was_training)

    pooled = torch.stack([items[d]["pooled"] for d in digests]) if digests else torch.empty(0, tower.out_dim)
    if not keep_sequence:
        return TowerOutput(pooled, None, None)
    seqs = [items[d]["sequence"] for d in digests]
    longest = max((s.shape[0] for s in seqs), default=0)
    sequence = torch.zeros(len(seqs), longest, tower.seq_dim)
    mask = torch.zeros(len(seqs), longest, dtype=torch.bool)
    for i, s in enumerate(seqs):
        sequence[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = True
    return TowerOutput(pooled, sequence, mask)


def encode_texts(model, texts: list[str], device, batch_size: int, cache_dir=None) -> dict:
    """Text tensors for ``texts``: a frozen tower's outputs computed once, else tokens.

    ``model`` is a ``merx.models.bimodal.BimodalModel``; its text tower is plugin code, so a
    failure in it is reported as that plugin's (``merx.models.contracts``)."""
    from merx.models.contracts import running

    tower = getattr(model, "text_tower", None)
    if tower is None:
        return {}
    plugin = getattr(model, "plugins", {}).get("text")
    if tower.frozen:
        with running(plugin, "text tower", tower, "forward (encoding the lyrics once)"):
            out = encode_frozen(tower, texts, batch_size=batch_size, keep_sequence=model.needs_text_sequence,
                                device=device, cache_dir=cache_dir)
        return {"text_pooled": out.pooled, "text_sequence": out.sequence, "text_mask": out.mask}
    with running(plugin, "text tower", tower, "tokenize"):
        tokens = tower.tokenize(texts)
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def text_inputs(model, songs, device, batch_size: int, cache_dir=None) -> dict:
    """Per-song text tensors (``encode_texts`` of each song's lyrics); a frozen tower's outputs
    are kept in (and read from) its disk cache under ``cache_dir``."""
    return encode_texts(model, [s.lyrics or "" for s in songs], device, batch_size, cache_dir=cache_dir)


def text_variant_inputs(model, songs, texts_by_variant: list[list[str]], device, batch_size: int,
                        cache_dir=None) -> list[dict]:
    """``text_inputs`` for each lyrics variant (``texts_by_variant[v][i]``), one dict per variant.

    All variants are encoded in one call, so token sequences share one padded length and any
    two variants batch together. A frozen tower's outputs go to its disk cache under
    ``cache_dir`` (per distinct text), so a rerun does not encode them again."""
    if getattr(model, "text_tower", None) is None:
        return []
    n = len(songs)
    flat = [text for texts in texts_by_variant for text in texts]
    encoded = encode_texts(model, flat, device, batch_size, cache_dir=cache_dir)
    return [{k: (None if t is None else t[v * n:(v + 1) * n]) for k, t in encoded.items()}
            for v in range(len(texts_by_variant))]
