#!/usr/bin/env bash
# The GPU figures in one run: on a machine with one H100/H200 it finishes within 8 minutes, set-up included.
#
#   bash benchmarks/gpu_check.sh [--smoke] WHEELDIR ARCHIVE OUTDIR
#   bash benchmarks/gpu_check.sh --make-wheels WHEELDIR   # on a connected machine: catdog's needs but torch
#
# WHEELDIR  wheels the machine lacks (typer, click, rich, platformdirs and their closure), installed offline
#           into a scratch folder (pip install --no-index --no-deps --target); a preflight then names any module
#           still missing and stops. --make-wheels fills it (pip download; PIP_DOWNLOAD_ARGS for another
#           target, e.g. "--python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all:")
# ARCHIVE   one dataset archive `catdog fetch --from` reads, e.g. catdog.zip (Kaggle layout: train/ + test1/)
# OUTDIR    where the JSON goes: one file per step (stdout of the step; its stderr in NAME.log),
#           steps.jsonl (each step's exit code and seconds) and summary.json (the key figures)
# --smoke   the same steps, tiny, on the CPU (a few images, 32 px, one epoch), to check the script itself
#           (step limits x GPU_CHECK_SMOKE_SCALE, default 4; GPU_CHECK_SECONDS default 2400)
#
# Steps: env (versions, nvidia-smi), data (fetch), pipeline (benchmarks/pipeline.py: tutorial vs catdog
# finetune and freeze img/s, resnet34; predict img/s), train and train_compiled (`catdog train`, without and
# with --compile), evaluate and evaluate_compiled (`catdog evaluate` of each checkpoint), torchrun (`catdog
# train` under torchrun, one process per GPU; torchrun_gloo: 2 processes on the CPU over gloo where only one
# GPU exists, so that the distributed code runs at all), compare_grid (benchmarks/compare_grid.py: the default grid, 5 epochs,
# catdog and the tutorial side by side), nvidia_smi (after the work). Every step runs under a time limit that
# keeps the whole run within the deadline (GPU_CHECK_SECONDS, default 500); a step that fails or runs out of
# time is recorded and the next one runs.
set -uo pipefail

if [[ "${1:-}" == "--make-wheels" ]]; then
    [[ $# -eq 2 ]] || { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    # everything catdog imports but torch/torchvision (the GPU box has those), with the whole closure
    # shellcheck disable=SC2086
    exec "${PYTHON:-python}" -m pip download --disable-pip-version-check -d "$2" ${PIP_DOWNLOAD_ARGS:-} \
        "typer>=0.12" "rich>=13" "platformdirs>=3" "typing_extensions>=4.6"
fi
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
    shift
fi
if [[ $# -ne 3 ]]; then
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
wheels=$1
archive=$2
mkdir -p "$3" || exit 2
out=$(cd "$3" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
# --smoke runs on a CPU, possibly a shared and loaded one: every step limit (sized for the GPU) is scaled by
# GPU_CHECK_SMOKE_SCALE, so that a slow machine does not make the script look broken
scale=1
if ((smoke)); then default_budget=2400; scale=${GPU_CHECK_SMOKE_SCALE:-4}; else default_budget=500; fi
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-$default_budget}))
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$work/site:$repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$repo" || exit 2
: >"$out/steps.jsonl"

# step NAME LIMIT CMD...: stdout -> OUT/NAME.json, stderr -> OUT/NAME.log, exit code and seconds -> steps.jsonl.
# LIMIT is cut to the time left before the deadline, minus RESERVE (seconds kept for the steps after it).
reserve=0
step() {
    local name=$1 limit=$(($2 * scale))
    shift 2
    local left=$((deadline - SECONDS - reserve * scale))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        printf '{"step": "%s", "rc": null, "seconds": 0, "limit_s": %d, "status": "no time left"}\n' \
            "$name" "$limit" >>"$out/steps.jsonl"
        echo "gpu_check: $name skipped (no time left)" >&2
        return 1
    fi
    echo "gpu_check: $name (limit ${limit}s)" >&2
    local start=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.json" 2>"$out/$name.log"
    rc=$?
    local status=ok
    ((rc == 124 || rc == 137)) && status="timed out"
    ((rc != 0 && rc != 124 && rc != 137)) && status=failed
    printf '{"step": "%s", "rc": %d, "seconds": %d, "limit_s": %d, "status": "%s"}\n' \
        "$name" "$rc" "$((SECONDS - start))" "$limit" "$status" >>"$out/steps.jsonl"
    echo "gpu_check: $name $status in $((SECONDS - start))s" >&2
    return "$rc"
}

catdog=("$python" -m catdog_cli)

# --- set-up ---------------------------------------------------------------------------------------------------
shopt -s nullglob
wheel_files=("$wheels"/*.whl)
if ((${#wheel_files[@]})); then
    step setup 120 "$python" -m pip install --no-index --no-deps --disable-pip-version-check --target "$work/site" \
        "${wheel_files[@]}"
fi
"$python" benchmarks/gpu_check.py preflight >"$out/preflight.json" || exit 2
step env 60 "$python" benchmarks/gpu_check.py env
step data 120 "${catdog[@]}" fetch --from "$archive" --root "$work/data" --json || {
    echo "gpu_check: no data, stopping (see $out/data.log)" >&2
    exit 1
}
data=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["datasets"][0]["path"])' "$out/data.json")
if ((smoke)); then
    "$python" benchmarks/gpu_check.py subset "$data" "$work/small" 12 >"$out/subset.json"
    data=$work/small
fi
predict_folder=$data/unlabeled
[[ -d $predict_folder ]] || predict_folder=$data/val

if ((smoke)); then
    device=(--device cpu)
    pipeline_args=(--backbone resnet18 --image-size 32 --batch-size 8 --epochs 1 --workers 2 --predict-passes 1)
    grid_args=(--backbones squeezenet1_1,resnet18 --epochs 1 --image-size 32 --batch-size 8
        --tutorial-batch-size 8 --workers 2)
    train_args=(--backbone squeezenet1_1 --image-size 32 --batch-size 8 --epochs 1 --weights none)
    torchrun_args=(--backbone squeezenet1_1 --image-size 32 --batch-size 8 --epochs 1 --weights none)
else
    device=()
    pipeline_args=(--backbone resnet34 --batch-size 32 --catdog-batch-size 256 --workers 8 --epochs 3)
    grid_args=(--epochs 5)
    train_args=(--backbone resnet34 --epochs 3 --weights none)
    torchrun_args=(--backbone resnet18 --epochs 2 --weights none)
fi

# --- the figures ----------------------------------------------------------------------------------------------
# compare_grid runs last with the time left, at least RESERVE seconds: it writes catdog's half as soon as it has
# it, so a grid cut short still has catdog's wall time (summary.json says whether it is complete)
reserve=240
step pipeline 100 "$python" benchmarks/pipeline.py --data "$data" "${device[@]}" "${pipeline_args[@]}" \
    --predict "$predict_folder"
step train 45 "${catdog[@]}" train --data "$data" "${device[@]}" "${train_args[@]}" --out "$work/runs/train" --json
step evaluate 30 "${catdog[@]}" evaluate "$work/runs/train/best.pt" "${device[@]}" --json
step train_compiled 150 "${catdog[@]}" train --data "$data" "${device[@]}" "${train_args[@]}" --compile \
    --out "$work/runs/train_compiled" --json
step evaluate_compiled 30 "${catdog[@]}" evaluate "$work/runs/train_compiled/best.pt" "${device[@]}" --json
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
step torchrun 60 "$python" -m torch.distributed.run --standalone --nproc-per-node "$((gpus > 1 ? gpus : 1))" \
    -m catdog_cli train --data "$data" "${device[@]}" "${torchrun_args[@]}" --out "$work/runs/torchrun" --json
if ((gpus < 2)); then  # one process tests no distributed code: two on the CPU over gloo do (process group, DDP)
    step torchrun_gloo 60 env CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 "$python" -m torch.distributed.run \
        --standalone --nproc-per-node 2 \
        -m catdog_cli train --data "$data" --device cpu --backbone squeezenet1_1 --image-size 64 --epochs 1 \
        --batch-size 16 --weights none --workers 2 --out "$work/runs/torchrun_gloo" --json
fi
reserve=0
sampler=
if command -v nvidia-smi >/dev/null; then  # each compare cell's peak GPU memory (summary.json)
    "$python" benchmarks/gpu_check.py sample "$out/gpu_memory.txt" &
    sampler=$!
fi
step compare_grid 600 "$python" benchmarks/compare_grid.py --data "$data" "${device[@]}" "${grid_args[@]}" \
    --out "$out/compare_grid.partial.json"
[[ -n $sampler ]] && kill "$sampler" 2>/dev/null
if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$out/nvidia_smi.txt" 2>&1
fi
"$python" -c 'import json, sys; sys.path.insert(0, "benchmarks"); import gpu_check
print(json.dumps({"nvidia_smi": gpu_check.nvidia_smi()}, indent=2))' >"$out/nvidia_smi.json"
"$python" benchmarks/gpu_check.py summary "$out" >"$out/summary.json"
cat "$out/summary.json"
echo "gpu_check: done in ${SECONDS}s; JSON in $out" >&2
