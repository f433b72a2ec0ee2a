"""Texture blending, edge labels and smoothers of csgis.data.blend (docs/method.md §4)."""
import numpy as np
import pytest

from csgis.data import blend


def _structure(rng, height=40, width=45, low=80, high=170):
    """Piecewise-constant RGB image with values in [low, high] (no clipping for +-40 patterns)."""
    gt = np.empty((height, width, 3), np.uint8)
    gt[:] = rng.integers(low, high, 3)
    gt[10:30, 5:25] = rng.integers(low, high, 3)
    gt[:, 30:] = rng.integers(low, high, 3)
    return gt


def test_input_minus_gt_is_one_tiled_zero_mean_gray_pattern():
    rng = np.random.default_rng(0)
    gt = _structure(rng)
    texture = rng.integers(100, 160, (7, 5)).astype(np.uint8)  # 7x5 tile: 40x45 is not a multiple
    out = blend.blend_texture(gt, texture, offset=(3, 2))
    diff = out.astype(np.int64) - gt.astype(np.int64)
    # the same pattern on every channel
    assert np.array_equal(diff[..., 0], diff[..., 1]) and np.array_equal(diff[..., 0], diff[..., 2])
    pattern = diff[..., 0]
    # periodic with the tile's own size (tiled, not resized)
    assert np.array_equal(pattern[7:], pattern[:-7])
    assert np.array_equal(pattern[:, 5:], pattern[:, :-5])
    # equals the texture shifted by the offset, minus the mean of the tiled pattern, rounded
    rows = (np.arange(40) + 3) % 7
    cols = (np.arange(45) + 2) % 5
    tiled = texture.astype(np.float64)[np.ix_(rows, cols)]
    expected = tiled - tiled.mean()
    assert np.abs(pattern - expected).max() <= 0.5
    assert abs(pattern.mean()) < 0.5  # zero mean up to rounding (nothing clipped here)
    assert abs(expected.mean()) < 1e-9
    assert np.array_equal(np.rint(gt[..., 0] + expected) - gt[..., 0], pattern)


def test_tile_texture_repeats_and_shifts():
    gray = np.arange(12, dtype=np.float64).reshape(3, 4)
    tiled = blend.tile_texture(gray, (7, 9), offset=(1, 2))
    assert tiled.shape == (7, 9)
    assert tiled[0, 0] == gray[1, 2] and tiled[2, 2] == gray[0, 0] and tiled[6, 8] == gray[1, 2]
    assert np.array_equal(blend.tile_texture(gray, (3, 4, 3)), gray)


def test_blend_clips_to_uint8_range():
    gt = np.full((8, 8, 3), 250, np.uint8)
    gt[:, :4] = 3
    texture = np.array([[0, 200]], np.uint8)  # pattern -100 / +100
    out = blend.blend_texture(gt, texture)
    assert out.dtype == np.uint8
    assert out[:, 4:].max() == 255 and out[:, 4:].min() == 150
    assert out[:, :4].min() == 0 and out[:, :4].max() == 103


def test_colour_texture_goes_through_gray_luma():
    rng = np.random.default_rng(1)
    gt = _structure(rng, 16, 16)
    texture = rng.integers(60, 200, (6, 6, 3)).astype(np.uint8)
    gray = 0.299 * texture[..., 0] + 0.587 * texture[..., 1] + 0.114 * texture[..., 2]
    assert np.array_equal(blend.blend_texture(gt, texture), blend.blend_texture(gt, gray))


def test_amplitude_and_colour_variant_scale_each_channel():
    rng = np.random.default_rng(2)
    gt = _structure(rng, 24, 24)
    texture = rng.integers(110, 150, (4, 6)).astype(np.uint8)
    plain = blend.blend_texture(gt, texture).astype(np.int64) - gt
    tinted = blend.blend_texture(gt, texture, amplitude=2.0, color=(1.0, 0.5, 0.0)).astype(np.int64) - gt
    tiled = blend.tile_texture(texture.astype(np.float64), gt.shape)
    pattern = tiled - tiled.mean()
    assert np.abs(tinted[..., 0] - 2.0 * pattern).max() <= 0.5
    assert np.abs(tinted[..., 1] - 1.0 * pattern).max() <= 0.5
    assert np.array_equal(tinted[..., 2], np.zeros_like(tinted[..., 2]))
    assert np.abs(plain[..., 1] - pattern).max() <= 0.5


def _numpy_edges(gt):
    """Independent docs/method.md §4 edge label: 3x3 Sobel on the blue channel, reflect-101 borders."""
    blue = np.pad(gt[..., 2].astype(np.int64), 1, mode="reflect")  # numpy 'reflect' == OpenCV REFLECT_101
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    h, w = gt.shape[:2]
    gx = sum(kx[i, j] * blue[i:i + h, j:j + w] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * blue[i:i + h, j:j + w] for i in range(3) for j in range(3))
    magnitude = 0.5 * np.minimum(np.abs(gx), 255) + 0.5 * np.minimum(np.abs(gy), 255)
    return (np.rint(magnitude) >= 50).astype(np.uint8)  # rint: half to even, like OpenCV


def test_edge_label_equals_independent_sobel():
    rng = np.random.default_rng(3)
    gt = _structure(rng, 48, 52, 0, 255)
    gt = np.clip(gt.astype(np.int64) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
    edges = blend.edge_label(gt)
    expected = _numpy_edges(gt)
    assert edges.dtype == np.uint8 and set(np.unique(edges)) == {0, 1}
    assert np.array_equal(edges, expected)
    assert 0.05 < edges.mean() < 0.95


def test_edge_label_reads_only_the_blue_channel_and_thresholds_at_50():
    gt = np.zeros((10, 10, 3), np.uint8)
    gt[:, 5:, 0] = 255
    gt[:, 5:, 1] = 255  # red/green edges are ignored
    assert blend.edge_label(gt).sum() == 0
    # a blue step of s gives 0.5*|Sobel_x| = 0.5*4s = 2s at the two columns beside it
    for step, expected in ((24, 0), (25, 1)):  # 2*24 = 48 < 50, 2*25 = 50 >= 50
        gt = np.zeros((10, 10, 3), np.uint8)
        gt[:, 5:, 2] = step
        edges = blend.edge_label(gt)
        assert edges[:, 4:6].min() == expected and edges[:, :3].max() == 0 and edges[:, 7:].max() == 0


def test_l0_keeps_flat_colours_and_removes_texture():
    # Two halves that differ only in blue: OpenCV 5.0's colour l0Smooth returns blue = 0 here.
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = (100, 150, 200)
    img[:, :16] = (100, 150, 100)
    out = blend.smooth(img, "l0", lambda_=0.015)
    assert np.abs(out.astype(int) - img).max() <= 1
    rng = np.random.default_rng(4)
    textured = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    smoothed = blend.smooth_spec(textured, blend.GT_SMOOTHER)
    assert smoothed[:, 2:14].std(axis=(0, 1)).max() < 0.25 * textured[:, 2:14].std(axis=(0, 1)).min()
    assert abs(float(smoothed[:, 20:30, 2].mean()) - 200) < 3 and abs(float(smoothed[:, 2:14, 2].mean()) - 100) < 3


def test_over_smoother_is_stronger_than_gt_smoother():
    import skimage.data

    photo = np.ascontiguousarray(skimage.data.chelsea()[60:124, 150:214])
    gt = blend.smooth_spec(photo, blend.GT_SMOOTHER)
    over = blend.smooth_spec(photo, blend.OVER_SMOOTHER)
    assert blend.edge_label(over).sum() < 0.6 * blend.edge_label(gt).sum()
    assert np.abs(over.astype(int) - photo).mean() > np.abs(gt.astype(int) - photo).mean()


def test_parse_smoother_and_errors():
    assert blend.parse_smoother("l0:lambda=0.02,kappa=2.0") == ("l0", {"lambda": 0.02, "kappa": 2.0})
    assert blend.parse_smoother("rgf:iterations=4") == ("rgf", {"iterations": 4})
    assert blend.parse_smoother("gaussian") == ("gaussian", {})
    with pytest.raises(ValueError, match="unknown smoother"):
        blend.parse_smoother("median:k=3")
    with pytest.raises(ValueError, match="key=value"):
        blend.parse_smoother("l0:0.01")
    img = np.full((16, 16, 3), 90, np.uint8)
    for name in blend.SMOOTHERS:
        out = blend.smooth(img, name)
        assert out.shape == img.shape and out.dtype == np.uint8 and np.abs(out.astype(int) - 90).max() <= 1
