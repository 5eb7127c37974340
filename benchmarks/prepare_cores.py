"""Feature extraction of `merx prepare` at 1, 2, ... cores: threads against processes, cold and warm JIT.

    python benchmarks/prepare_cores.py [--songs 400] [--duration 8] [--cores 1,2,all] [--pools threads,processes]
                                       [--numba cold,warm] [--repeat 3] [--checkout DIR] [--scaling 0]

Generates the quickstart's synthetic songs once in a temporary folder, then, for every
combination, deletes the cached mel spectrograms (the songs stay) and times a fresh
`python -m merx.cli prepare experiments/quickstart.toml` restricted to the first k cores with
``sched_setaffinity`` (what ``taskset -c 0-(k-1)`` does), so "cores" is what merx itself sees:

* threads:   ``features.workers = 0`` (the default: a thread pool sized from the usable cores);
* processes: ``features.workers = k`` (k spawned worker processes; k = 1 runs in-process, the
  same code path as one thread, so it is not repeated);
* cold: ``NUMBA_CACHE_DIR`` is a new empty folder (librosa's numba functions compile, ~17 s of
  CPU on the development machine); warm: a folder a previous run filled.

Prints one Markdown row per combination: the ``features: ... (X s)`` seconds merx reports for
extraction (librosa's first use and the JIT included) as the fastest and the median of
``--repeat`` runs, and the median wall time of the whole command (Python start-up, imports and
reading the songs' tables included). Other jobs on the machine only ever add time, so on a
shared machine the fastest run is the better estimate; the load averages are printed too.

``--scaling N`` then runs N rounds in this process of extraction alone (librosa already loaded,
the quickstart's 64 mels): k threads against the plain loop, each round next to a calibration,
the same k-thread pool doing 300x300 matrix products at one BLAS thread, which never needs the
GIL. Where other jobs take cores, the calibration falls short of k too; the rounds whose
calibration reaches 0.9 k show what the threads give on k free cores.

``--checkout DIR`` times the ``merx`` package in DIR instead of the installed one, e.g. the
code before a change: ``mkdir /tmp/old && git archive HEAD~1 merx | tar -x -C /tmp/old``. It
runs ``python -S`` with DIR and this interpreter's site-packages on PYTHONPATH (no ``.pth``
files, so an editable install of merx cannot shadow DIR; spawned workers inherit both).
"""

import argparse
import os
import re
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "quickstart.toml"


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def prepare(tmp: Path, songs: int, workers: int, cpus: list[int], numba_dir: Path,
            checkout: Path | None = None, duration: float = 8.0) -> tuple[float, float]:
    """(feature seconds merx reports, wall seconds) of one ``merx prepare`` on ``cpus``."""
    python = [sys.executable]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_dir)}
    if checkout is not None:
        python.append("-S")
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), *site.getsitepackages()])
    args = [*python, "-m", "merx.cli", "prepare", str(EXPERIMENT), "--set", f"data.source.n_songs={songs}",
            "--set", f"data.source.duration={duration}", "--set", f"data.cache_dir={tmp / 'cache'}",
            "--set", f"features.workers={workers}"]
    # Affinity is inherited by spawned workers and read by merx's worker default: merx sees k cores.
    start = (lambda: os.sched_setaffinity(0, cpus)) if hasattr(os, "sched_setaffinity") else None
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, preexec_fn=start)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(out.stdout + out.stderr)
    found = re.search(r"features: (\d+) computed.*?\(([\d.]+) s\)", out.stdout)
    if not found or int(found.group(1)) != songs:
        sys.exit(f"expected {songs} spectrograms computed:\n{out.stdout}")
    return float(found.group(2)), wall


def scaling(tmp: Path, counts: list[int], rounds: int) -> None:
    """k threads against one, extraction only, beside a GIL-free calibration; see the docstring."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from merx.config.settings import FeatureSettings
    from merx.data.songs import Song
    from merx.features.mel import extract_features
    from merx.features.workers import one_blas_thread

    audio = sorted((tmp / "cache" / "data").rglob("*.mp3"))
    songs = [Song(id=f"s{i}", split="train", quadrant="Q1", audio_path=str(p)) for i, p in enumerate(audio)]
    features = FeatureSettings(n_mels=64)
    a = np.random.default_rng(0).random((300, 300))

    def extract(workers: int) -> float:
        out = Path(tempfile.mkdtemp(dir=tmp, prefix="scaling-"))
        t0 = time.perf_counter()
        fs = extract_features(songs, features, out, workers=workers, progress=False, pool="threads")
        seconds = time.perf_counter() - t0
        assert fs.computed == len(songs), fs.failures[:3]
        shutil.rmtree(out)
        return seconds

    def calibrate(k: int) -> float:
        with one_blas_thread(), ThreadPoolExecutor(k) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda _: a @ a, range(400)))
            return time.perf_counter() - t0

    extract(1)  # librosa's import and numba load, once
    print(f"\n{len(songs)} songs, extraction alone; speed-up of k threads over 1 (load average {load()})\n")
    print("| round | k | calibration speed-up | extraction speed-up | extraction s, 1 thread | k threads |")
    print("|---|---|---|---|---|---|")
    for r in range(rounds):
        for k in (k for k in counts if k > 1):
            c1, ck = calibrate(1), calibrate(k)
            e1, ek = extract(1), extract(k)
            print(f"| {r} | {k} | {c1 / ck:.2f} | {e1 / ek:.2f} | {e1:.2f} | {ek:.2f} |", flush=True)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--songs", type=int, default=400)
    ap.add_argument("--duration", type=float, default=8.0, help="longest synthetic song, s (quickstart: 8)")
    ap.add_argument("--cores", default="1,2,all", help="comma-separated core counts; 'all' = every usable core")
    ap.add_argument("--pools", default="threads,processes")
    ap.add_argument("--numba", default="cold,warm")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--checkout", type=Path, help="time the merx package in this folder instead")
    ap.add_argument("--scaling", type=int, default=0, metavar="N", help="rounds of threads-only scaling")
    args = ap.parse_args()
    if args.scaling and args.checkout:
        sys.exit("--scaling times the installed merx; leave out --checkout")
    checkout = args.checkout.resolve() if args.checkout else None
    if checkout is not None and not (checkout / "merx" / "__init__.py").is_file():
        sys.exit(f"{checkout} holds no merx package")
    cores = usable_cores()
    counts = list(dict.fromkeys(len(cores) if c == "all" else int(c) for c in args.cores.split(",")))
    if max(counts) > len(cores):
        sys.exit(f"only {len(cores)} usable cores")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = tmp / "numba-warm"
        print(f"generating {args.songs} quickstart songs once ...", file=sys.stderr)
        prepare(tmp, args.songs, 1, cores, warm, checkout, args.duration)  # also fills the warm numba cache
        mel = tmp / "cache" / "mel"
        print(f"songs: {args.songs} of up to {args.duration:g} s; usable cores: {len(cores)}; "
              f"python {sys.version.split()[0]}; merx from {checkout or 'the installed package'}; "
              f"load average {load()}\n")
        print("| JIT cache | cores | pool | workers | feature s, fastest | median | runs | prepare wall s (median) |")
        print("|---|---|---|---|---|---|---|---|")
        for state in args.numba.split(","):
            for k in counts:
                for pool in args.pools.split(","):
                    if pool == "processes" and k == 1:
                        continue  # workers = 1 is the in-process path, timed as threads at 1 core
                    workers = 0 if pool == "threads" else k
                    feats, walls = [], []
                    for _ in range(args.repeat):
                        shutil.rmtree(mel, ignore_errors=True)
                        folder = warm
                        if state == "cold":
                            folder = Path(tempfile.mkdtemp(dir=tmp, prefix="numba-cold-"))
                        f, w = prepare(tmp, args.songs, workers, cores[:k], folder, checkout, args.duration)
                        feats.append(f)
                        walls.append(w)
                    runs = ", ".join(f"{x:.1f}" for x in feats)
                    print(f"| {state} | {k} | {pool} | {workers} | {min(feats):.1f} | {statistics.median(feats):.1f} | "
                          f"{runs} | {statistics.median(walls):.1f} |", flush=True)
        print(f"\nload average afterwards {load()}")
        if args.scaling:
            os.environ["NUMBA_CACHE_DIR"] = str(warm)  # before librosa (and numba) is imported here
            scaling(tmp, counts, args.scaling)


if __name__ == "__main__":
    main()
