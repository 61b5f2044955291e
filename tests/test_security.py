"""TLS, the bound login proof and certificate pinning, over real sockets on 127.0.0.1."""

import os

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from tcpchat import tls
from tcpchat.client.core import CONNECTED, FAILED, IdentityChanged, LoginRefused

from .clienttools import InProcessServer, make_client, turns
from .helpers import PASSKEY


class Tap(protocol.Protocol):
    """A relay side that also records every byte it forwards."""

    def __init__(self, relay):
        self.relay = relay
        self.peer = None
        self.pending = []
        relay.sides.append(self)

    def dataReceived(self, data):
        self.relay.seen.append(data)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connectionLost(self, reason):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class Relay(protocol.Factory):
    """Forwards connections to a target; ``upstream`` decides how it connects (plain TCP, or its own TLS)."""

    def __init__(self, port, upstream_tls=False):
        self.port = port
        self.upstream_tls = upstream_tls
        self.seen = []
        self.sides = []

    def buildProtocol(self, addr):
        front = Tap(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        if self.upstream_tls:
            endpoint = wrapClientTLS(tls.client_options(), endpoint)

        def connected(back):
            back.peer, front.peer = front, back
            for data in front.pending:
                back.transport.write(data)
            front.pending = []

        endpoint.connect(protocol.Factory.forProtocol(lambda: Tap(self))).addCallback(connected)
        return front

    def close(self):
        for side in self.sides:
            if side.transport is not None:
                side.transport.abortConnection()


class SecurityTests(unittest.TestCase):
    timeout = 60

    async def server(self, directory="server", port=0):
        path = os.path.abspath(os.path.join(self.tmp, directory))
        os.makedirs(path, exist_ok=True)
        server = InProcessServer(path)
        bound = await server.start(port)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(server.stop()))
        return server, bound

    def setUp(self):
        self.tmp = self.mktemp()
        os.makedirs(self.tmp)
        self.known = os.path.join(os.path.abspath(self.tmp), "known.json")

    def client(self, port, name, **kw):
        kw.setdefault("known_servers", self.known)
        client, rec = make_client(port, name, **kw)
        self.addCleanup(client.stop)
        return client, rec

    def relay(self, port, **kw):
        relay = Relay(port, **kw)
        listening = reactor.listenTCP(0, relay, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(relay.close)
        return relay, listening.getHost().port

    async def test_passive_observer_sees_neither_passkey_nor_text(self):
        """Every byte between client and server is recorded: no passkey, no message text in them."""
        server, port = await self.server()
        relay, via = self.relay(port)
        alice, arec = self.client(via, "alice")
        bob, brec = self.client(port, "bob")
        await alice.start()  # first contact: SPAKE2
        await bob.start()
        alice.send("the exam answers are in the blue folder")
        await brec.until(lambda: brec.texts())
        await alice.stop()
        again, rec = self.client(via, "alice")
        await again.start()  # pinned now: the passkey goes inside TLS
        again.send("second secret sentence")
        await brec.until(lambda: "second secret sentence" in brec.texts())
        wire_bytes = b"".join(relay.seen)
        self.assertGreater(len(wire_bytes), 1000)
        for secret in (PASSKEY, PASSKEY.replace("-", ""), "exam answers", "second secret", "alice"):
            self.assertNotIn(secret.encode(), wire_bytes, secret)

    async def test_man_in_the_middle_with_its_own_certificate_cannot_log_in(self):
        """A relay terminating TLS with its own certificate fails the login, even with nothing pinned yet."""
        server, port = await self.server()
        mitm_dir = os.path.join(os.path.abspath(self.tmp), "mitm")
        os.makedirs(mitm_dir)
        cert, key = tls.ensure_certificate(mitm_dir, "evil")
        relay = Relay(port, upstream_tls=True)
        listening = reactor.listenTCP(0, TLSMemoryBIOFactory(tls.server_options(cert, key), False, relay),
                                      interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(relay.close)
        alice, rec = self.client(listening.getHost().port, "alice")
        with self.assertRaises(LoginRefused):
            await alice.start()
        self.assertEqual(alice.state, FAILED)
        self.assertNotIn("alice", [p.name for p in server.factory.users.values()])
        self.assertGreater(len(relay.seen), 0)  # it really was in the middle, seeing plaintext
        self.assertNotIn(PASSKEY.encode(), b"".join(relay.seen))
        # the real server was never pinned for the relay's address
        self.assertIsNone(alice.knownServers.get("127.0.0.1", listening.getHost().port))

    async def test_changed_certificate_is_refused_with_a_warning(self):
        """After a login pins a certificate, a server with another one at that address is refused loudly."""
        first, port = await self.server("one")
        alice, rec = self.client(port, "alice")
        await alice.start()
        self.assertEqual(alice.knownServers.get("127.0.0.1", port), first.fingerprint)
        await alice.stop()
        await first.stop()
        second, again = await self.server("two", port=port)
        self.assertEqual(again, port)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        bob, brec = self.client(port, "alice")
        with self.assertRaises(IdentityChanged) as e:
            await bob.start()
        self.assertIn("different certificate", str(e.exception))
        self.assertIn(second.fingerprint, str(e.exception))
        self.assertEqual(brec.states[-1][0], FAILED)
        self.assertEqual(second.factory.users, {})
        # the user (after checking with the operator) can accept the new one explicitly
        carol, crec = self.client(port, "alice", trust_new_certificate=True)
        await carol.start()
        self.assertEqual(carol.state, CONNECTED)

    async def test_wrong_passkey_over_tls(self):
        """A wrong passkey fails over TLS with the plain sentence."""
        server, port = await self.server()
        alice, rec = self.client(port, "alice", passkey="not-the-key")
        with self.assertRaises(LoginRefused) as e:
            await alice.start()
        self.assertEqual(str(e.exception), "Wrong passkey.")
        await turns(lambda: not server.factory.connections)
