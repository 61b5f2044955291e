"""The slash commands both user interfaces share, against a real server (trial, real reactor)."""

import os

from twisted.internet import defer
from twisted.trial import unittest

from tcpchat.client.core import LOBBY
from tcpchat.ui.commands import Commands, help_text

from .clienttools import InProcessServer, make_client, turns


class FakeView:
    """What a UI provides to the commands: here it only records."""

    def __init__(self):
        self.lines = []
        self.current = LOBBY
        self.shared = []
        self.quitted = False

    def show(self, line, style="system"):
        self.lines.append((style, line))

    def switch(self, conv):
        self.current = conv

    def share(self, path):
        self.shared.append(path)

    def get(self, rest):
        self.lines.append(("get", rest))

    def quit(self):
        self.quitted = True

    def text(self):
        return "\n".join(line for _, line in self.lines)


class CommandTests(unittest.TestCase):
    timeout = 60

    async def setUp(self):
        self.tmp = self.mktemp()
        os.makedirs(self.tmp)
        self.server = InProcessServer(self.tmp)
        self.server.factory.moderation.admin_passkey = "adminkey"
        port = await self.server.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.server.stop()))
        self.port = port
        self.client, self.rec = self.connect("teacher")
        await self.client.start()
        self.view = FakeView()
        self.commands = Commands(self.client, self.view)

    def connect(self, name, **kw):
        client, rec = make_client(self.port, name, **kw)
        self.addCleanup(client.stop)
        return client, rec

    async def said(self, text):
        """Wait until the view shows a line containing ``text``."""
        await turns(lambda: text in self.view.text())

    async def test_help_lists_every_command(self):
        self.commands.run("/help")
        self.assertIn(help_text(), self.view.text())
        for word in ("/join", "/msg", "/search", "/kick", "/ban", "/passkey", "/register", "/quit"):
            self.assertIn(word, self.view.text())
        self.commands.run("/frobnicate")
        self.assertEqual(self.view.lines[-1], ("error", "Unknown command /frobnicate; /help lists them."))

    async def test_usage_is_explained(self):
        for entry, usage in (("/join", "/join ROOM"), ("/msg bob", "/msg NAME TEXT"), ("/kick", "/kick NAME"),
                             ("/search", "/search WORDS"), ("/register short", "at least 8 characters")):
            self.commands.run(entry)
            self.assertIn(usage, self.view.lines[-1][1])
        self.commands.run("/leave general")
        self.assertEqual(self.view.lines[-1], ("error", "Everyone stays in the default room."))
        self.commands.run("/join bad name!")
        self.assertIn("room name is not allowed", self.view.lines[-1][1])

    async def test_conversation_commands(self):
        bob, brec = self.connect("bob")
        await bob.start()
        self.commands.run("/join lab")
        await turns(lambda: self.view.current == "#lab")
        self.commands.run("/msg bob see you at 3")
        self.assertEqual(self.view.current, "@bob")
        await brec.until(lambda: "see you at 3" in brec.texts())
        self.commands.run("/query bob")
        self.commands.run("/switch #nowhere")
        self.assertIn("You are not in #nowhere", self.view.lines[-1][1])
        self.commands.run("/switch #lab")
        self.assertEqual(self.view.current, "#lab")
        self.commands.run("/away marking")
        await turns(lambda: (bob.presence.get("teacher") or {}).get("status") == "marking")
        self.commands.run("/back")
        await turns(lambda: not (bob.presence.get("teacher") or {}).get("away"))
        self.commands.run("/rooms")
        await self.said("#lab  (1 member)  — joined")
        self.commands.run("/search see you")
        await self.said("Found 1 message for “see you”")
        self.view.current = "@bob"
        self.commands.run("/seen")
        self.assertEqual(self.view.lines[-1][1], "Nobody has seen your last message yet.")
        bob.markRead("@teacher")
        await turns(lambda: self.client.seenBy("@bob", self.client.messages("@bob")[-1]) == ["bob"])
        self.commands.run("/seen")
        self.assertEqual(self.view.lines[-1][1], "✓ Seen by bob")
        self.commands.run("/delete")
        await turns(lambda: not [e for e in bob.messages("@teacher") if e.get("text") == "see you at 3"])
        self.commands.run("/leave")  # the room on screen is not a room: nothing to leave
        self.assertIn("/leave ROOM", self.view.lines[-1][1])
        self.view.current = "#lab"
        self.commands.run("/leave")
        self.assertEqual(self.view.current, LOBBY)
        self.commands.run("/quit")
        self.assertTrue(self.view.quitted)

    async def test_operator_commands(self):
        eve, erec = self.connect("eve")
        await eve.start()
        self.commands.run("/kick eve")
        self.assertIn("use /oper KEY first", self.view.lines[-1][1])
        self.commands.run("/oper wrong")
        await self.said("Wrong admin passkey.")
        self.commands.run("/oper admin-key")
        await self.said("You are an operator now")
        self.commands.run("/mute eve 5 calm down")
        await self.said("eve is muted for 5 min.")
        self.commands.run("/bans")
        await self.said("mute eve: 5 min left (calm down)")
        self.commands.run("/unmute eve")
        await self.said("eve may speak again.")
        self.commands.run("/announce fire drill at 11")
        await erec.until(lambda: any(e["kind"] == "announce" for e in erec.events))
        self.commands.run("/passkey")
        await self.said("New passkey: ")
        new = [line for _, line in self.view.lines if line.startswith("New passkey: ")][0].split()[2]
        late, lrec = self.connect("late", passkey=new)
        await late.start()
        self.commands.run("/ban eve 10 spam")
        await self.said("Banned name eve for 10 min.")
        await turns(lambda: eve.state == "disconnected")  # kicked out, and not coming back by itself
        self.commands.run("/unban eve")
        await self.said("Lifted the ban on eve.")
        self.commands.run("/kick nobody")
        await self.said("Nobody of that name is online.")

    async def test_register_protects_the_name(self):
        self.commands.run("/register a long password")
        await self.said("Your name teacher is protected")
        self.assertEqual(self.client.password, "a long password")
