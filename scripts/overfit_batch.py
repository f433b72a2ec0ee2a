"""Can the smoother fit ONE fixed batch? A capacity / optimisation check, independent of the data size.

    python scripts/overfit_batch.py --config configs/demo.yaml --kind scene --steps 400

Takes `--batch` training images of `--data` (every k-th row of the split, optionally only ids
starting with `--kind`), cuts the same centre crop of `--size` px from input and GT, and trains
a fresh network of the config's model section on that one batch with the reconstruction loss
only (L1 of the coarse image and of the prediction, as in docs/method.md §3), Adam at the config's lr (or
`--lr`), no augmentation, BatchNorm frozen when the config says train.freeze_bn. Prints the PSNR
on the batch (float, [0,1] RGB, clamped) every `--every` steps. A network that cannot get far
above the test scores on 8 crops it sees every step will not get there on the whole dataset in
the same number of steps.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml", help="config whose model/train sections are used")
    p.add_argument("--data", default=None, help="dataset folder with manifest.csv (default: the config's)")
    p.add_argument("--split", default="train")
    p.add_argument("--kind", default="", help="only ids starting with this (e.g. scene, photo)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="centre crop size in px")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=None, help="default: the config's train.lr")
    p.add_argument("--every", type=int, default=50, help="print every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the PSNR curve here")
    args = p.parse_args(argv)
    if min(args.batch, args.size, args.steps, args.every) < 1:
        p.error("--batch, --size, --steps and --every must be >= 1")
    return args


def centre_crop(image, size: int):
    """(3,H,W) -> (3,size,size); raises ValueError for smaller images."""
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"image of {h}x{w} px is smaller than --size {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top:top + size, left:left + size]


def load_batch(root: Path, split: str, kind: str, batch: int, size: int):
    import torch

    from csgis.data.manifest import read_manifest
    from csgis.io import read_image

    rows = [r for r in read_manifest(root, split) if r["id"].startswith(kind)]
    if len(rows) < batch:
        raise ValueError(f"{root / 'manifest.csv'}: {len(rows)} '{kind}*' rows in split '{split}', need {batch}")
    rows = rows[::len(rows) // batch][:batch]  # spread over the split, not 8 textures of one image

    def tensor(path):
        return centre_crop(torch.from_numpy(read_image(root / path)).permute(2, 0, 1).float() / 255, size)

    return (torch.stack([tensor(r["input"]) for r in rows]), torch.stack([tensor(r["gt"]) for r in rows]),
            [r["id"] for r in rows])


def overfit(model, x, y, steps: int, lr: float, every: int, log=print) -> list[list[float]]:
    """Train model on (x, y) with L1(coarse) + L1(prediction) -> [[step, loss, psnr], ...]."""
    import torch

    from csgis.losses import l1_loss

    optimizer = torch.optim.Adam(model.parameters(), lr)
    curve = []
    for step in range(1, steps + 1):
        out = model(x)
        loss = l1_loss(out.prediction, y) + l1_loss(out.coarse, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                mse = ((model(x).prediction.clamp(0, 1) - y) ** 2).mean().item()
            psnr = 10 * math.log10(1 / max(mse, 1e-12))
            curve.append([step, loss.item(), psnr])
            log(f"step {step:5d}  loss {loss.item():.4f}  PSNR {psnr:.2f} dB")
    return curve


def main(argv=None) -> int:
    args = parse_args(argv)
    from csgis.config import ConfigError, load_config
    from csgis.data.manifest import ManifestError
    from csgis.train.state import seed_everything
    from csgis.train.tasks import freeze_batchnorm
    from csgis.io import ImageReadError
    from csgis.models.smoother import build_smoother

    try:
        cfg = load_config(args.config)
        root = Path(args.data or cfg.data.root)
        x, y, ids = load_batch(root, args.split, args.kind, args.batch, args.size)
    except (ConfigError, ManifestError, ImageReadError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seed_everything(args.seed)
    model = build_smoother(cfg.model)
    model.train()
    if cfg.train.freeze_bn:
        freeze_batchnorm(model)
    lr = args.lr if args.lr is not None else cfg.train.lr
    start = 10 * math.log10(1 / ((x - y) ** 2).mean().item())
    print(f"{len(ids)} crops of {args.size} px from {root} ({args.split}): {', '.join(ids)}")
    print(f"input PSNR {start:.2f} dB; lr {lr}; BatchNorm {'frozen' if cfg.train.freeze_bn else 'train mode'}")
    curve = overfit(model, x, y, args.steps, lr, args.every)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "ids": ids, "size": args.size, "lr": lr,
                                               "input_psnr": start, "curve": curve}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
