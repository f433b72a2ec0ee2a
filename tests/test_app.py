"""app.py: the page's logic (csgis.webapp.Editor), and the page itself driven in headless Chromium."""
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import browser
from csgis import regions
from csgis.checkpoint import load_segmenter, load_smoother
from csgis.inference import RECOMMENDED_POST
from csgis.io import read_image, write_image
from csgis.webapp import Editor
from test_regions import shapes_image

ROOT = Path(__file__).resolve().parents[1]
SMOOTHER, SEGMENTER = ROOT / "weights" / "demo_smoother.pth", ROOT / "weights" / "demo_segmenter.pth"


@pytest.fixture(scope="module")
def editor():
    from csgis.data.synthetic import SHAPE_CLASSES
    return Editor(load_smoother(SMOOTHER), load_segmenter(SEGMENTER), list(SHAPE_CLASSES))


def test_the_editor_marks_regions_and_smooths_once_per_setting(editor, monkeypatch):
    rgb, disc, square = shapes_image()
    editor.load(rgb)
    with pytest.raises(ValueError, match="click on the image"):
        editor.region("grabcut")
    editor.click(40, 40, include=True, radius=4)  # x, y: the disc's centre
    editor.click(100, 70, include=False, radius=4)  # in the square
    region = editor.region("grabcut")
    assert region[35:45, 35:45].all() and not region[square].any()
    expected = regions.smooth_region(editor.smoother, rgb, region, 4, 1.0, 1.0)
    calls = []
    real = regions.smooth_strength
    monkeypatch.setattr(regions, "smooth_strength", lambda *a, **k: calls.append(a[2:4]) or real(*a, **k))
    first = editor.result(region, 4, 1.0, 1.0)
    again = editor.result(editor.region("random_walker"), 8, 1.0, 1.0)  # another region: only a re-blend
    assert calls == [(1.0, 1.0)] and first.shape == again.shape
    assert np.array_equal(first, expected)
    editor.result(region, 4, 0.5, 1.0)
    assert calls == [(1.0, 1.0), (0.5, 1.0)]
    kept = editor.result(region, 4, 1.0, 1.0, keep_mean=True)  # show.py --keep-mean: smoothed once more
    assert calls == [(1.0, 1.0), (0.5, 1.0), (1.0, 1.0)]
    assert np.array_equal(kept, regions.smooth_region(editor.smoother, rgb, region, 4, 1.0, 1.0, keep_mean=True))
    assert not np.array_equal(kept, first)
    before = len(calls)
    flat = editor.result(region, 4, 1.0, 1.0, keep_mean=True, post="l0:lambda=0.02")  # show.py --post: once more
    assert calls[before:] == [(1.0, 1.0)]
    assert np.array_equal(flat, regions.smooth_region(editor.smoother, rgb, region, 4, 1.0, 1.0, keep_mean=True,
                                                      post="l0:lambda=0.02"))
    assert not np.array_equal(flat, kept)
    assert editor.region("whole").all() and editor.region("classes", ["background"]).any()
    with pytest.raises(ValueError, match="no class 'sky'"):
        editor.region("classes", ["sky"])
    with pytest.raises(ValueError, match="not an image"):
        editor.load(np.array(["text"]))


@pytest.mark.skipif(not browser.available(),
                    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
def test_the_page_in_a_browser_gives_what_show_py_gives(tmp_path, capsys):
    """Open an image, click the object, set strength and feather, smooth, download: the downloaded
    result is show.py's output for the downloaded mask and the same settings."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    import show

    rgb, disc, _ = shapes_image()
    write_image(tmp_path / "in" / "scene.png", rgb)
    (tmp_path / "tmp").mkdir()
    app, url = browser.start_page(["--checkpoint", str(SMOOTHER)], tmp_path / "app.log", env={"TMPDIR": str(tmp_path / "tmp")})
    assert len(list((tmp_path / "tmp").glob("csgis_app_*"))) == 1  # the page's download folder
    driver = None
    try:
        driver = browser.browser()
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        (tmp_path / "notes.png").write_text("not an image")  # first a file that is no image: one line
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "notes.png"))
        wait.until(lambda d: "cannot open this file: not a readable image file" in d.find_element(By.ID, "status").text)
        driver.refresh()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "in" / "scene.png"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#canvas img"))
        browser.click_image(driver, driver.find_element(By.CSS_SELECTOR, "#canvas img"), 40, 40, 128, 96)  # the disc
        wait.until(lambda d: "region:" in d.find_element(By.ID, "status").text)
        browser.set_number(driver, "strength", 0.8)
        browser.set_number(driver, "feather", 6)
        driver.find_element(By.CSS_SELECTOR, "#keep_mean input[type=checkbox]").click()
        driver.find_element(By.CSS_SELECTOR, "#post input[type=checkbox]").click()
        driver.find_element(By.ID, "smooth").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#downloads a")) >= 2)
        assert "strength 0.8" in driver.find_element(By.ID, "status").text
        assert "--keep-mean" in driver.find_element(By.ID, "status").text
        assert f"--post {RECOMMENDED_POST}" in driver.find_element(By.ID, "status").text
        for link in driver.find_elements(By.CSS_SELECTOR, "#downloads a"):
            url = link.get_attribute("href")
            (tmp_path / Path(url).name).write_bytes(urllib.request.urlopen(url, timeout=30).read())
    finally:
        if driver is not None:
            driver.quit()
        app.terminate()
        app.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "app.log").read_text()
    assert not list((tmp_path / "tmp").glob("csgis_app_*"))  # stopped, the page leaves no results behind
    mask = read_image(tmp_path / "mask.png")[..., 0] > 127
    assert mask[35:45, 35:45].all() and mask.mean() < 0.3  # the disc, not the image
    assert show.main(["--checkpoint", str(SMOOTHER), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                      "--mask", str(tmp_path / "mask.png"), "--feather", "6", "--strength", "0.8", "--scale", "1",
                      "--keep-mean", "--post", RECOMMENDED_POST, "--device", "cpu"]) == 0
    assert np.array_equal(read_image(tmp_path / "result.png"), read_image(tmp_path / "out" / "scene.png"))


def test_brushed_strokes_mark_regions_like_clicks(editor):
    rgb, disc, square = shapes_image()
    editor.load(rgb)
    layer = np.zeros(rgb.shape[:2] + (4,), np.uint8)
    layer[36:44, 30:50] = (40, 220, 60, 255)    # a green stroke across the disc: include
    layer[60:80, 95:100] = (230, 40, 40, 255)   # a red one in the square: exclude
    editor.paint([layer, np.zeros((5, 5, 4), np.uint8)])  # a layer of another size is ignored
    include, exclude = editor.strokes()
    assert include[40, 40] and exclude[70, 97] and not include[70, 97]
    region = editor.region("grabcut")
    assert region[35:45, 35:45].all() and not region[square].any()
    assert (editor.overlay(region)[40, 40] == (40, 220, 60)).all()  # the stroke is drawn
