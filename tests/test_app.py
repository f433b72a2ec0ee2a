"""app.py: the page's logic (csgis.webapp.Editor), and the page itself driven in headless Chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from csgis import regions
from csgis.checkpoint import load_segmenter, load_smoother
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
    assert editor.region("whole").all() and editor.region("classes", ["background"]).any()
    with pytest.raises(ValueError, match="no class 'sky'"):
        editor.region("classes", ["sky"])
    with pytest.raises(ValueError, match="not an image"):
        editor.load(np.array(["text"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _set_number(driver, elem_id: str, value) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
def test_the_page_in_a_browser_gives_what_show_py_gives(tmp_path, capsys):
    """Open an image, click the object, set strength and feather, smooth, download: the downloaded
    result is show.py's output for the downloaded mask and the same settings."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    import show

    rgb, disc, _ = shapes_image()
    write_image(tmp_path / "in" / "scene.png", rgb)
    port = _free_port()
    app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(SMOOTHER), "--port", str(port)],
                           cwd=tmp_path, stdout=open(tmp_path / "app.log", "w"), stderr=subprocess.STDOUT,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    started = time.monotonic()
    driver = None
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                assert app.poll() is None and time.monotonic() - started < 120, (tmp_path / "app.log").read_text()
                time.sleep(0.5)
        driver = _browser()
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        (tmp_path / "notes.png").write_text("not an image")  # first a file that is no image: one line
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "notes.png"))
        wait.until(lambda d: "cannot open this file: not a readable image file" in d.find_element(By.ID, "status").text)
        driver.refresh()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "in" / "scene.png"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#canvas img"))
        image = driver.find_element(By.CSS_SELECTOR, "#canvas img")
        w, h = image.size["width"], image.size["height"]
        # Click the disc (centre at x 40, y 40 of 128 x 96); offsets are from the element's centre.
        ActionChains(driver).move_to_element_with_offset(image, int(w * (40 / 128 - 0.5)),
                                                         int(h * (40 / 96 - 0.5))).click().perform()
        wait.until(lambda d: "region:" in d.find_element(By.ID, "status").text)
        _set_number(driver, "strength", 0.8)
        _set_number(driver, "feather", 6)
        driver.find_element(By.ID, "smooth").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#downloads a")) >= 2)
        assert "strength 0.8" in driver.find_element(By.ID, "status").text
        for link in driver.find_elements(By.CSS_SELECTOR, "#downloads a"):
            url = link.get_attribute("href")
            (tmp_path / Path(url).name).write_bytes(urllib.request.urlopen(url, timeout=30).read())
    finally:
        if driver is not None:
            driver.quit()
        app.terminate()
        app.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "app.log").read_text()
    mask = read_image(tmp_path / "mask.png")[..., 0] > 127
    assert mask[35:45, 35:45].all() and mask.mean() < 0.3  # the disc, not the image
    assert show.main(["--checkpoint", str(SMOOTHER), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                      "--mask", str(tmp_path / "mask.png"), "--feather", "6", "--strength", "0.8", "--scale", "1",
                      "--device", "cpu"]) == 0
    assert np.array_equal(read_image(tmp_path / "result.png"), read_image(tmp_path / "out" / "scene.png"))
