"""FLOP counting (csgis.models.smoother) against the layer list and the published figures; the
benchmark harness (scripts/benchmark.py): variants, the quick runner."""
import json
import re

import pytest
import torch

from benchmark import (BenchmarkOptions, flop_report, format_table, parse_variant, peak_for_device_name,
                       run_benchmarks, save_report, skip_reason)
from csgis.models.smoother import Smoother, architecture_flops, counted_flops


def tiny_conv_macs_per_pixel(w: int) -> int:
    """Multiply-adds per pixel of Smoother(w, 1, 1, 1), written out layer by layer (3x3 convs)."""
    stem = 3 * w
    hdc = 3 * w * w                      # one HDC block: three w->w convs
    descriptor = stem + hdc
    edge = w * w + w * w + w * 1
    coarse = (w + 1) * w + hdc + w * w + w * 3
    refine = (w + 4) * w + hdc + w * 3
    return 9 * (descriptor + edge + coarse + refine)


def test_flop_counter_equals_layer_by_layer_count_for_tiny_model():
    torch.manual_seed(0)
    model = Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1)
    expected = 2 * tiny_conv_macs_per_pixel(4) * 16 * 16
    assert tiny_conv_macs_per_pixel(4) == 2556  # 9 x (12+48 + 36 + 96 + 92)
    assert counted_flops(model, size=16) == expected
    assert architecture_flops(4, 1, 1, 1)["conv"] * 16 * 16 == expected
    # Zero padding does not change the count (the counter uses output size): any size, same per pixel.
    assert counted_flops(model, size=8) * 4 == expected


def test_default_model_matches_spec_flops_and_parameters():
    n12 = architecture_flops(64, 12, 3, 6)
    n20 = architecture_flops(64, 20, 3, 6)
    assert n12["conv"] == 5_030_784
    assert abs(n12["conv"] / 5.03e6 - 1) < 0.01
    assert n20["conv"] == 6_800_256
    assert abs(n20["conv"] / 6.8e6 - 1) < 0.01
    # Elementwise work the counter leaves out is well under 1% of the convolutions.
    assert n12["elementwise"] / n12["conv"] < 0.01
    report = flop_report({"width": 64, "descriptor_blocks": 12, "coarse_blocks": 3, "refine_blocks": 6}, size=8)
    assert report["counted_mflop_per_pixel"] == pytest.approx(5.030784, abs=1e-9)
    assert report["within_1pct_of_published"] is True
    assert report["parameters"] == 2_528_519 and report["parameters_match_published"] is True


def test_variants_and_peaks():
    v = parse_variant("compile+bf16+channels_last")
    assert (v.compile, v.amp, v.channels_last, v.amp_dtype) == (True, "bf16", True, torch.bfloat16)
    assert parse_variant("eager") == parse_variant("fp32")
    for bad in ("bf16+fp16", "fast", "bf16+bf16"):
        with pytest.raises(ValueError):
            parse_variant(bad)
    assert skip_reason(parse_variant("fp16"), torch.device("cpu")).startswith("fp16 autocast")
    assert skip_reason(parse_variant("bf16"), torch.device("cpu")) is None
    # The most specific name wins: the PCIe H100 and the L40S are not taken for the SXM H100 / the L4.
    assert peak_for_device_name("NVIDIA H100 PCIe") != peak_for_device_name("NVIDIA H100 80GB HBM3")
    assert peak_for_device_name("NVIDIA L40S") != peak_for_device_name("NVIDIA L4")
    assert peak_for_device_name("Some Future GPU") is None


def test_quick_runner_tiny_model_report(tmp_path):
    opts = BenchmarkOptions(device="cpu", width=4, blocks=(1, 1, 1), quick=True, sizes=[16],
                            variants=["eager", "channels_last", "fp16"], train_batch=2, train_patch=16,
                            train_warmup=1, train_steps=1, infer_warmup=1, infer_repeats=1, flop_size=16)
    report = run_benchmarks(opts, log=lambda line: None)
    assert set(report) >= {"environment", "arch", "settings", "flops", "train", "infer", "tiled", "train_flops_per_patch"}
    env = report["environment"]
    assert set(env) >= {"device", "device_name", "torch", "cpu_count", "git_commit", "load_average_start",
                        "load_average_end"}
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert report["flops"]["counted_mflop_per_pixel"] == pytest.approx(2 * 2556 / 1e6)
    train = {row["variant"]: row for row in report["train"]}
    infer = {row["variant"]: row for row in report["infer"]}
    assert set(train) == set(infer) == {"eager", "channels_last", "fp16"}
    assert train["eager"]["ratio_to_eager"] == 1.0 and infer["eager"]["ratio_to_eager"] == 1.0
    assert train["eager"]["loss_step1_diff_vs_eager"] == 0.0 and infer["eager"]["max_abs_diff_vs_eager"] == 0.0
    for rows in (train, infer):
        assert rows["fp16"]["status"].startswith("skipped")
        assert rows["channels_last"]["status"] == "ok" and rows["channels_last"]["ratio_to_eager"] > 0
    assert train["eager"]["patches_per_s"] > 0 and train["eager"]["batch"] == 2
    assert train["channels_last"]["loss_step1_diff_vs_eager"] < 1e-4
    assert infer["eager"]["mp_per_s"] == pytest.approx(16 * 16 / infer["eager"]["seconds"] / 1e6)
    assert infer["channels_last"]["max_abs_diff_vs_eager"] < 1e-5
    assert infer["eager"]["fraction_of_bf16_peak"] is None  # CPU: no peak known
    path = tmp_path / "bench.json"
    save_report(report, path)
    assert json.loads(path.read_text())["train"][0]["variant"] == "eager"
    table = format_table(report)
    assert "| eager | 16x16 |" in table and "skipped: fp16" in table
    # The published network's row compares with the paper's figure (only GPU runs used to reach it).
    report["flops"] = flop_report({"width": 64, "descriptor_blocks": 12, "coarse_blocks": 3, "refine_blocks": 6}, 8)
    report["arch"] = {"width": 64, "descriptor_blocks": 12, "coarse_blocks": 3, "refine_blocks": 6}
    assert re.search(r"\| 2,528,519 \| 5\.0308 \| 5\.0308 \| [0-9.]+ \| [+-][0-9.]+% \|", format_table(report))
