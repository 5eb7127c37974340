"""Where every random draw of an augmentation comes from: one generator per (seed, stream, step, song).

``step`` is the epoch for draws made while training (the training order, the random crop, SpecAugment masks,
on-the-fly waveform transforms, the pick of a precomputed variant) and the variant index for
draws made ahead of training (precomputed waveform and text variants). ``stream`` keeps the
kinds of draws apart, so that adding a time mask never changes which crop a song gets.

A generator depends on the song's identity, not on which DataLoader worker loads it or in which
order: a run is reproducible with any ``num_workers``, and two workers can never repeat each
other's draws (the classic bug of numpy's global state copied into every forked worker).

Libraries that draw from python's ``random`` and numpy's global state (audiomentations,
nlpaug) run inside :func:`seeded_globals`, which seeds both from the song's generator and puts
the previous global states back afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np

#: Independent families of draws; the values are part of every seed, so never renumber them.
STREAMS = {
    "crop": 0,
    "spectrogram": 1,
    "waveform": 2,
    "text": 3,
    "audio_variant": 4,
    "text_variant": 5,
    "shuffle": 6,
}

_MASK64 = (1 << 64) - 1


def song_key(song_id: str) -> int:
    """A stable 64-bit integer for a song id (the same in every process and run)."""
    return int.from_bytes(hashlib.sha1(str(song_id).encode("utf-8")).digest()[:8], "big")


def generator(seed: int, stream: str, step: int, song_id: str) -> np.random.Generator:
    """The generator for one song's draws of one kind at one step (epoch or variant index)."""
    try:
        code = STREAMS[stream]
    except KeyError:
        raise ValueError(f"unknown random stream {stream!r}; streams: {', '.join(STREAMS)}") from None
    return np.random.default_rng([int(seed) & _MASK64, code, int(step) & _MASK64, song_key(song_id)])


def epoch_seed(seed: int, stream: str, epoch: int) -> int:
    """A 63-bit seed for draws shared by a whole epoch (the training order), from (seed, epoch) only.

    For a ``torch.Generator`` (which takes one int), so that epoch ``e``'s order never depends
    on how many epochs were drawn before it: a resumed run continues with the same orders."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; streams: {', '.join(STREAMS)}")
    rng = np.random.default_rng([int(seed) & _MASK64, STREAMS[stream], int(epoch) & _MASK64])
    return int(rng.integers(2**63))


def pick(seed: int, stream: str, epoch: int, song_id: str, n: int) -> int:
    """Which of ``n`` precomputed variants a song uses in ``epoch``."""
    return int(generator(seed, stream, epoch, song_id).integers(n))


@contextlib.contextmanager
def seeded_globals(rng: np.random.Generator):
    """Seed python's ``random`` and numpy's global generator from ``rng``; restore them on exit.

    For libraries that only draw from the global state. Not thread-safe (nor is that state)."""
    saved_py, saved_np = random.getstate(), np.random.get_state()
    random.seed(int(rng.integers(2**63)))
    np.random.seed(int(rng.integers(2**32)))
    try:
        yield
    finally:
        random.setstate(saved_py)
        np.random.set_state(saved_np)
