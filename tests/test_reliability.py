"""Bad inputs and accidents: one clear line and a non-zero exit, never a hang, a traceback or lost work."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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


def test_a_validation_file_failing_in_a_worker_is_one_line(data, tmp_path):
    victim = data / read_manifest(data, "val")[0]["input"]
    break_image_data(victim)
    cfg = tiny_config(data, tmp_path / "exp", "valworkers", data={"num_workers": 2, "repeat": 1})
    proc = run_cli(["train.py", "--config", write_config(tmp_path / "c.yaml", cfg)], timeout=180)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert str(victim) in line and "Original Traceback" not in line
    state = load_training_state(tmp_path / "exp" / "valworkers" / "training_states" / "latest.state")
    assert state["batch_in_epoch"] > 0  # the epoch's training was saved before validating


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


@pytest.mark.parametrize("override, key", [
    ("train.milestones=[a]", "train.milestones[0]"), ("train.milestones=[0.5]", "train.milestones[0]"),
    ("train.milestones=[30, 10]", "train.milestones"), ("train.betas=[0.9]", "train.betas"),
    ("model.width=0", "model.width"), ("data.patch_size=0", "data.patch_size"), ("train.lr=-1", "train.lr"),
    ("device=banana", "device"), ("data.num_workers=-1", "data.num_workers"),
    ("train.max_iters_per_epoch=-3", "train.max_iters_per_epoch"), ("train.milestones=[1,", "train.milestones"),
    ("data.brightness=[1.5, 0.5]", "data.brightness"), ("name=", "name"), ("name=.", "name"),
    ("name=../x", "name"), ("name=a/b", "name")])
def test_a_bad_config_value_is_one_line_naming_the_key(override, key, capsys, tmp_path):
    import train as train_cli
    assert train_cli.main(["--config", str(ROOT / "configs" / "demo.yaml"), override,
                           f"experiments_dir={tmp_path}"]) == 2
    assert key in one_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())  # nothing written


def test_list_items_and_names_keep_their_meaning():
    from csgis.config import load_config
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["train.milestones=['3', 7]", "name=0123", "amp=off"])
    assert cfg.train.milestones == [3, 7] and cfg.name == "0123" and cfg.amp == "off"


def test_names_in_a_config_file_keep_their_text(tmp_path):
    from csgis.config import load_config
    for written, expected in (("0123", "0123"), ("007", "007"), ("yes", "yes"), ("1e3", "1e3"), ("'0123'", "0123")):
        path = tmp_path / "c.yaml"
        path.write_text(f"base: {ROOT / 'configs' / 'demo.yaml'}\nname: {written}\ntrain:\n  epochs: 012\n"
                        f"  lr: 1e-3\n  milestones: [3, 7]\n")
        cfg = load_config(path)
        assert cfg.name == expected, written
        assert cfg.train.epochs == 12 and cfg.train.lr == 0.001 and cfg.train.milestones == [3, 7]
    path.write_text("name: x\nsegmenter:\n  checkpoint:\n")
    assert load_config(path).segmenter.checkpoint == ""


def test_a_config_path_that_is_a_folder_is_one_line(capsys):
    import train as train_cli
    assert train_cli.main(["--config", str(ROOT / "configs")]) == 2
    assert "cannot be read" in one_line(capsys.readouterr().err)


def test_vgg_weights_that_are_not_a_state_dict_are_one_line(demo_root, tmp_path, capsys):
    import train as train_cli
    bogus = tmp_path / "vgg.pth"
    bogus.write_bytes(b"not a checkpoint at all")
    cfg = tiny_config(demo_root, tmp_path, "vgg", loss={"vgg_weights": str(bogus)})
    assert train_cli.main(["--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(bogus) in line and "VGG16" in line


def test_a_malicious_pickle_is_refused_with_the_reason(tmp_path):
    from csgis.checkpoint import CheckpointError, load_smoother

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, evil)
    with pytest.raises(CheckpointError) as info:
        load_smoother(evil)
    message = str(info.value)
    assert "pickled Python objects" in message and "system" in message and "never loaded" in message
    assert "weights_only" not in message and "damaged" not in message
    assert not (tmp_path / "pwned").exists()


def test_written_files_get_the_umask_permissions(tmp_path):
    import numpy as np

    from csgis.checkpoint import save_checkpoint
    from csgis.io import write_image, write_text
    from csgis.models.smoother import Smoother
    previous = os.umask(0o022)
    try:
        for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            os.umask(umask)
            folder = tmp_path / f"u{umask:o}"
            write_image(folder / "a.png", np.zeros((4, 4, 3), np.uint8))
            write_text(folder / "a.json", "{}")
            save_checkpoint(folder / "a.pth", Smoother(4, 1, 1, 1))
            for name in ("a.png", "a.json", "a.pth"):
                assert (folder / name).stat().st_mode & 0o777 == mode, (name, oct(umask))
    finally:
        os.umask(previous)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, fmt):
    import numpy as np
    from PIL import Image, ImageOps

    from csgis.io import image_size, read_image
    rng = np.random.default_rng(0)
    base = (rng.random((30, 50, 3)) * 255).astype(np.uint8)
    base[:10, :20] = 255  # asymmetric, so every orientation differs
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.{fmt.lower()}"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(base).save(path, fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {}))
        with Image.open(path) as pil:
            upright = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
        got = read_image(path)
        assert got.shape == upright.shape and image_size(path) == (got.shape[1], got.shape[0]), orientation
        tolerance = 0 if fmt == "PNG" else 8  # two JPEG decoders
        assert np.abs(got.astype(int) - upright.astype(int)).max() <= tolerance, orientation
    assert read_image(tmp_path / f"o6.{fmt.lower()}").shape == (50, 30, 3)


def test_a_small_file_declaring_huge_dimensions_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    from csgis.io import ImageReadError, read_image

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageReadError, match=r"bomb.png: declares 12000x12000 pixels.*CSGIS_MAX_MEGAPIXELS"):
        read_image(bomb)


def test_hidden_files_and_interrupted_writes_are_not_inputs(tmp_path):
    import numpy as np

    from csgis.io import list_images, write_image
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / ".a.png.k2j3.png").write_bytes((tmp_path / "a.png").read_bytes())  # left by a killed write
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "._b.jpg").write_bytes(b"macOS resource fork")
    assert list_images(tmp_path) == [tmp_path / "a.png"]



def test_builder_overwrite_never_deletes_what_it_did_not_write(tmp_path, capsys):
    import make_demo_data
    photos = tmp_path / "photos"
    (photos / "input").mkdir(parents=True)
    (photos / "input" / "holiday.jpg").write_bytes(b"my holiday")
    assert make_demo_data.main(["--out", str(photos), "--size", "tiny", "--workers", "1", "--overwrite"]) == 2
    assert "holds no dataset.json" in one_line(capsys.readouterr().err)
    assert (photos / "input" / "holiday.jpg").read_bytes() == b"my holiday"
    # A dataset built here is replaced by --overwrite, but a file someone put into it stays.
    data = tmp_path / "data"
    assert make_demo_data.main(["--out", str(data), "--size", "tiny", "--workers", "1"]) == 0
    (data / "input" / "mine.jpg").write_bytes(b"mine")
    assert make_demo_data.main(["--out", str(data), "--size", "tiny", "--workers", "1", "--seed", "5",
                                "--overwrite"]) == 0
    assert (data / "input" / "mine.jpg").read_bytes() == b"mine"
    assert __import__("json").loads((data / "dataset.json").read_text())["seed"] == 5
    # An --out below a regular file is one line too.
    (tmp_path / "file").write_text("x")
    assert make_demo_data.main(["--out", str(tmp_path / "file" / "data"), "--size", "tiny"]) == 2
    one_line(capsys.readouterr().err)


@pytest.fixture
def smoother_file(tmp_path):
    from _helpers import tiny_smoother
    from csgis.checkpoint import save_checkpoint
    path = tmp_path / "tiny.pth"
    save_checkpoint(path, tiny_smoother())
    return path


def test_show_plans_output_names_so_none_collide(tmp_path, smoother_file, capsys):
    import numpy as np

    import show
    from csgis.checkpoint import load_smoother
    from csgis.inference import smooth_image
    from csgis.io import read_image, write_image
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    for name in ("x.png", "x_edge.png", "x_coarse.jpg"):
        write_image(inputs / name, (rng.random((20, 24, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert show.main(["--checkpoint", str(smoother_file), "--input", str(inputs), "--output", str(out),
                      "--save-edges", "--save-coarse", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "3 written, 0 skipped (outputs exist), 0 failed" in err and err.count("renamed: ") == 2
    assert len(list(out.glob("*.png"))) == 9  # 3 inputs x 3 kinds, none lost
    model = load_smoother(smoother_file)
    for name in ("x", "x_edge", "x_coarse"):  # each smoothed image under its own plain name
        source = next(inputs.glob(f"{name}.*"))
        assert np.array_equal(read_image(out / f"{name}.png"), smooth_image(model, read_image(source))["prediction"])
    expected_edge = smooth_image(model, read_image(inputs / "x.png"), outputs=("edge",))["edge"]
    assert np.array_equal(read_image(out / "x_png_edge.png")[..., 0], expected_edge)


def test_emulated_bf16_on_a_cpu_is_warned_about(tmp_path, smoother_file, capsys, monkeypatch, demo_root):
    import numpy as np

    import show
    from csgis.io import write_image
    from csgis.train import loop
    monkeypatch.setattr(show, "cpu_has_bf16", lambda: False)
    write_image(tmp_path / "in.png", np.full((24, 24, 3), 128, np.uint8))
    assert show.main(["--checkpoint", str(smoother_file), "--input", str(tmp_path / "in.png"),
                      "--output", str(tmp_path / "out"), "--device", "cpu", "--amp", "bf16"]) == 0
    assert "emulated" in capsys.readouterr().err
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)
    train(tiny_config(demo_root, tmp_path, "bf16", amp="bf16", train={"epochs": 1, "max_iters_per_epoch": 1}))
    assert "emulated" in (tmp_path / "bf16" / "train.log").read_text()


def test_show_refuses_what_would_waste_the_run(tmp_path, smoother_file, capsys, demo_root):
    import show
    image = next((demo_root / "input").glob("*.png"))
    base = ["--checkpoint", str(smoother_file), "--input", str(image), "--device", "cpu"]
    assert show.main(base + ["--output", str(tmp_path / "a"), "--tile", "1"]) == 2
    assert "--tile must be 0 (no tiling) or at least 32 px" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert show.main(base + ["--output", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err
    assert "output exists and is not a folder" in err or "cannot write into" in err
    assert "image(s) from" not in err  # refused before any smoothing


def test_show_ctrl_c_is_one_line_and_keeps_what_was_written(tmp_path, smoother_file, capsys, monkeypatch,
                                                           demo_root):
    import show
    calls = {"n": 0}
    real = show.smooth_image

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(show, "smooth_image", interrupted)
    out = tmp_path / "out"
    assert show.main(["--checkpoint", str(smoother_file), "--input", str(demo_root / "input"), "--output",
                      str(out), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(list(out.rglob("*.png"))) == 1


def test_tiny_images_keep_their_colours():
    import numpy as np

    from csgis import inference
    from csgis.checkpoint import load_smoother
    model = load_smoother(ROOT / "weights" / "demo_smoother.pth")
    flat = np.empty((2, 2, 3), np.uint8)
    flat[:] = (200, 60, 30)
    mirrored = inference.smooth_image(model, flat)["prediction"]
    assert mirrored.shape == (2, 2, 3)
    inference.MIN_SIDE = 0  # as before: the network's zero padding everywhere
    try:
        padded_with_zeros = inference.smooth_image(model, flat)["prediction"]
    finally:
        inference.MIN_SIDE = 16
    error = lambda out: np.abs(out.astype(int) - flat.astype(int)).mean()  # noqa: E731
    assert error(mirrored) < 5 and error(padded_with_zeros) > 4 * error(mirrored)


def test_evaluate_protects_the_dataset_and_says_when_it_scored_a_subset(demo_root, tmp_path, capsys,
                                                                        smoother_file):
    import shutil

    import evaluate
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    before = {p: p.read_bytes() for p in (data / "input").iterdir()}
    assert evaluate.main(["--checkpoint", str(smoother_file), "--data", str(data), "--save",
                          str(data / "input"), "--quiet"]) == 2
    assert "inside the dataset folder" in one_line(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in (data / "input").iterdir()} == before
    # An unwritable --json is found before the scoring, not after.
    (tmp_path / "file").write_text("x")
    assert evaluate.main(["--pred", str(data / "gt"), "--manifest", str(data), "--json",
                          str(tmp_path / "file" / "r.json"), "--quiet"]) == 2
    assert "cannot write into" in one_line(capsys.readouterr().err)
    # One prediction for a split of several: scored, but said to be incomplete and exit 1.
    pred = tmp_path / "pred"
    pred.mkdir()
    first = data / read_manifest(data, "test")[0]["input"]
    shutil.copy(first, pred / first.name)
    report = tmp_path / "r.json"
    assert evaluate.main(["--pred", str(pred), "--manifest", str(data), "--json", str(report), "--quiet"]) == 1
    assert "incomplete:" in capsys.readouterr().err and json.loads(report.read_text())["complete"] is False
    assert evaluate.main(["--pred", str(pred), "--manifest", str(data), "--allow-missing", "--quiet"]) == 0
    # A file name that is not UTF-8 is written and shown, not a traceback.
    odd = os.fsdecode(bytes(tmp_path / "r") + b"\xff.json")
    assert evaluate.main(["--pred", str(pred), "--manifest", str(data), "--allow-missing", "--json", odd,
                          "--quiet"]) == 0
    assert os.path.isfile(odd) and "Traceback" not in capsys.readouterr().err


def test_a_relative_segmenter_path_from_another_folder_says_so(tmp_path, monkeypatch):
    from csgis.config import load_config
    from csgis.train.tasks import SegmenterCheckpointError, build_loss_segmenter
    cfg = load_config(ROOT / "configs" / "demo.yaml")  # segmenter.checkpoint: weights/demo_segmenter.pth
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SegmenterCheckpointError, match=f"relative to the current folder {tmp_path}"):
        build_loss_segmenter(cfg, torch.device("cpu"))


def _digests(folder: Path) -> dict:
    import hashlib
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_write_rule_refuses_devices_folders_and_declared_inputs_and_follows_links(tmp_path):
    from csgis.io import WriteRefused, protect_inputs, write_text
    for target, words in ((Path("/dev/null"), "a device"), (tmp_path, "a folder")):
        with pytest.raises(WriteRefused, match=words):
            write_text(target, "x")
    assert Path("/dev/null").is_char_device()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WriteRefused, match="a FIFO"):
        write_text(fifo, "x")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "gt.png").write_text("gt")
    (tmp_path / "manifest.csv").write_text("rows")
    protect_inputs(tmp_path / "inputs", tmp_path / "manifest.csv")
    for target in (tmp_path / "inputs" / "gt.png", tmp_path / "manifest.csv"):
        with pytest.raises(WriteRefused, match="is an input of this command"):
            write_text(target, "x")
    (tmp_path / "link.csv").symlink_to(tmp_path / "manifest.csv")
    with pytest.raises(WriteRefused, match="is an input"):
        write_text(tmp_path / "link.csv", "x")             # resolved before the check
    write_text(tmp_path / "inputs" / "new.csv", "ok")       # new files beside inputs are fine
    (tmp_path / "out.csv").write_text("old")
    (tmp_path / "to_out.csv").symlink_to(tmp_path / "out.csv")
    write_text(tmp_path / "to_out.csv", "new")
    assert (tmp_path / "to_out.csv").is_symlink() and (tmp_path / "out.csv").read_text() == "new"
    assert (tmp_path / "inputs" / "gt.png").read_text() == "gt" and (tmp_path / "manifest.csv").read_text() == "rows"


def test_output_flags_never_replace_devices_or_the_commands_inputs(demo_root, tmp_path, smoother_file):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    before = _digests(data)
    gt = data / read_manifest(data, "test")[0]["gt"]
    cases = [
        (["scripts/export_weights.py", "--state", smoother_file, "--out", "/dev/null", "--overwrite"], "a device"),
        (["scripts/evaluate.py", "--pred", data / "input", "--manifest", data, "--json", "/dev/null", "--quiet"],
         "a device"),
        (["scripts/evaluate.py", "--pred", data / "input", "--manifest", data, "--csv", data / "manifest.csv",
          "--quiet"], "is an input"),
        (["scripts/evaluate.py", "--pred", data / "input", "--manifest", data, "--csv", gt, "--quiet"], "is an input"),
        (["scripts/baselines.py", "--data", data, "--filters", "gf", "--val-split", "", "--max-images", "1",
          "--json", data / "dataset.json", "--quiet"], "is an input"),
    ]
    for argv, words in cases:
        proc = run_cli(argv)
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        assert words in one_line(proc.stderr), argv
    assert Path("/dev/null").is_char_device()
    assert _digests(data) == before


def test_manifest_ids_that_are_paths_or_repeated_are_refused_by_line(demo_root, tmp_path, smoother_file):
    import shutil

    from csgis.data.manifest import ManifestError
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    text = (data / "manifest.csv").read_text()
    header, first, second = text.splitlines()[:3]
    first_id = first.split(",")[0]
    for bad, words in (("/srv/x/victim", "is a path"), ("../x", "is a path"), (".hidden", "starts with '.'")):
        (data / "manifest.csv").write_text(text.replace(first, first.replace(first_id, bad, 1), 1))
        with pytest.raises(ManifestError, match=f"manifest.csv:2: id '{re.escape(bad)}' {words}"):
            read_manifest(data)
        proc = run_cli(["scripts/evaluate.py", "--checkpoint", smoother_file, "--data", data, "--split",
                        first.split(",")[1], "--save", tmp_path / "out", "--quiet"])
        assert proc.returncode == 2 and words in one_line(proc.stderr)
    assert not Path("/srv/x/victim.png").exists() and not (tmp_path / "x.png").exists()
    second_id = second.split(",")[0]
    (data / "manifest.csv").write_text(text.replace(second, second.replace(second_id, first_id, 1), 1))
    with pytest.raises(ManifestError, match="is also on line 2"):
        read_manifest(data)


def test_resume_applies_a_new_learning_rate_and_drops_a_torn_metrics_row(demo_root, tmp_path, capsys):
    train(tiny_config(demo_root, tmp_path, "lr", train={"epochs": 1, "milestones": [], "lr": 1e-3}))
    metrics = tmp_path / "lr" / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"epoch": 2, "tra')                       # a crash while the next row was written
    train(tiny_config(demo_root, tmp_path, "lr", train={"epochs": 2, "milestones": [], "lr": 1e-2}), resume="auto")
    state = load_training_state(tmp_path / "lr" / "training_states" / "latest.state")
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [pytest.approx(1e-2)]
    log = (tmp_path / "lr" / "train.log").read_text()
    assert "applied on resume: train.lr 0.001 -> 0.01" in log
    assert "the last row is torn" in capsys.readouterr().err
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
