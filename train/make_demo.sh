#!/usr/bin/env bash
# Regenerates everything the demo weights carry: the weights, the shipped test case and its expected output,
# and the README's pictures of the demo model.
#   train/make_demo.sh [WORKDIR [DEST]]     (WORKDIR default runs/demo, DEST default the repository; paths are
#                                            taken from the repository root; the fit about 1 hour 45 minutes on a 2-core CPU beside other work)
# DEST receives weights/demo.*, test/{input,ground_truth,expected_output} and docs/demo_*.png, so a scratch
# DEST checks the script without touching the repository. CASES (training phantoms, default 60), HELDOUT
# (held-out phantoms, default 30; the first negative is the 6th) and FIT_EXTRA (extra fit arguments) make a cheap check (about 3 minutes;
# 4 phantoms hold 4 patients, so 2 folds):
#   CASES=4 HELDOUT=6 FIT_EXTRA="--set epochs=1 --set steps_per_epoch=2 --set folds=2" train/make_demo.sh /tmp/w /tmp/x
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
W=${1:-runs/demo}
DEST=${2:-.}
read -r -a FIT_ARGS <<< "${FIT_EXTRA:-}"
GRID=(--size 128 --spacing 4.0728 --slices 160 --thickness 6)
# The test case on another in-plane grid (a 128 matrix over 600 mm, 15 % coarser than the model's 4.0728 mm),
# so that process.py's resampling to the model's spacing and back is part of the shipped check.
TEST_GRID=(--size 128 --spacing 4.6875 --slices 160 --thickness 6)
[ ! -e "$W" ] || { echo "$W exists: remove it or name another work folder" >&2; exit 2; }
SLUG=images/automated-petct-lesion-segmentation

# 1-2. Training phantoms, the store, the fit; its best checkpoint becomes weights/demo.* (30 % negatives
# rather than the generator's default half: the fit trains on positive studies, so more of them help).
# WEIGHTS=DIR (a folder with model.safetensors and model.json, e.g. a run's best/) skips the fit and installs
# those weights instead; steps 3-4 then regenerate the test case and the pictures for them.
mkdir -p "$DEST/weights" "$DEST/docs"
if [ -n "${WEIGHTS:-}" ]; then
  mkdir -p "$W"
  cp "$WEIGHTS/model.safetensors" "$DEST/weights/demo.safetensors"
  cp "$WEIGHTS/model.json" "$DEST/weights/demo.json"
  fit_minutes="n/a (WEIGHTS given)"
else
  $PY -m train synth --out "$W/phantoms" --cases "${CASES:-60}" --seed 1 --negative-fraction 0.3 "${GRID[@]}"
  $PY -m train prepare --source "$W/phantoms" --out "$W/demo-phantoms" --workers 2
  start=$(date +%s)
  $PY -m train fit --data "$W/demo-phantoms" --fold 0 --config train/configs/demo.json --out "$W" "${FIT_ARGS[@]}"
  fit_minutes=$(awk -v s="$(( $(date +%s) - start ))" 'BEGIN { printf "%.1f", s / 60 }')
  cp "$W/best/model.safetensors" "$DEST/weights/demo.safetensors"
  cp "$W/best/model.json" "$DEST/weights/demo.json"
fi

# 3. The shipped case: one positive phantom, named as grand-challenge names its inputs (by uuid).
$PY -m train synth --out "$W/testcase" --cases 1 --seed 3 --negative-fraction 0 --layout grand-challenge \
  "${TEST_GRID[@]}"
T=$DEST/test
rm -rf "$T/input" "$T/ground_truth" "$T/expected_output"
mkdir -p "$T/input/images/pet" "$T/input/images/ct" "$T/ground_truth"
cp "$W"/testcase/images/pet/*.mha "$T/input/images/pet/00000000-0000-47e8-8000-000000000001.mha"
cp "$W"/testcase/images/ct/*.mha "$T/input/images/ct/00000000-0000-47e8-8000-000000000002.mha"
cp "$W"/testcase/labels/*.mha "$T/ground_truth/00000000-0000-47e8-8000-000000000002.mha"
# fp32, and the fp32 probability beside it: test/check_output.py tells rounding at other precisions from errors.
$PY process.py --input "$T/input" --output "$T/expected_output" --weights "$DEST/weights" --no-report --precision fp32
$PY test/make_reference.py "$T/input" "$T/expected_output" "$DEST/weights"

# 4. Pictures: the shipped case, then a held-out negative and positive phantom (another seed than training's).
$PY -m train evaluate --pred "$T/expected_output/$SLUG" --gt "$T/ground_truth" --pet "$T/input/images/pet" \
  --figures "$W/figures-case" > /dev/null
cp "$W"/figures-case/00000000-0000-47e8-8000-000000000002.png "$DEST/docs/demo_case_mip.png"
# HELDOUT (default 30) phantoms of seed 99: the generator draws them in order, so the first 10 are the 10 that
# earlier demos were scored on.
HELDOUT=${HELDOUT:-30}
$PY -m train synth --out "$W/heldout" --cases "$HELDOUT" --seed 99 --layout grand-challenge --tissues "${GRID[@]}"
$PY process.py --input "$W/heldout" --output "$W/heldout-pred" --weights "$DEST/weights" --no-report
# The false positive volume per organ from the phantoms' own tissue labels (the table's last lines).
$PY -m train evaluate --pred "$W/heldout-pred/$SLUG" --gt "$W/heldout/labels" --tissues "$W/heldout/tissues" \
  --pet "$W/heldout/images/pet" --out "$W/heldout.csv" --figures "$W/figures-heldout" > "$W/heldout.txt"
heldout_mean=$(grep '^mean ' "$W/heldout.txt")
# The card's held-out figures: these phantoms, which neither the fit nor its choice of epoch saw.
$PY - "$DEST/weights/demo.json" "$W/heldout.json" "$HELDOUT" <<'PY'
import json, sys
from model.checkpoint import update_card
mean = json.load(open(sys.argv[2]))["mean"]
update_card(sys.argv[1], purpose="demo", held_out={"data": f"{sys.argv[3]} held-out phantoms (train synth --seed 99; train/make_demo.sh)",
                                                    **{key: mean.get(key) for key in ("dice", "fpv_ml", "fnv_ml", "cases")},
                                                    **{f"fpv_ml_{organ}": round(value["per_case_ml"], 2)
                                                       for organ, value in mean.get("fpv_by_organ", {}).items()}})
PY
for kind in negative positive; do
  stem=$($PY -c "import csv, sys; print(next(r['File Location'] for r in csv.DictReader(open(sys.argv[1]))
    if (r['diagnosis'] == 'NEGATIVE') == (sys.argv[2] == 'negative')))" "$W/heldout/Metadata.csv" $kind)
  cp "$W/figures-heldout/$stem.png" "$DEST/docs/demo_heldout_$kind.png"
done

# 5. What to report
echo "held-out phantoms (10, seed 99): $heldout_mean"
sed -n '/^FPV ml/,$p' "$W/heldout.txt"
echo "fit: $fit_minutes minutes"
