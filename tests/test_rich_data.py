"""The rich training data: texture families (csgis.data.textures), vector art, the builder
(dataset_utils/make_rich_data.py) and online blending with scale, colour and contrast."""
import cv2
import numpy as np
import pytest
import torch

from csgis.config import ConfigError, from_dict
from csgis.data import blend, synthetic, textures
from csgis.data.datasets import OnlineBlendDataset, build_dataset
from csgis.data.manifest import read_manifest
from csgis.io import read_image


@pytest.mark.parametrize("family", textures.ALL_FAMILIES)
def test_every_family_is_seeded_gray_or_colour(family):
    a = textures.make_texture(family, np.random.default_rng(3), 48, colour=False)
    b = textures.make_texture(family, np.random.default_rng(3), 48, colour=False)
    c = textures.make_texture(family, np.random.default_rng(3), 48, colour=True)
    others = {textures.make_texture(family, np.random.default_rng(k), 48, colour=False).tobytes() for k in range(6)}
    assert a.shape == c.shape == (48, 48, 3) and a.dtype == c.dtype == np.uint8
    assert np.array_equal(a, b) and len(others) > 1
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    assert not np.array_equal(c[..., 0], c[..., 1])
    assert a.std() > 10  # a pattern, not a flat patch


def _chroma_spread(texture: np.ndarray) -> np.ndarray:
    """Singular values of the texture's colours, mean removed (how many directions the colour varies in)."""
    rgb = texture.reshape(-1, 3).astype(np.float64)
    return np.linalg.svd(rgb - rgb.mean(0), compute_uv=False)


@pytest.mark.parametrize("family", ["spectral", "cells", "mosaic", "resynth"])
def test_multi_coloured_textures_vary_in_two_colour_directions_and_duotones_in_one(family):
    duo = [_chroma_spread(textures.make_texture(family, np.random.default_rng(k), 64, "duotone")) for k in range(4)]
    multi = [_chroma_spread(textures.make_texture(family, np.random.default_rng(k), 64, "multi")) for k in range(4)]
    assert np.median([s[1] / s[0] for s in duo]) < 0.35  # the hue shift adds a little
    assert np.median([s[1] / s[0] for s in multi]) > 0.45
    # True / False are the duotone and gray styles, drawn exactly as before the styles had names
    assert np.array_equal(textures.make_texture(family, np.random.default_rng(5), 32, True),
                          textures.make_texture(family, np.random.default_rng(5), 32, "duotone"))
    with pytest.raises(ValueError, match="colour style"):
        textures.make_texture(family, np.random.default_rng(5), 32, "rainbow")


def test_generated_families_tile_without_seams_and_photo_crops_do_not():
    def median_seam(family):
        return np.median([textures.seam_ratio(textures.make_texture(family, np.random.default_rng(k), 64, k % 2 == 1))
                          for k in range(8)])
    periodic = textures.FAMILIES + synthetic.PROCEDURAL_TEXTURES
    assert all(median_seam(f) <= 1.05 for f in periodic), {f: median_seam(f) for f in periodic}
    assert all(median_seam(f) >= 1.4 for f in synthetic.REAL_TEXTURES)  # the measure can tell


def test_vector_art_has_shapes_outlines_and_ignored_details():
    found_details = False
    for seed in range(4):
        image, label = synthetic.vector_art(np.random.default_rng(seed), 96, 128)
        assert image.shape == (96, 128, 3) and label.shape == (96, 128) and image.dtype == label.dtype == np.uint8
        values = set(np.unique(label).tolist())
        assert values <= set(range(len(synthetic.SHAPE_CLASSES))) | {255} and values & {1, 2, 3, 4, 5}
        found_details |= 255 in values
        assert (blend.edge_label(image) > 0).mean() > 0.01  # outlines and lines are edges
    assert found_details


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    import make_rich_data
    out = tmp_path_factory.mktemp("rich") / "data"
    assert make_rich_data.main(["--out", str(out), "--size", "tiny", "--workers", "1"]) == 0
    return out


def test_the_builder_makes_every_kind_in_every_split_and_keeps_eval_textures_apart(rich, capsys):
    import make_rich_data
    rows = read_manifest(rich)
    kinds = {(r["split"], r["structure"].rstrip("0123456789")) for r in rows}
    assert kinds == {(s, k) for s in ("train", "val", "test") for k in ("art", "cartoon", "photo")}
    train_pool = {p.stem for p in (rich / "textures").iterdir()}
    eval_pool = {p.stem for p in (rich / "textures_eval").iterdir()}
    assert {f"{f}_{k}00" for f in textures.ALL_FAMILIES for k in "gc"} == train_pool == eval_pool
    for name in train_pool:  # same names, other draws
        assert not np.array_equal(read_image(rich / "textures" / f"{name}.png"),
                                  read_image(rich / "textures_eval" / f"{name}.png"))
    assert all((rich / r["seg"]).is_file() == r["structure"].startswith("art") for r in rows if r["seg"])
    assert make_rich_data.main(["--out", str(rich), "--size", "tiny", "--workers", "1"]) == 0
    assert "resumed" in capsys.readouterr().out


def test_multi_colour_textures_leave_the_structures_and_eval_inputs_as_they_were(rich, tmp_path):
    import make_rich_data
    out = tmp_path / "multi"
    assert make_rich_data.main(["--out", str(out), "--size", "tiny", "--workers", "1",
                                "--colour-textures", "multi"]) == 0
    rows, multi_rows = read_manifest(rich), read_manifest(out)
    assert rows == multi_rows
    for key in ("gt", "input"):
        assert all(np.array_equal(read_image(rich / r[key]), read_image(out / r[key])) for r in rows)
    pool = {p.stem for p in (out / "textures").iterdir()}
    assert pool == {p.stem for p in (rich / "textures").iterdir()} | {f"{f}_m00" for f in textures.ALL_FAMILIES}
    # another dataset: the duotone build's folder is not resumed as a multi one
    assert make_rich_data.main(["--out", str(rich), "--size", "tiny", "--workers", "1",
                                "--colour-textures", "multi"]) == 2


def test_online_blending_with_scale_colour_and_contrast(rich, tmp_path):
    rows = [r for r in read_manifest(rich, "train")]
    for path in (rich / "textures").glob("*_c*.png"):  # colour textures only, for the colour blend
        (tmp_path / path.name).write_bytes(path.read_bytes())
    gray = OnlineBlendDataset(rows, rich / "textures", root=rich, amplitude=(1.0, 1.0), colour=0.0,
                              texture_std=25.0, scale=(0.5, 3.0))
    colour = OnlineBlendDataset(rows, tmp_path, root=rich, amplitude=(1.0, 1.0), colour=1.0,
                                texture_std=25.0, scale=(0.5, 3.0))
    torch.manual_seed(0)
    g = gray.load(0)
    layer = (g["input"] - g["gt"]) * 255
    unclipped = ((g["input"] > 0) & (g["input"] < 1)).all(0)
    assert torch.allclose(layer[0][unclipped], layer[1][unclipped], atol=1.01)  # one layer on every channel
    c = colour.load(0)
    diff = (c["input"] - c["gt"]) * 255
    assert (diff[0] - diff[1]).abs().mean() > 2  # a colour layer differs per channel
    draws = {tuple(gray.load(0)["input"].flatten()[:64].tolist()) for _ in range(4)}
    assert len(draws) > 1  # a new blend every time
    seeded = OnlineBlendDataset(rows, rich / "textures", root=rich, colour=0.5, texture_std=25.0, scale=(0.5, 3.0),
                                seed=0)
    assert torch.equal(seeded.load(1)["input"], seeded.load(1)["input"])


def test_gray_ground_truths_get_the_texture_their_blend_gives(rich, tmp_path):
    rows = [r for r in read_manifest(rich, "train")]
    for path in (rich / "textures").glob("*_c*.png"):  # colour textures only
        (tmp_path / path.name).write_bytes(path.read_bytes())
    kwargs = dict(root=rich, amplitude=(1.0, 1.0), colour=1.0, texture_std=25.0, scale=(0.5, 3.0))
    always = OnlineBlendDataset(rows, tmp_path, gray_gt=1.0, **kwargs)
    never = OnlineBlendDataset(rows, tmp_path, **kwargs)
    torch.manual_seed(0)
    s = always.load(0)
    colour_gt = torch.from_numpy(read_image(rich / rows[0]["gt"])).permute(2, 0, 1).float() / 255
    luma = (0.299 * colour_gt[0] + 0.587 * colour_gt[1] + 0.114 * colour_gt[2])
    for key in ("gt", "over_smoothed"):
        assert torch.equal(s[key][0], s[key][1]) and torch.equal(s[key][0], s[key][2])  # gray
    assert (s["gt"][0] - luma).abs().max() <= 0.5 / 255 + 1e-6  # the GT's own luma, rounded
    diff = (s["input"] - s["gt"]) * 255
    assert (diff[0] - diff[1]).abs().mean() > 2  # the texture keeps its colours on a gray picture
    torch.manual_seed(0)
    n = never.load(0)
    assert torch.equal(n["gt"], colour_gt) and not torch.equal(n["gt"][0], n["gt"][1])
    # with the probability at 0 nothing extra is drawn: the same seed gives the same input as before
    torch.manual_seed(0)
    assert torch.equal(OnlineBlendDataset(rows, tmp_path, gray_gt=0.0, **kwargs).load(0)["input"], n["input"])
    with pytest.raises(ConfigError, match="blend_gray_gt"):
        from_dict({"data": {"blend_gray_gt": 1.5}})


def test_soft_ground_truths_are_blurred_under_sharp_texture(rich):
    rows = [r for r in read_manifest(rich, "train")]
    kwargs = dict(root=rich, amplitude=(1.0, 1.0), colour=0.5, texture_std=25.0, scale=(0.5, 3.0))
    always = OnlineBlendDataset(rows, rich / "textures", soft_gt=1.0, soft_sigma=(2.0, 2.0), **kwargs)
    never = OnlineBlendDataset(rows, rich / "textures", **kwargs)
    torch.manual_seed(0)
    s = always.load(0)
    gt = read_image(rich / rows[0]["gt"])
    blurred = torch.from_numpy(cv2.GaussianBlur(gt, (0, 0), 2.0)).permute(2, 0, 1).float() / 255
    assert torch.equal(s["gt"], blurred)  # the GT blurred at the asked sigma
    over = read_image(rich / rows[0]["over"])
    assert torch.equal(s["over_smoothed"], torch.from_numpy(cv2.GaussianBlur(over, (0, 0), 2.0)).permute(2, 0, 1).float() / 255)
    sharp = torch.from_numpy(gt).permute(2, 0, 1).float() / 255
    def roughness(t):  # mean absolute horizontal difference
        return (t[..., 1:] - t[..., :-1]).abs().mean()
    assert roughness(s["gt"]) < 0.8 * roughness(sharp)
    assert roughness(s["input"] - s["gt"]) > 0.005  # the texture on top is laid on as before, not blurred
    torch.manual_seed(0)
    n = never.load(0)
    assert torch.equal(n["gt"], sharp)
    # with the probability at 0 nothing extra is drawn: the same seed gives the same input as before
    torch.manual_seed(0)
    assert torch.equal(OnlineBlendDataset(rows, rich / "textures", soft_gt=0.0, **kwargs).load(0)["input"], n["input"])
    for bad in ({"blend_soft_gt": -0.1}, {"blend_soft_sigma": [3.0, 1.0]}, {"blend_soft_sigma": [0.0, 1.0]}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            from_dict({"data": bad})


def test_the_layer_has_the_asked_contrast_at_every_scale():
    gt = np.full((120, 160, 3), 128, np.uint8)
    pattern = textures.make_texture("cells", np.random.default_rng(0), 64, colour=True)
    for scale in (0.5, 1.0, 3.0):
        for mode in blend.BLENDS:
            out = blend.blend_layer(gt, pattern, mode, scale, 0.8, (3, 5), 25.0).astype(float) - 128
            assert out.std() == pytest.approx(0.8 * 25.0, rel=0.05), (scale, mode)


def test_rich_config_validation_and_stored_eval(rich):
    with pytest.raises(ConfigError, match="data.pipeline"):
        from_dict({"data": {"format": "online", "pipeline": "device"}})
    with pytest.raises(ConfigError, match="blend_texture_std"):
        from_dict({"data": {"blend_scale": [0.5, 2.0]}})
    with pytest.raises(ConfigError, match="blend_scale"):
        from_dict({"data": {"blend_scale": [2.0, 0.5], "blend_texture_std": 25}})
    cfg = from_dict({"data": {"root": str(rich), "format": "online", "textures": str(rich / "textures"),
                              "online_eval": "stored", "blend_texture_std": 25, "blend_scale": [0.5, 3.0]}}).data
    val = build_dataset(cfg, "val", train=False)
    stored = {r["id"]: r for r in read_manifest(rich, "val")}
    item = val[0]
    assert item["id"] in stored
    assert torch.equal(item["input"], torch.from_numpy(read_image(rich / stored[item["id"]]["input"]))
                       .permute(2, 0, 1).float() / 255)
    train = build_dataset(cfg, "train", train=True)
    assert isinstance(train, OnlineBlendDataset) and train.scale == (0.5, 3.0)
