"""Predicting songs with a trained model: the run's feature and text pipeline, batched.

Audio goes through ``merx.features.mel`` as in training (cached power mel spectrogram, the
run's dB reference and floor, its evaluation crop via ``MelView``); lyrics through
``merx.features.text.encode_texts`` (tokens for a trainable tower; a frozen tower's outputs,
kept in its disk cache). Batches are the run's batch size by default, so the songs of its test
split, given in the order it read them, go through exactly the computation its test evaluation
did and give the predictions it stored, bit for bit.

Windows: by default a song is one window, the run's evaluation crop. ``windows=N`` takes N
evenly spaced windows of the trained duration, the first at the song's start and the last at
its end (one, in the middle, for N = 1); ``windows="all"`` as many as it takes to cover every
frame. A song's prediction is the mean over its windows: of valence/arousal for regression, of
the class probabilities for classification; the quadrant follows from that mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from merx.data.songs import QUADRANTS, Song, quadrant_of


@dataclass
class SongInput:
    """A song to predict: its id (what the output calls it), audio file and lyrics."""

    id: str
    audio_path: str | None = None
    lyrics_path: str | None = None
    lyrics: str | None = None  # the text itself, instead of lyrics_path


@dataclass
class SongFailure:
    """A song that could not be predicted: which file, what is wrong with it, and the fix."""

    song: str
    stage: str  # "audio" or "lyrics"
    path: str | None
    reason: str
    fix: str

    def to_dict(self) -> dict:
        return {"song": self.song, "stage": self.stage, "path": self.path, "reason": self.reason, "fix": self.fix}


@dataclass
class SongPrediction:
    """One song's prediction: the mean over its windows, and each window's values."""

    song: str
    audio_path: str | None
    lyrics_path: str | None
    quadrant: str
    valence: float | None = None       # regression
    arousal: float | None = None
    probs: dict | None = None          # classification: {"Q1": p, ...}
    windows: list[dict] = field(default_factory=list)  # {"start_s", "valence"/"arousal" or "probs", "quadrant"}

    def to_dict(self, per_window: bool = False) -> dict:
        out = {"song": self.song, "audio": self.audio_path, "lyrics": self.lyrics_path, "quadrant": self.quadrant}
        if self.valence is not None:
            out.update(valence=self.valence, arousal=self.arousal)
        if self.probs is not None:
            out["probs"] = dict(self.probs)
        out["n_windows"] = len(self.windows)
        if per_window:
            out["windows"] = [dict(w) for w in self.windows]
        return out


@dataclass
class Prediction:
    task: str
    songs: list[SongPrediction]
    failures: list[SongFailure]


def window_starts(total: int, n_frames: int, count: int | str) -> list[int]:
    """Start frames of ``count`` evenly spaced windows of ``n_frames`` over ``total`` frames
    (``"all"``: enough to cover every frame). A song no longer than one window has one window."""
    spare = total - n_frames
    if spare <= 0:
        return [0]
    if count == "all":
        count = math.ceil(total / n_frames)
    count = max(1, min(int(count), spare + 1))
    if count == 1:
        return [spare // 2]  # the middle, as the evaluation crop 'middle'
    return [round(i * spare / (count - 1)) for i in range(count)]


def predict(trained, songs: list[SongInput], windows: int | str | None = None, batch_size: int | None = None,
            cache_dir=None, progress: bool = False) -> Prediction:
    """Predict every song that can be read; the others become ``SongFailure``s (nothing else is
    skipped). ``trained`` is a ``merx.inference.TrainedModel``; ``cache_dir`` (default: the run's
    ``data.cache_dir``; for a model folder, merx's default ``.merx/cache`` in the working
    directory, since the folder's recorded one belongs to the machine it was trained on) keeps
    the mel spectrograms and the frozen tower's outputs."""
    import numpy as np

    exp, model = trained.exp, trained.model
    cache_dir = Path(cache_dir if cache_dir is not None else trained.cache_dir)
    batch_size = batch_size or exp.train.batch_size
    failures: list[SongFailure] = []
    ready: list[SongInput] = []
    texts: dict[str, str] = {}
    for s in songs:
        if model.uses_text:
            text, failure = _lyrics(s)
            if failure is not None:
                failures.append(failure)
                continue
            texts[s.id] = text
        if model.uses_audio and not s.audio_path:
            failures.append(SongFailure(s.id, "audio", None, "no audio file given (this model reads audio)",
                                        "give the audio file as an argument or in the audio column of --songs"))
            continue
        ready.append(s)

    mels: dict[str, list[np.ndarray]] = {}
    starts: dict[str, list[int]] = {}
    if model.uses_audio and ready:
        from merx.features.crop import crop
        from merx.features.mel import MelView, extract_features, to_db

        table = [Song(s.id, "predict", "", audio_path=s.audio_path) for s in ready]
        fs = extract_features(table, exp.features, cache_dir, workers=0, progress=progress)
        bad = {f.song_id: f for f in fs.failures}
        for s in ready:
            if s.id in bad:
                reason = bad[s.id].reason
                failures.append(SongFailure(s.id, "audio", s.audio_path, reason, _audio_fix(reason)))
        ready = [s for s in ready if s.id not in bad]
        view = MelView(fs, exp.features, trained.ref_power)
        for s in ready:
            if windows is None:
                mels[s.id] = [view.get(s.id)]
                starts[s.id] = [None]
                continue
            db = to_db(fs.load_power(s.id), view.ref_power, view.top_db)
            starts[s.id] = window_starts(db.shape[-1], view.n_frames, windows)
            mels[s.id] = [crop(db[:, a:a + view.n_frames], view.n_frames, "head", floor=view.floor)
                          for a in starts[s.id]]

    outputs = _forward(trained, ready, mels, texts, batch_size, cache_dir, progress)
    results = [_aggregate(trained.task, s, outs, starts.get(s.id, [None]), exp.features)
               for s, outs in zip(ready, outputs, strict=True)]
    rank = {s.id: i for i, s in enumerate(songs)}
    failures.sort(key=lambda f: rank.get(f.song, len(rank)))
    return Prediction(trained.task, results, failures)


def _forward(trained, ready: list[SongInput], mels: dict, texts: dict, batch_size: int, cache_dir: Path,
             progress: bool) -> list:
    """The model's outputs (float32 numpy rows), one list of window rows per song in ``ready``."""
    import numpy as np
    import torch

    from merx.features.text import encode_texts
    from merx.train import to_device

    model, exp, device = trained.model, trained.exp, trained.device
    if not ready:
        return []
    text = {}
    if model.uses_text:
        # As the run's datasets encode the lyrics: one call over the songs, in batches of the
        # same size; a frozen tower's outputs also go to (and come from) its disk cache.
        text = encode_texts(model, [texts[s.id] for s in ready], device, max(exp.train.batch_size, 32),
                            cache_dir=cache_dir)
    items = [(i, w) for i, s in enumerate(ready) for w in range(len(mels.get(s.id, [None])))]
    out_rows: list[list] = [[] for _ in ready]
    batches = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
    model.eval()
    with _bar(progress and len(batches) > 1, len(batches)) as advance, torch.no_grad():
        for chunk in batches:
            batch = {}
            if model.uses_audio:
                batch["mel"] = torch.from_numpy(np.stack([mels[ready[i].id][w] for i, w in chunk])).unsqueeze(1)
            index = torch.tensor([i for i, _ in chunk])
            for key, values in text.items():
                if values is not None:
                    batch[key] = values[index]
            output = model(to_device(batch, device)).float().cpu().numpy()
            for (i, _), row in zip(chunk, output, strict=True):
                out_rows[i].append(row)
            advance()
    return out_rows


class _bar:
    """A rich progress bar over batches on stderr, when shown; ``advance`` either way."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.progress = show, total, None

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True))
        self.progress.__enter__()
        task = self.progress.add_task("predicting", total=self.total)
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False


def _aggregate(task: str, s: SongInput, rows: list, starts: list, features) -> SongPrediction:
    import numpy as np
    import torch

    seconds = [None if a is None else a * features.hop_length / features.sample_rate for a in starts]
    if task == "regression":
        va = np.asarray(rows, dtype=np.float32)
        windows = [{"start_s": t, "valence": float(v), "arousal": float(a), "quadrant": quadrant_of(float(v), float(a))}
                   for t, (v, a) in zip(seconds, va, strict=True)]
        v, a = (float(x) for x in va.astype(np.float64).mean(axis=0))
        return SongPrediction(s.id, s.audio_path, s.lyrics_path, quadrant_of(v, a), valence=v, arousal=a,
                              windows=windows)
    # As the run's evaluation: softmax of the float32 outputs.
    probs = torch.softmax(torch.from_numpy(np.asarray(rows, dtype=np.float32)), dim=1).numpy()
    windows = [{"start_s": t, "probs": dict(zip(QUADRANTS, map(float, p), strict=True)),
                "quadrant": QUADRANTS[int(p.argmax())]} for t, p in zip(seconds, probs, strict=True)]
    mean = probs.astype(np.float64).mean(axis=0)
    return SongPrediction(s.id, s.audio_path, s.lyrics_path, QUADRANTS[int(mean.argmax())],
                          probs=dict(zip(QUADRANTS, map(float, mean), strict=True)), windows=windows)


# -- per-song problems ----------------------------------------------------------------------

_LYRICS_HOW = "give lyrics with --lyrics FILE, --lyrics-dir DIR (DIR/<audio name>.txt) or a lyrics column in --songs"


def _lyrics(s: SongInput) -> tuple[str | None, SongFailure | None]:
    from merx.data.merge import read_lyrics

    if s.lyrics is not None:
        if s.lyrics.strip():
            return s.lyrics, None
        return None, SongFailure(s.id, "lyrics", None, "the lyrics are empty", _LYRICS_HOW)
    if not s.lyrics_path:
        return None, SongFailure(s.id, "lyrics", None, "no lyrics given (this model reads lyrics)", _LYRICS_HOW)
    text, reason = read_lyrics(Path(s.lyrics_path))
    if reason is None:
        return text, None
    if "UTF-8" in reason:
        fix = f"re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 '{s.lyrics_path}')"
    elif "empty" in reason:
        fix = "write the song's lyrics into it"
    else:
        fix = _LYRICS_HOW
    return None, SongFailure(s.id, "lyrics", s.lyrics_path, reason, fix)


def _audio_fix(reason: str) -> str:
    if "cannot read" in reason:
        return "check that the file exists and is readable"
    if "no samples" in reason or "empty" in reason:
        return "the file holds no audio: give the complete file"
    return "give a readable WAV, FLAC, OGG or MP3 (e.g. ffmpeg -i FILE song.wav), or check the file is complete"
