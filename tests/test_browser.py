"""The browser client in real headless Chromium, against the installed twistd tcpchat (TLS, one port)."""

import os

import pytest

from .browsertools import Browser, needs_chromium
from .procs import TWISTD, RawClient, ServerProcess

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")
pytestmark = [needs_chromium, pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed")]


def write_docs():
    return bool(os.environ.get("TCPCHAT_WRITE_DOCS"))


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path, tls=True).start()
    yield proc
    proc.close()


@pytest.fixture
def browsers():
    opened = []

    def open_browser(url, **size):
        browser = Browser(url, **size)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.close()


def test_two_browsers_and_a_terminal_user_chat_rooms_and_a_private_message(server, browsers):
    url = f"https://127.0.0.1:{server.port}/"
    alice = browsers(url)  # a phone
    bob = browsers(url, width=1280, height=800)  # a laptop
    alice.login("alice", server.passkey)
    bob.login("bob", server.passkey)
    alice.joined()
    bob.joined()
    carol = RawClient(server.port, tls=True)
    carol.login("carol", passkey=server.passkey, features=["rooms"])

    alice.say("hello everyone")
    bob.until(lambda: "alice: hello everyone" in bob.log())
    carol.recv_until(lambda f: f.get("text") == "hello everyone")
    carol.send({"type": "say", "text": "hi from the terminal", "cid": "c1"})
    for browser in (alice, bob):
        browser.until(lambda b=browser: "carol: hi from the terminal" in b.log())

    bob.join_room("lab")
    bob.until(lambda: bob.by_id("conv-title").text == "#lab")
    alice.join_room("lab")
    alice.until(lambda: alice.by_id("conv-title").text == "#lab")
    bob.say("for the lab only")
    alice.until(lambda: "bob: for the lab only" in alice.log())

    alice.direct("bob")
    alice.until(lambda: alice.by_id("conv-title").text == "Direct conversation with bob")
    alice.say("just between us")
    bob.conversation("@alice")
    bob.until(lambda: "just between us" in bob.log())
    if write_docs():
        alice.screenshot(os.path.join(DOCS, "web-phone-direct.png"))
        bob.conversation("#general")
        bob.until(lambda: "carol: hi from the terminal" in bob.log())
        bob.screenshot(os.path.join(DOCS, "web-desktop-general.png"))

    carol.send({"type": "say", "text": "the end", "cid": "c2"})
    seen = carol.recv_until(lambda f: f.get("type") == "ack")
    texts = [f.get("text") for f in seen if f.get("type") == "event"]
    assert "for the lab only" not in texts and "just between us" not in texts  # neither her room nor her message


def test_a_wrong_passkey_is_explained_and_shows_nothing(server, browsers):
    poster = RawClient(server.port, tls=True)
    poster.login("poster", passkey=server.passkey)
    poster.send({"type": "say", "text": "members only", "cid": "m"})
    poster.recv_until(lambda f: f.get("type") == "ack")
    stranger = browsers(f"https://127.0.0.1:{server.port}/")
    stranger.login("stranger", "not-the-passkey")
    stranger.until(lambda: stranger.by_id("join-message").text == "Wrong passkey.")
    assert not stranger.by_id("chat").is_displayed()
    assert "members only" not in stranger.driver.page_source
    if write_docs():
        stranger.screenshot(os.path.join(DOCS, "web-phone-login.png"))
