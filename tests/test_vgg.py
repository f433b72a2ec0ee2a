import os

import pytest
import torch

from csgis.models.segmenter import imagenet_normalize
from csgis.models.vgg import (VGG16_IMAGENET_URL, VGGFeatures, WeightsNotFoundError,
                              imagenet_vgg16_path)


def test_random_builds_only_to_deepest_tap_and_is_frozen():
    torch.manual_seed(0)
    vgg = VGGFeatures(layers=("relu2_2", "relu1_2"), weights="random")
    assert len(vgg.features) == 9                       # torchvision features[0:9] ends at relu2_2
    assert vgg.layers == ("relu1_2", "relu2_2")
    assert sum(p.numel() for p in vgg.parameters()) == 1792 + 36928 + 73856 + 147584
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    features = vgg(torch.rand(2, 3, 16, 12))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "relu1_2": (2, 64, 16, 12), "relu2_2": (2, 128, 8, 6)}
    only_first = vgg(torch.rand(1, 3, 8, 8), layers=("relu1_2",))
    assert list(only_first) == ["relu1_2"]
    with pytest.raises(ValueError, match="relu3_3"):
        vgg(torch.rand(1, 3, 8, 8), layers=("relu3_3",))


def test_unknown_tap_is_rejected():
    with pytest.raises(ValueError, match="relu5_3"):
        VGGFeatures(layers=("relu5_3",), weights="random")


def test_imagenet_missing_names_path_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = os.path.join(str(tmp_path), "hub", "checkpoints", "vgg16-397923af.pth")
    assert imagenet_vgg16_path() == expected
    with pytest.raises(WeightsNotFoundError) as info:
        VGGFeatures(layers=("relu1_2",), weights="imagenet")
    assert isinstance(info.value, FileNotFoundError)
    assert expected in str(info.value) and VGG16_IMAGENET_URL in str(info.value)


def test_imagenet_file_in_cache_and_explicit_paths_load(tmp_path, monkeypatch):
    torch.manual_seed(1)
    source = VGGFeatures(layers=("relu1_2",), weights="random")
    full = {f"features.{k}": v.clone() for k, v in source.features.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)     # full-model files carry the classifier too
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    os.makedirs(os.path.dirname(imagenet_vgg16_path()))
    torch.save(full, imagenet_vgg16_path())
    loaded = VGGFeatures(layers=("relu1_2",), weights="imagenet")
    features_only = tmp_path / "features_only.pth"
    torch.save(source.features.state_dict(), features_only)
    from_path = VGGFeatures(layers=("relu1_2",), weights=str(features_only))
    x = torch.rand(1, 3, 8, 8)
    reference = source(x)["relu1_2"]
    assert torch.equal(loaded(x)["relu1_2"], reference)
    assert torch.equal(from_path(x)["relu1_2"], reference)
    with pytest.raises(ValueError, match="features_only.pth"):  # relu2_2 layers are absent in the file
        VGGFeatures(layers=("relu2_2",), weights=str(features_only))
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        VGGFeatures(layers=("relu1_2",), weights=str(tmp_path / "nope.pth"))


def test_normalize_applies_imagenet_statistics():
    torch.manual_seed(2)
    plain = VGGFeatures(layers=("relu1_2",), weights="random")
    normalized = VGGFeatures(layers=("relu1_2",), weights="random", normalize=True)
    normalized.features.load_state_dict(plain.features.state_dict())
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(normalized(x)["relu1_2"], plain(imagenet_normalize(x))["relu1_2"])
