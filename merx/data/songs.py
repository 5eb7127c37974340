"""The songs of a dataset, as every data source returns them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

SPLITS = ("train", "validate", "test")
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")

#: MERGE's hole: songs with valence or arousal in this range were removed from the dataset.
HOLE = (0.4, 0.6)

#: The truth each task is scored against, stated once (``show``, ``compare`` and exports print it).
#: Regression learns valence/arousal, so its quadrant scores use the quadrant V/A imply, and so
#: do its baselines; classification learns the dataset's quadrant label.
TRUTH = {
    "regression": "valence/arousal values (quadrant scores use the quadrant they imply)",
    "classification": "the dataset's quadrant label",
}

#: Kinds of data notes: facts about a song's labels worth counting, never reasons to drop it.
NOTE_KINDS = {
    "label_disagrees": "quadrant label differs from the quadrant its valence/arousal imply",
    "in_hole": f"valence or arousal inside {HOLE[0]}-{HOLE[1]}, the band MERGE says it removed",
}


def quadrant_of(valence: float, arousal: float, threshold: float = 0.5) -> str:
    """Russell quadrant implied by valence/arousal in [0, 1] (Q1 = high V, high A, anticlockwise)."""
    high_v, high_a = valence >= threshold, arousal >= threshold
    if high_a:
        return "Q1" if high_v else "Q2"
    return "Q4" if high_v else "Q3"


def label_notes(song: Song) -> dict[str, str]:
    """The :data:`NOTE_KINDS` that apply to ``song``, each with its detail.

    A regression run scores quadrants implied by V/A while the dataset also gives a label; when
    the two disagree, or V/A sit where MERGE says no song is, a researcher should know how many
    songs that is before trusting a quadrant score."""
    if song.valence is None or song.arousal is None:
        return {}
    notes = {}
    implied = quadrant_of(song.valence, song.arousal)
    if implied != song.quadrant:
        notes["label_disagrees"] = f"label {song.quadrant}, V/A ({song.valence:g}, {song.arousal:g}) imply {implied}"
    lo, hi = HOLE
    if lo <= song.valence <= hi or lo <= song.arousal <= hi:
        notes["in_hole"] = f"V/A ({song.valence:g}, {song.arousal:g})"
    return notes


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

    def notes(self) -> dict[str, list[tuple[str, str]]]:
        """Per :data:`NOTE_KINDS` kind, the ``(song id, detail)`` of every usable song it applies to."""
        out: dict[str, list[tuple[str, str]]] = {kind: [] for kind in NOTE_KINDS}
        for song in self.songs:
            for kind, detail in label_notes(song).items():
                out[kind].append((song.id, detail))
        return out

    def drop(self, failures: list[Failure]) -> None:
        """Remove failed songs, keeping the failures on record."""
        bad = {f.song_id for f in failures}
        self.songs = [s for s in self.songs if s.id not in bad]
        self.failures.extend(failures)
