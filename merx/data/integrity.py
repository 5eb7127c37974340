"""Checks that a dataset's splits are what they claim to be.

A song in two splits leaks the answer into the test score. MERGE's notebooks never checked;
merx does before every run: by song id, by lyric id, and by the audio file's content (the same
recording filed twice under different ids)."""

from __future__ import annotations

import os
from collections import defaultdict

from merx.data.songs import SPLITS, SongTable
from merx.hashing import file_digest

ON_OVERLAP = ("error", "warn")


from merx.errors import SplitOverlapError  # noqa: E402,F401


def check_overlap(table: SongTable, on_overlap: str = "error") -> list[str]:
    """Find songs shared by two splits; raise (``"error"``) or return the problems (``"warn"``).

    Returns one line per problem (empty when the splits are clean)."""
    if on_overlap not in ON_OVERLAP:
        raise ValueError(f"on_overlap must be one of {', '.join(map(repr, ON_OVERLAP))}, got {on_overlap!r}")
    problems = (_shared(table, "song id", lambda s: s.id)
                + _shared(table, "lyric id", lambda s: s.lyric_id)
                + _shared_audio(table))
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


def _shared(table: SongTable, what: str, key) -> list[str]:
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for song in table.songs:
        k = key(song)
        if k:
            groups[k][song.split].append(song.id)
    return [f"{what} {k!r} is in {len(splits)} splits: {_describe(splits)}"
            for k, splits in groups.items() if len(splits) > 1]


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
