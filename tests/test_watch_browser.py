"""The watch page in a real headless Chromium while `deepspm-bluesky survey` runs.

Two real processes write and serve the same catalog folder: the survey (simulator slowed to
~0.5 s an image) and `deepspm-bluesky watch`. The page must show new images as they land,
take a verdict marked wrong, and the correction must be in the catalog. It saves a
screenshot (to $WATCH_SCREENSHOT if set), which the README shows as docs/watch.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from services import answers, debian_program, free_port, wait_until

from deepspm_bluesky.data import open_catalog

IMAGES = 120  # ~60 s of scanning: still running when a loaded machine's browser is up
REALTIME = 0.03  # 64 lines of 10 nm at 80 nm/s, forth and back: 16 s a frame at realtime 1
CLI = Path(sys.executable).parent / "deepspm-bluesky"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through its chromedriver (nothing downloaded)."""
    chromium = debian_program("chromium", "chromium", also=("chromium-driver",))
    driver_path = debian_program("chromedriver", "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1750"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """(page url, catalog dir, survey process): a survey and the watch page, both running."""
    directory = tmp_path_factory.mktemp("watched") / "catalog"
    port = free_port()
    survey = subprocess.Popen(
        [str(CLI), "survey", "--images", str(IMAGES), "--realtime", str(REALTIME),
         "--seed", "2", "--catalog", str(directory)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    page = subprocess.Popen([str(CLI), "watch", "--catalog", str(directory), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/api/status", timeout_s=2), "the watch page", page)
    except BaseException:
        survey.kill()
        raise
    yield url, directory, survey
    for process in (survey, page):
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def shown_images(driver) -> int:
    text = driver.find_element("id", "images").text.split("/")[0].strip()
    return int(text) if text.isdigit() else 0


def mark_a_judged_image_wrong(driver) -> tuple[int, str] | None:
    """Click "wrong" on the first judged tile: (its index, its verdict), or None while the
    gallery has none or is redrawn under the click (the page polls every few seconds)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        for tile in driver.find_elements("css selector", "#gallery .tile"):
            if tile.find_elements("css selector", "button.wrong"):
                index = int(tile.get_attribute("data-index"))
                verdict = tile.find_element("css selector", "b.tag").text
                tile.find_element("css selector", "button.wrong").click()
                return index, verdict
    except StaleElementReferenceException:
        pass
    return None


def test_the_page_follows_a_running_survey_and_stores_a_verdict_marked_wrong(browser,
                                                                              watched):
    # the browser first: installing Chromium on a fresh machine may outlast the survey
    url, directory, survey = watched
    browser.get(url)
    first = wait_for(lambda: shown_images(browser), 120, "the first images on the page")
    first_src = browser.find_element("id", "latest-image").get_attribute("src")
    assert first_src.endswith(f"/images/{first - 1}.png")
    later = wait_for(lambda: (n := shown_images(browser)) > first and n, 120,
                     "the image count to change")
    wait_for(lambda: browser.find_element("id", "latest-image").get_attribute("src")
             != first_src, 10, "the latest image to change")
    assert browser.find_element("id", "latest-image").get_attribute("src").endswith(
        f"/images/{later - 1}.png")
    assert browser.find_element("id", "state").text == "running"

    browser.find_element("css selector", "#runs tbody tr").click()
    index, verdict = wait_for(lambda: mark_a_judged_image_wrong(browser), 30,
                              "a judged image in the gallery")
    wait_for(lambda: browser.find_element("id", "corrections").text == "1", 60,
             "the page to count the correction")

    run = open_catalog(directory)[-1]
    stored = run.metadata["corrections"][str(index)]
    assert stored["review"] == "wrong" and stored["verdict"] == verdict
    assert stored["label"] == {"good": "bad", "bad": "good"}[verdict]
    assert run["primary"].base["internal"].read(["verdict"])["verdict"].iloc[index] == verdict
    status = json.loads(urllib.request.urlopen(f"{url}/api/status").read())
    assert status["uid"] == run.metadata["start"]["uid"] and status["corrections"] == 1

    wait_for(lambda: all(img.get_attribute("naturalWidth") != "0" for img in
                         browser.find_elements("css selector", "#gallery img")[:7]), 30,
             "the gallery's first row of images")
    screenshot = Path(os.environ.get("WATCH_SCREENSHOT") or directory.parent / "watch.png")
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    uid = status["uid"]
    browser.get("about:blank")
    browser.get(f"{url}/#run={uid}")  # a notice's link opens the page at the run's images
    wait_for(lambda: browser.find_element("id", "gallery-run").text.startswith(
        f"run {uid[:8]}"), 30, "the linked run's images")
    assert survey.wait(timeout=180) == 0, survey.stdout.read().decode()
