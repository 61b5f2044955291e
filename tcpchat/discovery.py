"""
LAN discovery with mDNS/DNS-SD (``python-zeroconf``): servers announce
``_tcpchat._tcp.local.``; clients list what they hear.

Discovery is a convenience, never trust: anyone on the network can announce
anything.  What a client takes from an announcement is an address and a port
to fill in; the passkey proof (and the pinned certificate, or a join link's)
still decide whether the server is the right one.  ``docs/SECURITY.rst`` says
what an announcement reveals.

The TXT record (keys and values ASCII, each entry at most 255 bytes):

``v``     the protocol version (``1``)
``name``  the server's name, as in ``welcome.server`` (at most 63 bytes, cut)
``tls``   ``1`` if the port speaks TLS, ``0`` for ``--insecure-plaintext``
``fp``    the certificate fingerprint, ``SHA256-`` and 64 hex digits (TLS only)

python-zeroconf runs its own threads; everything here that touches it runs
off the reactor thread and reports back with ``callFromThread``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO

from twisted.internet import defer, threads
from twisted.logger import Logger

from tcpchat import link, wire

SERVICE_TYPE = "_tcpchat._tcp.local."
#: DNS-SD instance names are at most 63 bytes
MAX_INSTANCE = 63
#: at most this many servers are kept from what the network says (a flood of announcements is bounded)
MAX_SERVERS = 64

log = Logger()


@dataclass(frozen=True)
class Server:
    """One announced server: where it says it is and what it says it is (nothing proved)."""

    instance: str
    name: str
    host: str
    port: int
    version: int
    tls: bool
    fingerprint: Optional[str]

    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ---------------------------------------------------------------- the TXT record (pure)

def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8")[:limit]
    return data.decode("utf-8", "ignore")


def instance_name(server_name: str) -> str:
    """A DNS-SD instance label from the server's name: no dots or control characters, at most 63 bytes."""
    label = re.sub(r"[\x00-\x1f\x7f.]+", " ", server_name).strip() or "tcpchat"
    return _cut(label, MAX_INSTANCE).strip() or "tcpchat"


def txt_record(server_name: str, fingerprint: Optional[str]) -> Dict[str, str]:
    record = {"v": str(wire.PROTOCOL_VERSION), "name": _cut(server_name, MAX_INSTANCE), "tls": "1" if fingerprint else "0"}
    if fingerprint:
        record["fp"] = link.compact_fingerprint(fingerprint)
    return record


def read_txt(properties: Mapping[Any, Any]) -> Dict[str, Any]:
    """What a TXT record says, checked; anything malformed is left out rather than trusted."""
    def text(key: str) -> str:
        value = properties.get(key.encode(), properties.get(key))
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return "".join(c for c in str(value or "") if c.isprintable())[:255]

    fingerprint = None
    if text("fp"):
        try:
            fingerprint = link.normalize_fingerprint(text("fp"))
        except link.BadLink:
            fingerprint = None
    version = text("v")
    return {"name": _cut(text("name"), MAX_INSTANCE), "version": int(version) if version.isdigit() and len(version) < 6 else 0,
            "tls": text("tls") != "0", "fingerprint": fingerprint}


# ---------------------------------------------------------------- announcing (the server)

class Announcer:
    """
    Announces one server on every network interface while it runs.  start()
    and stop() return Deferreds; the blocking zeroconf work runs in a thread.
    """

    def __init__(self, server_name: str, port: int, addresses: List[str], fingerprint: Optional[str]) -> None:
        self.serverName = server_name
        self.port = port
        self.addresses = [a for a in addresses if not a.startswith("127.")]
        self.fingerprint = fingerprint
        self._zc: Any = None
        self._info: Any = None
        self._stopping = False
        self._registering: Optional[defer.Deferred] = None

    def start(self) -> defer.Deferred:
        if not self.addresses:
            log.info("Not announcing on the network: listening on loopback only")
            return defer.succeed(None)
        self._registering = threads.deferToThread(self._register).addCallbacks(self._registered, self._failed)
        return self._registering

    def _register(self) -> str:
        from zeroconf import ServiceInfo, Zeroconf

        host = instance_name(socket.gethostname().split(".")[0]).replace(" ", "-")
        info = ServiceInfo(
            SERVICE_TYPE,
            f"{instance_name(self.serverName)}.{SERVICE_TYPE}",
            port=self.port,
            properties=txt_record(self.serverName, self.fingerprint),
            server=f"{host}.local.",
            parsed_addresses=self.addresses,
        )
        zc = Zeroconf()
        try:
            zc.register_service(info, allow_name_change=True)
        except BaseException:
            zc.close()
            raise
        self._zc, self._info = zc, info
        return info.name

    def _registered(self, name: str) -> None:
        log.info("Announced on the local network as {name!r} (mDNS {type}; --no-announce turns it off)",
                 name=name[: -len(SERVICE_TYPE) - 1], type=SERVICE_TYPE)

    def _failed(self, failure: Any) -> None:
        # a convenience: never a reason not to serve
        log.warn("Could not announce on the local network ({why}); clients can still join by address",
                 why=failure.getErrorMessage())

    async def stop(self) -> None:
        self._stopping = True
        if self._registering is not None:
            await self._registering  # (bounded: zeroconf's probing takes about a second and a half)
        zc, info, self._zc, self._info = self._zc, self._info, None, None
        if zc is None:
            return

        def unregister() -> None:
            try:
                zc.unregister_service(info)  # says goodbye, so clients drop it at once
            finally:
                zc.close()

        await threads.deferToThread(unregister).addErrback(lambda f: None)


# ---------------------------------------------------------------- browsing (the clients)

class Heard:
    """
    What announcements said, kept up to date from zeroconf's browsing thread
    (bounded to :data:`MAX_SERVERS`); ``changed()`` is called after each change.
    """

    def __init__(self, changed: Callable[[], None] = lambda: None) -> None:
        self.changed = changed
        self._servers: Dict[str, Server] = {}
        self._lock = threading.Lock()

    def event(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        """A ServiceBrowser handler."""
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            with self._lock:
                news = self._servers.pop(name, None) is not None
        else:
            server = server_from_info(name, zeroconf.get_service_info(service_type, name, timeout=2000))
            with self._lock:
                news = server is not None and (name in self._servers or len(self._servers) < MAX_SERVERS)
                if server is not None and news:
                    self._servers[name] = server
        if news:
            self.changed()

    def listed(self) -> List[Server]:
        with self._lock:
            return sorted(self._servers.values(), key=lambda s: (s.name.casefold(), s.address()))


class Browser:
    """
    Listens for announced servers.  ``changed(servers)`` is called on the
    reactor thread with the current list (sorted by name) whenever it changes.
    """

    def __init__(self, reactor: Any, changed: Callable[[List[Server]], None]) -> None:
        self.reactor = reactor
        self.heard = Heard(lambda: reactor.callFromThread(changed, self.heard.listed()))
        self._zc: Any = None
        self._browser: Any = None

    def start(self) -> None:
        self.reactor.callInThread(self._start)

    def _start(self) -> None:
        try:
            from zeroconf import ServiceBrowser, Zeroconf

            self._zc = Zeroconf()
            self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self.heard.event])
        except Exception as e:  # no network, no multicast: there is just nothing to list
            log.info("LAN discovery is not available: {why}", why=e)

    def stop(self) -> defer.Deferred:
        zc, browser, self._zc, self._browser = self._zc, self._browser, None, None
        if zc is None:
            return defer.succeed(None)

        def close() -> None:
            if browser is not None:
                browser.cancel()
            zc.close()

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), close).addErrback(lambda f: None)


def server_from_info(instance: str, info: Any) -> Optional[Server]:
    """A :class:`Server` from a resolved zeroconf ServiceInfo (None if it has no usable IPv4 address)."""
    if info is None or not info.port:
        return None
    addresses = [a for a in info.parsed_addresses() if ":" not in a]
    if not addresses:
        return None
    said = read_txt(info.properties or {})
    label = instance[: -len(SERVICE_TYPE) - 1] if instance.endswith("." + SERVICE_TYPE) else instance
    return Server(instance=instance, name=said["name"] or label, host=addresses[0], port=int(info.port),
                  version=said["version"], tls=said["tls"], fingerprint=said["fingerprint"])


def discover(seconds: float = 3.0) -> List[Server]:
    """Listen for ``seconds`` (no reactor: for ``tcpchat-cli --discover``) and return what was heard."""
    from zeroconf import ServiceBrowser, Zeroconf

    heard = Heard()
    zc = Zeroconf()
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[heard.event])
        time.sleep(seconds)  # listening is the point: answers arrive within a second or two
        browser.cancel()
    finally:
        zc.close()
    return heard.listed()


def print_servers(out: TextIO, seconds: float = 3.0) -> int:
    """``tcpchat-cli --discover``: one line a server; exit status 0 if any was found, 1 if none."""
    out.write(f"Looking for tcpchat servers on this network ({seconds:g} s)…\n")
    out.flush()
    try:
        servers = discover(seconds)
    except OSError as e:
        out.write(f"Cannot listen for announcements here: {e}\n")
        return 1
    if not servers:
        out.write("None found. (Servers started with --no-announce, or on another network, are not listed.)\n")
        return 1
    for server in servers:
        security = f"TLS {server.fingerprint[:7 + 11]}…" if server.fingerprint else ("TLS" if server.tls else "NO TLS")
        out.write(f"  {server.name:<24}  {server.address():<22}  {security}\n")
        out.write(f"      tcpchat-cli --host {server.host} --port {server.port}\n")
    out.write("An announcement is not proof: the passkey (and the certificate, once pinned) still decide.\n")
    return 0
