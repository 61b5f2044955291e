"""
``tcpchat-cli``: the terminal client.

A thin view over :class:`tcpchat.client.core.ChatClient`: it reads lines from
standard input (Twisted's ``StandardIO``), prints what the core reports, and
turns slash commands into core calls.  Colours and live progress bars are used
only when standard output is a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, Dict, List, Optional

from twisted.internet import stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer
from twisted.protocols.basic import LineReceiver

from tcpchat import link, wire
from tcpchat.client.core import CONNECTED, FAILED, LOBBY, ChatClient, ChatListener, Transfer, conversation_of
from tcpchat.ui import text
from tcpchat.ui.commands import Commands

DEFAULT_PORT = wire.DEFAULT_PORT
#: Commands whose argument is a secret: not echoed.
SECRET_COMMANDS = ("/register", "/oper", "/passkey")

STYLES = {
    "history": "\033[2m",
    "mine": "\033[36m",
    "message": "",
    "system": "\033[33m",
    "file": "\033[35m",
    "error": "\033[31m",
    "reset": "\033[0m",
}


class Screen:
    """Where text goes: a terminal (colours, progress redrawn in place) or not."""

    def __init__(self, out: Any, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.progressShown = False

    def line(self, message: str, style: str = "message") -> None:
        if self.progressShown:
            self.out.write("\r\033[K")
            self.progressShown = False
        if self.tty and STYLES.get(style):
            message = f"{STYLES[style]}{message}{STYLES['reset']}"
        self.out.write(message + "\n")
        self.flush()

    #: (interactive) the line of progress shown in the status line instead, and how to redraw it
    status = ""
    redraw: Any = None

    def progress(self, message: str) -> None:
        if self.redraw is not None:
            self.status = message
            self.redraw()
            return
        if self.tty:
            self.out.write("\r\033[K" + message)
            self.progressShown = True
            self.flush()

    def bell(self) -> None:
        if self.tty:
            self.out.write("\a")
            self.flush()

    def flush(self) -> None:
        flush = getattr(self.out, "flush", None)
        if flush:
            flush()


@implementer(IHalfCloseableProtocol)
class TerminalView(ChatListener, LineReceiver):
    """Reads commands from stdin, shows the conversation on stdout."""

    delimiter = b"\n"
    #: a line longer than this is not a message (messages are at most 8 KiB): it is skipped, with a word, and
    #: reading goes on (LineReceiver would drop standard input)
    MAX_LENGTH = 1024 * 1024
    _skipping = False

    def dataReceived(self, data: bytes) -> None:
        if self._skipping:
            end = data.find(self.delimiter)
            if end < 0:
                return
            self._skipping = False
            data = data[end + 1:]
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.screen.line(f"A line of more than {self.MAX_LENGTH // 1024} KiB was not sent (messages are at most "
                         f"{wire.MAX_TEXT_BYTES // 1024} KiB; share a long text as a file with /file).", "error")
        rest = self.clearLineBuffer()
        end = rest.find(self.delimiter)
        if end < 0:
            self._skipping = True  # the rest of this line is still coming
        else:
            self.dataReceived(rest[end + 1:])

    def __init__(self, client: ChatClient, screen: Screen, download_dir: str, reactor: Any) -> None:
        self.client = client
        self.screen = screen
        self.download_dir = download_dir
        self.reactor = reactor
        self.files: Dict[int, Dict[str, Any]] = {}
        self.historyShown = False
        self.reported: Dict[int, int] = {}
        #: the conversation lines typed go to
        self.current = LOBBY
        self.commands = Commands(client, self)
        self._readSoon: Dict[str, Any] = {}
        self._seenShown: Dict[str, tuple] = {}
        #: the server refused our passkey after a reconnect: the next line typed is the new one
        self.askingPasskey = False
        self._echo: Any = None
        #: the interactive input line (tcpchat.ui.tui.Prompt), or None: lines come from standard input
        self.prompt: Any = None

    # ------------------------------------------------------------ input

    def connectionMade(self) -> None:
        # StandardIO makes stdout non-blocking: from now on write through it
        self.screen.out = _TransportWriter(self.transport)

    def lineReceived(self, line: bytes) -> None:
        entry = line.decode("utf-8", "replace").rstrip("\r")
        if self.askingPasskey:
            self._passkeyTyped(entry.strip())
            return
        if self.screen.tty and self.prompt is None:
            self.screen.out.write("\033[1A\033[2K")  # the terminal echoed the line; our own display replaces it
        if not entry.strip():
            return
        if entry.startswith("/") and not entry.startswith("//"):
            if self.screen.tty:
                word = entry.split(" ", 1)[0].lower()
                shown = word + " ********" if word in SECRET_COMMANDS else entry  # never leave a password on screen
                self.screen.line(shown, "history")
            self.command(entry)
            return
        if entry.startswith("//"):
            entry = entry[1:]  # "//" sends a line that starts with "/"
        try:
            self.client.send(entry, self.current)
        except ValueError as e:
            self.screen.line(str(e), "error")
            return
        if self.client.state != CONNECTED:
            self.screen.line("(queued: it will be sent when the connection is back)", "system")

    def readConnectionLost(self) -> None:
        """Standard input ended (Ctrl+D, or the end of a pipe): leave (once what was written is stored)."""
        self.quit(again=False)

    def writeConnectionLost(self) -> None:
        self._stopReactor()

    def connectionLost(self, reason: Any = None) -> None:
        # stdout is flushed and closed: now it is safe to stop
        if getattr(self, "_quitting", False):
            self._stopReactor()
        else:
            self.quit()

    def command(self, entry: str) -> None:
        self.commands.run(entry)

    def askPasskey(self) -> None:
        """Ask for the new passkey (hidden): the outbox waits, then goes out after the login."""
        self.askingPasskey = True
        self.screen.line(text.PASSKEY_CHANGED, "system")
        if self.prompt is not None:
            self.prompt.refresh()  # the input line asks for it, hidden
            return
        self._echo = _hide_input(sys.stdin)
        self.screen.out.write("New passkey (or /quit): ")
        self.screen.flush()

    def _passkeyTyped(self, entry: str) -> None:
        if self._echo is not None:
            self._echo()
            self._echo = None
            self.screen.out.write("\n")
        if entry == "/quit":
            self.askingPasskey = False
            self.quit()
            return
        if not entry:
            self.screen.out.write("New passkey (or /quit): ")
            self._echo = _hide_input(sys.stdin)
            self.screen.flush()
            return
        self.askingPasskey = False
        waiting = len(self.client.outbox)
        self.screen.line(f"Rejoining{f' ({waiting} message(s) waiting to be sent)' if waiting else ''}…", "system")
        self.client.relogin(entry).addErrback(lambda f: None)  # a refusal is shown by stateChanged

    # the view the shared slash commands drive
    def show(self, line: str, style: str = "system") -> None:
        self.screen.line(line, style)

    def switch(self, conv: str) -> None:
        if conv == self.current:
            return
        self.current = conv
        where = "the default room" if conv == LOBBY else conv
        self.screen.line(f"Now talking in {where}. (/switch #{wire.DEFAULT_ROOM} to go back)", "system")

    def share(self, path: str) -> None:
        self.client.share(path, conv=self.current)

    def invite(self) -> None:
        from tcpchat import qr

        joined = self.client.inviteLink(with_passkey=True)
        self.screen.line("Join link (it carries the passkey: anyone with it can join):", "system")
        self.screen.line(joined, "message")
        self.screen.line(qr.terminal(joined), "message")

    def get(self, rest: str) -> None:
        ident, _, dest = rest.partition(" ")
        try:
            info = self.files[int(ident)]
        except (ValueError, KeyError):
            known = ", ".join(f"#{i} {f.get('name')}" for i, f in sorted(self.files.items())[-5:]) or "none yet"
            self.screen.line(f"Usage: /get ID [DEST] (files: {known})", "error")
            return
        name = wire.safe_file_name(info.get("name", "file"))
        dest = os.path.expanduser(dest.strip().strip('"')) if dest.strip() else ""
        if not dest:
            dest = os.path.join(self.download_dir, name)
        elif os.path.isdir(dest):
            dest = os.path.join(dest, name)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        self.screen.line(f"Downloading {name} to {dest}…", "system")
        self.client.download(info, dest)

    #: messages not stored when the client left (kept on disk for the next time): the exit status is then 1
    unsent = 0

    def quit(self, again: bool = True) -> None:
        """Leave once what is waiting is stored (``again``: a second /quit leaves at once; the end of input does not)."""
        if getattr(self, "_quitting", False):
            if again and getattr(self, "_flushing", None) is not None and not self._flushing.called:
                self._flushing.callback(len(self.client.outbox))  # a second /quit: leave now
            return
        self._quitting = True
        waiting = len(self.client.outbox)
        if waiting:
            self.screen.line(f"Sending {waiting} message(s) still waiting before leaving… "
                             "(/quit again to leave now: they are kept for next time)", "system")
            self.screen.flush()
        self._flushing: Any = self.client.flush()
        self._flushing.addCallback(self._flushed)

    def _flushed(self, left: int) -> None:
        self.unsent = left
        if left:
            said = [f["text"] for f in self.client.outbox.values()]
            shown = "; ".join(t if len(t) <= 40 else t[:39] + "…" for t in said[:3]) + ("; …" if left > 3 else "")
            self.screen.line(f"Not sent: {left} message(s) ({shown}). They are kept and go out the next time you "
                             f"join {self.client.host}:{self.client.port} as {self.client.name}.", "error")
        d = self.client.stop(grace=0)

        def finish(_: Any) -> None:
            self.screen.line("Bye.", "system")
            if self.transport is not None:
                self.transport.loseConnection()  # flushes what is still queued for stdout first
            else:
                self._stopReactor()

        d.addBoth(finish)

    # ------------------------------------------------------------ what the core reports

    def stateChanged(self, state: str, detail: str) -> None:
        style = "error" if state == FAILED else "system"
        self.screen.line(detail, style)
        if state == FAILED and "protected by its owner's password" in detail:
            self.screen.line("(If it is yours: tcpchat-cli --name-password, or set TCPCHAT_NAME_PASSWORD.)", "system")
        if state == FAILED and not self.client.everLoggedIn:
            self.reactor.callLater(0, self._stopReactor)
        elif state == FAILED and text.passkey_changed(self.client) and not getattr(self, "_quitting", False):
            self.askPasskey()

    def _stopReactor(self) -> None:
        if self.prompt is not None:
            self.prompt.stop()  # (gives the terminal back as it was)
        if self.reactor.running:
            self.reactor.stop()

    def welcomed(self, info: Dict[str, Any]) -> None:
        if not self.historyShown:
            self.screen.line(f"Welcome to {info.get('server')}, {info.get('name')}! Type /help for commands.", "system")

    def _line(self, event: Dict[str, Any]) -> str:
        """An event as one line: time, the room when it is not the default one, and what happened."""
        _, line = text.describe(event, self.client.name)
        conv = conversation_of(event, self.client.name)
        where = f"{conv} " if conv.startswith("#") and conv != LOBBY and event.get("kind") in ("message", "file") else ""
        return f"[{text.clock(event.get('ts'))}] {where}{line}"

    def eventReceived(self, event: Dict[str, Any], replay: bool) -> None:
        if event.get("kind") == "file" and isinstance(event.get("file"), dict):
            self.files[event["file"].get("id")] = event["file"]
        style, _ = text.describe(event, self.client.name)
        self.screen.line(self._line(event), "history" if replay else style)
        if event.get("kind") == "file" and not replay:
            self.screen.line(f"        (type /get {event['file'].get('id')} to download it)", "system")
        if replay or event.get("kind") not in ("message", "file", "announce"):
            return
        conv = conversation_of(event, self.client.name)
        self._markReadSoon(conv)
        if event.get("name") != self.client.name and (
            conv.startswith("@") or text.mentions(str(event.get("text", "")), self.client.name)
        ):
            self.screen.bell()  # a direct message or a mention: ring, like IRC clients do

    def eventChanged(self, event: Dict[str, Any], change: Dict[str, Any], conv: str) -> None:
        self.screen.line(text.change_line(event, change), "system")

    def _markReadSoon(self, conv: str) -> None:
        """What is printed is read: tell the others, at most once a second per conversation."""
        if conv in self._readSoon:
            return

        def mark() -> None:
            self._readSoon.pop(conv, None)
            self.client.markRead(conv)

        self._readSoon[conv] = self.reactor.callLater(1.0, mark)

    def eventRemoved(self, event: Dict[str, Any], conv: str) -> None:
        _, line = text.describe(event, self.client.name)
        self.screen.line(f"(deleted: {line[:60]})", "history")

    def typingChanged(self, conv: str, names: List[str]) -> None:
        if names and self.screen.tty:
            where = "" if conv == self.current else f" ({conv})"
            self.screen.progress(f"\033[2m{text.typing_line(names)}{where}\033[0m")
        elif self.screen.progressShown:
            self.screen.progress("")

    def seenChanged(self, conv: str) -> None:
        mine = self.client.lastOwnMessage(conv)
        if mine is None:
            return
        seen = tuple(self.client.seenBy(conv, mine))
        if seen and self._seenShown.get(conv) != (mine["id"], seen):
            self._seenShown[conv] = (mine["id"], seen)
            where = "" if conv == self.current else f" ({conv})"
            self.screen.line(f"        {text.seen_line(list(seen))}{where}", "history")

    def presenceChanged(self, name: str, away: bool, status: str) -> None:
        if name != self.client.name:
            self.screen.line(f"{name} is {'away' if away else 'back'}" + (f": {status}" if status else ""), "system")

    def roomsChanged(self, rooms: List[str]) -> None:
        if self.current.startswith("#") and not any(wire.name_key(r) == wire.name_key(self.current[1:]) for r in rooms):
            if self.client.loggedIn and self.current != LOBBY:
                self.switch(LOBBY)

    def notice(self, line: str) -> None:
        self.screen.line(line, "system")

    def synced(self) -> None:
        if not self.historyShown:
            self.historyShown = True
            self.screen.line("─── end of history; new messages below ───", "history")

    def messageAcked(self, cid: str, event: Dict[str, Any]) -> None:
        self.screen.line(self._line(event), "mine")

    def historyPage(self, events: List[Dict[str, Any]], more: bool) -> None:
        if not events:
            self.screen.line("(no older messages)", "system")
            return
        self.screen.line("─── older messages ───", "history")
        for event in events:
            if event.get("kind") == "file" and isinstance(event.get("file"), dict):
                self.files[event["file"].get("id")] = event["file"]
            self.screen.line(self._line(event), "history")
        self.screen.line("─── end of older messages" + (" (/history for more)" if more else "") + " ───", "history")

    def usersChanged(self, users: List[str]) -> None:
        pass  # joins and leaves are shown as events

    def errorReceived(self, code: str, message: str) -> None:
        self.screen.line(message, "error")

    def transferChanged(self, transfer: Transfer) -> None:
        verb = "Uploading" if transfer.direction == "upload" else "Downloading"
        if transfer.state == "active":
            percent = int(transfer.fraction * 100)
            bar = "#" * (percent // 5) + "-" * (20 - percent // 5)
            message = f"{verb} {transfer.name} [{bar}] {percent}% of {text.human_size(transfer.size)}"
            if self.screen.tty:
                self.screen.progress(message)
            elif percent // 25 != self.reported.get(transfer.tid, -1):
                self.reported[transfer.tid] = percent // 25
                self.screen.line(message, "system")
        elif transfer.state == "finished":
            if transfer.direction == "upload":
                self.screen.line(f"Shared {transfer.name} ({text.human_size(transfer.size)}).", "system")
            else:
                self.screen.line(f"Saved {transfer.name} to {transfer.path} (SHA-256 checked).", "system")
        elif transfer.state == "failed":
            self.screen.line(f"{verb} {transfer.name} failed: {transfer.error}", "error")


def _hide_input(stream: Any) -> Optional[Any]:
    """Stop the terminal echoing what is typed; returns how to undo it (None if it cannot)."""
    try:
        import termios

        if not stream.isatty():
            return None
        fd = stream.fileno()
        old = termios.tcgetattr(fd)
        new = termios.tcgetattr(fd)
        new[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSADRAIN, new)
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, old)


class _TransportWriter:
    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def write(self, data: str) -> None:
        self.transport.write(data.encode("utf-8", "replace"))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpchat-cli", description="Join a tcpchat server from a terminal.")
    parser.add_argument("link", nargs="?", help="a join link, tcpchat://HOST:PORT/?fp=… (printed by the server and "
                        "by Invite… in the desktop client): fills in the address and checks the server's certificate")
    parser.add_argument("--discover", action="store_true", help="list the tcpchat servers announced on this network, then exit")
    parser.add_argument("--discover-seconds", type=float, default=3.0, metavar="S",
                        help="how long --discover listens (default 3; 0.5-60)")
    parser.add_argument("--host", "-H", help="server address (asked if not given)")
    parser.add_argument("--port", "-p", type=int, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--name", "-n", help="your user name (asked if not given)")
    parser.add_argument("--passkey", help="the server's passkey (asked, hidden, if not given; or set TCPCHAT_PASSKEY)")
    parser.add_argument("--name-password", help="the password of your name, if you protected it with /register "
                        "(or set TCPCHAT_NAME_PASSWORD)")
    parser.add_argument("--insecure-plaintext", action="store_true",
                        help="connect without TLS (only to a server started with --insecure-plaintext)")
    parser.add_argument("--forget-server", action="store_true",
                        help="forget the certificate remembered for this server (after it was reinstalled)")
    parser.add_argument("--plain", action="store_true",
                        help="read plain lines even in a terminal (no input line, history or completion)")
    parser.add_argument("--download-dir", default=os.path.join(os.path.expanduser("~"), "Downloads"),
                        help="where /get saves files (default ~/Downloads)")
    args = parser.parse_args(argv)
    args.fingerprint = None
    if args.link is not None:
        try:
            joined = link.parse(args.link)
        except link.BadLink as e:
            parser.error(f"{args.link!r} is not a join link: {e}")
        args.host = args.host or joined.host
        args.port = args.port or joined.port
        args.passkey = args.passkey or joined.passkey
        args.fingerprint = joined.fingerprint
    return args


def ask(prompt: str, default: Optional[str] = None, secret: bool = False) -> str:
    shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
    while True:
        try:
            value = getpass.getpass(shown) if secret and sys.stdin.isatty() else input(shown)
        except EOFError:
            raise SystemExit(f"\n{prompt} is needed.") from None
        value = value.strip()
        if value or default:
            return value or default or ""


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.discover:
        from tcpchat import discovery

        raise SystemExit(discovery.print_servers(sys.stdout, min(60.0, max(0.5, args.discover_seconds))))
    host = args.host or ask("Server", "127.0.0.1")
    port = args.port or int(ask("Port", str(DEFAULT_PORT)))
    name = args.name or ask("Your name")
    passkey = args.passkey or os.environ.get("TCPCHAT_PASSKEY") or ask("Passkey", secret=True)

    from tcpchat.ui import tui

    interactive = not args.plain and os.environ.get("TERM") != "dumb" and tui.available()
    if interactive:
        tui.install_reactor()
    from twisted.internet import reactor

    tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ
    password = args.name_password or os.environ.get("TCPCHAT_NAME_PASSWORD")
    from tcpchat.client.outbox import default_path

    client = ChatClient(host, port, name, passkey, reactor=reactor, tls=not args.insecure_plaintext, password=password,
                        fingerprint=args.fingerprint, outbox=default_path(host, port, name))
    if args.forget_server and client.knownServers.forget(host, port):
        print(f"Forgot the certificate remembered for {host}:{port}.")
    view = TerminalView(client, Screen(sys.stdout, tty), args.download_dir, reactor)
    client.listener = view
    if client.outbox:
        print(f"{len(client.outbox)} message(s) written last time are waiting; they go out once connected.")

    if interactive:
        view.prompt = tui.Prompt(view, client)
        view.screen.redraw = view.prompt.redraw

    def started() -> None:
        d = client.start()
        d.addCallback(lambda _: view.prompt.start() if view.prompt is not None else stdio.StandardIO(view))
        d.addErrback(lambda f: None)  # already shown by stateChanged

    reactor.callWhenRunning(started)
    reactor.run()
    client.outbox.persist()  # (the last change may have been on its way to the disk in a thread)
    if (client.state == FAILED and not client.everLoggedIn) or view.unsent:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
