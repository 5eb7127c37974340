#!/usr/bin/env bash
# Every GPU measurement of issue 12 in one go: each step under its own timeout, its whole output
# kept in $OUT (default gpu-results/) and its tail printed. NOT RUN YET: no GPU was lent to the
# session that wrote it. On the GPU machine, from the repository root, after
#     ../shared/tools/gpu-bundle.sh        # here, before: builds .gpu/ (merx, wheels, MiniLM)
#     bash .gpu/setup.sh && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
# run:  bash benchmarks/gpu_issue12.sh          (T=seconds per step, default 600)
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
M3=(experiments/model3.toml --set data.source.name=synthetic --set data.source.n_songs=320
    --set data.source.duration=30.0)

step() {  # step NAME COMMAND...: run it under the timeout, keep everything, show the end
    local name=$1
    shift
    echo "== $name: $*"
    timeout "${T:-600}" "$@" >"$out/$name.txt" 2>&1
    echo "exit status $?" >>"$out/$name.txt"
    tail -n 25 "$out/$name.txt"
}

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
step prepare_model3 merx prepare "${M3[@]}"
# (a) pure step, (b) merx on the bank and on the per-song DataLoader, (c) notebook loop, (d) inputs alone.
step epoch_quickstart python benchmarks/epoch.py experiments/quickstart.toml --device cuda --epochs 5
step epoch_model3 python benchmarks/epoch.py "${M3[@]}" --bert-base-shaped --device cuda --epochs 5
# The kernel defaults, one at a time (channels_last, bf16 autocast), and torch.compile.
step epoch_model3_no_channels_last python benchmarks/epoch.py "${M3[@]}" --bert-base-shaped --device cuda \
    --epochs 5 --set train.channels_last=false
step epoch_model3_fp32 python benchmarks/epoch.py "${M3[@]}" --bert-base-shaped --device cuda --epochs 5 \
    --set train.amp=false
step epoch_model3_compile python benchmarks/epoch.py "${M3[@]}" --bert-base-shaped --device cuda --epochs 5 \
    --set train.compile=true
# Feature extraction at 1, 2 and all cores (issue 12 item 4).
step prepare_cores python benchmarks/prepare_cores.py --cores 1,2,all --repeat 2
