import cv2
import numpy as np
import pytest
from PIL import Image

from csgis.io import ImageReadError, list_images, read_image, read_label, write_image, write_label


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)


def test_round_trip_rgb(tmp_path, rgb):
    write_image(tmp_path / "a.png", rgb)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_odd_formats_are_converted(tmp_path, rgb):
    gray = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert np.array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    deep = rgb.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "d.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_image(tmp_path / "d.png"), rgb)
    pal = Image.fromarray(gray // 32, "P")
    pal.putpalette([v for i in range(256) for v in (i * 30 % 256, i * 50 % 256, i * 70 % 256)])
    pal.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (7, 9, 3) and out[0, 0, 0] == (int(gray[0, 0]) // 32) * 30 % 256


@pytest.mark.parametrize("content, msg", [(b"", "empty"), (b"not an image at all", "not a readable")])
def test_bad_files_name_the_path(tmp_path, content, msg):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=msg) as e:
        read_image(p)
    assert str(p) in str(e.value)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_labels_keep_indices(tmp_path):
    label = np.array([[0, 1, 20], [255, 7, 0]], np.uint8)
    write_label(tmp_path / "l.png", label)
    assert Image.open(tmp_path / "l.png").mode == "P"
    assert np.array_equal(read_label(tmp_path / "l.png"), label)
    write_image(tmp_path / "c.png", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ImageReadError, match="class indices"):
        read_label(tmp_path / "c.png")


def test_list_images(tmp_path, rgb):
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "b.jpg", rgb)
    write_image(tmp_path / "a.png", rgb)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.jpg"]
