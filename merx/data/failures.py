"""Why a split ended up without a usable song, said in one message: its failures, grouped."""

from __future__ import annotations

import os
from pathlib import Path

from merx.data.songs import Failure, SongTable


def empty_split_message(split: str, table: SongTable, split_of: dict[str, str], most: int = 5) -> str:
    """Why ``split`` has no usable song: its failures grouped by reason, each with where its files are.

    ``split_of`` maps song ids to splits where known; failures of songs known to be in another
    split are left out, those of unknown split (the data source could not place them) kept."""
    theirs = [f for f in table.failures if split_of.get(f.song_id, split) == split]
    if not theirs:
        return (f"no usable songs in the {split!r} split: the data source lists none there, and none of "
                f"its songs failed ({table.source or 'no source description'})")
    groups: dict[tuple[str, str], list[Failure]] = {}
    for f in theirs:
        groups.setdefault((f.stage, _generic_reason(f)), []).append(f)
    ranked = sorted(groups.items(), key=lambda item: -len(item[1]))
    parts = [f"{_songs(fails)}: {reason}{_where(fails)}" for (_, reason), fails in ranked[:most]]
    if len(ranked) > most:
        parts.append(f"{_songs([f for _, fails in ranked[most:] for f in fails])} for "
                     f"{len(ranked) - most} other reasons")
    # A song with two problems (empty audio, unreadable lyrics) is in two groups but one song.
    if all(f.song_id in split_of for f in theirs):
        head = f"all of its {_songs(theirs)} failed"
    else:
        head = (f"{_songs(theirs)} failed that may be in it (the data source does not say which split "
                "a song it could not read is in)")
    return f"no usable songs in the {split!r} split: {head}. " + "; ".join(parts)


def _songs(failures: list[Failure]) -> str:
    n = len({f.song_id for f in failures})
    return f"{n} song{'s' if n != 1 else ''}"


def _generic_reason(failure: Failure) -> str:
    """The failure's reason without its own file's name, so that one problem is one group."""
    reason = failure.reason
    if failure.path:
        reason = reason.replace(failure.path, "<file>").replace(Path(failure.path).name, "<file>")
    return reason


def _where(failures: list[Failure]) -> str:
    folders = sorted({str(Path(f.path).parent) for f in failures if f.path})
    if not folders:
        return ""
    if len(folders) <= 3:
        return f" (in {', '.join(folders)})"
    return f" (under {os.path.commonpath(folders)}, {len(folders)} folders)"
