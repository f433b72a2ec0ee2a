"""Score smoothing results with PSNR/SSIM in both conventions (docs/method.md §6).

Score a folder of saved results against ground truths (matched by name, NKS-style S12T03 -> S12,
or a dataset manifest):
    python scripts/evaluate.py --pred results/ --gt data/nks/gt [--csv per_image.csv] [--json summary.json]
    python scripts/evaluate.py --pred results/ --manifest data/voc_smooth --split test
Run a checkpoint over a dataset split and score it (the textured input is scored too, as "input"):
    python scripts/evaluate.py --checkpoint experiments/x/models/best.pth --data data/voc_smooth \
        --split test [--save results/] [--tile 512] [--device cuda]
Also the means by fields of the dataset's dataset.json samples (blend and kind of structure on the
held-out benchmark; with --clean, the fields the samples of each ground truth share):
    python scripts/evaluate.py --checkpoint weights/rich_smoother.pth --data data/heldout --group blend,kind

Exit status: 0 when every ground truth was scored; 1 when some could not be (a file unreadable, a
pair's sizes differ, or a ground truth without a prediction: each reported, the rest still scored
and written, marked incomplete; --allow-missing accepts ground truths without a prediction); 2 on
bad arguments, an unwritable --csv/--json/--save, or when nothing matched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csgis import evaluation
from csgis.data.manifest import read_dataset_info
from csgis.io import check_target, check_writable, is_within, protect_inputs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pred", help="folder of predictions (any image format, searched recursively)")
    mode.add_argument("--checkpoint", help="smoother checkpoint to run over --data --split")
    parser.add_argument("--gt", help="folder of ground truths (with --pred)")
    parser.add_argument("--manifest", help="dataset folder with manifest.csv: GTs of --split (with --pred)")
    parser.add_argument("--data", help="dataset folder with manifest.csv (with --checkpoint)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--save", help="with --checkpoint: write predictions as <SAVE>/<id>.png")
    parser.add_argument("--tile", type=int, default=None,
                        help="with --checkpoint: tile size in pixels (0: whole image; default: by device memory)")
    parser.add_argument("--device", default="cpu", help="with --checkpoint: cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument("--max-images", type=int, default=0, help="with --checkpoint: first N images only")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="with --checkpoint: average the 8 rotations and mirror images (8x the time)")
    parser.add_argument("--keep-mean", action="store_true",
                        help="with --checkpoint: shift each result to its input's mean colour (show.py --keep-mean)")
    parser.add_argument("--post", metavar="SPEC",
                        help="with --checkpoint: run this classical smoother on each result, before --keep-mean "
                             "(show.py --post), e.g. 'l0:lambda=0.02'")
    parser.add_argument("--clean", action="store_true",
                        help="with --checkpoint: smooth the ground truths themselves (each once) instead of the "
                             "textured inputs; a smoother should leave them as they are, so the score is a "
                             "ceiling on what it reaches on that split")
    parser.add_argument("--tone", action="store_true",
                        help="with --checkpoint: also print the mean signed error (result - GT) of the dark, mid "
                             "and bright ground-truth pixels, a check for a tone curve (dark regions made darker)")
    parser.add_argument("--group", help="also print the means by these comma-separated fields of the dataset's "
                                        "dataset.json samples, e.g. 'blend' or 'blend,kind' on the held-out benchmark")
    parser.add_argument("--name", help="method name in the table (default: the --pred folder name, or 'model')")
    parser.add_argument("--csv", help="write per-image metrics to this CSV file")
    parser.add_argument("--json", help="write the summary and per-image metrics to this JSON file")
    parser.add_argument("--workers", type=int, default=1, help="processes for scoring a folder (default: 1)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 even when some ground truths have no prediction (scoring a subset on purpose)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.group is not None:
        args.group = [f.strip() for f in args.group.split(",") if f.strip()]
        if not args.group:
            parser.error("--group needs at least one field name, e.g. --group blend,kind")
        if not (args.data or args.manifest):
            parser.error("--group needs a dataset folder (--data, or --manifest with --pred)")
    if args.pred is not None:
        if (args.gt is None) == (args.manifest is None):
            parser.error("--pred needs exactly one of --gt or --manifest")
        if args.data or args.save or args.tile is not None or args.clean or args.tone or args.keep_mean \
                or args.self_ensemble or args.post:
            parser.error("--data, --save, --tile, --clean, --tone, --keep-mean, --post and --self-ensemble belong "
                         "to --checkpoint mode")
    else:
        if not args.data:
            parser.error("--checkpoint needs --data (a dataset folder with manifest.csv)")
        if args.post is not None:
            from csgis.inference import check_post
            try:
                check_post(args.post)
            except ValueError as e:
                parser.error(str(e))
        if args.gt or args.manifest:
            parser.error("--gt and --manifest belong to --pred mode; use --data with --checkpoint")
    return args


def _report_list(title: str, items: list, limit: int = 20) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):", file=sys.stderr)
    for item in items[:limit]:
        print(f"  {item}", file=sys.stderr)
    if len(items) > limit:
        print(f"  ... and {len(items) - limit} more", file=sys.stderr)


def check_outputs(args) -> None:
    """ValueError before any scoring when an output cannot be written, or --save would write into the dataset."""
    if args.save and args.data and is_within(args.save, args.data):
        raise ValueError(f"--save {args.save} is inside the dataset folder {args.data}: predictions would "
                         f"overwrite the dataset's own files; choose a folder outside it")
    for target in (args.csv, args.json):
        if target:
            try:
                check_target(target)  # a device, a folder or one of this command's inputs: before any scoring
            except OSError as e:
                raise ValueError(str(e)) from None
    for folder in [Path(f).parent for f in (args.csv, args.json) if f] + ([Path(args.save)] if args.save else []):
        try:
            check_writable(folder)
        except OSError as e:
            raise ValueError(str(e)) from None


def main(argv=None) -> int:
    args = parse_args(argv)
    from csgis.runtime import reuse_large_allocations
    reuse_large_allocations()  # large CPU speed-up, same results (see csgis/runtime.py)
    try:
        protect_inputs(args.data, args.manifest, args.gt, args.pred, args.checkpoint)  # the write rule (csgis.io)
        check_outputs(args)
        info = read_dataset_info(args.data or args.manifest) if args.group else None
        if args.group:
            evaluation.sample_groups(info, [], args.group)  # a field no sample records: before any scoring
        if args.pred is not None:
            report = evaluation.evaluate_folder(args.pred, args.gt, args.manifest, args.split, args.name,
                                                args.workers, progress=not args.quiet)
        else:
            report = evaluation.evaluate_model(args.checkpoint, args.data, args.split, args.save, args.tile,
                                               args.device, args.max_images, progress=not args.quiet,
                                               label=args.name or "model", self_ensemble=args.self_ensemble,
                                               clean=args.clean, tone=args.tone, keep_mean=args.keep_mean,
                                               post=args.post)
        groups = (evaluation.sample_groups(info, {r["name"] for r in report["images"]}, args.group)
                  if args.group else None)
    except (OSError, ValueError) as e:  # missing folders, bad manifest, bad checkpoint, bad --group: one line
        print(f"error: {e}", file=sys.stderr)
        return 2

    _report_list("predictions without a ground truth (skipped)", report.get("unmatched", []))
    _report_list("ground truths found under several extensions (first one used)", report.get("duplicates", []))
    _report_list("predictions not scored (each image is scored once)", report.get("repeated", []))
    if report.get("missing"):
        print(f"note: {len(report['missing'])} ground truth(s) have no prediction, e.g. "
              f"{', '.join(report['missing'][:5])}", file=sys.stderr)
    _report_list("problems (skipped)", report["problems"])

    scored = sum(s["n"] for s in report["methods"].values())
    if args.pred is not None and report["matched"] == 0:
        where = args.gt or f"{args.manifest} (split {args.split})"
        print(f"error: no prediction in {args.pred} matched a ground truth in {where}", file=sys.stderr)
        return 2
    if scored == 0:
        print("error: no image could be scored", file=sys.stderr)
        return 2

    missing = len(report.get("missing") or [])
    report["complete"] = not report["problems"] and not missing
    if missing and not args.allow_missing:
        print(f"incomplete: {missing} of {missing + report.get('matched', scored)} ground truths have no "
              f"prediction, so the means are over a subset (--allow-missing to accept that)", file=sys.stderr)
    print(evaluation.format_table(report["methods"]))
    for label, summary in report["methods"].items():
        if "tone" in summary:
            print(evaluation.format_tone(summary["tone"], label))
    if groups:
        print(evaluation.format_group_table(report["images"], groups, f"by {', '.join(args.group)}:"))
    try:
        status = evaluation.write_outputs(report, args.csv, args.json)
    except (OSError, UnicodeError) as e:
        print(f"error: cannot write the results: {e}", file=sys.stderr)
        return 2
    return 1 if status or (missing and not args.allow_missing) else 0


if __name__ == "__main__":
    sys.exit(main())
