"""Epoch writes per second into one results database from 1, 2 and 4 processes at once:
an SQLite file (one writer at a time) and a PostgreSQL server (a row lock per run).

Each process starts one run and records ``--epochs`` epochs of 8 metrics, each epoch its own
transaction, as a training run does (without the training). The PostgreSQL server is the test
suite's (``tests/postgres_server.py``: a unix socket, fsync off), so its numbers are the store's
own overhead, not a durable server's.

    python benchmarks/store_writers.py [--epochs 300] [--procs 1 2 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

METRICS = [f"m{i}" for i in range(8)]


def _writer(url, barrier, epochs, out):
    from merx.store import RunStore

    store = RunStore(url)
    barrier.wait()
    t0 = time.perf_counter()
    run_id = store.start_run("bench", None, {}, "c", "g", 0, "regression", "cpu", {}, None)
    for epoch in range(1, epochs + 1):
        store.add_epoch(run_id, epoch, {m: epoch / 7 for m in METRICS})
    store.finish_run(run_id, "completed", epochs_run=epochs)
    out.put(time.perf_counter() - t0)


def measure(url: str, procs: int, epochs: int) -> float:
    """Epochs written per second by ``procs`` processes together (the slowest one's wall time)."""
    from merx.store import RunStore

    RunStore(url).close()  # migrate before timing
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_writer, args=(url, barrier, epochs, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    times = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    return procs * epochs / max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print("| processes | SQLite (WAL) epochs/s | PostgreSQL epochs/s |")
            print("|---|---|---|")
            for n in args.procs:
                lite = measure(str(Path(tmp) / f"bench{n}.db"), n, args.epochs)
                pg = measure(server.url(server.new_database()), n, args.epochs)
                print(f"| {n} | {lite:,.0f} | {pg:,.0f} |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
