"""The browser client in real headless Chromium, against the installed twistd tcpchat (TLS, one port)."""

import os

import pytest

import pexpect

from .browsertools import Browser, needs_chromium
from .procs import TWISTD, RawClient, ServerProcess
from .test_joining import CLI, terminal_client

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")
pytestmark = [needs_chromium, pytest.mark.skipif(not os.path.exists(TWISTD) or not os.path.exists(CLI),
                                                 reason="twistd and tcpchat-cli are not installed")]


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


@pytest.mark.parametrize("websocket", ["open", "blocked"])
def test_two_browsers_and_a_terminal_user_chat_rooms_and_a_private_message(server, browsers, websocket, tmp_path):
    """Two browsers and the terminal client (tcpchat-cli, over TLS) in #general; the browsers in a room and a
    direct conversation the terminal user never sees.  The same chat with the browsers' WebSockets blocked: the
    page falls back to HTTPS requests by itself."""
    url = f"https://127.0.0.1:{server.port}/"
    blocked = websocket == "blocked"
    alice = browsers(url, block_websocket=blocked)  # a phone
    bob = browsers(url, width=1280, height=800, block_websocket=blocked)  # a laptop
    alice.login("alice", server.passkey)
    bob.login("bob", server.passkey)
    alice.joined()
    bob.joined()
    for browser in (alice, bob):
        browser.until(lambda b=browser: ("over HTTPS requests" in b.by_id("status").text) == blocked)
    carol = terminal_client(tmp_path, server.port, "carol", server.passkey)

    alice.say("hello everyone")
    bob.until(lambda: "alice: hello everyone" in bob.log())
    carol.expect("alice: hello everyone")
    carol.sendline("hi from the terminal")
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

    carol.sendline("the end")
    carol.expect("carol: the end")  # stored after the room's and the direct message: they would be here by now
    carol.sendline("/quit")
    carol.expect(pexpect.EOF)
    transcript = (tmp_path / "carol.txt").read_text()
    assert "hi from the terminal" in transcript
    assert "for the lab only" not in transcript and "just between us" not in transcript  # not her room, not to her


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


@pytest.mark.parametrize("websocket", ["open", "blocked"])
def test_a_server_restart_while_a_browser_user_types_loses_and_repeats_nothing(server, browsers, websocket):
    page = browsers(f"https://127.0.0.1:{server.port}/", block_websocket=websocket == "blocked")
    page.login("walker", server.passkey)
    page.joined()
    page.say("before the restart")
    page.until(lambda: "walker: before the restart" in page.log() and page.pending() == 0)
    assert server.stop() == 0
    page.until(lambda: "reconnecting" in page.by_id("status").text)
    page.say("written while it was down")
    page.until(lambda: "written while it was down" in page.log() and page.pending() == 1)  # shown as pending
    server.start()
    page.until(lambda: "Connected" in page.by_id("status").text, timeout=40)
    reader = RawClient(server.port, tls=True)
    frames = reader.login("reader", passkey=server.passkey, after=0)
    texts = [f.get("text") for f in frames if f.get("type") == "event" and f.get("kind") == "message"]
    for _ in range(50):  # the resend may still be on its way: read until it is there (bounded)
        if "written while it was down" in texts:
            break
        frame = reader.recv()
        if frame.get("type") == "event" and frame.get("kind") == "message":
            texts.append(frame["text"])
    assert texts == ["before the restart", "written while it was down"]  # each exactly once, in order
    page.until(lambda: page.log().count("written while it was down") == 1 and page.pending() == 0)


def test_slash_commands_search_and_operator_actions_in_the_browser(server, browsers, tmp_path):
    """The other clients' slash commands: /search finds what may be read, /oper then /kick removes someone."""
    eve = RawClient(server.port, tls=True)
    eve.login("eve", passkey=server.passkey)
    eve.send({"type": "say", "text": "the photocopier is broken again", "cid": "e1"})
    eve.recv_until(lambda f: f.get("type") == "ack")
    page = browsers(f"https://127.0.0.1:{server.port}/", width=1280, height=800)
    page.login("teacher", server.passkey)
    page.joined()
    page.say("/search photocopier")
    page.until(lambda: "Found 1 for “photocopier”" in page.log() and "eve: the photocopier is broken again" in page.log())
    page.say("/kick eve")
    page.until(lambda: "Only a server operator may do that." in page.log())
    page.say("/oper " + (tmp_path / "admin-passkey").read_text().strip())
    page.until(lambda: "You are an operator now" in page.log())
    page.say("/kick eve being rude")
    bye = eve.recv_until(lambda f: f.get("type") == "bye")[-1]
    assert bye["reason"] == "kicked"
    page.until(lambda: "eve was kicked." in page.log())
    page.say("/help")
    page.until(lambda: "/search WORDS — search what you may read" in page.log())


@pytest.mark.parametrize("websocket", ["open", "blocked"])
def test_a_file_goes_from_a_browser_to_a_terminal_user_and_back(server, browsers, tmp_path, websocket):
    """Shared from the page (hashed in the browser, sent in chunks), downloaded by the terminal client (/get),
    SHA-256 equal; shared by the terminal client (/file), downloaded by the page (by its download link, checked
    in the browser, saved by it), SHA-256 equal.  With the WebSocket blocked the chunks go in POSTs."""
    import hashlib
    import re

    data = os.urandom(300_000)
    photo = tmp_path / "holiday photo.jpg"
    photo.write_bytes(data)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    page = browsers(f"https://127.0.0.1:{server.port}/", downloads=str(downloads),
                    block_websocket=websocket == "blocked")
    page.login("phone", server.passkey)
    page.joined()
    desk = terminal_client(tmp_path, server.port, "desk", server.passkey)

    page.share(str(photo))
    desk.expect(r"phone shared holiday photo\.jpg \(.*\) — file #(\d+)")
    fid = desk.match.group(1)
    got = tmp_path / "got.jpg"
    desk.sendline(f"/get {fid} {got}")
    desk.expect("SHA-256 checked")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    page.until(lambda: "holiday photo.jpg: shared ✓" in page.by_id("transfers").text)

    back = os.urandom(200_000)
    minutes = tmp_path / "minutes.pdf"
    minutes.write_bytes(back)
    desk.sendline(f"/file {minutes}")
    page.until(lambda: "minutes.pdf" in page.log())
    from selenium.webdriver.common.by import By

    next(b for b in page.driver.find_elements(By.CSS_SELECTOR, "#log .file button") if "minutes.pdf" in b.text).click()
    page.until(lambda: (downloads / "minutes.pdf").exists() and (downloads / "minutes.pdf").stat().st_size == len(back))
    assert hashlib.sha256((downloads / "minutes.pdf").read_bytes()).hexdigest() == hashlib.sha256(back).hexdigest()
    assert re.search(r"SHA-256", (tmp_path / "desk.txt").read_text())
    desk.sendline("/quit")
    desk.expect(pexpect.EOF)


def test_a_changed_passkey_brings_the_page_back_to_its_form_and_keeps_what_was_written(tmp_path, browsers):
    (tmp_path / "data").mkdir()
    server = ServerProcess(tmp_path / "data", passkey=None, tls=True).start()
    try:
        page = browsers(f"https://127.0.0.1:{server.port}/")
        page.login("walker", server.passkey)
        page.joined()
        op = RawClient(server.port, tls=True)
        op.login("op", passkey=server.passkey)
        op.send({"type": "oper", "passkey": (tmp_path / "data" / "admin-passkey").read_text().strip()})
        op.recv_until(lambda f: f.get("type") in ("oper", "error"))
        op.send({"type": "mod", "action": "rotate"})
        rotated = op.recv_until(lambda f: f.get("type") == "mod-done")[-1]["passkey"]
        op.close()
        assert server.stop() == 0
        page.until(lambda: "reconnecting" in page.by_id("status").text)
        page.say("kept for later")
        server.start()
        page.until(lambda: page.by_id("join").is_displayed(), timeout=40)
        assert page.by_id("join-message").text == ("The server's passkey has changed. Type the new one to rejoin; "
                                                   "what you wrote meanwhile is kept.")
        page.by_id("passkey").send_keys(rotated)
        page.by_id("join-button").click()
        page.joined()
        reader = RawClient(server.port, tls=True)
        frames = reader.login("reader", passkey=rotated, after=0)
        for _ in range(50):
            if any(f.get("text") == "kept for later" for f in frames):
                break
            frames.append(reader.recv())
        assert [f.get("text") for f in frames if f.get("type") == "event" and f.get("kind") == "message"] == \
            ["kept for later"]
    finally:
        server.close()


def test_a_shared_photo_is_shown_inline(server, browsers):
    """An image shared by anyone appears in the conversation as a picture (fetched by its link, checked)."""
    import hashlib
    import io

    import segno

    from tcpchat import wire

    buffer = io.BytesIO()
    segno.make("tcpchat").save(buffer, kind="png", scale=6)
    png = buffer.getvalue()
    page = browsers(f"https://127.0.0.1:{server.port}/", width=1280, height=800)
    page.login("viewer", server.passkey)
    page.joined()
    desk = RawClient(server.port, tls=True)
    desk.login("desk", passkey=server.passkey)
    desk.send({"type": "upload", "tid": 3, "name": "whiteboard.png", "size": len(png), "mime": "image/png",
               "sha256": hashlib.sha256(png).hexdigest()})
    desk.send_payload(wire.encode_chunk(3, png))
    desk.recv_until(lambda f: isinstance(f, dict) and f.get("type") == "upload-done")
    width = page.until(lambda: page.driver.execute_script(
        "const i = document.querySelector('#log img.thumb'); return i && i.complete && i.naturalWidth"))
    assert width == segno.make("tcpchat").symbol_size(scale=6)[0]


def test_notifications_the_titles_count_and_links(server, browsers):
    """Allowed, a message elsewhere shows a notification and counts in the tab's title; an address is a link that
    opens in a new tab and tells the other site nothing."""
    from selenium.webdriver.common.by import By

    page = browsers(f"https://127.0.0.1:{server.port}/", notifications=True)
    page.login("reader", server.passkey)
    page.joined()
    page.by_id("notify").click()
    page.until(lambda: "Notifications are on" in page.log())
    assert page.by_id("notify").get_attribute("aria-pressed") == "true"
    writer = RawClient(server.port, tls=True)
    writer.login("writer", passkey=server.passkey, features=["rooms"])
    page.join_room("lab")
    page.until(lambda: page.by_id("conv-title").text == "#lab")
    writer.send({"type": "say", "text": "see https://example.org/plan.", "cid": "w1"})  # in #general
    page.until(lambda: page.driver.title.startswith("(1) "))
    page.until(lambda: page.driver.execute_script("return window.shownNotifications") == ["writer in #general"])
    page.conversation("#general")
    page.until(lambda: not page.driver.title.startswith("("))
    (link,) = page.driver.find_elements(By.CSS_SELECTOR, "#log a")
    assert (link.get_attribute("href"), link.text) == ("https://example.org/plan", "https://example.org/plan")
    assert (link.get_attribute("target"), link.get_attribute("rel")) == ("_blank", "noopener noreferrer")


def _gradient_png(width=360, height=220):
    """A small colourful PNG (a stand-in for a phone's photo), made with zlib alone."""
    import struct
    import zlib

    rows = b"".join(b"\0" + b"".join(bytes(((x * 255) // width, (y * 255) // height, 160 + (x + y) % 96))
                                     for x in range(width)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [("phone", 390, 844), ("desktop", 1280, 800)], ids=["phone", "desktop"])
def test_the_pages_a_person_sees(server, browsers, tmp_path, size):
    """The join form, a room with history, an inline photo, a direct conversation and an upload in progress, at
    phone and desktop size (written to docs/ with TCPCHAT_WRITE_DOCS=1; they are what the README shows)."""
    import hashlib

    from tcpchat import wire

    kind, width, height = size
    shot = (lambda name: write_docs() and page.screenshot(os.path.join(DOCS, f"web-{kind}-{name}.png")))
    ana = RawClient(server.port, tls=True)
    ana.login("ana", passkey=server.passkey, features=["rooms"])
    for n, text in enumerate(("Morning! The projector in room 4 is fixed.", "Who has the key to the store room?",
                              "Lunch is at 12:30 today, in the hall.")):
        ana.send({"type": "say", "text": text, "cid": f"h{n}"})
    ana.recv_until(lambda f: f.get("type") == "ack" and f.get("cid") == "h2")

    page = browsers(f"https://127.0.0.1:{server.port}/", width=width, height=height)
    page.by_id("name").send_keys("sam")
    shot("login")
    page.by_id("passkey").send_keys(server.passkey)
    page.by_id("join-button").click()
    page.joined()
    page.until(lambda: "— end of history —" in page.log() and "Lunch is at 12:30" in page.log())
    ana.send({"type": "say", "text": "Welcome, sam — there is tea in the staff room.", "cid": "live"})
    page.until(lambda: "there is tea" in page.log())
    page.say("Thanks! I have the key, see https://school.example/keys")
    page.until(lambda: page.pending() == 0 and "I have the key" in page.log())
    shot("history")

    png = _gradient_png()
    ana.send({"type": "upload", "tid": 3, "name": "whiteboard.png", "size": len(png), "mime": "image/png",
              "sha256": hashlib.sha256(png).hexdigest()})
    ana.send_payload(wire.encode_chunk(3, png))
    ana.recv_until(lambda f: isinstance(f, dict) and f.get("type") == "upload-done")
    page.until(lambda: page.driver.execute_script(
        "const i = document.querySelector('#log img.thumb'); return i && i.complete && i.naturalWidth") == 360)
    page.driver.execute_script("const l = document.getElementById('log'); l.scrollTop = l.scrollHeight")
    shot("photo")

    page.direct("ana")
    page.until(lambda: page.by_id("conv-title").text == "Direct conversation with ana")
    page.say("Can you bring the register to room 4?")
    ana.recv_until(lambda f: f.get("type") == "event" and f.get("to") == "ana")
    ana.send({"type": "say", "to": "sam", "text": "Sure, in five minutes.", "cid": "d1"})
    page.until(lambda: "Sure, in five minutes." in page.log())
    shot("direct")

    big = tmp_path / "term photos.zip"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1024 * 1024))
    page.share(str(big))
    page.until(lambda: page.driver.execute_script(
        "const p = document.querySelector('#transfers progress');"
        "return !!p && p.value > 0.08 * p.max && p.value < 0.9 * p.max"), timeout=60)
    shot("upload")
    page.until(lambda: "term photos.zip: shared ✓" in page.by_id("transfers").text, timeout=60)


def test_edits_replies_and_reactions_in_the_page(server, browsers):
    """What another user edits, answers and reacts to shows as it now is; a reaction is a button that adds (and
    takes back) one's own."""
    from selenium.webdriver.common.by import By

    page = browsers(f"https://127.0.0.1:{server.port}/", width=1280, height=800)
    page.login("reader", server.passkey)
    page.joined()
    ana = RawClient(server.port, tls=True)
    ana.login("ana", passkey=server.passkey, features=["rooms", "edits"])
    ana.send({"type": "say", "text": "Lunch at 12", "cid": "a1"})
    first = ana.recv_until(lambda f: f.get("type") == "ack")[-1]
    page.until(lambda: "ana: Lunch at 12" in page.log())
    ana.send({"type": "edit", "id": first["id"], "text": "Lunch at 12:30", "req": "e"})
    ana.recv_until(lambda f: f.get("req") == "e")  # stored: the reply below quotes the new words
    ana.send({"type": "say", "text": "in the hall", "cid": "a2", "reply": first["id"]})
    ana.send({"type": "react", "id": first["id"], "emoji": "🎉", "req": "r"})
    ana.recv_until(lambda f: f.get("req") == "r")
    page.until(lambda: "ana: Lunch at 12:30 (edited)" in page.log() and "↪ ana: Lunch at 12:30" in page.log())
    (button,) = page.driver.find_elements(By.CSS_SELECTOR, "#log .reactions button")
    assert (button.text, button.get_attribute("aria-pressed")) == ("🎉 1", "false")
    button.click()
    react = ana.recv_until(lambda f: f.get("kind") == "react" and f.get("name") == "reader")[-1]
    assert (react["target"], react["emoji"], react["on"]) == (first["id"], "🎉", True)
    # (read in the page: the log is redrawn as events come, so an element found a moment ago may be gone)
    page.until(lambda: page.driver.execute_script(
        "return [...document.querySelectorAll('#log .reactions button')].map((b) => b.textContent)") == ["🎉 2"])
    if write_docs():
        page.screenshot(os.path.join(DOCS, "web-desktop-reactions.png"))


def test_in_a_crowd_the_page_keeps_its_list_of_people_from_roster_frames(tmp_path, browsers):
    """With --crowd 3, joins and leaves reach the page as roster frames (no "joined" lines): its list of who is
    online still shows who came and drops who went."""
    (tmp_path / "data").mkdir()
    server = ServerProcess(tmp_path / "data", tls=True, extra=["--crowd", "3"]).start()
    try:
        page = browsers(f"https://127.0.0.1:{server.port}/")
        page.login("watcher", server.passkey)
        page.joined()
        people = [RawClient(server.port, tls=True) for _ in range(3)]
        for i, peer in enumerate(people):
            peer.login(f"p{i}", passkey=server.passkey)
        listed = lambda: page.by_id("users").get_attribute("textContent")  # noqa: E731 (hidden on a phone)
        page.until(lambda: all(f"p{i}" in listed() for i in range(3)))
        people[2].close()
        page.until(lambda: "p2" not in listed())
        assert "p2 joined" not in page.log() and "p2 left" not in page.log()  # (a crowd's lines would be noise)
    finally:
        server.close()

