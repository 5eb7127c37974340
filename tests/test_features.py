"""Mel feature stage: real audio files, real librosa, a real on-disk cache."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from merx.config.settings import FeatureSettings
from merx.data.songs import Song
from merx.features.cache import mel_params_key
from merx.features.crop import crop, n_frames
from merx.features.mel import MelView, extract_features, reference_power, to_db, train_max_ref

SR = 8000


@pytest.fixture(scope="module", autouse=True)
def _numba_cache(request):
    """librosa's numba JIT takes ~20 s per fresh cache folder: keep one in pytest's cache dir.

    Left set for the rest of the session on purpose (numba reads it once per process, and
    spawned extraction workers inherit it); a session-wide conftest fixture is its real home."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(request.config.cache.mkdir("merx-numba")))


def cfg(**over):
    """Feature settings: the schema's defaults, tiny spectrograms (1 s, 16 mels)."""
    return FeatureSettings(**{**dict(sample_rate=SR, n_fft=256, hop_length=64, n_mels=16, duration=1.0,
                                     workers=1), **over})


def noise(seconds, amplitude=0.3, seed=0):
    return (amplitude * np.random.default_rng(seed).uniform(-1, 1, int(seconds * SR))).astype(np.float32)


def write(path, y, sr=SR):
    """Float WAV keeps amplitudes exact (no 16-bit rounding); MP3 is written where it matters."""
    path = Path(path)
    sf.write(path, y, sr, subtype="FLOAT" if path.suffix == ".wav" else None)
    return str(path)


def song(sid, path, split="train"):
    return Song(id=sid, split=split, quadrant="Q1", audio_path=path)


# -- lengths, dB scale, padding ---------------------------------------------------------------

def test_n_frames_matches_the_notebooks():
    assert n_frames(FeatureSettings(duration=30.0, sample_rate=22050, hop_length=512)) == 1292
    assert n_frames(cfg()) == 1 + SR // 64


def test_short_clip_is_padded_with_exactly_the_floor(tmp_path):
    c = cfg(top_db=60.0)
    fs = extract_features([song("a", write(tmp_path / "a.wav", noise(0.5)))], c, tmp_path / "cache", progress=False)
    power = fs.load_power("a")
    out = MelView(fs, c, 1.0).get("a")
    assert out.shape == (16, n_frames(c)) and out.dtype == np.float32
    real = power.shape[1]
    assert real < n_frames(c)
    np.testing.assert_array_equal(out[:, :real], to_db(power, 1.0, 60.0))
    assert np.all(out[:, real:] == np.float32(-60.0))
    assert out.min() == np.float32(-60.0)  # the pad is the scale's floor, nothing lies below it
    assert out[:, :real].max() > -30.0  # and the real frames are far above it


def test_fixed_reference_halving_amplitude_lowers_every_bin_by_6_02_db(tmp_path):
    y = noise(1.5)
    songs = [song("full", write(tmp_path / "full.wav", y)), song("half", write(tmp_path / "half.wav", y / 2))]
    c = cfg(duration=1.5, ref="fixed", ref_value=1.0)
    fs = extract_features(songs, c, tmp_path / "cache", progress=False)
    view = MelView(fs, c, reference_power(fs, c, ["full"]))
    full, half = view.get("full"), view.get("half")
    unfloored = (full > view.floor) & (half > view.floor)
    assert unfloored.mean() > 0.9
    np.testing.assert_allclose(full[unfloored] - half[unfloored], 20 * np.log10(2), atol=1e-3)


def test_to_db_floor_is_relative_to_the_reference_not_the_clip():
    power = np.array([[1e-12, 1e-4, 1.0, 100.0]], dtype=np.float32)
    np.testing.assert_allclose(to_db(power, 1.0, 80.0), [[-80.0, -40.0, 0.0, 20.0]], atol=1e-4)
    np.testing.assert_allclose(to_db(power, 100.0, 50.0), [[-50.0, -50.0, -20.0, 0.0]], atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        to_db(power, 0.0, 80.0)


def test_train_max_uses_training_songs_only(tmp_path):
    import librosa

    c = cfg(ref="train_max")
    songs = [song("t1", write(tmp_path / "t1.wav", noise(1, 0.1, 1))),
             song("t2", write(tmp_path / "t2.wav", noise(1, 0.2, 2))),
             song("v", write(tmp_path / "v.wav", noise(1, 0.9, 3)), "validate"),
             song("x", write(tmp_path / "x.mp3", noise(1, 0.8, 4)), "test")]
    fs = extract_features(songs, c, tmp_path / "cache", progress=False)
    assert fs.load_power("v").max() > fs.load_power("t2").max()  # validation is the loudest

    # Make validation/test unreadable everywhere: opening any of their files would raise.
    for s in songs[2:]:
        os.remove(s.audio_path)
        fs.paths[s.id].write_bytes(b"not an npy file")
    ref = train_max_ref(fs, [s.id for s in songs if s.split == "train"])

    y, _ = librosa.load(songs[1].audio_path, sr=SR, mono=True)
    expected = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=256, hop_length=64, n_mels=16).max()
    assert ref == pytest.approx(float(expected), rel=1e-5)
    assert reference_power(fs, c, ["t1", "t2"]) == ref


# -- crop strategies ----------------------------------------------------------------------------

def _db_with_loud(total, start, stop, quiet=1e-6, loud=1.0):
    power = np.full((4, total), quiet, dtype=np.float32)
    power[:, start:stop] = loud
    return to_db(power, 1.0, 80.0)


def test_head_middle_and_max_energy_pick_the_frames_they_say():
    db = _db_with_loud(300, 170, 220)
    db[:, 0] = -50.0  # mark the first frame so head is visible
    np.testing.assert_array_equal(crop(db, 50, "head", floor=-80.0), db[:, :50])
    np.testing.assert_array_equal(crop(db, 50, "middle", floor=-80.0), db[:, 125:175])
    out = crop(db, 50, "max_energy", floor=-80.0)
    np.testing.assert_array_equal(out, db[:, 170:220])
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_max_energy_ranks_windows_by_linear_power_not_mean_db():
    # A short very loud burst vs a long moderate passage: more energy in the burst, higher mean dB
    # in the passage. Linear power picks the burst.
    power = np.full((4, 400), 1e-9, dtype=np.float32)
    power[:, 50:150] = 1e-2  # moderate passage (100 frames)
    power[:, 300:305] = 10.0  # burst (5 frames)
    db = to_db(power, 1.0, 80.0)
    out = crop(db, 60, "max_energy", floor=-80.0)
    assert (out[0] == db[0, 300]).sum() == 5  # the whole burst is inside
    assert db[:, 50:110].mean() > out.mean()  # mean dB would have picked the passage


def test_random_crop_varies_and_stays_in_bounds():
    db = np.arange(4 * 200, dtype=np.float32).reshape(4, 200)
    rng = np.random.default_rng(0)
    starts = []
    for _ in range(40):
        out = crop(db, 50, "random", rng, floor=-80.0)
        start = int(out[0, 0])
        assert 0 <= start <= 150
        np.testing.assert_array_equal(out, db[:, start:start + 50])
        starts.append(start)
    assert len(set(starts)) > 10
    same = [int(crop(db, 50, "random", np.random.default_rng(7), floor=-80.0)[0, 0]) for _ in range(2)]
    assert same[0] == same[1]
    with pytest.raises(ValueError, match="rng"):
        crop(db, 50, "random", floor=-80.0)


@pytest.mark.parametrize("strategy", ["head", "middle", "max_energy", "random"])
def test_every_strategy_pads_short_clips_with_the_floor(strategy):
    db = _db_with_loud(30, 5, 10)
    out = crop(db, 50, strategy, np.random.default_rng(0), floor=-80.0)
    np.testing.assert_array_equal(out[:, :30], db)
    assert np.all(out[:, 30:] == np.float32(-80.0))


def test_melview_random_only_in_training(tmp_path):
    c = cfg(crop="random", duration=0.5)
    fs = extract_features([song("a", write(tmp_path / "a.wav", noise(2)))], c, tmp_path / "cache", progress=False)
    view = MelView(fs, c, 1.0)
    db = to_db(fs.load_power("a"), 1.0, c.top_db)
    n = n_frames(c)
    middle = (db.shape[1] - n) // 2
    np.testing.assert_array_equal(view.get("a", train=False), db[:, middle:middle + n])
    rng = np.random.default_rng(0)
    draws = {view.get("a", train=True, rng=rng).tobytes() for _ in range(10)}
    assert len(draws) > 1


# -- extraction: failures, cache, parallelism -----------------------------------------------------

def test_bad_files_become_failures_and_the_rest_go_on(tmp_path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).bytes(6000))
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    silent = write(tmp_path / "nothing.wav", np.zeros(0, dtype=np.float32))
    songs = [song("good", write(tmp_path / "good.mp3", noise(1))), song("corrupt", str(corrupt)),
             song("empty", str(empty)), song("missing", str(tmp_path / "missing.mp3")),
             song("nothing", silent), song("good2", write(tmp_path / "good2.wav", noise(1, seed=9)))]
    fs = extract_features(songs, cfg(), tmp_path / "cache", progress=False)

    assert set(fs.paths) == {"good", "good2"}
    assert fs.load_power("good").shape == (16, 1 + SR // 64)
    reasons = {f.song_id: f for f in fs.failures}
    assert list(reasons) == ["corrupt", "empty", "missing", "nothing"]
    assert all(f.stage == "audio" for f in fs.failures)
    assert reasons["corrupt"].path == str(corrupt)
    assert "could not decode" in reasons["corrupt"].reason and "Error" in reasons["corrupt"].reason
    assert reasons["empty"].reason.startswith("the file is empty (0 bytes)")
    assert "No such file" in reasons["missing"].reason
    assert "no samples" in reasons["nothing"].reason
    assert fs.computed == 2 and fs.hits == 0
    with pytest.raises(KeyError, match="failed extraction"):
        fs.load_power("corrupt")


def test_second_run_is_all_cache_hits_and_feature_settings_need_no_reextraction(tmp_path):
    songs = [song(f"s{i}", write(tmp_path / f"s{i}.wav", noise(1, seed=i))) for i in range(3)]
    cache = tmp_path / "cache"
    first = extract_features(songs, cfg(), cache, progress=False)
    assert (first.computed, first.hits) == (3, 0)
    stamps = {p: p.stat().st_mtime_ns for p in first.paths.values()}
    folder = cache / "mel" / mel_params_key(cfg())
    assert {p.parent for p in first.paths.values()} == {folder}
    assert sorted(os.listdir(folder)) == sorted(p.name for p in stamps)  # no temp files left behind

    for changed in (cfg(), cfg(top_db=40.0), cfg(crop="head"), cfg(duration=3.0), cfg(ref="train_max")):
        again = extract_features(songs, changed, cache, progress=False)
        assert (again.computed, again.hits) == (0, 3)
        assert again.paths == first.paths
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # Keyed by content: a moved file still hits; other extraction settings are another key.
    moved = tmp_path / "elsewhere.wav"
    os.replace(songs[0].audio_path, moved)
    assert extract_features([song("s0", str(moved))], cfg(), cache, progress=False).hits == 1
    assert extract_features(songs[1:], cfg(n_mels=8), cache, progress=False).computed == 2


def test_unloadable_cache_file_is_recomputed(tmp_path):
    songs = [song(f"s{i}", write(tmp_path / f"s{i}.wav", noise(1, seed=i))) for i in range(2)]
    first = extract_features(songs, cfg(), tmp_path / "cache", progress=False)
    good = first.load_power("s0")
    first.paths["s0"].write_bytes(first.paths["s0"].read_bytes()[:100])  # truncated mid-array
    again = extract_features(songs, cfg(), tmp_path / "cache", progress=False)
    assert (again.computed, again.hits) == (1, 1)
    np.testing.assert_array_equal(again.load_power("s0"), good)


def test_parallel_and_in_process_extraction_are_identical(tmp_path):
    songs = [song(f"s{i}", write(tmp_path / f"s{i}.mp3" if i % 2 else tmp_path / f"s{i}.wav",
                                 noise(1 + i / 4, seed=i))) for i in range(4)]
    songs.append(song("bad", str(tmp_path / "missing.wav")))
    serial = extract_features(songs, cfg(), tmp_path / "c1", workers=1, progress=False)
    parallel = extract_features(songs, cfg(), tmp_path / "c2", workers=2, progress=False)
    assert parallel.computed == serial.computed == 4
    assert [f.song_id for f in parallel.failures] == ["bad"]
    for s in songs[:4]:
        np.testing.assert_array_equal(parallel.load_power(s.id), serial.load_power(s.id))


def test_numba_cache_dir_is_set_only_when_the_user_has_not(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    extract_features([], cfg(), tmp_path / "cache", progress=False)
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    extract_features([], cfg(), tmp_path / "cache", progress=False)
    assert os.environ["NUMBA_CACHE_DIR"] == str((tmp_path / "cache" / "numba").resolve())


# -- pools: threads, chunked processes, the default count -------------------------------------------

def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_threads_and_chunked_processes_write_the_same_bytes_and_failures_as_one_after_another(tmp_path):
    """Each pool against the plain loop: same cached bytes, same per-song failures and reasons.

    9 files to extract in 2 processes go out as chunks of 2 songs (about 4 tasks per worker), so
    a chunk holds a corrupt file next to a good one; one file is at 11,025 Hz (soxr resamples)."""
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).bytes(6000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    songs = [song(f"s{i}", write(tmp_path / (f"s{i}.mp3" if i % 2 else f"s{i}.wav"), noise(1 + i / 8, seed=i)))
             for i in range(6)]
    songs[3:3] = [song("corrupt", str(corrupt)), song("empty", str(empty))]
    songs.append(song("resampled", write(tmp_path / "r.wav", noise(1.2, seed=7)[:8000], sr=11025)))
    songs.append(song("twin", songs[0].audio_path))  # the same audio: one job, two songs
    songs.append(song("missing", str(tmp_path / "missing.wav")))
    blas_before = _blas_threads()

    runs = {(w, pool): extract_features(songs, cfg(), tmp_path / f"c-{w}-{pool}", workers=w, progress=False,
                                        pool=pool)
            for w, pool in [(1, None), (2, "threads"), (0, "threads"), (2, "processes")]}
    serial = runs[(1, None)]
    assert serial.computed == 8 and {f.song_id for f in serial.failures} == {"corrupt", "empty", "missing"}
    for key, fs in runs.items():
        assert (fs.computed, fs.hits) == (serial.computed, serial.hits), key
        assert [(f.song_id, f.reason, f.path) for f in fs.failures] == \
            [(f.song_id, f.reason, f.path) for f in serial.failures], key
        assert set(fs.paths) == set(serial.paths)
        for sid, path in fs.paths.items():
            assert path.name == serial.paths[sid].name
            assert path.read_bytes() == serial.paths[sid].read_bytes(), (key, sid)
    assert _blas_threads() == blas_before  # one BLAS thread only while extracting


def test_process_workers_run_blas_at_one_thread():
    from merx.features.workers import process_pool

    with process_pool(2) as pool:
        assert pool.submit(os.getenv, "OPENBLAS_NUM_THREADS").result() == "1"
        assert set(pool.submit(_blas_threads).result()) == {1}


def test_default_pool_is_threads_never_more_than_songs_or_the_cap(monkeypatch):
    import merx.features.workers as workers
    from merx.features.mel import MAX_AUTO_THREADS, _plan

    monkeypatch.setattr(workers, "usable_cores", lambda: 64)
    assert _plan(3, 0) == ("threads", 3)
    assert _plan(1, 0) == ("threads", 1)
    assert _plan(10_000, 0) == ("threads", MAX_AUTO_THREADS)
    assert _plan(10_000, 0, "processes") == ("processes", 64)
    assert _plan(3, 8) == ("processes", 3)  # an explicit count keeps meaning processes, never idle ones
    assert _plan(3, 8, "threads") == ("threads", 3)
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    assert _plan(400, 0) == ("threads", 2)
    for jobs in range(0, 40):
        for w in (0, 1, 2, 5, 100):
            kind, n = _plan(jobs, w)
            assert 1 <= n <= max(1, jobs)
    with pytest.raises(ValueError, match="workers"):
        _plan(3, -1)
    with pytest.raises(ValueError, match="pool"):
        _plan(3, 0, "fibers")


def test_usable_cores_is_this_process_s_affinity_not_the_machine_s():
    from merx.features.workers import usable_cores

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert usable_cores() == len(os.sched_getaffinity(0))
