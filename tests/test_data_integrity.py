"""The split-overlap check, on real MP3 files."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from merx.data.integrity import SplitOverlapError, check_overlap
from merx.data.songs import Song, SongTable

SR = 22050


@pytest.fixture
def mp3s(tmp_path):
    """Four distinct tiny MP3s, keyed by name."""
    paths = {}
    t = np.arange(SR // 4) / SR
    for i, name in enumerate(["a", "b", "c", "d"]):
        paths[name] = tmp_path / f"{name}.mp3"
        sf.write(paths[name], (0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32), SR, format="MP3")
    return paths


def song(sid, split, audio, lyric_id=None):
    return Song(id=sid, split=split, quadrant="Q1", valence=0.8, arousal=0.8, audio_path=str(audio),
                audio_id=sid, lyric_id=lyric_id or f"L{sid[1:]}")


def test_clean_splits_pass(mp3s):
    table = SongTable([song("A1", "train", mp3s["a"]), song("A2", "validate", mp3s["b"]),
                       song("A3", "test", mp3s["c"])])
    assert check_overlap(table) == []
    assert check_overlap(table, on_overlap="warn") == []


def test_same_id_in_two_splits_stops_the_run(mp3s):
    table = SongTable([song("A1", "train", mp3s["a"]), song("A2", "train", mp3s["b"]),
                       song("A1", "test", mp3s["a"])], source="fixture")
    with pytest.raises(SplitOverlapError) as info:
        check_overlap(table)
    message = str(info.value)
    assert "song id 'A1'" in message and "train (A1), test (A1)" in message
    assert 'data.on_overlap = "warn"' in message
    # The repeated lyric id is reported too; the identical audio is not reported a second time.
    assert "lyric id 'L1'" in message and "identical audio" not in message


def test_identical_audio_under_different_ids_is_caught(tmp_path, mp3s):
    copy = tmp_path / "copy_of_a.mp3"
    shutil.copyfile(mp3s["a"], copy)
    table = SongTable([song("A1", "train", mp3s["a"]), song("A2", "validate", mp3s["b"]),
                       song("A9", "test", copy)])
    lines = check_overlap(table, on_overlap="warn")
    assert len(lines) == 1
    assert "identical audio" in lines[0] and "train (A1)" in lines[0] and "test (A9)" in lines[0]


def test_same_audio_within_one_split_is_not_an_overlap(tmp_path, mp3s):
    copy = tmp_path / "copy_of_a.mp3"
    shutil.copyfile(mp3s["a"], copy)
    table = SongTable([song("A1", "train", mp3s["a"]), song("A9", "train", copy),
                       song("A2", "test", mp3s["b"])])
    assert check_overlap(table) == []


def test_same_lyric_id_in_two_splits_is_caught(mp3s):
    table = SongTable([song("A1", "train", mp3s["a"], lyric_id="L7"), song("A2", "validate", mp3s["b"], lyric_id="L7")])
    lines = check_overlap(table, on_overlap="warn")
    assert lines == ["lyric id 'L7' is in 2 splits: train (A1), validate (A2)"]
    with pytest.raises(SplitOverlapError, match="L7"):
        check_overlap(table, on_overlap="error")


def test_songs_without_audio_files_are_left_to_the_source(tmp_path, mp3s):
    table = SongTable([song("A1", "train", tmp_path / "gone.mp3"), song("A2", "test", mp3s["b"]),
                       Song(id="A3", split="test", quadrant="Q2", lyrics="text only")])
    assert check_overlap(table) == []


def test_unknown_mode_is_refused(mp3s):
    with pytest.raises(ValueError, match="on_overlap"):
        check_overlap(SongTable([]), on_overlap="ignore")


VERSE = ("the night is long and the road is cold we walk alone under a silver sky "
         "and every word we never said comes back to find us here tonight")


def test_same_allmusic_id_under_other_ids_is_caught(mp3s):
    a, b = song("A1", "train", mp3s["a"]), song("A2", "test", mp3s["b"])
    a.meta["allmusic_id"] = b.meta["allmusic_id"] = "MT0004073991"
    lines = check_overlap(SongTable([a, b, song("A3", "validate", mp3s["c"])]), on_overlap="warn")
    assert lines == ["AllMusic id 'MT0004073991' is in 2 splits: train (A1), test (A2)"]
    with pytest.raises(SplitOverlapError, match="AllMusic id"):
        check_overlap(SongTable([a, b]), on_overlap="error")


def test_same_artist_and_title_is_caught_whatever_the_case_and_punctuation(mp3s):
    a, b, c = song("A1", "train", mp3s["a"]), song("A2", "validate", mp3s["b"]), song("A3", "test", mp3s["c"])
    a.meta.update(artist="The Open Radios", title="Night Long")
    b.meta.update(artist="the open radios", title="Night  Long!")
    c.meta.update(artist="Other Band", title="Night Long")  # a title alone is no duplicate
    lines = check_overlap(SongTable([a, b, c]), on_overlap="warn")
    assert lines == ["artist + title 'the open radios - night long' is in 2 splits: train (A1), validate (A2)"]


def test_identical_lyrics_text_under_other_ids_is_caught(mp3s):
    a, b, c = song("A1", "train", mp3s["a"]), song("A2", "test", mp3s["b"]), song("A3", "validate", mp3s["c"])
    a.lyrics = VERSE
    b.lyrics = VERSE.upper().replace(" we ", "\nwe ") + "\n"  # same words, other case and lines
    c.lyrics = "la la la"  # short texts repeat across unrelated songs: not checked
    d = song("A4", "test", mp3s["d"])
    d.lyrics = "la la la"
    lines = check_overlap(SongTable([a, b, c, d]), on_overlap="warn")
    assert len(lines) == 1 and lines[0].startswith("lyrics text (sha1 ")
    assert lines[0].endswith("is in 2 splits: train (A1), test (A2)")


def test_one_id_in_two_splits_is_reported_once_not_by_every_check(mp3s):
    a, b = song("A1", "train", mp3s["a"]), song("A1", "test", mp3s["a"])
    for s in (a, b):
        s.meta.update(artist="X", title="Y", allmusic_id="MT1")
        s.lyrics = VERSE
    lines = check_overlap(SongTable([a, b]), on_overlap="warn")
    assert [line.split(" '")[0] for line in lines] == ["song id", "lyric id"]
