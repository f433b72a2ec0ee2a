"""Where and how the networks run: the device, the autocast dtype, the determinism switches.

Training, inference, the CLIs and the benchmark all choose these here, so a name such as
`amp=bf16` or `device=auto` means the same thing everywhere.
"""
from __future__ import annotations

import contextlib
import os

import torch

# amp setting -> autocast dtype of the networks' forward pass (None: float32, no autocast).
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch.device; ValueError naming the problem otherwise.

    'auto' is CUDA when available, else the CPU. Under DDP (local_rank given) every process takes
    cuda:LOCAL_RANK. A CUDA device is also made the current one.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' requested but CUDA is not available (use device cpu)")
        if local_rank is not None or device.index is None:
            device = torch.device("cuda", local_rank or 0)
        torch.cuda.set_device(device)
    return device


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that training uses for `amp` on `device`, or None (float32).

    bf16 runs on CUDA and on CPU (docs/BENCHMARKS.md: 1.45x a float32 training step on a CPU
    with AVX-512 BF16); fp16 needs CUDA (its GradScaler and kernels), elsewhere None.
    """
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {list(AMP_DTYPES)}, got {amp!r}")
    if device.type not in ("cuda", "cpu") or (amp == "fp16" and device.type != "cuda"):
        return None
    return AMP_DTYPES[amp]


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX); None when unknown (not Linux).

    Without them bf16 autocast on the CPU is emulated and an order of magnitude slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on `device` with `dtype`, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """deterministic: deterministic kernels (warn where none exists) and no cuDNN autotuning;
    otherwise let cuDNN pick its fastest algorithms on CUDA (fixed crop sizes)."""
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible GEMMs; read when CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA backward kernels (bilinear up-sampling in the segmenter) have no
        # deterministic version; failing the paper config for them helps nobody.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
