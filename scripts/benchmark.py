"""Benchmark the smoothing network: parameters, FLOPs/pixel, training and inference throughput.

    python scripts/benchmark.py --json benchmark.json                # paper setting, all variants
    python scripts/benchmark.py --quick --json cpu.json              # small sizes, few repeats (CPU)
    python scripts/benchmark.py --variants eager,bf16 --sizes 1024 2048 --skip-train
    python scripts/benchmark.py --skip-train --skip-infer --tiled-12mp --tiled-width 8   # show.py, 12 MP

What is measured (a markdown table on stdout; --json writes every number with the environment):
- parameters, and forward FLOPs per pixel counted by torch.utils.flop_counter.FlopCounterMode
  (2 FLOP per multiply-add of every convolution) next to the same count from the architecture's
  layer list (csgis.models.smoother.architecture_flops) and the published figures (5.03 MFLOP/px
  for N=12, ~6.8 for N=20; docs/method.md §1);
- training-step throughput (patches/s) of exactly what training runs: the model, CSGISLoss (VGG16
  taps, the frozen eval-mode DeepLabV3+ on the prediction) and Adam are built by
  csgis.train.tasks / csgis.train.loop from a Config (the paper's loss settings), and the step is
  csgis.train.step.train_step; the VGG16 and DeepLabV3+ weights are random (same cost);
- inference throughput (MP/s) of one eval-mode forward pass under torch.inference_mode;
- each execution *variant* (fp32 eager, channels_last, autocast bf16/fp16, torch.compile and
  combinations) as a ratio to fp32 eager of the same run, with peak memory (CUDA:
  max_memory_allocated) and the difference of its output from fp32 eager;
- optionally, show.py on a 12 MP image on CPU (wall time and peak resident memory), through
  scripts/measure_show_memory.py.
See docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from csgis.device import AMP_DTYPES, autocast, resolve_device
from csgis.models.smoother import Smoother, architecture_flops, count_parameters, counted_flops
from csgis.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]

# Published forward cost per pixel (MFLOP) by descriptor block count, for width 64 and 3/6 head blocks.
PUBLISHED_MFLOP_PER_PIXEL = {12: 5.03, 20: 6.8}
# Exact parameter counts by descriptor block count (width 64, 3/6 head blocks).
PUBLISHED_PARAMETERS = {12: 2_528_519, 20: 3_417_863}

# Dense (no structured sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets,
# matched against torch.cuda.get_device_name() in this order (most specific first).
BF16_DENSE_PEAK_TFLOPS = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),          # SXM5 (named e.g. "NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)

VARIANT_FEATURES = ("channels_last", "bf16", "fp16", "compile")
CPU_DEFAULT_VARIANTS = ("eager", "channels_last", "bf16", "compile")
CUDA_DEFAULT_VARIANTS = ("eager", "channels_last", "bf16", "fp16", "compile",
                         "bf16+channels_last", "compile+bf16+channels_last")


# ----------------------------------------------------------------------------- FLOPs
def flop_report(arch: dict, size: int = 64) -> dict:
    """Parameters, counted and architectural FLOPs per pixel, and the check against the published figures (docs/method.md §1)."""
    torch.manual_seed(0)
    model = Smoother(**arch)
    per_pixel_counted = counted_flops(model, size) / (size * size)
    analytic = architecture_flops(**arch)
    report = {
        "parameters": count_parameters(model),
        "counted_mflop_per_pixel": per_pixel_counted / 1e6,
        "analytic_mflop_per_pixel": analytic["conv"] / 1e6,
        "elementwise_mflop_per_pixel_not_counted": analytic["elementwise"] / 1e6,
        "count_input": f"1x3x{size}x{size}",
        "convention": ("FLOP = 2 x multiply-adds of the convolutions (torch FlopCounterMode); "
                       "bias, BN, ReLU, adds and concatenations are not counted"),
        "published_mflop_per_pixel": None, "relative_to_published": None, "within_1pct_of_published": None,
        "published_parameters": None, "parameters_match_published": None,
    }
    standard_heads = arch["width"] == 64 and arch["coarse_blocks"] == 3 and arch["refine_blocks"] == 6
    if standard_heads and arch["descriptor_blocks"] in PUBLISHED_MFLOP_PER_PIXEL:
        spec = PUBLISHED_MFLOP_PER_PIXEL[arch["descriptor_blocks"]]
        relative = report["counted_mflop_per_pixel"] / spec - 1.0
        report.update(published_mflop_per_pixel=spec, relative_to_published=relative,
                      within_1pct_of_published=abs(relative) <= 0.01,
                      published_parameters=PUBLISHED_PARAMETERS[arch["descriptor_blocks"]],
                      parameters_match_published=report["parameters"] == PUBLISHED_PARAMETERS[arch["descriptor_blocks"]])
    return report


# ----------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One way of running the network: 'eager' or features joined by '+' (e.g. 'compile+bf16+channels_last')."""
    name: str
    channels_last: bool = False
    amp: str = "off"            # off | bf16 | fp16
    compile: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp]

    def autocast(self, device: torch.device):
        return autocast(device, self.amp_dtype)


def parse_variant(name: str) -> Variant:
    """'eager' | 'channels_last' | 'bf16' | 'fp16' | 'compile' or a '+'-joined combination -> Variant."""
    name = name.strip()
    if name in ("eager", "fp32", "fp32_eager"):
        return Variant("eager")
    features = name.split("+")
    unknown = [f for f in features if f not in VARIANT_FEATURES]
    if unknown or len(set(features)) != len(features):
        raise ValueError(f"unknown variant {name!r}: use 'eager' or '+'-joined features from {VARIANT_FEATURES}")
    if "bf16" in features and "fp16" in features:
        raise ValueError(f"variant {name!r} asks for both bf16 and fp16")
    amp = "bf16" if "bf16" in features else "fp16" if "fp16" in features else "off"
    return Variant(name, channels_last="channels_last" in features, amp=amp, compile="compile" in features)


def skip_reason(variant: Variant, device: torch.device) -> str | None:
    """Why a variant cannot run on `device` (None when it can)."""
    if variant.amp == "fp16" and device.type != "cuda":
        return "fp16 autocast + GradScaler is CUDA-only here (CPU fp16 convolutions are not a training path)"
    if variant.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 support"
    return None


def _first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:300]


# ----------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return None  # per-variant resident memory in one process is not meaningful on CPU


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Seconds per call of fn (mean over `repeats`; CUDA events on GPU) and the last result."""
    result = None
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(repeats):
            result = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / repeats, result
    begin = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return (time.perf_counter() - begin) / repeats, result


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak from BF16_DENSE_PEAK_TFLOPS, None for CPUs and unknown GPUs."""
    if device.type != "cuda":
        return None
    return peak_for_device_name(torch.cuda.get_device_name(device))


def peak_for_device_name(name: str) -> float | None:
    """Dense bf16 peak (TFLOP/s) of a GPU by its CUDA name, e.g. 'NVIDIA H100 80GB HBM3' -> 989; None if unknown."""
    for key, peak in BF16_DENSE_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


# ----------------------------------------------------------------------------- inference
def benchmark_inference(arch: dict, device: torch.device, variants: Sequence[Variant], sizes: Sequence[int],
                        warmup: int = 2, repeats: int = 5, batch: int = 1,
                        flops_per_pixel: float | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Rows {variant, size, mp_per_s, ratio_to_eager, tflop_per_s, ...}: eval forward, inference_mode, (batch,3,s,s)."""
    peak = bf16_peak_tflops(device)
    rows: list[dict] = []
    reference: dict[int, torch.Tensor] = {}
    eager_seconds: dict[int, float] = {}
    ordered = sorted(variants, key=lambda v: v.name != "eager")  # eager first: ratios and references
    for variant in ordered:
        reason = skip_reason(variant, device)
        model = None
        for size in sizes:
            row = {"variant": variant.name, "size": size, "batch": batch, "status": "ok"}
            if reason:
                rows.append({**row, "status": f"skipped: {reason}"})
                continue
            try:
                if model is None:
                    torch.manual_seed(0)
                    model = Smoother(**arch).eval().to(device=device, memory_format=variant.memory_format)
                    runner = torch.compile(model) if variant.compile else model
                generator = torch.Generator().manual_seed(size)
                x = torch.rand(batch, 3, size, size, generator=generator).to(device)
                x = x.contiguous(memory_format=variant.memory_format)

                def forward(x=x):
                    with torch.inference_mode(), variant.autocast(device):
                        return runner(x).prediction

                _reset_peak(device)
                start = time.perf_counter()
                # A compiled model's second call still pays one-time costs (measured on CPU).
                for _ in range(max(warmup, 2) if variant.compile else warmup):
                    forward()
                _sync(device)
                warmup_s = time.perf_counter() - start
                seconds, prediction = _timed(forward, repeats, device)
                pixels = batch * size * size
                row.update(seconds=seconds, warmup_s=warmup_s, mp_per_s=pixels / seconds / 1e6,
                           peak_mem_mib=_peak_mib(device))
                if flops_per_pixel:
                    row["tflop_per_s"] = flops_per_pixel * pixels / seconds / 1e12
                    row["fraction_of_bf16_peak"] = row["tflop_per_s"] / peak if peak else None
                prediction = prediction.float().cpu()
                if variant.name == "eager":
                    reference[size], eager_seconds[size] = prediction, seconds
                if size in reference:
                    row["max_abs_diff_vs_eager"] = float((prediction - reference[size]).abs().max())
                if size in eager_seconds:
                    row["ratio_to_eager"] = eager_seconds[size] / seconds
                del prediction
            except Exception as error:  # a variant that fails (compile on an odd setup) must not end the run
                row["status"] = f"failed: {_first_line(error)}"
                model = None if variant.compile else model
            rows.append(row)
            log(_row_line("infer", row))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- training
def make_training_batch(batch: int, patch: int, num_classes: int = 21, seed: int = 0) -> dict:
    """Synthetic batch with the dataset's keys and dtypes (the dataset's items), on CPU."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, patch, patch, generator=g)
    return {
        "input": (gt + 0.2 * torch.rand(batch, 3, patch, patch, generator=g)).clamp(0, 1),
        "gt": gt,
        "over_smoothed": torch.rand(batch, 3, patch, patch, generator=g),
        "edge": (torch.rand(batch, 1, patch, patch, generator=g) > 0.8).float(),
        "seg": torch.randint(0, num_classes, (batch, patch, patch), generator=g),
    }


def _random_segmenter_file() -> str:
    """A random-weight DeepLabV3+ (21 classes, OS16) checkpoint: what segmenter.checkpoint loads in training."""
    global _SEGMENTER_FILE
    if _SEGMENTER_FILE is None:
        from csgis.checkpoint import save_checkpoint
        from csgis.models.segmenter import deeplabv3plus_mobilenet
        folder = tempfile.mkdtemp(prefix="csgis_bench_")
        atexit.register(shutil.rmtree, folder, True)
        torch.manual_seed(0)
        _SEGMENTER_FILE = os.path.join(folder, "segmenter.pth")
        save_checkpoint(_SEGMENTER_FILE, deeplabv3plus_mobilenet(num_classes=21, output_stride=16))
    return _SEGMENTER_FILE


_SEGMENTER_FILE: str | None = None


def build_training(arch: dict, device: torch.device, variant: Variant, vgg_weights: str = "random",
                   loss_overrides: dict | None = None):
    """(model, task, optimizer, scaler) built by the training code itself from a Config: the
    paper's loss settings (plus loss_overrides), random VGG16 and DeepLabV3+ weights."""
    from csgis.config import from_dict
    from csgis.train.loop import build_optimizer
    from csgis.train.state import seed_everything
    from csgis.train.tasks import SmoothingTask

    loss = {"vgg_weights": vgg_weights, **(loss_overrides or {})}
    cfg = from_dict({"model": dict(arch), "loss": loss, "amp": variant.amp, "channels_last": variant.channels_last,
                     "segmenter": {"checkpoint": _random_segmenter_file()}})
    seed_everything(0)
    task = SmoothingTask(cfg, device, channels_last=variant.channels_last)
    model = task.model.to(device=device, memory_format=variant.memory_format)
    task.train_mode()
    optimizer = build_optimizer(task.param_groups(), cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=variant.amp == "fp16")
    return model, task, optimizer, scaler


def training_step_flops(arch: dict, device: torch.device, patch: int, vgg_weights: str = "random",
                        loss_overrides: dict | None = None) -> int:
    """FLOPs (FlopCounterMode) of one training step on one patch: smoother fwd+bwd, loss networks fwd+bwd."""
    from csgis.train.step import train_step
    model, task, optimizer, scaler = build_training(arch, device, Variant("eager"), vgg_weights, loss_overrides)
    batch = {k: v.to(device) for k, v in make_training_batch(1, patch).items()}
    with FlopCounterMode(display=False) as counter:
        train_step(model, batch, task.criterion, optimizer, scaler=scaler)
    return int(counter.get_total_flops())


def _time_training(arch: dict, device: torch.device, variant: Variant, host_batch: dict, warmup: int, steps: int,
                   vgg_weights: str, loss_overrides: dict | None) -> dict:
    """Build, warm up and time one variant; everything it built is freed on return."""
    from csgis.train.step import train_step
    model, task, optimizer, scaler = build_training(arch, device, variant, vgg_weights, loss_overrides)
    runner = torch.compile(model) if variant.compile else model
    data = {k: v.to(device) for k, v in host_batch.items()}
    data = {k: (v.contiguous(memory_format=variant.memory_format) if v.dim() == 4 else v) for k, v in data.items()}

    def step():
        return train_step(runner, data, task.criterion, optimizer, scaler=scaler, autocast_dtype=variant.amp_dtype)

    _reset_peak(device)
    start = time.perf_counter()
    first = step()  # the first step is a warm-up step too; its loss checks the variant
    # A compiled model's second call still pays one-time costs (measured on CPU).
    for _ in range(max(0, (max(warmup, 2) if variant.compile else warmup) - 1)):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    seconds, _ = _timed(step, steps, device)
    batch = host_batch["input"].shape[0]
    return {"seconds_per_step": seconds, "warmup_s": warmup_s, "patches_per_s": batch / seconds,
            "peak_mem_mib": _peak_mib(device), "loss_step1": first["total"]}


def benchmark_training(arch: dict, device: torch.device, variants: Sequence[Variant], batch: int = 8,
                       patch: int = 128, warmup: int = 3, steps: int = 10, vgg_weights: str = "random",
                       flops_per_patch: int | None = None, loss_overrides: dict | None = None,
                       log: Callable[[str], None] = print) -> list[dict]:
    """Rows {variant, patches_per_s, ratio_to_eager, loss_step1, ...} of engine.train_step on a fixed batch."""
    peak = bf16_peak_tflops(device)
    rows: list[dict] = []
    eager: dict[str, float] = {}
    host_batch = make_training_batch(batch, patch)
    for variant in sorted(variants, key=lambda v: v.name != "eager"):
        row = {"variant": variant.name, "batch": batch, "patch": patch, "status": "ok"}
        reason = skip_reason(variant, device)
        if reason:
            rows.append({**row, "status": f"skipped: {reason}"})
            log(_row_line("train", rows[-1]))
            continue
        try:
            row.update(_time_training(arch, device, variant, host_batch, warmup, steps, vgg_weights, loss_overrides))
            if flops_per_patch:
                row["tflop_per_s"] = flops_per_patch * batch / row["seconds_per_step"] / 1e12
                row["fraction_of_bf16_peak"] = row["tflop_per_s"] / peak if peak else None
            if variant.name == "eager":
                eager = {"seconds": row["seconds_per_step"], "loss": row["loss_step1"]}
            if eager:
                row["ratio_to_eager"] = eager["seconds"] / row["seconds_per_step"]
                row["loss_step1_diff_vs_eager"] = abs(row["loss_step1"] - eager["loss"])
        except Exception as error:
            row["status"] = f"failed: {_first_line(error)}"
        rows.append(row)
        log(_row_line("train", row))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- tiled 12 MP (CPU)
def tiled_show_memory(width: int = 64, blocks: Sequence[int] = (12, 3, 6), megapixels: float = 12.0,
                      tile: int | None = None, timeout: float | None = None) -> dict:
    """show.py on a large 4:3 image in a child process (scripts/measure_show_memory.py): wall time, peak RSS.

    tile=None uses the tile show.py would pick for the *default* (width 64) model, so a cheap
    narrow network still runs the default tiling; the peak then reflects the narrow network's
    activations, not the default one's.
    """
    script = ROOT / "scripts" / "measure_show_memory.py"
    if not script.is_file():
        raise FileNotFoundError(f"tiled benchmark needs {script}")
    if tile is None:
        from csgis.inference import default_tile
        tile = default_tile("cpu", Smoother(64, *blocks))
    command = [sys.executable, str(script), "--megapixels", str(megapixels), "--width", str(width),
               "--blocks", *map(str, blocks), "--tile", str(tile)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "returncode": proc.returncode, "error": (proc.stderr or proc.stdout)[-1000:],
                "command": " ".join(command[1:])}
    report = json.loads(lines[-1])
    report["command"] = "python " + " ".join(str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                                            for c in command[1:])
    return report


# ----------------------------------------------------------------------------- environment
def _git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    """Device name, torch/CUDA versions, CPU count, threads, git commit, load average."""
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "git_commit": _git_commit(),
        "load_average_start": _loadavg(), "bf16_dense_peak_tflops": bf16_peak_tflops(device),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return env


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- whole run
@dataclass
class BenchmarkOptions:
    """Everything scripts/benchmark.py can set; defaults are the paper setting on the chosen device."""
    device: str = "auto"
    width: int = 64
    blocks: tuple[int, int, int] = (12, 3, 6)
    variants: Sequence[str] | None = None       # None: CPU_/CUDA_DEFAULT_VARIANTS
    quick: bool = False
    sizes: Sequence[int] | None = None          # None: CPU (256, 1024), quick (256, 512); CUDA (256, 1024, 2048)
    infer_batch: int = 1
    infer_warmup: int | None = None
    infer_repeats: int | None = None
    train: bool = True
    infer: bool = True
    train_batch: int | None = None              # None: 8 (paper); 2 in --quick on CPU
    train_patch: int = 128
    train_warmup: int | None = None
    train_steps: int | None = None
    vgg_weights: str = "random"
    flop_size: int = 64
    tiled_12mp: bool = False
    tiled_width: int = 64
    tiled_blocks: tuple[int, int, int] = (12, 3, 6)
    tiled_megapixels: float = 12.0
    tiled_tile: int | None = None
    loss_overrides: dict = field(default_factory=dict)
    pipeline_data: str = ""                     # dataset folder: time data.pipeline=device batches too


def _settings(opts: BenchmarkOptions, device: torch.device) -> dict:
    """Fill the options left at None from the device and --quick."""
    cuda, quick = device.type == "cuda", opts.quick
    if cuda:
        default_sizes = (256, 1024) if quick else (256, 1024, 2048)
    else:
        default_sizes = (256, 512) if quick else (256, 1024)
    return {
        "variants": list(opts.variants or (CUDA_DEFAULT_VARIANTS if cuda else CPU_DEFAULT_VARIANTS)),
        "sizes": list(opts.sizes or default_sizes),
        "infer_warmup": opts.infer_warmup if opts.infer_warmup is not None else (1 if quick or not cuda else 3),
        "infer_repeats": opts.infer_repeats if opts.infer_repeats is not None else
        (1 if quick and not cuda else 3 if not cuda else 10),
        "train_batch": opts.train_batch or (2 if quick and not cuda else 8),
        "train_warmup": opts.train_warmup if opts.train_warmup is not None else (1 if not cuda else 3),
        "train_steps": opts.train_steps if opts.train_steps is not None else
        (2 if quick and not cuda else 3 if not cuda else 20),
    }


def benchmark_pipeline(data_root: str, device: torch.device, batch: int, patch: int, repeats: int = 20,
                       workers: int = 0) -> dict:
    """Time of one data.pipeline=device batch (augment_batch on the device) of the split's training data."""
    from csgis.config import DataConfig
    from csgis.data import build_dataset
    from csgis.data.batched import DeviceBank, augment_batch

    cfg = DataConfig(root=data_root, patch_size=patch)
    start = time.perf_counter()
    bank = DeviceBank(build_dataset(cfg, "train", train=False), device, workers=workers)
    load_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    indices = torch.arange(batch) % len(bank.ids)

    def make():
        return augment_batch(bank, indices, patch, cfg.hflip, cfg.rotate, cfg.brightness, cfg.contrast, cfg.hue,
                             generator)
    make()
    seconds, _ = _timed(make, repeats, device)
    return {"data": data_root, "samples": len(bank.ids), "bank_mib": bank.nbytes / 2**20, "load_s": load_s,
            "batch": batch, "patch": patch, "seconds_per_batch": seconds}


def run_benchmarks(opts: BenchmarkOptions, log: Callable[[str], None] = print) -> dict:
    """Run everything `opts` asks for and return the JSON-ready report (environment, flops, train, infer, tiled)."""
    device = resolve_device(opts.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    arch = {"width": opts.width, "descriptor_blocks": opts.blocks[0], "coarse_blocks": opts.blocks[1],
            "refine_blocks": opts.blocks[2]}
    settings = _settings(opts, device)
    variants = [parse_variant(v) for v in settings["variants"]]
    if not any(v.name == "eager" for v in variants):
        variants.insert(0, Variant("eager"))  # every ratio is to fp32 eager of the same run
    report: dict = {"environment": environment(device), "arch": arch, "settings": settings,
                    "options": {k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in dataclasses.asdict(opts).items()}}
    report["flops"] = flop_report(arch, opts.flop_size)
    log(f"parameters {report['flops']['parameters']:,} | counted {report['flops']['counted_mflop_per_pixel']:.4f} "
        f"MFLOP/px | analytic {report['flops']['analytic_mflop_per_pixel']:.4f} MFLOP/px")
    per_pixel = report["flops"]["counted_mflop_per_pixel"] * 1e6

    report["train"] = None
    if opts.train:
        patch = opts.train_patch
        step_flops = training_step_flops(arch, device, patch, opts.vgg_weights, opts.loss_overrides)
        report["train_flops_per_patch"] = step_flops
        report["train_note"] = (f"csgis.train.step.train_step, CSGISLoss paper settings (triplet contrastive on VGG16 relu1_2/relu2_2, "
                                f"segmentation on the prediction through a frozen eval-mode DeepLabV3+ "
                                f"MobileNetV2 OS16), Adam; VGG16 and DeepLabV3+ weights: {opts.vgg_weights} "
                                f"(same cost as trained weights); batch {settings['train_batch']} of {patch} px")
        report["train"] = benchmark_training(arch, device, variants, settings["train_batch"], patch,
                                             settings["train_warmup"], settings["train_steps"], opts.vgg_weights,
                                             step_flops, opts.loss_overrides, log)
    report["infer"] = None
    if opts.infer:
        report["infer"] = benchmark_inference(arch, device, variants, settings["sizes"], settings["infer_warmup"],
                                              settings["infer_repeats"], opts.infer_batch, per_pixel, log)
    report["pipeline"] = None
    if opts.pipeline_data and opts.train:
        log("pipeline: data.pipeline=device batches ...")
        report["pipeline"] = benchmark_pipeline(opts.pipeline_data, device, settings["train_batch"], opts.train_patch)
        log(f"pipeline: {1e3 * report['pipeline']['seconds_per_batch']:.2f} ms per batch")
        eager = next((r for r in report["train"] if r["variant"] == "eager" and r["status"] == "ok"), None)
        if eager:
            step = eager["seconds_per_step"]
            report["pipeline"]["share_of_eager_step"] = report["pipeline"]["seconds_per_batch"] / (
                step + report["pipeline"]["seconds_per_batch"])
    report["tiled"] = None
    if opts.tiled_12mp:
        log("tiled: show.py on a large image in a child process (CPU) ...")
        report["tiled"] = tiled_show_memory(opts.tiled_width, opts.tiled_blocks, opts.tiled_megapixels,
                                            opts.tiled_tile)
    report["environment"]["load_average_end"] = _loadavg()
    return report


# ----------------------------------------------------------------------------- table
def _fmt(value, digits: int = 3, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}{suffix}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _row_line(kind: str, row: dict) -> str:
    if not row["status"] == "ok":
        return f"{kind} {row['variant']}: {row['status']}"
    # The log line carries the accuracy against eager too: a run cut off before its JSON keeps it.
    if kind == "train":
        return (f"train {row['variant']}: {row['patches_per_s']:.3f} patches/s "
                f"(x{row.get('ratio_to_eager', float('nan')):.2f} vs eager, step-1 loss diff "
                f"{row.get('loss_step1_diff_vs_eager', float('nan')):.2e})")
    return (f"infer {row['variant']} {row['size']}px: {row['mp_per_s']:.4f} MP/s "
            f"(x{row.get('ratio_to_eager', float('nan')):.2f} vs eager, max abs diff "
            f"{row.get('max_abs_diff_vs_eager', float('nan')):.2e})")


def format_table(report: dict) -> str:
    """Markdown tables of a report from run_benchmarks."""
    env, fl = report["environment"], report["flops"]
    lines = [f"Device: {env['device_name']} ({env['device']}) | torch {env['torch']} | CPU count {env['cpu_count']}, "
             f"torch threads {env['torch_threads']} | commit {env['git_commit']} | load average "
             f"{env['load_average_start']} -> {env.get('load_average_end')}", ""]
    spec = fl["published_mflop_per_pixel"]
    vs_spec = "n/a" if spec is None else f"{100 * fl['relative_to_published']:+.2f}%"
    lines += ["| model | parameters | counted MFLOP/px | analytic MFLOP/px | published MFLOP/px | counted vs published |",
              "|---|---|---|---|---|---|",
              f"| width {report['arch']['width']}, blocks {report['arch']['descriptor_blocks']}/"
              f"{report['arch']['coarse_blocks']}/{report['arch']['refine_blocks']} | {fl['parameters']:,} | "
              f"{fl['counted_mflop_per_pixel']:.4f} | {fl['analytic_mflop_per_pixel']:.4f} | "
              f"{_fmt(spec, 2)} | {vs_spec} |", ""]
    peak = env.get("bf16_dense_peak_tflops")
    if report.get("train"):
        lines += [f"Training step ({report['train_note']}; {_fmt(report['train_flops_per_patch'] / 1e9, 1)} "
                  "GFLOP per patch counted):", "",
                  "| variant | patches/s | x fp32 eager | TFLOP/s | % bf16 peak | peak MiB | loss step 1 (diff vs eager) | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["train"]:
            ok = r["status"] == "ok"
            lines.append(
                f"| {r['variant']} | {_fmt(r.get('patches_per_s'), 3) if ok else '-'} | "
                f"{_fmt(r.get('ratio_to_eager'), 2) if ok else '-'} | {_fmt(r.get('tflop_per_s'), 3) if ok else '-'} | "
                f"{_pct(r.get('fraction_of_bf16_peak'), peak) if ok else '-'} | "
                f"{_fmt(r.get('peak_mem_mib'), 0) if ok else '-'} | "
                f"{(_fmt(r['loss_step1'], 5) + ' (' + _sci(r.get('loss_step1_diff_vs_eager')) + ')') if ok else '-'} | "
                f"{r['status']} |")
        lines.append("")
    if report.get("infer"):
        lines += ["Inference (eval forward, inference_mode, batch "
                  f"{report['infer'][0]['batch']}):", "",
                  "| variant | size | MP/s | x fp32 eager | TFLOP/s | % bf16 peak | peak MiB | max abs diff vs eager | status |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in report["infer"]:
            ok = r["status"] == "ok"
            lines.append(
                f"| {r['variant']} | {r['size']}x{r['size']} | {_fmt(r.get('mp_per_s'), 4) if ok else '-'} | "
                f"{_fmt(r.get('ratio_to_eager'), 2) if ok else '-'} | {_fmt(r.get('tflop_per_s'), 3) if ok else '-'} | "
                f"{_pct(r.get('fraction_of_bf16_peak'), peak) if ok else '-'} | "
                f"{_fmt(r.get('peak_mem_mib'), 0) if ok else '-'} | "
                f"{_sci(r.get('max_abs_diff_vs_eager')) if ok else '-'} | {r['status']} |")
        lines.append("")
    pipe = report.get("pipeline")
    if pipe:
        share = pipe.get("share_of_eager_step")
        lines += [f"Data (data.pipeline=device, {pipe['samples']} samples, {pipe['bank_mib']:.0f} MiB on the device, "
                  f"decoded in {pipe['load_s']:.1f} s): {1e3 * pipe['seconds_per_batch']:.2f} ms per batch of "
                  f"{pipe['batch']} x {pipe['patch']} px" + (f", {100 * share:.1f}% of an fp32 eager step with it"
                                                             if share is not None else ""), ""]
    tiled = report.get("tiled")
    if tiled:
        if tiled.get("ok"):
            lines += ["| tiled show.py (CPU) | image | model | tile (margin) | wall s | peak RSS MiB |",
                      "|---|---|---|---|---|---|",
                      f"| {tiled['command']} | {tiled['image']} | width {tiled['model']['width']}, blocks "
                      f"{'/'.join(map(str, tiled['model']['blocks']))} | {tiled['tile']} ({tiled['radius']}) | "
                      f"{tiled['wall_s']} | {tiled['peak_rss_mb']} |", ""]
        else:
            lines += [f"tiled show.py failed: {tiled.get('error') or tiled.get('stderr_tail')}", ""]
    return "\n".join(lines)


def _sci(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _pct(fraction: float | None, peak: float | None) -> str:
    if fraction is None:
        return "n/a" if peak is None else "-"
    return f"{100 * fraction:.1f}%"


def save_report(report: dict, path: str | os.PathLike) -> None:
    """Write the report as indented JSON (atomic: temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- command line
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
    p.add_argument("--pipeline-data", default="",
                   help="dataset folder: also time a data.pipeline=device batch (and its share of a training step)")
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
            tiled_megapixels=args.tiled_megapixels, tiled_tile=args.tiled_tile, pipeline_data=args.pipeline_data)
        report = run_benchmarks(opts, log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"benchmark.py: error: {e}", file=sys.stderr)
        return 2
    report["command"] = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:  # first: a report is never lost to a formatting problem
        save_report(report, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
