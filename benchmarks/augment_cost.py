"""Cost of augmentation on the quickstart data: precomputed variants vs. on the fly, per epoch.

    python benchmarks/augment_cost.py [--config experiments/quickstart.toml] [--variants 4] [--epochs 30]

Uses the experiment's data and feature cache (generated on first use, as `merx prepare` does)
and writes augmented variants to a fresh temporary folder, so the one-off cost is measured cold.
For each way of feeding the training split it times full passes of the DataLoader (what an
epoch costs on top of the model's own forward/backward, which is timed too, for scale):

* clean: cached features, no augmentation;
* spectrogram only: SpecAugment masks, drawn per epoch (no waveform augmentation);
* precompute: waveform variants read from the cache, masks on top;
* on the fly: decode + waveform chain + mel + masks for every song, with 0 and 2 workers.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

AUDIO = [
    {"name": "gaussian_noise", "p": 0.5},
    {"name": "time_stretch", "min_rate": 0.9, "max_rate": 1.1, "p": 0.5},
    {"name": "pitch_shift", "min_semitones": -2.0, "max_semitones": 2.0, "p": 0.5},
    {"name": "gain", "p": 0.5},
    {"name": "frequency_mask", "max_width": 8},
    {"name": "time_mask", "max_width": 32},
]
TEXT = [{"name": "word_delete", "aug_p": 0.05}, {"name": "word_swap", "aug_p": 0.05}, {"name": "keyboard", "p": 0.5}]


def epoch_seconds(dataset, batch_size, num_workers, seed, repeats=2):
    from merx.dataset import make_loader
    from merx.train import worker_init_fn

    loader = make_loader(dataset, batch_size, shuffle=True, num_workers=num_workers, seed=seed,
                         worker_init_fn=worker_init_fn)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _batch in loader:
            pass
        times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "experiments" / "quickstart.toml"))
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30, help="epochs over which the one-off cost is spread")
    ap.add_argument("--skip-audio", action="store_true", help="do not time the audio strategies")
    ap.add_argument("--skip-model", action="store_true", help="do not time text encoding and the model's epoch")
    args = ap.parse_args()

    from merx.augment.plan import audio_chains
    from merx.config import load
    from merx.config.settings import AugmentChoice, Experiment
    from merx.features.crop import n_frames
    from merx.features.mel import MelView
    from merx.pipeline import prepare

    cfg = load(args.config)
    exp = Experiment.from_config(cfg)
    feats = exp.features
    prepared = prepare(exp, progress=True)
    train = prepared.table.split("train")
    mel_view = MelView(prepared.features, feats, prepared.ref_power)
    wave, spec = audio_chains([AugmentChoice.from_table(t) for t in AUDIO], feats.sample_rate, feats.n_mels,
                              n_frames(feats))
    paths = {s.id: s.audio_path for s in train}
    print(f"{len(train)} training songs of <= {exp.data.source.settings.get('duration', '?')} s; "
          f"{feats.n_mels} mels, {feats.duration} s windows; {os.cpu_count()} cores; "
          f"{args.variants} variants; one-off costs spread over {args.epochs} epochs", flush=True)

    if not args.skip_audio:
        audio_costs(args, exp, train, mel_view, wave, spec, paths)
    text_and_model_costs(args, exp, prepared, train)


def audio_costs(args, exp, train, mel_view, wave, spec, paths):
    from merx.augment.spectrograms import TrainingMelView
    from merx.augment.variants import precompute_audio_variants
    from merx.dataset import SongDataset

    feats, seed, bs = exp.features, exp.seed, exp.train.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        one_off = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            variants = precompute_audio_variants(train, wave, feats, Path(tmp) / f"w{workers}", seed, args.variants,
                                                 workers=workers)
            one_off[workers] = time.perf_counter() - t0
            print(f"precompute {args.variants} variants x {len(train)} songs, {workers} worker(s): "
                  f"{one_off[workers]:.1f} s ({variants.computed} spectrograms)", flush=True)

        def ds(view):
            return SongDataset(train, exp.task, mel_view, train=True, seed=seed, audio_augment=view)

        spec_only = TrainingMelView(mel_view, seed, feats, None, spec)
        pre = TrainingMelView(mel_view, seed, feats, wave, spec, "precompute", variants)
        fly = TrainingMelView(mel_view, seed, feats, wave, spec, "on_the_fly", audio_paths=paths)
        for name, view, workers, extra in (("clean (no augmentation)", None, 0, 0.0),
                                           ("spectrogram masks only", spec_only, 0, 0.0),
                                           ("precompute, 0 loader workers", pre, 0, min(one_off.values())),
                                           ("on the fly, 0 loader workers", fly, 0, 0.0),
                                           ("on the fly, 2 loader workers", fly, 2, 0.0)):
            seconds = epoch_seconds(ds(view), bs, workers, seed)
            rows.append((name, seconds, extra))
            print(f"  {name}: {seconds:.2f} s per epoch", flush=True)

    print(flush=True)
    print(f"| training inputs | data seconds per epoch | one-off seconds | per epoch over {args.epochs} epochs |")
    print("|---|---|---|---|")
    for name, seconds, extra in rows:
        print(f"| {name} | {seconds:.2f} | {extra:.1f} | {seconds + extra / args.epochs:.2f} |")



def text_and_model_costs(args, exp, prepared, train):
    from merx.augment.plan import text_chain
    from merx.augment.variants import text_variants
    from merx.config.settings import AugmentChoice

    seed, bs = exp.seed, exp.train.batch_size
    encode_t = None
    t0 = time.perf_counter()
    chain = text_chain([AugmentChoice.from_table(t) for t in TEXT])
    texts = text_variants(train, chain, seed, args.variants)
    texts_t = time.perf_counter() - t0
    model_epoch = None
    if not args.skip_model:
        import torch

        from merx.dataset import make_loader
        from merx.features.text import text_variant_inputs
        from merx.pipeline import build, datasets
        from merx.plugins import get_registry
        from merx.train import Trainer

        torch.manual_seed(seed)
        model = build(exp, get_registry())
        t0 = time.perf_counter()
        text_variant_inputs(model, train, texts, "cpu", 32, cache_dir=None)
        encode_t = time.perf_counter() - t0
        data = datasets(exp, prepared, model, "cpu")
        loader = make_loader(data["train"], bs, shuffle=True, num_workers=0, seed=seed)
        trainer = Trainer(model, loader, loader, exp.train, exp.task, torch.device("cpu"), progress=False)
        t0 = time.perf_counter()
        trainer.train_one_epoch(1)
        model_epoch = time.perf_counter() - t0

    print(f"text: {args.variants} nlpaug variants of {len(train)} lyrics: {texts_t:.1f} s once "
          "(nlpaug import included)")
    if encode_t is not None:
        print(f"text: frozen encoder over {args.variants} x {len(train)} variant lyrics: {encode_t:.1f} s once")
    if model_epoch is not None:
        print(f"model: one training epoch of the experiment's model on clean inputs: {model_epoch:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
