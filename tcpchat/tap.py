"""
``twistd tcpchat``: command-line options and the service they build.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, List, Optional, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage

from tcpchat import auth, link, qr, wire
from tcpchat.server.chat import ChatFactory, Limits
from tcpchat.store.sqlite import Store, StoreUnusable, ThreadRunner

DEFAULT_PORT = wire.DEFAULT_PORT
DEFAULT_DATA_DIR = "tcpchat-data"


def _size(text: str) -> int:
    """Parse a size such as ``500M``, ``2G`` or ``1048576``."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    for suffix, mult in (("K", 1024), ("M", 1024**2), ("G", 1024**3), ("T", 1024**4)):
        if text.endswith(suffix):
            text, factor = text[:-1], mult
            break
    try:
        value = int(float(text) * factor)
    except ValueError:
        raise usage.UsageError(f"not a size: {text!r} (use e.g. 500M or 2G)") from None
    if value < 0:
        raise usage.UsageError("sizes cannot be negative")
    return value


class Options(usage.Options):
    """Options of ``twistd tcpchat``."""

    synopsis = "[options]"
    longdesc = (
        "Run a tcpchat group chat server. With no options it listens on TCP port "
        f"{DEFAULT_PORT} on every interface, keeps its database and files in "
        f"./{DEFAULT_DATA_DIR}, and prints the passkey people join with: generated on the first start and kept in "
        "DATA-DIR/passkey (readable by this account only), so it stays the same across restarts. Change it live "
        "with /passkey in a client (the new one is kept), or edit that file and restart."
    )
    optParameters = [
        ["port", "p", DEFAULT_PORT, "TCP port to listen on (all interfaces); ignored when --listen is given.", int],
        ["data-dir", "d", DEFAULT_DATA_DIR, "Directory for the database and shared files (created if missing)."],
        ["passkey", None, None, "Use this passkey instead of the one kept in DATA-DIR/passkey (which is left as it is)."],
        ["passkey-file", None, None, "Read the passkey from the first line of this file."],
        ["admin-passkey", None, None, "Operator passkey (for /oper); default: a fresh one, printed at start-up and "
         "written to DATA-DIR/admin-passkey (readable by this account only)."],
        ["history", None, Limits.history, "How many recent events a user is shown on joining (0-1000).", int],
        ["server-name", None, None, "Name shown to users (default: 'tcpchat on HOSTNAME')."],
        ["max-file-size", None, Limits.max_file_size, "Largest file a user may share, e.g. 200M or 2G (default 1G).", _size],
        ["max-storage", None, Limits.max_storage, "Total size of shared files kept, e.g. 50G (default 10G).", _size],
        ["certificate", None, None, "TLS certificate (PEM) to use instead of the generated one; needs --private-key."],
        ["private-key", None, None, "Private key (PEM) for --certificate."],
        ["max-connections", None, Limits.max_connections, "Open connections allowed in all (0: no limit).", int],
        ["max-per-address", None, Limits.max_per_address, "Open connections allowed from one address (0: no limit; default 256: a classroom behind one router).", int],
        ["message-rate", None, Limits.message_rate, "Messages per second one user may keep sending (0: no per-user rate limits at all).", float],
    ]
    optFlags = [
        ["insecure-plaintext", None, "DANGER: no TLS. Passkeys and messages cross the network readable by anyone."],
        ["no-announce", None, "Do not announce this server on the local network (mDNS/DNS-SD, _tcpchat._tcp: it "
         "tells the network the server's name, addresses, port and certificate fingerprint, so clients can list it)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this Twisted endpoint (repeatable), e.g. tcp:12345:interface=127.0.0.1"""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError("--port must be from 0 to 65535")
        if not 0 <= self["history"] <= 1000:
            raise usage.UsageError("--history must be from 0 to 1000")
        if self["passkey"] is not None and self["passkey-file"] is not None:
            raise usage.UsageError("give --passkey or --passkey-file, not both")
        if self["passkey-file"] is not None:
            try:
                with open(self["passkey-file"], encoding="utf-8") as f:
                    self["passkey"] = f.readline().strip()
            except OSError as e:
                raise usage.UsageError(f"cannot read --passkey-file: {e.strerror}") from None
        if self["passkey"] is not None and not auth.canonical_passkey(self["passkey"]):
            raise usage.UsageError("the passkey must not be empty")
        if self["admin-passkey"] is not None and not auth.canonical_passkey(self["admin-passkey"]):
            raise usage.UsageError("the admin passkey must not be empty")
        if (self["certificate"] is None) != (self["private-key"] is None):
            raise usage.UsageError("--certificate and --private-key go together")
        for key in ("certificate", "private-key"):
            if self[key] is not None and not os.path.isfile(self[key]):
                raise usage.UsageError(f"--{key}: no such file: {self[key]}")
        for key in ("max-connections", "max-per-address", "message-rate"):
            if self[key] < 0:
                raise usage.UsageError(f"--{key} cannot be negative")
        if not self["listen"]:
            self["listen"] = [f"tcp:{self['port']}:backlog=1024"]  # a classroom logging in at once
        data_dir = os.path.abspath(self["data-dir"])
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"cannot create --data-dir {data_dir}: {e.strerror}") from None
        self["data-dir"] = data_dir
        if self["server-name"] is None:
            self["server-name"] = f"tcpchat on {socket.gethostname()}"


class ChatService(service.Service):
    """
    Opens storage, then listens on every endpoint, then announces where and
    how to join.  Stopping closes the listeners, says goodbye to everyone and
    closes storage.
    """

    log = Logger()

    def __init__(self, factory: ChatFactory, endpoints: List[Any], passkey: str, runners: Sequence[ThreadRunner] = (),
                 tls_options: Any = None, fingerprint: Optional[str] = None, admin_passkey: Optional[str] = None):
        self.factory = factory
        self.admin_passkey = admin_passkey
        factory.passkeyListeners.append(self._rotated)
        self.tls_options = tls_options
        self.fingerprint = fingerprint
        self.endpoints = endpoints
        self.passkey = passkey
        #: where the passkey is kept (None: it was given on the command line)
        self.passkey_file: Optional[str] = None
        self.runners = runners
        self.ports: List[Any] = []
        self.ready: defer.Deferred = defer.Deferred()
        #: announce on the local network (mDNS) once listening
        self.announcing = True
        self.announcer: Any = None

    def startService(self) -> None:
        super().startService()
        from twisted.internet import reactor

        reactor.callWhenRunning(self._handleSignals, reactor)
        d = defer.Deferred.fromCoroutine(self._start())
        d.addErrback(self._failed)

    def _handleSignals(self, reactor: Any) -> None:
        """
        SIGTERM and SIGINT stop the server cleanly and exit with status 0
        (twistd would otherwise re-raise the signal after shutting down, so
        service managers and scripts would see a failure).
        """
        import signal

        def stop(signum: int, frame: Any) -> None:
            self.log.info("Received {signal}, shutting down", signal=signal.Signals(signum).name)
            reactor.callFromThread(reactor.stop)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    async def _start(self) -> None:
        await self.factory.start()
        listening: Any = self.factory
        if self.tls_options is not None:
            from tcpchat.server.lazytls import LazyTLSFactory

            listening = LazyTLSFactory(self.tls_options, self.factory)
        for endpoint in self.endpoints:
            self.ports.append(await endpoint.listen(listening))
        addresses = self.announce()
        if self.announcing and self.ports:
            from tcpchat.discovery import Announcer

            hosts = [a.rpartition(":")[0].strip("[]") for a in addresses]
            self.announcer = Announcer(self.factory.server_name, self.ports[0].getHost().port, hosts, self.fingerprint)
            self.announcer.start()  # in the background: serving does not wait for the network's answer
        self.ready.callback(self.ports)

    def _rotated(self, passkey: str) -> None:
        self.passkey = passkey
        if self.passkey_file is not None:
            _write_private(self.passkey_file, passkey + "\n")  # the next start uses the rotated one

    def _failed(self, failure: Any) -> None:
        """Could not start: one clear line, then exit with status 1 (a service manager sees the failure)."""
        from twisted.internet import reactor
        from twisted.internet.error import CannotListenError

        if failure.check(StoreUnusable):
            why = f"{failure.value}. Restore it from a backup, or move it aside to start afresh."
        elif failure.check(CannotListenError):
            why = f"cannot listen on {failure.value.interface or '*'}:{failure.value.port}: {failure.value.socketError}"
        elif failure.check(OSError):
            why = f"{failure.value.strerror or failure.value}: {failure.value.filename or ''}".rstrip(": ")
        else:
            self.log.failure("tcpchat could not start", failure)
            why = failure.getErrorMessage()
        self.log.critical("tcpchat could not start: {why}", why=why)
        exit_after_shutdown(reactor, 1)
        reactor.stop()

    def joinLink(self, addresses: List[str]) -> str:
        """The link to the first address people on the network can use (LAN before loopback)."""
        host, _, port = addresses[0].rpartition(":")
        return link.JoinLink(host.strip("[]"), int(port), self.fingerprint).format(with_passkey=False)

    def announce(self) -> List[str]:
        """The banner; returns every ``address:port`` people can join at."""
        addresses = []
        for port in self.ports:
            host = port.getHost()
            addresses.extend(client_addresses(host.host, host.port))
        joinLink = self.joinLink(addresses) if addresses else ""
        self.factory.join_link = joinLink or None
        bar = "=" * 64
        if self.fingerprint:
            security = f"TLS, certificate {self.fingerprint}"
        else:
            security = "NONE - plaintext (--insecure-plaintext): anyone on the network can read everything"
        self.log.info(
            "\n{bar}\n  tcpchat server {name!r} is ready\n  Passkey:     {passkey}{kept}\n  Join at:     {addresses}\n"
            "  Join link:   {link}\n"
            "  Security:    {security}\n  Admin key:   {admin}  (type /oper KEY in a client to moderate)\n{bar}\n"
            "  Scan to join (the join link; tcpchat-client LINK or paste it into the form):\n{qr}\n{bar}",
            link=joinLink,
            qr=qr.terminal(joinLink) if joinLink else "",
            admin=self.admin_passkey or "(none)",
            bar=bar,
            name=self.factory.server_name,
            passkey=self.passkey,
            kept=(f"  (kept in {self.passkey_file}; the same after a restart; change it with /passkey)"
                  if self.passkey_file else "  (from the command line)"),
            addresses=", ".join(addresses),
            security=security,
            listening=[p.getHost().port for p in self.ports],
        )
        if not self.fingerprint:
            self.log.warn("TLS is OFF (--insecure-plaintext): passkeys and messages travel in clear text")
        return addresses

    async def _stop(self) -> None:
        if self.announcer is not None:
            await self.announcer.stop()  # a goodbye, so clients drop it from their lists at once
        await defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in self.ports])
        await self.factory.stop()
        for runner in self.runners:
            runner.stop()
        self.log.info("tcpchat stopped cleanly")

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())


def exit_after_shutdown(reactor: Any, status: int) -> None:
    """
    Make the process exit with ``status`` once the reactor has shut down
    (twistd itself would exit 0 after a failed start).
    """

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    reactor.addSystemEventTrigger("after", "shutdown", leave)


def client_addresses(host: str, port: int) -> List[str]:
    """Every ``address:port`` a client on the network could use for a listener."""
    if host in ("0.0.0.0", "::", ""):
        hosts = local_ipv4_addresses()
    else:
        hosts = [host]
    return [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts]


def local_ipv4_addresses() -> List[str]:
    """This machine's IPv4 addresses, LAN ones first, loopback last."""
    found = set()
    try:
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _, ifname in socket.if_nameindex():
                try:
                    packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname[:15].encode()))  # SIOCGIFADDR
                except OSError:
                    continue
                found.add(socket.inet_ntoa(packed[20:24]))
    except (ImportError, OSError, AttributeError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    found.add("127.0.0.1")
    return sorted(found, key=lambda a: (a.startswith("127."), a))


def makeService(config: Options, reactor: Any = None) -> service.IService:
    """Build the tcpchat service from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    # The database and file workers are threads: let them take the GIL within 0.5 ms of
    # waking rather than Python's default 5 ms, or each group commit can wait that long
    # behind the reactor thread's Python work (measured: p50 latency 4.8 -> see PERFORMANCE.rst).
    sys.setswitchinterval(0.0005)
    passkey_file = None
    passkey = config["passkey"]
    if passkey is None:
        passkey_file = os.path.join(config["data-dir"], "passkey")
        passkey = _read_private(passkey_file)
        if passkey is None:
            passkey = auth.generate_passkey()
            _write_private(passkey_file, passkey + "\n")
    admin_passkey = config["admin-passkey"] or auth.generate_passkey()
    _write_private(os.path.join(config["data-dir"], "admin-passkey"), admin_passkey + "\n")
    runner = ThreadRunner(reactor)
    reader = ThreadRunner(reactor, name="tcpchat-db-read")
    store = Store(os.path.join(config["data-dir"], "tcpchat.sqlite3"), runner, reader=reader)
    limits = Limits(
        history=config["history"], max_file_size=config["max-file-size"], max_storage=config["max-storage"],
        max_connections=config["max-connections"], max_per_address=config["max-per-address"],
        message_rate=config["message-rate"],
    )
    from tcpchat.server.files import FileService

    def in_thread(f: Any, *args: Any) -> defer.Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    factory = ChatFactory(store, auth.PasskeyVerifier(passkey), reactor, config["server-name"], limits,
                          admin_passkey=admin_passkey, worker=in_thread)
    factory.files = FileService(factory, os.path.join(config["data-dir"], "files"), in_thread)
    endpoints = [serverFromString(reactor, description) for description in config["listen"]]
    tls_options = fingerprint = None
    if not config["insecure-plaintext"]:
        from tcpchat import tls

        if config["certificate"]:
            cert_path, key_path = config["certificate"], config["private-key"]
        else:
            cert_path, key_path = tls.ensure_certificate(config["data-dir"], socket.gethostname())
        tls_options = tls.server_options(cert_path, key_path)
        with open(cert_path, "rb") as f:
            fingerprint = tls.fingerprint_pem(f.read())
    chat = ChatService(factory, endpoints, passkey, [runner, reader], tls_options, fingerprint, admin_passkey)
    chat.passkey_file = passkey_file
    chat.announcing = not config["no-announce"]
    return chat


def _read_private(path: str) -> Optional[str]:
    """The first line of a secret file we wrote, or None if there is none (or it is empty)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return line if auth.canonical_passkey(line) else None


def _write_private(path: str, text: str) -> None:
    """Write a secret file only this account can read."""
    temporary = path + ".new"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # all or nothing: a crash never leaves half a passkey
    except OSError:
        pass  # the banner shows it anyway
