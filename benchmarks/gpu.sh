#!/usr/bin/env bash
# The GPU figures (needs an NVIDIA GPU, `pip install -e .[cuda]` and PyTorch with CUDA):
# the kernels checked on the real device, then training steps against cuDNN.
#   benchmarks/gpu.sh            writes JSON Lines to benchmarks/results/gpu.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
mkdir -p "$OUT"
STEPS=${STEPS:-50}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import numba, cupy, torch; print('numba', numba.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"

echo "== 1. on the GPU (no simulator): every kernel variant against the naive reference and float64"
echo "==    numeric gradients, then --device cuda training, sampling, predict and eval of all four tasks"
seqtool check --device cuda
python -m pytest -q -rs tests/test_cuda_training.py  # tests/test_cuda_kernels.py feeds NumPy arrays: simulator only

echo "== 2. LSTM training step T=100 N=64 D=512 H=512 vs cuDNN (target >= 0.5x)"
seqtool bench --device cuda --cell lstm --seq-len 100 --batch 64 --input-size 512 --hidden 512 \
  --steps "$STEPS" --compare torch --json -q | tee -a "$OUT/gpu.jsonl"

echo "== 3. LSTM H=128 N=8 T=100 D=128: persistent kernels, per-step kernels, automatic choice vs cuDNN (target >= 1.0x)"
for mode in on off auto; do
  seqtool bench --device cuda --cell lstm --seq-len 100 --batch 8 --input-size 128 --hidden 128 \
    --steps "$STEPS" --persistent $mode --compare torch --json -q | tee -a "$OUT/gpu.jsonl"
done

echo "== 4. persistent vs per-step across small shapes (where the automatic choice should switch)"
for H in 64 128 256; do
  for N in 1 8 32 64; do
    for mode in on off; do
      seqtool bench --device cuda --cell lstm --seq-len 100 --batch $N --input-size $H --hidden $H \
        --steps 20 --persistent $mode --compare torch --json -q | tee -a "$OUT/gpu.jsonl"
    done
  done
done
