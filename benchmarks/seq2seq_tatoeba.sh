#!/usr/bin/env bash
# Tatoeba en->fr with seqtool's default options (issue: defaults that win on unseen data).
#
#   benchmarks/seq2seq_tatoeba.sh dev|test [BUDGET] [extra train options...]
#
# dev:  train on dev_train.tsv, score on dev.tsv  (where choices are made)
# test: train on train.tsv,     score on test.tsv (scored once, never tuned on)
# Splits from benchmarks/tatoeba_splits.py (keyed on the English side). BLEU is sacrebleu's
# corpus BLEU with one reference per line, as `seqtool eval` prints it.
set -euo pipefail
split=${1:?dev or test}; budget=${2:-30m}; shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
data=${TATOEBA:-$here/../../shared/data/tatoeba-eng-fra/eng-fra.tsv}
work=${WORK:-$(mktemp -d)}
python "$here/tatoeba_splits.py" "$data" "$work"
if [ "$split" = dev ]; then train=$work/dev_train.tsv; score=$work/dev.tsv
else train=$work/train.tsv; score=$work/test.tsv; fi
model=$work/$split.model
/usr/bin/time -f "training: %e s wall, %U s user" \
  seqtool train seq2seq "$train" -o "$model" --time-budget "$budget" "$@"
seqtool eval "$model" "$score"
echo "model: $model" >&2
