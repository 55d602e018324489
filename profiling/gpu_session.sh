#!/usr/bin/env bash
# One device call's worth of GPU checks, in priority order, for a lent H100 / H200 (device tool).
# Everything it writes goes under $OUT (at most 8 files come back, 2 folders down at most).
#   cp ../shared/data/cifar10_jpeg.npz ../shared/data/make_cifar10.py datasets/
#   device run: bash profiling/gpu_session.sh   (carry: datasets; timeout_s ~580)
# STEPS picks and orders the steps (default: "tests fused bench"):
#   accept  python -m profiling accept: kernel tests + one --cuda-graph run per backend (the first run's step)
#   tests   the kernel tests without the interpreter, spread over the cores (tests.log)
#   fused   --backend fused --cuda-graph, 3 seeds (its first warm-up compiles and autotunes for over a minute)
#   runs    eager / triton / triton_all, 8 seeds each, --cuda-graph (runs_*.jsonl)
#   small   triton against triton with --op conv=triton_small (the whitening conv in Triton), 8 seeds each,
#           --cuda-graph, then both with --compile default (runs_triton*.jsonl)
#   bench   profiling bench --ops conv: do_bench and CUDA-graph replay times, cuDNN vs Triton vs FP8
#   trace   profiling trace, --backend triton_all against --backend triton: every conv kernel's device
#           time inside a training step, Triton against cuDNN (trace.tgz: trace.md, trace.json, the traces)
#   launches  profiling launches --ops conv: every conv launch timed alone, the defaults first, the variants (twins,
#           W_POINTERS, FP8_NARROW_K, TAPS_APART) next, then the lists' entries, until 40 s before WALL
#           (launches.json; commit it into the report folder: profiling static models each launch here,
#           on the CPU, beside its time)
# WALL: seconds in all (default 550); a step that would start with under 40 s left is skipped.
# Outputs: session.log, gpu.txt, tests.log, runs.tgz (records and logs), bench.json, bench.md, accept.tgz,
# trace.tgz, launches.json, launches.log.
# The first run (2026-11-30, H200: reports/nvidia-h200-2026-11-30) used "accept runs bench" in three calls.
# Next (issue 22): STEPS="tests trace launches", then "small": the kernel tests at the current commit (the
# persistent twin included), which configurations autotuning picks in a training step now (trace.md's
# per-launch table: grid, threads), and every conv configuration and twin timed alone (launches.json).
set -u
OUT=${OUT:-runs/gpu_session}
WALL=${WALL:-550}
STEPS=${STEPS:-tests fused bench}
mkdir -p "$OUT/runs"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
exec > >(tee "$OUT/session.log") 2>&1
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) steps: $STEPS"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
[ -d data/cifar-10-batches-py ] || python3 datasets/make_cifar10.py data

left() { echo $((WALL - SECONDS)); }
train() {  # backend, seeds, seconds at most, extra flags... (NAME: the records' file name, default the backend)
  local b=$1 n=$2 t=$3; shift 3
  local name=${NAME:-$b}
  timeout "$t" python3 train.py --data data --backend "$b" --runs "$n" --cuda-graph "$@" \
    --json "$OUT/runs/runs_$name.jsonl" > "$OUT/runs/train_$name.log" 2>&1
  echo "# train $name rc=$? at ${SECONDS}s"; tail -3 "$OUT/runs/train_$name.log"
}
for step in $STEPS; do
  if [ "$(left)" -lt 40 ]; then echo "# $step: skipped, $(left) s left"; continue; fi
  case $step in
    accept)
      PYTEST_ADDOPTS="-n 8 --timeout=120" timeout "$(left)" python3 -m profiling accept --data data \
        --budget-s $(($(left) - 150)) --out "$OUT/acceptance"
      echo "# accept rc=$? at ${SECONDS}s"
      pkill -f "train.py|pytest" 2>/dev/null  # a step's child outlives accept when timeout stops it
      tar -czf "$OUT/accept.tgz" -C "$OUT" acceptance && rm -rf "$OUT/acceptance" ;;
    tests)
      t=$(( $(left) < 240 ? $(left) : 240 ))
      timeout "$t" python3 -m pytest -q -n 8 --timeout=120 -p no:cacheprovider tests/kernels > "$OUT/tests.log" 2>&1
      echo "# tests rc=$? at ${SECONDS}s"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -30 ;;
    fused) train fused 3 $(( $(left) < 200 ? $(left) : 200 )) ;;
    runs) for b in eager triton triton_all; do train "$b" 8 100; done ;;
    small)
      train triton 8 60; NAME=triton_small train triton 8 60 --op conv=triton_small
      NAME=triton_compile train triton 4 100 --compile default
      NAME=triton_small_compile train triton 4 100 --compile default --op conv=triton_small ;;
    bench)
      timeout "$(left)" python3 -m profiling bench --ops conv --no-plots --out "$OUT"
      echo "# bench rc=$? at ${SECONDS}s" ;;
    trace)
      timeout "$(( $(left) < 150 ? $(left) : 150 ))" python3 -m profiling trace --out "$OUT/trace" \
        --vs "--backend triton" -- --data data --backend triton_all > "$OUT/trace.log" 2>&1
      echo "# trace rc=$? at ${SECONDS}s"; tail -5 "$OUT/trace.log"
      mv "$OUT/trace.log" "$OUT/trace/" 2>/dev/null; tar -czf "$OUT/trace.tgz" -C "$OUT" trace && rm -rf "$OUT/trace" ;;
    launches)
      timeout "$(left)" python3 -m profiling launches --ops conv --impls "${IMPLS:-triton,fp8}" \
        --budget-s $(( $(left) - 40 )) --out "$OUT" > "$OUT/launches.log" 2>&1
      echo "# launches rc=$? at ${SECONDS}s"; tail -4 "$OUT/launches.log" ;;
    *) echo "# unknown step $step" ;;
  esac
done
tar -czf "$OUT/runs.tgz" -C "$OUT" runs && rm -rf "$OUT/runs"
nvidia-smi --query-gpu=clocks.sm,temperature.gpu --format=csv,noheader
echo "# done at ${SECONDS}s"
