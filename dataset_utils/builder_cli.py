"""The command-line arguments every embedded dataset builder has (make_demo_data.py, make_rich_data.py)."""
from __future__ import annotations

import argparse
import os

from csgis.data import blend


def add_build_arguments(p: argparse.ArgumentParser, sizes: dict) -> None:
    """--out, --seed, --size, --workers, --gt-smoother and --overwrite."""
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=list(sizes), default="default")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="parallel processes (1: in this process)")
    p.add_argument("--gt-smoother", default=blend.GT_SMOOTHER,
                   help="smoother for photo GTs, 'name:key=value,...' (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different dataset in --out (without it, only resume the same one)")
