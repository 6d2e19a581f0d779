"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver, through Selenium) enters
the key, submits a text-to-image job, watches its bar move and reach SUCCEEDED, sees the thumbnail, then a failed
job's error with its field. A screenshot is kept in test-artifacts/ (LLADA_TEST_ARTIFACTS elsewhere)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromium-driver are not installed (.ci/run installs them)")
ARTIFACTS = Path(os.environ.get("LLADA_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
WAIT_S = 20


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_until(driver, condition, message):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message)


def newest_row(driver):
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#job-rows tr")
    return rows[0] if rows else None


def progress_of(driver, row) -> float:
    return driver.execute_script("return arguments[0].querySelector('progress').position", row)


def test_a_person_submits_a_job_and_watches_it_finish(door, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    key = door.key("dashboard-user")
    browser.get(door.url + "/")
    wait_until(browser, lambda d: d.find_element(By.ID, "api-key").is_displayed(), "the key is asked for")
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_until(browser, lambda d: d.find_element(By.ID, "app").is_displayed(), "the app shows")

    door.worker.stepwise()
    try:
        Select(browser.find_element(By.ID, "size")).select_by_visible_text("128x128")
        browser.find_element(By.ID, "text").send_keys("a red circle at the top left")
        browser.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]").click()
        row = wait_until(browser, lambda d: newest_row(d), "the job is listed")
        assert wait_until(browser, lambda d: row.get_attribute("data-state") == "QUEUED", "QUEUED")
        assert "in queue" in row.find_element(By.CSS_SELECTOR, "td.state").text  # its place in the queue
        door.worker.step()  # claimed: RUNNING
        wait_until(browser, lambda d: row.get_attribute("data-state") == "RUNNING", "RUNNING")
        door.worker.step()  # denoise step 1 of 2: the bar is half full
        wait_until(browser, lambda d: progress_of(d, row) == 0.5, "the bar at half")
        assert "denoise 1/2" in row.find_element(By.CSS_SELECTOR, "td.progress").text
        door.worker.step()  # finished
        wait_until(browser, lambda d: row.get_attribute("data-state") == "SUCCEEDED", "SUCCEEDED")
    finally:
        door.worker.stepwise(False)
    assert progress_of(browser, row) == 1
    thumb = wait_until(browser, lambda d: row.find_elements(By.CSS_SELECTOR, "img.thumb"), "a thumbnail")[0]
    wait_until(browser, lambda d: d.execute_script("return arguments[0].naturalWidth", thumb) == 128,
               "the thumbnail is the 128-pixel result")
    assert "denoise" in row.find_element(By.CSS_SELECTOR, "td.stages").text

    browser.find_element(By.ID, "text").send_keys("a blue square [fail]")
    browser.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]").click()
    wait_until(browser, lambda d: newest_row(d).get_attribute("data-state") == "FAILED", "the failure shows")
    failed = newest_row(browser).find_element(By.CSS_SELECTOR, "td.state").text
    assert "the double was told to fail" in failed and "(field: text_to_image.prompt)" in failed

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))


def test_a_refused_submit_shows_the_field_and_a_bad_key_asks_again(door, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(door.url + "/")
    Select(browser.find_element(By.ID, "kind")).select_by_value("understand")
    browser.find_element(By.ID, "text").send_keys("what is it?")
    browser.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]").click()  # no image chosen
    wait_until(browser, lambda d: "field: image" in d.find_element(By.ID, "submit-error").text, "the field is named")

    browser.execute_script("sessionStorage.setItem('llada-api-key', 'llada_not_a_key')")
    browser.get(door.url + "/")
    wait_until(browser, lambda d: d.find_element(By.ID, "api-key").is_displayed(), "a bad key is asked again")


def test_understanding_and_editing_take_an_uploaded_image(door, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.http.worker_double import answer_to, png

    picture = tmp_path / "picture.png"
    picture.write_bytes(png(64, 64))
    browser.get(door.url + "/")
    browser.execute_script("sessionStorage.setItem('llada-api-key', arguments[0])", door.key("dashboard-uploads"))
    browser.get(door.url + "/")
    wait_until(browser, lambda d: d.find_element(By.ID, "app").is_displayed(), "the app shows")
    for kind, text in (("understand", "what is it?"), ("edit", "make it blue")):
        Select(browser.find_element(By.ID, "kind")).select_by_value(kind)
        browser.find_element(By.ID, "image").send_keys(str(picture))
        browser.find_element(By.ID, "text").send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]").click()
        wait_until(browser, lambda d: newest_row(d) is not None and newest_row(d).get_attribute("data-state") ==
                   "SUCCEEDED" and kind.replace("_", " ") in newest_row(d).find_element(By.CSS_SELECTOR,
                                                                                        "td.kind").text, kind)
    rows = browser.find_elements(By.CSS_SELECTOR, "#job-rows tr")
    wait_until(browser, lambda d: rows[0].find_elements(By.CSS_SELECTOR, "img.thumb"), "the edit's result shows")
    assert rows[1].find_element(By.CSS_SELECTOR, ".answer").text == answer_to("what is it?")
