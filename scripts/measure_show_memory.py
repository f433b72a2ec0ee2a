"""Peak resident memory and wall time of `show.py` on one large image, on CPU.

    python scripts/measure_show_memory.py                       # 12 MP (4000x3000), default model
    python scripts/measure_show_memory.py --width 4 --tile 544  # same tiling, cheap network
    python scripts/measure_show_memory.py --height 814 --width-px 814   # one full default crop

Makes a textured test image and a random-init checkpoint in a temporary folder, runs show.py in
a child process (--device cpu) and prints one JSON line with the child's peak resident set size
(resource.getrusage(RUSAGE_CHILDREN).ru_maxrss) and wall time. The default model at 12 MP costs
about 5 MFLOP per pixel times the tile overlap (~2.3x at the default tile), i.e. ~140 TFLOP:
hours on a small CPU. Peak memory depends on the crop size (tile + 2 x receptive radius) and the
width, not on the image size beyond its uint8 buffers, so two cheaper runs bound it: the default
model on one full-size crop, and 12 MP with a tiny width at the same tile.

Measured on a shared 2-core CPU, 23 GB RAM (torch 2.15, default tile 544, radius 135):
    --height 814 --width-px 814 (default model, the largest crop)   peak 1769 MB, 65 s
    --width 4 --tile 544        (4000x3000, 48 tiles)               peak 1045 MB, 367 s
    show.py on a 259x194 image, width 4 (the process's baseline)    peak  691 MB
so 12 MP with the default model stays near 1769 + (1045 - 691) = ~2.1 GB, well within 4 GB.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from csgis.checkpoint import save_checkpoint
from csgis.inference import default_tile
from csgis.io import write_image
from csgis.models.smoother import Smoother


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: flat coloured regions plus stripes and noise (smoothing has work to do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    regions = ((yy // 257 + xx // 311) % 5).astype(np.int64)
    colours = rng.integers(40, 216, size=(5, 3)).astype(np.float32)
    image = colours[regions]
    image += 25.0 * np.sin(xx * 0.9 + yy * 0.4)[..., None]
    image += rng.normal(0.0, 12.0, size=(height, width, 1)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--megapixels", type=float, default=12.0, help="4:3 image of this size (default 12: 4000x3000)")
    p.add_argument("--height", type=int, default=0, help="explicit image height (with --width-px)")
    p.add_argument("--width-px", type=int, default=0, help="explicit image width (with --height)")
    p.add_argument("--width", type=int, default=64, help="network width (channels)")
    p.add_argument("--blocks", type=int, nargs=3, default=(12, 3, 6),
                   metavar=("DESCRIPTOR", "COARSE", "REFINE"), help="HDC blocks per stage")
    p.add_argument("--tile", type=int, default=None, help="passed to show.py; default: show.py's own choice")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()

    if args.height and args.width_px:
        height, width = args.height, args.width_px
    else:
        height = int(round(math.sqrt(args.megapixels * 1e6 * 3 / 4)))
        width = int(round(height * 4 / 3))
    tmp = Path(tempfile.mkdtemp(prefix="csgis_show_memory_"))
    image = tmp / "in" / "test.png"
    write_image(image, textured_image(height, width))
    torch.manual_seed(0)
    model = Smoother(args.width, *args.blocks).eval()
    checkpoint = tmp / "model.pth"
    save_checkpoint(checkpoint, model, None)
    tile = default_tile("cpu", model) if args.tile is None else args.tile
    del model

    command = [sys.executable, str(ROOT / "show.py"), "--checkpoint", str(checkpoint), "--input", str(image),
               "--output", str(tmp / "out"), "--device", "cpu"]
    if args.tile is not None:
        command += ["--tile", str(args.tile)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    used = re.search(r"tile (\d+|off) \(margin", proc.stderr)  # what show.py actually chose
    if used:
        tile = 0 if used.group(1) == "off" else int(used.group(1))
    ok = proc.returncode == 0 and (tmp / "out" / "test.png").is_file()
    report = {
        "image": f"{width}x{height}", "megapixels": round(width * height / 1e6, 3),
        "model": {"width": args.width, "blocks": list(args.blocks)},
        "tile": tile, "radius": Smoother(args.width, *args.blocks).receptive_radius(),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 1),
        "returncode": proc.returncode, "ok": ok, "limit_mb": 4096, "within_limit": peak_kb / 1024 <= 4096,
    }
    if not ok:
        report["stderr_tail"] = proc.stderr[-2000:]
    print(json.dumps(report))
    if args.keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        for path in sorted(tmp.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        tmp.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
