"""The demo chat in headless Chromium: two tabs on two gateways of ``roomcast dev``.

``roomcast dev --gateways 2 --port 0 --worker roomcast.demo:app`` runs as one process (its READY
line carries both gateways' public URLs). The page (gateway/static/index.html) loads the
unmodified sails.io.js browser build from ``/js/sails.io.js``; the demo worker answers
``/chat/*``. Debian's ``chromium`` and ``chromium-driver`` (scripts/bootstrap installs them) are
driven by Selenium given both paths, with Selenium Manager offline: nothing is downloaded.
On failure, a screenshot of every tab is saved to a temporary directory named in the error.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Proc, http_get

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def dev() -> Iterator[dict[str, Any]]:
    proc = Proc(
        "dev",
        [
            "-m", "roomcast.cli", "dev",
            "--gateways", "2",
            "--port", "0",
            "--worker", "roomcast.demo:app",
            "--drain-timeout", "2",
        ],
    )  # fmt: skip
    try:
        info = proc.wait_ready(30 * T)
    except BaseException:
        proc.kill()
        raise
    assert info.get("workers") == 1, info
    assert len(info.get("gateways", [])) == 2, info
    yield info
    proc.stop()
    proc.check_log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            pytest.fail(f"{path} is missing: scripts/bootstrap installs Debian {package}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="roomcast-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=900,700",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(15 * T)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def screenshots_on_failure(driver: Any) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        folder = tempfile.mkdtemp(prefix="roomcast-demo-failure-")
        saved = []
        for i, handle in enumerate(driver.window_handles):
            try:
                driver.switch_to.window(handle)
                path = os.path.join(folder, f"tab{i}.png")
                if driver.save_screenshot(path):
                    saved.append(path)
            except Exception as shot_error:  # the browser may be what failed
                saved.append(f"(tab {i}: no screenshot: {shot_error})")
        exc.add_note("screenshots: " + ", ".join(saved))
        raise


class Tab:
    """One browser tab showing the demo page, switched to before every interaction."""

    def __init__(self, driver: Any, url: str, *, new: bool) -> None:
        from selenium.webdriver.common.by import By

        self.by = By
        self.driver = driver
        if new:
            driver.switch_to.new_window("tab")
        driver.get(url)
        self.handle = driver.current_window_handle

    def _focus(self) -> Any:
        self.driver.switch_to.window(self.handle)
        return self.driver

    def text(self, element_id: str) -> str:
        return str(self._focus().find_element(self.by.ID, element_id).text)

    def type_into(self, element_id: str, text: str) -> None:
        field = self._focus().find_element(self.by.ID, element_id)
        field.clear()
        field.send_keys(text)

    def click(self, selector: str) -> None:
        self._focus().find_element(self.by.CSS_SELECTOR, selector).click()

    def wait_text(self, element_id: str, want: str, *, contains: bool = False) -> None:
        def ok() -> bool:
            got = self.text(element_id)
            return want in got if contains else got == want

        deadline_poll(ok, 10 * T, 0.05, message=f"#{element_id} {want!r} in {self.handle}")

    def js_errors(self) -> list[dict[str, Any]]:
        logs = self._focus().get_log("browser")
        return [e for e in logs if e.get("level") == "SEVERE" and "favicon.ico" not in e["message"]]

    def close(self) -> None:
        self._focus().close()


def test_gateways_serve_the_sails_io_js_browser_build(dev: dict[str, Any]) -> None:
    for gateway in dev["gateways"]:
        status, body = http_get(gateway["public"] + "/js/sails.io.js")
        assert status == 200, f"{gateway['public']}/js/sails.io.js: {status} (scripts/bootstrap)"
        assert "sails.io.js" in body and "__sails_io_sdk_version" in body


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_message_typed_in_one_tab_appears_in_the_other(
    dev: dict[str, Any], browser: Any, transport: str
) -> None:
    """With ``transport=polling`` the page has no WebSocket at all (as behind a proxy that
    blocks it) and sails.io.js stays on HTTP long-polling."""
    query = "?transport=polling" if transport == "polling" else ""
    first, second = (g["public"] + "/" + query for g in dev["gateways"])
    assert first != second
    room = f"room-{uuid.uuid4().hex[:8]}"
    with screenshots_on_failure(browser):
        alice = Tab(browser, first, new=False)
        bob = Tab(browser, second, new=True)
        for tab, name in ((alice, "alice"), (bob, "bob")):
            tab.wait_text("status", "connected")
            tab.type_into("name", name)
            tab.type_into("room", room)
            tab.click("#roomForm button")
            tab.wait_text("roomName", room)
        for tab in (alice, bob):
            used = tab._focus().execute_script("return io.socket._raw.io.engine.transport.name")
            assert used == transport
        # Exact, cluster-wide member counts, pushed to both tabs.
        alice.wait_text("members", "2")
        bob.wait_text("members", "2")

        hello = f"hello from alice {uuid.uuid4().hex[:6]}"
        alice.type_into("text", hello + "\n")  # Enter submits the form
        bob.wait_text("log", f"alice: {hello}", contains=True)
        alice.wait_text("log", f"alice: {hello}", contains=True)  # every tab renders the stream

        reply = f"hi alice {uuid.uuid4().hex[:6]}"
        bob.type_into("text", reply)
        bob.click("#sendForm button")
        alice.wait_text("log", f"bob: {reply}", contains=True)

        assert alice.js_errors() == []
        assert bob.js_errors() == []

        # Bob's tab goes away: the demo's disconnect hook brings Alice's count back to 1.
        bob.close()
        alice.wait_text("members", "1")
