"""Bad inputs and accidents: one clear line and a non-zero exit, never a hang, a traceback or lost work."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _helpers import assert_same_tensors, tiny_config
from csgis.checkpoint import load_training_state
from csgis.config import ConfigError, to_dict
from csgis.data.manifest import read_manifest
from csgis.train import RunExistsError, train
from csgis.train.run_folder import RunLock, run_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path, demo_root):
    """A private copy of the tiny demo data, to damage."""
    import shutil
    copy = tmp_path / "data"
    shutil.copytree(demo_root, copy)
    return copy


def run_cli(args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def one_line(stderr: str) -> str:
    """The one error line of a command's stderr (progress bars aside), which must hold no traceback."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in stderr and "WARN" not in stderr, stderr[-3000:]
    return lines[0]


def write_config(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def break_image_data(path: Path) -> None:
    """Keep a PNG's header (size readable) but cut its pixel data: it fails only when decoded."""
    raw = path.read_bytes()
    path.write_bytes(raw[:60])


def test_dataset_error_in_a_worker_is_one_line_and_does_not_hang(data, tmp_path):
    victim = sorted((data / "input").glob("*.png"))[0]
    break_image_data(victim)
    cfg = tiny_config(data, tmp_path / "exp", "workers", data={"num_workers": 2, "repeat": 1})
    proc = run_cli(["train.py", "--config", write_config(tmp_path / "c.yaml", cfg)], timeout=180)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert str(victim) in line and "Original Traceback" not in line


def test_a_missing_file_is_found_before_training(data, tmp_path):
    victim = sorted((data / "gt").glob("*.png"))[-1]
    victim.unlink()
    cfg = tiny_config(data, tmp_path / "exp", "missing", data={"repeat": 1})
    proc = run_cli(["train.py", "--config", write_config(tmp_path / "c.yaml", cfg)])
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert str(victim) in line and "file not found" in line and "split of" in line
    assert not list((tmp_path / "exp" / "missing" / "models").glob("*"))  # nothing trained


def test_a_failing_validation_loses_no_training(data, tmp_path):
    """A validation file that breaks only when decoded stops the run after its first epoch; once it
    is fixed, --resume validates that epoch without training it again, and the run ends as an
    uninterrupted one does."""
    straight = train(tiny_config(data, tmp_path, "straight", data={"repeat": 1}))
    val_file = data / read_manifest(data, "val")[0]["input"]
    good = val_file.read_bytes()
    break_image_data(val_file)
    with pytest.raises(Exception, match=str(val_file)):
        train(tiny_config(data, tmp_path, "broken", data={"repeat": 1}))
    state = load_training_state(tmp_path / "broken" / "training_states" / "latest.state")
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 4, 4)
    val_file.write_bytes(good)
    resumed = train(tiny_config(data, tmp_path, "broken", data={"repeat": 1}), resume="auto")
    assert resumed["global_step"] == straight["global_step"] == 8
    final = {name: load_training_state(tmp_path / name / "training_states" / "latest.state")
             for name in ("straight", "broken")}
    assert_same_tensors(final["broken"]["model"], final["straight"]["model"], "weights")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]


def test_a_second_process_on_a_training_run_is_refused(demo_root, tmp_path, capsys):
    cfg = tiny_config(demo_root, tmp_path, "busy", train={"epochs": 1})
    other = RunLock(run_paths(cfg))  # another process training this run (flock: per open file)
    other.acquire()
    try:
        with pytest.raises(RunExistsError, match=f"being trained by another process \\(PID {os.getpid()}\\)"):
            train(cfg)
        assert not (tmp_path / "busy").exists()  # refused before touching the folder
        import train as train_cli
        assert train_cli.main(["--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 2
        assert "being trained by another process" in one_line(capsys.readouterr().err)
    finally:
        other.release()
    assert train(cfg)["global_step"] == 8  # free again


def test_a_refused_resume_leaves_config_yaml_alone(demo_root, tmp_path):
    train(tiny_config(demo_root, tmp_path, "keep", train={"epochs": 1}))
    saved = (tmp_path / "keep" / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match="trained with model.width=4.*cannot change.*model.width=8"):
        train(tiny_config(demo_root, tmp_path, "keep", model={"width": 8}), resume="auto")
    with pytest.raises(ConfigError, match="task=smoothing"):
        train(tiny_config(demo_root, tmp_path, "keep", task="segmentation", segmenter={"num_classes": 6}),
              resume="auto")
    assert (tmp_path / "keep" / "config.yaml").read_bytes() == saved
    assert not list((tmp_path / "keep").glob("config.before_resume_*"))


def test_resume_of_a_run_that_does_not_exist_is_refused(demo_root, tmp_path, capsys):
    import train as train_cli
    cfg = tiny_config(demo_root, tmp_path, "typo")
    assert train_cli.main(["--config", str(write_config(tmp_path / "c.yaml", cfg)), "--resume"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--resume: there is no training state" in line and "typo" in line
    assert not (tmp_path / "typo").exists()
