"""Classical smoothers: shapes and dtypes, RTV's linear system and its texture removal, L0 on steps."""
import inspect

import numpy as np
import pytest

from csgis import filters as F


def _random_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _step_with_texture(size=48, amplitude=30, period=4):
    """Gray (size, size) uint8: 60 | 190 step at the middle column plus a checker texture."""
    y, x = np.mgrid[:size, :size]
    base = np.where(x < size // 2, 60.0, 190.0)
    texture = amplitude * np.sign(np.sin(x * 2 * np.pi / period + 0.3) * np.sin(y * 2 * np.pi / period + 0.3))
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def _regions(image, size=48):
    """Interior of the left and right halves, away from the step and the border."""
    gray = image.astype(np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    return gray[8:-8, 4:size // 2 - 6], gray[8:-8, size // 2 + 6:-4]


@pytest.mark.parametrize("name", list(F.FILTERS))
@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 3), (13, 7, 3)])
def test_filter_keeps_shape_and_dtype(name, shape):
    image = _random_image(shape)
    out = F.FILTERS[name](image)
    assert out.dtype == np.uint8
    assert out.shape == image.shape


@pytest.mark.parametrize("name", list(F.FILTERS))
def test_filter_keeps_constant_image(name):
    image = np.full((12, 15, 3), 117, np.uint8)
    out = F.FILTERS[name](image)
    assert np.abs(out.astype(int) - 117).max() <= 1


@pytest.mark.parametrize("name", list(F.FILTERS))
def test_gray_input_equals_first_channel_of_replicated_rgb(name):
    gray = _random_image((10, 13), seed=3)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(F.FILTERS[name](gray), F.FILTERS[name](rgb)[:, :, 0])


def test_param_grids_name_real_parameters_and_contain_the_defaults():
    assert set(F.PARAM_GRIDS) == set(F.FILTERS)
    for name, grid in F.PARAM_GRIDS.items():
        assert 3 <= len(grid) <= 30, name
        accepted = set(inspect.signature(F.FILTERS[name]).parameters) - {"image"}
        defaults = F.default_params(name)
        for setting in grid:
            assert set(setting) <= accepted, (name, setting)
        assert any(all(defaults[k] == v for k, v in s.items()) for s in grid), name


def test_released_settings_are_the_defaults():
    assert F.default_params("l0") == {"lambda_": 0.01, "kappa": 2.0, "beta_max": 1e5}
    assert F.default_params("rgf") == {"sigma_s": 4.0, "sigma_r": 25.5, "iterations": 4}
    rtv = F.default_params("rtv")
    assert (rtv["lambda_"], rtv["sigma"], rtv["iterations"], rtv["sharpness"]) == (0.015, 3.0, 4, 0.02)


def test_apply_filter_unknown_name():
    with pytest.raises(KeyError, match="unknown filter 'nope'"):
        F.apply_filter("nope", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        F.rtv(np.zeros((4, 4, 3), np.float32))


def test_gf_with_tiny_eps_is_the_identity_also_on_gray_regions():
    image = _random_image((16, 18, 3), seed=4)
    image[:8] = image[:8, :, :1]  # equal channels: a singular colour covariance
    assert np.abs(F.gf(image, radius=2, eps=1e-6).astype(int) - image).max() <= 1


# --------------------------------------------------------------------------- RTV
def _dense_system(wx, wy, lam):
    """I + lam * L by summing each edge's energy term lam * w * (S_p - S_q)^2 (independent of rtv_system)."""
    height, width = wy.shape[0] + 1, wx.shape[1] + 1
    n = height * width
    matrix = np.eye(n)
    edges = [(i * width + j, i * width + j + 1, wx[i, j]) for i in range(height) for j in range(width - 1)]
    edges += [(i * width + j, (i + 1) * width + j, wy[i, j]) for i in range(height - 1) for j in range(width)]
    for p, q, w in edges:
        matrix[p, p] += lam * w
        matrix[q, q] += lam * w
        matrix[p, q] -= lam * w
        matrix[q, p] -= lam * w
    return matrix


def test_rtv_solve_matches_dense_solve():
    rng = np.random.default_rng(1)
    height, width = 5, 6
    source = rng.random((height, width, 3))
    wx = rng.random((height, width - 1)) * 50
    wy = rng.random((height - 1, width)) * 50
    lam = 0.3
    dense = _dense_system(wx, wy, lam)
    np.testing.assert_allclose(F.rtv_system(wx, wy, lam).toarray(), dense, atol=1e-12)
    expected = np.linalg.solve(dense, source.reshape(-1, 3)).reshape(height, width, 3)
    np.testing.assert_allclose(F.rtv_solve(source, wx, wy, lam), expected, atol=1e-10)


def test_rtv_solution_minimises_the_weighted_energy():
    rng = np.random.default_rng(2)
    source = rng.random((6, 7, 1))
    wx, wy = F.rtv_weights(source, sigma=1.0)
    lam = 0.05
    solution = F.rtv_solve(source, wx, wy, lam)[:, :, 0]

    def energy(s):
        return (((s - source[:, :, 0]) ** 2).sum() + lam * (wx * np.diff(s, axis=1) ** 2).sum()
                + lam * (wy * np.diff(s, axis=0) ** 2).sum())

    best = energy(solution)
    for _ in range(5):
        assert energy(solution + 1e-3 * rng.standard_normal(solution.shape)) > best


def test_rtv_weights_of_a_constant_image():
    # Flat image: inherent and total variation are 0, so u = 1/eps (Gaussian of a constant) and
    # w = 1/sharpness everywhere.
    wx, wy = F.rtv_weights(np.full((7, 9, 3), 0.4), sigma=2.0, sharpness=0.02, eps=1e-3)
    assert wx.shape == (7, 8) and wy.shape == (6, 9)
    np.testing.assert_allclose(wx, 1.0 / (1e-3 * 0.02))
    np.testing.assert_allclose(wy, 1.0 / (1e-3 * 0.02))


def test_rtv_weights_are_small_across_a_structure_edge():
    image = np.zeros((20, 20, 1))
    image[:, 10:] = 1.0
    wx, _ = F.rtv_weights(image, sigma=2.0)
    assert wx[10, 9] < 1e-3 * wx[10, 2]


def test_rtv_removes_texture_and_keeps_the_step():
    image = _step_with_texture()
    left_in, right_in = _regions(image)
    out = F.rtv(np.repeat(image[:, :, None], 3, axis=2))
    left, right = _regions(out)
    assert right.mean() - left.mean() > 0.7 * (right_in.mean() - left_in.mean())
    assert left.var() < 0.5 * left_in.var()
    assert right.var() < 0.5 * right_in.var()


def test_rtv_smaller_lambda_smooths_less():
    image = _step_with_texture()
    weak = _regions(F.rtv(image, lambda_=0.0005))[0].var()
    strong = _regions(F.rtv(image, lambda_=0.015))[0].var()
    assert strong < weak


# --------------------------------------------------------------------------- L0
def test_l0_keeps_a_clean_step_and_flattens_small_noise():
    clean = np.where(np.arange(32)[None, :] < 16, 50, 200).astype(np.uint8).repeat(24, axis=0)
    clean = np.repeat(clean[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(F.l0(clean), clean)
    noisy = np.clip(clean.astype(int) + np.random.default_rng(0).integers(-3, 4, clean.shape), 0, 255)
    out = F.l0(noisy.astype(np.uint8)).astype(float)
    assert out[:, 2:14].std() < 0.5 and out[:, 18:30].std() < 0.5
    assert abs(out[:, 18:30].mean() - out[:, 2:14].mean() - 150) < 2


def test_every_grid_setting_and_default_lies_within_its_allowed_range():
    import inspect

    from csgis.filters import FILTERS, PARAM_GRIDS, check_settings
    for name, grid in PARAM_GRIDS.items():
        defaults = {k: p.default for k, p in inspect.signature(FILTERS[name]).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        for params in grid + [defaults]:
            check_settings(name, params)


@pytest.mark.parametrize("spec, words", [
    ("l0:kappa=1", "kappa=1 is out of range"), ("l0:lambda=-1", "lambda=-1 is out of range"),
    ("l0:lambda=0", "lambda=0 is out of range"), ("gaussian:sigma=1e6", "sigma=1e+06 is out of range"),
    ("gaussian:sigma=0", "sigma=0 is out of range"), ("fgs:lambda=inf", "not a finite number"),
    ("rgf:iterations=2.5", "must be a whole number"), ("l0:lambda=0.02+gaussian:sigma=nan", "not a finite number")])
def test_smoother_specs_that_would_hang_or_crash_are_refused_before_running(spec, words):
    from csgis.data import blend
    import re
    with pytest.raises(ValueError, match=re.escape(words)):
        blend.check_spec(spec)
    with pytest.raises(ValueError, match=re.escape(words)):
        blend.smooth_spec(np.zeros((8, 8, 3), np.uint8), spec)
