"""Smooth images with a trained CSGIS-Net smoother and write PNGs.

    python show.py --checkpoint experiments/paper/models/best.pth --input photos/ --output results/
    python show.py --checkpoint net_218.pth --input 'photos/**/*.jpg' --output results/ --save-edges

--input is an image file, a folder (searched recursively for csgis.io.IMAGE_EXTENSIONS) or a glob
pattern (quoted; `**` recurses; matches without an image extension are ignored). Outputs mirror the inputs' names relative to the folder (or the glob's fixed leading
folder) as `<name>.png`, plus `<name>_edge.png` / `<name>_coarse.png` on request (all output names are
planned first: an edge or coarse map whose name another input's result takes is renamed and the
renaming printed). Both our
checkpoints and the authors' released ones ({"net": ..., "now_epoch", "opt"}) are accepted.
Region smoothing: --mask (a file, or a folder of masks named like the inputs) or --classes /
--keep-classes with --segmenter choose where to smooth; --feather PX softens the seam; outside the
region and its feather band the output equals the input exactly. --strength S in [0, 4] (below 1:
a blend with the input; above 1: the smoother applied again) and --scale S (smooth at S x the
resolution) set how strongly (csgis/regions.py). --save-mask writes the region used as
<name>_mask.png.
Existing outputs are kept unless --overwrite, so an interrupted run resumes. Files that cannot be
read are reported with their path and skipped; the exit status is 1 when any image failed, 2 on
bad arguments.
"""
from __future__ import annotations

import argparse
import glob
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from csgis.checkpoint import CheckpointError, load_segmenter, load_smoother
from csgis.device import cpu_has_bf16, resolve_device
from csgis.inference import RECOMMENDED_POST, check_post, default_tile, smooth_image
from csgis.io import (IMAGE_EXTENSIONS, ImageReadError, check_writable, is_within, list_images, protect_inputs,
                      read_image, write_image)
from csgis.regions import (RegionError, check_strength_scale, class_ids, class_mask, find_mask_file, mask_image,
                           read_mask, segment, segmenter_classes, smooth_region)
from csgis.runtime import reuse_large_allocations

# smooth_image output -> file-name suffix
OUTPUT_SUFFIXES = {"prediction": "", "edge": "_edge", "coarse": "_coarse", "mask": "_mask"}
MIN_CLI_TILE = 32  # smaller tiles spend nearly all their time on the margin (--tile 1: hours)


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="our checkpoint or the authors' released .pth")
    p.add_argument("--input", required=True, help="image file, folder (recursive) or glob pattern")
    p.add_argument("--output", required=True, help="folder for the results (created if missing)")
    p.add_argument("--save-edges", action="store_true", help="also write <name>_edge.png (sigmoid x 255)")
    p.add_argument("--save-coarse", action="store_true", help="also write <name>_coarse.png")
    p.add_argument("--tile", type=int, default=None,
                   help="tile core size in pixels; default: chosen from free memory; 0: no tiling")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="autocast precision")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on CUDA, where it measured 2x fp32 eager "
                        "on an H200, docs/BENCHMARKS.md; off on the CPU)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the results of the 8 rotations and mirror images of each image: 8x the "
                        "time, about +0.4 dB on the held-out benchmark (docs/RESULTS.md)")
    p.add_argument("--keep-mean", action="store_true",
                   help="shift each result, channel by channel, to its input's mean colour, as L0 and WLS "
                        "smoothing do by construction (docs/RESULTS.md: about +0.8 dB on the held-out benchmark's "
                        "validation part)")
    p.add_argument("--post", metavar="SPEC",
                   help=f"run a classical smoother on each result, before --keep-mean: '{RECOMMENDED_POST}' (L0, "
                        f"chosen on the held-out benchmark's validation part, docs/RESULTS.md), or any "
                        f"'name:key=value,...' of csgis/data/blend.py; it sees the whole image at once "
                        f"(L0: about 260 bytes a pixel)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs; allow an output folder inside the input folder")
    r = p.add_argument_group("regions (see csgis/regions.py)")
    r.add_argument("--mask", help="smooth only where this mask is set: a file, or a folder of masks named like the inputs")
    r.add_argument("--resize-mask", action="store_true", help="resize a mask of another size to the image (nearest)")
    r.add_argument("--classes", help="smooth only these classes of the segmenter, comma-separated (needs --segmenter)")
    r.add_argument("--keep-classes", help="smooth everything but these classes of the segmenter (needs --segmenter)")
    r.add_argument("--segmenter", help="segmentation checkpoint for --classes / --keep-classes")
    r.add_argument("--feather", type=float, default=0.0, help="width in pixels of the soft seam outside the region")
    r.add_argument("--strength", type=float, default=1.0,
                   help="0..1: blend with the input; 1..4: apply the smoother again (default 1)")
    r.add_argument("--scale", type=float, default=1.0, help="smooth at this times the resolution (0.25..4, default 1)")
    r.add_argument("--save-mask", action="store_true", help="also write the region used as <name>_mask.png")
    return p.parse_args(argv)


def _glob_root(pattern: str) -> Path:
    """The leading folders of a glob pattern that contain no wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_inputs(spec: str) -> tuple[Path, list[Path], bool]:
    """(root, files, root_is_scanned): files to smooth and the folder their output names are relative to."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path], False
    if path.is_dir():
        return path, list_images(path), True
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True)
                       if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
        return _glob_root(spec), files, True
    raise UsageError(f"input not found: {spec}")


def output_names(root: Path, files: list[Path]) -> dict[Path, Path]:
    """Input file -> output stem (relative, no extension); name clashes (a.jpg, a.png) keep the extension."""
    stems = {}
    for f in files:
        try:
            stems[f] = f.relative_to(root).with_suffix("")
        except ValueError:  # not lexically under root (a single file)
            stems[f] = Path(f.stem)
    counts: dict[Path, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {f: (stem if counts[stem] == 1 else stem.with_name(f"{f.stem}_{f.suffix.lstrip('.')}"))
            for f, stem in stems.items()}


def plan_outputs(root: Path, files: list[Path], kinds: list[str]) -> tuple[dict[Path, dict[str, Path]], list[str]]:
    """Every file each input will write, decided before any work: {input: {kind: relative path}}.

    No two outputs share a path. Smoothed images take their plain names first; an edge or coarse
    map whose name is taken (inputs x.png and x_edge.png with --save-edges) gets the input's
    extension in its name (x_png_edge.png), then a number. Returns the plan and one line per
    renamed output.
    """
    names = output_names(root, files)
    plan: dict[Path, dict[str, Path]] = {f: {} for f in files}
    taken: set[str] = set()
    renamed = []
    for kind in kinds:  # "prediction" first
        for f in files:
            wanted = Path(f"{names[f]}{OUTPUT_SUFFIXES[kind]}.png")
            target = wanted
            if target.as_posix().lower() in taken:
                base = names[f].with_name(f"{names[f].name}_{f.suffix.lstrip('.').lower()}")
                target, n = Path(f"{base}{OUTPUT_SUFFIXES[kind]}.png"), 2
                while target.as_posix().lower() in taken:
                    target, n = Path(f"{base}{OUTPUT_SUFFIXES[kind]}_{n}.png"), n + 1
                renamed.append(f"{kind} of {f} -> {target} ({wanted} is another input's output)")
            taken.add(target.as_posix().lower())
            plan[f][kind] = target
    return plan, renamed


def _is_out_of_memory(error: RuntimeError) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text \
        or "can't allocate memory" in text or "not enough memory" in text


def pick_device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def names_relative(root: Path, path: Path) -> Path:
    try:
        return path.relative_to(root).with_suffix("")
    except ValueError:
        return Path(path.stem)


class RegionOptions:
    """show.py's region arguments, checked once: which pixels of each image to smooth."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        chosen = [name for name in ("mask", "classes", "keep_classes") if getattr(args, name)]
        if len(chosen) > 1:
            raise UsageError("choose one of --mask, --classes and --keep-classes")
        try:
            check_strength_scale(args.strength, args.scale)
        except RegionError as e:
            raise UsageError(f"--{str(e)}") from None
        if args.feather < 0:
            raise UsageError(f"--feather must be >= 0, got {args.feather:g}")
        self.active = bool(chosen)
        self.plain = not self.active and args.strength == 1 and args.scale == 1
        self.mask_path = Path(args.mask) if args.mask else None
        if self.mask_path is not None and not self.mask_path.exists():
            raise UsageError(f"mask not found: {self.mask_path}")
        self.segmenter = self.ids = None
        wanted = args.classes or args.keep_classes
        if wanted:
            if not args.segmenter:
                raise UsageError("--classes and --keep-classes need --segmenter CKPT")
            try:
                self.segmenter = load_segmenter(args.segmenter)
                names = segmenter_classes(args.segmenter, self.segmenter.num_classes)
                self.ids = class_ids(names, [n.strip() for n in wanted.split(",") if n.strip()])
            except (CheckpointError, RegionError) as e:
                raise UsageError(str(e)) from None
        elif args.segmenter:
            raise UsageError("--segmenter is used with --classes or --keep-classes")

    def mask(self, path: Path, relative_stem: Path, rgb: np.ndarray) -> np.ndarray | None:
        """The region of one image (None: the whole image); RegionError for an unusable one."""
        shape = rgb.shape[:2]
        if self.mask_path is not None:
            file = self.mask_path if self.mask_path.is_file() else find_mask_file(self.mask_path, relative_stem)
            if file is None:
                raise RegionError(f"{path}: no mask named {relative_stem}.<ext> in {self.mask_path}")
            try:
                mask = read_mask(file, shape, self.args.resize_mask)
            except RegionError as e:
                raise RegionError(f"{path}: {e}") from None
        elif self.ids is not None:
            labels = segment(self.segmenter, rgb, self.device)
            mask = class_mask(labels, self.ids, keep=bool(self.args.keep_classes))
        else:
            return None
        if not mask.any():
            raise RegionError(f"{path}: the region is empty (no pixel of the mask or class is set), so nothing "
                              f"would be smoothed")
        return mask


def run(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint not found: {checkpoint}")
    if args.tile is not None and args.tile != 0 and args.tile < MIN_CLI_TILE:
        raise UsageError(f"--tile must be 0 (no tiling) or at least {MIN_CLI_TILE} px, got {args.tile} "
                         f"(every tile also computes a margin of the network's receptive radius)")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.post is not None:
        try:
            check_post(args.post)
        except ValueError as e:
            raise UsageError(str(e)) from None
    device = pick_device(args.device)
    if args.channels_last is None:
        args.channels_last = device.type == "cuda"
    if device.type == "cpu" and (args.amp == "fp16" or (args.amp == "bf16" and cpu_has_bf16() is False)):
        print(f"warning: --amp {args.amp} on this CPU is emulated and much slower than float32 (--amp off)",
              file=sys.stderr)

    root, files, scanned = find_inputs(args.input)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output exists and is not a folder: {out_dir}")
    if scanned and is_within(out_dir, root):
        if not args.overwrite:
            raise UsageError(f"output folder {out_dir} is inside the input folder {root}; "
                             "choose another folder or pass --overwrite")
        if out_dir.resolve() != root.resolve():
            # A rerun must not smooth its own earlier results.
            files = [f for f in files if not is_within(f, out_dir)]
    if not files:
        raise UsageError(f"no images found in {args.input} (extensions: {' '.join(IMAGE_EXTENSIONS)})")

    try:
        model = load_smoother(checkpoint, map_location="cpu")
    except (CheckpointError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise UsageError(f"cannot load checkpoint {checkpoint}: {e}") from None
    tile = default_tile(device, model, amp=args.amp, batch=args.batch) if args.tile is None else args.tile
    region = RegionOptions(args, device)

    kinds = (["prediction"] + ["edge"] * args.save_edges + ["coarse"] * args.save_coarse
             + ["mask"] * (args.save_mask and region.active))
    plan, renamed = plan_outputs(root, files, kinds)
    protect_inputs(checkpoint, args.mask, args.segmenter, *files)  # the write rule: no input is replaced
    for line in renamed:
        print(f"renamed: {line}", file=sys.stderr)
    try:
        check_writable(out_dir)  # before any image is smoothed
    except OSError as e:
        raise UsageError(str(e)) from None
    print(f"{len(files)} image(s) from {args.input} -> {out_dir} | device {device}, tile "
          f"{tile or 'off'} (margin {model.receptive_radius()} px), batch {args.batch}, amp {args.amp}"
          + (", 8 views averaged (--self-ensemble)" if args.self_ensemble else "")
          + (f", then {args.post} (--post)" if args.post else "")
          + (", input's mean colour kept (--keep-mean)" if args.keep_mean else ""),
          file=sys.stderr)

    written = skipped = 0
    failed: list[tuple[Path, str]] = []
    bar = tqdm(files, unit="img", file=sys.stderr, dynamic_ncols=True)
    for path in bar:
        bar.set_postfix_str(path.name, refresh=False)
        targets = {kind: out_dir / relative for kind, relative in plan[path].items()}
        todo = {k: t for k, t in targets.items() if args.overwrite or not t.exists()}
        if not todo:
            tqdm.write(f"skip {path}: {targets['prediction']} exists (use --overwrite)", file=sys.stderr)
            skipped += 1
            continue
        if path.resolve() in {t.resolve() for t in todo.values()}:
            failed.append((path, "output would replace the input itself"))
            tqdm.write(f"FAILED {path}: output would replace the input itself", file=sys.stderr)
            continue
        try:
            rgb = read_image(path)
            network = dict(tile=tile, device=device, amp=args.amp, channels_last=args.channels_last, batch=args.batch,
                           self_ensemble=args.self_ensemble, keep_mean=args.keep_mean, post=args.post)
            if region.plain:
                result = smooth_image(model, rgb, outputs=tuple(k for k in todo if k != "mask"), **network)
            else:
                mask = region.mask(path, names_relative(root, path), rgb)
                result = {k: v for k, v in smooth_image(model, rgb, outputs=tuple(k for k in todo if k in (
                    "edge", "coarse")), **network).items()} if {"edge", "coarse"} & set(todo) else {}
                result["prediction"] = smooth_region(model, rgb, mask, args.feather, args.strength, args.scale,
                                                     **network)
                if mask is not None:
                    result["mask"] = mask_image(mask)
            del rgb
            for kind, target in todo.items():
                write_image(target, result[kind])
            written += 1
        except (ImageReadError, RegionError) as e:  # message already names the file
            failed.append((path, str(e)))
            tqdm.write(f"FAILED {e}", file=sys.stderr)
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one; CPU allocators raise plain ones
            reason = (f"out of memory at tile {tile}; try a smaller --tile" if _is_out_of_memory(e)
                      else f"cannot smooth it ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})")
            failed.append((path, reason))  # one bad image never stops the batch
            tqdm.write(f"FAILED {path}: {reason}", file=sys.stderr)
        except OSError as e:  # writing the result
            failed.append((path, str(e)))
            tqdm.write(f"FAILED {path}: cannot write result ({e})", file=sys.stderr)
    bar.close()

    print(f"done: {written} written, {skipped} skipped (outputs exist), {len(failed)} failed", file=sys.stderr)
    for path, reason in failed:
        print(f"  failed: {path}: {reason}" if str(path) not in reason else f"  failed: {reason}",
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reuse_large_allocations()  # large CPU speed-up, same results (see csgis/runtime.py)
    try:
        return run(args)
    except UsageError as e:
        print(f"show.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nshow.py: interrupted; the results written so far are kept, and rerunning the same "
              "command continues with the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
