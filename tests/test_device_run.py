"""scripts/device/run.sh, the prepared GPU window, as its dry run on the CPU: every step end to end
in its time budget, and what it returns fits what the GPU machine gives back."""
import json
import os
import subprocess
import sys

import pytest

BUDGET = 120


@pytest.mark.slow
def test_the_device_run_dry_runs_every_step_within_its_budget(repo_root, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "device" / "run.sh"), str(out)], capture_output=True,
                          text=True, timeout=BUDGET + 180,
                          env=dict(os.environ, CSGIS_DEVICE="cpu", CSGIS_BUDGET_S=str(BUDGET), OMP_NUM_THREADS="1",
                                   CSGIS_BENCHMARK="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["elapsed_s"] <= BUDGET + 30
    assert summary["environment"]["torch"] and summary["environment"]["device"] == "cpu"
    tests = summary["cuda_tests"]
    assert tests["status"] == 0 and tests.get("passed", 0) >= 5 and not tests["failures"]
    bench = summary["benchmark"]
    assert bench["status"] == 0 and any(r.startswith("train eager") for r in bench["rows"])
    report = json.loads((out / "benchmark.json").read_text())
    assert report["pipeline"]["seconds_per_batch"] > 0 and report["train"][0]["status"] == "ok"
    training = summary["training"]
    assert training["steps"] > 0 and training["stopped_by_time"] and training["weights"] == "final.pth"
    assert 0 < training["test"]["model"]["psnr_paper"] < 100
    # ... and on the held-out benchmark, per blend (4 images in the dry run: --max-images 4).
    assert summary["data"]["heldout"]["status"] == 0 and summary["data"]["rich"]["status"] == 0
    assert any(o.endswith("/rich") and o.startswith("data.root=") for o in training["overrides"])
    heldout = training["test"]["heldout"]
    assert heldout["status"] == 0 and heldout["model"]["all"]["n"] == heldout["input"]["all"]["n"] > 0
    assert set(heldout["model"]) <= {"all", "gray", "colour"} and 0 < heldout["model"]["all"]["psnr_paper"] < 100
    # ... and on its validation part, where a window's weights are compared with the shipped file.
    val = training["test"]["heldout_val"]
    assert val["status"] == 0 and val["model"]["all"]["n"] > 0 and val["model"] != heldout["model"]
    # What the GPU machine gives back: at most 8 files, each under 16 MiB, no folders.
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() and f.stat().st_size < 16 * 2**20 for f in files), files
    assert {f.name for f in files} >= {"summary.json", "cuda_tests.log", "benchmark.json", "final.pth", "train.log",
                                       "heldout_metrics.json"}
    from csgis.checkpoint import load_smoother
    assert load_smoother(out / "final.pth").arch["width"] == 8


def test_the_device_path_needs_no_opencv_contrib(repo_root, tmp_path, demo_root):
    """The GPU machine has opencv-python-headless, not the contrib build: building the demo, rich
    and held-out data, drawing online-blended samples (configs/device.yaml), training with
    data.pipeline=device and scoring must not touch cv2.ximgproc."""
    script = tmp_path / "no_contrib.py"
    script.write_text(f"""
import sys, cv2
class Missing:
    def __getattr__(self, name):
        raise AttributeError("cv2.ximgproc is not installed here (opencv-python-headless)")
cv2.ximgproc = Missing()
sys.modules["cv2.ximgproc"] = None
import make_demo_data
assert make_demo_data.main(["--out", {str(tmp_path / "data")!r}, "--size", "tiny", "--workers", "1"]) == 0
import make_rich_data, make_heldout
assert make_rich_data.main(["--out", {str(tmp_path / "rich")!r}, "--size", "tiny", "--workers", "1"]) == 0
assert make_heldout.main(["--out", {str(tmp_path / "heldout")!r}, "--size", "tiny"]) == 0
from csgis.config import load_config
from csgis.data.datasets import build_dataset
device = load_config({str(repo_root / "configs" / "device.yaml")!r},
                     ["data.root=" + {str(tmp_path / "rich")!r}, "data.textures=" + {str(tmp_path / "rich" / "textures")!r}])
online = build_dataset(device.data, "train", True)
assert [tuple(online[i]["input"].shape) for i in range(2)] == [(3, 128, 128)] * 2
sys.path.insert(0, {str(repo_root / "tests")!r})
from _helpers import tiny_config
from csgis.train import train
from csgis import evaluation
cfg = tiny_config({str(tmp_path / "data")!r}, {str(tmp_path)!r}, "run", data={{"pipeline": "device", "num_workers": 0}},
                  train={{"epochs": 1}})
train(cfg)
report = evaluation.evaluate_model({str(tmp_path / "run" / "models" / "latest.pth")!r}, {str(tmp_path / "data")!r},
                                   "test", progress=False)
print("scored", report["methods"]["model"]["n"])
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=repo_root,
                          env=dict(os.environ, OMP_NUM_THREADS="1",
                                   PYTHONPATH=os.pathsep.join([str(repo_root / "dataset_utils"), str(repo_root)])))
    assert proc.returncode == 0 and "scored 4" in proc.stdout, proc.stderr[-3000:]


def test_profile_step_splits_a_training_step_into_smoother_and_criterion(repo_root, tmp_path):
    """scripts/device/profile_step.py (the host-bound finding in docs/BENCHMARKS.md) on a tiny network."""
    sys.path.insert(0, str(repo_root / "scripts" / "device"))
    import profile_step
    assert profile_step.main([str(tmp_path), "--device", "cpu", "--width", "8", "--blocks", "1", "1", "1",
                              "--patch", "32", "--batch", "2", "--warmup", "1", "--repeats", "1",
                              "--variants", "eager,channels_last"]) == 0
    report = json.loads((tmp_path / "profile_step.json").read_text())
    assert report["arch"]["width"] == 8 and [r["variant"] for r in report["rows"]] == ["eager", "channels_last"]
    for row in report["rows"]:
        assert 0 < row["smoother_ms"] and 0 < row["criterion_ms"] and 0 < row["step_ms"]
        assert row["patches_per_s"] == pytest.approx(2 / (row["step_ms"] / 1000))
    text = (tmp_path / "profile_step.txt").read_text()
    assert "profile of 5 steps, channels_last" in text and "aten::" in text


def test_a_gpu_window_goes_on_from_the_shipped_weights(repo_root, tmp_path, monkeypatch):
    """Unset CSGIS_TRAIN_OVERRIDES: the window fine-tunes weights/rich_smoother.pth (an architecture
    configs/device.yaml builds); '' trains from scratch; the dry run's tiny network never inits."""
    sys.path.insert(0, str(repo_root / "scripts" / "device"))
    import run
    from csgis.checkpoint import load_smoother
    from csgis.config import load_config
    monkeypatch.delenv("CSGIS_TRAIN_OVERRIDES", raising=False)
    cmd = run.train_command("python", "cuda", False, tmp_path / "data", tmp_path)
    inits = [o for o in cmd if o.startswith("model.init=")]
    assert inits == [f"model.init={run.CONTINUE[0]}"] and f"train.lr={run.CONTINUE[1]}" in cmd
    device = load_config(repo_root / "configs" / "device.yaml")
    assert load_smoother(repo_root / run.CONTINUE[0]).arch == {
        k: getattr(device.model, k) for k in ("width", "descriptor_blocks", "coarse_blocks", "refine_blocks")}
    assert not any(o.startswith("model.init=") for o in run.train_command("python", "cpu", True, tmp_path, tmp_path))
    monkeypatch.setenv("CSGIS_TRAIN_OVERRIDES", "")
    assert not any(o.startswith("model.init=") for o in run.train_command("python", "cuda", False, tmp_path, tmp_path))


def test_the_learning_rate_drops_within_the_window(repo_root, tmp_path, monkeypatch):
    """A window's schedule is fitted to its training seconds: epochs at EPOCH_S each, two drops;
    CSGIS_EPOCH_S and overrides in CSGIS_TRAIN_OVERRIDES change it, the dry run has none."""
    sys.path.insert(0, str(repo_root / "scripts" / "device"))
    import run
    from csgis.config import load_config
    assert run.fitted_schedule(400.0, 20.0) == ["train.epochs=18", "train.milestones=[9,13]", "train.gamma=0.3"]
    assert run.fitted_schedule(10.0, 20.0)[0] == "train.epochs=2"  # never fewer than two epochs
    monkeypatch.delenv("CSGIS_EPOCH_S", raising=False)
    monkeypatch.setenv("CSGIS_TRAIN_OVERRIDES", "train.lr=3e-4")
    cmd = run.train_command("python", "cuda", False, tmp_path / "data", tmp_path, 400.0)
    cfg = load_config(repo_root / "configs" / "device.yaml", cmd[4:])
    assert (cfg.train.epochs, cfg.train.milestones, cfg.train.gamma, cfg.train.lr) == (18, [9, 13], 0.3, 3e-4)
    monkeypatch.setenv("CSGIS_EPOCH_S", "40")
    monkeypatch.setenv("CSGIS_TRAIN_OVERRIDES", "train.milestones=[]")
    cfg = load_config(repo_root / "configs" / "device.yaml",
                      run.train_command("python", "cuda", False, tmp_path / "data", tmp_path, 400.0)[4:])
    assert (cfg.train.epochs, cfg.train.milestones) == (9, [])  # the override wins
    monkeypatch.setenv("CSGIS_TRAIN_OVERRIDES", "")
    dry = run.train_command("python", "cpu", True, tmp_path, tmp_path, 400.0)
    assert not any(o.startswith(("train.epochs=", "train.milestones=")) for o in dry)
