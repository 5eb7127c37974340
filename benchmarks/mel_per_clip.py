"""Mel extraction cost per clip (decode + resample + mel), after numba's warm-up.

    python benchmarks/mel_per_clip.py

Writes 8-s and 30-s MP3 clips (44.1 kHz stereo, like real downloads) to a temp folder and
times `extract_features` in-process on each, cache off (a fresh cache folder per clip)."""

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from merx.config.settings import FeatureSettings
from merx.data.songs import Song
from merx.features.mel import extract_features


def main():
    rng = np.random.default_rng(0)
    cfg = FeatureSettings(workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seconds in (8, 30):
            times = []
            for i in range(6):
                wave = (0.1 * rng.standard_normal((seconds * 44100, 2))).astype(np.float32)
                path = tmp / f"clip{seconds}_{i}.mp3"
                sf.write(path, wave, 44100)
                song = Song(id=f"s{i}", split="train", quadrant="Q1", audio_path=str(path))
                t0 = time.perf_counter()
                fs = extract_features([song], cfg, tmp / f"cache{seconds}_{i}", workers=1, progress=False)
                times.append(time.perf_counter() - t0)
                assert fs.computed == 1
            warm = times[1:]  # the first pays numba's JIT load
            print(f"{seconds:2d}-s clip: median {1000 * np.median(warm):.0f} ms per clip "
                  f"(min {1000 * min(warm):.0f}, max {1000 * max(warm):.0f}; first {1000 * times[0]:.0f} ms)")


if __name__ == "__main__":
    main()
