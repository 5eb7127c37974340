"""Checks that a dataset's splits are what they claim to be.

A song in two splits leaks the answer into the test score. MERGE's notebooks never checked;
merx does before every run: by song id, by lyric id, by the audio file's content (the same
recording filed twice under different ids), and by what identifies a song beyond its files: the
same AllMusic id, the same artist and title (a re-release or live version under a new id), and
the same lyrics text (two ids, one song's words: the text tower would see a test song in
training)."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import defaultdict

from merx.data.songs import SPLITS, SongTable
from merx.errors import SplitOverlapError  # noqa: F401  (raised here; importable from here)
from merx.hashing import file_digest

ON_OVERLAP = ("error", "warn")


def check_overlap(table: SongTable, on_overlap: str = "error") -> list[str]:
    """Find songs shared by two splits; raise (``"error"``) or return the problems (``"warn"``).

    Returns one line per problem (empty when the splits are clean)."""
    if on_overlap not in ON_OVERLAP:
        raise ValueError(f"on_overlap must be one of {', '.join(map(repr, ON_OVERLAP))}, got {on_overlap!r}")
    problems = (_shared(table, "song id", lambda s: s.id)
                + _shared(table, "lyric id", lambda s: s.lyric_id)
                + _shared_audio(table)
                + _shared(table, "AllMusic id", lambda s: s.meta.get("allmusic_id"), other_ids_only=True)
                + _shared(table, "artist + title", _artist_title, other_ids_only=True)
                + _shared(table, "lyrics text", _lyrics_key, shown=_lyrics_label, other_ids_only=True))
    if problems and on_overlap == "error":
        listing = "\n".join(f"  - {p}" for p in problems)
        raise SplitOverlapError(
            f"{len(problems)} song(s) appear in more than one split, which leaks training data into "
            f"evaluation ({table.source or 'data source'}):\n{listing}\n"
            f"Fix the split files, or set data.on_overlap = \"warn\" in the experiment file "
            f"(or --set data.on_overlap=warn) to go on with a warning.")
    return problems


def _describe(by_split: dict[str, list[str]]) -> str:
    order = [s for s in SPLITS if s in by_split] + sorted(s for s in by_split if s not in SPLITS)
    return ", ".join(f"{split} ({', '.join(sorted(set(by_split[split])))})" for split in order)


def _shared(table: SongTable, what: str, key, shown=repr, other_ids_only: bool = False) -> list[str]:
    """One line per value of ``key`` found in more than one split.

    ``other_ids_only``: skip groups that are one song id in several splits, which the song-id
    check reports already (a second line for the same leak would only add noise)."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for song in table.songs:
        k = key(song)
        if k:
            groups[k][song.split].append(song.id)
    return [f"{what} {shown(k)} is in {len(splits)} splits: {_describe(splits)}"
            for k, splits in groups.items()
            if len(splits) > 1 and not (other_ids_only and len({i for ids in splits.values() for i in ids}) == 1)]


def _normal(text: str | None) -> str:
    """Case, accents' composition, punctuation and spacing do not make two songs different."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def _artist_title(song) -> str | None:
    artist, title = _normal(song.meta.get("artist")), _normal(song.meta.get("title"))
    # Both are needed: a title alone repeats across artists ("Home", "Stay") without a leak.
    return f"{artist} - {title}" if artist and title else None


def _lyrics_key(song) -> str | None:
    text = _normal(song.lyrics)
    # Very short texts ("instrumental", "la la la") repeat across unrelated songs.
    if len(text.split()) < 20:
        return None
    return hashlib.sha1(text.encode()).hexdigest()


def _lyrics_label(digest: str) -> str:
    return f"(sha1 {digest[:12]} of the normalised text)"


def _shared_audio(table: SongTable) -> list[str]:
    # Identical files have identical sizes: hash only files whose size another song shares.
    by_size: dict[int, list] = defaultdict(list)
    for song in table.songs:
        if song.audio_path:
            try:
                by_size[os.path.getsize(song.audio_path)].append(song)
            except OSError:
                continue  # missing files are the data source's failures, reported there
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for songs in by_size.values():
        if len({s.split for s in songs}) < 2:
            continue
        for song in songs:
            groups[file_digest(song.audio_path)][song.split].append(song.id)
    # The same id in two splits is reported by id already; here, only copies under other ids.
    return [f"identical audio (sha1 {digest[:12]}) is in {len(splits)} splits: {_describe(splits)}"
            for digest, splits in groups.items()
            if len(splits) > 1 and len({i for ids in splits.values() for i in ids}) > 1]
