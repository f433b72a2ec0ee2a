"""Datasets: manifest folders, the authors' released layout, online blending, build_dataset."""
import csv

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from csgis import io
from csgis.config import DataConfig
from csgis.data import (DatasetError, ManifestDataset, OnlineBlendDataset, ReleasedLayoutDataset,
                        RepeatDataset, blend, build_dataset)
from csgis.data.datasets import colors_to_labels, read_seg


def make_gt(seed, h=24, w=32):
    """Flat-colour blocks: a GT with clear edges, and its class labels."""
    rng = np.random.default_rng(seed)
    gt = np.empty((h, w, 3), np.uint8)
    gt[:] = rng.integers(0, 256, 3)
    seg = np.zeros((h, w), np.uint8)
    t, l = rng.integers(2, h // 2), rng.integers(2, w // 2)
    gt[t:t + h // 3, l:l + w // 3] = rng.integers(0, 256, 3)
    gt[t:t + h // 3, l:l + w // 3, 2] = (int(gt[0, 0, 2]) + 128) % 256  # visible on the blue channel
    seg[t:t + h // 3, l:l + w // 3] = 1 + seed % 20
    seg[0, :] = 255
    return gt, seg


def texture(seed, size=8, low=0, high=256):
    return np.random.default_rng(100 + seed).integers(low, high, (size, size), dtype=np.uint8)


# --- manifest --------------------------------------------------------------------------------

def write_manifest_folder(root, n=3, with_seg=True, edge_scale=255):
    rows = []
    for i in range(n):
        gt, seg = make_gt(i)
        sid = f"s{i}"
        io.write_image(root / "gt" / f"{sid}.png", gt)
        io.write_image(root / "input" / f"{sid}.png", blend.blend_texture(gt, texture(i)))
        io.write_image(root / "edge" / f"{sid}.png", blend.edge_label(gt) * np.uint8(edge_scale))
        io.write_image(root / "over" / f"{sid}.png", (gt // 2).astype(np.uint8))
        if with_seg:
            io.write_label(root / "seg" / f"{sid}.png", seg)
        rows.append({"id": sid, "split": "train" if i < n - 1 else "val", "input": f"input/{sid}.png",
                     "gt": f"gt/{sid}.png", "edge": f"edge/{sid}.png",
                     "seg": f"seg/{sid}.png" if with_seg else "", "over": f"over/{sid}.png"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "split", "input", "gt", "edge", "seg", "over"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.mark.parametrize("edge_scale", [1, 255])
def test_manifest_dataset_items(tmp_path, edge_scale):
    write_manifest_folder(tmp_path, edge_scale=edge_scale)
    ds = ManifestDataset(tmp_path, "train")
    assert len(ds) == 2
    item = ds[1]
    gt, seg = make_gt(1)
    assert item["id"] == "s1"
    assert item["input"].shape == item["gt"].shape == item["over_smoothed"].shape == (3, 24, 32)
    assert item["input"].dtype == torch.float32 and item["seg"].dtype == torch.int64
    assert torch.equal(item["gt"], torch.from_numpy(gt.transpose(2, 0, 1).copy()).float() / 255)
    assert torch.equal(item["seg"], torch.from_numpy(seg).long())
    assert torch.equal(item["edge"][0], torch.from_numpy(blend.edge_label(gt)).float())
    assert int(item["edge"].sum()) > 10
    expected_input = blend.blend_texture(gt, texture(1))
    assert torch.equal((item["input"] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(expected_input))
    assert ManifestDataset(tmp_path, "val")[0]["id"] == "s2"


def test_manifest_without_seg_gives_ignore_labels(tmp_path):
    write_manifest_folder(tmp_path, with_seg=False)
    item = ManifestDataset(tmp_path, "train")[0]
    assert item["seg"].shape == (24, 32) and bool((item["seg"] == 255).all())


def test_manifest_missing_split_names_manifest_and_splits(tmp_path):
    write_manifest_folder(tmp_path)
    with pytest.raises(DatasetError) as err:
        ManifestDataset(tmp_path, "test")
    msg = str(err.value)
    assert "manifest.csv" in msg and "'test'" in msg and "train" in msg and "val" in msg


def test_manifest_size_mismatch_names_both_files(tmp_path):
    write_manifest_folder(tmp_path)
    io.write_image(tmp_path / "over" / "s0.png", np.zeros((20, 32, 3), np.uint8))
    with pytest.raises(DatasetError) as err:
        ManifestDataset(tmp_path, "train")[0]
    assert "over/s0.png" in str(err.value) and "gt/s0.png" in str(err.value)


def test_manifest_zero_byte_and_non_image_files_are_named(tmp_path):
    write_manifest_folder(tmp_path)
    (tmp_path / "input" / "s0.png").write_bytes(b"")
    (tmp_path / "seg" / "s1.png").write_text("not an image")
    ds = ManifestDataset(tmp_path, "train")
    with pytest.raises(io.ImageReadError, match=r"input/s0\.png.*empty"):
        ds[0]
    with pytest.raises(io.ImageReadError, match=r"seg/s1\.png"):
        ds[1]


# --- released layout -------------------------------------------------------------------------

N_GT = 3


def write_released_folder(root, n_textures=2, splits=("train", "val")):
    """The authors' layout: <split>/<t*N_GT+k>.png = [GT | input]; edge/seg/over/<k>.png."""
    gts = [make_gt(k) for k in range(N_GT)]
    palette = np.array(io.voc_palette(), np.uint8).reshape(256, 3)
    for k, (gt, seg) in enumerate(gts):
        io.write_image(root / "edge" / f"{k}.png", blend.edge_label(gt) * np.uint8(255))
        io.write_image(root / "over" / f"{k}.png", (255 - gt).astype(np.uint8))
        if k == 1:  # what the release's rename script leaves: the label rendered in colour
            io.write_image(root / "seg" / f"{k}.png", palette[seg])
        else:
            io.write_label(root / "seg" / f"{k}.png", seg)
    for split in splits:
        for t in range(n_textures):
            for k, (gt, _) in enumerate(gts):
                pair = np.concatenate([gt, blend.blend_texture(gt, texture(t))], axis=1)
                io.write_image(root / split / f"{t * N_GT + k}.png", pair)
    return gts


def test_released_layout_reader(tmp_path):
    gts = write_released_folder(tmp_path)
    ds = ReleasedLayoutDataset(tmp_path, "train", n_gt=N_GT)
    assert len(ds) == 2 * N_GT
    assert [n for n, _ in ds.files] == list(range(6))
    item = ds[4]  # texture 1, GT 4 % 3 = 1 (whose seg file is colour-rendered)
    gt, seg = gts[1]
    assert item["id"] == "4"
    assert torch.equal((item["gt"] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(gt))
    expected_input = blend.blend_texture(gt, texture(1))
    assert torch.equal((item["input"] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(expected_input))
    assert torch.equal(item["seg"], torch.from_numpy(seg).long())
    assert torch.equal(item["edge"][0], torch.from_numpy(blend.edge_label(gt)).float())
    assert torch.equal((item["over_smoothed"] * 255).round().byte().permute(1, 2, 0),
                       torch.from_numpy(255 - gt))
    # GT 0 via a palette label: indices kept.
    assert torch.equal(ds[3]["seg"], torch.from_numpy(gts[0][1]).long())
    assert len(ReleasedLayoutDataset(tmp_path, "val", n_gt=N_GT)) == 6


def test_released_layout_errors(tmp_path):
    write_released_folder(tmp_path, splits=("train",))
    with pytest.raises(DatasetError, match=r"split 'val'.*present: edge, over, seg, train"):
        ReleasedLayoutDataset(tmp_path, "val", n_gt=N_GT)
    with pytest.raises(DatasetError, match=r"edge.*3\.png"):
        ReleasedLayoutDataset(tmp_path, "train", n_gt=4)  # GT index 3 has no edge file
    bad = np.array(io.read_image(tmp_path / "seg" / "1.png"))
    bad[5, 7] = (1, 2, 3)
    io.write_image(tmp_path / "seg" / "1.png", bad)
    with pytest.raises(DatasetError, match=r"seg/1\.png: colour RGB\(1, 2, 3\) at \(row 5, col 7\)"):
        ReleasedLayoutDataset(tmp_path, "train", n_gt=N_GT)[1]
    io.write_image(tmp_path / "train" / "9.png", np.zeros((24, 63, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"train/9\.png: width 63 is odd"):
        ReleasedLayoutDataset(tmp_path, "train", n_gt=N_GT)[6]
    io.write_image(tmp_path / "train" / "copy of 1.png", np.zeros((24, 64, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"copy of 1\.png: released sample names must be integers"):
        ReleasedLayoutDataset(tmp_path, "train", n_gt=N_GT)


def test_colors_to_labels_round_trip():
    labels = np.array([[0, 1, 20], [255, 15, 7]], np.uint8)
    rgb = np.array(io.voc_palette(), np.uint8).reshape(256, 3)[labels]
    assert np.array_equal(colors_to_labels(rgb), labels)


def test_read_seg_accepts_gray_index_png(tmp_path):
    labels = np.array([[0, 3], [255, 20]], np.uint8)
    from PIL import Image
    Image.fromarray(labels, mode="L").save(tmp_path / "l.png")
    assert np.array_equal(read_seg(tmp_path / "l.png"), labels)


# --- online blending -------------------------------------------------------------------------

def test_online_blend_is_random_textured_and_seeded(tmp_path):
    # Mid-range GTs and +-28 textures (x amplitude <= 1.25): nothing clips, so input - gt is
    # exactly the zero-mean pattern.
    paths = []
    for i in range(2):
        gt = (64 + make_gt(i)[0] // 2).astype(np.uint8)
        io.write_image(tmp_path / "gt" / f"g{i}.png", gt)
        paths.append(tmp_path / "gt" / f"g{i}.png")
    for t in range(3):
        io.write_image(tmp_path / "tx" / f"t{t}.png", np.repeat(texture(t, 6, 100, 157)[..., None], 3, axis=2))
    ds = OnlineBlendDataset(paths, tmp_path / "tx", over_smoother="gaussian:sigma=2")
    gt = (64 + make_gt(0)[0] // 2).astype(np.uint8)

    def draw(seed):
        torch.manual_seed(seed)
        return [ds[0]["input"] for _ in range(4)]

    state = torch.get_rng_state()
    try:
        a, b, c = draw(0), draw(0), draw(1)
    finally:
        torch.set_rng_state(state)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert len({tuple(x.flatten()[:64].tolist()) for x in a + c}) > 4  # texture / offset / amplitude vary
    item = ds[0]
    residual = item["input"] - item["gt"]
    assert residual.abs().mean() > 0.02  # the texture is there
    assert torch.allclose(residual[0], residual[1], atol=1e-6)  # gray pattern on every channel
    assert torch.allclose(residual[1], residual[2], atol=1e-6)
    assert abs(float(residual.mean())) < 1 / 255  # zero-mean pattern (up to rounding)
    assert torch.equal(item["edge"][0], torch.from_numpy(blend.edge_label(gt)).float())
    assert bool((item["seg"] == 255).all())
    over = blend.smooth_spec(gt, "gaussian:sigma=2")
    assert torch.equal((item["over_smoothed"] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(over))
    assert 0 in ds._over_cache  # computed once
    # seed=...: the same blend for an index every time (validation)
    fixed = OnlineBlendDataset(paths, tmp_path / "tx", over_smoother="gaussian:sigma=2", seed=0)
    assert torch.equal(fixed[1]["input"], fixed[1]["input"])


# --- build_dataset ---------------------------------------------------------------------------

def test_build_dataset_manifest_train_and_val(tmp_path):
    write_manifest_folder(tmp_path, n=3)
    io.write_image(tmp_path / "tx" / "t.png", texture(0, 6))
    cfg = DataConfig(root=str(tmp_path), format="manifest", patch_size=16, repeat=3, val_crop=0,
                     textures=str(tmp_path / "tx"))
    train = build_dataset(cfg, "train", train=True)
    assert isinstance(train, RepeatDataset) and len(train) == 2 * 3
    batch = next(iter(DataLoader(train, batch_size=4, shuffle=True)))
    assert batch["input"].shape == (4, 3, 16, 16) and batch["seg"].shape == (4, 16, 16)
    assert batch["edge"].shape == (4, 1, 16, 16) and len(batch["id"]) == 4
    val = build_dataset(cfg, "val", train=False)
    assert len(val) == 1 and val[0]["gt"].shape == (3, 24, 32)
    cfg.val_crop = 16
    cropped = build_dataset(cfg, "val", train=False)
    assert torch.equal(cropped[0]["gt"], val[0]["gt"][:, 4:20, 8:24])
    cfg.format = "online"
    online = build_dataset(cfg, "val", train=False)
    assert torch.equal(online[0]["input"], online[0]["input"])  # fixed blends for validation
    assert online[0]["input"].shape == (3, 16, 16) and online[0]["id"] == "s2"


def test_build_dataset_released(tmp_path):
    write_released_folder(tmp_path, splits=("train",))
    cfg = DataConfig(root=str(tmp_path), format="released", released_n_gt=N_GT, patch_size=16)
    assert len(build_dataset(cfg, "train", train=True)) == 6
    assert build_dataset(cfg, "train", train=True)[0]["gt"].shape == (3, 16, 16)
    with pytest.raises(DatasetError, match="split 'val'"):
        build_dataset(cfg, "val", train=False)


def test_missing_manifest_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="manifest.csv"):
        build_dataset(DataConfig(root=str(tmp_path), format="manifest"), "train", train=True)
