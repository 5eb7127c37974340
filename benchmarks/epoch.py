"""Where a training epoch's time goes: merx's epoch against the model's own step and a notebook loop.

    python benchmarks/epoch.py EXPERIMENT [--device cpu] [--epochs 3] [--batches N] [--set KEY=VALUE ...]
                                          [--threads N] [--bert-base-shaped]

On the experiment's real shapes (its data prepared as `merx prepare` does, its model built by
``merx.pipeline.build``, its datasets by ``merx.pipeline.datasets``) it times, each as the
median of ``--epochs`` repeats:

(a) pure step: forward + loss + backward + optimizer step on random tensors already on the
    device, with the batch sizes of a real epoch: the floor any epoch of this model can reach
    (with the run's kernels: the Trainer, built first, puts the audio tower in channels_last on
    CUDA, and every part runs with ``cudnn.benchmark`` as ``Trainer.fit`` does);
(b) merx: ``Trainer.train_one_epoch`` over the batches of the path a run takes
    (``merx.pipeline.loaders``: the feature bank, or the DataLoader for runs that need it), and
    ``merx.train.evaluate`` of the validation split, timed separately; and the same two over the
    per-song DataLoader path (``merx.dataset.make_loader``), for comparison, when the run's own
    path is the bank;
(d) with (b)'s comparison: the training epoch's inputs alone (every batch made and moved to the
    device, no model) on each path;
(c) a notebook-style loop: per-song ``.npy`` files in a temporary folder read by a plain
    DataLoader, a frozen text tower re-run on every batch (when the model has one), clipping as
    configured, and ``loss.item()`` every step.

It prints them, the ratios (merx epoch / pure step x steps, notebook / merx) and the achieved
TFLOP/s, from the FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts for one forward and
backward (matmuls and convolutions; the notebook loop's text-tower re-runs are not counted, they
are the waste it is measured for). ``--batches N`` caps the training and validation batches per
epoch. ``--bert-base-shaped`` swaps the text model for a randomly initialised bert-base-shaped
encoder with MiniLM's tokenizer (no download), for MODEL_2..5 shapes without MERGE's weights.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    """Wait for the device: a timer must not stop while kernels are still queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Capped:
    """The first ``n`` batches of a loader, with a length (the Trainer's progress bar asks)."""

    def __init__(self, loader, n: int | None):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self):
        return len(self.loader) if self.n is None else min(len(self.loader), self.n)


def batch_sizes(n_songs: int, batch_size: int, cap: int | None) -> list[int]:
    sizes = [batch_size] * (n_songs // batch_size) + ([n_songs % batch_size] if n_songs % batch_size else [])
    return sizes[:cap] if cap else sizes


def random_batch(example: dict, size: int, device: torch.device) -> dict:
    """A batch of ``size`` shaped like ``example``: random floats; integer and boolean tensors
    (targets, token ids, masks) are the example's own rows, so they stay valid."""
    out = {}
    for key, value in example.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.is_floating_point():
            out[key] = torch.randn((size, *value.shape[1:]), dtype=value.dtype, device=device)
        else:
            rows = torch.arange(size) % value.shape[0]
            out[key] = value[rows].to(device)
    return out


def bert_base_shaped(folder: Path) -> str:
    """A bert-base-shaped encoder with random weights and MiniLM's (bert-base-uncased) tokenizer."""
    if not (folder / "config.json").exists():
        from transformers import AutoTokenizer, BertConfig, BertModel

        from merx.models.text import resolve_model

        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(folder)
        AutoTokenizer.from_pretrained(resolve_model("minilm")[0]).save_pretrained(folder)
    return str(folder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="an experiment file, e.g. experiments/quickstart.toml")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    ap.add_argument("--epochs", type=int, default=3, help="repeats of each measurement; the median is reported")
    ap.add_argument("--batches", type=int, default=None, help="at most this many batches per epoch")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="an experiment override, as `merx run --set`")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--bert-base-shaped", action="store_true",
                    help="text model: a random bert-base-shaped encoder (no download)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from merx.config import load
    from merx.config.settings import Experiment
    from merx.dataset import make_loader
    from merx.devices import select_device
    from merx.pipeline import build, datasets, loaders, prepare
    from merx.plugins import get_registry
    from merx.train import seed_everything

    sets = list(args.sets)
    if args.bert_base_shaped:
        folder = Path(load(args.experiment, sets)["data"]["cache_dir"]) / "bench" / "bert-base-shaped"
        sets.append(f'model.text.model="{bert_base_shaped(folder)}"')
    exp = Experiment.from_config(load(args.experiment, sets))
    device = select_device(args.device)
    registry = get_registry()
    seed_everything(exp.seed)
    t0 = time.perf_counter()
    prepared = prepare(exp, registry, progress=False)
    model = build(exp, registry)
    data = datasets(exp, prepared, model, device)
    setup = time.perf_counter() - t0
    bs = exp.train.batch_size

    def loader(split, shuffle):
        return Capped(make_loader(data[split], bs, shuffle=shuffle, num_workers=exp.train.num_workers,
                                  seed=exp.seed), args.batches)

    chosen, path = loaders(exp, data, device)
    train, val = Capped(chosen["train"], args.batches), Capped(chosen["validate"], args.batches)
    per_song = None if path.startswith("DataLoader") else (loader("train", True), loader("validate", False))
    sizes = batch_sizes(len(data["train"]), bs, args.batches)
    example = next(iter(train))
    songs = sum(sizes)
    print(f"{exp.name}: {songs} training songs in {len(sizes)} steps of <= {bs} "
          f"({len(data['train'])} in the split), {len(val)} validation batches; "
          + ", ".join(f"{k} {list(v.shape[1:])}" for k, v in example.items() if isinstance(v, torch.Tensor))
          + f"; {device}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; setup {setup:.0f} s; "
          + f"inputs: {path}", flush=True)

    results = measure(args, exp, model, train, val, data["train"], sizes, example, device, per_song)
    report(results, sizes, args.epochs)


def measure(args, exp, model, train, val, train_data, sizes, example, device, per_song=None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from merx.kernels import cudnn_autotune
    from merx.train import Trainer, build_optimizer, evaluate, loss_fn, to_device

    trainer = Trainer(model, train, val, exp.train, exp.task, device, progress=False)  # moves the model
    amp, amp_dtype = trainer.amp, trainer.amp_dtype
    params = trainer.params
    optimizer = build_optimizer(model, exp.train.lr, exp.train.optimizer, exp.train.weight_decay)
    batches = {size: random_batch(example, size, device) for size in set(sizes)}

    def pure_step(batch):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            output = model(batch)
        loss = loss_fn(exp.task, output, batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    full = batches[max(sizes)]
    with FlopCounterMode(display=False) as counter:  # one forward and backward, batch of max(sizes)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            output = model(full)
        loss_fn(exp.task, output, full["target"]).backward()
    flops = counter.get_total_flops() * sum(sizes) / max(sizes)  # per epoch: FLOPs scale with songs
    with cudnn_autotune(device, exp.train.deterministic):
        pure_step(full)  # warm-up: allocator, kernel choice, lazy state
    sync(device)

    times = {"pure": [], "merx_train": [], "merx_val": [], "notebook": []}
    if per_song is not None:
        times.update(loader_train=[], loader_val=[], inputs=[], loader_inputs=[])
    # As Trainer.fit: cuDNN picks its kernels by timing them on CUDA (merx.kernels), for every part.
    with tempfile.TemporaryDirectory() as tmp, cudnn_autotune(device, exp.train.deterministic):
        notebook = NotebookLoop(exp, model, train_data, Path(tmp), device, amp, amp_dtype, params, args.batches)
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            for size in sizes:
                pure_step(batches[size])
            sync(device)
            times["pure"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            trainer.train_one_epoch(epoch)  # ends with its one read of the device: synchronised
            times["merx_train"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            evaluate(model, val, exp.task, device, exp.train.amp)
            times["merx_val"].append(time.perf_counter() - t0)

            if per_song is not None:  # the inputs alone (no model), then the same epoch over the per-song DataLoader
                for key, source in (("inputs", train), ("loader_inputs", per_song[0])):
                    t0 = time.perf_counter()
                    for batch in source:
                        batch = to_device(batch, device)
                    sync(device)
                    times[key].append(time.perf_counter() - t0)
                trainer.train_loader = per_song[0]
                t0 = time.perf_counter()
                trainer.train_one_epoch(epoch)
                times["loader_train"].append(time.perf_counter() - t0)
                trainer.train_loader = train
                t0 = time.perf_counter()
                evaluate(model, per_song[1], exp.task, device, exp.train.amp)
                times["loader_val"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            notebook.epoch(optimizer)
            sync(device)
            times["notebook"].append(time.perf_counter() - t0)
            print(f"  repeat {epoch}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    return {"times": times, "flops": flops, "notebook_setup": notebook.setup_seconds,
            "text_rerun": notebook.rerun_text, "val_batches": len(val)}


class NotebookLoop:
    """The dissertation notebooks' way: one ``.npy`` file per song and input, read by a plain
    DataLoader each epoch; a frozen text tower re-run on every batch; ``loss.item()`` every step."""

    def __init__(self, exp, model, train_data, folder: Path, device, amp, amp_dtype, params, cap):
        t0 = time.perf_counter()
        self.exp, self.model, self.device, self.amp, self.amp_dtype = exp, model, device, amp, amp_dtype
        self.params, self.cap = params, cap
        tower = getattr(model, "text_tower", None)
        self.rerun_text = tower is not None and tower.frozen
        tokens = tower.tokenize([s.lyrics or "" for s in train_data.songs]) if self.rerun_text else {}
        self.files = []
        for i in range(len(train_data)):
            item = train_data[i]
            arrays = {k: v for k, v in item.items() if isinstance(v, torch.Tensor) and not k.startswith("text_")}
            arrays.update({k: v[i] for k, v in tokens.items()})
            paths = {}
            for key, value in arrays.items():
                paths[key] = folder / f"{i}_{key}.npy"
                np.save(paths[key], value.numpy())
            self.files.append(paths)
        self.setup_seconds = time.perf_counter() - t0

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return {key: torch.from_numpy(np.load(path)) for key, path in self.files[i].items()}

    def epoch(self, optimizer):
        from torch.utils.data import DataLoader

        from merx.train import loss_fn

        exp, model, device = self.exp, self.model, self.device
        model.train()
        loss_sum = 0.0
        loader = DataLoader(self, batch_size=exp.train.batch_size, shuffle=True)
        for batch in itertools.islice(loader, self.cap):
            batch = {k: v.to(device) for k, v in batch.items()}
            if self.rerun_text:  # the notebooks encoded the lyrics again for every batch
                with torch.no_grad(), torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp):
                    out = model.text_tower(batch.pop("input_ids"), batch.pop("attention_mask"))
                batch["text_pooled"] = out.pooled
                if model.needs_text_sequence:
                    batch["text_sequence"], batch["text_mask"] = out.sequence, out.mask
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp):
                output = model(batch)
            loss = loss_fn(exp.task, output, batch["target"])
            optimizer.zero_grad()
            loss.backward()
            if exp.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, exp.train.grad_clip)
            optimizer.step()
            loss_sum += loss.item()
        return loss_sum


def report(results: dict, sizes: list[int], epochs: int) -> None:
    med = {k: statistics.median(v) for k, v in results["times"].items()}
    steps, flops = len(sizes), results["flops"]

    def row(what, seconds, count_flops=True, per=steps):
        tflops = f"{flops / seconds / 1e12:.3f}" if count_flops else ""
        print(f"| {what} | {seconds:.2f} | {1000 * seconds / per:.0f} | {tflops} |")

    print(f"\nmedian of {epochs} repeats; {steps} steps; {flops / steps / 1e9:.1f} GFLOP per step (forward + backward)")
    print("| what | seconds per epoch | ms per step | TFLOP/s |")
    print("|---|---|---|---|")
    row("(a) pure step x steps (device-resident random tensors)", med["pure"])
    row("(b) merx training epoch (`Trainer.train_one_epoch`)", med["merx_train"])
    row(f"(b) merx validation (`evaluate`, {results['val_batches']} batches; ms per batch)", med["merx_val"],
        count_flops=False, per=results["val_batches"])
    if "loader_train" in med:
        row("(b) per-song DataLoader path: training epoch", med["loader_train"])
        row("(b) per-song DataLoader path: validation (ms per batch)", med["loader_val"], count_flops=False,
            per=results["val_batches"])
        row("(d) the training inputs alone, merx's path (no model)", med["inputs"], count_flops=False)
        row("(d) the training inputs alone, per-song DataLoader (no model)", med["loader_inputs"],
            count_flops=False)
    rerun = ", frozen text tower re-run per batch" if results["text_rerun"] else ""
    row(f"(c) notebook-style loop (per-song .npy{rerun}, .item() per step)", med["notebook"])
    # Ratios per repeat, then their median: the parts of one repeat run back to back, so a
    # machine that slows down for a while (a shared CPU) moves both sides of a ratio together.
    t = results["times"]
    print()
    for what, num, den in (("merx training epoch / pure step x steps", ["merx_train"], "pure"),
                           ("merx training + validation / pure step x steps", ["merx_train", "merx_val"], "pure"),
                           ("notebook-style loop / merx training epoch", ["notebook"], "merx_train"),
                           ("per-song DataLoader training epoch / pure step x steps", ["loader_train"], "pure"),
                           ("per-song DataLoader training epoch / merx training epoch", ["loader_train"],
                            "merx_train"),
                           ("per-song DataLoader inputs / merx inputs", ["loader_inputs"], "inputs")):
        if any(k not in t for k in num):
            continue
        ratios = [sum(t[k][i] for k in num) / t[den][i] for i in range(epochs)]
        print(f"{what}: {statistics.median(ratios):.2f} (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"(writing the notebook loop's per-song files took {results['notebook_setup']:.1f} s, once)")


if __name__ == "__main__":
    sys.exit(main())
