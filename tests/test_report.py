"""scripts/make_report.py end to end on the tiny demo data: trains, scores, tabulates, draws."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

import make_report
from csgis.io import read_image


def test_mean_std_and_verdict():
    assert make_report._mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert make_report._mean_std([5.0]) == (5.0, 0.0)
    base = {"filters": {"l0": {"metrics": {k: {"mean": 0.5} for k in make_report.METRICS}}}}
    win = {k: (0.6, 0.0) for k in make_report.METRICS}
    assert make_report.beats_all(win, base) == (True, [])
    lose = dict(win, ssim_standard=(0.5, 0.0))  # a tie is not a win
    ok, losses = make_report.beats_all(lose, base)
    assert not ok and losses == ["l0 ssim_standard (0.5000 >= 0.5000)"]


def test_image_groups():
    assert make_report.image_group("photo0003__grass20", {"grass20"}) == ["photo", "test-only textures"]
    assert make_report.image_group("scene0012__dots01", {"grass20"}) == ["scene", "seen textures"]
    assert make_report.image_group("0001", {"grass20"}) == []
    rows = [{"name": "scene1__a", "method": "m", "psnr_paper": 20.0, "ssim_paper": 0.5},
            {"name": "scene2__b", "method": "m", "psnr_paper": 30.0, "ssim_paper": 0.7},
            {"name": "photo1__b", "method": "m", "psnr_paper": 10.0, "ssim_paper": 0.1},
            {"name": "photo1__b", "method": "other", "psnr_paper": 99.0, "ssim_paper": 0.9}]
    groups = make_report.by_group(rows, "m", {"b"})
    assert groups["scene"] == {"n": 2, "psnr_paper": 25.0, "ssim_paper": pytest.approx(0.6)}
    assert groups["photo"]["n"] == 1 and groups["test-only textures"]["psnr_paper"] == 20.0


def test_report_trains_scores_and_writes(demo_root, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "device": "cpu", "deterministic": True,
        "model": {"width": 4, "descriptor_blocks": 1, "coarse_blocks": 1, "refine_blocks": 1},
        "loss": {"vgg_weights": "random", "segmentation": 0.0},
        "data": {"root": str(demo_root), "patch_size": 32, "num_workers": 0, "val_crop": 32},
        "train": {"epochs": 1, "batch_size": 2, "max_iters_per_epoch": 2, "val_every": 1, "milestones": [1],
                  "gamma": 0.5, "save_every": 1, "freeze_bn": True},
    }))
    exp, out = tmp_path / "exp", tmp_path / "docs"
    argv = ["--config", str(config), "--data", str(demo_root), "--seeds", "0", "1",
            "--ablations", "baseline", "full", "full_2x", "--experiments", str(exp), "--out", str(out),
            "--workers", "1", "--grid-rows", "2", "--filters", "l0,fgs"]
    code = make_report.main(argv)
    result = json.loads((out / "results.json").read_text())
    # Two verdicts: the full model at the ablation budget, and the longest-trained one (here full_2x),
    # which also decides the exit status.
    longest = result["longest_full"]
    assert longest["run"] == "full_2x_s0" and longest["steps"] == 4 and not longest["shipped"]
    assert code == (0 if longest["beats_all_classical"] else 1)
    # full_2x: first seed only, the config's epochs and LR milestones doubled.
    assert set(result["runs"]) == {"baseline_s0", "full_s0", "baseline_s1", "full_s1", "full_2x_s0"}
    for name, run in result["runs"].items():
        assert run["train"]["steps"] == (4 if name == "full_2x_s0" else 2) and run["train"]["train_seconds"] > 0
    # Training length: full_2x's checkpoint after the 1x budget (before its LR decay at epoch 2), then
    # the final weights of the 1x and 2x runs, with the learning rate each was left at.
    curve = [{k: row[k] for k in ("run", "checkpoint", "steps", "lr", "final")} for row in result["training_length"]]
    assert curve == [{"run": "full_2x", "checkpoint": "epoch_0001", "steps": 2, "lr": 1e-3, "final": False},
                     {"run": "full", "checkpoint": "latest", "steps": 2, "lr": 5e-4, "final": True},
                     {"run": "full_2x", "checkpoint": "latest", "steps": 4, "lr": 5e-4, "final": True}]
    assert result["training_length"][2]["psnr_paper"] == result["runs"]["full_2x_s0"]["test"]["psnr_paper"]["mean"]
    # The table's means are the means over seeds of the per-run test scores.
    for ablation in ("baseline", "full"):
        values = [result["runs"][f"{ablation}_s{s}"]["test"]["psnr_paper"]["mean"] for s in (0, 1)]
        mean, std = result["ablations"][ablation]["psnr_paper"]
        assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    # Seeds give different networks, so different scores.
    assert result["runs"]["full_s0"]["test"] != result["runs"]["full_s1"]["test"]
    text = (out / "RESULTS.md").read_text()
    assert "| input (textured) |" in text and "| L0 (" in text and "| FGS (" in text and "| CSGIS-Net full" in text
    assert set(result["baselines"]) == {"input", "l0", "fgs"}
    assert ("(2 steps, seed mean) beats every classical smoother" in text) == result["full_beats_all_classical"]
    assert ("one seed), the full model beats every" in text) == longest["beats_all_classical"]
    assert "![comparison grid](results_grid.png)" in text and "What differs from the paper" in text
    # Per-group means: each image is in one kind and one texture group, and the n-weighted group
    # means give back the overall means (for the ablations, of the seed means).
    groups = result["by_image_group"]
    assert {"input", "L0", "FGS", "baseline", "full", "full, training split", "full_2x, training split"} <= set(groups)
    overall = {"input": result["baselines"]["input"]["psnr_paper"]["mean"],
               "FGS": result["baselines"]["fgs"]["psnr_paper"]["mean"],
               "full": result["ablations"]["full"]["psnr_paper"][0]}
    for label, want in overall.items():
        cells = groups[label]
        kinds = [g for g in cells if "textures" not in g]
        textures = [g for g in cells if "textures" in g]
        assert kinds and textures
        for part in (kinds, textures):
            assert sum(cells[g]["n"] for g in part) == result["baselines"]["input"]["n"]
            weighted = sum(cells[g]["n"] * cells[g]["psnr_paper"] for g in part) / result["baselines"]["input"]["n"]
            assert weighted == pytest.approx(want)
    assert "### By kind of test image" in text and "### Training length" in text
    grid = read_image(out / "results_grid.png")
    # title bar + 2 rows; input, the 2 classical smoothers, ours, GT = 5 columns of 200 + 2 * 2 px
    assert grid.shape == (22 + 2 * 204, 5 * 204, 3)
    # The grid shows the longest-trained full model, whose test predictions are kept.
    assert (exp / "full_2x_s0" / "test_predictions_latest").is_dir() and (exp / "baselines.json").is_file()
    assert not (exp / "full_s0" / "test_predictions_latest").exists()
    assert "ours is `full_2x_s0`, the longest-trained full model (4 steps)" in text

    # A second call trains nothing and reads the caches back: the same report. Given a copy of
    # full_2x's final weights as the shipped smoother, it names that run as the shipped one.
    shipped = tmp_path / "shipped.pth"
    shipped.write_bytes((exp / "full_2x_s0" / "models" / "latest.pth").read_bytes())
    capsys.readouterr()
    assert make_report.main(argv + ["--no-train", "--shipped", str(shipped)]) == code
    assert "$ " not in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["ablations"] == result["ablations"] and again["baselines"] == result["baselines"]
    assert again["longest_full"]["shipped"] and f"the shipped `{shipped}`" in (out / "RESULTS.md").read_text()

    # The config file edited after the runs (a loss weight of the full model): the finished full_s0
    # no longer matches, so it is reported as missing, never mixed in silently...
    edited = yaml.safe_load(config.read_text())
    edited["loss"]["contrastive"] = 0.5  # baseline pins it to 0, so only full is affected
    config.write_text(yaml.safe_dump(edited))
    short = ["--config", str(config), "--data", str(demo_root), "--seeds", "0", "--ablations", "baseline", "full",
             "--experiments", str(exp), "--out", str(out), "--workers", "1", "--grid-rows", "2", "--filters", "l0,fgs"]
    assert make_report.main(short + ["--no-train"]) == 1
    err = capsys.readouterr().err
    assert "full_s0 was trained with another config" in err and "loss.contrastive: 1.0 -> 0.5" in err
    stale = json.loads((out / "results.json").read_text())
    assert stale["failed"] == ["full_s0"] and set(stale["runs"]) == {"baseline_s0"}
    # ... and --retrain-stale retrains it after moving the old run aside.
    make_report.main(short + ["--retrain-stale"])
    retrained = json.loads((out / "results.json").read_text())
    assert retrained["failed"] == [] and set(retrained["runs"]) == {"baseline_s0", "full_s0"}
    assert yaml.safe_load((exp / "full_s0" / "config.yaml").read_text())["loss"]["contrastive"] == 0.5
    assert [p.name.startswith("full_s0_archived_") for p in exp.iterdir()].count(True) == 1


def test_run_overrides_and_staleness_ignore_only_the_name():
    from csgis.config import load_config, to_dict
    demo = ROOT / "configs" / "demo.yaml"
    cfg = load_config(demo)
    args = make_report.parse_args(["--config", str(demo), "--experiments", "exp"])
    # The λs x 10 row scales the config's semantic weight and nothing else.
    over = make_report.run_overrides("full_seg10x", 1, "exp", cfg)
    assert f"loss.segmentation={cfg.loss.segmentation * 10:g}" in over and "seed=1" in over
    assert load_config(demo, over).loss.segmentation == pytest.approx(cfg.loss.segmentation * 10)
    # A run trained under another name with the same settings is the same run (e.g. a folder that
    # was renamed); any other difference makes it stale.
    same = to_dict(load_config(demo, over))
    same["name"] = "full_s1"
    assert make_report.stale_keys({"config": same}, args, "full_seg10x", 1, cfg) == []
    other = to_dict(load_config(demo, over))
    other["loss"]["segmentation"] = cfg.loss.segmentation
    assert make_report.stale_keys({"config": other}, args, "full_seg10x", 1, cfg) == [
        f"loss.segmentation: {cfg.loss.segmentation!r} -> {cfg.loss.segmentation * 10!r}"]
