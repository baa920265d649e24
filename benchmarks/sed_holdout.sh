# The hold-out shared by benchmarks/sed_office.sh and benchmarks/sed_clips.sh (sourced, not run):
# of the 15 clips per class every 5th (sorted by name) is kept for the test scenes, and 3 of the
# 18 official dev timelines (one per EBR) likewise. Needs DATA (the dcase2016-task2-office
# folder) and TL (its annotations/dev); works in the current folder.

TEST_TL="dev_1_ebr_-6_nec_2_poly_0 dev_1_ebr_0_nec_3_poly_1 dev_1_ebr_6_nec_5_poly_1"

# train_clips/ and test_clips/: links to the shared clips
split_clips() {
  mkdir -p train_clips test_clips
  local label f i part
  for label in $(tail -n +2 "$DATA/clips.tsv" | cut -f2 | sort -u); do
    i=0
    for f in $(awk -F'\t' -v l="$label" '$2 == l {print $1}' "$DATA/clips.tsv" | sort); do
      if [ $((i % 5)) -eq 4 ]; then part=test_clips; else part=train_clips; fi
      ln -sf "$DATA/clips/$f" "$part/$f"
      i=$((i + 1))
    done
  done
}

# true for a timeline file held out for testing
is_test_timeline() {
  case " $TEST_TL " in *" $(basename "$1" .txt) "*) return 0 ;; esac
  return 1
}

# test/: the held-out timelines over pink and brown noise at their own EBR, and 6 random
# two-minute scenes (EBR -6..6 dB), all from the held-out clips
make_test_scenes() {
  local t ebr bg
  for t in $TEST_TL; do
    ebr=$(echo "$t" | sed 's/.*ebr_\(-\{0,1\}[0-9]*\)_.*/\1/')
    for bg in pink brown; do
      seqtool synth-scenes -q test_clips -o "test/${t}_$bg" --ebr="$ebr" --background $bg --seed 500 \
        --timeline "$TL/$t.txt"
    done
  done
  seqtool synth-scenes -q test_clips -o test/rand -n 6 --duration 120 --events-per-class 3 --polyphony 2 \
    --ebr=-6:6 --background pink --seed 900
}

# One annotation list for a folder of scene folders; file names relative to that folder.
annotation_list() {
  local d
  printf 'filename\tonset\toffset\tevent_label\n'
  for d in "$1"/*/; do tail -n +2 "$d/ground_truth.tsv" | sed "s|^|$(basename "$d")/|"; done
}
