"""The dashboard in a real browser: headless Chromium (Debian's package) via Selenium.

The dashboard is served over HTTP on a state store written by `mailsync
demo`; each page is loaded, the counts are compared with `mailsync status`,
a status is followed to one of its people. Without Chromium and its driver
the tests skip, except under CI=true, where `.ci/run` installs them and a
skip would hide a broken dashboard: there they fail.

Screenshots go to a temporary folder; `MAILSYNC_SCREENSHOTS=docs` writes them
to docs/ instead (how docs/dashboard-*.png are refreshed).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync.dashboard import serve
from tests.support.dashboard import Demo, dashboard_for, make_demo

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _require_browser() -> None:
    if CHROMIUM and DRIVER:
        return
    message = "Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; under CI=true the browser tests must run")
    pytest.skip(message)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Demo]]:
    _require_browser()
    demo = make_demo(tmp_path_factory.mktemp("browser-demo"))
    app = dashboard_for(demo)
    server = serve(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", demo
    server.shutdown()
    server.server_close()
    thread.join(5)
    app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1440,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()


def _navigate(browser: object, act: Callable[[], object]) -> None:
    """Do `act` (a click, a key) and wait until the browser has loaded the page it leads to.

    A click returns before the next page is loaded: reading the page at once
    could read the old one, or an element of it that is being replaced (a
    stale element), so the tests wait for the new address and a loaded document.
    """
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    before = browser.current_url
    act()
    WebDriverWait(browser, 10).until(
        lambda b: (
            b.current_url != before and b.execute_script("return document.readyState") == "complete"
        )
    )


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("MAILSYNC_SCREENSHOTS") == "docs":
        return ROOT / "docs"
    return tmp_path_factory.mktemp("screenshots")


def test_lifecycle_counts_in_the_browser(
    site: tuple[str, Demo], browser: object, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base, demo = site
    browser.get(f"{base}/lifecycle")
    assert browser.title == "Lifecycle: user · mailsync"
    expected = demo.status()["statuses"]["user"]
    shown = {
        node.get_attribute("data-status"): int(
            node.find_element(By.CSS_SELECTOR, "text.count").get_attribute("data-count") or -1
        )
        for node in browser.find_elements(By.CSS_SELECTOR, "svg g.node")
    }
    assert {k: v for k, v in shown.items() if v} == {k: v for k, v in expected.items() if v}
    # The table beside the drawing says the same.
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    table = {r.find_elements(By.TAG_NAME, "td")[0].text: int(
        r.find_elements(By.TAG_NAME, "td")[1].text.replace(",", "")) for r in rows}  # fmt: skip
    assert {k: v for k, v in table.items() if v} == {k: v for k, v in expected.items() if v}
    browser.save_screenshot(str(shots / "dashboard-lifecycle.png"))


def test_follow_a_status_to_a_person(site: tuple[str, Demo], browser: object, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base, demo = site
    browser.get(f"{base}/lifecycle")
    expected = demo.status()["statuses"]["user"]
    busiest = max((s for s in expected if s != "None"), key=lambda s: expected[s])
    # Click the status's box in the drawing (an SVG link), as a user would.
    box = browser.find_element(By.CSS_SELECTOR, f'svg a g.node[data-status="{busiest}"]')
    _navigate(browser, box.click)
    assert f"in {busiest}" in browser.title
    assert (
        f"{expected[busiest]:,} entities in {busiest}"
        in browser.find_element(By.TAG_NAME, "main").text
    )
    browser.save_screenshot(str(shots / "dashboard-status.png"))
    first = browser.find_element(By.CSS_SELECTOR, "main table tbody tr td a")
    person = first.text
    _navigate(browser, first.click)
    main = browser.find_element(By.TAG_NAME, "main").text
    assert f"user {person}" in main
    assert "Timeline" in main
    assert busiest in main
    browser.save_screenshot(str(shots / "dashboard-person.png"))


def test_person_search_form(site: tuple[str, Demo], browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base, _ = site
    browser.get(f"{base}/person")
    field = browser.find_element(By.ID, "q")
    # The field has a visible label, and the keyboard alone submits it.
    assert browser.find_element(By.CSS_SELECTOR, "label[for=q]").text == "Email or id"
    _navigate(browser, lambda: field.send_keys("nobody@example.com", Keys.ENTER))
    assert "No entity 'nobody@example.com'" in browser.find_element(By.TAG_NAME, "main").text


@pytest.mark.parametrize(("path", "title", "shot"), [
    ("/operations", "Operations", "dashboard-operations.png"),
    ("/trends?entity=user&days=7", "Trends: user", "dashboard-trends.png"),
])  # fmt: skip
def test_other_pages(
    site: tuple[str, Demo], browser: object, shots: Path, path: str, title: str, shot: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base, _ = site
    browser.get(base + path)
    assert browser.title == f"{title} · mailsync"
    main = browser.find_element(By.TAG_NAME, "main").text
    if path == "/operations":
        assert "Recent cycles (4)" in main
    else:
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 11
    browser.save_screenshot(str(shots / shot))


def test_statuses_in_the_drawing_are_reachable_by_keyboard(
    site: tuple[str, Demo], browser: object
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    base, _ = site
    browser.get(f"{base}/lifecycle")
    # Tab from the top of the page until a status box of the drawing has the focus.
    for _ in range(60):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        status = browser.execute_script(
            "const a = document.activeElement;"
            "return a && a.closest('svg') ? a.querySelector('g.node')?.dataset.status : null;"
        )
        if status:
            break
    assert status == "registered", "no status box of the drawing took the keyboard focus"
    _navigate(browser, ActionChains(browser).send_keys(Keys.ENTER).perform)
    assert browser.title == "user in registered · mailsync"
