"""Real headless Chromium (Debian's), driven by Selenium, for the browser client's tests."""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return os.path.exists(CHROMIUM) and os.path.exists(DRIVER)


needs_chromium = pytest.mark.skipif(not available(), reason="needs Debian's chromium, chromium-driver and selenium")


class Browser:
    """One person's browser: a Chromium with its own profile, at phone or desktop size."""

    def __init__(self, url: str, width: int = 390, height: int = 844, downloads: str = "",
                 block_websocket: bool = False, notifications: bool = False) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-quic", f"--window-size={width},{height}"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        if downloads:
            self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                        {"behavior": "allow", "downloadPath": downloads, "eventsEnabled": False})
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700})
        if block_websocket:
            # as Safari on iOS with a self-signed certificate: the page loads, its WebSocket fails (every one the
            # page opens is a real WebSocket whose handshake the server refuses; CDP's URL blocking skips WebSockets)
            self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
                "const Real = window.WebSocket;"
                "window.WebSocket = class extends Real { constructor(url, p) { super(url + '-refused', p); } };"
            )})
        if notifications:  # the person said yes when asked; what the page shows is recorded for the test
            self.driver.execute_cdp_cmd("Browser.grantPermissions", {"permissions": ["notifications"],
                                                                     "origin": url.rstrip("/")})
            self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
                "window.shownNotifications = [];"
                "const RealNotification = window.Notification;"
                "window.Notification = class extends RealNotification {"
                "  constructor(title, options) { super(title, options); window.shownNotifications.push(title); } };"
            )})
        self.url = url
        self.driver.get(url)

    def by_id(self, ident: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, ident)

    def until(self, condition: Callable[[], Any], timeout: float = 15) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda d: condition())

    def login(self, name: str, passkey: str) -> None:
        self.by_id("name").clear()
        self.by_id("name").send_keys(name)
        self.by_id("passkey").clear()
        self.by_id("passkey").send_keys(passkey)
        self.by_id("join-button").click()

    def joined(self) -> None:
        self.until(lambda: self.by_id("chat").is_displayed() and "Connected" in self.by_id("status").text)

    def say(self, text: str) -> None:
        box = self.by_id("text")
        box.send_keys(text)
        self.by_id("send").click()

    def log(self) -> str:
        return self.by_id("log").text

    def pending(self) -> int:
        """How many messages the page shows as not yet stored by the server."""
        return int(self.driver.execute_script("return document.querySelectorAll('#log .pending').length"))

    def conversation(self, conv: str) -> None:
        """Switch to a conversation from the list (opening the menu on a phone)."""
        from selenium.webdriver.common.by import By

        self.open_menu()
        self.until(lambda: any(b.text.split("\n")[0] == conv for b in self.driver.find_elements(By.CSS_SELECTOR, "#convs button")))
        for button in self.driver.find_elements(By.CSS_SELECTOR, "#convs button"):
            if button.text.split("\n")[0] == conv:
                button.click()
                return

    def open_menu(self) -> None:
        if self.by_id("menu").is_displayed() and self.by_id("menu").get_attribute("aria-expanded") != "true":
            self.by_id("menu").click()

    def join_room(self, room: str) -> None:
        from selenium.webdriver.common.keys import Keys

        self.open_menu()
        self.by_id("room-name").send_keys(room + Keys.ENTER)

    def direct(self, name: str) -> None:
        """Open the direct conversation with ``name`` from the online list."""
        from selenium.webdriver.common.by import By

        self.open_menu()
        self.until(lambda: any(name in li.text for li in self.driver.find_elements(By.CSS_SELECTOR, "#users li")))
        for li in self.driver.find_elements(By.CSS_SELECTOR, "#users li"):
            if li.text.endswith(name):
                li.click()
                return

    def share(self, path: str) -> None:
        """Pick a file to share, as a person does with the 📎 button."""
        self.driver.execute_script("document.getElementById('file').hidden = false")
        self.by_id("file").send_keys(path)
        self.driver.execute_script("document.getElementById('file').hidden = true")

    def screenshot(self, path: str) -> None:
        self.driver.save_screenshot(path)

    def close(self) -> None:
        self.driver.quit()
