"""Songs per second for `merx predict` on the CPU: batched against one song at a time.

    python benchmarks/predict.py [--songs 64] [--batch-size 16] [--threads 0]

The model has the quickstart's shapes (experiments/quickstart.toml: 64 mels, 6-s windows, the
VGG-style CNN 16-32-64-128, the packaged MiniLM frozen with mean pooling at 128 tokens, concat)
with its weights as built (speed does not depend on training). The songs are the quickstart's
8-s synthetic songs, generated into a temporary folder. Four timings of ``merx.inference.predict``:

* cold: nothing cached, so each song's audio is decoded into a mel spectrogram and its lyrics
  run through MiniLM (batched: all songs in one call; one at a time: one call per song);
* warm: the same again, spectrograms and MiniLM outputs read from the cache.

numba's JIT (librosa) is paid before the timings, once. ``--threads`` sets torch's threads
(0: torch's default)."""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--songs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from merx.config import load
    from merx.inference import SongInput, TrainedModel, predict
    from merx.pipeline import as_experiment, build, load_songs
    from merx.plugins import get_registry

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load(REPO / "experiments" / "quickstart.toml",
                   [f"data.source.n_songs={max(args.songs * 2, 40)}", f"data.cache_dir='{tmp / 'data'}'"])
        exp = as_experiment(cfg)
        table = load_songs(exp, get_registry())
        songs = [SongInput(s.id, audio_path=s.audio_path, lyrics_path=s.lyrics_path) for s in table.songs][:args.songs]
        torch.manual_seed(0)
        trained = TrainedModel(cfg, exp, build(exp, get_registry()).eval(), torch.device("cpu"), 1.0, None, "bench")
        # librosa's JIT and MiniLM's first call, outside the timings.
        predict(trained, songs[:1], cache_dir=tmp / "warmup")

        def timed(cache, one_at_a_time):
            t0 = time.perf_counter()
            if one_at_a_time:
                for s in songs:
                    predict(trained, [s], batch_size=1, cache_dir=cache)
            else:
                predict(trained, songs, batch_size=args.batch_size, cache_dir=cache)
            return time.perf_counter() - t0

        rows = []
        for mode, cache in (("batched", tmp / "a"), ("one at a time", tmp / "b")):
            one = mode != "batched"
            cold = timed(cache, one)
            warm = timed(cache, one)
            rows.append((mode, cold, warm))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.songs} songs of 8 s; batch size {args.batch_size}; torch threads {torch.get_num_threads()}; "
          f"usable cores {cores}; python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"{'':14} {'cold s':>8} {'songs/s':>8} {'warm s':>8} {'songs/s':>8}")
    for mode, cold, warm in rows:
        print(f"{mode:14} {cold:8.2f} {args.songs / cold:8.1f} {warm:8.2f} {args.songs / warm:8.1f}")


if __name__ == "__main__":
    main()
