"""The review page in a real browser (Debian's headless chromium, driven by selenium through chromedriver) on the
local stack after real routing: a reviewer clears the REVIEW images with the keyboard (a guess with 1, "none of
these" with x, another label by search), and S3 and DynamoDB say so afterwards; a second reviewer's stale page is
told. It prints how many images a minute the keyboard clears; BREEDFILTER_SCREENSHOT=PATH saves the page.

    .venv/bin/python -m pytest tests/e2e/test_review_page.py -s
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from breedfilter.review_decisions import Reviewer
from breedfilter.review_server import ReviewApp, ReviewServer
from tests.images import image_bytes

SAFETY_S = 60  # how long a wait may last before the test fails instead of hanging; never reached when it works
UNSURE = 6  # grey photos: none of the stand-in model's labels (red, green, blue), so all go to review/


def browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "install chromium and chromium-driver (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("BREEDFILTER_REQUIRE_CHROMIUM"):
        pytest.fail(message + ": BREEDFILTER_REQUIRE_CHROMIUM=1 needs them")
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver = browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(SAFETY_S)
    yield session
    session.quit()


@pytest.fixture
def page(harness: Any) -> Iterator[tuple[Any, ReviewServer]]:
    for i in range(UNSURE):
        harness.put(f"in/unsure-{i}.jpg", image_bytes("grey", size=(48 + i, 40)))
    harness.put("in/red.jpg", image_bytes("red"))
    harness.drain()
    assert sum(item["status"] == "REVIEW" for item in harness.items()) == UNSURE
    names = harness.stack.names
    table = boto3.resource("dynamodb").Table(names.results_table)
    app = ReviewApp(Reviewer(harness.s3, table, names.sorted_bucket, "ana"))
    with ReviewServer(app) as server:
        yield harness, server


def wait_for(browser: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, SAFETY_S).until(condition)


def tiles(browser: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "article.tile")


def test_a_reviewer_clears_the_queue_with_the_keyboard(browser: Any, page: tuple[Any, ReviewServer]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    harness, server = page
    browser.get(server.url)
    wait_for(browser, lambda b: len(tiles(b)) == UNSURE)
    images = browser.find_elements(By.CSS_SELECTOR, "img")
    wait_for(browser, lambda b: all(image.get_property("complete") for image in images))  # loaded or failed
    assert images and all(image.get_property("naturalWidth") > 0 for image in images)  # none failed
    if os.environ.get("BREEDFILTER_SCREENSHOT"):
        browser.save_screenshot(os.environ["BREEDFILTER_SCREENSHOT"])

    decided: dict[str, str | None] = {}  # source id -> label (None: rejected)
    body = browser.find_element(By.TAG_NAME, "body")
    started = time.perf_counter()
    for step in range(UNSURE):
        current = browser.find_element(By.CSS_SELECTOR, "article.tile.current")
        source = current.get_attribute("data-source")
        if step == 1:  # "none of these"
            body.send_keys("x")
            decided[source] = None
        elif step == 2:  # another label, by search
            body.send_keys("/")
            browser.switch_to.active_element.send_keys("blue", Keys.ENTER)
            decided[source] = "blue"
        else:  # the model's first guess
            decided[source] = current.find_element(By.CSS_SELECTOR, "button.guess").get_attribute("data-label")
            body.send_keys("1")
        left = UNSURE - step - 1
        wait_for(browser, lambda b, left=left: len(tiles(b)) == left)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nreview page: {UNSURE} images cleared with the keyboard at {UNSURE / minutes:.0f} per minute")
    wait_for(browser, lambda b: b.find_element(By.ID, "empty").is_displayed())

    items = {item["pk"]: item for item in harness.items()}
    for source, label in decided.items():
        item = items[source]
        assert item["label_source"] == "human" and item["reviewed_by"] == "ana"
        if label is None:
            assert (item["status"], item["reason"]) == ("REJECTED", "human_rejected")
            assert item["destination_key"] == f"rejected/{item['source_key']}"
        else:
            assert (item["status"], item["label"]) == ("SORTED", label)
            assert item["destination_key"] == f"{label}/{item['source_key']}"
    assert not any(key.startswith("review/") for key in harness.keys(harness.sorted))
    assert len(harness.keys(harness.sorted)) == UNSURE + 1


def test_a_stale_page_is_told_another_reviewer_decided(browser: Any, page: tuple[Any, ReviewServer]) -> None:
    from selenium.webdriver.common.by import By

    harness, server = page
    browser.get(server.url)
    wait_for(browser, lambda b: len(tiles(b)) == UNSURE)
    source = browser.find_element(By.CSS_SELECTOR, "article.tile.current").get_attribute("data-source")
    other = Reviewer(harness.s3, server.app.reviewer.table, harness.sorted, "ben")
    other.apply(other.item(source), "green")  # meanwhile, elsewhere
    browser.find_element(By.TAG_NAME, "body").send_keys("x")
    toast = wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#toast.error"))
    assert "decided meanwhile by ben" in toast.text
    wait_for(browser, lambda b: len(tiles(b)) == UNSURE - 1)  # reloaded without it
    item = next(i for i in harness.items() if i["pk"] == source)
    assert (item["status"], item["label"], item["reviewed_by"]) == ("SORTED", "green", "ben")
