#!/usr/bin/env bash
# GPU training-throughput benchmark: the real Lightning training loop against its ceiling.
#
# What it measures: benchmarks/bench_training_throughput.py on one GPU, for
#   1. ResNet50 (random init: no offline ResNet weights), 224 px, batch 128, precision auto
#      (-> bf16-mixed on an H100), 4 DataLoader workers;
#   2. EfficientNet-Lite0 (random init), 224 px, batch 128, same settings;
#   3. only where `nvidia-smi -L` lists >= 2 GPUs: a short 2-GPU ddp_spawn smoke run (Lite0,
#      batch 64 per GPU), whose ceiling is one GPU's times two.
# Each run writes a JSON file and a markdown row; the end of the output is the table and the ratios.
# Synthetic patches (a memory-mapped patches.npy in the temp dir) unless STORE is set.
#
# Run it from the repository root, on a machine with torch, lightning, timm, torchvision, numpy,
# pandas and pyyaml installed (no project install needed: PYTHONPATH=src; nothing is downloaded):
#
#     bash benchmarks/gpu_train_benchmark.sh                 # results in benchmarks/results/
#     OUT=/some/dir STORE=path/to/patch_store bash benchmarks/gpu_train_benchmark.sh
#
# Environment: OUT (results folder, default benchmarks/results), PYTHON (default: python, else
# python3), STORE (a real patch store folder instead of synthetic patches), STEPS / WARMUP / REPEATS
# (default 40 / 10 / 3), RUN_TIMEOUT (seconds per run, default 200). About 2-3 minutes on an H100
# with one GPU; the ddp smoke run adds about a minute.
#
# Reading the ratio (loop samples/s / ceiling samples/s): the share of pure forward + backward +
# optimiser throughput that the real loop achieves with data loading, host-to-device copies and
# Lightning included. ~0.9 or more: the loop is compute-bound; much less: input-bound or overhead-
# bound (try more workers; compare `between_steps_fraction` from a --sync step run).

set -u -o pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_train_benchmark.log"
: >"$LOG"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
STEPS="${STEPS:-40}"
WARMUP="${WARMUP:-10}"
REPEATS="${REPEATS:-3}"
RUN_TIMEOUT="${RUN_TIMEOUT:-200}"

say() { echo "$@" | tee -a "$LOG"; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python >/dev/null 2>&1; then PY=python; elif command -v python3 >/dev/null 2>&1; then PY=python3; else
    say "no python or python3 on PATH"; exit 2; fi
fi

missing=""
for module in torch lightning timm torchvision numpy pandas yaml; do
  "$PY" -c "import $module" >/dev/null 2>&1 || missing="$missing $module"
done
if [ -n "$missing" ]; then
  say "missing Python packages:$missing (python: $(command -v "$PY")); nothing was run"
  exit 2
fi
if ! "$PY" -c "import tpir_kedro.models.training" >>"$LOG" 2>&1; then
  say "cannot import tpir_kedro.models.training with PYTHONPATH=src (see $LOG); nothing was run"
  exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "torch sees no CUDA GPU; this script is for a GPU machine (run bench_training_throughput.py directly on a CPU)"
  exit 2
fi
n_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
say "$("$PY" -c 'import torch, lightning; print(f"torch {torch.__version__}, lightning {lightning.__version__}, {torch.cuda.get_device_name(0)}")'); nvidia-smi lists $n_gpus GPU(s)"

store_args=()
if [ -n "${STORE:-}" ]; then store_args=(--store "$STORE"); fi
common=(--size-px 224 --precision auto --accelerator auto --num-workers 4 --steps "$STEPS" --warmup "$WARMUP"
        --repeats "$REPEATS" --n-spots 4096 ${store_args[@]+"${store_args[@]}"})
failed=0
results=()

run() {  # run NAME ARGS...: one benchmark, its JSON at $OUT_DIR/training_throughput_NAME.json
  local name=$1; shift
  local json="$OUT_DIR/training_throughput_$name.json"
  rm -f "$json"
  say ""
  say "=== $name: bench_training_throughput.py $*"
  if timeout "$RUN_TIMEOUT" "$PY" benchmarks/bench_training_throughput.py "$@" --out "$json" 2>&1 | tee -a "$LOG"; then
    results+=("$json")
  else
    say "=== $name FAILED (exit ${PIPESTATUS[0]}; 124 = over ${RUN_TIMEOUT} s)"
    failed=$((failed + 1))
  fi
}

run resnet50_224 --backbone resnet50 --init random --batch-size 128 "${common[@]}"
run lite0_224 --backbone efficientnet_lite0 --init random --batch-size 128 "${common[@]}"
if [ "$n_gpus" -ge 2 ]; then
  # ddp_spawn, as train_image_model picks for devices > 1; the loop is global samples/s.
  run ddp2_lite0_224 --backbone efficientnet_lite0 --init random --batch-size 64 --devices 2 --size-px 224 \
      --precision auto --num-workers 4 --steps 15 --warmup 5 --repeats 1 --n-spots 4096 ${store_args[@]+"${store_args[@]}"}
else
  say ""
  say "=== ddp smoke run skipped: $n_gpus GPU(s)"
fi

say ""
say "=== summary (median of the rounds; ratio = loop / ceiling)"
if [ ${#results[@]} -gt 0 ]; then
  "$PY" - "${results[@]}" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
rows = [json.load(open(path)) for path in sys.argv[1:]]
for r in rows:
    ceiling = "not measured" if r["ratio"] is None else f"ceiling {r['ceiling_samples_per_s']:.0f} samples/s = ratio {r['ratio']:.2f}"
    print(f"{r['backbone']:>18} {r['size_px']} px, batch {r['batch_size']} x {r['devices']}, {r['precision']}: "
          f"loop {r['loop_samples_per_s']:.0f} samples/s / {ceiling}")
print()
print("| device | backbone | size px | batch | variant | precision | workers | threads | loop samples/s | ceiling samples/s | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(r["markdown_row"])
EOF
fi
say "results in $OUT_DIR ($failed run(s) failed)"
exit $((failed > 0))
