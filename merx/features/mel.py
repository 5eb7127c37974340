"""Mel spectrograms: cached extraction, an absolute dB scale, and fixed-length views.

Public API::

    extract_features(songs, features, cache_dir, workers=None, progress=True, pool=None) -> FeatureSet
        Decode every song's audio (librosa, mono, resampled) and cache its full-length float32
        POWER mel spectrogram; failures are recorded per song, the rest go on. By default in a
        pool of threads, one per usable core.
    FeatureSet.load_power(song_id) -> np.ndarray [n_mels, frames]
    to_db(power, ref_power, top_db) -> np.ndarray
        10*log10(power / ref_power), clipped below at -top_db (a floor fixed relative to the
        reference, the same for every clip).
    train_max_ref(feature_set, train_song_ids) -> float
        The largest power over the TRAINING songs (reads only their cached files).
    reference_power(feature_set, features, train_song_ids) -> float
        ``ref_value`` or ``train_max_ref``, as ``features.ref`` says.
    MelView(feature_set, features, ref_power).get(song_id, train=False, rng=None)
        load -> dB -> crop -> pad: float32 [n_mels, n_frames], what a model sees.
    n_frames(features), mel_params_key(features)   (from crop.py and cache.py)

``features`` is the experiment's ``merx.config.settings.FeatureSettings``.

The notebooks' flaws this makes impossible: every clip shares one dB reference (no per-clip
``ref=np.max``), padding is the floor of that scale (never 0 dB), and longer clips are cut by a
chosen strategy instead of always keeping the first 30 s.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from merx.data.songs import Failure, Song
from merx.features.cache import is_valid, mel_dir, mel_params, mel_params_key, save_atomic
from merx.features.crop import crop, n_frames
from merx.hashing import file_digest

if TYPE_CHECKING:
    from merx.config.settings import FeatureSettings

__all__ = ["FeatureSet", "MelView", "extract_features", "mel_params_key", "n_frames", "reference_power",
           "to_db", "train_max_ref"]

#: Smallest power before the logarithm (librosa's default ``amin``).
AMIN = 1e-10


@dataclass
class FeatureSet:
    """What ``extract_features`` returns.

    ``paths`` maps each usable song to its cached power mel file (songs with identical audio
    share a file). ``hits`` counts songs served from the cache, ``computed`` songs extracted in
    this run: ``hits + computed + len(failures) == len(songs)``."""

    paths: dict[str, Path]
    failures: list[Failure] = field(default_factory=list)
    hits: int = 0
    computed: int = 0

    def load_power(self, song_id: str) -> np.ndarray:
        """The song's full-length power mel spectrogram, float32 ``[n_mels, frames]``."""
        try:
            path = self.paths[song_id]
        except KeyError:
            raise KeyError(f"no mel spectrogram for song {song_id!r}: it failed extraction or was not "
                           "among the songs given to extract_features") from None
        return np.load(path, allow_pickle=False)


# -- extraction -----------------------------------------------------------------------------

def extract_features(songs: list[Song], features: FeatureSettings, cache_dir: str | os.PathLike,
                     workers: int | None = None, progress: bool = True, pool: str | None = None) -> FeatureSet:
    """Cache the power mel spectrogram of every song's audio; return where each one is.

    A song whose audio cannot be read or decoded, or decodes to no samples, becomes a
    ``Failure(stage="audio")`` with the library's error; the others go on. Files already in the
    cache (same audio bytes, same extraction settings, file loads) are not recomputed.
    ``workers`` (``None`` = ``features.workers``): 0 = automatic, a pool of threads in this
    process, one per usable core (at most ``MAX_AUTO_THREADS``); 1 = in this process, one song
    after another; N > 1 = N spawned worker processes. Never more threads or processes than
    songs to extract. ``pool`` = "threads" or "processes" overrides that choice of kind (see
    ``_plan``). Processes are spawned (not forked), so a script calling this with them needs the
    usual ``if __name__ == "__main__":`` guard. ``progress`` shows a bar on stderr.

    Every path writes the same bytes: the same librosa calls, with BLAS at one thread."""
    workers = features.workers if workers is None else workers
    _check_workers(workers, pool)
    cache_dir = Path(cache_dir).resolve()
    _use_numba_cache(cache_dir)
    folder = mel_dir(cache_dir, features)
    params = mel_params(features)

    paths: dict[str, Path] = {}
    failures: list[Failure] = []
    hits = 0
    jobs: dict[Path, tuple[str, list[Song]]] = {}  # cache file -> (audio to decode, songs sharing it)
    found: set[Path] = set()
    for song in songs:
        if not song.audio_path:
            failures.append(Failure(song.id, "audio", "the song has no audio file", None))
            continue
        try:
            digest = file_digest(song.audio_path)
        except OSError as exc:
            failures.append(Failure(song.id, "audio", f"cannot read the audio file: {_describe(exc)}",
                                    str(song.audio_path)))
            continue
        target = folder / f"{digest}.npy"
        if target in jobs:
            jobs[target][1].append(song)
        elif target in found or is_valid(target, params["n_mels"]):
            found.add(target)
            paths[song.id] = target
            hits += 1
        else:
            jobs[target] = (str(song.audio_path), [song])

    computed = 0
    # closing: an interrupt between two results must end the workers now, not when the generator
    # is garbage-collected.
    with contextlib.closing(_run(jobs, params, *_plan(len(jobs), workers, pool), progress, hits)) as results:
        for target, reason in results:
            audio_path, sharing = jobs[target]
            for song in sharing:
                if reason is None:
                    paths[song.id] = target
                    computed += 1
                else:
                    failures.append(Failure(song.id, "audio", reason, audio_path))

    order = {s.id: i for i, s in enumerate(songs)}
    failures.sort(key=lambda f: order.get(f.song_id, len(order)))
    return FeatureSet(paths, failures, hits, computed)


def _use_numba_cache(cache_dir: Path) -> None:
    """Point numba's JIT cache at ``<cache_dir>/numba`` unless the user chose a folder.

    librosa's numba functions take ~20 s to compile; numba's default cache sits next to the
    installed package, which may be read-only. Set before librosa is imported here and
    inherited by worker processes; the first cache folder of a process wins."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        folder = cache_dir / "numba"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)


#: The most threads ``workers = 0`` starts. librosa's heavy calls (soundfile's decoding, soxr's
#: resampling, scipy's FFT, the mel filters' matrix product) release the GIL; what holds it
#: (librosa's Python between them, small numpy steps) bounds the speed-up. On 2 free cores 2
#: threads extract 1.6-1.7x (8-s clips) to 1.8x (30-s clips) as fast as one (benchmarks/README.md);
#: counts past 2 are unmeasured, hence a cap rather than every core of a big machine.
MAX_AUTO_THREADS = 16
#: Songs per task sent to a worker process, at most: one task per song costs a round trip through
#: the pool's queues each; far bigger tasks would make the progress bar jump and the last task
#: finish alone.
MAX_CHUNK = 16


def _check_workers(workers: int, pool: str | None) -> None:
    if workers < 0:
        raise ValueError(f"workers must be 0 (automatic) or more, got {workers}")
    if pool not in (None, "threads", "processes"):
        raise ValueError(f"pool must be 'threads' or 'processes', got {pool!r}")


def _plan(jobs: int, workers: int, pool: str | None = None) -> tuple[str, int]:
    """``(kind, count)`` for extracting ``jobs`` files: kind "threads" or "processes"; count 1
    means in this thread, whatever the kind.

    ``workers = 0`` picks threads: one librosa import, one numba JIT (about 16 s on a cold cache) and
    no spawned interpreters (2 s each, librosa loaded), where a process per core used to pay all
    of it per process. An explicit count keeps meaning processes (``features.workers`` is
    documented as such), the choice where the GIL would limit threads, e.g. long clips on many
    cores, or where other jobs hold the cores (a thread descheduled while holding the GIL stalls
    the rest; benchmarks/README.md). Never more than ``jobs``: idle threads or processes only cost."""
    from merx.features.workers import usable_cores

    _check_workers(workers, pool)
    kind = pool or ("threads" if workers == 0 else "processes")
    count = workers or usable_cores()
    if kind == "threads" and not workers:
        count = min(count, MAX_AUTO_THREADS)
    return kind, max(1, min(count, jobs))


def _run(jobs: dict, params: dict, kind: str, n: int, progress: bool, hits: int):
    """Yield ``(cache file, failure reason or None)`` for each job, as they finish."""
    if not jobs:
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from merx.features.workers import one_blas_thread

    # librosa compiles (cold numba cache) or loads its JIT functions here, once, before any
    # worker: threads then share them, and spawned processes find them in NUMBA_CACHE_DIR
    # instead of each compiling the same functions at the same time.
    _load_librosa()
    who = "in this process" if n <= 1 else f"{n} {kind}"
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task(f"mel spectrograms ({hits} cached, {who})", total=len(jobs))
        if kind == "processes" and n > 1:
            # Processes set their own BLAS threads and warnings (merx.features.workers, _init_worker).
            with contextlib.closing(_in_processes(jobs, params, n)) as results:
                for target, reason in results:
                    yield target, reason
                    bar.advance(task)
            return
        # Threads and the plain loop: BLAS at one thread (n threads already use n cores, and the
        # bytes must not depend on the path), decoder warnings silenced once for all threads
        # (warnings.catch_warnings is not thread-safe).
        with one_blas_thread(), _quiet_decoders():
            if n <= 1:
                for target, (audio_path, _) in jobs.items():
                    yield target, _compute(audio_path, str(target), params)
                    bar.advance(task)
                return
            with contextlib.closing(_in_threads(jobs, params, n)) as results:
                for target, reason in results:
                    yield target, reason
                    bar.advance(task)


def _in_threads(jobs: dict, params: dict, n: int):
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(n, thread_name_prefix="merx-mel")
    try:
        futures = {pool.submit(_compute, audio_path, str(target), params): target
                   for target, (audio_path, _) in jobs.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        # After an interrupt or an error: the songs not started are dropped; a thread cannot be
        # stopped, so each running one finishes its song (cached, written atomically) first.
        pool.shutdown(wait=True, cancel_futures=True)


def _in_processes(jobs: dict, params: dict, n: int):
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    from merx.features.workers import process_pool

    items = [(audio_path, target) for target, (audio_path, _) in jobs.items()]
    size = max(1, min(MAX_CHUNK, -(-len(items) // (4 * n))))  # about 4 tasks per worker balance the load
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    # Spawned workers load librosa from the numba cache the parent filled (NUMBA_CACHE_DIR is
    # inherited); they watch this process, so none outlives it (merx.features.workers).
    with process_pool(n, _init_worker) as pool:
        futures = {pool.submit(_compute_chunk, [(a, str(t)) for a, t in chunk], params): chunk for chunk in chunks}
        for future in as_completed(futures):
            try:
                reasons = future.result()
            except BrokenProcessPool as exc:
                # Not one song's fault as a rule (a worker that cannot start breaks them all):
                # stop loudly; what finished is cached, so a rerun only does the rest.
                raise RuntimeError(
                    f"a feature extraction worker process died ({exc}). Run with features.workers = 1 "
                    "to see the error in this process; a script that calls extract_features with "
                    "workers > 1 needs an `if __name__ == '__main__':` guard") from exc
            for (_, target), reason in zip(futures[future], reasons, strict=True):
                yield target, reason


def _load_librosa() -> None:
    """Import what ``_compute`` uses (librosa compiles its numba functions on import)."""
    import librosa

    librosa.load, librosa.feature.melspectrogram  # noqa: B018  (lazy modules: the attributes import them)


def _init_worker() -> None:
    """A worker process: librosa loaded and decoder warnings silenced before its first task."""
    _load_librosa()
    _silence_decoders()  # for the worker's whole life: it runs nothing else


def _compute_chunk(items: list[tuple[str, str]], params: dict) -> list[str | None]:
    """``_compute`` for each ``(audio path, cache file)``; the failure reasons in that order."""
    return [_compute(audio_path, out_path, params) for audio_path, out_path in items]


@contextlib.contextmanager
def _quiet_decoders():
    """Decoder warnings silenced while the block runs (the warnings filters are global: enter
    it once around all threads, since ``warnings.catch_warnings`` is not thread-safe)."""
    with warnings.catch_warnings():
        _silence_decoders()
        yield


def _silence_decoders() -> None:
    """librosa announces its soundfile -> audioread fallback; a failure's reason says it all."""
    warnings.filterwarnings("ignore", message="PySoundFile failed")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"[\s\S]*audioread")


def _compute(audio_path: str, out_path: str, params: dict) -> str | None:
    """Decode one file and cache its power mel spectrogram; return a failure reason or None.

    Runs in this process, its threads or worker processes, inside ``_quiet_decoders``. Only
    decoding problems become failures: an error while computing or writing (disk full, cache
    not writable) is raised, since it would hit every song."""
    import librosa

    try:
        y, sr = librosa.load(audio_path, sr=params["sample_rate"], mono=True)
    except Exception as exc:
        return _decode_reason(audio_path, exc)
    if y.size == 0:
        return "the audio has no samples (it decodes to an empty signal)"
    power = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=params["n_fft"], hop_length=params["hop_length"],
                                           n_mels=params["n_mels"], center=True, power=2.0)
    save_atomic(Path(out_path), power.astype(np.float32, copy=False))
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if type(exc).__name__ == "NoBackendError":
        text = text or "no audioread backend could decode it"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_reason(audio_path: str, exc: Exception) -> str:
    """The last decoder's error, then the ones before it (librosa tries soundfile, then audioread)."""
    errors, seen = [], exc
    while seen is not None and len(errors) < 3:
        errors.append(_describe(seen))
        seen = seen.__cause__ or seen.__context__
    try:
        size = os.path.getsize(audio_path)
    except OSError:
        size = None
    prefix = "the file is empty (0 bytes); " if size == 0 else ""
    after = f" (after {'; '.join(errors[1:])})" if len(errors) > 1 else ""
    return f"{prefix}librosa could not decode the audio: {errors[0]}{after}"


# -- dB scale -------------------------------------------------------------------------------

def to_db(power: np.ndarray, ref_power: float, top_db: float) -> np.ndarray:
    """``10*log10(max(power, 1e-10) / ref_power)``, clipped below at ``-top_db``; float32.

    The floor is fixed relative to ``ref_power`` (librosa's ``top_db`` is relative to each
    clip's own maximum, which would give every clip a different floor). Plain numpy, the same
    formula as ``librosa.power_to_db(ref=ref_power, top_db=None)``, so that data-loader
    workers never import librosa and numba."""
    if not (np.isfinite(ref_power) and ref_power > 0):
        raise ValueError(f"the dB reference power must be a positive number, got {ref_power!r}")
    if top_db < 0:
        raise ValueError(f"top_db must not be negative, got {top_db!r}")
    power = np.asarray(power, dtype=np.float32)
    db = 10.0 * np.log10(np.maximum(power, AMIN)) - np.float32(10.0 * np.log10(ref_power))
    return np.maximum(db, np.float32(-top_db)).astype(np.float32, copy=False)


def train_max_ref(feature_set: FeatureSet, train_song_ids) -> float:
    """The largest power in any training song's spectrogram: a reference that leaks nothing.

    Reads only the cached files of ``train_song_ids``; songs that failed extraction are skipped."""
    failed = {f.song_id for f in feature_set.failures}
    peak, used = 0.0, 0
    for song_id in dict.fromkeys(train_song_ids):
        if song_id in failed:
            continue
        peak = max(peak, float(feature_set.load_power(song_id).max()))
        used += 1
    if used == 0:
        raise ValueError("no training song has a mel spectrogram, so there is no train_max reference; "
                         "check the extraction failures, or set features.ref = 'fixed'")
    if peak <= 0.0:
        raise ValueError("every training song is silent (maximum power 0); set features.ref = 'fixed'")
    return peak


def reference_power(feature_set: FeatureSet, features: FeatureSettings, train_song_ids) -> float:
    """The reference power ``features.ref`` asks for: ``ref_value``, or the training maximum."""
    if features.ref == "train_max":
        return train_max_ref(feature_set, train_song_ids)
    if features.ref == "fixed":
        return float(features.ref_value)
    raise ValueError(f"features.ref must be 'fixed' or 'train_max', got {features.ref!r}")


# -- what the model sees --------------------------------------------------------------------

class MelView:
    """Fixed-length dB spectrograms of a ``FeatureSet``: load -> dB -> crop -> pad.

    Picklable (paths and numbers only), so DataLoader workers can use it."""

    def __init__(self, feature_set: FeatureSet, features: FeatureSettings, ref_power: float):
        self.feature_set = feature_set
        self.ref_power = float(ref_power)
        self.top_db = float(features.top_db)
        self.floor = -self.top_db
        self.n_frames = n_frames(features)
        self.strategy = features.crop
        to_db(np.ones(1, np.float32), self.ref_power, self.top_db)  # reject a bad reference now, not mid-epoch

    def get(self, song_id: str, train: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """float32 ``[n_mels, n_frames]``. A random crop only when ``train`` (``rng`` needed); else middle."""
        db = to_db(self.feature_set.load_power(song_id), self.ref_power, self.top_db)
        strategy = self.strategy
        if strategy == "random" and not train:
            strategy = "middle"
        return crop(db, self.n_frames, strategy, rng, floor=self.floor)
