"""The client core against real servers on 127.0.0.1 (trial, real reactor)."""

import ast
import os
import pathlib
import sqlite3
import subprocess
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tcpchat.client import core
from tcpchat.client.core import CONNECTED, FAILED, RECONNECTING, ConnectFailed, LoginRefused

from .clienttools import InProcessServer, make_client, turns
from .procs import TWISTD, kill_twistd, spawn_twistd


class ClientTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.tmp = self.mktemp()
        os.makedirs(self.tmp)
        self.clients = []

    async def server(self, **limits):
        server = InProcessServer(self.tmp, **limits)
        port = await server.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(server.stop()))
        return server, port

    def client(self, port, name, **kw):
        client, recorder = make_client(port, name, **kw)
        self.clients.append(client)
        self.addCleanup(client.stop)
        return client, recorder

    async def logged_in(self, port, *names):
        """Clients logged in one after the other, in order: client, recorder, client, recorder, ..."""
        out = []
        for name in names:
            client, recorder = self.client(port, name)
            await client.start()
            out += [client, recorder]
        return out


class BasicsTests(ClientTestCase):
    async def test_two_clients_chat(self):
        """A message from one client is acknowledged to it and delivered to the other."""
        server, port = await self.server()
        alice, arec = self.client(port, "alice")
        bob, brec = self.client(port, "bob")
        welcome = await alice.start()
        self.assertEqual(welcome["name"], "alice")
        await bob.start()
        cid = alice.send("hello bob 👋")
        await brec.until(lambda: "hello bob 👋" in brec.texts())
        await arec.until(lambda: arec.acks)
        self.assertEqual(arec.acks[0]["cid"], cid)
        self.assertEqual(alice.outbox, {})
        await arec.until(lambda: "bob" in alice.users)
        self.assertEqual(sorted(bob.users), ["alice", "bob"])
        self.assertEqual(
            [(e["id"], e.get("text")) for e in alice.messages() if e["kind"] == "message"],
            [(e["id"], e.get("text")) for e in bob.messages() if e["kind"] == "message"],
        )
        self.assertEqual(alice.state, CONNECTED)

    async def test_wrong_passkey_goes_back_to_the_user(self):
        """A wrong passkey fails start() with the server's sentence and is not retried."""
        server, port = await self.server()
        client, rec = self.client(port, "alice", passkey="wrong")
        with self.assertRaises(LoginRefused) as e:
            await client.start()
        self.assertEqual((e.exception.code, str(e.exception)), ("bad-passkey", "Wrong passkey."))
        self.assertEqual(rec.states[-1], (FAILED, "Wrong passkey."))
        await turns(lambda: not server.factory.connections)
        self.assertFalse(client._service.running)

    async def test_taken_name_goes_back_to_the_user(self):
        """A taken name fails with 'That name is taken.'"""
        server, port = await self.server()
        first, _ = self.client(port, "Alice")
        await first.start()
        second, _ = self.client(port, "alice")
        with self.assertRaises(LoginRefused) as e:
            await second.start()
        self.assertEqual(str(e.exception), "That name is taken.")

    async def test_connection_refused_is_explained(self):
        """Nobody listening: 'Unable to connect to HOST:PORT: connection refused …'."""
        server, port = await self.server()
        await server.port.stopListening()
        server.port = None
        client, rec = self.client(port, "alice")
        with self.assertRaises(ConnectFailed) as e:
            await client.start()
        self.assertTrue(str(e.exception).startswith(f"Unable to connect to 127.0.0.1:{port}: connection refused"))
        self.assertEqual(rec.states[-1][0], FAILED)

    async def test_messages_written_offline_arrive_once_after_reconnect(self):
        """While the connection is down, messages queue; after reconnecting each arrives exactly once."""
        server, port = await self.server()
        alice, arec, bob, brec = await self.logged_in(port, "alice", "bob")
        alice.send("before")
        await brec.until(lambda: "before" in brec.texts())
        server.factory.users["alice"].link.transport.abortConnection()
        await arec.until(lambda: alice.state == RECONNECTING)
        alice.send("offline 1")
        alice.send("offline 2")
        await brec.until(lambda: "offline 2" in brec.texts())
        await arec.until(lambda: not alice.outbox)
        self.assertEqual(brec.texts(), ["before", "offline 1", "offline 2"])
        self.assertTrue(any("reconnecting in" in detail for state, detail in arec.states if state == RECONNECTING))
        self.assertEqual(sorted(alice.events), sorted(bob.events))

    async def test_ack_lost_in_a_drop_is_not_sent_twice(self):
        """A message stored just before the connection dropped is not duplicated by the resend."""
        server, port = await self.server()
        alice, arec, bob, brec = await self.logged_in(port, "alice", "bob")
        proto = server.factory.users["alice"].link  # the TCP transport under her session
        # stop the server's writes to alice from reaching her, so the ack is lost
        proto.transport.write = lambda data: None
        proto.transport.writeSequence = lambda data: None
        alice.send("exactly once")
        await brec.until(lambda: "exactly once" in brec.texts())
        self.assertEqual(len(alice.outbox), 1)
        proto.transport.abortConnection()
        await arec.until(lambda: not alice.outbox and alice.state == CONNECTED)
        bob.send("after")
        await brec.until(lambda: len(bob.outbox) == 0)
        await arec.until(lambda: "after" in arec.texts())
        self.assertEqual(brec.texts().count("exactly once"), 1)
        mine = [e for e in alice.messages() if e.get("text") == "exactly once"]
        self.assertEqual(len(mine), 1)


class RelaySide(protocol.Protocol):
    """One side of a TCP relay; once ``dead`` it swallows everything and never closes."""

    def __init__(self, relay):
        self.relay = relay
        self.peer = None
        self.buffer = []
        self.dead = False
        relay.sides.append(self)

    def dataReceived(self, data):
        if self.dead:
            return
        if self.peer is not None:
            self.peer.transport.write(data)
        else:
            self.buffer.append(data)

    def connectionLost(self, reason):
        if not self.dead and self.peer is not None:
            self.peer.transport.loseConnection()


class FreezingRelay(protocol.Factory):
    """Forwards 127.0.0.1 connections to the server; freeze() makes the open ones go silent (no FIN, no RST)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.sides = []

    def buildProtocol(self, addr):
        from twisted.internet.endpoints import TCP4ClientEndpoint

        front = RelaySide(self)

        def connected(back):
            back.peer, front.peer = front, back
            for data in front.buffer:
                back.transport.write(data)
            front.buffer = []

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.target_port)
        endpoint.connect(protocol.Factory.forProtocol(lambda: RelaySide(self))).addCallback(connected)
        return front

    def freeze(self):
        for side in self.sides:
            side.dead = True

    def close(self):
        for side in self.sides:
            if side.transport is not None:
                side.transport.abortConnection()


class NetworkTests(ClientTestCase):
    async def test_silent_drop_is_noticed_and_recovered(self):
        """When the network stops forwarding without a FIN, the client notices within the ping timeout and recovers."""
        server, port = await self.server()
        relay = FreezingRelay(port)
        listening = reactor.listenTCP(0, relay, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(relay.close)
        via = listening.getHost().port
        alice, arec = self.client(via, "alice", ping_interval=0.5, ping_timeout=0.5)
        bob, brec = self.client(port, "bob")
        await alice.start()
        await bob.start()
        relay.freeze()
        frozen_at = reactor.seconds()
        bob.send("while you were away")
        await arec.until(lambda: alice.state == RECONNECTING, timeout=10)
        noticed = reactor.seconds() - frozen_at
        self.assertLess(noticed, 3.0)  # ping interval + ping timeout + checking granularity
        # the server lets the reconnect take over the stale session rather than refuse the name
        await arec.until(lambda: alice.state == CONNECTED, timeout=10)
        self.assertIn("while you were away", arec.texts())
        self.assertNotIn("name-taken", [code for code, _ in arec.errors])
        alice.send("back")
        await brec.until(lambda: "back" in brec.texts())


class RestartTests(ClientTestCase):
    async def test_server_killed_and_restarted_while_sending(self):
        """kill -9 and restart of twistd while one client sends: both lists equal the server's history."""
        if not os.path.exists(TWISTD):
            raise unittest.SkipTest("twistd is not installed next to this Python")
        proc, port = await spawn_twistd(reactor, self.tmp)
        self.addCleanup(kill_twistd, proc)
        alice, arec = self.client(port, "alice", tls=False)
        bob, brec = self.client(port, "bob", tls=False)
        await alice.start()
        await bob.start()
        for i in range(20):
            alice.send(f"before {i}")
        await brec.until(lambda: len(brec.texts()) == 20)
        proc.transport.signalProcess("KILL")
        await proc.ended
        await arec.until(lambda: alice.state == RECONNECTING)
        for i in range(20):
            alice.send(f"offline {i}")  # the user keeps typing while the server is down
        proc, again = await spawn_twistd(reactor, self.tmp, port=port)
        self.addCleanup(kill_twistd, proc)
        self.assertEqual(again, port)
        for i in range(10):
            alice.send(f"after {i}")
        await brec.until(lambda: "after 9" in brec.texts(), timeout=60)
        await arec.until(lambda: not alice.outbox)
        await brec.until(lambda: bob.lastEventId >= max(alice.events))
        await alice.stop()
        await bob.stop()
        proc.transport.signalProcess("TERM")
        self.assertEqual(await proc.ended, 0)
        db = sqlite3.connect(os.path.join(self.tmp, "tcpchat.sqlite3"))
        history = [(i, k, n, t) for i, k, n, t in db.execute("SELECT id, kind, name, text FROM events ORDER BY id")]
        db.close()
        server_messages = [(i, t) for i, k, n, t in history if k == "message"]
        expected = [f"before {i}" for i in range(20)] + [f"offline {i}" for i in range(20)] + [f"after {i}" for i in range(10)]
        self.assertEqual([t for _, t in server_messages], expected)
        for client in (alice, bob):
            seen = [(e["id"], e.get("text")) for e in client.messages() if e["kind"] == "message"]
            self.assertEqual(seen, server_messages)
        # everything each client saw is in the server's history, with no gaps after it joined
        for client in (alice, bob):
            ids = sorted(client.events)
            self.assertEqual(ids, [i for i, *_ in history if i >= ids[0] and i <= ids[-1]])


class LayeringTests(unittest.TestCase):
    def test_client_core_imports_no_ui_toolkit(self):
        """tcpchat.client imports neither tkinter nor any terminal library."""
        banned = {"tkinter", "_tkinter", "curses", "_curses", "readline", "prompt_toolkit", "urwid"}
        for path in pathlib.Path(core.__file__).parent.glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    self.assertNotIn(name.split(".")[0], banned, f"{path.name} imports {name}")
        out = subprocess.run(
            [sys.executable, "-c", "import sys, tcpchat.client.core; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (banned,)],
            capture_output=True, text=True, check=True,
        )
        self.assertEqual(out.stdout.strip(), "[]")


class ConversationTests(ClientTestCase):
    async def test_rooms_direct_messages_seen_and_typing(self):
        """The core keeps each conversation apart, with read markers and typing that expires."""
        server, port = await self.server()
        alice, arec, bob, brec, carol, crec = await self.logged_in(port, "alice", "bob", "carol")
        self.assertEqual(await alice.join("#Lab"), "Lab")
        await bob.join("lab")
        self.assertEqual(sorted(alice.rooms), ["Lab", "general"])
        alice.send("in the lab", "#Lab")
        alice.send("just for you", "@bob")
        await brec.until(lambda: "just for you" in brec.texts())
        self.assertEqual([e["text"] for e in bob.messages("#lab") if e["kind"] == "message"], ["in the lab"])
        self.assertEqual([e["text"] for e in bob.messages("@alice") if e["kind"] == "message"], ["just for you"])
        self.assertEqual(bob.unread, {"#Lab": 1, "@alice": 1})
        self.assertEqual([e["text"] for e in alice.messages("@BOB") if e["kind"] == "message"], ["just for you"])
        alice.send("everyone", None)
        await crec.until(lambda: "everyone" in crec.texts())
        self.assertNotIn("just for you", crec.texts())
        self.assertNotIn("in the lab", crec.texts())
        # read markers: bob has read the direct conversation
        bob.markRead("@alice")
        self.assertNotIn("@alice", bob.unread)
        mine = [e for e in alice.messages("@bob") if e.get("text") == "just for you"][0]
        await turns(lambda: alice.seenBy("@bob", mine) == ["bob"])
        # typing shows, and disappears by itself
        self.patch(core, "TYPING_SHOWN", 0.05)
        bob.typingNow("#lab")
        await turns(lambda: "bob" in alice.typing.get("#Lab", {}))
        await turns(lambda: not alice.typing.get("#Lab"))
        # search finds only what each may read
        found = await carol.search("just")
        self.assertEqual(found, [])
        found = await bob.search("just")
        self.assertEqual([e["text"] for e in found], ["just for you"])

    async def test_a_direct_message_written_offline_is_sent_once_to_the_right_person(self):
        server, port = await self.server()
        bob, brec, alice, arec = await self.logged_in(port, "bob", "alice")
        alice.proto.transport.abortConnection()
        await turns(lambda: alice.state == RECONNECTING)
        alice.send("sent while offline", "@bob")
        await brec.until(lambda: "sent while offline" in brec.texts())
        await turns(lambda: not alice.outbox)
        self.assertEqual([e.get("to") for e in bob.messages("@alice") if e["kind"] == "message"], ["bob"])
        self.assertEqual(brec.texts().count("sent while offline"), 1)

    async def test_operator_requests_answer_or_fail_without_dropping_the_connection(self):
        server, port = await self.server()
        server.factory.moderation.admin_passkey = "adminkey"
        alice, arec = self.client(port, "alice")
        await alice.start()
        with self.assertRaises(core.RequestFailed) as e:
            await alice.oper("wrong")
        self.assertEqual(e.exception.code, "bad-passkey")
        self.assertEqual(alice.state, CONNECTED)  # only the request failed, not the login
        await alice.oper("admin-key")
        done = await alice.moderate("announce", text="fire drill at 11")
        self.assertIn("Announced", done["message"])
        await arec.until(lambda: any(e["kind"] == "announce" for e in arec.events))

    async def test_register_protects_the_name_across_reconnects(self):
        """After /register the client logs back in with its password; someone else cannot take the name."""
        server, port = await self.server()
        bob, brec = self.client(port, "bob")
        await bob.start()
        await bob.register("bob's password")
        bob.proto.transport.abortConnection()
        await turns(lambda: bob.state == RECONNECTING)
        await turns(lambda: bob.state == CONNECTED)  # the reconnect carried the password
        await bob.stop()
        impostor, irec = self.client(port, "bob")
        with self.assertRaises(LoginRefused) as e:
            await impostor.start()
        self.assertEqual(e.exception.code, "name-protected")
        owner, orec = self.client(port, "Bob", password="bob's password")  # names compare without case
        welcome = await owner.start()
        self.assertEqual(welcome["name"], "Bob")


class EditsTests(ClientTestCase):
    async def test_edit_reply_and_react_through_the_client_core_and_the_shared_commands(self):
        """What one user edits, answers and reacts to, the other's model holds as it now is; the commands of the
        terminal and desktop clients (/edit, /reply NAME, /react NAME) do the same."""
        from tcpchat.ui.commands import Commands

        server, port = await self.server()
        alice, arec, bob, brec = await self.logged_in(port, "alice", "bob")
        self.assertTrue(alice.edits)
        alice.send("Meeting at 10")
        await brec.until(lambda: "Meeting at 10" in brec.texts())
        await arec.until(lambda: not alice.outbox)  # stored, and so in alice's own view as hers
        first = next(e for e in brec.events if e.get("text") == "Meeting at 10")

        class View:
            current = "#general"
            shown: list = []

            def show(self, line, style="system"):
                self.shown.append((line, style))

        aview, bview = View(), View()
        Commands(alice, aview).run("/edit Meeting at 11")
        await brec.until(lambda: any(c[1]["kind"] == "edit" for c in brec.changes))
        self.assertEqual(bob.model.events[first["id"]]["text"], "Meeting at 11")
        self.assertIn("edited", bob.model.events[first["id"]])

        Commands(bob, bview).run("/reply alice fine by me")
        await arec.until(lambda: "fine by me" in arec.texts())
        answer = next(e for e in arec.events if e.get("text") == "fine by me")
        self.assertEqual(answer["reply"], {"id": first["id"], "name": "alice", "text": "Meeting at 11"})

        Commands(bob, bview).run("/react alice 👍")
        await arec.until(lambda: any(c[1]["kind"] == "react" for c in arec.changes))
        self.assertEqual(alice.model.events[first["id"]]["reactions"], {"👍": ["bob"]})
        await brec.until(lambda: any(c[1]["kind"] == "react" for c in brec.changes))  # bob sees his own too
        Commands(bob, bview).run("/react alice 👍")  # again: taken back
        await arec.until(lambda: len([c for c in arec.changes if c[1]["kind"] == "react"]) == 2)
        self.assertNotIn("reactions", alice.model.events[first["id"]])
        Commands(bob, bview).run("/react alice 🤡")
        self.assertIn("Usage: /react", bview.shown[-1][0])
        from tcpchat.ui import text

        line = text.describe(alice.model.events[first["id"]], "bob")[1]
        self.assertEqual(line, "alice: Meeting at 11 (edited)")
        self.assertEqual(text.describe(answer, "alice")[1], "bob: ↪ alice: Meeting at 11 — fine by me")
