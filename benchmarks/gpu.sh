#!/usr/bin/env bash
# The GPU figures (needs an NVIDIA GPU, `pip install -e .[cuda]` and PyTorch with CUDA):
# the kernels checked on the real device, then training steps against cuDNN, charlm training
# against the PyTorch peer on the same GPU, and GPU sampling against a PyTorch GPU loop.
#   benchmarks/gpu.sh [TEXT] [BUDGET]     JSON Lines to benchmarks/results/gpu*.jsonl
# TEXT defaults to ../shared/data/tinyshakespeare/input.txt, BUDGET (charlm seconds) to 120.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
mkdir -p "$OUT"
STEPS=${STEPS:-20}
TEXT=${1:-../shared/data/tinyshakespeare/input.txt}
BUDGET=${2:-120}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import numpy, numba, numba_cuda, cupy, torch; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"

echo "== 1. on the GPU (no simulator): every kernel variant against the naive reference and float64"
echo "==    numeric gradients, then --device cuda training, sampling, predict and eval of all four tasks"
seqtool check --device cuda
python -m pytest -q -rs tests/test_cuda_training.py tests/test_cuda_install.py

bench() {  # one training-step row against cuDNN: bench NAME ARGS...
  local name=$1
  shift
  echo "-- $name"
  seqtool bench --device cuda --steps "$STEPS" --compare torch --json -q "$@" | tee -a "$OUT/gpu.jsonl"
}

echo "== 2. training steps vs cuDNN, the rows of issue 17 (median of $STEPS steps; ratio = cuDNN time / ours)"
bench "LSTM 100, 64, 512, 512 (target >= 0.5x)" --cell lstm --seq-len 100 --batch 64 --input-size 512 --hidden 512
for mode in on off auto; do
  bench "LSTM 100, 8, 128, 128 --persistent $mode (target >= 1.0x)" --cell lstm --seq-len 100 --batch 8 \
    --input-size 128 --hidden 128 --persistent $mode
done
bench "GRU 100, 32, 64, 256 (target >= 0.5x)" --cell gru --seq-len 100 --batch 32 --input-size 64 --hidden 256
bench "RNN tanh 100, 32, 64, 256 (target >= 0.5x)" --cell rnn --seq-len 100 --batch 32 --input-size 64 --hidden 256
bench "RNN relu 100, 32, 64, 256" --cell rnn --nonlinearity relu --seq-len 100 --batch 32 --input-size 64 --hidden 256
bench "biLSTM 2 layers 500, 16, 64, 128, the sed shape (target >= 0.5x)" --cell lstm --layers 2 --bidirectional \
  --seq-len 500 --batch 16 --input-size 64 --hidden 128
bench "LSTM 100, 256, 1024, 1024 (W_hh read from global memory)" --cell lstm --seq-len 100 --batch 256 \
  --input-size 1024 --hidden 1024

echo "== 3. kernel launches per step stay O(layers): a profile of one bench row (look for per-step launches)"
python -m cProfile -s cumtime -m seqtool.cli.main bench --device cuda --cell gru --seq-len 100 --batch 32 \
  --input-size 64 --hidden 256 --steps 12 --warmup 2 -q 2>&1 | head -40

echo "== 4. charlm training on the GPU, same model and batch: PyTorch peer vs seqtool ($BUDGET s each)"
echo "==    (target: seqtool tokens/s >= the peer's chars/s)"
if [ -f "$TEXT" ]; then
  MODEL_ARGS=(--hidden 128 --layers 2 --embed 64 --batch 50 --seq-len 50)
  python benchmarks/torch_charlm_peer.py "$TEXT" --device cuda --time-budget "$BUDGET" "${MODEL_ARGS[@]}" \
    --json | tee -a "$OUT/gpu_charlm.jsonl"
  MODEL=$(mktemp -d)/charlm.model
  seqtool train charlm "$TEXT" -o "$MODEL" --device cuda --time-budget "$BUDGET" "${MODEL_ARGS[@]}" \
    --dropout 0 --json > "$OUT/gpu_charlm_seqtool.jsonl"
  grep '"done"' "$OUT/gpu_charlm_seqtool.jsonl" | tail -1 | tee -a "$OUT/gpu_charlm.jsonl"  # tokens_per_s
  echo "== 5. seqtool sample --device cuda on that model, end to end (issue 17: 8.9 s for 2,000 characters)"
  /usr/bin/time -f "%e s wall" seqtool sample "$MODEL" --device cuda --length 2000 --seed 1 -q > /dev/null
else
  echo "no text at $TEXT: charlm rows skipped"
fi

echo "== 6. GPU sampling, 2 x 256 LSTM: one launch per chunk vs a PyTorch one-character-at-a-time GPU loop"
echo "==    (target >= 10x)"
python benchmarks/gpu_sample_speed.py --json | tee -a "$OUT/gpu_sample.jsonl"
