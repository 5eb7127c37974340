"""The songs of a dataset, as every data source returns them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

SPLITS = ("train", "validate", "test")
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")


def quadrant_of(valence: float, arousal: float, threshold: float = 0.5) -> str:
    """Russell quadrant implied by valence/arousal in [0, 1] (Q1 = high V, high A, anticlockwise)."""
    high_v, high_a = valence >= threshold, arousal >= threshold
    if high_a:
        return "Q1" if high_v else "Q2"
    return "Q4" if high_v else "Q3"


@dataclass
class Song:
    """One song: where its audio and lyrics are, its labels, and its split.

    ``id`` is the song's identity inside merx (for MERGE Bimodal, the audio id); ``audio_id``
    and ``lyric_id`` keep the dataset's own ids, which differ in MERGE Bimodal."""

    id: str
    split: str
    quadrant: str
    valence: float | None = None
    arousal: float | None = None
    audio_path: str | None = None
    lyrics_path: str | None = None
    lyrics: str | None = None
    audio_id: str | None = None
    lyric_id: str | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Failure:
    """A song that could not be used, and why. Recorded and reported, never silently dropped."""

    song_id: str
    stage: str  # "data", "audio", "lyrics", "features", ...
    reason: str
    path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SongTable:
    """What a data source returns: the usable songs and the ones that failed."""

    songs: list[Song]
    failures: list[Failure] = field(default_factory=list)
    source: str = ""

    def split(self, name: str) -> list[Song]:
        return [s for s in self.songs if s.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Songs per split and quadrant."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            c = Counter(s.quadrant for s in self.songs if s.split == split)
            out[split] = {q: c.get(q, 0) for q in QUADRANTS}
        return out

    def drop(self, failures: list[Failure]) -> None:
        """Remove failed songs, keeping the failures on record."""
        bad = {f.song_id for f in failures}
        self.songs = [s for s in self.songs if s.id not in bad]
        self.failures.extend(failures)
