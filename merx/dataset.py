"""Songs -> model inputs: the torch Dataset and the per-epoch loader wrapper."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from merx.augment.seeding import epoch_seed, generator, pick
from merx.data.songs import QUADRANTS
from merx.errors import PluginRuntimeError

_RAISED = f"{PluginRuntimeError.__module__}.{PluginRuntimeError.__qualname__}: "


def _worker_message(message: str) -> str:
    lines = [line for line in message.splitlines() if line.startswith(_RAISED)]
    return lines[-1][len(_RAISED):] if lines else message

class SongDataset(Dataset):
    """One item per song: mel spectrogram, text inputs, target.

    ``text`` holds per-song tensors, indexed like ``songs``: either tokens
    (``input_ids``/``attention_mask``) for a trainable text tower, or a frozen tower's outputs
    computed once (``text_pooled``, optionally ``text_sequence``/``text_mask``).

    Training only (``train=True``): ``audio_augment`` (a ``merx.augment.spectrograms.TrainingMelView``)
    makes each epoch's augmented spectrogram; ``text_variants`` is a list of dicts like ``text``,
    one per precomputed lyrics variant, of which each epoch uses one. Every random draw (random
    crop, augmentations, variant picks) comes from a generator seeded by (seed, epoch, song id)
    (``merx.augment.seeding``), so a run is reproducible and DataLoader workers never share
    draws. Evaluation datasets take neither and read ``mel_view`` and ``text`` unchanged."""

    def __init__(self, songs, task: str, mel_view=None, text: dict | None = None, train: bool = False,
                 seed: int = 0, audio_augment=None, text_variants: list[dict] | None = None):
        if not train and (audio_augment is not None or text_variants):
            raise ValueError("augmentation is for training datasets only (train=True)")
        self.songs = songs
        self.task = task
        self.mel_view = mel_view
        self.text = text or {}
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.audio_augment = audio_augment
        self.text_variants = list(text_variants or [])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.songs)

    def target(self, song):
        if self.task == "classification":
            return torch.tensor(QUADRANTS.index(song.quadrant), dtype=torch.long)
        return torch.tensor([song.valence, song.arousal], dtype=torch.float32)

    def __getitem__(self, i: int) -> dict:
        song = self.songs[i]
        item = {"song_id": song.id, "target": self.target(song)}
        mel = None
        if self.audio_augment is not None:
            mel = self.audio_augment.get(song.id, self.epoch)
        elif self.mel_view is not None:
            rng = generator(self.seed, "crop", self.epoch, song.id) if self.train else None
            mel = self.mel_view.get(song.id, train=self.train, rng=rng)
        if mel is not None:
            item["mel"] = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).unsqueeze(0)
        text = self.text
        if self.text_variants:
            text = self.text_variants[pick(self.seed, "text_variant", self.epoch, song.id, len(self.text_variants))]
        for key, values in text.items():
            if values is not None:
                item[key] = values[i]
        return item


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a permutation of ``range(n)`` that depends on
    (seed, epoch) only. The one definition both the DataLoader path (:class:`EpochSampler`) and
    the feature bank (``merx.features.bank``) use, so the two train on the same batches."""
    g = torch.Generator()
    g.manual_seed(epoch_seed(seed, "shuffle", epoch))
    return torch.randperm(n, generator=g)


class EpochSampler(Sampler[int]):
    """Shuffles as :func:`epoch_order` for the epoch set by :meth:`set_epoch`."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed), 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from epoch_order(self.seed, self.epoch, self.n).tolist()

    def __len__(self) -> int:
        return self.n


class EpochLoader:
    """A DataLoader that tells its dataset and sampler which epoch it is serving (for seeded draws).

    ``epoch`` is the last epoch served; each iteration serves ``epoch + 1``. The training order
    (:class:`EpochSampler`) and the workers' base seed (the loader's generator, reseeded at the
    start of every epoch) are functions of (seed, epoch) alone: a resumed run sets ``epoch = k``
    and its epoch ``k + 1`` has the draws of an uninterrupted run.
    Workers are re-created each epoch (persistent_workers off), so they see the new epoch."""

    def __init__(self, loader: DataLoader, seed: int | None = None):
        self.loader = loader
        self.dataset = loader.dataset
        self.seed = seed
        self.epoch = 0

    def __iter__(self):
        self.epoch += 1
        if self.seed is not None and self.loader.generator is not None:
            self.loader.generator.manual_seed(epoch_seed(self.seed, "shuffle", self.epoch))
        for part in (self.dataset, self.loader.sampler):
            if hasattr(part, "set_epoch"):
                part.set_epoch(self.epoch)
        try:
            yield from self.loader
        except PluginRuntimeError as exc:
            # From a worker process, torch re-raises it with the worker's whole traceback as its
            # message; the plugin's own one line is the traceback's last.
            raise PluginRuntimeError(_worker_message(str(exc))) from None

    def __len__(self) -> int:
        return len(self.loader)


def make_loader(dataset: SongDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                worker_init_fn=None):
    """An :class:`EpochLoader` whose order in epoch ``e`` is :func:`epoch_order` (seed, e) when ``shuffle``."""
    sampler = EpochSampler(len(dataset), seed) if shuffle else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        generator=torch.Generator(), worker_init_fn=worker_init_fn, drop_last=False)
    return EpochLoader(loader, seed)
