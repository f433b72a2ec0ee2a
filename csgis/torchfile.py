"""Reading torch files safely: torch.load(weights_only=True), every failure one CheckpointError
that names the file and what was expected. Used by csgis.checkpoint (models, training states) and
csgis.models.vgg (VGG16 weights).
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import torch

# numpy globals that a DeepLabV3Plus-Pytorch checkpoint pickles (best_score = np.float64);
# numpy 1.x writes them as numpy.core.*, numpy 2 as numpy._core.*.
try:
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as _np_scalar
NUMPY_SAFE_GLOBALS = [
    (_np_scalar, "numpy.core.multiarray.scalar"),
    (_np_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdg"},
]


class CheckpointError(ValueError):
    """A file is not the checkpoint that was expected; the message names the file and the expectation."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


def describe_load_failure(error: BaseException) -> str:
    """The informative part of a torch.load failure (torch's weights_only text is mostly advice)."""
    text = str(error)
    # torch words it "Unsupported global: GLOBAL x.y" or "Trying to load unsupported GLOBAL x.y whose
    # module x is blocked", depending on the version.
    found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL (\S+)", text)
    if found:
        return (f"it holds pickled Python objects ({found.group(1)}), which are never loaded: loading them "
                f"could run code; use a file that stores only tensors (torch.save of a state dict)")
    if "WeightsUnpickler error:" in text:
        rest = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
        text = rest[0] if rest else ""
    detail = " ".join(text.split())[:200]
    return ("not a readable PyTorch checkpoint (damaged, truncated or not written by torch.save: "
            f"{type(error).__name__}: {detail})")


def read_file(path: str | os.PathLike, map_location: Any, expected: str) -> Any:
    """torch.load(weights_only=True) with every failure turned into a CheckpointError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"checkpoint file not found: {path} (expected {expected})")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty file, expected {expected}")
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip/pickle/EOF errors of random, truncated or foreign files
        raise CheckpointError(f"{path}: {describe_load_failure(e)}; expected {expected}") from e
