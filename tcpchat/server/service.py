"""
The running server as Twisted services, in the order they start:

1. :class:`ProcessSettings` — what tcpchat changes for the whole process
   while it runs (the only place that does): the interpreter's thread switch
   interval, and SIGTERM/SIGINT as a clean stop with exit status 0.
2. :class:`StorageService` — opens the store and loads the recent
   conversation; once that is done the service adds the rest:
3. one :class:`ListeningService` (a ``StreamServerEndpointService``) per
   ``--listen`` endpoint, a ``TimerService`` for the factory's sweep, and
4. :class:`AnnounceService` — the banner (passkey, addresses, join link, QR
   code) and the mDNS announcement.

Stopping runs the other way round (``MultiService``): the announcement is
withdrawn, listeners close, everyone is told, storage is closed.  A start
that fails logs one line and exits with status 1.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any, Dict, List, Optional, Sequence

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet import defer
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from tcpchat import link, qr
from tcpchat.server.keys import write_private
from tcpchat.store.errors import StoreUnusable

#: let the database and file threads take the GIL within 0.5 ms of waking rather than
#: Python's default 5 ms, or each group commit can wait that long behind the reactor
#: thread's Python work (docs/PERFORMANCE.rst)
SWITCH_INTERVAL = 0.0005


class ProcessSettings(service.Service):
    """Process-wide settings, set on start and put back on stop, through the injected reactor."""

    log = Logger()

    def __init__(self, reactor: Any, switch_interval: float = SWITCH_INTERVAL) -> None:
        self.reactor = reactor
        self.switch_interval = switch_interval
        self._old_interval: Optional[float] = None
        self._old_handlers: dict = {}

    def startService(self) -> None:
        super().startService()
        self._old_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval)
        self.reactor.callWhenRunning(self.installSignalHandlers)

    def installSignalHandlers(self) -> None:
        """SIGTERM and SIGINT stop the server cleanly, exit status 0 (twistd would re-raise the signal)."""
        reactor = self.reactor

        def stop(signum: int, frame: Any) -> None:
            self.log.info("Received {signal}, shutting down", signal=signal.Signals(signum).name)
            reactor.callFromThread(reactor.stop)

        for signum in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[signum] = signal.signal(signum, stop)

    def stopService(self) -> Any:
        if self._old_interval is not None:
            sys.setswitchinterval(self._old_interval)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers = {}
        return super().stopService()


class StorageService(service.Service):
    """Opens the store (through the factory); then the server may listen.  Stopped last."""

    log = Logger()

    def __init__(self, factory: Any, runners: Sequence[Any], ready: Any, failed: Any) -> None:
        self.factory = factory
        self.runners = runners
        self.ready = ready
        self.failed = failed

    def startService(self) -> None:
        super().startService()
        self.factory.start(sweeping=False).addCallbacks(lambda _: self.ready(), self.failed)

    def stopService(self) -> defer.Deferred:
        super().stopService()

        async def stop() -> None:
            try:
                await self.factory.stop()
            except Exception as e:  # (the database gone: what was acknowledged is stored; the rest is refused)
                self.log.warn("Storage did not close cleanly: {why}", why=e)
            finally:
                for runner in self.runners:  # (their threads would keep the process from exiting)
                    runner.stop()

        return defer.Deferred.fromCoroutine(stop())


class ListeningService(StreamServerEndpointService):
    """A ``StreamServerEndpointService`` whose failure to listen stops the server with one clear line."""

    def __init__(self, endpoint: Any, factory: Any, failed: Any) -> None:
        super().__init__(endpoint, factory)
        self.failed = failed
        self.listening: defer.Deferred = defer.Deferred()
        self._asked = False

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        if self._asked:
            return
        self._asked = True
        self._waitingForPort = self.endpoint.listen(self.factory)
        self._waitingForPort.addCallbacks(self._listening, self._cannotListen)

    def startService(self) -> None:
        service.Service.startService(self)
        self.privilegedStartService()  # (once: a service added to a running parent was already asked)

    def _listening(self, port: Any) -> Any:
        self.listening.callback(port)
        return port

    def _cannotListen(self, failure: Any) -> None:
        self._waitingForPort = None
        self.failed(failure)


class AnnounceService(service.Service):
    """The banner, once every listener is up, then the mDNS announcement (withdrawn on stop)."""

    log = Logger()

    def __init__(self, server: "TcpchatService", ports: List[Any]) -> None:
        self.server = server
        self.ports = ports
        self.announcer: Any = None

    def startService(self) -> None:
        super().startService()
        server = self.server
        addresses = server.announce(self.ports)
        if server.announcing and self.ports:
            from tcpchat.discovery import Announcer

            hosts = [a.rpartition(":")[0].strip("[]") for a in addresses]
            self.announcer = Announcer(server.factory.serverName, self.ports[0].getHost().port, hosts,
                                       server.fingerprint)
            self.announcer.start()  # in the background: serving does not wait for the network's answer

    def stopService(self) -> Any:
        super().stopService()
        if self.announcer is not None:
            return defer.Deferred.fromCoroutine(self.announcer.stop())  # a goodbye: clients drop it at once
        return None


#: the longest path a UNIX socket can have (Linux: 108 bytes with the terminating NUL)
MAX_SOCKET_PATH = 107


class TcpchatService(service.MultiService):
    """The whole server (``twistd tcpchat``): see the module's description for its parts."""

    log = Logger()

    def __init__(self, factory: Any, endpoints: List[Any], passkey: str, runners: Sequence[Any], reactor: Any,
                 tls_options: Any = None, fingerprint: Optional[str] = None, admin_passkey: Optional[str] = None):
        super().__init__()
        self.setName("tcpchat")
        self.factory = factory
        self.endpoints = endpoints
        self.passkey = passkey
        self.runners = runners
        self.reactor = reactor
        self.tls_options = tls_options
        self.fingerprint = fingerprint
        self.admin_passkey = admin_passkey
        #: where the passkey is kept (None: it was given on the command line)
        self.passkey_file: Optional[str] = None
        #: announce on the local network (mDNS) once listening
        self.announcing = True
        #: serve WebSocket clients (and, later, the browser client) on the same port
        self.web = True
        #: the data directory (None: tests that give none): where the admin socket goes
        self.data_dir: Optional[str] = None
        #: the data directory's lock, held open while the server runs (tcpchat.backup.hold)
        self.lock: Any = None
        #: the other nodes on the same PostgreSQL database (tcpchat.server.cluster.Cluster), or None: alone
        self.cluster: Any = None
        #: where /metrics and /healthz are served (None: not at all)
        self.metricsEndpoint: Any = None
        #: retention, in days (0: keep)
        self.keepMessages = self.keepFiles = 0.0
        #: deletes what is past its time (tcpchat.server.retention), when retention is on
        self.retainer: Any = None
        self.startedAt = reactor.seconds()
        #: fires with the listening ports once the server is ready
        self.ready: defer.Deferred = defer.Deferred()
        self.ports: List[Any] = []
        self._failing = False
        factory.passkeyListeners.append(self._rotated)
        ProcessSettings(reactor).setServiceParent(self)
        StorageService(factory, runners, self._storageReady, self._failed).setServiceParent(self)

    def _storageReady(self) -> None:
        """Storage is open: (join the cluster,) listen, sweep, then announce."""
        if not self.running:
            return
        if self.cluster is not None and not self.cluster.started:
            from tcpchat.server.cluster import ClusterService

            ClusterService(self.cluster, self).setServiceParent(self)  # (it calls this again once in the cluster)
            return
        from tcpchat.server.lazytls import LazyTLSFactory, SniffingFactory

        def site(sniffer: Any) -> Any:
            from tcpchat.server.site import make_site  # (autobahn loads when the first browser comes)

            return make_site(self.factory, sniffer.upgraded)

        listening: Any = SniffingFactory(self.factory, site if self.web else None)  # TCP clients and browsers
        if self.tls_options is not None:
            listening = LazyTLSFactory(self.tls_options, self.factory, listening)
        listeners = [ListeningService(endpoint, listening, self._failed) for endpoint in self.endpoints]
        for listener in listeners:
            listener.setServiceParent(self)
        if self.data_dir is not None:
            self._listenAdmin()
        if self.metricsEndpoint is not None:
            from tcpchat.server.metrics import make_site

            ListeningService(self.metricsEndpoint, make_site(self.factory), self._failed).setServiceParent(self)
        if self.keepMessages or self.keepFiles:
            from tcpchat.server.retention import Retention, RetentionService

            self.retainer = Retention(self.factory, self.keepMessages, self.keepFiles)
            RetentionService(self.retainer, self.reactor).setServiceParent(self)
        sweep = TimerService(self.factory.limits.sweep_interval, self.factory.sweep)
        sweep.clock = self.reactor
        sweep.setServiceParent(self)
        gathered = defer.gatherResults([listener.listening for listener in listeners], consumeErrors=True)
        gathered.addCallback(self._listening).addErrback(lambda failure: None)  # (a failure was reported)

    def _listenAdmin(self) -> None:
        """The console for tcpchat-admin: a UNIX socket only this account can open."""
        from tcpchat.server.admin import SOCKET_NAME, AdminFactory

        assert self.data_dir is not None
        path = os.path.join(self.data_dir, SOCKET_NAME)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            self.log.warn("No admin socket: its path {path} is too long for a UNIX socket (tcpchat-admin will not "
                          "reach this server; use a shorter --data-dir)", path=path)
            return
        endpoint = UNIXServerEndpoint(self.reactor, path, mode=0o600, wantPID=True)
        admin = ListeningService(endpoint, AdminFactory(self.factory, self), self._failed)
        admin.setServiceParent(self)

    def retention(self) -> Dict[str, Any]:
        """What is kept how long, in days (for the banner and tcpchat-admin status); empty: everything is kept."""
        return {k: v for k, v in (("messages", self.keepMessages), ("files", self.keepFiles)) if v}

    def _listening(self, ports: List[Any]) -> None:
        self.ports = ports
        AnnounceService(self, ports).setServiceParent(self)
        self.ready.callback(ports)

    def _rotated(self, passkey: str) -> None:
        self.passkey = passkey
        if self.passkey_file is not None:
            write_private(self.passkey_file, passkey + "\n")  # the next start uses the rotated one

    def _failed(self, failure: Any) -> None:
        """Could not start: one clear line, then exit with status 1 (a service manager sees the failure)."""
        if self._failing:
            return
        self._failing = True
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
        exit_after_shutdown(self.reactor, 1)
        self.reactor.stop()

    def startService(self) -> None:
        # (not MultiService's loop over the live list: storage may add the listeners while it runs)
        service.Service.startService(self)
        for child in list(self):
            child.startService()

    def stopService(self) -> defer.Deferred:
        d = super().stopService()
        return d.addCallback(lambda _: self.log.info("tcpchat stopped cleanly"))

    def announce(self, ports: List[Any]) -> List[str]:
        """The banner; returns every ``address:port`` people can join at."""
        addresses = []
        for port in ports:
            host = port.getHost()
            addresses.extend(client_addresses(host.host, host.port))
        joinLink = self.linkFor(addresses) if addresses else ""
        self.factory.joinLink = joinLink or None
        scheme = "https" if self.fingerprint else "http"
        browser = f"{scheme}://{addresses[0]}/" if addresses and self.web else ""
        scan = browser or joinLink  # a phone opens the page; without it, the native clients' link
        bar = "=" * 64
        if self.fingerprint:
            security = f"TLS, certificate {self.fingerprint}"
        else:
            security = "NONE - plaintext (--insecure-plaintext): anyone on the network can read everything"
        self.log.info(
            "\n{bar}\n  tcpchat server {name!r} is ready\n  Passkey:     {passkey}{kept}\n  Join at:     {addresses}\n"
            "{browserLine}"
            "  Join link:   {link}\n"
            "  Security:    {security}\n  Admin key:   {admin}  (type /oper KEY in a client to moderate)\n"
            "  Retention:   {retention}\n{bar}\n"
            "  Scan to join ({what}):\n{qr}\n{bar}",
            link=joinLink,
            browserLine=f"  Browser:     {browser}  (phones and laptops: open it, accept the certificate once)\n"
                        if browser else "",
            what="opens the chat in a phone's browser" if browser else
                 "the join link; tcpchat-client LINK or paste it into the form",
            qr=qr.terminal(scan) if scan else "",
            admin=self.admin_passkey or "(none)",
            bar=bar,
            name=self.factory.serverName,
            passkey=self.passkey,
            kept=(f"  (kept in {self.passkey_file}; the same after a restart; change it with /passkey)"
                  if self.passkey_file else "  (from the command line)"),
            addresses=", ".join(addresses),
            security=security,
            retention=", ".join(f"{what} are deleted after {days:g} days" for what, days in self.retention().items())
            or "off (everything is kept)",
            listening=[p.getHost().port for p in ports],
        )
        if not self.fingerprint:
            self.log.warn("TLS is OFF (--insecure-plaintext): passkeys and messages travel in clear text")
        return addresses

    def linkFor(self, addresses: List[str]) -> str:
        """The link to the first address people on the network can use (LAN before loopback)."""
        host, _, port = addresses[0].rpartition(":")
        return link.JoinLink(host.strip("[]"), int(port), self.fingerprint).format(with_passkey=False)


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


