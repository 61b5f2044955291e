"""
``twistd tcpchat``: command-line options and the service they build.
"""

from __future__ import annotations

import os
import secrets
import socket

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool

from twisted.python import usage

from tcpchat import auth, wire
from tcpchat.server.chat import ChatFactory, Limits
from tcpchat.server.keys import read_private, write_private
from tcpchat.server.service import TcpchatService
from tcpchat.store.postgres import is_postgres
from tcpchat.store.sqlite import Store, ThreadRunner

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
        ["metrics", None, None, "Serve Prometheus metrics (/metrics) and a health check (/healthz) on this Twisted "
         "endpoint, e.g. tcp:9102:interface=127.0.0.1 (default: off)."],
        ["keep-messages", None, 0, "Delete messages and other events older than this many days (0: keep them).", float],
        ["keep-files", None, 0, "Delete shared files older than this many days (0: keep them; the storage cap "
         "still applies).", float],
        ["database", None, None, "Where the conversation is kept: a postgresql://USER@HOST/DB address shares it with "
         "every other node given the same one (see docs/SCALING.rst); default: DATA-DIR/tcpchat.sqlite3."],
        ["files-dir", None, None, "Directory for shared files (default DATA-DIR/files); nodes of one cluster give "
         "the same shared directory (NFS/SMB)."],
        ["node-name", None, None, "This node's name in a cluster (default: HOSTNAME-PORT-RANDOM)."],
        ["dead-node-after", None, 10.0, "Seconds a cluster node may go without a heartbeat before its users are "
         "written off (default 10).", float],
        ["crowd", None, Limits.crowd, "With this many users online, clients that can take it get joins and leaves "
         "as one list a second instead of a line each (default 200).", int],
        ["login-timeout", None, Limits.login_timeout, "Seconds a connection may take to log in, TLS handshake "
         "included (default 15; raise it for very slow links).", float],
    ]
    optFlags = [
        ["insecure-plaintext", None, "DANGER: no TLS. Passkeys and messages cross the network readable by anyone."],
        ["no-web", None, "Do not serve browsers (the WebSocket at /ws) on the chat port; TCP clients only."],
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
        for key in ("keep-messages", "keep-files"):
            if self[key] < 0:
                raise usage.UsageError(f"--{key} cannot be negative")
        if self["metrics"] is not None:
            try:
                from prometheus_client import CollectorRegistry  # noqa: F401
            except ImportError:
                raise usage.UsageError("--metrics needs prometheus_client (pip install prometheus_client)") from None
        if self["database"] is not None:
            if not is_postgres(self["database"]):
                raise usage.UsageError("--database takes a postgresql://USER@HOST/DATABASE address (leave it out to "
                                       "keep the conversation in DATA-DIR/tcpchat.sqlite3)")
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise usage.UsageError("--database postgresql://… needs psycopg (pip install 'psycopg[binary]')") \
                    from None
        if not 1 <= self["dead-node-after"] <= 3600:
            raise usage.UsageError("--dead-node-after must be from 1 to 3600 seconds")
        if self["files-dir"] is not None:
            self["files-dir"] = os.path.abspath(self["files-dir"])
        if self["crowd"] < 2:
            raise usage.UsageError("--crowd must be at least 2")
        if not 1 <= self["login-timeout"] <= 600:
            raise usage.UsageError("--login-timeout must be from 1 to 600 seconds")
        if not self["listen"]:
            self["listen"] = [f"tcp:{self['port']}:backlog=1024"]  # a classroom logging in at once
        self["data-dir"] = os.path.abspath(self["data-dir"])  # created by makeService: parsing changes nothing
        if self["server-name"] is None:
            self["server-name"] = f"tcpchat on {socket.gethostname()}"


def makeService(config: Options, reactor: Any = None) -> service.IService:
    """Build the tcpchat service from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    data_dir = config["data-dir"]
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"tcpchat could not start: cannot create --data-dir {data_dir}: {e.strerror}") from None
    from tcpchat.backup import BackupError, hold

    try:
        lock = hold(data_dir)  # one server per data directory; tcpchat-admin restore checks it
    except BackupError as e:
        raise SystemExit(f"tcpchat could not start: {e}") from None
    passkey_file = None
    passkey = config["passkey"]
    if passkey is None:
        passkey_file = os.path.join(config["data-dir"], "passkey")
        passkey = read_private(passkey_file)
        if passkey is None:
            passkey = auth.generate_passkey()
            write_private(passkey_file, passkey + "\n")
    admin_passkey = config["admin-passkey"] or auth.generate_passkey()
    write_private(os.path.join(config["data-dir"], "admin-passkey"), admin_passkey + "\n")
    runner = ThreadRunner(reactor)
    reader = ThreadRunner(reactor, name="tcpchat-db-read")
    database = config["database"]
    store: Any
    if is_postgres(database):
        from tcpchat.store.postgres import PgStore

        node = config["node-name"] or f"{socket.gethostname()}-{config['port']}-{secrets.token_hex(2)}"
        store = PgStore(database, runner, reader=reader, node=node)
    else:
        store = Store(os.path.join(config["data-dir"], "tcpchat.sqlite3"), runner, reader=reader)
    limits = Limits(
        history=config["history"], max_file_size=config["max-file-size"], max_storage=config["max-storage"],
        max_connections=config["max-connections"], max_per_address=config["max-per-address"],
        message_rate=config["message-rate"], login_timeout=config["login-timeout"], crowd=config["crowd"],
        handshake_timeout=min(Limits.handshake_timeout, config["login-timeout"]),
    )
    from tcpchat.server.files import FileService

    def in_thread(f: Any, *args: Any) -> defer.Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    factory = ChatFactory(store, auth.PasskeyVerifier(passkey), reactor, config["server-name"], limits,
                          admin_passkey=admin_passkey, worker=in_thread)
    factory.files = FileService(factory, config["files-dir"] or os.path.join(config["data-dir"], "files"), in_thread)
    endpoints = [serverFromString(reactor, description) for description in config["listen"]]
    tls_options = fingerprint = None
    if not config["insecure-plaintext"]:
        from tcpchat import tls

        if config["certificate"]:
            cert_path, key_path = config["certificate"], config["private-key"]
        else:
            from tcpchat.server.service import local_ipv4_addresses

            cert_path, key_path = tls.ensure_certificate(config["data-dir"], socket.gethostname(),
                                                         local_ipv4_addresses())
        tls_options = tls.server_options(cert_path, key_path)
        with open(cert_path, "rb") as f:
            fingerprint = tls.fingerprint_pem(f.read())
    chat = TcpchatService(factory, endpoints, passkey, [runner, reader], reactor, tls_options, fingerprint,
                          admin_passkey)
    chat.passkey_file = passkey_file
    if is_postgres(database):
        from tcpchat.server.cluster import Cluster

        chat.cluster = Cluster(factory, store, reactor, shared_passkey=config["passkey"] is None)
        chat.cluster.dead_after = config["dead-node-after"]
        chat.cluster.heartbeat = min(Cluster.heartbeat, config["dead-node-after"] / 4)
    chat.data_dir = data_dir
    chat.lock = lock
    if config["metrics"]:
        chat.metricsEndpoint = serverFromString(reactor, config["metrics"])
    chat.keepMessages, chat.keepFiles = config["keep-messages"], config["keep-files"]
    chat.announcing = not config["no-announce"]
    chat.web = not config["no-web"]
    return chat
