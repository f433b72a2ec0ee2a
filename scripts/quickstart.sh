#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone, with no downloads:
#   1. set up .venv from requirements.txt
#   2. build the demo dataset (data/demo) from what the installed packages ship
#   3. train the demo segmenter and the demo CSGIS-Net (configs/demo_segmenter.yaml, configs/demo.yaml)
#   4. smooth the demo test split (photographs and procedural scenes blended with textures,
#      GT images and some textures never seen in training), score it, and draw a comparison image
# Every step resumes: rerunning the script skips what is done and continues what was interrupted.
# Results: results/quickstart/{smoothed/, metrics.json, per_image.csv, comparison.png}
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
OUT=results/quickstart

echo "== 1/4 demo dataset -> data/demo"
$PY dataset_utils/make_demo_data.py --out data/demo

CKPT=experiments/demo/models/best.pth
echo "== 2/4 demo segmenter -> experiments/demo_segmenter"
$PY train.py --config configs/demo_segmenter.yaml --resume
echo "== 3/4 demo CSGIS-Net -> experiments/demo"
$PY train.py --config configs/demo.yaml --resume

echo "== 4/4 smoothing the test split -> $OUT"
# Exit status 1 means some file could not be read (each is reported); keep going to the picture.
$PY scripts/evaluate.py --checkpoint "$CKPT" --data data/demo --split test --save "$OUT/smoothed" \
    --csv "$OUT/per_image.csv" --json "$OUT/metrics.json" || [ $? -eq 1 ]
$PY scripts/make_comparison.py --data data/demo --split test --method "CSGIS-Net (demo)=$OUT/smoothed" \
    --out "$OUT/comparison.png" --n 6
echo "done: $OUT/comparison.png (input | CSGIS-Net | GT), $OUT/metrics.json"
