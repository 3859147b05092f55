"""The guard-room page in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver, against a real daemon on mock pins and a real
`edge-alarm web` (tests/web_site.py). A screenshot of the page during an alarm is saved
under tests/artifacts/ (the path is printed)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from edge.control import request
from web_site import PASSWORD, guard_site  # noqa: F401  (a fixture)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# What works on this machine: no sandbox (root in a container), no network of its own.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1200,1700")


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing (.ci/run installs them)")
        pytest.skip("apt-get install chromium chromium-driver to run the browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ea-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # given, so Selenium Manager fetches nothing
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def text_of(driver, element_id: str) -> str:
    from selenium.common.exceptions import WebDriverException
    try:
        return driver.find_element("id", element_id).text
    except WebDriverException:
        return ""


def wait_text(driver, element_id: str, wanted: str, timeout: float = 10.0) -> float:
    """Seconds until element ``element_id`` shows ``wanted``; fails after ``timeout``."""
    start = time.monotonic()
    while wanted not in text_of(driver, element_id):
        if time.monotonic() - start > timeout:
            pytest.fail(f"#{element_id} never showed {wanted!r}: {text_of(driver, element_id)!r}")
        time.sleep(0.02)
    return time.monotonic() - start


def events_of(site, kind: str) -> list[dict]:
    out = site.daemon.cli("events", "--json", "--kind", kind)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def page_post(driver, path: str, body: dict, csrf: str | None = None) -> int:
    """A POST from the page's own JavaScript (same origin, the page's cookies): its status."""
    return driver.execute_async_script("""
        const [path, body, csrf, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (csrf !== null) headers["X-CSRF-Token"] = csrf;
        fetch(path, {method: "POST", headers, body: JSON.stringify(body)})
          .then((r) => done(r.status), () => done(-1));
    """, path, body, csrf)


def test_a_press_shows_on_the_page_within_a_second(guard_site, browser):
    site = guard_site
    browser.get(site.url + "/")
    wait_text(browser, "alarm-title", "正常")
    wait_text(browser, "input-guard_room", "released")
    request(site.daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    pressed = time.monotonic()  # the daemon has the press once sim is answered
    shown = wait_text(browser, "alarm-title", "报警中 ALARM", timeout=5)
    took = time.monotonic() - pressed
    print(f"\npress → alarm on the page: {took:.3f} s")
    assert took < 1.0
    assert "pressed" in text_of(browser, "input-guard_room")
    assert "警号：鸣响中" in text_of(browser, "siren")
    assert "门卫室一键报警" in text_of(browser, "alarm-list")
    wait_text(browser, "event-list", "一键报警 panic")
    # The camera's picture of the alarm, from the page's own server.
    _wait_for_thumbnail(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-alarm.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot of the page during the alarm: {shot}")
    # On a phone: one column, nothing wider than the screen.
    browser.set_window_size(412, 915)
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    phone = ARTIFACTS / "web-alarm-phone.png"
    assert browser.save_screenshot(str(phone))
    print(f"the same on a phone's screen: {phone}")
    assert shown < 5


def _wait_for_thumbnail(browser, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loaded = browser.execute_script(
            "const i = document.querySelector('#event-list img');"
            "return i !== null && i.complete && i.naturalWidth > 0;")
        if loaded:
            return
        time.sleep(0.05)
    pytest.fail("the alarm's snapshot never showed on the page")


def test_without_the_password_no_action_works(guard_site, browser):
    site = guard_site
    request(site.daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    browser.get(site.url + "/")
    wait_text(browser, "alarm-title", "ALARM")
    assert not browser.find_element("id", "silence-form").is_displayed()
    assert not browser.find_element("id", "drill-toggle").is_displayed()
    # Straight from the page's JavaScript, without a session: refused.
    assert page_post(browser, "/api/silence", {"name": "路人"}) == 401
    assert page_post(browser, "/api/acknowledge", {"name": "路人"}) == 401
    assert page_post(browser, "/api/drill", {"on": True}) == 401
    assert page_post(browser, "/api/walktest", {"on": True, "name": "路人"}) == 401
    # A wrong password: said so, and still no form to act with.
    browser.find_element("id", "show-login").click()
    browser.find_element("id", "password").send_keys("guess-1234")
    browser.find_element("id", "login-button").click()
    wait_text(browser, "login-error", "密码错误")
    assert not browser.find_element("id", "silence-form").is_displayed()
    status = request(site.daemon.socket, "status")
    assert status["alarm"]["active"] and status["siren"]["on"]
    assert not status["drill"]["active"] and not status["walktest"]["active"]
    assert events_of(site, "silenced") == [] and events_of(site, "acknowledged") == []


def test_silence_from_the_page_records_the_typed_name(guard_site, browser):
    site = guard_site
    browser.get(site.url + "/")
    wait_text(browser, "alarm-title", "正常")
    browser.find_element("id", "show-login").click()
    browser.find_element("id", "password").send_keys(PASSWORD)
    browser.find_element("id", "login-button").click()
    form = browser.find_element("id", "silence-form")
    deadline = time.monotonic() + 5
    while not form.is_displayed():
        assert time.monotonic() < deadline, "no silence form after login"
        time.sleep(0.02)
    request(site.daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    wait_text(browser, "alarm-title", "ALARM")
    name = "王老师 <b>值班</b>"  # markup in a name is text on the page
    browser.find_element("id", "silence-name").send_keys(name)
    # 收到 first: recorded, and the siren sounds on.
    browser.find_element("id", "ack-button").click()
    wait_text(browser, "action-msg", "已确认收到 1 个报警")
    [acknowledged] = events_of(site, "acknowledged")
    assert (acknowledged["data"]["by"], acknowledged["data"]["via"]) == (name, "web")
    assert request(site.daemon.socket, "status")["siren"]["on"]
    browser.find_element("id", "silence-button").click()
    wait_text(browser, "alarm-title", "正常")
    status = request(site.daemon.socket, "status")
    assert not status["alarm"]["active"] and not status["siren"]["on"]
    silenced = events_of(site, "silenced")
    assert [(e["data"]["by"], e["data"]["via"]) for e in silenced] == [(name, "web")]
    wait_text(browser, "event-list", f"by: {name}")
    assert browser.find_elements("css selector", "#event-list b") == []
    # Walk test and drill, on and off, from the page.
    browser.find_element("id", "walktest-name").send_keys("李师傅")
    browser.find_element("id", "walktest-toggle").click()
    wait_text(browser, "walktest-state", "李师傅")
    assert request(site.daemon.socket, "status")["walktest"]["by"] == "李师傅"
    browser.find_element("id", "walktest-toggle").click()
    wait_text(browser, "walktest-state", "walk test off")
    browser.find_element("id", "drill-toggle").click()
    wait_text(browser, "drill-state", "drill mode on")
    assert request(site.daemon.socket, "status")["drill"]["active"]
    browser.find_element("id", "drill-toggle").click()
    wait_text(browser, "drill-state", "drill mode off")
