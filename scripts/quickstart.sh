#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone, with no downloads:
#   1. set up .venv from requirements.txt
#   2. build the demo dataset (data/demo) from what the installed packages ship: scikit-image's
#      photographs and procedural shape scenes, blended with scikit-image's textures
#   3. smooth its test split (GT images and some textures never seen in training) with the shipped
#      model weights/demo_smoother.pth, score it in both metric conventions, and draw a
#      side-by-side comparison image
#   4. score it on the held-out benchmark too (data/heldout: pictures and texture families no
#      training builder reads), where it is not the best smoother (README, "Results")
# Rerunning is safe: the dataset is reused when complete, results are rewritten in place.
# To train the shipped model yourself, see README ("Checkpoints") or scripts/make_report.py.
# Results: results/quickstart/{smoothed/, metrics.json, per_image.csv, comparison.png, heldout_metrics.json}
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
OUT=results/quickstart
CKPT=weights/demo_smoother.pth

echo "== 1/4 demo dataset -> data/demo"
$PY dataset_utils/make_demo_data.py --out data/demo

echo "== 2/4 smoothing the test split with $CKPT -> $OUT/smoothed"
# Exit status 1 means some file could not be read (each is reported); keep going to the picture.
$PY scripts/evaluate.py --checkpoint "$CKPT" --data data/demo --split test --save "$OUT/smoothed" \
    --name "CSGIS-Net (demo)" --csv "$OUT/per_image.csv" --json "$OUT/metrics.json" || [ $? -eq 1 ]

echo "== 3/4 comparison image -> $OUT/comparison.png"
$PY scripts/make_comparison.py --data data/demo --split test --method "CSGIS-Net (demo)=$OUT/smoothed" \
    --out "$OUT/comparison.png" --n 6

echo "== 4/4 held-out benchmark -> data/heldout, $OUT/heldout_metrics.json"
$PY dataset_utils/make_heldout.py --out data/heldout
$PY scripts/evaluate.py --checkpoint "$CKPT" --data data/heldout --split test --name "CSGIS-Net (demo)" \
    --json "$OUT/heldout_metrics.json" || [ $? -eq 1 ]
echo "done: $OUT/comparison.png (input | CSGIS-Net | GT), $OUT/metrics.json, $OUT/heldout_metrics.json"
echo "for your own images: weights/rich_smoother.pth (paper width, scores higher on the held-out benchmark; README)"
