"""The WebSocket transport: the same frames, login, rules and delivery as TCP, on the same port."""

import json
import os

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tcpchat import wire
from tcpchat.server.websocket import ChatWebSocket

from .clienttools import ScriptedBrowser, WebServerCase, make_client, turns


class WebUser(WebSocketClientProtocol, ScriptedBrowser):
    """A browser's side of the protocol, scripted: JSON control frames in text messages."""

    def onConnect(self, response):
        self.frames = []

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.frames.append(wire.decode(payload, wire.SERVER_FRAMES))

    def send(self, frame):
        self.sendMessage(json.dumps(frame).encode("utf-8"))


class WebSocketCase(WebServerCase, unittest.TestCase):
    async def web_user(self):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}/ws")
        factory.protocol = WebUser
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)  # no timers left behind
        factory.opened = defer.Deferred()
        reactor.connectTCP("127.0.0.1", self.port, factory)
        user = await factory.opened

        mine = f":{user.transport.getHost().port}"

        async def gone():
            user.transport.abortConnection()  # as a phone that leaves the network
            await turns(lambda: not any(isinstance(s.link, ChatWebSocket) and s.peer.endswith(mine)
                                        for s in self.server.factory.connections))

        self.addCleanup(lambda: defer.Deferred.fromCoroutine(gone()))
        return user



class WebSocketTests(WebSocketCase):
    async def test_browser_and_tcp_users_share_one_conversation(self):
        """A WebSocket user and a TCP user on the same port: the same login, the same messages, in one order."""
        web = await self.web_user()
        self.assertEqual((await web.login("phone", features=["rooms"]))["type"], "synced")
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        web.send({"type": "say", "text": "from the phone", "cid": "w1", "req": "s1"})
        await rec.until(lambda: "from the phone" in rec.texts())
        desk.send("from the desk")
        await turns(lambda: "from the desk" in web.texts())
        acks = [f for f in web.frames if f["type"] == "ack"]
        self.assertEqual([(a["cid"], a["req"]) for a in acks], [("w1", "s1")])
        ids = [f["id"] for f in web.frames if f["type"] == "event" and f["kind"] == "message"]
        self.assertEqual(ids, sorted(ids))
        self.assertIn("phone", desk.users)

    async def test_a_wrong_passkey_gets_the_error_and_no_chat_data(self):
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        desk.send("not for strangers")
        web = await self.web_user()
        answer = await web.login("mallory", passkey="wrong-guess")
        self.assertEqual(answer["code"], "bad-passkey")
        self.assertNotIn("not for strangers", str(web.frames))
        self.assertNotIn("mallory", desk.users)

    async def test_text_and_binary_messages_are_what_they_say(self):
        """A control frame in a binary message (or data in a text one) is bad-frame, never a crash."""
        web = await self.web_user()
        await web.login("phone")
        web.frames.clear()
        web.sendMessage(b'{"type":"who"}', isBinary=True)
        web.sendMessage(b"\x01\x00\x00\x00\x01abc", isBinary=False)
        await turns(lambda: len(web.frames) >= 2)
        self.assertEqual([f["code"] for f in web.frames], ["bad-frame", "bad-frame"])


class SamePortTests(unittest.TestCase):
    """The installed ``twistd tcpchat``: TCP clients and WebSockets on one TLS port."""

    timeout = 60

    async def test_a_websocket_over_the_servers_tls_port_meets_a_tcp_client(self):
        from twisted.internet import ssl

        from .procs import TWISTD, RawClient, ServerProcess

        if not os.path.exists(TWISTD):
            raise unittest.SkipTest("twistd is not installed next to this Python")
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        server = ServerProcess(tmp, tls=True).start()
        self.addCleanup(server.close)
        factory = WebSocketClientFactory(f"wss://127.0.0.1:{server.port}/ws")
        factory.protocol = WebUser
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        factory.opened = defer.Deferred()
        connector = reactor.connectSSL("127.0.0.1", server.port, factory, ssl.CertificateOptions(verify=False))
        self.addCleanup(connector.disconnect)
        web = await factory.opened
        self.assertEqual((await web.login("phone", passkey=server.passkey))["type"], "synced")
        desk = RawClient(server.port, tls=True)
        self.addCleanup(desk.close)
        await defer.Deferred.fromCoroutine(_in_thread(lambda: desk.login("desk", passkey=server.passkey)))
        web.send({"type": "say", "text": "over wss", "cid": "w"})
        frames = await defer.Deferred.fromCoroutine(
            _in_thread(lambda: desk.recv_until(lambda f: f.get("text") == "over wss")))
        self.assertEqual(frames[-1]["name"], "phone")


async def _in_thread(f):
    from twisted.internet import threads

    return await threads.deferToThread(f)


class HostileWebSocketTests(WebSocketCase):
    async def test_a_message_over_the_frame_limit_closes_only_that_websocket(self):
        web = await self.web_user()
        await web.login("phone")
        other = await self.web_user()
        await other.login("other")
        closed = defer.Deferred()
        web.onClose = lambda clean, code, reason: closed.callback(code)
        web.sendMessage(b'{"type":"say","text":"' + b"x" * wire.MAX_FRAME + b'"}')
        self.assertEqual(await closed, 1009)  # "message too big", nothing decoded
        other.send({"type": "say", "text": "still here", "cid": "o"})
        await turns(lambda: any(f["type"] == "ack" for f in other.frames))


class WebConnectionCapTests(WebSocketCase):
    limits = {"max_per_address": 2}

    async def test_web_connections_count_toward_the_per_address_cap_and_a_websocket_counts_once(self):
        """Half-sent HTTP requests hold their slots (the next connection is refused at once, with a reason);
        once they are gone, two WebSocket users fit in a cap of two: an upgraded connection counts once."""
        import socket as socketlib

        from twisted.internet import threads

        def hog():
            socks = []
            for _ in range(2):
                s = socketlib.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
                socks.append(s)
            return socks

        socks = await threads.deferToThread(hog)
        await turns(lambda: sum(self.server.factory.perHost.values()) == 2)

        def third():
            with socketlib.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"\0")
                data = b""
                while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                return wire.decode(data[4:], wire.SERVER_FRAMES)

        refusal = await threads.deferToThread(third)
        self.assertEqual(refusal["code"], "server-busy")
        for s in socks:
            s.close()
        await turns(lambda: not self.server.factory.perHost)
        first = await self.web_user()
        self.assertEqual((await first.login("one"))["type"], "synced")
        second = await self.web_user()
        self.assertEqual((await second.login("two"))["type"], "synced")
        self.assertEqual(self.server.factory.perHost, {"127.0.0.1": 2})


class HostileHttpTests(WebSocketCase):
    async def test_oversized_and_endless_request_headers_are_cut_off_and_hurt_nobody(self):
        """A 64 KiB request line and 2,000 header lines are refused (the connection closes); chat goes on."""
        import socket as socketlib

        from twisted.internet import threads

        def attack(payload):
            with socketlib.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                try:
                    s.sendall(payload)
                except OSError:
                    pass  # already closed on us: that is the point
                data = b""
                while True:
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                return data

        long_line = await threads.deferToThread(attack, b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\n\r\n")
        many = await threads.deferToThread(
            attack, b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(2000)) + b"\r\n")
        for answer in (long_line, many):
            self.assertFalse(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        web = await self.web_user()
        self.assertEqual((await web.login("after"))["type"], "synced")
        self.assertEqual(sum(self.server.factory.perHost.values()), 1)  # nothing of the attack is still counted


def _client_frame(opcode, payload, fin=True, mask=True):
    """One raw WebSocket frame as a client sends it (RFC 6455 5.2), masked unless told otherwise."""
    import struct

    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _has_close(stream):
    """Whether a server's (unmasked) WebSocket frames include a close frame."""
    at = 0
    while at + 2 <= len(stream):
        opcode, n = stream[at] & 0x0F, stream[at + 1] & 0x7F
        at += 2
        if n == 126:
            n, at = int.from_bytes(stream[at:at + 2], "big"), at + 2
        elif n == 127:
            n, at = int.from_bytes(stream[at:at + 8], "big"), at + 8
        if opcode == 0x8 and at + n <= len(stream):
            return True
        at += n
    return False


class HostileWebSocketFrameTests(WebSocketCase):
    """Raw WebSocket frames a browser would never send: each closes only its own connection."""

    async def raw(self, frames):
        """Upgrade a raw socket, send ``frames``, and return what came back until the server closed."""
        import base64
        import socket as socketlib

        from twisted.internet import threads

        def attack():
            with socketlib.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                key = base64.b64encode(os.urandom(16))
                s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += s.recv(4096)
                try:
                    for frame in frames:
                        s.sendall(frame)
                except OSError:
                    pass
                data = answer
                for _ in range(10000):  # bounded: read until the server closes or sends its close frame
                    if _has_close(data[data.index(b"\r\n\r\n") + 4:]):
                        break
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                return data

        return await threads.deferToThread(attack)

    async def test_a_message_fragmented_past_the_frame_limit_is_refused_whole(self):
        """Fragments adding up to more than MAX_FRAME: closed (1009) without the server holding them all."""
        other = await self.web_user()
        await other.login("other")
        piece = b"x" * 65536
        frames = [_client_frame(0x1, b'{"type":"say","text":"' + piece, fin=False)]
        frames += [_client_frame(0x0, piece, fin=False) for _ in range(wire.MAX_FRAME // len(piece) + 2)]
        answer = await self.raw(frames)
        self.assertIn(b"101 Switching Protocols", answer)
        self.assertIn(b"\x03\xf1", answer)  # a close frame with code 1009 (message too big)
        other.send({"type": "say", "text": "unhurt", "cid": "u"})
        await turns(lambda: any(f["type"] == "ack" for f in other.frames))

    async def test_many_tiny_fragments_of_a_good_frame_still_work(self):
        """A say split into one-byte fragments is one message (autobahn joins them, bounded by MAX_FRAME)."""
        text = b'{"type":"who"}'
        frames = [_client_frame(0x1, text[:1], fin=False)]
        frames += [_client_frame(0x0, text[i:i + 1], fin=i == len(text) - 1) for i in range(1, len(text))]
        frames.append(_client_frame(0x8, b"\x03\xe8"))  # then close
        answer = await self.raw(frames)
        self.assertIn(b"not-logged-in", answer)  # decoded and answered like any frame (who needs a login)

    async def test_malformed_frames_close_only_their_connection(self):
        other = await self.web_user()
        await other.login("other")
        for bad in (_client_frame(0x1, b'{"type":"who"}', mask=False),  # clients must mask
                    _client_frame(0x3, b"reserved opcode"),
                    _client_frame(0x9, b"p" * 200),  # a control frame over 125 bytes
                    bytes([0xC1, 0x80]) + os.urandom(4)):  # a reserved bit set
            answer = await self.raw([bad])
            self.assertIn(b"101 Switching Protocols", answer)
            self.assertNotIn(b'"type"', answer)  # nothing but the close
        other.send({"type": "say", "text": "unhurt", "cid": "u"})
        await turns(lambda: any(f["type"] == "ack" for f in other.frames))
        self.assertEqual(sum(self.server.factory.perHost.values()), 1)


class PageTests(WebSocketCase):
    async def test_the_page_is_sent_compressed_to_browsers_that_accept_it(self):
        """The page's files go gzip-compressed (once per file, then from memory) when the browser says it takes
        that; as they are otherwise; with the same security headers either way."""
        import gzip

        from twisted.web.client import Agent, readBody
        from twisted.web.http_headers import Headers

        from tcpchat.server.site import WEB_DIR

        async def get(path, **headers):
            response = await Agent(reactor).request(
                b"GET", f"http://127.0.0.1:{self.port}{path}".encode(),
                Headers({k.replace("_", "-"): [v] for k, v in headers.items()}))
            return response, await readBody(response)

        with open(os.path.join(WEB_DIR, "app.js"), "rb") as f:
            source = f.read()
        for _ in range(2):  # compressed once, then served from memory: the same bytes
            response, body = await get("/app.js", Accept_Encoding="gzip, deflate, br")
            self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
            self.assertEqual(gzip.decompress(body), source)
            self.assertLess(len(body), len(source) / 2)
            self.assertIn(b"script-src 'self'", response.headers.getRawHeaders(b"content-security-policy")[0])
        response, body = await get("/app.js")
        self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(body, source)
        response, body = await get("/", Accept_Encoding="gzip")
        self.assertIn(b"<title>tcpchat</title>", gzip.decompress(body))
        response, body = await get("/setup.py", Accept_Encoding="gzip")
        self.assertEqual(response.code, 404)
