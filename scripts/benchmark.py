"""Benchmark the smoothing network: parameters, FLOPs/pixel, training and inference throughput.

    python scripts/benchmark.py --json benchmark.json                # paper setting, all variants
    python scripts/benchmark.py --quick --json cpu.json              # small sizes, few repeats (CPU)
    python scripts/benchmark.py --variants eager,bf16 --sizes 1024 2048 --skip-train
    python scripts/benchmark.py --skip-train --skip-infer --tiled-12mp --tiled-width 8   # show.py, 12 MP

Each variant (eager = fp32 eager; channels_last, bf16, fp16, compile and '+'-joined combinations)
is reported as a ratio to fp32 eager measured in the same run. See csgis/benchmark.py and
docs/BENCHMARKS.md. Prints a markdown table; --json writes every number with the environment.
"""
from __future__ import annotations

import argparse
import sys

from csgis.benchmark import BenchmarkOptions, format_table, parse_variant, run_benchmarks, save_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1")
    p.add_argument("--width", type=int, default=64, help="network width (channels)")
    p.add_argument("--blocks", type=int, nargs=3, default=(12, 3, 6), metavar=("DESCRIPTOR", "COARSE", "REFINE"),
                   help="HDC blocks per stage (default 12 3 6; the release's test script: 20 3 6)")
    p.add_argument("--variants", default=None,
                   help="comma list, e.g. eager,channels_last,bf16,fp16,compile,compile+bf16+channels_last "
                        "(default: all that apply to the device)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats; CPU: sizes 256 512, training batch 2")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="square inference sizes in pixels")
    p.add_argument("--infer-batch", type=int, default=1)
    p.add_argument("--infer-warmup", type=int, default=None)
    p.add_argument("--infer-repeats", type=int, default=None)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    p.add_argument("--train-batch", type=int, default=None, help="default 8 (paper); 2 with --quick on CPU")
    p.add_argument("--train-patch", type=int, default=128)
    p.add_argument("--train-warmup", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--vgg-weights", default="random",
                   help="random (default; same cost) | imagenet | path to a VGG16 state dict")
    p.add_argument("--flop-size", type=int, default=64, help="input side for counting FLOPs")
    p.add_argument("--tiled-12mp", action="store_true",
                   help="also run show.py on a 12 MP image on CPU (scripts/measure_show_memory.py)")
    p.add_argument("--tiled-width", type=int, default=64, help="network width for the tiled run")
    p.add_argument("--tiled-blocks", type=int, nargs=3, default=(12, 3, 6))
    p.add_argument("--tiled-megapixels", type=float, default=12.0)
    p.add_argument("--tiled-tile", type=int, default=None,
                   help="tile for the tiled run (default: show.py's choice for the width-64 model)")
    p.add_argument("--json", default=None, help="write the full report here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from csgis.runtime import reuse_large_allocations
    reuse_large_allocations()  # measure what show.py / train.py run with
    variants = [v for v in args.variants.split(",") if v.strip()] if args.variants else None
    try:
        for name in variants or ():
            parse_variant(name)
        if min(args.sizes or [1]) < 1 or args.width < 1 or min(args.blocks) < 0:
            raise ValueError("sizes and width must be positive, block counts >= 0")
        opts = BenchmarkOptions(
            device=args.device, width=args.width, blocks=tuple(args.blocks), variants=variants, quick=args.quick,
            sizes=args.sizes, infer_batch=args.infer_batch, infer_warmup=args.infer_warmup,
            infer_repeats=args.infer_repeats, train=not args.skip_train, infer=not args.skip_infer,
            train_batch=args.train_batch, train_patch=args.train_patch, train_warmup=args.train_warmup,
            train_steps=args.train_steps, vgg_weights=args.vgg_weights, flop_size=args.flop_size,
            tiled_12mp=args.tiled_12mp, tiled_width=args.tiled_width, tiled_blocks=tuple(args.tiled_blocks),
            tiled_megapixels=args.tiled_megapixels, tiled_tile=args.tiled_tile)
        report = run_benchmarks(opts, log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"benchmark.py: error: {e}", file=sys.stderr)
        return 2
    report["command"] = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(format_table(report))
    if args.json:
        save_report(report, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
