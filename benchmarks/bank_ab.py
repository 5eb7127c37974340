"""The feature bank against the per-song DataLoader, epoch for epoch, in alternating order.

    python benchmarks/bank_ab.py EXPERIMENT [--pairs 8] [--threads 1] [--set KEY=VALUE ...]

One model, one Trainer; each pair times ``Trainer.train_one_epoch`` once over the run's bank
(``merx.pipeline.loaders``) and once over ``merx.dataset.make_loader`` (num_workers as
configured), the order alternating from pair to pair, so that a shared machine slowing down for a
while weighs on both sides alike. Prints each pair, the medians, and the median of the per-pair
ratios (DataLoader / bank). ``benchmarks/epoch.py`` gives the same paths beside the pure step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from merx.config import load
    from merx.config.settings import Experiment
    from merx.dataset import make_loader
    from merx.pipeline import build, datasets, loaders, prepare
    from merx.plugins import get_registry
    from merx.train import Trainer, seed_everything

    exp = Experiment.from_config(load(args.experiment, args.sets))
    registry, device = get_registry(), torch.device("cpu")
    seed_everything(exp.seed)
    prepared = prepare(exp, registry, progress=False)
    model = build(exp, registry)
    data = datasets(exp, prepared, model, device)
    chosen, path = loaders(exp, data, device)
    if path.startswith("DataLoader"):
        sys.exit(f"{args.experiment} takes the DataLoader path ({path}): there is no bank to compare")
    per_song = make_loader(data["train"], exp.train.batch_size, True, exp.train.num_workers, exp.seed)
    trainer = Trainer(model, chosen["train"], chosen["validate"], exp.train, exp.task, device, progress=False)
    trainer.train_one_epoch(1)  # warm-up
    times = {"bank": [], "loader": []}
    print(f"{exp.name}: {path}; {torch.get_num_threads()} threads", flush=True)
    for pair in range(args.pairs):
        for name in ("bank", "loader") if pair % 2 == 0 else ("loader", "bank"):
            trainer.train_loader = chosen["train"] if name == "bank" else per_song
            t0 = time.perf_counter()
            trainer.train_one_epoch(pair + 2)
            times[name].append(time.perf_counter() - t0)
        print(f"  pair {pair + 1}: bank {times['bank'][-1]:.2f} s, DataLoader {times['loader'][-1]:.2f} s", flush=True)
    ratios = [loader / bank for bank, loader in zip(times["bank"], times["loader"], strict=True)]
    print(f"median training epoch: bank {statistics.median(times['bank']):.2f} s, DataLoader "
          f"{statistics.median(times['loader']):.2f} s; DataLoader / bank per pair: median "
          f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    sys.exit(main())
