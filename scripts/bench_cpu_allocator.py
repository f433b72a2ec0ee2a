"""CPU forward time, page faults and peak memory with glibc's default malloc vs
csgis.runtime.reuse_large_allocations(), each in a fresh process.

    python scripts/bench_cpu_allocator.py [--size 814] [--width 64] [--blocks 12 3 6]

814 px is the largest crop show.py feeds the default model on a machine with >= 8 GB of memory
(tile 544 + 2 x 135 margin). Prints one JSON line per setting.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch
from csgis.runtime import reuse_large_allocations
tuned = reuse_large_allocations() if {tuned} else False
from csgis.models import Smoother
torch.manual_seed(0)
model = Smoother({width}, {blocks[0]}, {blocks[1]}, {blocks[2]}).eval()
x = torch.rand(1, 3, {size}, {size})
times = []
with torch.inference_mode():
    model(x[:, :, :64, :64])
    for _ in range(2):
        t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"allocator": "reuse" if {tuned} else "glibc default", "tuned_ok": tuned,
                  "size": {size}, "forward_s": [round(t, 2) for t in times],
                  "user_s": round(ru.ru_utime, 1), "sys_s": round(ru.ru_stime, 1),
                  "minor_faults": ru.ru_minflt, "peak_rss_mb": round(ru.ru_maxrss / 1024)}}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=814)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--blocks", type=int, nargs=3, default=[12, 3, 6])
    args = p.parse_args()
    for tuned in (False, True):
        code = CHILD.format(root=str(ROOT), tuned=tuned, width=args.width, blocks=args.blocks, size=args.size)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        print(out.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
