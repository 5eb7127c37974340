"""The MERGE reader, on tiny folders written in MERGE's exact layout (real MP3s, real CSVs)."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from merx.config import ConfigError
from merx.data.merge import DataSourceError, MergeReader
from merx.plugins import get_registry

SR = 22050


def write_mp3(path: Path, freq: float = 440.0, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format="MP3")


def write_csv(path: Path, header: list, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


# Audio id, lyric id, quadrant, split, valence, arousal. Lyric numbers do not follow audio numbers.
SONGS = [
    ("A001", "L004", "Q1", "train", 0.81, 0.77),
    ("A002", "L001", "Q2", "train", 0.22, 0.83),
    ("A003", "L006", "Q3", "train", 0.15, 0.21),
    ("A061-66", "L002", "Q4", "validate", 0.71, 0.30),
    ("A005", "L003", "Q1", "test", 0.66, 0.91),
    ("A006", "L005", "Q3", "test", 0.35, 0.12),
]


def write_merge_bimodal(parent: Path, songs=SONGS, balanced: bool = False) -> Path:
    """A tiny MERGE Bimodal folder laid out exactly as the Zenodo archive is."""
    variant = "balanced" if balanced else "complete"
    root = parent / f"MERGE_Bimodal_{variant.capitalize()}"
    for i, (aid, lid, q, _, _, _) in enumerate(songs):
        write_mp3(root / "audio" / q / f"{aid}.mp3", freq=220.0 + 40 * i)
        path = root / "lyrics" / q / f"{lid}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Lyrics of {lid}\nsecond line, café\n", encoding="utf-8")
    messy_years = ["1970-??-??", "20/06/2005", "", "1999", "n/a", "2001-03"]
    write_csv(root / f"merge_bimodal_{variant}_metadata.csv",
              ["Audio_Song", "Lyric_Song", "Quadrant", "AllMusic Id", "AllMusic Extraction Date", "Artist",
               "Title", "Relevance", "Year", "LowestYear", "Duration", "Moods"],
              [[aid, lid, q, f"MT000407{i:04d}", "2016-03-01", f"Artist {i}", f"Title {i}", "0.5",
                messy_years[i % len(messy_years)], "", "30", "Happy; Sad"]
               for i, (aid, lid, q, *_rest) in enumerate(songs)])
    write_csv(root / f"merge_bimodal_{variant}_av_values.csv", ["Audio_Song", "Lyric_Song", "Arousal", "Valence"],
              [[aid, lid, a, v] for aid, lid, _, _, v, a in songs])
    for part in ("train", "validate", "test"):
        write_csv(root / "tvt_dataframes" / "tvt_70_15_15" / f"tvt_70_15_15_{part}_bimodal_{variant}.csv",
                  ["Song", "Quadrant"], [[aid, q] for aid, _, q, split, *_ in songs if split == part])
    return root


def write_merge_audio(parent: Path) -> Path:
    """A tiny MERGE Audio Complete folder: ``Song`` ids and Q1..Q4 right under the subset folder."""
    root = parent / "MERGE_Audio_Complete"
    songs = [("A101", "Q1", "train", 0.8, 0.9), ("A102", "Q2", "train", 0.2, 0.7),
             ("A103", "Q3", "validate", 0.1, 0.1), ("A104", "Q4", "test", 0.9, 0.2)]
    for i, (sid, q, *_rest) in enumerate(songs):
        write_mp3(root / q / f"{sid}.mp3", freq=300.0 + 50 * i)
    write_csv(root / "merge_audio_complete_metadata.csv", ["Song", "Quadrant", "AllMusic Id", "Artist", "Title",
                                                          "Year"],
              [[sid, q, f"MT{i}", f"Band {i}", f"Song {i}", "19??"] for i, (sid, q, *_r) in enumerate(songs)])
    write_csv(root / "merge_audio_complete_av_values.csv", ["Song", "Arousal", "Valence"],
              [[sid, a, v] for sid, _, _, v, a in songs])
    for part in ("train", "validate", "test"):
        write_csv(root / "tvt_dataframes" / "tvt_70_15_15" / f"tvt_70_15_15_{part}_audio_complete.csv",
                  ["Song", "Quadrant"], [[sid, q] for sid, q, split, *_ in songs if split == part])
    return root


def test_reads_songs_labels_pairs_and_splits(tmp_path):
    root = write_merge_bimodal(tmp_path)
    table = MergeReader(root).load()

    assert table.failures == []
    by_id = {s.id: s for s in table.songs}
    assert list(by_id) == [aid for aid, *_ in SONGS]  # split files' order, train first
    for aid, lid, q, split, v, a in SONGS:
        song = by_id[aid]
        assert (song.split, song.quadrant, song.valence, song.arousal) == (split, q, v, a)
        assert (song.audio_id, song.lyric_id) == (aid, lid)
        assert Path(song.audio_path) == root / "audio" / q / f"{aid}.mp3"
        assert Path(song.lyrics_path) == root / "lyrics" / q / f"{lid}.txt"
        assert song.lyrics == f"Lyrics of {lid}\nsecond line, café\n"  # the pair's own lyrics, UTF-8
    assert by_id["A001"].meta == {"artist": "Artist 0", "title": "Title 0", "allmusic_id": "MT0004070000"}
    assert table.counts()["test"] == {"Q1": 1, "Q2": 0, "Q3": 1, "Q4": 0}
    assert "MERGE bimodal complete" in table.source


def test_broken_files_become_failures_while_the_rest_loads(tmp_path):
    root = write_merge_bimodal(tmp_path)
    (root / "lyrics" / "Q2" / "L001.txt").unlink()                          # A002: lyrics missing
    (root / "lyrics" / "Q3" / "L006.txt").write_text("  \n\n", encoding="utf-8")  # A003: empty lyrics
    (root / "audio" / "Q4" / "A061-66.mp3").unlink()                        # A061-66: audio missing
    (root / "lyrics" / "Q1" / "L003.txt").write_bytes(b"caf\xe9 latin-1\n")  # A005: not UTF-8

    table = MergeReader(root).load()

    assert sorted(s.id for s in table.songs) == ["A001", "A006"]
    failures = {f.song_id: f for f in table.failures}
    assert set(failures) == {"A002", "A003", "A061-66", "A005"}
    assert (failures["A002"].stage, failures["A002"].reason) == ("lyrics", "lyrics file not found")
    assert failures["A002"].path == str(root / "lyrics" / "Q2" / "L001.txt")
    assert (failures["A003"].stage, failures["A003"].reason) == ("lyrics", "lyrics file is empty")
    assert failures["A061-66"].stage == "audio" and "not found" in failures["A061-66"].reason
    assert failures["A005"].stage == "lyrics" and "UTF-8" in failures["A005"].reason


def test_file_in_the_wrong_quadrant_folder_is_named_in_the_reason(tmp_path):
    root = write_merge_bimodal(tmp_path)
    (root / "audio" / "Q2").mkdir(exist_ok=True)
    (root / "audio" / "Q1" / "A001.mp3").rename(root / "audio" / "Q2" / "A001.mp3")
    failure, = MergeReader(root).load().failures
    assert (failure.song_id, failure.stage) == ("A001", "audio")
    assert "in Q2 instead" in failure.reason


def test_split_rows_that_disagree_with_the_tables_are_failures(tmp_path):
    root = write_merge_bimodal(tmp_path)
    split_file = root / "tvt_dataframes" / "tvt_70_15_15" / "tvt_70_15_15_train_bimodal_complete.csv"
    write_csv(split_file, ["Song", "Quadrant"],
              [["A001", "Q1"], ["A002", "Q3"], ["A003", "Q3"], ["A999", "Q2"], ["A003", "Q3"]])

    table = MergeReader(root).load()

    assert "A002" not in {s.id for s in table.songs}
    reasons = {(f.song_id, f.stage): f.reason for f in table.failures}
    assert "disagrees" in reasons[("A002", "data")] and "'Q2'" in reasons[("A002", "data")]
    assert "absent from the metadata and av_values" in reasons[("A999", "data")]
    assert "more than once" in reasons[("A003", "data")]
    assert [s.id for s in table.songs].count("A003") == 1


def test_song_in_metadata_but_in_no_split_is_reported(tmp_path):
    root = write_merge_bimodal(tmp_path)
    split_file = root / "tvt_dataframes" / "tvt_70_15_15" / "tvt_70_15_15_test_bimodal_complete.csv"
    write_csv(split_file, ["Song", "Quadrant"], [["A005", "Q1"]])
    table = MergeReader(root).load()
    failure, = table.failures
    assert (failure.song_id, failure.stage) == ("A006", "data") and "no file of tvt_70_15_15" in failure.reason


def test_missing_root_explains_where_merge_comes_from(tmp_path):
    with pytest.raises(DataSourceError) as info:
        MergeReader(tmp_path / "nowhere" / "MERGE_Bimodal_Complete").load()
    message = str(info.value)
    assert "https://zenodo.org/records/13939205" in message
    assert "MERGE_Bimodal_Complete" in message and str(tmp_path / "nowhere") in message
    assert "data.source.root" in message


def test_missing_tables_and_splits_are_named(tmp_path):
    root = write_merge_bimodal(tmp_path)
    (root / "merge_bimodal_complete_av_values.csv").unlink()
    with pytest.raises(DataSourceError, match="merge_bimodal_complete_av_values.csv"):
        MergeReader(root).load()
    root = write_merge_bimodal(tmp_path / "other")
    with pytest.raises(DataSourceError, match="tvt_40_30_30"):
        MergeReader(root, split="40_30_30").load()


def test_audio_subset(tmp_path):
    root = write_merge_audio(tmp_path)
    table = MergeReader(root, subset="audio").load()
    assert table.failures == []
    assert [(s.id, s.split, s.quadrant) for s in table.songs] == [
        ("A101", "train", "Q1"), ("A102", "train", "Q2"), ("A103", "validate", "Q3"), ("A104", "test", "Q4")]
    song = table.songs[0]
    assert Path(song.audio_path) == root / "Q1" / "A101.mp3"
    assert (song.audio_id, song.lyric_id, song.lyrics, song.lyrics_path) == ("A101", None, None, None)
    assert (song.valence, song.arousal) == (0.8, 0.9)
    assert song.meta["artist"] == "Band 0"


def test_folder_of_another_subset_is_refused_with_the_fix(tmp_path):
    root = write_merge_audio(tmp_path)
    with pytest.raises(DataSourceError, match="MERGE_Audio_Complete folder .* ask for MERGE_Bimodal_Complete"):
        MergeReader(root).load()


def test_renamed_split_files_are_found_in_their_folder(tmp_path):
    root = write_merge_bimodal(tmp_path, balanced=True)
    folder = root / "tvt_dataframes" / "tvt_70_15_15"
    for path in folder.glob("*.csv"):
        part = path.stem.split("_")[4]
        path.rename(folder / f"tvt_70_15_15_{part}.csv")
    table = MergeReader(root, balanced=True).load()
    assert table.failures == [] and len(table.songs) == len(SONGS)


def test_factory_resolves_relative_root_and_validates_choices(tmp_path, monkeypatch):
    write_merge_bimodal(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    merge = get_registry().get("data_sources", "merge")
    source = merge.build({}, cache_dir=str(tmp_path / "cache"))  # default root: data/MERGE_Bimodal_Complete
    monkeypatch.chdir("/")  # the root was fixed when the source was built
    assert len(source.load().songs) == len(SONGS)

    # Pointing at the folder that holds the extracted archive works too.
    assert len(merge.build({"root": str(tmp_path / "data")}).load().songs) == len(SONGS)
    with pytest.raises(ConfigError, match="subset"):
        merge.build({"subset": "video"})
    with pytest.raises(ConfigError, match="40_30_30"):
        merge.build({"split": "80_10_10"})


# -- bad input: each test writes the broken file the way it turns up on disk ---------------------

def test_a_table_that_is_a_folder_is_one_line_naming_it(tmp_path):
    # As root, chmod 000 does not stop a read; a folder in the CSV's place is an OSError for anyone.
    root = write_merge_bimodal(tmp_path)
    path = root / "merge_bimodal_complete_av_values.csv"
    path.unlink()
    path.mkdir()
    with pytest.raises(DataSourceError) as info:
        MergeReader(root).load()
    message = str(info.value)
    assert message.startswith(f"{path}: cannot be read: Is a directory")
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_a_split_file_without_read_permission_is_one_line_naming_it(tmp_path):
    root = write_merge_bimodal(tmp_path)
    path = root / "tvt_dataframes" / "tvt_70_15_15" / "tvt_70_15_15_test_bimodal_complete.csv"
    path.chmod(0)
    try:
        with pytest.raises(DataSourceError, match=f"^{re.escape(str(path))}: cannot be read: Permission denied"):
            MergeReader(root).load()
    finally:
        path.chmod(0o644)


def test_rows_with_fewer_fields_than_the_header_are_failures_naming_the_line(tmp_path):
    root = write_merge_bimodal(tmp_path)
    av = root / "merge_bimodal_complete_av_values.csv"
    lines = av.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "A002,L001,0.83\r\n"  # the Valence field is gone
    av.write_text("".join(lines), encoding="utf-8", newline="")
    meta = root / "merge_bimodal_complete_metadata.csv"
    lines = meta.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = "A005,L003,Q1\r\n"  # stops after the quadrant: today the song loads without artist or title
    meta.write_text("".join(lines), encoding="utf-8", newline="")
    train = root / "tvt_dataframes" / "tvt_70_15_15" / "tvt_70_15_15_train_bimodal_complete.csv"
    write_csv(train, ["Song", "Quadrant"], [["A001", "Q1"], ["A002", "Q2"], ["A003"]])

    table = MergeReader(root).load()

    assert sorted(s.id for s in table.songs) == ["A001", "A006", "A061-66"]
    reasons = {f.song_id: f for f in table.failures}
    assert set(reasons) == {"A002", "A003", "A005"}
    assert reasons["A002"].reason == f"line 3 of {av.name} has 3 of 4 fields"
    assert reasons["A002"].path == str(av)
    assert reasons["A005"].reason == f"line 6 of {meta.name} has 3 of 12 fields"
    assert reasons["A003"].reason == f"line 4 of {train.name} has 1 of 2 fields"  # and not "in no split file"


def test_a_table_cut_off_in_its_last_line_is_refused_naming_the_file(tmp_path):
    root = write_merge_bimodal(tmp_path)
    av = root / "merge_bimodal_complete_av_values.csv"
    whole = av.read_bytes()
    assert whole.endswith(b"A006,L005,0.12,0.35\r\n")
    av.write_bytes(whole[:-8])  # a write that stopped inside the last row: "A006,L005,0.1"
    with pytest.raises(DataSourceError) as info:
        MergeReader(root).load()
    message = str(info.value)
    assert message.startswith(f"{av}: looks truncated: its last line (line 7) has 3 of 4 fields and no line end")
    assert "\n" not in message

    av.write_bytes(whole[:-2])  # no final line end, but every field: a file written that way, not a cut
    assert MergeReader(root).load().failures == []


def test_a_song_twice_in_a_table_with_different_values_is_a_failure_naming_both(tmp_path):
    root = write_merge_bimodal(tmp_path)
    av = root / "merge_bimodal_complete_av_values.csv"
    with open(av, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["A002", "L001", "0.5", "0.22"],     # line 8: another arousal for A002
                                  ["A001", "L004", "0.77", "0.81"]])   # line 9: A001's row once more, the same
    meta = root / "merge_bimodal_complete_metadata.csv"
    rows = list(csv.reader(meta.open(encoding="utf-8", newline="")))
    again = list(rows[5])  # A005
    again[5:7] = ["Someone Else", "Other Title"]
    with open(meta, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(again)

    table = MergeReader(root).load()

    assert sorted(s.id for s in table.songs) == ["A001", "A003", "A006", "A061-66"]  # today the last row wins
    reasons = {f.song_id: f for f in table.failures}
    assert set(reasons) == {"A002", "A005"}
    assert reasons["A002"].reason == (f"{av.name} has 2 rows for A002 that disagree: "
                                      "line 3 has Arousal '0.83'; line 8 has Arousal '0.5'")
    assert reasons["A002"].path == str(av)
    assert reasons["A005"].reason == (f"{meta.name} has 2 rows for A005 that disagree: "
                                      "line 6 has Artist 'Artist 4', Title 'Title 4'; "
                                      "line 8 has Artist 'Someone Else', Title 'Other Title'")


def test_valence_and_arousal_that_are_not_numbers_in_0_1_are_failures_naming_the_value(tmp_path):
    root = write_merge_bimodal(tmp_path)
    av = root / "merge_bimodal_complete_av_values.csv"
    # Arousal, Valence per song; A006's row is cut right after its last comma, with no line end.
    write_csv(av, ["Audio_Song", "Lyric_Song", "Arousal", "Valence"],
              [["A001", "L004", "high", "0.81"], ["A002", "L001", "0.83", "1.5"], ["A003", "L006", "-0.1", "0.15"],
               ["A061-66", "L002", "0.30", "nan"], ["A005", "L003", "inf", " 2 "]])
    with open(av, "ab") as fh:
        fh.write(b"A006,L005,0.12,")

    table = MergeReader(root).load()

    assert table.songs == []
    reasons = {f.song_id: f.reason for f in table.failures}
    assert reasons == {
        "A001": f"arousal 'high' is not a number (line 2 of {av.name})",
        "A002": f"valence '1.5' is outside [0, 1] (line 3 of {av.name})",
        "A003": f"arousal '-0.1' is outside [0, 1] (line 4 of {av.name})",
        "A061-66": f"valence 'nan' is not a number (line 5 of {av.name})",
        "A005": f"arousal 'inf' is outside [0, 1]; valence ' 2 ' is outside [0, 1] (line 6 of {av.name})",
        "A006": f"valence '' is not a number (line 7 of {av.name}; the file's last line, and it has no line end: "
                "was the file cut short there?)",
    }
    assert {f.path for f in table.failures} == {str(av)}
