"""One prepared GPU window: tests, benchmark and a training run, within a time budget.

    bash scripts/device/run.sh OUT_DIR                                   # on the GPU machine
    CSGIS_DEVICE=cpu CSGIS_BUDGET_S=120 bash scripts/device/run.sh OUT   # the dry run, here

Steps, in order of value; OUT_DIR/summary.json is rewritten after each, so a run cut off at its
limit still returns what it finished:
  environment  GPU name, driver, torch / CUDA / cuDNN versions, CPU count;
  cuda_tests   the `cuda`-marked tests (tests/test_cuda.py) on the device: mixed precision against
               fp32, channels_last, torch.compile (not in the dry run), tiled == untiled, exact
               resume, show.py;
  data         the demo data (make_demo_data.py), the held-out benchmark (make_heldout.py) and the
               rich training data (make_rich_data.py), built here with every CPU core;
  benchmark    only with CSGIS_BENCHMARK=1 (measured in the first window, docs/BENCHMARKS.md):
               scripts/benchmark.py on the device, inference at 1 and 4 MP and the paper training
               step for every variant, each against fp32 eager, the fraction of the chip's bf16 peak,
               and the data.pipeline=device batch time;
  training     configs/device.yaml (the paper-width network on the rich data with online blending,
               the shipped-model candidate of the generalisation issue) for the time left; its
               weights are copied to OUT_DIR every minute, then scored on the demo test split and
               on both parts of the held-out benchmark (means per blend in summary.json; ship on
               the validation part's, training.test.heldout_val).
Files in OUT_DIR (at most 8, each under 16 MiB): summary.json, cuda_tests.log, benchmark.json,
train.log, metrics.jsonl, final.pth (weights only), test_metrics.json, heldout_metrics.json.
CSGIS_TRAIN_OVERRIDES adds config overrides to the training run. Unset, a GPU window goes on from
the shipped weights (CONTINUE, below: 'model.init=weights/rich_smoother.pth train.lr=2e-4'), so
that every window adds to the same model; ship the result only if it scores better on the held-out
benchmark. CSGIS_TRAIN_OVERRIDES='' trains from scratch; 'model.init=data/prev.pth train.lr=3e-4'
goes on from an earlier window's final.pth carried into the work tree.
The learning rate drops twice (x0.3 at half and three quarters) within the window: the number of
epochs is fitted to the training time at EPOCH_S seconds each (CSGIS_EPOCH_S overrides it; a
train.epochs or train.milestones in CSGIS_TRAIN_OVERRIDES wins).
CSGIS_CUDA_TESTS=0 leaves the CUDA tests out (a second window of the same code).
The dry run (CSGIS_DEVICE=cpu) runs the same steps with tiny sizes; CI runs it.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a GPU window trains by default: configs/device.yaml from these weights at this rate (the
# shipped paper-width model came from two windows, 1e-3 then 3e-4; docs/device/2026-11-27-h200-b).
CONTINUE = ("weights/rich_smoother.pth", "2e-4")
# Seconds of one 200-step epoch of configs/device.yaml (18.6 s measured on the H200, plus
# validation every 5 epochs); CSGIS_EPOCH_S overrides it. It sets how many epochs fit the window.
EPOCH_S = 20.0


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.monotonic(), seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def share(self, fraction: float, reserve: float = 0.0) -> float:
        """At most `fraction` of the whole budget, and never more than what is left minus `reserve`."""
        return max(1.0, min(fraction * self.seconds, self.left() - reserve))


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    """(exit status, output, seconds); a command past its timeout is killed (status 124)."""
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=timeout,
                              env={**os.environ, **(env or {})})
        return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        return 124, out + f"\n[killed after {timeout:.0f} s]", time.monotonic() - start


def environment(python: str, device: str) -> dict:
    code = ("import json, os, torch; d = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version() if d else None, "
            "'gpu': torch.cuda.get_device_name(0) if d else None, 'gpu_count': torch.cuda.device_count(), "
            "'cpu_count': os.cpu_count()}))")
    status, out, _ = run([python, "-c", code], 120)
    env = json.loads(out.strip().splitlines()[-1]) if status == 0 else {"error": out[-500:]}
    if shutil.which("nvidia-smi"):
        status, smi, _ = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             30)
        env["nvidia_smi"] = smi.strip() if status == 0 else None
    env.update(python=platform.python_version(), device=device, machine=platform.machine())
    return env


def cuda_tests(python: str, device: str, timeout: float, out: Path) -> dict:
    """tests/test_cuda.py on `device`; the CPU dry run leaves torch.compile out (a cold inductor
    cache alone takes about 50 s on one CPU thread; on the GPU it is a few seconds)."""
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests/test_cuda.py"]
    cmd += ["-k", "not compile"] if device == "cpu" else []
    status, log, seconds = run(cmd, timeout, {"CSGIS_TEST_DEVICE": device})
    (out / "cuda_tests.log").write_text(log[-200_000:])
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", log)}
    return {"status": status, "seconds": round(seconds, 1), **counts,
            "failures": re.findall(r"^FAILED (\S+)", log, flags=re.M)}


def build_data(python: str, dry: bool, work: Path, timeout: float) -> tuple[Path, dict]:
    """The demo data (its test split scores the run), the held-out benchmark (sources no training
    builder reads) and the rich data (configs/device.yaml trains on it); none needs OpenCV contrib."""
    start, built = time.monotonic(), {}
    workers = ["--workers", str(os.cpu_count() or 1)]
    for name, builder, folder, parallel in (("demo", "make_demo_data.py", "data", True),
                                            ("heldout", "make_heldout.py", "heldout", False),
                                            ("rich", "make_rich_data.py", "rich", True)):
        cmd = [python, f"dataset_utils/{builder}", "--out", str(work / folder)] + (workers if parallel else [])
        cmd += ["--size", "tiny"] if dry else []
        status, log, seconds = run(cmd, max(5.0, timeout - (time.monotonic() - start)))
        built[name] = {"status": status, "seconds": round(seconds, 1), "tail": log[-300:] if status else ""}
    # summary.json's data: the demo build at the top level (as the first window recorded it).
    return work / "data", {**built.pop("demo"), **built}


def benchmark(python: str, device: str, dry: bool, data: Path, timeout: float, out: Path) -> dict:
    cmd = [python, "scripts/benchmark.py", "--device", device, "--json", str(out / "benchmark.json"),
           "--pipeline-data", str(data)]
    if dry:
        cmd += ["--width", "8", "--blocks", "1", "1", "1", "--quick", "--sizes", "64", "--train-patch", "32",
                "--train-batch", "2", "--train-warmup", "1", "--train-steps", "1", "--variants", "eager,bf16"]
    else:  # 1 and 4 MP; one compiled variant (compiling the paper network takes about a minute).
        # The first GPU run (H200, 2026-11-27) ran out of its share with six variants: bf16 and fp16
        # alone were within 10 % of eager in training, so they are left out here.
        cmd += ["--sizes", "1024", "2048", "--variants", "eager,channels_last,bf16+channels_last,"
                "compile+bf16+channels_last"]
    status, log, seconds = run(cmd, timeout)
    # Each finished row is also a log line: a benchmark cut off at its limit still reports those.
    rows = [line for line in log.splitlines() if re.match(r"(train|infer|pipeline)\b", line) or line.startswith("parameters")]
    table = log[log.find("Device:"):] if "Device:" in log else ""
    return {"status": status, "seconds": round(seconds, 1), "rows": rows, "table": table}


def fitted_schedule(seconds: float, epoch_s: float) -> list[str]:
    """Overrides for a learning-rate schedule that ends with the window: as many epochs as 90 % of
    `seconds` holds at `epoch_s` each, the rate times 0.3 at half and at three quarters of them (the
    shape of configs/demo.yaml's). On a slower device the run is stopped by time before the last
    drop."""
    epochs = max(2, int(0.9 * seconds / epoch_s))
    return [f"train.epochs={epochs}", f"train.milestones=[{max(1, epochs // 2)},{max(1, 3 * epochs // 4)}]",
            "train.gamma=0.3"]


def train_command(python: str, device: str, dry: bool, data: Path, work: Path, seconds: float = 0.0) -> list[str]:
    """train.py on configs/device.yaml with the rich data built in `work` (tiny sizes in the dry run),
    a schedule fitted to `seconds` (fitted_schedule; not in the dry run, whose CPU epochs have no
    known length), then CSGIS_TRAIN_OVERRIDES or, unset, going on from CONTINUE."""
    rich = data.parent / "rich"
    cmd = [python, "train.py", "--config", "configs/device.yaml", f"data.root={rich}",
           f"data.textures={rich / 'textures'}", f"experiments_dir={work / 'exp'}", f"device={device}"]
    if dry:
        cmd += ["model.width=8", "model.descriptor_blocks=1", "model.coarse_blocks=1", "model.refine_blocks=1",
                "data.patch_size=32", "train.batch_size=2", "data.num_workers=0", "train.max_iters_per_epoch=4",
                "train.val_every=2", "data.val_crop=32"]
    else:
        cmd += [f"data.num_workers={max(2, min(12, (os.cpu_count() or 4) - 4))}"]
        if seconds > 0:
            cmd += fitted_schedule(seconds, float(os.environ.get("CSGIS_EPOCH_S") or EPOCH_S))
    extra = os.environ.get("CSGIS_TRAIN_OVERRIDES")
    if extra is None:
        extra = "" if dry or not (ROOT / CONTINUE[0]).is_file() else f"model.init={CONTINUE[0]} train.lr={CONTINUE[1]}"
    return cmd + shlex.split(extra)


def training(python: str, device: str, dry: bool, data: Path, work: Path, seconds: float, out: Path) -> dict:
    """Train configs/device.yaml for `seconds`, copying its weights to OUT every minute; SIGTERM at the end."""
    run_dir = work / "exp" / "device"
    cmd = train_command(python, device, dry, data, work, seconds)
    log = open(work / "train.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    last_copy, latest = start, run_dir / "models" / "latest.pth"
    while proc.poll() is None and time.monotonic() - start < seconds:
        time.sleep(2)
        if time.monotonic() - last_copy > 60 and latest.is_file():
            shutil.copy(latest, out / ".final.pth.tmp")
            os.replace(out / ".final.pth.tmp", out / "final.pth")
            last_copy = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the loop finishes its step and saves a training state
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    shutil.copy(work / "train.log", out / "train.log")
    result = {"status": proc.returncode, "stopped_by_time": proc.returncode == 128 + signal.SIGTERM,
              "seconds": round(time.monotonic() - start, 1), "config": "configs/device.yaml", "overrides": cmd[4:]}
    if (run_dir / "metrics.jsonl").is_file():
        shutil.copy(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    state = run_dir / "training_states" / "latest.state"
    if state.is_file():  # the final weights, weights only (the whole state would exceed 16 MiB)
        status, text, _ = run([python, "scripts/export_weights.py", "--state", str(state), "--out",
                               str(out / "final.pth"), "--overwrite"], 300)
        found = re.search(r"\(epoch (\d+), step (\d+)\)", text) if status == 0 else None
        if found:
            result.update(epochs=int(found[1]), steps=int(found[2]), weights="final.pth")
        else:
            result["export_error"] = text[-500:]
    return result


def score(python: str, device: str, dry: bool, data: Path, timeout: float, out: Path) -> dict:
    cmd = [python, "scripts/evaluate.py", "--checkpoint", str(out / "final.pth"), "--data", str(data), "--split",
           "test", "--device", device, "--json", str(out / "test_metrics.json"), "--quiet"]
    status, log, seconds = run(cmd + (["--max-images", "4"] if dry else []), timeout)
    result = {"status": status, "seconds": round(seconds, 1), "split": "demo test"}
    if (out / "test_metrics.json").is_file():
        methods = json.loads((out / "test_metrics.json").read_text())["methods"]
        result.update({name: {k: v["mean"] for k, v in m.items() if isinstance(v, dict)} for name, m in methods.items()})
    else:
        result["tail"] = log[-500:]
    heldout = data.parent / "heldout"
    if not (heldout / "manifest.csv").is_file():
        result["heldout"] = "the held-out benchmark was not built (summary.json: data.heldout)"
        return result
    # The test part per image (the report's per-blend tables need them) and the validation part's
    # means: a window's weights are shipped only if they beat the shipped file there.
    for key, split, report in (("heldout", "test", out / "heldout_metrics.json"),
                               ("heldout_val", "val", data.parent / "heldout_val_metrics.json")):
        cmd[cmd.index("--data") + 1], cmd[cmd.index("--json") + 1] = str(heldout), str(report)
        cmd[cmd.index("--split") + 1] = split
        status, log, took = run(cmd, max(5.0, timeout - seconds))
        seconds += took
        result[key] = {"status": status, "seconds": round(took, 1)}
        if report.is_file():
            result[key].update(blend_means(json.loads(report.read_text())["images"], heldout))
        else:
            result[key]["tail"] = log[-500:]
    return result


def blend_means(images: list[dict], heldout: Path) -> dict:
    """{method: {blend or 'all': {metric: mean}}} of evaluate.py's per-image rows on the held-out benchmark."""
    from csgis.evaluation import group_means
    info = json.loads((heldout / "dataset.json").read_text())
    blends = {name: v["blend"] for name, v in info.get("samples", {}).items()}
    return {method: group_means(images, method, blends) for method in dict.fromkeys(r["method"] for r in images)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: bash scripts/device/run.sh OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    device = os.environ.get("CSGIS_DEVICE", "cuda")
    dry = device == "cpu"
    budget = Budget(float(os.environ.get("CSGIS_BUDGET_S", "520")))
    python = sys.executable
    with_tests = os.environ.get("CSGIS_CUDA_TESTS") != "0"
    work = Path(tempfile.mkdtemp(prefix="csgis_device_"))
    summary = {"command": "bash scripts/device/run.sh", "device": device, "budget_s": budget.seconds, "dry_run": dry,
               "environment": None, "cuda_tests": None, "benchmark": None, "training": None}

    def step(name: str, value) -> None:
        summary[name] = value
        summary["elapsed_s"] = round(budget.seconds - budget.left(), 1)
        write_json(out / "summary.json", summary)
        print(f"[{summary['elapsed_s']:6.1f} s] {name}: {json.dumps(value, default=str)[:300]}", flush=True)

    try:
        step("environment", environment(python, device))
        # Shares of the budget: tests 20 % (35 % in the dry run: compiling on a CPU is slow), benchmark
        # 30 %, the rest for data, training and scoring; each step leaves time for the ones after it.
        if with_tests:
            step("cuda_tests", cuda_tests(python, device, budget.share(0.35 if dry else 0.2, 0.55 * budget.seconds), out))
        data, built = build_data(python, dry, work, budget.share(0.2, 0.45 * budget.seconds))
        summary["data"] = built
        if os.environ.get("CSGIS_BENCHMARK") == "1":
            step("benchmark", benchmark(python, device, dry, data, budget.share(0.3, 0.35 * budget.seconds), out))
        scoring = 0.1 * budget.seconds if dry else max(0.1 * budget.seconds, 45.0)  # a GPU scores both in ~25 s
        result = training(python, device, dry, data, work, max(5.0, budget.left() - scoring - 20), out)
        step("training", result)
        if (out / "final.pth").is_file():
            result["test"] = score(python, device, dry, data, max(5.0, budget.left() - 2), out)
            step("training", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tests_ok = not with_tests or (summary["cuda_tests"] or {}).get("status") == 0
    ok = tests_ok and (summary["training"] or {}).get("steps", 0) > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
