"""train.py's command line and the shipped configs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import train as train_cli
from _helpers import tiny_config
from csgis.checkpoint import load_training_state
from csgis.config import flatten, from_dict, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
ABLATIONS = ["ablation_baseline", "ablation_contrastive", "ablation_semantic", "ablation_full"]


def tiny_yaml(path: Path, demo_root: Path, exp_dir: Path, repeat: int = 1, **train) -> Path:
    """One epoch of 8 * `repeat` steps (16 training samples, batch 2) of a tiny smoother, as a config file."""
    cfg = tiny_config(demo_root, exp_dir, "cli", seed=0, data={"repeat": repeat},
                      train={"epochs": 1, "batch_size": 2, "log_every": 1, "save_every": 1, **train})
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def wait_for_step(run: Path, step: int, timeout: float = 120) -> None:
    """Wait until a training process started on `run` has logged `step`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = run / "train.log"
        if log.is_file() and f"step {step} " in log.read_text():
            return
        time.sleep(0.2)
    pytest.fail("training did not start in time")


# ----------------------------------------------------------------------------- errors
def test_unknown_override_key_exits_2_naming_the_key():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "demo.yaml"),
                           "train.no_such_key=3"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.no_such_key" in lines[0] and "Traceback" not in proc.stderr


def test_overrides_may_stand_on_both_sides_of_a_flag():
    args = train_cli.parse_args(["--config", "c.yaml", "name=x", "--resume", "train.epochs=3", "--overwrite"])
    assert args.overrides == ["name=x", "train.epochs=3"] and args.resume and args.overwrite


def test_unknown_key_in_the_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nloss:\n  contrastiv: 1.0\n")
    assert train_cli.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "loss.contrastiv" in err and str(bad) in err


def test_missing_segmenter_exits_2_with_instructions(tmp_path, demo_root, capsys):
    config = tiny_yaml(tmp_path / "c.yaml", demo_root, tmp_path / "exp")
    code = train_cli.main(["--config", str(config), "loss.segmentation=1", "segmenter.checkpoint=absent.pth"])
    err = capsys.readouterr().err
    assert code == 2 and "absent.pth" in err and "demo_segmenter.yaml" in err
    # The failed set-up left only config.yaml/train.log: after fixing the config, the same
    # command trains in the same folder instead of refusing it as an existing run.
    assert train_cli.main(["--config", str(config), "train.epochs=1"]) == 0
    assert (tmp_path / "exp" / "cli" / "models" / "latest.pth").is_file()
    assert not [p for p in (tmp_path / "exp").iterdir() if "archived" in p.name]


def test_sigterm_saves_a_state_then_resume_and_refusal(tmp_path, demo_root, capsys):
    # 32 steps per epoch (16 samples x repeat 4, batch 2), so the signal sent after step 2 usually lands
    # mid-epoch; on a fast machine it may land later, so the checks hold wherever it lands.
    steps_per_epoch = 32
    config = tiny_yaml(tmp_path / "c.yaml", demo_root, tmp_path / "exp", repeat=4, epochs=50)
    run = tmp_path / "exp" / "cli"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_for_step(run, 2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "SIGTERM" in stderr and "--resume" in stderr
    state = load_training_state(run / "training_states" / "latest.state")
    assert state["global_step"] >= 2
    assert state["global_step"] == steps_per_epoch * state["epoch"] + state["batch_in_epoch"]

    # A fresh start in that folder is refused with one line; --resume continues to the end of the
    # epoch the signal interrupted.
    epochs = state["epoch"] + 1
    assert train_cli.main(["--config", str(config)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train_cli.main(["--config", str(config), "--resume", f"train.epochs={epochs}"]) == 0
    done = load_training_state(run / "training_states" / "latest.state")
    assert done["epoch"] == epochs and done["global_step"] == steps_per_epoch * epochs
    assert (run / "models" / "best.pth").is_file()
    # On resume the changed config is written and the previous one kept beside it.
    assert load_config(run / "config.yaml").train.epochs == epochs
    assert len(list(run.glob("config.before_resume_*.yaml"))) == 1


def test_sigterm_to_the_whole_process_group_with_workers_saves_a_state(tmp_path, demo_root):
    """Slurm's scancel, `kill -- -PGID` and container stops signal every process, DataLoader workers
    included: the workers must not die mid-step in a way that aborts the main process with a
    traceback before it saves its state."""
    config = tiny_yaml(tmp_path / "c.yaml", demo_root, tmp_path / "exp", epochs=50)
    run = tmp_path / "exp" / "cli"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(config), "data.num_workers=2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    try:
        wait_for_step(run, 3)
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and "SIGTERM" in stderr and "--resume" in stderr
    state = load_training_state(run / "training_states" / "latest.state")
    assert state["global_step"] >= 3 and state["global_step"] == 8 * state["epoch"] + state["batch_in_epoch"]


# ----------------------------------------------------------------------------- shipped configs
def test_every_config_loads():
    names = {p.stem for p in CONFIGS}
    assert {"paper", "release_compat", "demo", "demo_segmenter", *ABLATIONS} <= names
    for path in CONFIGS:
        load_config(path)


def test_paper_config_is_spec_section_5():
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert (cfg.train.lr, cfg.train.milestones, cfg.train.gamma, cfg.train.epochs) == (1e-3, [40, 80, 120, 150, 190], 0.5, 150)
    assert (cfg.data.patch_size, cfg.train.batch_size, cfg.data.hflip, cfg.data.rotate) == (128, 8, 0.5, 45.0)
    assert cfg.data.brightness == [0.3, 1.7] and cfg.data.contrast == [0.3, 1.7] and cfg.data.hue == 0.3
    assert (cfg.model.width, cfg.model.descriptor_blocks, cfg.model.coarse_blocks, cfg.model.refine_blocks) == (64, 12, 3, 6)
    assert (cfg.loss.l1, cfg.loss.ssim, cfg.loss.edge, cfg.loss.dtv, cfg.loss.contrastive, cfg.loss.segmentation) == (1, 0.1, 0.001, 0, 1, 1)
    assert (cfg.loss.margin_pixel, cfg.loss.margin_vgg, cfg.loss.negatives) == (0.3, 0.04, "coin")
    assert cfg.segmenter.checkpoint.endswith("best_deeplabv3plus_mobilenet_voc_os16.pth")
    assert (cfg.segmenter.output_stride, cfg.segmenter.eval_mode, cfg.loss.seg_input, cfg.loss.seg_normalize) == (16, True, "prediction", True)
    assert cfg.data.root == "data/voc_smooth" and cfg.task == "smoothing"


def test_ablations_differ_only_in_their_switches():
    paper = flatten(load_config(ROOT / "configs" / "paper.yaml"))
    switches = {"ablation_baseline": (0, 0), "ablation_contrastive": (1, 0), "ablation_semantic": (0, 1), "ablation_full": (1, 1)}
    for name, (contrastive, segmentation) in switches.items():
        flat = flatten(load_config(ROOT / "configs" / f"{name}.yaml"))
        assert (flat["loss.contrastive"], flat["loss.segmentation"], flat["name"]) == (contrastive, segmentation, name)
        differing = {k for k in flat if flat[k] != paper[k]}
        assert differing <= {"name", "loss.contrastive", "loss.segmentation"}, (name, differing)


def test_config_deltas_state_only_what_differs():
    """Ablation and release files are deltas on paper.yaml (demo ablations on demo.yaml): each
    names its base and holds no key that equals what it inherits."""
    import yaml
    from csgis.config import read_config_file
    for name in [*ABLATIONS, "release_compat", "demo_baseline", "demo_contrastive", "demo_semantic"]:
        own = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        base = ROOT / "configs" / own.pop("base")
        inherited = flatten(from_dict(read_config_file(base)))
        stated = flatten(from_dict(own))

        def leaves(d, prefix=""):
            for key, value in d.items():
                yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
        repeated = [k for k in leaves(own) if stated[k] == inherited[k]]
        assert not repeated, f"{name}.yaml repeats inherited values: {repeated}"


def test_demo_ablations_differ_from_demo_only_in_their_switches():
    demo = flatten(load_config(ROOT / "configs" / "demo.yaml"))
    switches = {"demo_baseline": (0, 0), "demo_contrastive": (demo["loss.contrastive"], 0),
                "demo_semantic": (0, demo["loss.segmentation"])}
    for name, (contrastive, segmentation) in switches.items():
        flat = flatten(load_config(ROOT / "configs" / f"{name}.yaml"))
        assert (flat["loss.contrastive"], flat["loss.segmentation"]) == (contrastive, segmentation), name
        assert {k for k in flat if flat[k] != demo[k]} <= {"name", "loss.contrastive", "loss.segmentation"}


def test_release_compat_reproduces_the_release_switches():
    paper = flatten(load_config(ROOT / "configs" / "paper.yaml"))
    flat = flatten(load_config(ROOT / "configs" / "release_compat.yaml"))
    assert {k for k in flat if flat[k] != paper[k]} == {
        "name", "segmenter.output_stride", "segmenter.eval_mode", "loss.seg_input", "loss.seg_normalize"}
    assert (flat["segmenter.output_stride"], flat["segmenter.eval_mode"], flat["loss.seg_input"],
            flat["loss.seg_normalize"], flat["loss.negatives"], flat["segmenter.train_segmenter"]) == (8, False, "input", False, "coin", False)


def test_demo_configs_chain_and_need_no_downloads():
    demo = load_config(ROOT / "configs" / "demo.yaml")
    seg = load_config(ROOT / "configs" / "demo_segmenter.yaml")
    assert seg.task == "segmentation" and seg.data.root == demo.data.root == "data/demo"
    # demo.yaml trains on a fresh machine: its segmenter is the shipped one that demo_segmenter.yaml made.
    assert demo.segmenter.checkpoint == "weights/demo_segmenter.pth"
    assert (ROOT / demo.segmenter.checkpoint).is_file()
    assert demo.train.freeze_bn and not load_config(ROOT / "configs" / "paper.yaml").train.freeze_bn
    assert demo.loss.vgg_weights == "random" and demo.loss.segmentation > 0 and demo.loss.contrastive > 0
    assert demo.model.width <= 32 and seg.loss.seg_normalize == demo.loss.seg_normalize


def test_model_init_starts_from_a_checkpoints_weights(tmp_path, demo_root, capsys):
    """model.init (fine-tuning): the run starts from the file's weights; another architecture is
    one clear line and exit 2, before anything is trained."""
    from csgis.checkpoint import load_smoother
    config = tiny_yaml(tmp_path / "c.yaml", demo_root, tmp_path / "exp")
    assert train_cli.main(["--config", str(config), "train.epochs=1"]) == 0
    start = tmp_path / "exp" / "cli" / "models" / "latest.pth"
    # At a vanishing learning rate the fine-tuned run ends where it began; a fresh one does not.
    for name, init in (("tuned", [f"model.init={start}"]), ("fresh", [])):
        assert train_cli.main(["--config", str(config), f"name={name}", "train.epochs=1", "train.lr=1e-30", *init]) == 0
    begun = dict(load_smoother(start).named_parameters())  # (BatchNorm's running statistics do move)
    for name, same in (("tuned", True), ("fresh", False)):
        ended = dict(load_smoother(tmp_path / "exp" / name / "models" / "latest.pth").named_parameters())
        assert all(torch.allclose(ended[k], v, atol=1e-6) for k, v in begun.items()) == same, name
    capsys.readouterr()
    code = train_cli.main(["--config", str(config), "name=wider", f"model.init={start}", "model.width=6"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and str(start) in err and "model.init" in err
