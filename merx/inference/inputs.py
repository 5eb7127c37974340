"""The songs ``merx predict`` is given: audio files with their lyrics, or a CSV naming both.

* ``AUDIO...`` with ``--lyrics FILE`` (once per audio file, in the same order) or
  ``--lyrics-dir DIR`` (``DIR/<audio file name without extension>.txt``);
* ``--songs CSV``: columns ``audio`` and/or ``lyrics`` (paths, relative ones from the CSV's
  folder) and an optional ``id``.

A song's id is its audio file's name without extension (its lyrics file's for a lyrics-only
model), or the CSV's ``id``. A model reads only its modalities: a lyrics-only model takes lyrics
files as its arguments. Problems with one song's files are that song's failure, found when it is
predicted; problems with the arguments themselves are a ``UsageError``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from merx.errors import UsageError
from merx.inference.run import SongInput


def songs_from_arguments(paths: list[str], lyrics: list[str], lyrics_dir: str | None, songs_csv: str | None,
                         uses_audio: bool, uses_text: bool) -> list[SongInput]:
    if songs_csv is not None:
        if paths or lyrics or lyrics_dir:
            raise UsageError("--songs names every song and its files; give no other files with it",
                             hint="put every song in the CSV, or leave out --songs")
        songs = _from_csv(Path(songs_csv), uses_audio, uses_text)
    elif not paths:
        what = "audio files" if uses_audio else "lyrics files"
        raise UsageError(f"no songs given: name {what}, or a --songs CSV",
                         hint="merx predict RUN song.mp3 --lyrics song.txt")
    elif not uses_audio:
        if lyrics or lyrics_dir:
            raise UsageError("this model reads only lyrics: give the lyrics files as arguments, without "
                             "--lyrics or --lyrics-dir")
        songs = [SongInput(_stem(p), lyrics_path=p) for p in paths]
    else:
        if lyrics and lyrics_dir:
            raise UsageError("give --lyrics or --lyrics-dir, not both")
        if lyrics and len(lyrics) != len(paths):
            raise UsageError(f"{len(paths)} audio files but {len(lyrics)} --lyrics: give one --lyrics per audio "
                             "file, in the same order", hint="or use --lyrics-dir DIR (DIR/<audio name>.txt)")
        songs = []
        for i, p in enumerate(paths):
            text = None
            if lyrics:
                text = lyrics[i]
            elif lyrics_dir:
                text = str(Path(lyrics_dir) / f"{Path(p).stem}.txt")
            songs.append(SongInput(_stem(p), audio_path=p, lyrics_path=text if uses_text else None))
    return _unique_ids(songs)


def _stem(path: str) -> str:
    return Path(path).stem or str(path)


def _unique_ids(songs: list[SongInput]) -> list[SongInput]:
    """Two files with one name (a/x.mp3, b/x.mp3) keep their paths as ids, so no output row is ambiguous."""
    seen: dict[str, int] = {}
    for s in songs:
        seen[s.id] = seen.get(s.id, 0) + 1
    for s in songs:
        if seen[s.id] > 1:
            s.id = s.audio_path or s.lyrics_path or s.id
    return songs


def _from_csv(path: Path, uses_audio: bool, uses_text: bool) -> list[SongInput]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--songs {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--songs {path}: not valid UTF-8 (byte {exc.start})", hint="re-save it as UTF-8") from None
    rows = list(csv.DictReader(text.splitlines()))
    columns = {c.strip().lower() for c in (rows[0].keys() if rows else [])}
    need = [c for c, used in (("audio", uses_audio), ("lyrics", uses_text)) if used and c not in columns]
    if need or not rows:
        raise UsageError(f"--songs {path}: " + (f"no {' or '.join(need)} column" if need else "no songs in it"),
                         hint="a header row audio,lyrics (and optionally id), then one row per song")
    base = path.parent
    songs = []
    for row in rows:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}

        audio = _path(base, row.get("audio")) if uses_audio else None
        lyrics = _path(base, row.get("lyrics")) if uses_text else None
        songs.append(SongInput(row.get("id") or _stem(audio or lyrics or "song"), audio_path=audio,
                               lyrics_path=lyrics))
    return songs


def _path(base: Path, value: str | None) -> str | None:
    return str(base / value) if value else None
