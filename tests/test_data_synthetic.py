"""The synthetic data source: deterministic, cached, in MERGE's layout, and carrying the signal."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from merx.config import ConfigError
from merx.data.merge import MergeReader
from merx.data.songs import QUADRANTS, quadrant_of
from merx.data.synthetic import NEGATIVE_WORDS, POSITIVE_WORDS, SyntheticMerge, SyntheticSpec
from merx.hashing import file_digest
from merx.plugins import get_registry

TINY = dict(n_songs=24, duration=2.0, min_duration=1.0)


def build(cache_dir, **settings):
    return get_registry().get("data_sources", "synthetic").build({**TINY, **settings}, cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The same tiny dataset generated in two cache folders, and one with another seed."""
    roots = {name: tmp_path_factory.mktemp(name) for name in ("a", "b", "other_seed")}
    sources = {name: build(root, seed=1 if name == "other_seed" else 0) for name, root in roots.items()}
    tables = {name: source.load() for name, source in sources.items()}
    return roots, sources, tables


def digests(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_data(generated):
    _, sources, tables = generated
    assert digests(sources["a"].folder) == digests(sources["b"].folder)
    labels = {name: [(s.id, s.lyric_id, s.split, s.quadrant, s.valence, s.arousal) for s in t.songs]
              for name, t in tables.items()}
    assert labels["a"] == labels["b"]
    assert labels["a"] != labels["other_seed"]
    audio = {name: {file_digest(s.audio_path) for s in t.songs} for name, t in tables.items()}
    assert not audio["a"] & audio["other_seed"]


def test_layout_is_merges(generated):
    roots, sources, tables = generated
    folder = sources["a"].folder
    assert folder.name == "MERGE_Bimodal_Complete"
    assert folder.parent.parent == roots["a"] / "synthetic" and re.fullmatch(r"[0-9a-f]{12}", folder.parent.name)
    assert sorted(p.name for p in (folder / "audio").iterdir()) == list(QUADRANTS)
    assert sorted(p.name for p in (folder / "lyrics").iterdir()) == list(QUADRANTS)
    with open(folder / "merge_bimodal_complete_metadata.csv", newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    assert {"Audio_Song", "Lyric_Song", "Quadrant", "AllMusic Id", "Artist", "Title"} <= set(meta[0])
    with open(folder / "merge_bimodal_complete_av_values.csv", newline="", encoding="utf-8") as fh:
        assert csv.DictReader(fh).fieldnames == ["Audio_Song", "Lyric_Song", "Arousal", "Valence"]
    split_files = sorted(p.name for p in (folder / "tvt_dataframes" / "tvt_70_15_15").iterdir())
    assert split_files == [f"tvt_70_15_15_{p}_bimodal_complete.csv" for p in ("test", "train", "validate")]

    table = tables["a"]
    assert table.failures == [] and len(table.songs) == 24
    for song in table.songs:
        assert re.fullmatch(r"A\d{3}(-\d+)?", song.audio_id) and re.fullmatch(r"L\d{3}", song.lyric_id)
        assert Path(song.audio_path) == folder / "audio" / song.quadrant / f"{song.audio_id}.mp3"
        assert Path(song.lyrics_path) == folder / "lyrics" / song.quadrant / f"{song.lyric_id}.txt"
        assert sf.info(song.audio_path).format == "MP3" and sf.info(song.audio_path).samplerate == 22050
    assert any(s.audio_id[1:] != s.lyric_id[1:] for s in table.songs)  # ids pair through the metadata
    # 70/15/15 stratified: 6 songs per quadrant -> 4 / 1 / 1.
    assert table.counts() == {"train": dict.fromkeys(QUADRANTS, 4), "validate": dict.fromkeys(QUADRANTS, 1),
                              "test": dict.fromkeys(QUADRANTS, 1)}
    # The real reader, pointed at the folder by hand, sees the same songs.
    assert [s.to_dict() for s in MergeReader(folder).load().songs] == [s.to_dict() for s in table.songs]


def test_valence_arousal_avoid_the_hole_and_match_quadrants(generated):
    for song in generated[2]["a"].songs:
        for x in (song.valence, song.arousal):
            assert 0.0 <= x <= 1.0 and not 0.4 < x < 0.6
        assert quadrant_of(song.valence, song.arousal) == song.quadrant


def test_clip_lengths_vary(generated):
    lengths = [sf.info(s.audio_path).duration for s in generated[2]["a"].songs]
    assert min(lengths) >= 1.0 - 0.05
    assert sum(length < 1.9 for length in lengths) >= 2   # a fraction is shorter than `duration`
    assert sum(length >= 2.0 for length in lengths) >= 12  # most are full length


def test_cache_is_reused_and_an_incomplete_folder_regenerated(tmp_path):
    source = build(tmp_path, n_songs=12, duration=1.0, min_duration=0.5)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    abandoned = source.folder.parent / f".tmp-{dead}-0123abcd"  # a generation killed half-way
    (abandoned / "audio" / "Q1").mkdir(parents=True)
    (abandoned / "audio" / "Q1" / "A001.mp3").write_bytes(b"half")
    first = source.load()
    assert not abandoned.exists()
    mtimes = {p: p.stat().st_mtime_ns for p in source.folder.rglob("*")}
    again = build(tmp_path, n_songs=12, duration=1.0, min_duration=0.5)
    assert [s.to_dict() for s in again.load().songs] == [s.to_dict() for s in first.songs]
    assert {p: p.stat().st_mtime_ns for p in source.folder.rglob("*")} == mtimes
    assert [p.name for p in source.folder.parent.iterdir()] == ["MERGE_Bimodal_Complete"]  # no temp left

    lost = Path(first.songs[0].audio_path)
    lost.unlink()
    table = again.load()
    assert lost.is_file() and table.failures == []
    assert file_digest(lost) == file_digest(Path(build(tmp_path / "fresh", n_songs=12, duration=1.0,
                                                         min_duration=0.5).load().songs[0].audio_path))


def _rms_db(path):
    y, _ = sf.read(path)
    return 20 * np.log10(np.sqrt(np.mean(y ** 2)))


def _onset_strength(path):
    """Mean positive spectral flux: how much new energy appears per frame."""
    y, _ = sf.read(path)
    frames = np.lib.stride_tricks.sliding_window_view(y, 1024)[::512] * np.hanning(1024)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    return np.maximum(np.diff(mag, axis=0), 0).sum(axis=1).mean()


def test_the_labels_show_in_lyrics_and_audio(generated):
    songs = generated[2]["a"].songs
    balance = np.array([sum(w in POSITIVE_WORDS for w in re.findall(r"[a-z]+", s.lyrics.lower()))
                        - sum(w in NEGATIVE_WORDS for w in re.findall(r"[a-z]+", s.lyrics.lower()))
                        for s in songs])
    valence = np.array([s.valence for s in songs])
    assert valence[balance > 0].mean() > valence[balance <= 0].mean() + 0.2
    assert np.corrcoef(balance, valence)[0, 1] > 0.5

    arousal = np.array([s.arousal for s in songs])
    rms = np.array([_rms_db(s.audio_path) for s in songs])
    onsets = np.array([_onset_strength(s.audio_path) for s in songs])
    high = arousal > 0.5
    assert rms[high].mean() > rms[~high].mean() + 3  # dB
    assert onsets[high].mean() > 2 * onsets[~high].mean()
    assert np.corrcoef(rms, arousal)[0, 1] > 0.4 and np.corrcoef(onsets, arousal)[0, 1] > 0.6


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="n_songs"):
        build("unused", n_songs=4)
    with pytest.raises(ConfigError, match="min_duration"):
        build("unused", duration=2.0, min_duration=3.0)
    with pytest.raises(ConfigError, match="MP3"):
        build("unused", sample_rate=22000)


def test_spec_key_changes_with_every_setting():
    base = SyntheticSpec(**TINY)
    keys = {base.key()} | {SyntheticSpec(**{**TINY, k: v}).key() for k, v in
                           [("n_songs", 25), ("duration", 2.5), ("min_duration", 1.5), ("seed", 3),
                            ("sample_rate", 16000)]}
    assert len(keys) == 6
    assert isinstance(build("x"), SyntheticMerge)
