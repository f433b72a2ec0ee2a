import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tests must never reach the network or a user's cache: point torch's cache at an empty folder.
os.environ.setdefault("TORCH_HOME", str(ROOT / ".pytest_cache" / "torch_home"))


def pytest_collection_modifyitems(config, items):
    """`cuda`-marked tests run on CUDA, or on the device CSGIS_TEST_DEVICE names; else they are skipped."""
    if os.environ.get("CSGIS_TEST_DEVICE"):
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device (CSGIS_TEST_DEVICE=cpu runs these on the CPU)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is faster, and much faster on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _restore_torch_switches():
    """Training with deterministic: true flips process-wide switches; put them back after each test."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark, cudnn_det = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, cudnn_det


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo dataset at its tiny size (make_demo_data.py --size tiny), built once per session."""
    root = tmp_path_factory.getbasetemp() / "demo_tiny"
    if not (root / "manifest.csv").is_file():
        subprocess.run([sys.executable, str(ROOT / "dataset_utils" / "make_demo_data.py"), "--out", str(root),
                        "--size", "tiny", "--seed", "0", "--workers", "1"],
                       check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return root


@pytest.fixture(scope="session")
def segmenter_file(tmp_path_factory) -> Path:
    """A random DeepLabV3+ with 6 classes in our checkpoint format (what the demo segmenter run writes)."""
    import torch

    from csgis.checkpoint import save_checkpoint
    from csgis.models.segmenter import deeplabv3plus_mobilenet
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("segmenter") / "seg.pth"
    save_checkpoint(path, deeplabv3plus_mobilenet(num_classes=6, output_stride=16))
    return path


@pytest.fixture(autouse=True)
def _forget_protected_inputs():
    """Commands called in-process declare their inputs (csgis.io.protect_inputs); no test inherits them."""
    yield
    from csgis.io import clear_protected
    clear_protected()
