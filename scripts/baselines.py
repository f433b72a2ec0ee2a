"""Classical smoothers (docs/method.md §7) on a dataset split, parameters chosen on the validation split.

    python scripts/baselines.py --data data/voc_smooth --split test [--val-split val] \
        [--filters l0,rtv,rgf,gf,bf,btf,fgs] [--select ssim_paper] [--select-per blend] \
        [--json baselines.json] [--save results/baselines] [--workers 2] [--max-images N]

For every filter, each setting of csgis.filters.PARAM_GRIDS is scored on --val-split and the best
by --select (mean, higher is better) is run on --split; the table shows both metric conventions
and the time per image, plus the textured input itself as the "input" row. --val-split '' skips
the search and runs each filter with its defaults. --select-per FIELD chooses a setting for each
value of a per-sample field of the dataset's dataset.json (on the held-out benchmark: `blend`, so
the gray and the colour images each get the setting that suits them), and the means are also
printed for each value. Exit status 1 when a file could not be read
(reported with its path), 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import sys

from csgis import evaluation
from csgis.io import protect_inputs
from csgis.filters import FILTERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder with manifest.csv")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--val-split", default="val", help="split for the parameter search ('' = none; default: val)")
    parser.add_argument("--filters", default=",".join(FILTERS),
                        help=f"comma-separated subset of {','.join(FILTERS)} (default: all)")
    parser.add_argument("--select", default="ssim_paper", choices=evaluation.METRIC_KEYS,
                        help="validation metric that picks the setting (default: ssim_paper)")
    parser.add_argument("--select-per", metavar="FIELD",
                        help="choose a setting per value of this dataset.json sample field (e.g. blend)")
    parser.add_argument("--json", help="write chosen parameters, metrics (mean, std) and s/image here")
    parser.add_argument("--csv", help="write per-image metrics here")
    parser.add_argument("--save", help="write test results as <SAVE>/<filter>/<id>.png")
    parser.add_argument("--workers", type=int, default=1, help="processes, one image each (default: 1)")
    parser.add_argument("--max-images", type=int, default=0, help="first N images of each split (0: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.filters = [f.strip() for f in args.filters.split(",") if f.strip()]
    unknown = [f for f in args.filters if f not in FILTERS]
    if unknown or not args.filters:
        parser.error(f"unknown filter(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(FILTERS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    protect_inputs(args.data)  # the write rule (csgis.io): no file of the dataset is replaced
    try:
        report = evaluation.run_baselines(args.data, args.split, args.val_split or None, args.filters,
                                          args.select, args.workers, args.max_images, args.save,
                                          progress=not args.quiet, select_per=args.select_per)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report["val_split"] is None:
        print(f"note: no validation images (--val-split '{args.val_split}'); filters run with their defaults",
              file=sys.stderr)
    for name, entry in report["filters"].items():
        how = (f" (chosen on {entry['selected_on']} by {entry['select_metric']})" if entry["selected_on"]
               else " (defaults)")
        per = entry.get("select_per")
        chosen = entry["params"].items() if per else [("", entry["params"])]
        edges = entry["at_grid_edge"].items() if per else [("", entry["at_grid_edge"])]
        for value, params in chosen:
            print(f"{name}{f' {per} {value}' if per else ''}: {params}{how}")
        for value, keys in edges:
            if keys:
                print(f"warning: {name}{f' {per} {value}' if per else ''}: {', '.join(keys)} chosen at the edge "
                      f"of its grid (csgis.filters.PARAM_GRIDS); a better setting may lie outside it", file=sys.stderr)
    print(evaluation.format_table(report["methods"], title=f"{args.data} split '{args.split}'"))
    if report["select_per"]:  # each part was run with its own setting: its means, too
        groups = evaluation.selection_groups(args.data, report["select_per"],
                                             evaluation.load_split(args.data, args.split, args.max_images))
        print(evaluation.format_group_table(report["images"], groups, f"by {report['select_per']}:"))
    if report["problems"]:
        print(f"problems (skipped) ({len(report['problems'])}):", file=sys.stderr)
        for line in report["problems"]:
            print(f"  {line}", file=sys.stderr)
    try:
        return evaluation.write_outputs(report, args.csv, args.json)
    except (OSError, UnicodeError) as e:
        print(f"error: cannot write the results: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
