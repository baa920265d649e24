#!/usr/bin/env bash
# Sound event detection on the DCASE 2016 task 2 office clips: synthesize training and test scenes
# with clips and timelines kept apart, train `seqtool train sed`, score it, time one 2-minute file.
#
#   benchmarks/sed_office.sh [WORKDIR] [TIME_BUDGET] [MORE]   (defaults: ./sed-office, 25m, 20m)
#
# Trains for TIME_BUDGET, then --resume for MORE (0: no second part), as the README's figures.
#
# Clips: of the 15 per class in the shared data, every 5th (sorted by name) is held out for the
# test scenes. Timelines: 3 of the 18 official dev timelines (one per EBR) are held out; the other
# 15 are rendered 4 times each (pink, brown, white and again pink noise, other clips each time),
# plus 40 random one-minute scenes (EBR -6..6 dB, polyphony 1-3). Test: the 3 held-out timelines
# over pink and brown noise, and 6 random two-minute scenes, all from the held-out clips.
set -euo pipefail
DATA=${SEQTOOL_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}/dcase2016-task2-office
W=${1:-sed-office}
BUDGET=${2:-25m}
MORE=${3:-20m}
TL=$DATA/annotations/dev
[ -d "$DATA/clips" ] || { echo "no data at $DATA" >&2; exit 1; }
. "$(cd "$(dirname "$0")" && pwd)/sed_holdout.sh"
mkdir -p "$W"
cd "$W"
split_clips

seed=1
for ebr in -6 0 6; do
  timelines=()
  for f in "$TL"/dev_1_ebr_${ebr}_*.txt; do
    is_test_timeline "$f" || timelines+=(--timeline "$f")
  done
  for bg in pink brown white pink2; do
    seqtool synth-scenes -q train_clips -o "train/dev_${ebr}_$bg" --ebr="$ebr" --background "${bg%2}" \
      --seed $seed -n 5 "${timelines[@]}"
    seed=$((seed + 1))
  done
done
for k in 1 2 3 4; do
  bg=pink; [ $k -gt 2 ] && bg=brown
  seqtool synth-scenes -q train_clips -o "train/rand_$k" -n 10 --duration 60 --events-per-class 3 \
    --polyphony $((k % 3 + 1)) --ebr=-6:6 --background $bg --seed $((100 + k))
done
make_test_scenes
annotation_list train > train.tsv
annotation_list test > test.tsv

/usr/bin/time -f "train: %e s wall" seqtool train sed train train.tsv -o office.model --time-budget "$BUDGET" --seed 1
if [ "$MORE" != 0 ]; then
  /usr/bin/time -f "resume: %e s wall" seqtool train sed train train.tsv -o office.model --resume office.model \
    --time-budget "$MORE"
fi
seqtool eval office.model test test.tsv
/usr/bin/time -f "predict of a 120 s recording: %e s wall, %U s user, %S s sys" \
  seqtool predict -q office.model test/rand/scene_000.wav > /dev/null
