"""The HTTPS fallback transport (for browsers whose WebSocket fails): the same frames, over polls and POSTs."""

import json
import socket as socketlib

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tcpchat import wire
from tcpchat.server import fallback
from tcpchat.server.session import int32_framed

from .clienttools import ScriptedBrowser, WebServerCase, make_client, turns


class _Body:
    """A request body for Agent (IBodyProducer), all at once."""

    def __init__(self, data):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def stopProducing(self):
        pass

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


async def http(method, url, body=None, headers=None):
    """(status, body bytes) of one request on a fresh connection."""
    agent = Agent(reactor)
    response = await agent.request(method.encode(), url.encode(), Headers(headers or {}),
                                   _Body(body) if body is not None else None)
    return response.code, await readBody(response)


class PollUser(ScriptedBrowser):
    """A browser on the fallback, scripted: one poll always held, frames posted with their stream offset."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}/poll"
        self.frames = []
        self.ack = 0
        self.at = 0
        self.over = False
        self.statuses = []

    async def open(self):
        status, body = await http("POST", self.base)
        self.opened = (status, json.loads(body) if body else None)
        if status != 200:
            return self.opened
        self.sid = self.opened[1]["sid"]
        self.polling = defer.Deferred.fromCoroutine(self._poll())
        return self.opened

    async def _poll(self):
        for _ in range(10000):  # bounded: a test never needs this many
            if self.over:
                return
            status, body = await http("GET", f"{self.base}/{self.sid}?ack={self.ack}")
            self.statuses.append(status)
            if status != 200:
                self.over = True
                return
            self.ack += len(body)
            self.frames.extend(wire.decode(p, wire.SERVER_FRAMES) for p in fallback.split_frames(body))

    async def post(self, *frames, at=None, raw=None):
        body = raw if raw is not None else b"".join(int32_framed(wire.encode(f)) for f in frames)
        status, answer = await http("POST", f"{self.base}/{self.sid}?at={self.at if at is None else at}", body)
        if status == 204 and at is None:
            self.at += len(body)
        return status, answer

    async def send(self, frame):
        await self.post(frame)

    async def close(self):
        if not self.over and hasattr(self, "sid"):
            await http("DELETE", f"{self.base}/{self.sid}")
            await self.polling


class FallbackCase(WebServerCase, unittest.TestCase):
    async def poll_user(self, name=None):
        user = PollUser(self.port)
        await user.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(user.close()))
        if name is not None:
            self.assertEqual((await user.login(name))["type"], "synced")
        return user

    def hub(self):
        return self.server.factory.connections


class FallbackTests(FallbackCase):
    async def test_a_poll_user_and_a_tcp_user_share_one_conversation(self):
        phone = await self.poll_user("phone")
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        await phone.post({"type": "say", "text": "from the phone", "cid": "p1"})
        await rec.until(lambda: "from the phone" in rec.texts())
        for n in range(5):
            desk.send(f"from the desk {n}")
        await turns(lambda: len([t for t in phone.texts() if t.startswith("from the desk")]) == 5)
        self.assertEqual([t for t in phone.texts() if t.startswith("from the desk")],
                         [f"from the desk {n}" for n in range(5)])
        self.assertEqual([f["cid"] for f in phone.frames if f["type"] == "ack"], ["p1"])
        self.assertIn("phone", desk.users)

    async def test_a_post_sent_again_is_handled_once(self):
        """A POST whose answer was lost is sent again with the same offset: the message is stored once."""
        phone = await self.poll_user("phone")
        at = phone.at
        say = {"type": "say", "text": "only once", "cid": "c1"}
        self.assertEqual((await phone.post(say))[0], 204)
        self.assertEqual((await phone.post(say, at=at))[0], 204)  # the retry
        await phone.post({"type": "say", "text": "and then this", "cid": "c2"})
        await turns(lambda: len([f for f in phone.frames if f["type"] == "ack"]) == 2)
        events = await self.server.store.events_after(0, 50)
        self.assertEqual([e["text"] for e in events if e["kind"] == "message"], ["only once", "and then this"])

    async def test_a_poll_answer_lost_on_the_way_is_sent_again(self):
        """The client acknowledges by offset: polling again from an older offset gets the same bytes again."""
        phone = await self.poll_user("phone")
        phone.over = True  # its held poll is its last: what it brings is not acknowledged by a next one
        before = phone.ack
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        desk.send("do not lose me")
        await phone.polling
        # as if that answer had been lost on the way: ask again from where we were
        status, body = await http("GET", f"{phone.base}/{phone.sid}?ack={before}")
        self.assertEqual(status, 200)
        again = [wire.decode(p, wire.SERVER_FRAMES) for p in fallback.split_frames(body)]
        self.assertIn("do not lose me", [f.get("text") for f in again])
        await http("DELETE", f"{phone.base}/{phone.sid}")

    async def test_a_wrong_passkey_gets_the_error_and_no_chat_data(self):
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        desk.send("not for strangers")
        phone = await self.poll_user()
        answer = await phone.login("mallory", passkey="wrong-guess")
        self.assertEqual(answer["code"], "bad-passkey")
        self.assertNotIn("not for strangers", str(phone.frames))

    async def test_closing_ends_the_session_and_the_user_leaves(self):
        phone = await self.poll_user("phone")
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        await phone.close()
        await turns(lambda: "phone" not in desk.users)
        self.assertIn(phone.statuses[-1], (404, 410))  # its held poll ends (410), or its next one finds none
        self.assertEqual((await http("GET", f"{phone.base}/{phone.sid}?ack=0"))[0], 404)


class SlowPollerTests(FallbackCase):
    async def test_a_user_who_stops_polling_costs_a_bounded_amount_and_misses_nothing(self):
        """A phone that stops taking what it is sent (asleep, in a tunnel): what the server holds for it stays
        under the send-queue bounds while 1.5 MB is said; when it polls again it catches up on every message."""
        phone = await self.poll_user("phone")
        phone.over = True  # stops after the poll it has out
        desk, rec = make_client(self.port, "desk", tls=False)
        self.addCleanup(desk.stop)
        await desk.start()
        await phone.polling
        (link,) = self.linkOf(phone)
        limits = self.server.factory.limits
        held = []
        for n in range(3000):
            desk.send(f"{n:04d} " + "x" * 500)
            if n % 100 == 0:
                await turns(lambda: True)
                held.append(link.outEnd - link.acked)
        await rec.until(lambda: not desk.outbox, timeout=60)  # all stored
        held.append(link.outEnd - link.acked)
        self.assertLessEqual(max(held), limits.sendq_hard + fallback.HIGH_WATER)
        self.assertFalse(link.session.delivery.live)  # it fell back to catching up from storage
        phone.over = False
        phone.polling = defer.Deferred.fromCoroutine(phone._poll())
        await turns(lambda: "2999 " + "x" * 500 in phone.texts(), limit=4000)
        mine = [t[:4] for t in phone.texts() if t and t[:4].isdigit()]
        self.assertEqual(mine, [f"{n:04d}" for n in range(3000)])  # all, once, in order

    def linkOf(self, user):
        hub = next(s.link.hub for s in self.server.factory.connections if isinstance(s.link, fallback.PollLink))
        return [hub.links[user.sid]]


class HostileFallbackTests(FallbackCase):
    limits = {"max_per_address": 8, "login_timeout": 2.0, "poll_hold": 0.5}

    async def test_bad_requests_get_documented_codes_and_the_chat_goes_on(self):
        phone = await self.poll_user("phone")
        base = f"{phone.base}/{phone.sid}"
        self.assertEqual((await http("GET", f"{phone.base}/nosuchsession?ack=0"))[0], 404)
        status, body = await http("GET", f"{base}?ack={phone.ack + 10**6}")
        self.assertEqual((status, json.loads(body)["code"]), (409, "bad-frame"))
        status, body = await http("GET", f"{base}?ack=many")
        self.assertEqual(status, 400)
        status, body = await http("POST", f"{base}?at={phone.at}", b"\x00\x00\x00\x09{}")  # cut off
        self.assertEqual((status, json.loads(body)["code"]), (400, "bad-frame"))
        status, body = await http("POST", f"{base}?at={phone.at + 100}", b"")
        self.assertEqual(status, 409)
        status, _ = await phone.post(raw=int32_framed(b'{"type":"nonsense"}'))
        self.assertEqual(status, 204)
        await turns(lambda: any(f.get("code") == "unknown-type" for f in phone.frames))
        await phone.post({"type": "say", "text": "still fine", "cid": "s"})
        await turns(lambda: any(f["type"] == "ack" for f in phone.frames))

    async def test_a_frame_over_the_limit_closes_only_that_session(self):
        phone = await self.poll_user("phone")
        other = await self.poll_user("other")
        status, body = await phone.post(raw=b"\x00\x10\x00\x00" + b"x" * 16)
        self.assertEqual((status, json.loads(body)["code"]), (413, "frame-too-large"))
        await turns(lambda: phone.over)
        await other.post({"type": "say", "text": "still here", "cid": "o"})
        await turns(lambda: any(f["type"] == "ack" for f in other.frames))

    async def test_an_oversized_body_is_refused_unread(self):
        """A POST that says it is over MAX_BODY is answered 413 before its body is read."""

        def send():
            with socketlib.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"POST /poll/x?at=0 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % (fallback.MAX_BODY + 1))
                return s.recv(200)

        answer = await threads.deferToThread(send)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer)

    async def test_slowly_dripped_headers_are_cut_off_at_the_login_timeout(self):
        """A request whose headers keep trickling in (slowloris) is dropped; it does not hold its slot forever."""
        clock_start = reactor.seconds()

        def drip():
            with socketlib.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\n")
                for _ in range(40):  # bounded: a header line every 0.2 s, for at most 8 s
                    try:
                        s.sendall(b"X-a: b\r\n")
                        if s.recv(1, socketlib.MSG_DONTWAIT) == b"":
                            return True
                    except BlockingIOError:
                        pass
                    except OSError:
                        return True
                    import time

                    time.sleep(0.2)  # the attacker's pace, not synchronisation
                return False

        self.assertTrue(await threads.deferToThread(drip))
        self.assertLess(reactor.seconds() - clock_start, 2.0 + 3)
        await turns(lambda: not self.server.factory.perHost)

    async def test_fallback_sessions_count_toward_the_per_address_cap(self):
        """A fallback user holds two slots (its session and its held poll): two fit in a cap of five, the
        third is told why (as an HTTP 503 with the error frame), and once they are gone there is room again."""
        self.server.factory.limits.max_per_address = 5
        users = [await self.poll_user() for _ in range(2)]
        await turns(lambda: sum(self.server.factory.perHost.values()) == 4)
        refused = PollUser(self.port)
        status, frame = await refused.open()
        self.assertEqual((status, frame["code"]), (503, "server-busy"))
        for user in users:
            await user.close()
        await turns(lambda: not self.server.factory.connections)
        self.assertEqual((await self.poll_user()).opened[0], 200)

    async def test_a_session_nobody_polls_is_dropped(self):
        """A phone that goes to sleep stops polling: its session ends after hold + login timeout."""
        status, body = await http("POST", f"http://127.0.0.1:{self.port}/poll")
        sid = json.loads(body)["sid"]
        await turns(lambda: len(self.server.factory.connections) == 1)
        await turns(lambda: not self.server.factory.connections, limit=2000)
        self.assertEqual((await http("GET", f"http://127.0.0.1:{self.port}/poll/{sid}?ack=0"))[0], 404)
