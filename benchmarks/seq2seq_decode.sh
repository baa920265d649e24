#!/usr/bin/env bash
# Decoding speed of `seqtool predict` on a seq2seq model: the first N source lines (default 1000)
# are translated one at a time, as in a pipe (each answer before the next line is read), and
# once more as a batch by `seqtool eval` (batched greedy). Wall and CPU time from /usr/bin/time.
#
#   benchmarks/seq2seq_decode.sh MODEL PAIRS.tsv [N]
set -euo pipefail
model=$1 pairs=$2 n=${3:-1000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -n "$n" "$pairs" > "$tmp/pairs.tsv"
cut -f1 "$tmp/pairs.tsv" > "$tmp/src.txt"
seqtool predict "$model" - < "$tmp/src.txt" > /dev/null  # warm the kernel cache
echo "seqtool predict (streaming greedy), $(wc -l < "$tmp/src.txt") lines:" >&2
/usr/bin/time -f "  %e s wall, %U s user" seqtool predict "$model" - < "$tmp/src.txt" > "$tmp/hyp.txt"
echo "seqtool predict --beam 5:" >&2
/usr/bin/time -f "  %e s wall, %U s user" seqtool predict "$model" --beam 5 - < "$tmp/src.txt" > /dev/null
echo "seqtool eval (batched greedy + BLEU):" >&2
/usr/bin/time -f "  %e s wall, %U s user" seqtool eval "$model" "$tmp/pairs.tsv" --quiet > /dev/null
