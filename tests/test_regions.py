"""Region smoothing (csgis.regions) and interactive segmentation (csgis.interactive)."""
import cv2
import numpy as np
import pytest

from csgis import interactive, regions


def shapes_image(seed: int = 0):
    """A textured picture with a disc and a square on a gradient; their masks."""
    rng = np.random.default_rng(seed)
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([40 + xx, 60 + yy, np.full((h, w), 90)], -1).astype(np.float64)
    disc = (yy - 40) ** 2 + (xx - 40) ** 2 < 22 ** 2
    square = (yy > 50) & (yy < 85) & (xx > 80) & (xx < 115)
    image[disc] = (220, 40, 40)
    image[square] = (30, 200, 60)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), disc, square


def box_smooth(rgb):
    return cv2.blur(rgb, (7, 7))


def test_feathered_blend_leaves_everything_outside_the_band_bit_identical():
    rgb, disc, _ = shapes_image()
    smoothed = box_smooth(rgb)
    weight = regions.feather(disc, 6)
    assert weight[disc].min() == 1.0 and weight.max() == 1.0
    distance = cv2.distanceTransform((~disc).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    band = (distance > 0) & (distance < 6)
    assert 0 < weight[band].min() and weight[band].max() < 1  # a gradual seam
    out = regions.blend(rgb, smoothed, weight)
    outside = distance >= 6
    assert np.array_equal(out[outside], rgb[outside])  # exactly the input
    assert np.array_equal(out[disc], smoothed[disc])
    # No feather: a hard edge, and still nothing outside the mask touched.
    hard = regions.blend(rgb, smoothed, regions.feather(disc, 0))
    assert np.array_equal(hard[~disc], rgb[~disc]) and np.array_equal(hard[disc], smoothed[disc])


def test_strength_blends_below_one_and_repeats_the_smoother_above():
    rgb, _, _ = shapes_image()
    once, twice = box_smooth(rgb), box_smooth(box_smooth(rgb))
    s = lambda strength, scale=1.0: regions.smooth_strength(None, rgb, strength, scale, smooth=box_smooth)  # noqa: E731
    assert np.array_equal(s(0), rgb) and np.array_equal(s(1), once) and np.array_equal(s(2), twice)
    half = np.rint(0.5 * once.astype(np.float32) + 0.5 * rgb.astype(np.float32)).astype(np.uint8)
    assert np.array_equal(s(0.5), half)
    one_and_half = np.rint(0.5 * twice.astype(np.float32) + 0.5 * once.astype(np.float32)).astype(np.uint8)
    assert np.array_equal(s(1.5), one_and_half)
    # Smoothing at half the resolution and back: same size, smoother than at full resolution.
    coarse = s(1, 0.5)
    assert coarse.shape == rgb.shape
    assert np.abs(np.diff(coarse.astype(int), axis=1)).mean() < np.abs(np.diff(once.astype(int), axis=1)).mean()
    for bad in ((5, 1), (-1, 1), (1, 0.1), (1, 8)):
        with pytest.raises(regions.RegionError):
            s(*bad)


def test_mask_files_must_fit_the_image_unless_resized(tmp_path):
    from csgis.io import write_image
    rgb, disc, _ = shapes_image()
    write_image(tmp_path / "m.png", regions.mask_image(disc))
    assert np.array_equal(regions.read_mask(tmp_path / "m.png", disc.shape), disc)
    write_image(tmp_path / "half.png", regions.mask_image(disc[::2, ::2]))
    with pytest.raises(regions.RegionError, match=r"half.png is 64x48 but the image is 128x96"):
        regions.read_mask(tmp_path / "half.png", disc.shape)
    resized = regions.read_mask(tmp_path / "half.png", disc.shape, resize=True)
    assert resized.shape == disc.shape and interactive.iou(resized, disc) > 0.9


def test_class_names_and_selection():
    labels = np.array([[0, 1, 1], [2, 2, 0]], np.uint8)
    names = ["background", "disc", "rectangle"]
    assert regions.class_ids(names, ["disc"]) == [1]
    with pytest.raises(regions.RegionError, match="no class 'cat'.*background, disc, rectangle"):
        regions.class_ids(names, ["cat"])
    assert regions.class_mask(labels, [1]).tolist() == [[False, True, True], [False, False, False]]
    assert regions.class_mask(labels, [1], keep=True).tolist() == [[True, False, False], [True, True, True]]


@pytest.mark.parametrize("method", ["grabcut", "random_walker"])
def test_strokes_and_clicks_find_an_object(method):
    rgb, disc, square = shapes_image()
    scores = interactive.simulate_clicks(method, rgb, disc, clicks=3)
    assert len(scores) == 3 and max(scores) > 0.85, scores
    include = np.zeros(disc.shape, bool)
    include[38:43, 38:43] = True
    exclude = np.zeros(disc.shape, bool)
    exclude[60:70, 90:100] = True
    region = getattr(interactive, method)(rgb, include, exclude)
    assert interactive.iou(region, disc) > 0.85 and not region[square].any()
    with pytest.raises(ValueError, match="no include stroke"):
        getattr(interactive, method)(rgb, np.zeros_like(disc), exclude)


def test_click_object_takes_the_connected_region_of_the_clicked_class():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6] = 1
    labels[10:15, 10:15] = 1  # same class, another object
    region = interactive.click_object(labels, (3, 3))
    assert region.sum() == 16 and not region[12, 12]
    rgb = np.zeros((20, 20, 3), np.uint8)
    assert interactive.simulate_clicks("click_object", rgb, labels == 1, 2, labels)[-1] > 0.9


def test_the_click_protocol_aims_at_the_largest_error():
    target = np.zeros((40, 40), bool)
    target[5:35, 5:35] = True
    y, x, positive = interactive.next_click(target, np.zeros_like(target))
    assert positive and (y, x) in {(19, 19), (19, 20), (20, 19), (20, 20)}  # the centre of the object
    spill = target.copy()
    spill[:, 36:] = True
    y, x, positive = interactive.next_click(target, spill)
    assert not positive and x >= 36
    assert interactive.next_click(target, target) is None


# ----------------------------------------------------------------------------- show.py
@pytest.fixture
def scene(tmp_path):
    from csgis.io import write_image
    rgb, disc, square = shapes_image()
    write_image(tmp_path / "in" / "a.png", rgb)
    write_image(tmp_path / "masks" / "a.png", regions.mask_image(disc))
    return tmp_path, rgb, disc


def run_show(tmp_path, *extra, out="out"):
    import show
    return show.main(["--checkpoint", str(SHIPPED), "--input", str(tmp_path / "in"), "--output",
                      str(tmp_path / out), "--device", "cpu", *map(str, extra)])


SHIPPED = __import__("pathlib").Path(__file__).resolve().parents[1] / "weights" / "demo_smoother.pth"


def test_show_smooths_only_inside_the_mask(scene, capsys):
    from csgis.checkpoint import load_smoother
    from csgis.io import read_image
    tmp_path, rgb, disc = scene
    assert run_show(tmp_path, "--mask", tmp_path / "masks", "--feather", 4, "--save-mask", "--strength", 0.8) == 0
    out = read_image(tmp_path / "out" / "a.png")
    distance = cv2.distanceTransform((~disc).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert np.array_equal(out[distance >= 4], rgb[distance >= 4])
    expected = regions.smooth_region(load_smoother(SHIPPED), rgb, disc, 4, 0.8, 1.0)
    assert np.array_equal(out, expected)  # show.py is the library's region smoothing
    assert np.array_equal(read_image(tmp_path / "out" / "a_mask.png")[..., 0] > 127, disc)
    # A single mask file works as well as a folder of masks named like the inputs.
    assert run_show(tmp_path, "--mask", tmp_path / "masks" / "a.png", "--feather", 4, "--strength", 0.8,
                    out="out_file") == 0
    assert np.array_equal(read_image(tmp_path / "out_file" / "a.png"), out)


def test_show_region_inputs_that_cannot_work_are_one_line(scene, capsys):
    from csgis.io import write_image
    tmp_path, rgb, disc = scene
    write_image(tmp_path / "small" / "a.png", regions.mask_image(disc[::2, ::2]))
    assert run_show(tmp_path, "--mask", tmp_path / "small") == 1
    err = capsys.readouterr().err
    assert "is 64x48 but the image is 128x96" in err and "--resize-mask" in err and str(tmp_path / "small") in err
    assert run_show(tmp_path, "--mask", tmp_path / "small", "--resize-mask", out="resized") == 0
    write_image(tmp_path / "empty" / "a.png", np.zeros(disc.shape, np.uint8))
    assert run_show(tmp_path, "--mask", tmp_path / "empty", out="e") == 1
    assert "the region is empty" in capsys.readouterr().err
    assert run_show(tmp_path, "--classes", "cat", "--segmenter", SHIPPED.with_name("demo_segmenter.pth")) == 2
    assert "no class 'cat'; its classes: background, disc, rectangle" in capsys.readouterr().err
    assert run_show(tmp_path, "--classes", "disc", "--segmenter", SHIPPED) == 2  # a smoother as segmenter
    assert "is a csgis 'smoother' checkpoint, expected a DeepLabV3+" in capsys.readouterr().err
    assert run_show(tmp_path, "--strength", 5) == 2 and "strength must be in [0, 4]" in capsys.readouterr().err
    assert run_show(tmp_path, "--mask", tmp_path / "masks", "--classes", "disc") == 2


def test_show_semantic_regions_come_from_the_segmenter(scene):
    from csgis.checkpoint import load_segmenter
    from csgis.io import read_image
    tmp_path, rgb, disc = scene
    seg = SHIPPED.with_name("demo_segmenter.pth")
    assert run_show(tmp_path, "--keep-classes", "background", "--segmenter", seg, "--save-mask") == 0
    labels = regions.segment(load_segmenter(seg), rgb)
    mask = read_image(tmp_path / "out" / "a_mask.png")[..., 0] > 127
    assert np.array_equal(mask, labels != 0)
    out = read_image(tmp_path / "out" / "a.png")
    assert np.array_equal(out[~mask], rgb[~mask])
