"""The feature bank: each split's model inputs in contiguous tensors, loaded once, batched by index.

The DataLoader path (``merx.dataset``) builds every batch song by song in Python: load a cached
power mel, convert it to dB, crop it, mask it, stack. A bank does that work once per run and
batches on the training device:

* mel spectrograms: the cached power mels of a split converted to dB once (the run's reference
  and floor, ``merx.features.mel.to_db``, the per-song path's own function), and kept only as far
  as the crops need: the fixed window of ``head``/``middle``/``max_energy`` (and of ``random`` in
  evaluation, which crops the middle), or, for a training split cropped at ``random``, the full
  spectrograms padded with the floor, with their lengths;
* the frozen text tower's outputs (or a trainable tower's tokens) and the targets, as stacked.

A batch is an index tensor. The random crop's window and the SpecAugment bands are drawn per
song on the host from the generators the per-song path uses (``merx.augment.seeding``: one per
(seed, epoch, song), the bands by ``merx.augment.audio.draw_bands``), all songs of an epoch at its
start, so every draw is independent of batch size, order and device; the crop (a gather) and the
masks (their fill values included) are then applied batched on the device. The training order is
``merx.dataset.epoch_order``, the DataLoader path's own. Both paths give the same inputs: crops
bit for bit, masks up to the float32 rounding of a fill mean summed in another order (tested).

Where it lives: ``train.data_on_device`` true keeps the bank on the training device, false in
host memory, from which each batch is gathered straight into pinned memory and copied to a CUDA
device without blocking (the bank itself is not pinned: page-locking gigabytes starves the
host), and "auto" on the device when all splits fit in :data:`DEVICE_BUDGET` of its free
memory. On a CPU it is host memory.

Precomputed waveform variants (``augment.strategy = "precompute"``) are rows of the bank too, one
per variant, and each epoch picks a song's row as the per-song path picks its file. Runs whose
inputs are not a fixed function of cached features take the DataLoader path (:func:`unsupported`):
waveform augmentation on the fly (an extraction per song per epoch), text augmentation, and
spectrogram augmentations other than the built-in band masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from merx.augment.seeding import generator, pick
from merx.dataset import epoch_order

#: "auto" puts the banks on the device when they take at most this share of its free memory.
DEVICE_BUDGET = 0.5


def _band_masks(dataset) -> list | None:
    """The training spectrogram chain's steps as ``(p, BandMask)``, [] without one; None when a
    step is not a band mask (plugin code that only the per-song path can run)."""
    from merx.augment.audio import BandMask

    augment = getattr(dataset, "audio_augment", None)
    chain = getattr(augment, "spectrogram", None) if augment is not None else None
    steps = list(chain.steps) if chain else []
    if not all(isinstance(step.apply, BandMask) for step in steps):
        return None
    return [(step.p, step.apply) for step in steps]


def unsupported(dataset) -> str | None:
    """Why ``dataset`` (a training ``merx.dataset.SongDataset``) needs the DataLoader path; None
    when a bank serves it."""
    if getattr(dataset, "text_variants", None):
        return "text augmentation (a lyrics variant per song and epoch)"
    augment = getattr(dataset, "audio_augment", None)
    if augment is not None and augment.waveform is not None and augment.strategy != "precompute":
        return f"waveform augmentation ({augment.strategy})"
    if _band_masks(dataset) is None:
        return "a spectrogram augmentation other than frequency_mask/time_mask"
    return None


class SplitBank:
    """One split's inputs (a ``merx.dataset.SongDataset``) as tensors on ``storage``.

    ``mel`` is float32 ``[R, n_mels, W]`` dB, one row per spectrogram: ``W = n_frames`` cropped
    windows, or for a random training crop the full spectrograms padded with the floor
    (``lengths`` their frames). A row per song, except for a training split with precomputed
    waveform variants: then song ``i``'s ``counts[i]`` variants are rows ``first[i]`` onwards,
    and each epoch picks one (``merx.augment.seeding.pick``, as the per-song path does)."""

    def __init__(self, dataset):
        songs = dataset.songs
        self.song_ids = [s.id for s in songs]
        self.n = len(songs)
        self.seed, self.train = int(dataset.seed), bool(dataset.train)
        self.target = torch.stack([dataset.target(s) for s in songs]) if songs else torch.empty(0)
        self.text = {k: v for k, v in dataset.text.items() if v is not None}
        self.masks = (_band_masks(dataset) or []) if self.train else []
        self.storage = torch.device("cpu")
        view = dataset.mel_view
        self.mel = self.lengths = None
        self.random_crop = view is not None and self.train and view.strategy == "random"
        augment = getattr(dataset, "audio_augment", None)
        variants = augment.variants if self.train and augment is not None and augment.waveform is not None else None
        # Each song's spectrograms: its precomputed waveform variants' files, else its cached clean one.
        sources = [variants.paths[sid] if variants is not None else [None] for sid in self.song_ids]
        self.counts = torch.tensor([len(p) for p in sources], dtype=torch.long)
        self.first = torch.cumsum(self.counts, 0) - self.counts
        self.variants = variants is not None
        if view is not None:
            self.n_frames, self.floor = view.n_frames, view.floor
            self.mel, self.lengths = self._load(view, sources)

    def _load(self, view, sources) -> tuple[torch.Tensor, torch.Tensor]:
        """Each spectrogram in dB, written into one preallocated tensor (never two copies of the
        split in memory): its file's shape is read first (memory-mapped, no data)."""
        from merx.features.crop import crop
        from merx.features.mel import to_db

        files = [view.feature_set.paths[sid] if path is None else path
                 for sid, paths in zip(self.song_ids, sources, strict=True) for path in paths]
        shapes = [np.load(f, mmap_mode="r", allow_pickle=False).shape for f in files]
        n_mels = shapes[0][0] if shapes else 0
        lengths = torch.tensor([shape[-1] for shape in shapes], dtype=torch.long)
        # The fixed window as the per-song path crops it (random evaluates as middle), or the
        # full spectrograms padded with the floor for a random training crop.
        width = max([view.n_frames, *lengths.tolist()]) if self.random_crop else view.n_frames
        strategy = "middle" if view.strategy == "random" else view.strategy
        mel = torch.empty(len(files), n_mels, width, dtype=torch.float32)
        for i, f in enumerate(files):
            db = to_db(np.load(f, allow_pickle=False), view.ref_power, view.top_db)
            if self.random_crop:
                mel[i, :, :db.shape[-1]] = torch.from_numpy(db)
                mel[i, :, db.shape[-1]:] = float(np.float32(view.floor))
            else:
                mel[i] = torch.from_numpy(crop(db, view.n_frames, strategy, floor=view.floor))
        return mel, lengths if self.random_crop else torch.full((len(files),), view.n_frames, dtype=torch.long)

    def _take(self, t: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``index`` of ``t`` on ``device``: gathered in place on the device, or on the host
        straight into pinned memory and copied from there without blocking."""
        if not _pinned(self.storage, device):
            return _to(t.index_select(0, index), device)
        out = torch.empty((len(index), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
        return _to(torch.index_select(t, 0, index, out=out), device)

    @property
    def nbytes(self) -> int:
        tensors = [self.target, *self.text.values()] + ([self.mel] if self.mel is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, storage: torch.device) -> SplitBank:
        """Move the tensors to ``storage``."""
        def move(t):
            return t.to(storage)

        self.target = move(self.target)
        self.text = {k: move(v) for k, v in self.text.items()}
        if self.mel is not None:
            self.mel = move(self.mel)
        self.storage = storage
        return self

    # -- one epoch's draws (host), the same generators as the per-song path -----------------

    def rows(self, epoch: int) -> torch.Tensor | None:
        """Each song's row of ``mel`` in ``epoch``: the variant it picks; None when rows are songs."""
        if not self.variants:
            return None
        picks = [pick(self.seed, "audio_variant", epoch, sid, n)
                 for sid, n in zip(self.song_ids, self.counts.tolist(), strict=True)]
        return self.first + torch.tensor(picks, dtype=torch.long)

    def crop_starts(self, epoch: int, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """Each song's random crop start in ``epoch`` (``merx.features.crop``: no draw for a song
        not longer than the window, which is padded), in the row it reads; None without a random crop."""
        if not self.random_crop:
            return None
        lengths = self.lengths if rows is None else self.lengths[rows]
        spare = (lengths - self.n_frames).tolist()
        return torch.tensor([int(generator(self.seed, "crop", epoch, sid).integers(0, s + 1)) if s > 0 else 0
                             for sid, s in zip(self.song_ids, spare, strict=True)], dtype=torch.long)

    def mask_bands(self, epoch: int) -> list[torch.Tensor]:
        """Per spectrogram step, ``[N, n_masks, 2]`` (start, width) bands of ``epoch``; a step whose
        coin did not come up has width-0 bands. The draws of ``merx.augment.chain.Chain``: one
        child generator per step (spawned), its first draw the coin, then the bands."""
        from merx.augment.audio import draw_bands

        if not self.masks:
            return []
        bands = [torch.zeros(self.n, mask.n_masks, 2, dtype=torch.long) for _, mask in self.masks]
        n_mels = self.mel.shape[1]
        for i, sid in enumerate(self.song_ids):
            children = generator(self.seed, "spectrogram", epoch, sid).spawn(len(self.masks))
            for k, ((p, mask), child) in enumerate(zip(self.masks, children, strict=True)):
                if child.random() < p:
                    size = (n_mels, self.n_frames)[mask.axis]
                    drawn = draw_bands(size, mask.max_width, mask.n_masks, child)
                    if drawn:
                        bands[k][i] = torch.tensor(drawn, dtype=torch.long)
        return bands

    # -- a batch --------------------------------------------------------------------------

    def batch(self, index: torch.Tensor, song_ids: list[str], device: torch.device,
              starts: torch.Tensor | None = None, bands: list[torch.Tensor] = (),
              index_on_device: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> dict:
        """The inputs of songs ``index`` (a tensor on the bank's storage) on ``device``; ``rows``
        and ``starts`` (on the storage) and ``bands`` (on ``device``, indexed by
        ``index_on_device``) are an epoch's draws."""
        out = {"song_id": song_ids, "target": self._take(self.target, index, device)}
        for key, values in self.text.items():
            out[key] = self._take(values, index, device)
        if self.mel is not None:
            row = index if rows is None else rows.index_select(0, index)
            if starts is None:
                mel = self._take(self.mel, row, device)
            else:  # the random crop: a gather of each song's window
                cols = starts.index_select(0, index)[:, None] + torch.arange(self.n_frames, device=index.device)
                bands_ = torch.arange(self.mel.shape[1], device=index.device)
                mel = self.mel[row[:, None, None], bands_[None, :, None], cols[:, None, :]]
                mel = _to(mel.pin_memory() if _pinned(self.storage, device) else mel, device)
            for (_, mask), b in zip(self.masks, bands, strict=True):
                mel = apply_bands(mel, b.index_select(0, index_on_device), mask.axis, mask.fill)
            out["mel"] = mel.unsqueeze(1)
        return out


def _pinned(storage: torch.device, device: torch.device) -> bool:
    """Whether batches are gathered into pinned host memory (a host bank for a CUDA run)."""
    return storage.type == "cpu" and device.type == "cuda"


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # From pinned memory the copy is asynchronous: the host goes on to the next batch. (The caching
    # host allocator keeps a freed pinned block until the copies that read it have finished.)
    if t.device == device:
        return t
    return t.to(device, non_blocking=t.is_pinned())


def apply_bands(mel: torch.Tensor, bands: torch.Tensor, axis: int, fill: str) -> torch.Tensor:
    """SpecAugment on a batch ``[B, n_mels, n_frames]``: each song's bands ``[B, M, 2]`` (start,
    width) along ``axis`` (0 = mel bands, 1 = frames) set to its own mean or min, taken before this
    step's bands as ``merx.augment.audio.mask_bands`` takes it (the mean in float64 where the device
    has it)."""
    bands = bands.to(mel.device)
    if fill == "mean":
        wide = torch.float32 if mel.device.type == "mps" else torch.float64
        value = mel.to(wide).mean(dim=(1, 2)).to(mel.dtype)
    else:
        value = mel.amin(dim=(1, 2))
    size = mel.shape[1 + axis]
    pos = torch.arange(size, device=mel.device)
    start, width = bands[..., 0:1], bands[..., 1:2]
    hit = ((pos >= start) & (pos < start + width)).any(dim=1)  # [B, size]
    hit = hit[:, :, None] if axis == 0 else hit[:, None, :]
    return torch.where(hit, value[:, None, None], mel)


def place(banks: dict[str, SplitBank], device: torch.device, setting) -> str:
    """Move ``banks`` where ``train.data_on_device`` says; returns where, in words."""
    device = torch.device(device)
    total = sum(b.nbytes for b in banks.values())
    on_device = device.type == "cpu" or setting is True
    if setting == "auto" and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        on_device = total <= DEVICE_BUDGET * free
    elif setting == "auto" and device.type != "cpu":
        on_device = True  # MPS shares the host's memory
    storage = device if on_device else torch.device("cpu")
    for bank in banks.values():
        bank.to(storage)
    where = "on the device" if on_device and device.type != "cpu" else \
        ("in memory" if device.type == "cpu" else "in host memory, batches copied from pinned memory")
    return f"feature bank {where} ({total / 2**20:.0f} MiB)"


class BankLoader:
    """Batches of a :class:`SplitBank`, as :class:`merx.dataset.EpochLoader` serves them.

    ``epoch`` is the last epoch served (settable, for a resumed run); an iteration serves
    ``epoch + 1`` in :func:`merx.dataset.epoch_order` when ``shuffle``, else in split order."""

    def __init__(self, bank: SplitBank, batch_size: int, shuffle: bool, seed: int, device):
        self.bank, self.batch_size, self.shuffle, self.seed = bank, int(batch_size), shuffle, int(seed)
        self.device = torch.device(device)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.bank.n / self.batch_size)

    def __iter__(self):
        self.epoch += 1
        bank, epoch = self.bank, self.epoch
        order = epoch_order(self.seed, epoch, bank.n) if self.shuffle else torch.arange(bank.n)
        ids = [bank.song_ids[i] for i in order.tolist()]
        rows = bank.rows(epoch)
        starts = bank.crop_starts(epoch, rows)
        bands = bank.mask_bands(epoch)
        # One copy of the epoch's order and draws where they are used, none per batch.
        on_device = order.to(self.device) if bands else None
        order = order.to(bank.storage)
        rows, starts = [None if t is None else t.to(bank.storage) for t in (rows, starts)]
        bands = [b.to(self.device) for b in bands]
        for i in range(0, bank.n, self.batch_size):
            part = slice(i, i + self.batch_size)
            yield bank.batch(order[part], ids[part], self.device, starts, bands,
                             on_device[part] if on_device is not None else None, rows)


def bank_loaders(data: dict, batch_size: int, seed: int, device, setting) -> tuple[dict, str]:
    """``{split: BankLoader}`` for the datasets of ``merx.pipeline.datasets``, and where the bank is."""
    banks = {split: SplitBank(dataset) for split, dataset in data.items()}
    where = place(banks, device, setting)
    return {split: BankLoader(bank, batch_size, split == "train", seed, device)
            for split, bank in banks.items()}, where
