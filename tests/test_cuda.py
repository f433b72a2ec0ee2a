"""The CUDA paths: mixed precision, channels_last, torch.compile, tiling, exact resume and show.py on
the training device. Marked `cuda`: skipped without a GPU, unless CSGIS_TEST_DEVICE names a device
(`CSGIS_TEST_DEVICE=cpu` runs them on the CPU, as the dry run of scripts/device/run.sh does)."""
import os

import numpy as np
import pytest
import torch

from _helpers import assert_resume_is_exact, tiny_smoother
from csgis.checkpoint import save_checkpoint
from csgis.config import from_dict
from csgis.device import amp_dtype
from csgis.inference import smooth_tensor
from csgis.train import train_step
from csgis.train.tasks import SmoothingTask

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device(os.environ.get("CSGIS_TEST_DEVICE") or "cuda")


@pytest.fixture(autouse=True)
def strict_fp32():
    """fp32 means fp32 here: no TF32 convolutions or matmuls (their error is ~1e-3)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def first_step_loss(device, amp="off", channels_last=False, compile=False) -> float:
    """The full CSGIS loss (random VGG16 taps, no segmenter) of one training step from fixed weights."""
    cfg = from_dict({"model": {"width": 16, "descriptor_blocks": 2, "coarse_blocks": 1, "refine_blocks": 1},
                     "loss": {"vgg_weights": "random", "segmentation": 0.0, "negatives": "over"}})
    torch.manual_seed(0)
    task = SmoothingTask(cfg, device, channels_last)
    model = task.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(4, 3, 48, 48, generator=g)
    batch = {"input": (gt + 0.2 * torch.rand(4, 3, 48, 48, generator=g)).clamp(0, 1), "gt": gt,
             "over_smoothed": torch.rand(4, 3, 48, 48, generator=g),
             "edge": (torch.rand(4, 1, 48, 48, generator=g) > 0.8).float()}
    batch = {k: v.to(device) for k, v in batch.items()}
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    runner = torch.compile(model) if compile else model
    parts = train_step(runner, batch, task.criterion, torch.optim.Adam(model.parameters(), 1e-3), scaler=scaler,
                       autocast_dtype=amp_dtype(amp, device))
    return parts["total"]


def test_mixed_precision_training_steps_agree_with_fp32(device):
    reference = first_step_loss(device)
    precisions = ["bf16"] + (["fp16"] if device.type == "cuda" else [])
    for amp in precisions:
        loss = first_step_loss(device, amp)
        assert abs(loss - reference) <= 2e-2 * abs(reference), (amp, loss, reference)


def test_channels_last_agrees_with_eager(device):
    assert first_step_loss(device, channels_last=True) == pytest.approx(first_step_loss(device), rel=1e-4)


def test_compile_agrees_with_eager(device):
    # The CPU dry run of scripts/device/run.sh leaves this one out: a cold inductor cache takes
    # about 50 s on one CPU thread, more than the dry run's share for these tests.
    assert first_step_loss(device, compile=True) == pytest.approx(first_step_loss(device), rel=1e-4)


def test_tiled_equals_untiled_on_the_device(device):
    model = tiny_smoother(width=8, descriptor_blocks=2, coarse_blocks=1, refine_blocks=1).to(device)
    x = torch.rand(1, 3, 90, 70, generator=torch.Generator().manual_seed(0)).to(device)
    whole = smooth_tensor(model, x, tile=0)
    tiled = smooth_tensor(model, x, tile=32)
    for name in whole:
        assert (whole[name] - tiled[name]).abs().max().item() <= 1e-5, name
    for amp in ["bf16"] + (["fp16"] if device.type == "cuda" else []):
        low = smooth_tensor(model, x, tile=0, amp=amp)["prediction"].clamp(0, 1)
        assert (low - whole["prediction"].clamp(0, 1)).abs().max().item() <= 1e-2, amp


def test_resume_is_exact_on_the_device(demo_root, tmp_path, device):
    assert_resume_is_exact(demo_root, tmp_path, device=str(device), data={"pipeline": "device", "num_workers": 0})


def test_show_on_the_device_matches_the_cpu(tmp_path, device, demo_root):
    import show
    from csgis.io import read_image
    model = tiny_smoother(width=8)
    save_checkpoint(tmp_path / "m.pth", model)
    image = next((demo_root / "input").glob("*.png"))
    for name, dev in (("cpu", "cpu"), ("dev", str(device))):
        assert show.main(["--checkpoint", str(tmp_path / "m.pth"), "--input", str(image), "--output",
                          str(tmp_path / name), "--device", dev, "--tile", "64"]) == 0
    a, b = (read_image(tmp_path / n / f"{image.stem}.png").astype(int) for n in ("cpu", "dev"))
    assert np.abs(a - b).max() <= 1  # at most a rounding flip per pixel
