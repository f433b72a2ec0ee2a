"""Where one paper training step spends its time on the device: smoother alone vs the loss networks.

    PYTHONPATH=. python scripts/device/profile_step.py OUT_DIR [--device cuda] [--patch 128] [--batch 8]

For each variant (eager, bf16+channels_last) it times, on the benchmark's fixed batch:
  smoother   model forward + backward with a plain L1 loss (no loss networks);
  criterion  the paper criterion (VGG16 contrastive, DeepLabV3+ segmentation, L1/SSIM/edge) forward +
             backward on a fixed output that needs a gradient;
  step       the whole train_step (what scripts/benchmark.py reports);
then profiles five full steps of the last variant and writes the 25 CUDA-heaviest operators.
Output: OUT_DIR/profile_step.json and OUT_DIR/profile_step.txt (also printed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/ for benchmark
from benchmark import build_training, make_training_batch, parse_variant

from csgis.device import autocast
from csgis.train.step import float_outputs, train_step

def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--variants", default="eager,bf16+channels_last")
    p.add_argument("--width", type=int, default=64, help="network width (default: the paper's 64)")
    p.add_argument("--blocks", type=int, nargs=3, default=(12, 3, 6), metavar=("DESCRIPTOR", "COARSE", "REFINE"))
    args = p.parse_args(argv)
    arch = {"width": args.width, "descriptor_blocks": args.blocks[0], "coarse_blocks": args.blocks[1],
            "refine_blocks": args.blocks[2]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    report = {"arch": arch, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "batch": args.batch, "patch": args.patch,
              "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "rows": []}
    lines = [f"{report['device']} torch {report['torch']} batch {args.batch} patch {args.patch} "
             f"tf32 matmul {report['tf32_matmul']} cudnn {report['tf32_cudnn']}"]
    host = make_training_batch(args.batch, args.patch)
    for name in args.variants.split(","):
        variant = parse_variant(name)
        model, task, optimizer, scaler = build_training(arch, device, variant)
        data = {k: v.to(device) for k, v in host.items()}
        data = {k: (v.contiguous(memory_format=variant.memory_format) if v.dim() == 4 else v) for k, v in data.items()}

        def smoother():
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, variant.amp_dtype):
                out = model(data["input"])
            o = float_outputs(out)
            ((o.prediction - data["gt"]).abs().mean() + (o.coarse - data["gt"]).abs().mean()
             + o.edge_logits.abs().mean()).backward()

        with torch.no_grad(), autocast(device, variant.amp_dtype):
            fixed = float_outputs(model(data["input"]))

        def criterion():
            pred = dataclasses.replace(fixed, **{f.name: getattr(fixed, f.name).detach().requires_grad_(True)
                                                 for f in dataclasses.fields(fixed)})
            total, _ = task.criterion(pred, data)
            total.backward()

        def step():
            train_step(model, data, task.criterion, optimizer, scaler=scaler, autocast_dtype=variant.amp_dtype)

        row = {"variant": name}
        for part, fn in (("smoother", smoother), ("criterion", criterion), ("step", step)):
            row[f"{part}_ms"] = 1000 * timed(fn, device, args.warmup, args.repeats)
        row["patches_per_s"] = args.batch / (row["step_ms"] / 1000)
        report["rows"].append(row)
        lines.append(f"{name:22s} smoother {row['smoother_ms']:8.1f} ms | criterion {row['criterion_ms']:8.1f} ms | "
                     f"step {row['step_ms']:8.1f} ms | {row['patches_per_s']:.1f} patches/s")
        print(lines[-1], flush=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60)
    lines += [f"profile of 5 steps, {args.variants.split(',')[-1]}, sorted by {sort}:", table]
    (out / "profile_step.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "profile_step.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
