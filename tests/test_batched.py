"""data.pipeline=device: the split held as tensors, batches augmented in one go (csgis.data.batched)."""
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from _helpers import assert_resume_is_exact, assert_same_tensors
from csgis.data.batched import DeviceBank, _hsv_to_rgb, _rgb_to_hsv, augment_batch, device_epoch
from csgis.data.datasets import make_sample
from csgis.data.manifest import IGNORE_INDEX

IDENTITY = dict(hflip=0.0, rotate=0.0, brightness=(1.0, 1.0), contrast=(1.0, 1.0), hue=0.0)


class Pictures(Dataset):
    """Random pictures of different sizes; labels are distinct per pixel row, so windows can be found."""

    def __init__(self, sizes=((40, 52), (33, 30), (48, 48)), same_input=False, seed=0):
        rng = np.random.default_rng(seed)
        self.items = []
        for i, (h, w) in enumerate(sizes):
            gt = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            textured = gt.copy() if same_input else (rng.random((h, w, 3)) * 255).astype(np.uint8)
            over = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            edge = (rng.random((h, w)) > 0.7).astype(np.uint8)
            seg = rng.integers(0, 21, (h, w)).astype(np.uint8)
            self.items.append(make_sample(textured, gt, edge, seg, over, f"p{i}"))

    def __len__(self):
        return len(self.items)

    def load(self, index):
        return self.items[index]


def find_window(source: torch.Tensor, patch: torch.Tensor) -> tuple[int, int]:
    """(top, left) where `patch` (C,p,p) is a window of `source` (C,H,W) (to 1e-4)."""
    p = patch.shape[-1]
    for top in range(source.shape[1] - p + 1):
        for left in range(source.shape[2] - p + 1):
            if torch.allclose(source[:, top:top + p, left:left + p], patch, atol=1e-4):
                return top, left
    raise AssertionError("not a window of the source")


def test_unrotated_windows_are_exact_copies_of_all_five_tensors():
    data = Pictures()
    bank = DeviceBank(data, torch.device("cpu"))
    assert bank.images.shape == (3, 9, 48, 52) and bank.sizes.tolist() == [[40, 52], [33, 30], [48, 48]]
    out = augment_batch(bank, torch.tensor([0, 1, 2, 0]), 24, generator=torch.Generator().manual_seed(1),
                        **IDENTITY)
    assert out["input"].shape == (4, 3, 24, 24) and out["seg"].dtype == torch.int64 and out["edge"].shape == (4, 1, 24, 24)
    for k, index in enumerate([0, 1, 2, 0]):
        source = data.items[index]
        top, left = find_window(source["gt"], out["gt"][k])
        window = (slice(top, top + 24), slice(left, left + 24))
        for key in ("input", "over_smoothed"):
            assert torch.allclose(out[key][k], source[key][(slice(None), *window)], atol=1e-4), key
        assert torch.equal(out["edge"][k, 0], source["edge"][0][window])
        assert torch.equal(out["seg"][k], source["seg"][window])


def test_small_images_are_padded_like_the_per_sample_transform():
    data = Pictures(sizes=((20, 18),))
    bank = DeviceBank(data, torch.device("cpu"))
    out = augment_batch(bank, torch.tensor([0] * 6), 32, generator=torch.Generator().manual_seed(3), **IDENTITY)
    source = data.items[0]
    for k in range(6):
        inside = out["seg"][k] != IGNORE_INDEX
        assert inside.sum() == 20 * 18  # the whole image, once; the rest is ignore
        assert (out["edge"][k, 0][~inside] == 0).all()
        assert set(out["seg"][k][inside].tolist()) <= set(source["seg"].flatten().tolist())
        assert out["input"][k][:, ~inside].std() > 0.05  # mirrored content, not a black fill


def test_rotation_and_flip_keep_labels_discrete_and_aligned():
    data = Pictures(same_input=True)
    bank = DeviceBank(data, torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    out = augment_batch(bank, torch.arange(3).repeat(4), 20, hflip=0.5, rotate=45.0, brightness=(0.5, 1.5),
                        contrast=(0.5, 1.5), hue=0.3, generator=generator)
    values = set().union(*(set(item["seg"].flatten().tolist()) for item in data.items)) | {IGNORE_INDEX}
    assert set(out["seg"].unique().tolist()) <= values
    assert set(out["edge"].unique().tolist()) <= {0.0, 1.0}
    # input == gt in the source: one geometry and one set of colour factors keep them equal.
    assert torch.allclose(out["input"], out["gt"], atol=1e-6)
    assert not torch.allclose(out["gt"], out["over_smoothed"])


def test_hue_shift_matches_torchvision():
    rgb = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(rgb)), rgb, atol=1e-5)
    for shift in (-0.3, 0.1, 0.25):
        hsv = _rgb_to_hsv(rgb)
        hsv[:, :, 0] = torch.remainder(hsv[:, :, 0] + shift, 1.0)
        assert torch.allclose(_hsv_to_rgb(hsv), TF.adjust_hue(rgb, shift), atol=1e-4), shift


def test_an_epoch_is_reproducible_and_a_resumed_one_skips_exactly():
    from csgis.config import DataConfig
    bank = DeviceBank(Pictures(), torch.device("cpu"))
    cfg = DataConfig(patch_size=16)
    order = [2, 0, 1, 1, 0, 2, 2, 1]
    full = list(device_epoch(bank, order, 2, 0, cfg, seed=3, epoch=4))
    again = list(device_epoch(bank, order, 2, 0, cfg, seed=3, epoch=4))
    tail = list(device_epoch(bank, order, 2, 2, cfg, seed=3, epoch=4))
    other = list(device_epoch(bank, order, 2, 0, cfg, seed=3, epoch=5))
    assert len(full) == 4 and len(tail) == 2
    for a, b in zip(full, again):
        assert_same_tensors(a, b, "same seed")
    for a, b in zip(full[2:], tail):
        assert_same_tensors(a, b, "resumed")
    assert not torch.equal(full[0]["gt"], other[0]["gt"])


def test_training_with_the_device_pipeline_resumes_exactly(demo_root, tmp_path):
    straight = assert_resume_is_exact(demo_root, tmp_path, data={"pipeline": "device", "num_workers": 0})
    assert straight["global_step"] == 16 and straight["history"][1]["train"]["l1"] < straight["history"][0]["train"]["l1"]
    assert "data.pipeline device: 16 training samples" in (tmp_path / "straight" / "train.log").read_text()


def test_a_flip_mirrors_all_five_tensors_together():
    data = Pictures()
    bank = DeviceBank(data, torch.device("cpu"))
    out = augment_batch(bank, torch.tensor([0, 2]), 24, generator=torch.Generator().manual_seed(2),
                        **dict(IDENTITY, hflip=1.0))
    for k, index in enumerate([0, 2]):
        source = data.items[index]
        top, left = find_window(source["gt"], out["gt"][k].flip(-1))
        window = (slice(top, top + 24), slice(left, left + 24))
        assert torch.allclose(out["input"][k].flip(-1), source["input"][(slice(None), *window)], atol=1e-4)
        assert torch.equal(out["seg"][k].flip(-1), source["seg"][window])
        assert torch.equal(out["edge"][k, 0].flip(-1), source["edge"][0][window])
