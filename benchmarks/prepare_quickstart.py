"""Time `merx prepare` of the quickstart data: first (generate + extract) and second (cached).

    python benchmarks/prepare_quickstart.py [--songs 240] [--workers 0]

Runs in a fresh temporary folder, so the first run really starts cold (the numba JIT cache is
kept: set NUMBA_CACHE_DIR to a fresh folder to include librosa's one-off compilation).
``--workers`` is ``features.workers`` (0, the default: threads, one per usable core). For
extraction alone at 1, 2, ... cores, threads against processes, see prepare_cores.py."""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args, cwd):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "merx.cli", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stdout + out.stderr)
    return time.perf_counter() - t0, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--songs", type=int, default=240)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    exp = REPO / "experiments" / "quickstart.toml"
    with tempfile.TemporaryDirectory() as tmp:
        sets = ["--set", f"data.source.n_songs={args.songs}", "--set", f"features.workers={args.workers}"]
        first, out1 = timed(["prepare", str(exp), *sets], tmp)
        second, out2 = timed(["prepare", str(exp), *sets], tmp)

    def line(out):
        return next((x for x in out.splitlines() if x.startswith("features:")), "")

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"songs: {args.songs}; usable cores: {cores}; features.workers = {args.workers}")
    print(f"first  merx prepare: {first:6.1f} s  ({line(out1)})")
    print(f"second merx prepare: {second:6.1f} s  ({line(out2)})")


if __name__ == "__main__":
    main()
