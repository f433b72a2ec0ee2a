"""Process-level settings shared by the command-line entry points."""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
from typing import Callable, Sequence

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Activation maps of this network are 10-200 MB each and are freed and re-allocated on every
# layer. With glibc's defaults each one is mmap'd, returned to the OS on free and faulted back in
# page by page: on CPU the kernel time exceeded the compute time (default model, 814x814 crop:
# 36 s per forward, 31 M page faults). Keeping such blocks in the heap for reuse: 11-14 s,
# 0.5-1 M faults, peak resident memory +35 % (1.7 -> 2.4 GB). Reproduce with
# `python scripts/bench_cpu_allocator.py` (results in docs/BENCHMARKS.md).
_THRESHOLD = 1 << 30


def reuse_large_allocations() -> bool:
    """Ask glibc malloc to keep large freed blocks for reuse (big CPU speed-up); False if not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    return ok_mmap and ok_trim


def parallel_map(function: Callable, jobs: Sequence, workers: int = 1, desc: str = "",
                 progress: bool = True, initializer: Callable | None = None) -> list:
    """[function(job) for job in jobs] in order over `workers` processes (<= 1: here), tqdm bar on stderr."""
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc=desc, unit="img", dynamic_ncols=True, disable=not progress,
               file=sys.stderr)
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in tqdm(jobs, **bar)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a process that has already run torch or OpenCV holds thread pools whose
    # locks a forked child inherits, and such children can hang forever.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, initializer=initializer, mp_context=context) as pool:
        return list(tqdm(pool.map(function, jobs, chunksize=1), **bar))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (else what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
