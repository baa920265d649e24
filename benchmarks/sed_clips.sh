#!/usr/bin/env bash
# Sound event detection trained on scenes mixed afresh every epoch (`seqtool train sed --clips`),
# with default options, on the DCASE 2016 task 2 office clips; scored on scenes mixed from clips
# and timelines held out from training.
#
#   BUDGET=15m benchmarks/sed_clips.sh [WORKDIR [extra train options...]]   (defaults: ./sed-clips, 15m)
#
# Held out as in benchmarks/sed_office.sh: of the 15 clips per class every 5th (sorted by name),
# and 3 of the 18 official dev timelines (one per EBR). Training: `--clips` on the other 12 clips
# per class and `--timeline` on the other 15 timelines; everything else the defaults. Test: the 3
# held-out timelines over pink and brown noise at their own EBR, and 6 random two-minute scenes
# (EBR -6..6 dB, another seed), all from the held-out clips. Prints segment F1 and ER at the end.
set -euo pipefail
DATA=${SEQTOOL_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}/dcase2016-task2-office
W=${1:-sed-clips}
shift $(( $# > 0 ? 1 : 0 ))
BUDGET=${BUDGET:-15m}
TL=$DATA/annotations/dev
[ -d "$DATA/clips" ] || { echo "no data at $DATA" >&2; exit 1; }
. "$(cd "$(dirname "$0")" && pwd)/sed_holdout.sh"
rm -rf "$W/train_clips" "$W/test_clips" "$W/test" "$W/test.tsv"
mkdir -p "$W"
cd "$W"
split_clips

timelines=()
for f in "$TL"/dev_1_ebr_*.txt; do
  is_test_timeline "$f" || timelines+=(--timeline "$f")
done
echo "training on $(ls train_clips | wc -l) clips and $((${#timelines[@]} / 2)) timelines for $BUDGET" >&2
/usr/bin/time -f "train: %e s wall" seqtool train sed --clips train_clips "${timelines[@]}" -o clips.model \
  --time-budget "$BUDGET" --seed 1 "$@"

make_test_scenes
annotation_list test > test.tsv

seqtool eval clips.model test test.tsv | tee eval.txt
seqtool eval clips.model test test.tsv --json > eval.json
awk '/^segment-based/ {for (i = 1; i <= NF; i++) {if ($i == "F1") f = $(i + 1); if ($i == "ER") e = $(i + 1)}
     print "test scenes (held-out clips and timelines): segment F1 " f ", ER " e}' eval.txt
