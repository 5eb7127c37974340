"""Reading the MERGE dataset (Zenodo record 13939205, v1.1.0) as it lies on disk.

Layout of a Bimodal subset (``MERGE_Bimodal_Complete`` or ``MERGE_Bimodal_Balanced``)::

    audio/Q1..Q4/<Audio_Song>.mp3
    lyrics/Q1..Q4/<Lyric_Song>.txt
    merge_bimodal_complete_metadata.csv    Audio_Song, Lyric_Song, Quadrant, AllMusic Id, Artist, Title, ...
    merge_bimodal_complete_av_values.csv   Audio_Song, Lyric_Song, Arousal, Valence
    tvt_dataframes/tvt_70_15_15/tvt_70_15_15_{train,validate,test}_bimodal_complete.csv   (Song, Quadrant)

The single-modality subsets (``MERGE_Audio_*``, ``MERGE_Lyrics_*``) name songs by ``Song`` and
keep ``Q1..Q4/`` directly under the subset folder. In the Bimodal split files ``Song`` is the
audio id; the lyric id of the same song differs (``A001`` / ``L001``).

Every song listed in a split file ends up either in ``SongTable.songs`` or, with the reason, in
``SongTable.failures``: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from merx.data.songs import QUADRANTS, SPLITS, Failure, Song, SongTable

ZENODO_URL = "https://zenodo.org/records/13939205"
SUBSETS = ("bimodal", "audio", "lyrics")
SPLIT_SCHEMES = ("70_15_15", "40_30_30")

# Other spellings of a split's part that a renamed split file might use.
_PART_ALIASES = {"train": ("train",), "validate": ("validate", "validation", "val"), "test": ("test",)}


from merx.errors import DataSourceError  # noqa: E402,F401


def folder_name(subset: str, balanced: bool) -> str:
    """MERGE's folder name for a subset, e.g. ``MERGE_Bimodal_Complete``."""
    return f"MERGE_{subset.capitalize()}_{'Balanced' if balanced else 'Complete'}"


def normalise_split(split: str) -> str:
    """``"tvt_70_15_15"``, ``"70/15/15"`` and ``"70_15_15"`` all name the same official split."""
    s = split.strip().lower().removeprefix("tvt_").replace("/", "_").replace("-", "_")
    if s not in SPLIT_SCHEMES:
        raise ValueError(f"unknown MERGE split {split!r}; MERGE ships "
                         f"{', '.join(repr(x) for x in SPLIT_SCHEMES)}")
    return s


class MergeReader:
    """Reads one MERGE subset folder into a :class:`SongTable`."""

    def __init__(self, root: str | Path, subset: str = "bimodal", balanced: bool = False,
                 split: str = "70_15_15"):
        subset = subset.strip().lower()
        if subset not in SUBSETS:
            raise ValueError(f"unknown MERGE subset {subset!r}; choose one of {', '.join(SUBSETS)}")
        self.subset = subset
        self.balanced = balanced
        self.variant = "balanced" if balanced else "complete"
        self.split = normalise_split(split)
        self.root = Path(root).expanduser()

    # -- locating files ----------------------------------------------------------------------
    def _resolve_root(self) -> Path:
        expected = folder_name(self.subset, self.balanced)
        root = self.root
        if root.is_dir() and (root / expected).is_dir() and not self._looks_like_subset(root):
            return root / expected  # pointed at the folder that holds the extracted archive
        if not root.is_dir():
            raise DataSourceError(
                f"MERGE folder not found: {root.absolute()}\n"
                f"Expected the extracted {expected} folder of the MERGE dataset there"
                f"{'' if root.name == expected else ' (the folder subset/balanced ask for)'}. MERGE is "
                f"published on Zenodo ({ZENODO_URL}); download and unzip it, then set "
                f"data.source.root in the experiment file to the {expected} folder "
                f"(relative paths are relative to the current directory).")
        if root.name.upper().startswith("MERGE_") and root.name.lower() != expected.lower():
            raise DataSourceError(
                f"data.source.root is a {root.name} folder ({root}), but the settings ask for "
                f"{expected} (subset = {self.subset!r}, balanced = {str(self.balanced).lower()}). "
                f"Set data.source.root to the {expected} folder, or subset/balanced to match "
                f"{root.name}.")
        return root

    def _looks_like_subset(self, root: Path) -> bool:
        return any(root.glob("merge_*metadata*.csv")) or (root / "tvt_dataframes").is_dir()

    def _table_file(self, root: Path, kind: str) -> Path:
        exact = root / f"merge_{self.subset}_{self.variant}_{kind}.csv"
        if exact.is_file():
            return exact
        found = sorted(root.glob(f"*{kind}*.csv"))
        if len(found) == 1:
            return found[0]
        present = ", ".join(p.name for p in sorted(root.glob("*.csv"))) or "no CSV files"
        what = "several candidates" if found else "nothing"
        raise DataSourceError(
            f"{root}: expected {exact.name} (the MERGE {kind.replace('_', ' ')} table); found {what} "
            f"({present}). Is data.source.root the {folder_name(self.subset, self.balanced)} folder, "
            f"and do subset/balanced match it?")

    def _split_file(self, root: Path, part: str) -> Path:
        folder = root / "tvt_dataframes" / f"tvt_{self.split}"
        exact = folder / f"tvt_{self.split}_{part}_{self.subset}_{self.variant}.csv"
        if exact.is_file():
            return exact
        if not folder.is_dir():
            raise DataSourceError(
                f"split folder not found: {folder}. MERGE ships its official splits under "
                f"tvt_dataframes/ (tvt_70_15_15, tvt_40_30_30); check data.source.root and "
                f"data.source.split.")
        candidates = [p for p in sorted(folder.glob("*.csv"))
                      if any(f"_{alias}_" in f"_{p.stem.lower()}_" for alias in _PART_ALIASES[part])]
        if len(candidates) > 1:  # prefer the file that names this subset and variant
            narrowed = [p for p in candidates if self.subset in p.stem.lower() and self.variant in p.stem.lower()]
            candidates = narrowed or candidates
        if len(candidates) == 1:
            return candidates[0]
        present = ", ".join(p.name for p in sorted(folder.glob("*.csv"))) or "no CSV files"
        raise DataSourceError(f"{folder}: cannot tell which file holds the {part} split "
                              f"(expected {exact.name}; found {present}).")

    # -- reading -------------------------------------------------------------------------------
    def load(self) -> SongTable:
        """Read metadata, V/A values, split files, lyrics; check every audio and lyrics file."""
        root = self._resolve_root()
        id_cols = ("Audio_Song", "Lyric_Song") if self.subset == "bimodal" else ("Song",)
        key = id_cols[0]
        hint = f" (data.source.subset is {self.subset!r}: does it match this folder?)"
        meta, meta_failures = _index(_read_csv(self._table_file(root, "metadata"), need=(*id_cols, "Quadrant"),
                                               want=("AllMusic Id", "Artist", "Title"), hint=hint, ids=(key,)), key)
        av_csv = _read_csv(self._table_file(root, "av_values"), need=(*id_cols, "Arousal", "Valence"), hint=hint,
                           ids=(key,))
        av, av_failures = _index(av_csv, key)

        songs: list[Song] = []
        failures: list[Failure] = [*meta_failures, *av_failures]
        rejected = {f.song_id for f in failures}  # songs whose table rows cannot be used
        listed: set[str] = set()
        for part in SPLITS:
            split = _read_csv(self._split_file(root, part), need=("Quadrant",), want=("Song", "Audio_Song"),
                              one_of=("Song", "Audio_Song"), ids=("Song", "Audio_Song"))
            path = split.path
            failures.extend(split.short)
            listed.update(f.song_id for f in split.short)  # listed, if badly: not "in no split file" too
            seen_here: set[str] = set()
            for line, row in split.rows:
                sid = (row.get("Song") or row.get("Audio_Song") or "").strip()
                if not sid:
                    failures.append(Failure("", "data", f"line {line} of {path.name} has no song id", str(path)))
                    continue
                if sid in seen_here:
                    failures.append(Failure(sid, "data", f"listed more than once in {path.name}; kept once",
                                            str(path)))
                    continue
                seen_here.add(sid)
                listed.add(sid)
                if sid in rejected:
                    continue  # its table row's failure is on record already
                song, problems = self._song(root, sid, part, row["Quadrant"].strip(), meta, av, av_csv, path)
                if problems:
                    failures.extend(problems)
                else:
                    songs.append(song)

        for sid in meta:
            if sid not in listed:
                failures.append(Failure(sid, "data", f"in the metadata but in no file of tvt_{self.split}",
                                        str(root / "tvt_dataframes" / f"tvt_{self.split}")))
        source = f"MERGE {self.subset} {self.variant}, tvt_{self.split}: {root.absolute()}"
        return SongTable(songs=songs, failures=failures, source=source)

    def _song(self, root: Path, sid: str, part: str, split_quadrant: str, meta: dict, av: dict, av_csv: _Csv,
              split_path: Path) -> tuple[Song | None, list[Failure]]:
        missing = [name for name, table in (("metadata", meta), ("av_values", av)) if sid not in table]
        if missing:
            return None, [Failure(sid, "data", f"listed in {split_path.name} but absent from the "
                                  f"{' and '.join(missing)} table", str(split_path))]
        (_, m), (av_line, v) = meta[sid], av[sid]
        quadrant = m["Quadrant"].strip()
        if quadrant not in QUADRANTS:
            return None, [Failure(sid, "data", f"metadata quadrant {quadrant!r} is not one of Q1..Q4")]
        if split_quadrant != quadrant:
            return None, [Failure(sid, "data", f"quadrant {split_quadrant!r} in {split_path.name} disagrees "
                                  f"with {quadrant!r} in the metadata", str(split_path))]
        labels, wrong = {}, []
        for name in ("Arousal", "Valence"):
            try:
                labels[name] = float(v[name])
            except ValueError:
                labels[name] = float("nan")
            if labels[name] != labels[name]:  # NaN, written as "nan" or not parsed at all
                wrong.append(f"{name.lower()} {v[name]!r} is not a number")
            elif not 0.0 <= labels[name] <= 1.0:
                wrong.append(f"{name.lower()} {v[name]!r} is outside [0, 1]")
        if wrong:
            where = f"line {av_line} of {av_csv.path.name}"
            if av_line == av_csv.open_end:  # a cut that spoils the number is the only cut a value shows
                where += "; the file's last line, and it has no line end: was the file cut short there?"
            return None, [Failure(sid, "data", f"{'; '.join(wrong)} ({where})", str(av_csv.path))]
        valence, arousal = labels["Valence"], labels["Arousal"]

        if self.subset == "bimodal":
            audio_id, lyric_id = sid, m["Lyric_Song"].strip()
            if v["Lyric_Song"].strip() != lyric_id:
                return None, [Failure(sid, "data", f"lyric id {lyric_id!r} in the metadata but "
                                      f"{v['Lyric_Song'].strip()!r} in the av_values table")]
            audio_dir, lyrics_dir = root / "audio", root / "lyrics"
        elif self.subset == "audio":
            audio_id, lyric_id, audio_dir, lyrics_dir = sid, None, root, None
        else:
            audio_id, lyric_id, audio_dir, lyrics_dir = None, sid, None, root

        problems: list[Failure] = []
        audio_path = lyrics_path = lyrics = None
        if audio_dir is not None:
            audio_path = audio_dir / quadrant / f"{audio_id}.mp3"
            if not audio_path.is_file():
                problems.append(Failure(sid, "audio", _not_found("audio", audio_path, audio_dir),
                                        str(audio_path)))
            elif audio_path.stat().st_size == 0:
                problems.append(Failure(sid, "audio", "audio file is empty", str(audio_path)))
        if lyrics_dir is not None:
            lyrics_path = lyrics_dir / quadrant / f"{lyric_id}.txt"
            lyrics, reason = read_lyrics(lyrics_path)
            if reason:
                if "not found" in reason:
                    reason = _not_found("lyrics", lyrics_path, lyrics_dir)
                problems.append(Failure(sid, "lyrics", reason, str(lyrics_path)))
        if problems:
            return None, problems

        info = {"artist": m.get("Artist"), "title": m.get("Title"), "allmusic_id": m.get("AllMusic Id")}
        return Song(
            id=sid, split=part, quadrant=quadrant, valence=valence, arousal=arousal,
            audio_path=str(audio_path) if audio_path else None,
            lyrics_path=str(lyrics_path) if lyrics_path else None, lyrics=lyrics,
            audio_id=audio_id, lyric_id=lyric_id,
            meta={k: x.strip() for k, x in info.items() if x and x.strip()},
        ), []


def read_lyrics(path: Path) -> tuple[str | None, str | None]:
    """``(text, None)`` for a usable UTF-8 lyrics file, else ``(None, reason)``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, "lyrics file not found"
    except OSError as exc:
        return None, f"lyrics file unreadable: {exc}"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, f"lyrics file is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"
    if not text.strip():
        return None, "lyrics file is empty"
    return text, None


def _not_found(what: str, path: Path, folder: Path) -> str:
    elsewhere = [p.parent.name for p in folder.glob(f"Q*/{path.name}")]
    hint = f" (a file of that name is in {', '.join(elsewhere)} instead)" if elsewhere else ""
    return f"{what} file not found{hint}"


@dataclass
class _Csv:
    """A CSV's usable rows, each with the line it starts on, and the rows that lack fields."""

    path: Path
    rows: list[tuple[int, dict]]
    short: list[Failure]
    open_end: int | None = None  # the last row's line when the file does not end with a line end


def _read_csv(path: Path, need: tuple, want: tuple = (), one_of: tuple = (), hint: str = "",
              ids: tuple = ()) -> _Csv:
    """The rows of a CSV as dicts of strings, keeping only the columns asked for.

    ``need``: columns that must be there; ``want``: kept when present; ``one_of``: at least one
    of these must be there; ``ids``: the columns that name the song, for the failure of a row that
    has fewer fields than the header.

    Only named columns are kept so that messy ones (``Year``) are never looked at. Files written
    by Excel may carry a BOM or, rarely, another encoding than UTF-8.

    A write cut short leaves a last line without a line end. When that line also has fewer fields
    than the header, the cut is certain and the whole file is refused: the rows that should follow
    are unknown, and even the last row's song id may be cut. A cut inside the last field cannot be
    told from a shorter value ("0.4" of "0.45") by any reader; only values that no longer parse show
    it, and those fail as values. A cut right after a line end leaves nothing to see at all."""
    try:
        raw = path.read_bytes()
    except OSError as exc:  # a folder in the file's place, no read permission, a bad disk
        raise DataSourceError(f"{path}: cannot be read: {exc.strerror or exc}; check that it is a file this "
                              f"user may read (re-extract it from the MERGE archive if not)") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    names = next(reader, [])
    header = {name.strip(): i for i, name in enumerate(names)}
    absent = [c for c in need if c not in header]
    if one_of and not any(c in header for c in one_of):
        absent.append(" or ".join(one_of))
    if absent:
        raise DataSourceError(f"{path}: missing column(s) {', '.join(absent)}; "
                              f"it has {', '.join(header) or 'no header'}{hint}")
    cols = [c for c in (*need, *want) if c in header]
    records, end = [], reader.line_num
    for fields in reader:
        line, end = end + 1, reader.line_num  # a quoted field may span lines: name the first
        if len(fields) > 1 or "".join(fields).strip():  # not a blank line
            records.append((line, fields))
    table = _Csv(path, [], [])
    if records and not raw.endswith((b"\n", b"\r")):
        table.open_end = records[-1][0]
    for line, fields in records:
        if len(fields) >= len(names):
            table.rows.append((line, {c: fields[header[c]] for c in cols}))
            continue
        what = f"has {len(fields)} of {len(names)} fields"
        if line == table.open_end:
            raise DataSourceError(f"{path}: looks truncated: its last line (line {line}) {what} and no line "
                                  f"end, as a write cut short leaves it; re-extract the file from the MERGE "
                                  f"archive ({ZENODO_URL})")
        sid = next((fields[header[c]].strip() for c in ids if c in header and header[c] < len(fields)), "")
        table.short.append(Failure(sid, "data", f"line {line} of {path.name} {what}", str(path)))
    return table


def _index(table: _Csv, key: str) -> tuple[dict[str, tuple[int, dict]], list[Failure]]:
    """The rows by song id, and the failures of songs whose rows cannot be used."""
    found: dict[str, list[tuple[int, dict]]] = {}
    for line, row in table.rows:
        if row[key].strip():
            found.setdefault(row[key].strip(), []).append((line, row))
    index, bad = {}, list(table.short)
    for sid, rows in found.items():
        differ = [c for c in rows[0][1] if len({row[c].strip() for _, row in rows}) > 1]
        if not differ:
            # Identical rows give one reading of the song: nothing is guessed by keeping one,
            # and a Failure would mark as unusable a song that is fine.
            index[sid] = rows[0]
            continue
        readings: dict[tuple, int] = {}  # the first line of each distinct reading
        for line, row in rows:
            readings.setdefault(tuple(row[c].strip() for c in differ), line)
        said = "; ".join(f"line {line} has " + ", ".join(f"{c} {v!r}" for c, v in zip(differ, values, strict=True))
                         for values, line in readings.items())
        bad.append(Failure(sid, "data", f"{table.path.name} has {len(rows)} rows for {sid} that disagree: "
                           f"{said}", str(table.path)))
    for f in table.short:
        index.pop(f.song_id, None)
    return index, bad
