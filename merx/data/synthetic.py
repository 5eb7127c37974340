"""A small, learnable stand-in for MERGE, generated from a seed and written in MERGE's layout.

The songs are written to disk exactly as MERGE Bimodal Complete lies there (MP3 audio in
quadrant folders, TXT lyrics, metadata and V/A tables, 70/15/15 split files) and read back by
the same reader as the real dataset, so every run exercises the real path end to end.

How the labels show in the data, by design:

* arousal drives tempo and onset density, loudness, brightness (more and stronger harmonics,
  drums) and note length, so the audio carries arousal strongly;
* valence picks major or minor chords, but only with 72 % agreement, so the audio carries
  valence weakly;
* valence weights the emotional words of the lyrics strongly, arousal weights a few energy or
  calm words weakly.

A quadrant therefore needs both modalities: a bimodal model should beat either one alone.
Valence and arousal avoid 0.4-0.6, as in MERGE, which removed songs whose mean fell there.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from merx.data.merge import MergeReader, folder_name
from merx.data.songs import QUADRANTS, SongTable
from merx.data.synthetic_audio import synthesize

#: Bump when the generated data changes, so that old caches are not reused.
GENERATOR_VERSION = 2  # 2: artist + title unique (the split check reads them)

#: Sample rates an MP3 file can hold.
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

#: Probability that a song's chords are major when its valence is high (minor when low).
MODE_AGREEMENT = 0.72

FOLDER = folder_name("bimodal", False)
MANIFEST = "synthetic.json"

# Word pools by part of speech. Emotional words carry valence; energy/calm words carry arousal.
POSITIVE = {
    "adj": ["bright", "golden", "sweet", "warm", "happy", "beautiful", "shining", "lovely", "joyful", "glorious"],
    "noun": ["sunshine", "love", "smile", "laughter", "heaven", "joy", "paradise", "sunrise", "hope", "kisses"],
    "verb": ["dance", "laugh", "smile", "shine", "celebrate", "sing", "fly", "rejoice"],
}
NEGATIVE = {
    "adj": ["cold", "broken", "dark", "empty", "lonely", "bitter", "hollow", "cruel", "grey", "wounded"],
    "noun": ["tears", "pain", "sorrow", "grief", "shadows", "ashes", "regret", "misery", "heartache", "graves"],
    "verb": ["cry", "bleed", "weep", "mourn", "suffer", "fall", "fade", "drown"],
}
ENERGY = {
    "adj": ["wild", "electric", "fierce", "loud", "restless", "burning"],
    "noun": ["fire", "thunder", "storm", "rage", "lightning"],
    "verb": ["run", "burn", "scream", "jump", "shout", "rush", "race"],
}
CALM = {
    "adj": ["quiet", "gentle", "soft", "still", "slow", "sleepy"],
    "noun": ["silence", "dusk", "lullaby", "hush", "stillness"],
    "verb": ["sleep", "drift", "rest", "float", "whisper", "linger"],
}
NEUTRAL = {
    "adj": ["old", "long", "same", "little", "last", "new", "distant", "open"],
    "noun": ["road", "city", "window", "river", "morning", "street", "door", "name", "train", "radio"],
    "verb": ["walk", "talk", "wait", "turn", "go", "look", "call", "drive"],
}
PLACES = ["city", "night", "street", "room", "town", "car", "station", "garden", "highway", "sea"]
POSITIVE_WORDS = frozenset(w for words in POSITIVE.values() for w in words)
NEGATIVE_WORDS = frozenset(w for words in NEGATIVE.values() for w in words)

_TEMPLATES = [
    "{P} {verb} through the {adj} {noun}",
    "{adj} {noun} in the {place}",
    "{P} {verb} for your {noun}",
    "don't let me {verb} tonight",
    "{adj} {noun}, {adj} {noun}",
    "under the {adj} {place} we {verb}",
    "tell me why we {verb}",
    "there's {noun} in my {place}",
    "every {place} is {adj} tonight",
    "you {verb} like the {noun}",
    "and {P} {verb} all night long",
    "hold on to the {adj} {noun}",
]
_PRONOUNS = ["I", "we", "you", "they"]
_FIRST = ["Nina", "Jack", "Ruby", "Leon", "Mara", "Otis", "Iris", "Cole", "Vera", "Hugo", "June", "Felix"]
_LAST = ["Hart", "Vale", "Stone", "Rivers", "Moreau", "Quinn", "Blake", "Frost", "Lane", "Morrow"]
_BANDS = ["The {adj} {noun}s", "{first} & the {noun}s", "{first} {last}", "{first} {last} Band"]


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything the generated dataset depends on (its cache key)."""

    n_songs: int = 240
    duration: float = 8.0
    min_duration: float = 3.0
    sample_rate: int = 22050
    seed: int = 0

    def __post_init__(self):
        # 8 and 8.0 must name the same cache folder.
        object.__setattr__(self, "duration", float(self.duration))
        object.__setattr__(self, "min_duration", float(self.min_duration))
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}")
        if self.n_songs < 12:
            raise ValueError(f"n_songs must be at least 12 (3 per quadrant, for train/validate/test), "
                             f"got {self.n_songs}")
        if not 0 < self.min_duration <= self.duration:
            raise ValueError(f"need 0 < min_duration <= duration, got min_duration={self.min_duration}, "
                             f"duration={self.duration}")
        if self.sample_rate not in MP3_RATES:
            raise ValueError(f"sample_rate {self.sample_rate} cannot be stored in MP3; use one of "
                             f"{', '.join(map(str, MP3_RATES))}")

    def key(self) -> str:
        """Short hash naming the cache folder of this dataset."""
        blob = json.dumps({"generator": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


class SyntheticMerge:
    """The synthetic data source: generates (once) a MERGE-shaped folder and reads it back."""

    def __init__(self, cache_dir: str | os.PathLike, spec: SyntheticSpec):
        self.spec = spec
        self.folder = Path(cache_dir).expanduser().absolute() / "synthetic" / spec.key() / FOLDER

    def load(self) -> SongTable:
        """Make sure the dataset exists on disk, then read it like real MERGE."""
        folder = self.ensure()
        table = MergeReader(folder, subset="bimodal", balanced=False, split="70_15_15").load()
        s = self.spec
        table.source = (f"synthetic MERGE (n_songs={s.n_songs}, duration={s.duration}, seed={s.seed}): "
                        f"{folder}")
        return table

    def ensure(self) -> Path:
        """The dataset folder, generated unless a complete one is already there."""
        if is_complete(self.folder, self.spec):
            return self.folder
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(parent)
        if self.folder.exists():  # left incomplete by hand; generation itself never does this
            stale = parent / f".stale-{uuid.uuid4().hex[:8]}"
            os.rename(self.folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        # Generate beside the target and rename: an interrupted run leaves only a temp folder.
        tmp = parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            generate(tmp, self.spec)
            try:
                os.rename(tmp, self.folder)
            except OSError:
                if not is_complete(self.folder, self.spec):  # not another process winning a race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.folder


def _remove_abandoned(parent: Path) -> None:
    """Delete temp folders of generations whose process died (killed, machine restarted)."""
    if os.name != "posix":  # os.kill(pid, 0) probes a process only on POSIX
        return
    for tmp in parent.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue  # not ours, or a live process (possibly another user's): leave it


def is_complete(folder: Path, spec: SyntheticSpec) -> bool:
    """Whether ``folder`` holds every file its manifest lists, with the sizes it lists."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("generator") != GENERATOR_VERSION or manifest.get("spec") != asdict(spec):
        return False
    for rel, size in manifest.get("files", {}).items():
        try:
            if (folder / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


# -- the plan: ids, labels, splits, lyrics ------------------------------------------------------

def plan(spec: SyntheticSpec) -> list[dict]:
    """Every song's ids, labels, split, length and audio settings, from the seed alone."""
    rng = np.random.default_rng([spec.seed, 0])
    n = spec.n_songs
    quadrants = np.array([QUADRANTS[i % 4] for i in range(n)])
    rng.shuffle(quadrants)

    width = max(3, len(str(n)))
    lyric_numbers = rng.permutation(n) + 1  # a song's lyric id is unrelated to its audio id
    songs = []
    for i, quadrant in enumerate(quadrants):
        high_v = quadrant in ("Q1", "Q4")
        high_a = quadrant in ("Q1", "Q2")
        # Distance from the edge of the 0.4-0.6 hole, skewed towards the edge.
        v_off, a_off = rng.beta(1.4, 2.2, size=2) * 0.38
        valence = round(0.6 + v_off if high_v else 0.4 - v_off, 4)
        arousal = round(0.6 + a_off if high_a else 0.4 - a_off, 4)
        audio_id = f"A{i + 1:0{width}d}"
        if rng.random() < 0.05:  # MERGE has ids such as A061-66
            audio_id += f"-{rng.integers(10, 100)}"
        if rng.random() < 0.3:
            length = rng.uniform(spec.min_duration, spec.duration)
        else:
            length = spec.duration * rng.uniform(1.0, 1.03)
        major = (rng.random() < MODE_AGREEMENT) == high_v
        songs.append({
            "index": i, "audio_id": audio_id, "lyric_id": f"L{lyric_numbers[i]:0{width}d}",
            "quadrant": str(quadrant), "valence": valence, "arousal": arousal,
            "n_samples": int(round(length * spec.sample_rate)), "major": bool(major),
        })
    _assign_splits(songs, rng)
    seen: set[tuple[str, str]] = set()
    for song in songs:
        text_rng = np.random.default_rng([spec.seed, 1, song["index"]])
        song["lyrics"], song["title"] = make_lyrics(song["valence"], song["arousal"], text_rng)
        song["artist"] = _artist(text_rng)
        # Two songs by one artist with one title would be read as the same song filed twice
        # (merx.data.integrity's artist + title check): number the later ones like a sequel.
        base, n = song["title"], 1
        while (song["artist"], song["title"]) in seen:
            n += 1
            song["title"] = f"{base} {n}"
        seen.add((song["artist"], song["title"]))
        song["allmusic_id"] = f"MT{text_rng.integers(10**9, 10**10):010d}"
        song["year"] = _messy_year(text_rng)
    return songs


def _assign_splits(songs: list[dict], rng: np.random.Generator) -> None:
    """70/15/15, stratified by quadrant, at least one song of each quadrant per split."""
    for quadrant in QUADRANTS:
        members = [s for s in songs if s["quadrant"] == quadrant]
        order = rng.permutation(len(members))
        n_val = max(1, round(0.15 * len(members)))
        n_test = max(1, round(0.15 * len(members)))
        for rank, j in enumerate(order):
            members[j]["split"] = ("validate" if rank < n_val else
                                   "test" if rank < n_val + n_test else "train")


def make_lyrics(valence: float, arousal: float, rng: np.random.Generator) -> tuple[str, str]:
    """A few stanzas of verse whose words lean on valence (strongly) and arousal (weakly)."""
    p_positive = 0.12 + 0.76 * valence
    p_energy = 0.3 + 0.4 * arousal

    def word(pos: str) -> str:
        r = rng.random()
        if r < 0.5:
            pool = POSITIVE if rng.random() < p_positive else NEGATIVE
        elif r < 0.65:
            pool = ENERGY if rng.random() < p_energy else CALM
        else:
            pool = NEUTRAL
        return str(rng.choice(pool[pos]))

    def line() -> str:
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        out = template
        while "{" in out:  # fill slots one at a time so repeated slots get different words
            start = out.index("{")
            slot = out[start + 1:out.index("}", start)]
            fill = {"P": lambda: str(rng.choice(_PRONOUNS)), "place": lambda: str(rng.choice(PLACES))}.get(
                slot, lambda slot=slot: word(slot))()
            out = out[:start] + fill + out[out.index("}", start) + 1:]
        return out[0].upper() + out[1:]

    chorus = [line() for _ in range(rng.integers(2, 4))]
    stanzas = [[line() for _ in range(4)], chorus, [line() for _ in range(4)], chorus]
    if rng.random() < 0.5:
        stanzas.insert(3, [line() for _ in range(2)])  # a bridge
    title = " ".join(chorus[0].split()[-2:]).strip(",").title()
    return "\n\n".join("\n".join(s) for s in stanzas) + "\n", title


def _artist(rng: np.random.Generator) -> str:
    pattern = _BANDS[rng.integers(len(_BANDS))]
    return pattern.format(adj=str(rng.choice(NEUTRAL["adj"])).title(),
                          noun=str(rng.choice(NEUTRAL["noun"])).title(),
                          first=str(rng.choice(_FIRST)), last=str(rng.choice(_LAST)))


def _messy_year(rng: np.random.Generator) -> str:
    year = int(rng.integers(1960, 2020))
    forms = [str(year), f"{year}-??-??", f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{year}", ""]
    return forms[rng.integers(len(forms))]


# -- writing ------------------------------------------------------------------------------------

def generate(folder: Path, spec: SyntheticSpec) -> None:
    """Write the whole dataset into ``folder`` (which must not exist), manifest last."""
    import soundfile as sf

    songs = plan(spec)
    files: dict[str, int] = {}

    def record(path: Path) -> None:
        files[path.relative_to(folder).as_posix()] = path.stat().st_size

    for kind in ("audio", "lyrics"):
        for q in QUADRANTS:
            (folder / kind / q).mkdir(parents=True)

    def write_song(song: dict) -> tuple[Path, Path]:
        q = song["quadrant"]
        audio = folder / "audio" / q / f"{song['audio_id']}.mp3"
        lyrics = folder / "lyrics" / q / f"{song['lyric_id']}.txt"
        sf.write(audio, synthesize(song, spec.sample_rate, spec.seed), spec.sample_rate, format="MP3")
        lyrics.write_text(song["lyrics"], encoding="utf-8")
        return audio, lyrics

    # MP3 encoding dominates and runs in libsndfile without the GIL, so threads use every core.
    # Each song draws from its own seeded generator: the result does not depend on the order.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for audio, lyrics in pool.map(write_song, songs):
            record(audio)
            record(lyrics)

    ids = ["Audio_Song", "Lyric_Song"]
    record(_write_csv(folder / "merge_bimodal_complete_metadata.csv",
                      [*ids, "Quadrant", "AllMusic Id", "Artist", "Title", "Year", "Duration"],
                      [[s["audio_id"], s["lyric_id"], s["quadrant"], s["allmusic_id"], s["artist"], s["title"],
                        s["year"], f"{s['n_samples'] / spec.sample_rate:.2f}"] for s in songs]))
    record(_write_csv(folder / "merge_bimodal_complete_av_values.csv", [*ids, "Arousal", "Valence"],
                      [[s["audio_id"], s["lyric_id"], f"{s['arousal']:.4f}", f"{s['valence']:.4f}"]
                       for s in songs]))
    split_dir = folder / "tvt_dataframes" / "tvt_70_15_15"
    split_dir.mkdir(parents=True)
    for part in ("train", "validate", "test"):
        rows = sorted([s["audio_id"], s["quadrant"]] for s in songs if s["split"] == part)
        record(_write_csv(split_dir / f"tvt_70_15_15_{part}_bimodal_complete.csv", ["Song", "Quadrant"], rows))

    manifest = {"generator": GENERATOR_VERSION, "spec": asdict(spec), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path
