"""Augmented versions of the training songs, computed before training and cached.

Audio (``augment.strategy = "precompute"``): for each training song and each variant index
``v`` in ``0..variants-1``, the waveform chain runs on the decoded audio with the generator of
(run seed, v, song), and the power mel spectrogram of the result is cached at::

    <cache_dir>/mel-aug/<mel params key>/<chain key>/<audio sha1>-<song key>-v<v>.npy

The chain key digests the waveform steps (names, settings, probabilities, plugin origins), the
run seed and the audiomentations version, so changing any of them computes new files and an
unchanged rerun (or ``merx prepare`` followed by ``merx run``) reads them back. Each epoch a song
uses the variant drawn from (run seed, epoch, song); spectrogram-level steps and the random crop
still draw afresh every epoch on top of it.

Text: ``variants`` versions of each training song's lyrics, drawn the same way; a frozen text
tower encodes each distinct version once (and keeps it in its disk cache).

Trade-off against ``on_the_fly`` (measured in ``benchmarks/augment_cost.py``): precomputing costs
``variants`` extractions per training song once, after which an epoch costs what a clean epoch
costs; on the fly gives fresh waveform draws every epoch but decodes, transforms and computes the
mel spectrogram of every training song in every epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from merx.augment.chain import Chain
from merx.augment.seeding import generator, song_key
from merx.augment.spectrograms import load_waveform, power_mel
from merx.errors import PluginRuntimeError
from merx.features.cache import mel_params

if TYPE_CHECKING:
    from merx.config.settings import FeatureSettings

#: Bump when the way variants are computed changes, so old files are not read as new ones.
RECIPE = 1


@dataclass
class AudioVariants:
    """Where each training song's precomputed audio variants are (``paths[song_id][v]``)."""

    paths: dict[str, list[Path]]
    key: str
    computed: int = 0
    hits: int = 0


def chain_key(chain: Chain, seed: int) -> str:
    """The cache folder name of one (waveform chain, run seed)."""
    try:
        lib = metadata.version("audiomentations")
    except metadata.PackageNotFoundError:
        lib = ""
    text = json.dumps({"chain": chain.fingerprint(), "seed": int(seed), "recipe": RECIPE, "audiomentations": lib},
                      sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def precompute_audio_variants(songs, chain: Chain, features: FeatureSettings, cache_dir, seed: int, variants: int,
                              workers: int = 1, progress: bool = False) -> AudioVariants:
    """Compute (or find in the cache) ``variants`` augmented power mel spectrograms per song.

    ``songs``: the TRAINING songs (each with ``id`` and ``audio_path``). ``workers``: processes
    (1 = in this process, 0 = one per CPU core); workers are spawned, and build the chain again
    from its config through their own plugin registry. An error in an augmentation stops the
    whole stage (it would hit every song), naming the song."""
    from merx.features.cache import is_valid, mel_params_key
    from merx.hashing import file_digest

    params = mel_params(features)
    key = chain_key(chain, seed)
    folder = Path(cache_dir) / "mel-aug" / mel_params_key(features) / key
    paths: dict[str, list[Path]] = {}
    jobs, hits = [], 0
    for song in songs:
        base = f"{file_digest(song.audio_path)}-{song_key(song.id):016x}"
        targets = [folder / f"{base}-v{v}.npy" for v in range(variants)]
        paths[song.id] = targets
        missing = [(v, str(t)) for v, t in enumerate(targets) if not is_valid(t, params["n_mels"])]
        hits += variants - len(missing)
        if missing:
            jobs.append((song.id, str(song.audio_path), missing))

    computed = sum(len(m) for _, _, m in jobs)
    _run(jobs, chain, params, int(seed), workers, progress, hits)
    return AudioVariants(paths, key, computed, hits)


def _run(jobs, chain, params, seed, workers, progress, hits) -> None:
    if not jobs:
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    workers = workers or os.cpu_count() or 1
    n = min(workers, len(jobs))
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task(f"augmented variants ({hits} cached, {n} worker{'s' if n > 1 else ''})",
                            total=len(jobs))
        if n <= 1:
            for job in jobs:
                _compute(*job, chain=chain, params=params, seed=seed)
                bar.advance(task)
            return
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        from merx.features.workers import process_pool

        # The feature stage's pool: spawned workers that die with this process and are ended at
        # once by an interrupt. Each worker builds the chain again from its recipe
        # (see merx.augment.chain).
        with process_pool(n, _init_worker, (chain, params, seed)) as pool:
            futures = [pool.submit(_compute_in_worker, *job) for job in jobs]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.advance(task)
            except BrokenProcessPool as exc:
                raise RuntimeError(
                    f"an augmentation worker process died ({exc}). Run with features.workers = 1 to see the "
                    "error in this process; a script calling this with workers > 1 needs an "
                    "`if __name__ == '__main__':` guard") from exc


_WORKER: dict = {}


def _init_worker(chain, params, seed) -> None:
    _WORKER.update(chain=chain, params=params, seed=seed)


def _compute_in_worker(song_id, audio_path, missing) -> None:
    _compute(song_id, audio_path, missing, **_WORKER)


def _compute(song_id: str, audio_path: str, missing: list, *, chain: Chain, params: dict, seed: int) -> None:
    from merx.features.cache import save_atomic

    try:
        samples = load_waveform(audio_path, params["sample_rate"])
        for v, target in missing:
            out = chain(samples.copy(), generator(seed, "waveform", v, song_id))
            save_atomic(Path(target), power_mel(np.asarray(out, dtype=np.float32), params))
    except PluginRuntimeError as exc:  # already names the augmentation; say which song it was
        raise PluginRuntimeError(f"{exc} (song {song_id!r}, {audio_path})") from exc
    except Exception as exc:
        raise RuntimeError(f"augmenting song {song_id!r} ({audio_path}) failed: {type(exc).__name__}: {exc}") from exc


def text_variants(songs, chain: Chain, seed: int, variants: int) -> list[list[str]]:
    """``out[v][i]``: song ``i``'s lyrics through the text chain with the generator of (seed, v, song)."""
    return [[chain(song.lyrics or "", generator(seed, "text", v, song.id)) for song in songs]
            for v in range(variants)]
