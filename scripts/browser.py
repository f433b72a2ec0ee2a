"""Headless Chromium (Debian's chromium and chromium-driver) through Selenium, for the page's test
and its screenshot (scripts/screenshot_app.py)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def available() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def browser(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # No background traffic: this machine reaches no network beyond its package mirrors.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_page(args: list[str], log: Path, timeout: float = 120, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """python app.py ARGS on a free port -> (process, URL), once the page answers; env: extra variables."""
    import os
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), *args, "--port", str(port)], cwd=log.parent,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    url, started = f"http://127.0.0.1:{port}/", time.monotonic()
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() - started > timeout:
                proc.terminate()
                raise RuntimeError(f"app.py did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def set_number(driver, elem_id: str, value) -> None:
    """Type into the number box of a Gradio slider."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def click_image(driver, element, x: float, y: float, width: int, height: int) -> None:
    """Click the pixel (x, y) of an image of width x height shown in `element`."""
    from selenium.webdriver.common.action_chains import ActionChains
    w, h = element.size["width"], element.size["height"]
    ActionChains(driver).move_to_element_with_offset(element, int(w * (x / width - 0.5)),
                                                     int(h * (y / height - 0.5))).click().perform()
