"""Training (csgis.train) on CPU with a tiny smoother: artefacts, exact resume, interrupts, failures, segmentation."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from _helpers import TINY_ARCH, assert_same_tensors, tiny_config
from csgis.checkpoint import load_segmenter, load_smoother, load_training_state
from csgis.config import load_config, to_dict
from csgis.device import amp_dtype
from csgis.metrics import confusion_matrix, segmentation_scores
from csgis.train import (NonFiniteLossError, RunExistsError, SegmenterCheckpointError, TrainingInterrupted, train,
                         train_step)
from csgis.train.state import capture_rng_state, restore_rng_state, seed_everything
from csgis.train.tasks import freeze_batchnorm

ROOT = Path(__file__).resolve().parents[1]


def assert_same_optimizer(a: dict, b: dict):
    for index, state in a["state"].items():
        assert_same_tensors(state, b["state"][index], f"optimizer state {index}")
    assert a["param_groups"] == b["param_groups"]


# ----------------------------------------------------------------------------- the full run
def test_two_epoch_run_writes_every_artefact_and_lowers_the_loss(demo_root, tmp_path):
    cfg = tiny_config(demo_root, tmp_path, "full_run")
    result = train(cfg)
    run = tmp_path / "full_run"
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2] and result["global_step"] == 16  # 32 samples / 4, 2 epochs
    assert history[1]["train"]["total"] < history[0]["train"]["total"]
    assert history[1]["train"]["l1"] < history[0]["train"]["l1"]
    assert {"l1", "ssim", "edge", "contrastive", "contrastive_pixel", "contrastive_vgg", "total"} <= set(history[0]["train"])
    # Both metric conventions; PSNRs agree, SSIMs differ (zero-padded vs valid window).
    val = history[1]["val"]
    assert set(val) == {"psnr_paper", "ssim_paper", "psnr_standard", "ssim_standard"}
    assert abs(val["psnr_paper"] - val["psnr_standard"]) < 1e-3 and 0 < val["ssim_paper"] < 1
    # The MultiStepLR halved the learning rate after epoch 1.
    assert history[0]["lr"] == pytest.approx(1e-3) and history[1]["lr"] == pytest.approx(5e-4)

    for rel in ("config.yaml", "train.log", "models/latest.pth", "models/best.pth", "models/epoch_0001.pth",
                "models/epoch_0002.pth", "training_states/latest.state"):
        assert (run / rel).is_file(), rel
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert to_dict(load_config(run / "config.yaml")) == to_dict(cfg)
    log = (run / "train.log").read_text()
    assert "val epoch 2 | PSNR paper" in log and "SSIM standard" in log and "step 16" in log

    best = load_smoother(run / "models" / "best.pth")
    assert best.arch == TINY_ARCH
    assert not best.training
    best_raw = torch.load(run / "models" / "best.pth", weights_only=True)
    assert best_raw["kind"] == "smoother" and best_raw["epoch"] == result["best_epoch"]
    assert best_raw["metric"] == pytest.approx(max(h["val"]["ssim_paper"] for h in history))
    latest = load_smoother(run / "models" / "latest.pth")
    state = load_training_state(run / "training_states" / "latest.state")
    assert_same_tensors(latest.state_dict(), state["model"], "latest.pth vs state")
    assert state["epoch"] == 2 and state["batch_in_epoch"] == 0 and state["global_step"] == 16
    assert {"python", "numpy", "torch", "cuda", "loss"} <= set(state["rng"])
    assert state["sampler"]["epoch"] == 2 and state["config"] == to_dict(cfg)
    assert state["scheduler"]["last_epoch"] == 2 and state["best_metric"] == pytest.approx(best_raw["metric"])

    # A second fresh start in the same folder is refused; --overwrite moves the old run aside.
    with pytest.raises(RunExistsError, match="already holds a run.*--resume.*--overwrite"):
        train(cfg)
    again = train(tiny_config(demo_root, tmp_path, "full_run", train={"epochs": 0}), overwrite=True)
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("full_run_archived_")]
    assert len(archived) == 1 and (archived[0] / "models" / "best.pth").is_file()
    assert again["global_step"] == 0 and not (run / "models" / "latest.pth").exists()


# ----------------------------------------------------------------------------- exact resume
def test_resume_is_exact_at_epoch_end_and_mid_epoch(demo_root, tmp_path, segmenter_file):
    # Augmentation (crop/flip/rotation/jitter from torch's RNG), the contrastive coin (loss
    # generator) and a release-mode segmenter (BN in train mode: its running stats change) all
    # take part; any RNG or state not carried over would change the weights.
    extra = {"loss": {"segmentation": 1.0}, "segmenter": {"checkpoint": str(segmenter_file), "eval_mode": False}}
    straight = train(tiny_config(demo_root, tmp_path, "straight", **extra))

    train(tiny_config(demo_root, tmp_path, "split", train={"epochs": 1}, **extra))
    split = train(tiny_config(demo_root, tmp_path, "split", **extra), resume="auto")

    def stop_at_step_3(ctx):
        if ctx["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the engine finishes the step and saves a state

    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_config(demo_root, tmp_path, "interrupted", **extra), step_hook=stop_at_step_3)
    assert info.value.exit_code == 130
    mid = load_training_state(tmp_path / "interrupted" / "training_states" / "latest.state")
    assert (mid["epoch"], mid["batch_in_epoch"], mid["global_step"]) == (0, 3, 3)
    assert mid["loss_segmenter"] is not None
    interrupted = train(tiny_config(demo_root, tmp_path, "interrupted", **extra), resume="auto")

    states = {name: load_training_state(tmp_path / name / "training_states" / "latest.state")
              for name in ("straight", "split", "interrupted")}
    reference = states["straight"]
    for name in ("split", "interrupted"):
        assert_same_tensors(states[name]["model"], reference["model"], f"{name} model")
        assert_same_tensors(states[name]["loss_segmenter"], reference["loss_segmenter"], f"{name} segmenter")
        assert_same_optimizer(states[name]["optimizer"], reference["optimizer"])
        assert torch.equal(states[name]["rng"]["loss"], reference["rng"]["loss"])
        assert torch.equal(states[name]["rng"]["torch"], reference["rng"]["torch"])
        assert states[name]["global_step"] == reference["global_step"] == 16
    assert split["history"][-1]["train"] == pytest.approx(straight["history"][-1]["train"], rel=1e-6)
    assert interrupted["history"][-1]["train"] == pytest.approx(straight["history"][-1]["train"], rel=1e-6)
    # The contrastive coin was drawn once per step (16 draws from the loss generator seeded with the
    # run's seed) and came up both ways, and the weights kept moving in epoch 2.
    coin = torch.Generator().manual_seed(1)
    flips = [torch.rand((), generator=coin).item() < 0.5 for _ in range(16)]
    assert torch.equal(coin.get_state(), reference["rng"]["loss"]) and any(flips) and not all(flips)
    after_epoch_1 = load_smoother(tmp_path / "straight" / "models" / "epoch_0001.pth").state_dict()
    assert not torch.equal(after_epoch_1["stem.weight"], reference["model"]["stem.weight"])
    log = (tmp_path / "interrupted" / "train.log").read_text()
    assert "SIGINT: stopped after step 3" in log and "resumed from" in log


def test_metrics_jsonl_holds_one_row_per_finished_epoch_across_resumes(demo_root, tmp_path):
    """metrics.jsonl is what reports read: exactly the finished epochs, also after a crash that wrote a
    row but not its state, and written from the state's history for a run from before the file existed."""
    from csgis.checkpoint import save_training_state
    from csgis.train import read_metrics
    run = tmp_path / "rows"
    first = train(tiny_config(demo_root, tmp_path, "rows", train={"epochs": 1}))
    rows = read_metrics(run / "metrics.jsonl")
    assert rows == first["history"] and [r["epoch"] for r in rows] == [1] and "val" in rows[0]
    assert rows[0]["step"] == 8 and rows[0]["lr"] == pytest.approx(1e-3) and rows[0]["seconds"] > 0
    # A row beyond the state (the process died between the two writes) is dropped on resume.
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 16, "lr": 0.0005, "seconds": 1.0, "train": {}}\n')
    second = train(tiny_config(demo_root, tmp_path, "rows", train={"epochs": 2}), resume="auto")
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and rows == second["history"] and rows[1]["train"]
    # A run of the earlier code: rows only in the state's history, no metrics.jsonl.
    state = load_training_state(run / "training_states" / "latest.state")
    save_training_state(run / "training_states" / "latest.state", dict(state, history=rows))
    (run / "metrics.jsonl").unlink()
    train(tiny_config(demo_root, tmp_path, "rows", train={"epochs": 2}), resume="auto")  # nothing left to train
    assert read_metrics(run / "metrics.jsonl") == rows


def test_rng_state_round_trip():
    generator = torch.Generator().manual_seed(4)
    saved = capture_rng_state({"loss": generator})
    import random
    import numpy as np
    first = (random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=generator)))
    seed_everything(99)
    generator.manual_seed(99)
    restore_rng_state(saved, {"loss": generator})
    again = (random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=generator)))
    assert first == again


# ----------------------------------------------------------------------------- failures
def _loader_breaks_at_batch(monkeypatch, batch: int, signum: int | None) -> None:
    """The training loader raises EOFError at its `batch`-th batch, after `signum` reached the process:
    what a SIGTERM to the whole process group looks like when a worker leaves while the main
    process is receiving its batch's shared memory (a race; the CI failure of stop 30)."""
    from torch.utils.data import dataloader
    original = dataloader._SingleProcessDataLoaderIter._next_data
    calls = {"n": 0}

    def breaking(self):
        calls["n"] += 1
        if calls["n"] == batch:
            if signum is not None:
                os.kill(os.getpid(), signum)
            raise EOFError
        return original(self)

    monkeypatch.setattr(dataloader._SingleProcessDataLoaderIter, "_next_data", breaking)


def test_a_loader_error_after_a_signal_is_the_interrupt_and_saves_a_state(demo_root, tmp_path, monkeypatch):
    _loader_breaks_at_batch(monkeypatch, 4, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_config(demo_root, tmp_path, "eof"))
    assert info.value.exit_code == 143
    state = load_training_state(tmp_path / "eof" / "training_states" / "latest.state")
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 3, 3)


def test_a_worker_leaving_without_a_signal_is_one_dataset_error(demo_root, tmp_path, monkeypatch):
    from csgis.data import DatasetError
    _loader_breaks_at_batch(monkeypatch, 2, None)
    with pytest.raises(DatasetError, match="worker left while sending a batch.*num_workers=0"):
        train(tiny_config(demo_root, tmp_path, "eof"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(demo_root, tmp_path, monkeypatch):
    cfg = tiny_config(demo_root, tmp_path, "nan", train={"epochs": 1})
    train(cfg)
    run = tmp_path / "nan"
    good_latest = (run / "models" / "latest.pth").read_bytes()
    good_state = (run / "training_states" / "latest.state").read_bytes()

    from csgis.losses import CSGISLoss
    original = CSGISLoss.forward
    calls = {"n": 0}

    def poisoned(self, out, batch):
        total, parts = original(self, out, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            total = total * float("nan")
            parts = dict(parts, total=total.detach())
        return total, parts

    monkeypatch.setattr(CSGISLoss, "forward", poisoned)
    with pytest.raises(NonFiniteLossError) as info:
        train(tiny_config(demo_root, tmp_path, "nan", train={"epochs": 2}), resume="auto")
    message = str(info.value)
    assert "non-finite loss at step 11" in message and "epoch 2" in message
    assert "l1=" in message and "contrastive=" in message and "total=nan" in message
    assert str(run / "models" / "latest.pth") in message
    assert (run / "models" / "latest.pth").read_bytes() == good_latest
    assert (run / "training_states" / "latest.state").read_bytes() == good_state
    assert not (run / "models" / "epoch_0002.pth").exists()
    assert "non-finite loss at step 11" in (run / "train.log").read_text()


def test_missing_segmenter_checkpoint_is_one_clear_error(demo_root, tmp_path):
    cfg = tiny_config(demo_root, tmp_path, "noseg", loss={"segmentation": 1.0},
                      segmenter={"checkpoint": str(tmp_path / "nowhere.pth")})
    with pytest.raises(SegmenterCheckpointError) as info:
        train(cfg)
    message = str(info.value)
    assert str(tmp_path / "nowhere.pth") in message
    assert "best_deeplabv3plus_mobilenet_voc_os16.pth" in message and "configs/demo_segmenter.yaml" in message


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from csgis.train import train
    from csgis.config import from_dict
    import yaml
    cfg = from_dict(yaml.safe_load(open(sys.argv[1])))
    writes = {{"latest": 0}}
    real_fsync, real_save = os.fsync, torch.save

    def die_half_written(fd):
        # The second write of models/latest.pth (epoch 2): truncate the file being written to
        # half its size and die on the spot, as if SIGKILLed in the middle of the write.
        target = os.readlink(f"/proc/self/fd/{{fd}}")
        if "latest.pth" in os.path.basename(target):
            writes["latest"] += 1
            if writes["latest"] == 2:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                os._exit(9)
        real_fsync(fd)

    def save(obj, f, *args, **kwargs):
        # Same for a direct torch.save to the file (should checkpoint.py ever write that way).
        if isinstance(f, (str, os.PathLike)) and "latest.pth" in os.path.basename(os.fspath(f)):
            writes["latest"] += 1
            if writes["latest"] == 2:
                open(f, "wb").write(b"half")
                os._exit(9)
        return real_save(obj, f, *args, **kwargs)

    os.fsync, torch.save = die_half_written, save
    train(cfg)
    sys.exit(0)
""")


def test_process_killed_while_writing_a_checkpoint_leaves_latest_loadable(demo_root, tmp_path):
    cfg = tiny_config(demo_root, tmp_path, "killed", train={"save_every": 100})
    config_file = tmp_path / "killed.yaml"
    import yaml
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, str(script), str(config_file)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    run = tmp_path / "killed"
    # The run died writing epoch 2's latest.pth: latest.pth is epoch 1's, intact (the half-written file
    # never took its name), and the state is the one saved before epoch 2's validation.
    latest = load_smoother(run / "models" / "latest.pth")
    raw = torch.load(run / "models" / "latest.pth", weights_only=True)
    state = load_training_state(run / "training_states" / "latest.state")
    assert raw["epoch"] == 1 and (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 8, 16)
    assert not torch.equal(latest.state_dict()["stem.weight"], state["model"]["stem.weight"])
    # Resuming trains nothing again: it validates epoch 2 and writes its checkpoints; the run ends as
    # an uninterrupted one does.
    result = train(tiny_config(demo_root, tmp_path, "killed", train={"save_every": 100}), resume="auto")
    straight = train(tiny_config(demo_root, tmp_path, "straight", train={"save_every": 100}))
    assert result["global_step"] == straight["global_step"] == 16
    assert_same_tensors(load_smoother(run / "models" / "latest.pth").state_dict(),
                        load_smoother(tmp_path / "straight" / "models" / "latest.pth").state_dict(), "final")


# ----------------------------------------------------------------------------- segmentation task
def test_segmentation_task_writes_a_loadable_segmenter_and_logs_miou(demo_root, tmp_path):
    cfg = tiny_config(demo_root, tmp_path, "seg", task="segmentation",
                      segmenter={"num_classes": 6, "lr": 1e-3},
                      data={"repeat": 1, "patch_size": 32},
                      train={"epochs": 1, "max_iters_per_epoch": 2, "batch_size": 2})
    result = train(cfg)
    run = tmp_path / "seg"
    assert result["best_key"] == "miou" and result["global_step"] == 2
    miou = result["history"][0]["val"]["miou"]
    assert 0.0 <= miou <= 1.0 and result["best_metric"] == pytest.approx(miou)
    model = load_segmenter(run / "models" / "best.pth", output_stride=16)
    assert model.classifier.classifier[3].out_channels == 6
    assert torch.load(run / "models" / "best.pth", weights_only=True)["kind"] == "segmenter"
    log = (run / "train.log").read_text()
    assert f"mIoU {miou:.4f}" in log and "IoU per class" in log


def test_confusion_matrix_and_miou_on_known_numbers():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(pred, label, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = segmentation_scores(cm)
    # IoU: class 0 = 1/(2+2-1), class 1 = 2/(2+3-2), class 2 = 1/(2+1-1)
    assert scores["iou_00"] == pytest.approx(1 / 3) and scores["iou_01"] == pytest.approx(2 / 3)
    assert scores["iou_02"] == pytest.approx(1 / 2)
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_acc"] == pytest.approx(4 / 6)


def test_freeze_bn_keeps_running_statistics_and_trains_the_affine_parameters(demo_root, tmp_path):
    """train.freeze_bn: BatchNorm layers in eval mode during training (running mean 0 / var 1 kept),
    while their weights and biases still learn; without it the running statistics move."""
    def batchnorms(model):
        return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    frozen = train(tiny_config(demo_root, tmp_path, "frozen", train={"epochs": 1, "freeze_bn": True}))
    plain = train(tiny_config(demo_root, tmp_path, "plain", train={"epochs": 1}))
    assert frozen["global_step"] == plain["global_step"] == 8
    assert "BatchNorm frozen (train.freeze_bn)" in (tmp_path / "frozen" / "train.log").read_text()
    f_model = load_smoother(tmp_path / "frozen" / "models" / "latest.pth")
    p_model = load_smoother(tmp_path / "plain" / "models" / "latest.pth")
    assert len(batchnorms(f_model)) == len(batchnorms(p_model)) > 0
    for bn in batchnorms(f_model):
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert int(bn.num_batches_tracked) == 0
    assert any(not torch.equal(bn.weight, torch.ones_like(bn.weight)) or
               not torch.equal(bn.bias, torch.zeros_like(bn.bias)) for bn in batchnorms(f_model))
    assert all(int(bn.num_batches_tracked) == 8 for bn in batchnorms(p_model))
    assert any(not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) for bn in batchnorms(p_model))
    # A module put back in train mode by the loop is frozen again by the helper.
    p_model.train()
    assert freeze_batchnorm(p_model) == len(batchnorms(p_model))
    assert p_model.training and not any(bn.training for bn in batchnorms(p_model))


def test_amp_bf16_runs_the_forward_in_bfloat16_on_cpu_and_keeps_float32_weights(demo_root, tmp_path):
    """amp=bf16 is honoured on CPU (autocast forward, float32 loss and weights); fp16 stays CUDA-only."""
    cpu = torch.device("cpu")
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    assert amp_dtype("fp16", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("fp16", torch.device("cuda")) is torch.float16

    from csgis.models.smoother import Smoother
    torch.manual_seed(0)
    model = Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1)
    seen = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)

    def criterion(out, batch):
        assert out.prediction.dtype == torch.float32  # outputs are cast back before the loss
        loss = (out.prediction - batch["gt"]).abs().mean()
        return loss, {"l1": loss.detach()}

    parts = train_step(model, {"input": x, "gt": gt}, criterion, optimizer, autocast_dtype=torch.bfloat16)
    assert seen == [torch.bfloat16] and torch.isfinite(torch.tensor(parts["l1"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))

    result = train(tiny_config(demo_root, tmp_path, "bf16", amp="bf16", train={"epochs": 1}))
    assert result["global_step"] == 8
    assert "amp bf16" in (tmp_path / "bf16" / "train.log").read_text()


# ----------------------------------------------------------------------------- weight average
def test_ema_decay_validates_and_saves_the_moving_average_and_resumes_it_exactly(demo_root, tmp_path):
    """train.ema_decay: after every step average = d * average + (1 - d) * weights; validation,
    latest/best/epoch checkpoints hold the average, the state both; a resume continues both exactly."""
    from csgis.data import build_dataset
    from csgis.evaluation import smoother_scores
    from csgis.train.loop import build_val_loader

    decay = 0.6
    seen = []

    def record(ctx):
        seen.append(({k: v.clone() for k, v in ctx["model"].state_dict().items()},
                     {k: v.clone() for k, v in ctx["average"].state_dict().items()}))

    cfg = tiny_config(demo_root, tmp_path, "ema", train={"ema_decay": decay})
    result = train(cfg, step_hook=record)
    assert len(seen) == result["global_step"] == 16
    for (_, before), (weights, after) in zip(seen, seen[1:]):
        for key, value in after.items():
            if value.is_floating_point():
                torch.testing.assert_close(value, decay * before[key] + (1 - decay) * weights[key])
            else:
                assert torch.equal(value, weights[key])
    last_weights, last_average = seen[-1]
    assert not torch.equal(last_average["stem.weight"], last_weights["stem.weight"])

    run = tmp_path / "ema"
    state = load_training_state(run / "training_states" / "latest.state")
    assert_same_tensors(state["model"], last_weights, "state model = the trained weights")
    assert_same_tensors(state["ema"]["weights"], last_average, "state average")
    assert state["ema"]["updates"] == 16 and state["ema"]["decay"] == decay
    for name in ("latest.pth", "epoch_0002.pth"):
        assert_same_tensors(load_smoother(run / "models" / name).state_dict(), last_average, name)
    # The validation row is the average's score, not the trained weights'.
    loader = build_val_loader(build_dataset(cfg.data, "val", train=False))
    average_model = load_smoother(run / "models" / "latest.pth")
    raw_model = load_smoother(run / "models" / "latest.pth")
    raw_model.load_state_dict(state["model"])
    scores = {name: smoother_scores(m, loader, torch.device("cpu"), None, 0)[0]
              for name, m in (("average", average_model), ("raw", raw_model))}
    assert result["history"][-1]["val"]["psnr_paper"] == pytest.approx(scores["average"]["psnr_paper"], rel=1e-6)
    assert scores["raw"]["psnr_paper"] != pytest.approx(scores["average"]["psnr_paper"], rel=1e-6)
    assert "weight average, decay 0.6 per step" in (run / "train.log").read_text()

    # Interrupted mid-epoch and resumed: the weights and their average are those of the straight run.
    from _helpers import assert_resume_is_exact
    assert_resume_is_exact(demo_root, tmp_path / "resume", stop_step=3, train={"ema_decay": decay})

    # A run trained without an average and resumed with one starts the average there.
    train(tiny_config(demo_root, tmp_path, "late", train={"epochs": 1}))
    late = train(tiny_config(demo_root, tmp_path, "late", train={"ema_decay": decay}), resume="auto")
    assert late["global_step"] == 16
    assert "has no weight average; it starts from the resumed weights" in (tmp_path / "late" / "train.log").read_text()
    assert load_training_state(tmp_path / "late" / "training_states" / "latest.state")["ema"]["updates"] == 8


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_ema_decay_outside_zero_one_is_one_config_error(value):
    from csgis.config import ConfigError, from_dict
    with pytest.raises(ConfigError, match=r"train.ema_decay.*\[0, 1\)"):
        from_dict({"train": {"ema_decay": value}})


def test_export_weights_writes_the_trained_or_the_averaged_weights_of_a_state(demo_root, tmp_path, capsys):
    """scripts/export_weights.py: a training state -> a checkpoint of its trained weights (default) or
    of their moving average, loadable like models/*.pth; bad requests are one line and exit 2."""
    import export_weights
    train(tiny_config(demo_root, tmp_path, "ema", train={"epochs": 1, "ema_decay": 0.6}))
    train(tiny_config(demo_root, tmp_path, "plain", train={"epochs": 1}))
    state_path = tmp_path / "ema" / "training_states" / "latest.state"
    state = load_training_state(state_path)
    for which, weights in (("trained", state["model"]), ("average", state["ema"]["weights"])):
        out = tmp_path / f"{which}.pth"
        assert export_weights.main(["--state", str(state_path), "--out", str(out), "--weights", which]) == 0
        assert_same_tensors(load_smoother(out).state_dict(), weights, which)
        raw = torch.load(out, weights_only=True)
        assert raw["weights"] == which and raw["epoch"] == 1 and raw["iteration"] == 8
        assert raw["config"]["train"]["ema_decay"] == 0.6
    # the average is what the run's own models/latest.pth holds
    assert_same_tensors(load_smoother(tmp_path / "average.pth").state_dict(),
                        load_smoother(tmp_path / "ema" / "models" / "latest.pth").state_dict(), "latest.pth")
    capsys.readouterr()
    plain_state = tmp_path / "plain" / "training_states" / "latest.state"
    bad = [(["--state", str(state_path), "--out", str(tmp_path / "trained.pth")], "exists; pass --overwrite"),
           (["--state", str(plain_state), "--out", str(tmp_path / "x.pth"), "--weights", "average"],
            "holds no moving average"),
           (["--state", str(tmp_path / "average.pth"), "--out", str(tmp_path / "y.pth")],
            "not the training state of a smoothing run"),
           (["--state", str(state_path), "--out", str(state_path), "--overwrite"], "is the training state itself")]
    for argv, message in bad:
        assert export_weights.main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "y.pth").exists()
    assert load_training_state(state_path)["global_step"] > 0  # the state itself is untouched
