"""Join links and the banner's QR code: what someone scans or pastes brings them to the right server, or to none."""

import json
import os
import re

import pexpect
import pytest

from tcpchat import link, qr

from . import qrtools
from .procs import BIN, TWISTD, ServerProcess

CLI = os.path.join(BIN, "tcpchat-cli")
FP = "SHA256:" + ":".join(["AB"] * 32)


# ---------------------------------------------------------------- the link format (pure)

def test_link_round_trips_with_and_without_the_passkey():
    joined = link.JoinLink("192.168.1.5", 12345, FP, "tulip-42 x&y", "Room 4")
    text = joined.format()
    assert text.startswith("tcpchat://192.168.1.5:12345/?fp=SHA256-ABAB")
    assert link.parse(text) == joined
    bare = link.parse(joined.format(with_passkey=False))
    assert bare.passkey is None and bare.fingerprint == FP
    assert link.parse("tcpchat://[fe80::1]:99/") == link.JoinLink("fe80::1", 99)
    assert link.parse("TCPCHAT://host/").port == 12345  # the default port


@pytest.mark.parametrize("fp", [FP, FP.replace(":", "").replace("SHA256", "SHA256:"), "sha256-" + "ab" * 32, "AB" * 32])
def test_fingerprint_spellings_are_one(fp):
    assert link.parse(f"tcpchat://h:1/?fp={fp}").fingerprint == FP


@pytest.mark.parametrize("text, says", [
    ("http://h:1/", "starts with tcpchat://"),
    ("tcpchat://:1/", "no server address"),
    ("tcpchat://h:99999/", "not valid"),
    ("tcpchat://h:1/?fp=SHA256-ABC", "64 hexadecimal digits"),
    ("tcpchat://h:1/?fp=" + "AB" * 32 + "&fp=" + "AB" * 32, "more than once"),
    ("tcpchat://h:1/?passkey=a%0Ab", "control characters"),
    ("tcpchat://h:1/?" + "a=1&" * 40, "too many fields"),
    ("tcpchat://h/" + "x" * 3000, "too long"),
])
def test_bad_links_say_what_is_wrong(text, says):
    with pytest.raises(link.BadLink, match=says):
        link.parse(text)


def test_qr_drawing_decodes_and_uses_only_block_characters():
    text = link.JoinLink("10.0.0.7", 12345, FP).format()
    drawing = qr.terminal(text)
    assert set(drawing) <= set("█▀▄ \n")  # no colour escapes: it survives log files and the journal
    assert qrtools.decode(qrtools.from_terminal(drawing)) == text


# ---------------------------------------------------------------- the banner, and both clients

needs_install = pytest.mark.skipif(not (os.path.exists(TWISTD) and os.path.exists(CLI)),
                                   reason="tcpchat is not installed next to this Python")


def banner_link_and_qr(server, line="Join link"):
    """A link the banner printed (``line``) and its QR drawing (read from the log)."""
    printed = server.wait_for(line + r":\s+(\S+)", start=0).group(1)
    server.wait_for(r"Scan to join", start=0)
    server.wait_for(r"^\t?={20,}\s*$")
    lines = server.log().split("Scan to join", 1)[1].split("\n")[1:]
    drawing = []
    for line in lines:
        line = line.lstrip("\t").rstrip("\n")
        if line and set(line) <= set(qrtools.BLOCKS):
            drawing.append(line)
        elif drawing:
            break
    return printed, "\n".join(drawing)


@needs_install
def test_banner_qr_code_decodes_to_the_printed_browser_address(tmp_path):
    """The banner prints the browser address and the join link; its QR code is the browser address (a phone opens
    it); with --no-web there is no browser address and the QR code is the join link."""
    server = ServerProcess(tmp_path, tls=True).start()
    try:
        joined = link.parse(server.wait_for(r"Join link:\s+(\S+)", start=0).group(1))
        assert (joined.host, joined.port, joined.passkey) == ("127.0.0.1", server.port, None)  # never the passkey
        assert joined.fingerprint == re.search(r"certificate (SHA256:\S+)", server.log()).group(1)
        printed, drawing = banner_link_and_qr(server, "Browser")
        assert printed == f"https://127.0.0.1:{server.port}/"
        assert qrtools.decode(qrtools.from_terminal(drawing)) == printed
    finally:
        server.close()
    (tmp_path / "b").mkdir()
    quiet = ServerProcess(tmp_path / "b", tls=True, extra=["--no-web"]).start()
    try:
        assert "Browser:" not in quiet.log()
        printed, drawing = banner_link_and_qr(quiet)
        assert qrtools.decode(qrtools.from_terminal(drawing)) == printed.split()[0]
    finally:
        quiet.close()


@needs_install
def test_terminal_client_joins_by_link_pins_it_and_refuses_another_certificate(tmp_path):
    """tcpchat-cli LINK: in, with the certificate pinned; the same link to a server with another certificate: refused."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = ServerProcess(tmp_path / "a", tls=True).start()
    other = ServerProcess(tmp_path / "b", tls=True).start()
    env = dict(os.environ, TERM="dumb", LANG="C.UTF-8", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "share"))
    try:
        printed, _ = banner_link_and_qr(server)
        with_passkey = link.JoinLink(**{**link.parse(printed).__dict__, "passkey": server.passkey}).format()
        child = pexpect.spawn(CLI, [with_passkey, "--name", "alice"], env=env, encoding="utf-8", timeout=20)
        child.expect("end of history")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        known = json.loads((tmp_path / "share" / "tcpchat" / "known_servers.json").read_text())
        assert known[f"127.0.0.1:{server.port}"] == link.parse(printed).fingerprint

        # the link's fingerprint, another server's certificate (an impostor on that address)
        impostor = link.JoinLink("127.0.0.1", other.port, link.parse(printed).fingerprint, other.passkey).format()
        child = pexpect.spawn(CLI, [impostor, "--name", "alice"], env=env, encoding="utf-8", timeout=20)
        child.expect("not the one in the join link")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 1
        assert "alice logged in" not in other.log()
    finally:
        server.close()
        other.close()


@needs_install
def test_terminal_client_rejects_a_bad_link(tmp_path):
    child = pexpect.spawn(CLI, ["tcpchat://h:1/?fp=nope"], encoding="utf-8", timeout=20)
    child.expect("is not a join link: the fingerprint")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
