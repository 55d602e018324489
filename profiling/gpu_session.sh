#!/usr/bin/env bash
# One device call's worth of GPU checks, in priority order, for a lent H100 / H200 (device tool).
# Everything it writes goes under $OUT (at most 8 files come back): session.log, gpu.txt,
# accept.tgz (the acceptance run: kernel tests without the interpreter, one --cuda-graph training
# run per backend) and bench/bench.{json,md} (conv: cuDNN vs Triton vs FP8 at the real shapes).
#   cp ../shared/data/cifar10_jpeg.npz ../shared/data/make_cifar10.py datasets/
#   device run: bash profiling/gpu_session.sh   (carry: datasets; timeout_s ~580)
# Budget: WALL seconds in all (default 550); the acceptance run gets ACCEPT_S of it.
set -u
OUT=${OUT:-runs/gpu_session}
WALL=${WALL:-550}
ACCEPT_S=${ACCEPT_S:-440}
mkdir -p "$OUT/bench"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
exec > >(tee "$OUT/session.log") 2>&1
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
[ -d data/cifar-10-batches-py ] || python3 datasets/make_cifar10.py data
# pytest-xdist spreads the kernel tests' Triton compiles over the machine's cores
PYTEST_ADDOPTS="-n 8 --timeout=120" timeout "$ACCEPT_S" python3 -m profiling accept --data data \
  --budget-s $((ACCEPT_S - 150)) --out "$OUT/acceptance"
echo "# accept rc=$? at ${SECONDS}s"
pkill -f "train.py|pytest" 2>/dev/null  # a step's child outlives accept when timeout stops it
tar -czf "$OUT/accept.tgz" -C "$OUT" acceptance && rm -rf "$OUT/acceptance"
left=$((WALL - SECONDS))
if [ "$left" -gt 40 ]; then
  timeout "$left" python3 -m profiling bench --ops conv --no-plots --out "$OUT/bench"
  echo "# bench rc=$? at ${SECONDS}s"
fi
nvidia-smi --query-gpu=clocks.sm,temperature.gpu --format=csv,noheader
echo "# done at ${SECONDS}s"
