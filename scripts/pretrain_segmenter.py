"""Pre-train the DeepLabV3+ MobileNetV2 segmenter on a dataset's class labels (task: segmentation).

    python scripts/pretrain_segmenter.py --config configs/demo_segmenter.yaml [key=value ...]

The same as `python train.py ... task=segmentation`: the segmenter learns on the GT structure
images (ImageNet-normalised when loss.seg_normalize), validation reports mIoU and IoU per class,
and experiments/<name>/models/best.pth (best mIoU) is what a smoothing run's
segmenter.checkpoint points at.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    train_main = runpy.run_path(str(TRAIN_PY))["main"]  # the repository's train.py
    return train_main(argv + ["task=segmentation"])


if __name__ == "__main__":
    sys.exit(main())
