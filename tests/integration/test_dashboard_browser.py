"""The dashboard in a real headless Chromium, against the broker, the emulator and a worker.

Debian's `chromium` and `chromium-driver` (`make test` installs them when it can). A machine
without them fails these tests with the command to run; they never skip.
The tests share one page and run in order: key, rows, a live write, search, detail.
Set `LAYER_DASHBOARD_SCREENSHOT=docs/dashboard.png` to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.conftest import (
    EMULATOR_KEY,
    OTHER_EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    unique_namespace,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
PREFIX = unique_namespace("dash")
NAMES = [f"{PREFIX}-alpha", f"{PREFIX}-beta", f"{PREFIX}-gamma"]


def _chromium() -> WebDriver:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(f"the browser tests need {' and '.join(missing)}: run `{INSTALL}` (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,820",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster, emulator: EmulatorProcess) -> Iterator[WorkerProcess]:
    running = module_cluster.worker("dashboard", NAMESPACE_LIST_CACHE_TTL_MS="0").start()
    for name in NAMES:
        emulator.write(name, {"upsert_rows": [{"id": 1, "title": name}]})
        emulator.force_indexing(name)
        running.metadata(name)  # registers it with the watcher
    wait_until(
        lambda: all(running.layer_state(n)["is_stable"] for n in NAMES), 30, "stable namespaces"
    )
    yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = _chromium()
    yield driver
    driver.quit()


def _wait(driver: WebDriver, condition: Any, timeout_s: float = 15, what: str = "") -> Any:
    # Rows are re-rendered when they change: an element found a moment ago may be gone.
    return WebDriverWait(
        driver, timeout_s, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    ).until(lambda d: condition(d), message=what)


def _console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _rows(driver: WebDriver) -> dict[str, str]:
    """`data-namespace` → `data-status` of every inventory row, in the table's order."""
    pairs: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll('#namespaces tbody tr')]"
        ".map(r => [r.dataset.namespace, r.dataset.status])"
    )
    return {name: status for name, status in pairs}


def _counter(driver: WebDriver, name: str) -> int:
    return int(driver.find_element(By.CSS_SELECTOR, f'[data-counter="{name}"]').text)


def test_the_page_asks_for_a_key_and_shows_the_apis_error_for_a_wrong_one(
    worker: WorkerProcess, browser: WebDriver
) -> None:
    page = httpx.get(f"{worker.url}/dashboard")  # no key: the page holds no data
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-cache"
    browser.get(f"{worker.url}/dashboard?prefix={PREFIX}")
    key = _wait(browser, lambda d: d.find_element(By.NAME, "api_key"), what="the key form")
    assert key.is_displayed() and key.get_attribute("type") == "password"
    assert not browser.find_element(By.ID, "inventory").is_displayed()

    key.send_keys("not-a-key")
    key.submit()
    error = _wait(browser, lambda d: d.find_element(By.ID, "error").text, what="the error")
    assert "refused" in error and "key" in error, error
    assert browser.find_element(By.NAME, "api_key").is_displayed(), "asked again"
    assert browser.execute_script("return sessionStorage.getItem('layer.api_key')") is None
    # The only console errors are the refused requests themselves (Chromium logs a 401).
    assert all("401" in e["message"] for e in _console_errors(browser)), browser.get_log("browser")


def test_rows_appear_with_their_status_and_the_counters(
    worker: WorkerProcess, browser: WebDriver
) -> None:
    key = browser.find_element(By.NAME, "api_key")
    key.send_keys(EMULATOR_KEY)
    key.submit()
    rows = _wait(browser, lambda d: len(r := _rows(d)) == 3 and r, what="three rows")
    assert rows == {name: "stable" for name in NAMES}
    assert [_counter(browser, c) for c in ("namespaces", "stable", "updating", "errors")] == [
        3, 3, 0, 0,
    ]  # fmt: skip
    _wait(
        browser,
        lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live",
        what="the live stream",
    )
    assert browser.execute_script("return sessionStorage.getItem('layer.api_key')") == EMULATOR_KEY
    assert EMULATOR_KEY not in browser.current_url and browser.get_cookies() == []
    assert _console_errors(browser) == []


def test_a_write_makes_its_row_updating_then_stable_without_a_reload(
    worker: WorkerProcess, emulator: EmulatorProcess, browser: WebDriver, tmp_path: Path
) -> None:
    name = NAMES[0]
    browser.execute_script("window.__sameDocument = true")
    emulator.pause_indexing(name)
    written_at = time.monotonic()
    response = worker.http.post(
        f"/v2/namespaces/{name}", json={"upsert_rows": [{"id": 2, "title": "two"}]}
    )
    assert response.status_code == 200, response.text
    _wait(browser, lambda d: _rows(d)[name] == "updating", 10, "the row to turn updating")
    seen_after = time.monotonic() - written_at
    assert _counter(browser, "updating") == 1
    _wait(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f'tr[data-namespace="{name}"] td:nth-child(2)').text
            == "2"
        ),
        10,
        "2 rows",
    )
    _screenshot(browser, tmp_path)

    emulator.resume_indexing(name)
    emulator.force_indexing(name)
    _wait(browser, lambda d: _rows(d)[name] == "stable", 20, "the row to turn stable again")
    assert browser.execute_script("return window.__sameDocument") is True, "no reload"
    assert seen_after < 3, f"the row turned updating {seen_after:.2f} s after the write"
    print(f"row updating {seen_after:.2f} s after the write")
    assert _console_errors(browser) == []


def _screenshot(browser: WebDriver, tmp_path: Path) -> None:
    """The README's picture: the inventory with one row updating."""
    path = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    if target := os.environ.get("LAYER_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(path, target)


def test_the_prefix_filter_narrows_the_rows_and_is_kept_in_the_url(
    worker: WorkerProcess, browser: WebDriver
) -> None:
    search = browser.find_element(By.NAME, "prefix")
    assert search.get_attribute("value") == PREFIX, "read from ?prefix="
    search.send_keys("-b")
    _wait(browser, lambda d: list(_rows(d)) == [NAMES[1]], what="one row left")
    assert f"prefix={PREFIX}-b" in browser.current_url
    search.clear()
    search.send_keys(PREFIX)
    _wait(browser, lambda d: len(_rows(d)) == 3, what="three rows again")

    assert list(_rows(browser)) == sorted(NAMES), "sorted by name at first"
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="name"] button').click()
    assert list(_rows(browser)) == sorted(NAMES, reverse=True), "a click reverses it"
    header = browser.find_element(By.CSS_SELECTOR, 'th[data-sort="name"]')
    assert header.get_attribute("aria-sort") == "descending"
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="rows"] button').click()
    assert list(_rows(browser))[-1] == NAMES[0], "by rows: the one with 2 rows last"
    assert _console_errors(browser) == []


def test_the_detail_view_shows_the_layer_block_snapshots_and_a_chart(
    worker: WorkerProcess, browser: WebDriver
) -> None:
    name = NAMES[0]
    browser.find_element(By.LINK_TEXT, name).click()
    _wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="the detail")
    assert browser.find_element(By.ID, "detail-name").text == name
    status = _wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-layer-status]"),
        what="the layer block",
    )
    assert status[0].get_attribute("data-layer-status") == "stable"
    snapshots = _wait(
        browser,
        lambda d: len(s := d.find_elements(By.CSS_SELECTOR, "tr[data-snapshot]")) >= 2 and s,
        what="two snapshots (the first write, then the second)",
    )
    stamps = [int(s.get_attribute("data-snapshot")) for s in snapshots]
    assert stamps == sorted(stamps, reverse=True), "newest first"
    chart = browser.find_element(By.CSS_SELECTOR, "svg#freshness-chart")
    assert int(chart.get_attribute("data-points")) == len(snapshots)
    assert chart.find_elements(By.CSS_SELECTOR, 'polyline[data-series="rows"]')
    upstream = browser.find_element(By.ID, "upstream").text
    assert '"approx_row_count": 2' in upstream
    browser.back()
    _wait(browser, lambda d: d.find_element(By.ID, "inventory").is_displayed(), what="back")
    assert _console_errors(browser) == []


def test_the_view_code_shapes_rows_and_events(worker: WorkerProcess, browser: WebDriver) -> None:
    """The page's pure functions (window.LayerDashboard), run in the page itself."""
    result = browser.execute_script(
        """
        const D = window.LayerDashboard;
        const row = {name: "a", is_stable: false, stable_as_of_ms: null, last_write_ms: null,
                     row_count: 1, size_bytes: 10, cache_state: null, metadata_error: null};
        const change = {namespace: "a", change: "became_stable", is_stable: true,
                        stable_as_of: 5, index: {status: "up-to-date"}};
        return {
          unknown: D.rowStatus(row),
          updating: D.rowStatus({...row, last_write_ms: 3}),
          updatingIndex: D.rowStatus({...row, index: {status: "updating"}}),
          foreign: D.rowStatus({...row, is_stable: null}),
          stable: D.rowStatus({...row, is_stable: true}),
          applied: D.rowStatus(D.applyChange({...row, last_write_ms: 3}, change)),
          appliedAsOf: D.applyChange(row, change).stable_as_of_ms,
          unstable: D.rowStatus(D.applyChange(row, {...change, is_stable: false})),
          summary: D.summarize([{...row, is_stable: true}, {...row, metadata_error: "x"}, row]),
          events: D.parseEvents(": hb\\n\\nid: 1.2\\ndata: {\\"a\\":1}\\n\\nevent: ready\\n"
                                + "data: {}\\n\\nid: 3\\ndata: par"),
          unindexed: D.unindexed({index: {status: "updating", unindexed_bytes: 2048}}),
          bytes: D.formatBytes(2048),
          age: D.formatAge(1000, 62000),
        };
        """
    )
    assert result["unknown"] == "unknown" and result["foreign"] == "unknown"
    assert result["updating"] == result["updatingIndex"] == result["unstable"] == "updating"
    assert result["stable"] == result["applied"] == "stable" and result["appliedAsOf"] == 5
    assert result["summary"] == {
        "namespaces": 3, "stable": 1, "updating": 0, "unknown": 2, "errors": 1,
    }  # fmt: skip
    assert result["events"] == {
        "events": [
            {"event": "message", "data": '{"a":1}', "id": "1.2", "retry": None},
            {"event": "ready", "data": "{}", "id": None, "retry": None},
        ],
        "rest": "id: 3\ndata: par",
    }
    assert result["unindexed"] == {"rows": None, "bytes": 2048}
    assert result["bytes"] == "2.0 KiB" and result["age"] == "1 min ago"
    assert _console_errors(browser) == []


def test_a_namespace_new_to_layer_appears_updating_then_turns_stable(
    worker: WorkerProcess, emulator: EmulatorProcess, browser: WebDriver
) -> None:
    """The README's flow on an empty dashboard: the first write of a namespace shows its row
    `updating` (its first state is an event too), indexing turns it `stable`; no reload."""
    name = f"{PREFIX}-delta"
    browser.execute_script("window.__sameDocument = true")
    emulator.pause_indexing(name)
    try:
        response = worker.http.post(f"/v2/namespaces/{name}", json={"upsert_rows": [{"id": 1}]})
        assert response.status_code == 200, response.text
        _wait(browser, lambda d: _rows(d).get(name) == "updating", 20, "the new row, updating")
    finally:
        emulator.resume_indexing(name)
    emulator.force_indexing(name)
    _wait(browser, lambda d: _rows(d).get(name) == "stable", 20, "the new namespace's row")
    assert _counter(browser, "namespaces") == 4
    assert browser.execute_script("return window.__sameDocument") is True, "no reload"
    assert _console_errors(browser) == []


def test_a_key_that_may_not_read_the_stream_gets_rows_refreshed_by_polling(
    worker: WorkerProcess, browser: WebDriver
) -> None:
    browser.find_element(By.ID, "forget-key").click()
    assert browser.execute_script("return sessionStorage.getItem('layer.api_key')") is None
    key = _wait(browser, lambda d: d.find_element(By.NAME, "api_key"), what="the key form")
    key.send_keys(OTHER_EMULATOR_KEY)  # upstream accepts it; it is not the key Layer polls with
    key.submit()
    _wait(
        browser,
        lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "polling",
        what="the polling fallback",
    )
    assert "refreshing every 5 s" in browser.find_element(By.ID, "live-note").text
    _wait(browser, lambda d: len(_rows(d)) == 4, what="the rows, read with this key")
    # The stream's 403 is the one console error (Chromium logs every refused request).
    errors = _console_errors(browser)
    assert all("stability/events" in e["message"] and "403" in e["message"] for e in errors)
