#!/usr/bin/env bash
# The whole-body strategy's own experiment on phantoms: the same phantoms, seed and step budget, trained
# with alpha = 1 and alpha = 0, evaluated on held-out phantoms with the official metrics.
#   train/alpha_experiment.sh [WORKDIR]      (about 15 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
W=${1:-runs/alpha-experiment}
GRID=(--size 128 --spacing 4.0728 --slices 160 --thickness 6)
[ -d "$W/data" ] || {
  $PY -m train synth --out "$W/phantoms" --cases 30 --seed 1 "${GRID[@]}"
  $PY -m train prepare --source "$W/phantoms" --out "$W/data" --workers 2
}
[ -d "$W/heldout" ] || $PY -m train synth --out "$W/heldout" --cases 10 --seed 99 --layout grand-challenge \
  --negative-fraction 0.3 "${GRID[@]}"
for alpha in 1 0; do
  # A fixed number of steps per epoch gives both runs the same budget (alpha = 0 epochs are shorter).
  $PY -m train fit --data "$W/data" --fold 0 --config train/configs/demo.json --out "$W/alpha$alpha" \
    --set alpha=$alpha --set steps_per_epoch=25 --set val_every=100 --resume
  $PY process.py --input "$W/heldout" --output "$W/pred$alpha" --weights "$W/alpha$alpha/best" --device cpu
  $PY -m train evaluate --pred "$W/pred$alpha/images/automated-petct-lesion-segmentation" --gt "$W/heldout/labels" \
    --out "$W/alpha$alpha.csv" --figures "$W/figures$alpha" --pet "$W/heldout/images/pet" | tail -1
done
echo "| alpha | Dice | FPV ml | FNV ml |"
echo "|---|---|---|---|"
for alpha in 1 0; do
  $PY -c "import json,sys; m=json.load(open('$W/alpha$alpha.json'))['mean']; print(f\"| $alpha | {m['dice']:.3f} | {m['fpv_ml']:.2f} | {m['fnv_ml']:.2f} |\")"
done
