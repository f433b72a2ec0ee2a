"""Take the page's screenshot for the docs: app.py in headless Chromium, one test image of the demo
data, a click on an object, smoothed.

    python scripts/screenshot_app.py [--data data/demo] [--image scene0005__dots23] [--out docs/app.png]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import browser

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/demo")
    p.add_argument("--image", default="scene0005__dots23", help="a sample id of the test split")
    p.add_argument("--click", type=float, nargs=2, default=None, metavar=("X", "Y"),
                   help="pixel to click (default: the centre of the image's first labelled object)")
    p.add_argument("--out", default="docs/app.png")
    args = p.parse_args(argv)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from csgis.data.manifest import read_manifest
    from csgis.io import read_image, read_label
    row = next((r for r in read_manifest(args.data, "test") if r["id"] == args.image), None)
    if row is None or not browser.available():
        print("error: no such test image, or chromium / chromedriver missing", file=sys.stderr)
        return 2
    image = Path(args.data) / row["input"]
    height, width = read_image(image).shape[:2]
    if args.click is None:
        import numpy as np
        from scipy import ndimage
        labels = read_label(Path(args.data) / row["seg"])
        objects, _ = ndimage.label((labels != 0) & (labels != 255))
        y, x = ndimage.center_of_mass(objects == 1)
        args.click = (x, y)
        del np
    work = Path(tempfile.mkdtemp(prefix="csgis_shot_"))
    app, url = browser.start_page(["--checkpoint", str(ROOT / "weights" / "demo_smoother.pth"), "--segmenter",
                                   str(ROOT / "weights" / "demo_segmenter.pth")], work / "app.log")
    driver = browser.browser(1400, 1150)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(image.resolve()))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#canvas img"))
        browser.click_image(driver, driver.find_element(By.CSS_SELECTOR, "#canvas img"), *args.click, width, height)
        wait.until(lambda d: "region:" in d.find_element(By.ID, "status").text)
        driver.find_element(By.ID, "smooth").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#downloads a")) >= 2)
        driver.execute_script("window.scrollTo(0, 0)")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        app.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
