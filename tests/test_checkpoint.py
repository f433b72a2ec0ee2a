import os
import zipfile
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from _helpers import randomize_bn, tiny_smoother

from csgis.checkpoint import (CheckpointError, CheckpointNotFoundError, atomic_torch_save, authors_to_ours,
                              load_segmenter, load_smoother, load_training_state, ours_to_authors,
                              save_checkpoint, save_training_state)
from csgis.config import Config
from csgis.models import Smoother

TINY = dict(width=4, descriptor_blocks=2, coarse_blocks=1, refine_blocks=2)


def _model(seed: int = 0, **arch) -> Smoother:
    return tiny_smoother(seed, **(arch or TINY))


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out.edge_logits, out.coarse, out.residual, out.prediction


def _assert_same_outputs(a, b, x):
    for ta, tb in zip(_outputs(a, x), _outputs(b, x)):
        assert torch.equal(ta, tb)


# ------------------------------------------------------------------ the authors' released layout
def test_authors_key_layout():
    # Facts read from the authors' defs/networks.py (HDC_edge_refine, Descriptor_rHDC, rHDCblock).
    ours = Smoother(width=64).state_dict()
    theirs = ours_to_authors(ours)
    # 72 convolutions (weight, bias) + 68 BNs (weight, bias, running mean/var, num_batches_tracked)
    assert len(theirs) == len(ours) == 72 * 2 + 68 * 5
    for key in ("descriptor.conv_in.weight", "descriptor.res16.11.conv_3x3_3.bias",
                "descriptor.res16.0.bn_conv_3x3_2.running_var", "interpreter1.0.weight",
                "interpreter1.4.num_batches_tracked", "interpreter1.6.bias",
                "interpreter2.0.weight", "interpreter2.5.bn_conv_3x3_1.weight", "interpreter2.6.weight",
                "interpreter2.7.running_mean", "interpreter2.9.bias", "refine.0.weight",
                "refine.1.running_var", "refine.8.conv_3x3_2.weight", "refine.9.weight"):
        assert key in theirs, key
    assert theirs["descriptor.conv_in.weight"].shape == (64, 3, 3, 3)
    assert theirs["interpreter1.6.weight"].shape == (1, 64, 3, 3)
    assert theirs["interpreter2.0.weight"].shape == (64, 65, 3, 3)
    assert theirs["interpreter2.9.weight"].shape == (3, 64, 3, 3)
    assert theirs["refine.0.weight"].shape == (64, 68, 3, 3)
    assert not any(k.startswith(("interpreter1.2", "interpreter2.2", "refine.2.")) for k in theirs)  # ReLUs
    assert list(authors_to_ours(theirs)) == list(ours)
    assert all(theirs[k] is v for k, v in zip(theirs, ours.values()))  # same tensors, renamed


@pytest.mark.parametrize("descriptor_blocks", [12, 20])
def test_authors_checkpoint_loads_strictly(tmp_path, descriptor_blocks):
    source = _model(width=8, descriptor_blocks=descriptor_blocks)
    path = tmp_path / "authors.pth"
    # Their training script: {'net': net.state_dict(), 'now_epoch': epoch + 1, 'opt': opt.state_dict()}.
    torch.save({"net": ours_to_authors(source.state_dict()), "now_epoch": 3, "opt": {}}, path)
    loaded = load_smoother(path)
    assert loaded.arch == {"width": 8, "descriptor_blocks": descriptor_blocks,
                           "coarse_blocks": 3, "refine_blocks": 6}
    assert not loaded.training
    # The release was trained on cv2.imread (BGR) images; the loader records that.
    assert loaded.channel_order == "bgr"
    x = torch.rand(1, 3, 12, 11)
    source.channel_order = "bgr"
    _assert_same_outputs(loaded, source, x)
    loaded.channel_order = source.channel_order = "rgb"
    _assert_same_outputs(loaded, source, x)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_data_parallel_prefix_and_bare_state_dicts(tmp_path):
    source = _model()
    x = torch.rand(1, 3, 10, 9)
    wrapped = {f"module.{k}": v for k, v in ours_to_authors(source.state_dict()).items()}
    torch.save({"net": wrapped, "now_epoch": 1, "opt": {}}, tmp_path / "dp.pth")
    loaded = load_smoother(tmp_path / "dp.pth")
    loaded.channel_order = "rgb"
    _assert_same_outputs(loaded, source, x)
    torch.save(OrderedDict(source.state_dict()), tmp_path / "bare.pth")  # a bare state dict in our layout
    loaded = load_smoother(tmp_path / "bare.pth")
    assert loaded.channel_order == "rgb" and loaded.arch == TINY
    _assert_same_outputs(loaded, source, x)


# ------------------------------------------------------------------------------- our own format
def test_save_checkpoint_round_trip(tmp_path):
    source = _model()
    cfg = Config()
    cfg.model.width = 4
    path = tmp_path / "models" / "net_best.pth"
    save_checkpoint(path, source, cfg, epoch=5, iteration=120, metric=np.float64(0.875),
                    extra={"note": "x"})
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain torch can read it safely
    assert raw["format"] == "csgis" and raw["kind"] == "smoother"
    assert raw["arch"] == TINY
    assert isinstance(raw["config"], dict) and raw["config"]["model"]["width"] == 4
    assert (raw["epoch"], raw["iteration"], raw["metric"], raw["note"]) == (5, 120, 0.875, "x")
    assert type(raw["metric"]) is float
    assert raw["channel_order"] == "rgb"
    assert sorted(os.listdir(path.parent)) == ["net_best.pth"]  # no temporary file left behind
    loaded = load_smoother(path)
    assert loaded.arch == TINY and not loaded.training
    _assert_same_outputs(loaded, source, torch.rand(2, 3, 9, 13))
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pth", source, extra={"arch": {}})


def test_input_skip_travels_in_the_arch_or_the_config_not_the_weights(tmp_path):
    """model.input_skip changes the output, not the weights: every file that can name it does, and a
    file that cannot (a bare state dict) loads as the paper's network."""
    from csgis.checkpoint import init_smoother, smoother_from_state

    source = _model(**TINY, input_skip=True)
    x = torch.rand(1, 3, 9, 10)
    path = tmp_path / "skip.pth"
    save_checkpoint(path, source)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["arch"] == {**TINY, "input_skip": True}
    loaded = load_smoother(path)
    assert loaded.arch == {**TINY, "input_skip": True}
    _assert_same_outputs(loaded, source, x)
    # A training state names it in its config (model.input_skip), as csgis.train writes it.
    state = {"format": "csgis-training-state", "task": "smoothing", "model": source.state_dict(),
             "config": {"model": {"input_skip": True}}}
    save_training_state(tmp_path / "latest.state", state)
    _assert_same_outputs(smoother_from_state(tmp_path / "latest.state")[0], source, x)
    # The same weights without the flag are the paper's network, whose output differs.
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    bare = load_smoother(tmp_path / "bare.pth")
    assert "input_skip" not in bare.arch
    assert not torch.allclose(bare(x).prediction, source(x).prediction)
    # Fine-tuning keeps it: model.init of a skip file into a network without the skip is refused.
    init_smoother(_model(seed=1, **TINY, input_skip=True), path)
    with pytest.raises(CheckpointError, match="model.init"):
        init_smoother(_model(seed=1, **TINY), path)
    raw["arch"]["input_skip"] = "yes"
    torch.save(raw, tmp_path / "odd.pth")
    _assert_checkpoint_error(load_smoother, tmp_path / "odd.pth", "input_skip must be true or false")


def test_atomic_save_replaces_whole_files_only(tmp_path):
    path = tmp_path / "state.pth"
    atomic_torch_save({"step": 1}, path)
    atomic_torch_save({"step": 2, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 2
    with pytest.raises(TypeError):
        atomic_torch_save({"step": 3, "cfg": Config()}, path)  # refused before anything is written
    assert torch.load(path, weights_only=True)["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["state.pth"]


def test_save_refuses_objects_that_weights_only_cannot_read(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "bad.pth", _model(), None, extra={"cfg": Config()})
    assert not os.listdir(tmp_path)


def test_training_state_round_trip_and_model_entry(tmp_path):
    source = _model()
    # What an Adam optimizer and a MultiStepLR scheduler put in their state dicts (a tuple, a
    # Counter, tensors); built by hand because constructing torch.optim imports torch._dynamo (slow).
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3, 3, 3)}},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1]}]}
    scheduler = {"milestones": Counter({40: 1, 80: 1}), "gamma": 0.5, "last_epoch": 2, "_last_lr": [1e-3]}
    state = {"model": source.state_dict(), "arch": dict(source.arch), "optimizer": optimizer,
             "scheduler": scheduler, "epoch": 2, "iteration": 10, "best_metric": 0.5,
             "rng": torch.get_rng_state()}
    path = tmp_path / "training_states" / "2.state"
    save_training_state(path, state)
    back = load_training_state(path)
    assert back["epoch"] == 2 and back["scheduler"]["milestones"] == Counter({40: 1, 80: 1})
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], optimizer["state"][0]["exp_avg"])
    assert torch.equal(back["rng"], state["rng"])
    assert sorted(os.listdir(path.parent)) == ["2.state"]
    _assert_same_outputs(load_smoother(path), source, torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError):
        save_training_state(tmp_path / "x.state", [1, 2])


# --------------------------------------------------------------------------------- bad files
def _assert_checkpoint_error(loader, path, *fragments):
    with pytest.raises(CheckpointError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_files_raise_checkpoint_error(tmp_path):
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    good = tmp_path / "good.pth"
    save_checkpoint(good, _model())
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for loader in (load_smoother, load_segmenter, load_training_state):
        _assert_checkpoint_error(loader, random_bytes, "not a readable PyTorch checkpoint", "expected")
        _assert_checkpoint_error(loader, empty, "empty file", "expected")
        _assert_checkpoint_error(loader, truncated, "not a readable PyTorch checkpoint")
    with pytest.raises(CheckpointNotFoundError, match="missing.pth"):
        load_smoother(tmp_path / "missing.pth")
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


def test_foreign_pickles_are_refused_not_executed(tmp_path):
    path = tmp_path / "pickled_config.pth"
    torch.save({"net": {}, "config": Config()}, path)  # a dataclass: needs full unpickling
    _assert_checkpoint_error(load_smoother, path, "pickled Python objects (csgis.config.Config)")


def test_wrong_architecture_raises_checkpoint_error(tmp_path):
    source = _model()
    # A state dict whose width does not fit together: a width-8 edge head on a width-4 trunk.
    state = source.state_dict()
    state["edge_head.conv1.weight"] = torch.zeros(8, 4, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "misfit.pth")
    _assert_checkpoint_error(load_smoother, tmp_path / "misfit.pth", "do not fit", "edge_head.conv1.weight")
    # Missing keys (a refine head without its output conv).
    state = source.state_dict()
    del state["refine_head.conv_out.weight"]
    torch.save({"model": state}, tmp_path / "missing_key.pth")
    _assert_checkpoint_error(load_smoother, tmp_path / "missing_key.pth", "do not fit",
                             "refine_head.conv_out.weight")
    # Some other network entirely.
    torch.save({"state_dict": torch.nn.Linear(3, 2).state_dict()}, tmp_path / "linear.pth")
    _assert_checkpoint_error(load_smoother, tmp_path / "linear.pth", "stem.weight", "expected")
    # The stated arch disagrees with the weights.
    save_checkpoint(tmp_path / "ours.pth", source)
    raw = torch.load(tmp_path / "ours.pth", weights_only=True)
    raw["arch"]["width"] = 64
    torch.save(raw, tmp_path / "lying.pth")
    _assert_checkpoint_error(load_smoother, tmp_path / "lying.pth", "disagrees")


# ---------------------------------------------------------------------------------- segmenter
def _segmenter(num_classes: int):
    from csgis.models.segmenter import deeplabv3plus_mobilenet

    torch.manual_seed(0)
    model = deeplabv3plus_mobilenet(num_classes=num_classes, output_stride=16)
    randomize_bn(model)
    return model.eval()


def _as_numpy1_pickle(path) -> None:
    """Rewrite a torch.save zip as numpy 1.x would have pickled it (numpy.core, not numpy._core)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            archive.writestr(info, data)


def test_deeplab_checkpoint_loads_and_mismatches_are_refused(tmp_path):
    source = _segmenter(num_classes=5)
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        expected = source(x)
    # DeepLabV3Plus-Pytorch's main.py: best_score is a numpy float64 (np.nanmean of the IoUs).
    vainf = tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth"
    torch.save({"cur_itrs": 30000, "model_state": source.state_dict(), "optimizer_state": {},
                "scheduler_state": {"last_epoch": 3}, "best_score": np.float64(0.711)}, vainf)
    for numpy_version in ("2.x", "1.x"):  # the released file was written under numpy 1.x
        if numpy_version == "1.x":
            _as_numpy1_pickle(vainf)
        loaded = load_segmenter(vainf)
        assert loaded.num_classes == 5 and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    # Ours, from a DataParallel-wrapped model, read back at output stride 8.
    ours = tmp_path / "segmenter.pth"
    save_checkpoint(ours, torch.nn.DataParallel(source))
    raw = torch.load(ours, weights_only=True)
    assert raw["kind"] == "segmenter" and raw["arch"] == {"num_classes": 5, "output_stride": 16}
    assert not any(k.startswith("module.") for k in raw["state_dict"])
    assert load_segmenter(ours, output_stride=8).output_stride == 8
    # Cross-loading is refused with a message that says what the file is.
    _assert_checkpoint_error(load_smoother, vainf, "segmenter", "expected")
    _assert_checkpoint_error(load_smoother, ours, "'segmenter' checkpoint")
    smoother = tmp_path / "smoother.pth"
    save_checkpoint(smoother, _model())
    _assert_checkpoint_error(load_segmenter, smoother, "'smoother' checkpoint")
    torch.save({"net": ours_to_authors(_model().state_dict())}, tmp_path / "authors.pth")
    _assert_checkpoint_error(load_segmenter, tmp_path / "authors.pth", "looks like a CSGIS smoother")
