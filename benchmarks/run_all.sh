#!/usr/bin/env bash
# Every figure the issues ask for, in one run. Needs torch for the comparisons (optional extra).
#   benchmarks/run_all.sh [TEXT] [TIME_BUDGET]      TEXT defaults to samples/tiny-shakespeare.txt
# Writes JSON Lines to benchmarks/results/*.jsonl and the human-readable lines to the terminal.
# Run it on an otherwise idle machine: both libraries use every core, so any other load
# (and PyTorch's OpenMP barriers suffer most from it) makes the ratios meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
TEXT=${1:-samples/tiny-shakespeare.txt}
BUDGET=${2:-300}
OUT=benchmarks/results
mkdir -p "$OUT"
STEPS=${STEPS:-20}

echo "== machine"; nproc; python -c "import numba, numpy; print('numba', numba.__version__, 'numpy', numpy.__version__)"
uptime

echo "== 1. training step, T=100 N=32 D=64 H=256, vs PyTorch"
for cell in lstm gru rnn; do
  seqtool bench --cell $cell --seq-len 100 --batch 32 --input-size 64 --hidden 256 \
    --steps "$STEPS" --compare torch
  seqtool bench --cell $cell --seq-len 100 --batch 32 --input-size 64 --hidden 256 \
    --steps "$STEPS" --compare torch --json -q >> "$OUT/bench.jsonl"
done

echo "== 2. 2-layer bidirectional LSTM, T=500 N=16 D=64 H=128, vs PyTorch"
seqtool bench --cell lstm --layers 2 --bidirectional --seq-len 500 --batch 16 --input-size 64 \
  --hidden 128 --steps "$STEPS" --compare torch
seqtool bench --cell lstm --layers 2 --bidirectional --seq-len 500 --batch 16 --input-size 64 \
  --hidden 128 --steps "$STEPS" --compare torch --json -q >> "$OUT/bench.jsonl"

echo "== 3. LSTM H=512 GFLOP/s next to the float32 matmul peak"
seqtool bench --cell lstm --hidden 512 --seq-len 100 --batch 32 --input-size 64 \
  --steps "$STEPS" --matmul-peak
seqtool bench --cell lstm --hidden 512 --seq-len 100 --batch 32 --input-size 64 \
  --steps "$STEPS" --matmul-peak --json -q >> "$OUT/bench.jsonl"

echo "== 3b. the whole charlm training step (2 x LSTM 128, embed 64, batch 50 x 50), vs PyTorch"
seqtool bench --task charlm --steps "$STEPS" --compare torch
seqtool bench --task charlm --steps "$STEPS" --compare torch --json -q >> "$OUT/bench.jsonl"

echo "== 3c. the same at one thread each (NUMBA_NUM_THREADS=1; torch.set_num_threads(1))"
for cell in lstm gru rnn; do
  NUMBA_NUM_THREADS=1 seqtool bench --cell $cell --steps "$STEPS" --compare torch
done
NUMBA_NUM_THREADS=1 seqtool bench --cell lstm --layers 2 --bidirectional --seq-len 500 --batch 16 \
  --input-size 64 --hidden 128 --steps "$STEPS" --compare torch
NUMBA_NUM_THREADS=1 seqtool bench --task charlm --steps "$STEPS" --compare torch

echo "== 4. char-LM at equal wall-clock ($BUDGET s): PyTorch torch-rnn peer vs seqtool"
python benchmarks/torch_charlm_peer.py "$TEXT" --time-budget "$BUDGET" --json | tee -a "$OUT/charlm.jsonl"
MODEL=$(mktemp -d)/charlm.model
# seqtool's defaults (see seqtool train charlm --help); its last "validation" record holds val_loss
seqtool train charlm "$TEXT" -o "$MODEL" --time-budget "$BUDGET" --json > "$OUT/charlm_seqtool.jsonl"
grep '"validation"' "$OUT/charlm_seqtool.jsonl" | tail -1
grep '"done"' "$OUT/charlm_seqtool.jsonl"

echo "== 5. sampling speed"
python benchmarks/sample_speed.py

echo "== 6. kernel self-check"
seqtool check
