"""Tiled inference (csgis/inference.py): tiled == untiled, uint8 conversion, tile geometry, tile size."""
import numpy as np
import pytest
import torch

from csgis import inference
from csgis.inference import default_tile, match_mean, smooth_image, smooth_tensor, tile_windows
from _helpers import TINY_ARCH, tiny_smoother
from csgis.models.smoother import Smoother

OUTPUTS = ("edge_logits", "coarse", "residual", "prediction")


@pytest.fixture(scope="module")
def model() -> Smoother:
    return tiny_smoother()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    # Odd sizes, larger than one crop (tile + 2 * radius) along the width.
    return torch.rand(1, 3, 75, 97, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(model, image):
    with torch.inference_mode():
        return model(image)


def test_receptive_radius_oftiny_smoother(model):
    # stem 1 + one HDC block 6 + edge head 3 + coarse head (1 + 6 + 2) + refine head (1 + 6 + 1)
    assert model.receptive_radius() == 27


@pytest.mark.parametrize("tile,expected_windows", [(16, 5 * 7), (25, 1 * 4), (0, 1)])
def test_tiled_equals_untiled(model, image, reference, tile, expected_windows):
    assert len(tile_windows(75, 97, tile, model.receptive_radius())) == expected_windows
    out = smooth_tensor(model, image, tile=tile, device="cpu")
    for name in OUTPUTS:
        assert out[name].shape == getattr(reference, name).shape
        assert (out[name] - getattr(reference, name)).abs().max().item() <= 1e-5, name


def test_tiled_equals_untiled_with_the_input_skip(image):
    """model.input_skip adds the input pixel by pixel, so the receptive radius and tiling stay exact."""
    skip = tiny_smoother(**TINY_ARCH, input_skip=True)
    with torch.inference_mode():
        whole = skip(image).prediction
    out = smooth_tensor(skip, image, tile=16, device="cpu", outputs=("prediction",))
    assert (out["prediction"] - whole).abs().max().item() <= 1e-5


def test_margin_matters(model, image, reference, monkeypatch):
    """With a margin much smaller than the receptive radius the seams are visible: the test has teeth."""
    monkeypatch.setattr(model, "receptive_radius", lambda: 4)
    out = smooth_tensor(model, image, tile=16, outputs=("prediction",))
    assert (out["prediction"] - reference.prediction).abs().max().item() > 1e-3


def test_batched_tiles_and_channels_last_equal_untiled(model, image, reference):
    out = smooth_tensor(model, image, tile=16, batch=4, channels_last=True)
    for name in OUTPUTS:
        assert (out[name] - getattr(reference, name)).abs().max().item() <= 1e-5, name
    model.to(memory_format=torch.contiguous_format)


def test_batch_of_images(model):
    x = torch.rand(2, 3, 40, 70, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = model(x).prediction
    out = smooth_tensor(model, x, tile=12, batch=3, outputs=("prediction",))
    assert set(out) == {"prediction"}
    assert (out["prediction"] - ref).abs().max().item() <= 1e-5


def test_train_mode_is_restored_and_eval_statistics_used(image, reference):
    model = tiny_smoother().train()
    out = smooth_tensor(model, image, tile=25, outputs=("prediction",))
    assert model.training
    assert (out["prediction"] - reference.prediction).abs().max().item() <= 1e-5


def test_smooth_image_uint8(model):
    import copy
    model = copy.deepcopy(model)
    model.refine_head.conv_out.weight.data *= 30  # a wide residual: outputs leave [0, 1] on both sides
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(61, 90, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        ref = model(x)
    out = smooth_image(model, rgb, tile=20, outputs=("prediction", "coarse", "edge"))
    assert out["prediction"].shape == (61, 90, 3) and out["prediction"].dtype == np.uint8
    assert out["coarse"].shape == (61, 90, 3) and out["edge"].shape == (61, 90)
    # Saved values: 0 where the network's output is below 0, 255 where above 1, else the nearest grey
    # level (a float difference of 1e-7 between tiled and untiled may flip a rounding at .5).
    floats = {"prediction": ref.prediction[0].permute(1, 2, 0).numpy(),
              "coarse": ref.coarse[0].permute(1, 2, 0).numpy(),
              "edge": torch.sigmoid(ref.edge_logits[0, 0]).numpy()}
    assert (floats["prediction"] < 0).any() and (floats["prediction"] > 1).any()  # an untrained network
    for name, value in floats.items():
        got = out[name].astype(np.float64)
        assert (got[value < 0] == 0).all() and (got[value > 1] == 255).all(), name
        inside = (value >= 0) & (value <= 1)
        assert np.abs(got[inside] - 255 * value[inside]).max() <= 0.5 + 1e-3, name
    only_prediction = smooth_image(model, rgb, tile=0)
    assert set(only_prediction) == {"prediction"}


def test_smooth_image_rejects_bad_input(model):
    with pytest.raises(ValueError, match="uint8"):
        smooth_image(model, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="unknown output"):
        smooth_image(model, np.zeros((8, 8, 3), np.uint8), outputs=("residual",))
    with pytest.raises(ValueError, match="tile"):
        smooth_image(model, np.zeros((8, 8, 3), np.uint8), tile=-1)


@pytest.mark.parametrize("size,tile,radius", [(1, 4, 3), (10, 4, 3), (11, 4, 3), (100, 7, 5),
                                              (513, 512, 135), (3000, 512, 135), (97, 16, 27)])
def test_tile_windows_geometry(size, tile, radius):
    windows = tile_windows(size, 5, tile, radius)
    cores = sorted({w.core_y for w in windows})
    crops = {w.core_y: w.crop_y for w in windows}
    # Cores partition the axis.
    assert cores[0][0] == 0 and cores[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    assert all(c[1] - c[0] <= max(tile, size if size <= tile + 2 * radius else tile) for c in cores)
    # All crops have one length, lie in the image, and reach radius past the core unless at the border.
    assert len({c[1] - c[0] for c in crops.values()}) == 1
    for core, crop in crops.items():
        assert 0 <= crop[0] <= core[0] and core[1] <= crop[1] <= size
        assert crop[0] == 0 or core[0] - crop[0] >= radius
        assert crop[1] == size or crop[1] - core[1] >= radius


def test_default_tile_from_memory_budget(monkeypatch):
    model = Smoother()  # width 64, radius 135
    assert model.receptive_radius() == 135
    crop = 512 + 2 * 135
    monkeypatch.setattr(inference, "_device_memory_budget",
                        lambda device: inference.ACTIVATIONS_AT_PEAK * 64 * 4 * crop * crop)
    assert default_tile("cpu", model) == 512
    assert default_tile("cpu", model, amp="bf16") > 512  # half the bytes per value
    assert default_tile("cpu", model, batch=64) == inference.MIN_TILE
    monkeypatch.setattr(inference, "_device_memory_budget", lambda device: 10 ** 15)
    assert default_tile("cpu", model) == inference.MAX_TILE


def test_default_tile_on_this_machine():
    tile = default_tile("cpu", Smoother())
    assert tile % 32 == 0 and inference.MIN_TILE <= tile <= inference.MAX_TILE


def test_bf16_autocast_close_to_float(model, image, reference):
    out = smooth_tensor(model, image, tile=25, amp="bf16", outputs=("prediction",))
    assert out["prediction"].dtype == torch.float32
    diff = (out["prediction"] - reference.prediction).abs().max().item()
    assert 0 < diff < 0.05  # bf16 has an 8-bit mantissa: close, not equal
    with pytest.raises(ValueError, match="amp"):
        smooth_tensor(model, image, tile=25, amp="fp8")


def test_progress_reports_every_tile(model):
    rgb = np.random.default_rng(0).integers(0, 256, (61, 90, 3), dtype=np.uint8)
    calls = []
    smooth_image(model, rgb, tile=32, batch=2, progress=lambda done, total: calls.append((done, total)))
    total = len(tile_windows(61, 90, 32, model.receptive_radius()))
    assert total > 2 and calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_self_ensemble_averages_the_eight_views_turned_back(model):
    """--self-ensemble: the mean of the network's results on the 8 rotations / mirror images, each
    turned back (written out here with torch's own flips), for every output; tiling leaves it as it
    is and progress goes through the 8 views' tiles."""
    rgb = np.random.default_rng(4).integers(0, 256, (61, 90, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    sums = {"prediction": 0.0, "coarse": 0.0, "edge": 0.0}
    with torch.inference_mode():
        for k in range(8):
            view = torch.rot90(x, k % 4, dims=(2, 3))
            view = view.flip(3) if k >= 4 else view
            out = model(view)
            for name, value in (("prediction", out.prediction), ("coarse", out.coarse),
                                ("edge", torch.sigmoid(out.edge_logits))):
                value = value.flip(3) if k >= 4 else value
                value = torch.rot90(value, -(k % 4), dims=(2, 3))
                sums[name] = sums[name] + (value.clamp(0, 1) * 255).round()
    got = smooth_image(model, rgb, tile=0, outputs=("prediction", "coarse", "edge"), self_ensemble=True)
    for name, total in sums.items():
        want = (total[0] / 8).permute(1, 2, 0).numpy() if name != "edge" else (total[0, 0] / 8).numpy()
        assert got[name].shape == want.shape and got[name].dtype == np.uint8, name
        assert np.abs(got[name] - want).max() <= 0.5 + 1 / 8 + 1e-6, name  # one rounding flip at most
    plain = smooth_image(model, rgb, tile=0)["prediction"]
    assert np.abs(got["prediction"].astype(int) - plain).max() > 0  # the views do differ
    calls = []
    tiled = smooth_image(model, rgb, tile=32, self_ensemble=True, progress=lambda d, t: calls.append((d, t)))
    assert np.abs(tiled["prediction"].astype(int) - got["prediction"]).max() <= 1
    fractions = [d / t for d, t in calls]
    assert len(calls) >= 8 * 2 and fractions == sorted(fractions) and fractions[-1] == 1


def test_match_mean_moves_each_channel_to_the_reference_mean_by_whole_levels():
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    result = np.clip(reference.astype(int) + np.array([9, -4, 0]) + rng.integers(-3, 4, reference.shape), 0, 255)
    result = result.astype(np.uint8)
    got = match_mean(result, reference)
    assert got.dtype == np.uint8 and got.shape == result.shape
    for c in range(3):
        shift = got[..., c].astype(int) - result[..., c]
        unclipped = (got[..., c] > 0) & (got[..., c] < 255)
        assert len(np.unique(shift[unclipped])) == 1  # one whole shift per channel
        # no other whole shift brings the clipped mean closer to the reference's
        best = abs(got[..., c].mean() - reference[..., c].mean())
        for other in range(-20, 21):
            moved = np.clip(result[..., c].astype(int) + other, 0, 255)
            assert best <= abs(moved.mean() - reference[..., c].mean()) + 1e-9
        assert best <= 0.5 + 1e-9 or not unclipped.all()
    # Clipping: a bright result is moved further so that its clipped mean still matches.
    bright = np.full((10, 10, 3), 250, np.uint8)
    bright[:5] = 200
    target = np.full((10, 10, 3), 235, np.uint8)
    moved = match_mean(bright, target)
    assert abs(moved.mean() - 235) <= 0.5 and moved.max() == 255
    # A result already at the reference's mean is left as it is; bad arguments are refused.
    np.testing.assert_array_equal(match_mean(reference, reference), reference)
    with pytest.raises(ValueError):
        match_mean(result.astype(np.float32), reference)


def test_keep_mean_shifts_the_prediction_after_tiling_and_self_ensemble(model):
    rgb = np.random.default_rng(5).integers(0, 256, (61, 90, 3), dtype=np.uint8)
    for options in ({"tile": 0}, {"tile": 32}, {"tile": 0, "self_ensemble": True}):
        plain = smooth_image(model, rgb, outputs=("prediction", "coarse"), **options)
        kept = smooth_image(model, rgb, outputs=("prediction", "coarse"), keep_mean=True, **options)
        np.testing.assert_array_equal(kept["prediction"], match_mean(plain["prediction"], rgb))
        np.testing.assert_array_equal(kept["coarse"], plain["coarse"])  # only the prediction moves
        assert np.abs(kept["prediction"].mean((0, 1)) - rgb.mean((0, 1))).max() <= 0.5
    # A tiny image (mirrored up to MIN_SIDE px inside) keeps the mean of the image itself.
    small = rgb[:5, :7]
    kept = smooth_image(model, small, tile=0, keep_mean=True)["prediction"]
    np.testing.assert_array_equal(kept, match_mean(smooth_image(model, small, tile=0)["prediction"], small))


def test_post_runs_a_classical_smoother_on_the_prediction_before_keep_mean(model):
    from csgis.data.blend import smooth_spec
    rgb = np.random.default_rng(6).integers(0, 256, (48, 70, 3), dtype=np.uint8)
    for options in ({"tile": 0}, {"tile": 32}, {"tile": 0, "self_ensemble": True}):
        plain = smooth_image(model, rgb, outputs=("prediction", "coarse"), **options)
        post = smooth_image(model, rgb, outputs=("prediction", "coarse"), post="l0:lambda=0.02", **options)
        want = smooth_spec(plain["prediction"], "l0:lambda=0.02")
        assert not np.array_equal(want, plain["prediction"])  # the post filter changes something
        np.testing.assert_array_equal(post["prediction"], want)
        np.testing.assert_array_equal(post["coarse"], plain["coarse"])  # only the prediction moves
        both = smooth_image(model, rgb, post="l0:lambda=0.02", keep_mean=True, **options)["prediction"]
        np.testing.assert_array_equal(both, match_mean(want, rgb))  # keep mean comes last
    # L0 flattens: a smaller total variation than the network's own result.
    def variation(image):
        return np.abs(np.diff(image.astype(np.int32), axis=0)).sum() + np.abs(np.diff(image.astype(np.int32), axis=1)).sum()
    assert variation(smooth_image(model, rgb, tile=0, post="l0:lambda=0.05")["prediction"]) \
        < 0.8 * variation(smooth_image(model, rgb, tile=0)["prediction"])


@pytest.mark.parametrize("spec,message", [("nope", "unknown smoother 'nope'"), ("l0:foo=1", "no setting 'foo'"),
                                          ("l0:lambda=x", "not a number"), ("l0:lambda", "not key=value")])
def test_a_bad_post_spec_is_refused_before_the_network_runs(spec, message):
    class Exploding(torch.nn.Module):
        def receptive_radius(self):
            raise AssertionError("the network ran")
    with pytest.raises(ValueError, match=message):
        smooth_image(Exploding(), np.zeros((20, 20, 3), np.uint8), post=spec)
