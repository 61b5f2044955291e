"""The Tk desktop client in a real window on a virtual X display."""

import os
import shutil
import tempfile

import pytest

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tcpchat.client.core import CONNECTED
from tcpchat.ui import text

from .clienttools import InProcessServer, make_client, turns
from .helpers import PASSKEY
from .xvfb import ensure_display, screenshot, xdotool

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def write_docs():
    return bool(os.environ.get("TCPCHAT_WRITE_DOCS"))


class TkTestCase(unittest.TestCase):
    timeout = 120

    async def setUpApp(self, **limits):
        if ensure_display() is None:
            raise unittest.SkipTest("no X display and no Xvfb")
        import tkinter as tk

        from twisted.internet import tksupport

        from tcpchat.ui.tk import App, Settings

        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.server = InProcessServer(self.tmp, **limits)
        self.port = await self.server.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.server.stop()))
        self.root = tk.Tk()
        self.settings = Settings(os.path.join(self.tmp, "client.json"), os.path.join(self.tmp, "known.json"))
        self.settings.values.update(host="127.0.0.1", port=self.port)
        self.app = App(self.root, reactor, self.settings)
        tksupport.install(self.root)

        def close():
            self.app.closing = True  # what still arrives is ignored, as when the user closes the window
            d = self.app.client.stop() if self.app.client is not None else defer.succeed(None)

            def destroy(_):
                tksupport.uninstall()
                self.root.destroy()

            return d.addBoth(destroy)

        self.addCleanup(close)
        await turns(lambda: self.root.winfo_viewable())
        return self.app

    def window(self):
        return str(int(self.root.wm_frame(), 16))

    async def written(self, lines):
        """A library client "writer" that has said ``lines`` (all stored)."""
        writer, wrec = make_client(self.port, "writer")
        self.addCleanup(writer.stop)
        await writer.start()
        for line in lines:
            writer.send(line)
        await turns(lambda: not writer.outbox, limit=20000)
        return writer, wrec

    async def keys(self, *keys):
        """Press keys (XTEST) in the message box; without xdotool, generate the events."""
        box = self.app.chat.input
        box.focus_force()
        await turns(lambda: self.root.focus_get() is box)
        if shutil.which("xdotool"):
            xdotool("key", *keys)
        else:
            for key in keys:
                box.event_generate("<" + key.replace("ctrl+", "Control-") + ">")

    async def type_into(self, widget, text_):
        """Type with real (XTEST) key events into a widget."""
        widget.focus_force()
        await turns(lambda: self.root.focus_get() is widget)
        xdotool("type", "--delay", "5", text_)
        await turns(lambda: text_ in widget.get() if hasattr(widget, "get") and widget.__class__.__name__ != "Text" else True)

    async def submit_form(self, name):
        """Fill the connection form without typing and connect."""
        self.app.connect.name.set(name)
        self.app.connect.passkey.set(PASSKEY)
        self.app.connect.button.invoke()
        await turns(lambda: self.app.client is not None and self.app.client.state == CONNECTED)

    async def login(self, name="alice"):
        form = self.app.connect
        if shutil.which("xdotool"):
            await self.type_into(form.entries["name"], name)
            await self.type_into(form.entries["passkey"], PASSKEY)
            xdotool("key", "Return")
        else:
            form.name.set(name)
            form.passkey.set(PASSKEY)
            form.button.invoke()
        await turns(lambda: self.app.client is not None and self.app.client.state == CONNECTED)


class ConversationTests(TkTestCase):
    async def test_connect_receive_and_reply(self):
        """Fill the form, connect, receive a message from a library client, answer; the conversation shows both."""
        app = await self.setUpApp()
        self.assertEqual(app.connect.entries["passkey"].cget("show"), "•")
        await self.login("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        bob.send("Hello from the library client 👋")
        await turns(lambda: "bob: Hello from the library client 👋" in app.chat.conversation())
        if shutil.which("xdotool"):
            app.chat.input.focus_force()
            await turns(lambda: self.root.focus_get() is app.chat.input)
            xdotool("type", "--delay", "5", "Hi bob, got it")
            await turns(lambda: "Hi bob, got it" in app.chat.input.get("1.0", "end"))
            xdotool("key", "Return")
        else:
            app.chat.input.insert("1.0", "Hi bob, got it")
            app.chat.send()
        await brec.until(lambda: "Hi bob, got it" in brec.texts())
        await turns(lambda: "alice: Hi bob, got it" in app.chat.conversation())
        self.assertEqual(app.chat.input.get("1.0", "end-1c"), "")
        self.assertIn("bob joined", app.chat.conversation())
        self.assertEqual(sorted(app.chat.online.get(0, "end")), ["● alice (you)", "● bob"])
        self.assertTrue(app.chat.status.cget("text").startswith("● Connected to test server as alice"))
        self.assertEqual(self.settings.values["name"], "alice")  # remembered for next time

    async def test_wrong_passkey_keeps_the_form(self):
        """A wrong passkey shows 'Wrong passkey.' and keeps what was typed."""
        app = await self.setUpApp()
        app.connect.name.set("alice")
        app.connect.passkey.set("nope")
        app.connect.button.invoke()
        await turns(lambda: app.connect.message.cget("text") == "Wrong passkey.")
        self.assertEqual(app.connect.name.get(), "alice")
        self.assertEqual(str(app.connect.button.cget("state")), "normal")
        self.assertIsNone(app.chat)

    async def test_changed_certificate_warns_and_can_be_trusted(self):
        """A server whose certificate changed is refused with a warning; the user may then trust it."""
        app = await self.setUpApp()
        from tcpchat.client.core import KnownServers

        KnownServers(self.settings.known_servers).pin("127.0.0.1", self.port, "SHA256:00:11:22")
        app.connect.name.set("alice")
        app.connect.passkey.set(PASSKEY)
        app.connect.button.invoke()
        await turns(lambda: "different certificate" in app.connect.message.cget("text"))
        self.assertIn("SHA256:00:11:22", app.connect.message.cget("text"))
        await turns(lambda: bool(app.connect.trust.grid_info()))  # the offer to trust it appears with the warning
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-certificate-changed.png"), self.window())
        app.connect.trust.invoke()
        await turns(lambda: app.client is not None and app.client.state == CONNECTED)
        self.assertEqual(KnownServers(self.settings.known_servers).get("127.0.0.1", self.port), self.server.fingerprint)

    async def test_unread_marker_when_scrolled_up(self):
        """Scrolled up to read, new messages do not yank the view; a marker counts them."""
        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        for i in range(60):
            bob.send(f"line {i}")
        await turns(lambda: "bob: line 59" in app.chat.conversation())
        await turns(lambda: app.chat.atEnd())
        app.chat.log.yview_moveto(0.0)
        self.root.update()
        bob.send("you scrolled up")
        await turns(lambda: "you scrolled up" in app.chat.conversation())
        self.assertEqual(app.chat.unread, 1)
        self.assertEqual(app.chat.newBar.cget("text"), "↓ 1 new message")
        self.assertFalse(app.chat.atEnd())
        app.chat.newBar.invoke()
        self.root.update()
        self.assertTrue(app.chat.atEnd())
        self.assertEqual(app.chat.unread, 0)


class ResponsivenessTests(TkTestCase):
    async def test_ui_stays_responsive_during_a_200_mib_upload(self):
        """While 200 MiB upload, Tk timer callbacks keep running on time and progress is shown."""
        app = await self.setUpApp(max_file_size=300 * 1024 * 1024, max_storage=1024**3)
        await self.submit_form("alice")
        path = os.path.join(self.tmp, "big.bin")
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(200):
                f.write(block)
        gaps, last = [], [reactor.seconds()]

        def tick():
            now = reactor.seconds()
            gaps.append(now - last[0])
            last[0] = now
            if not done[0]:
                self.root.after(20, tick)

        done = [False]
        self.root.after(20, tick)
        transfer = app.files.share(path)
        await transfer.finished
        done[0] = True
        self.assertEqual(transfer.state, "finished")
        row = app.chat.rows[("upload", transfer.tid)]
        self.assertEqual(int(row.bar.cget("value")), 1000)
        self.assertGreater(len(gaps), 5)
        gaps.sort()
        # a 20 ms timer: allow scheduling noise, but never a frozen window
        self.assertLess(gaps[-1], 0.25, f"longest gap {gaps[-1]:.3f}s")
        self.assertLess(gaps[len(gaps) * 95 // 100], 0.1)


class ScreenshotTests(TkTestCase):
    async def test_busy_chat_screens(self):
        """The connection screen and a busy chat screen render; with TCPCHAT_WRITE_DOCS=1 they are saved to docs/."""
        app = await self.setUpApp()
        write = bool(os.environ.get("TCPCHAT_WRITE_DOCS"))
        app.connect.name.set("Ms. Rivera")
        app.connect.passkey.set(PASSKEY)
        self.root.update()
        if write:
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-connect.png"), self.window()))
        # history before we join
        others = []
        for name, lines in (("Sam", ["Morning all!", "Is the projector working in room 4?"]),
                            ("Priya", ["Yes, I fixed the cable yesterday 👍"])):
            client, rec = make_client(self.port, name)
            self.addCleanup(client.stop)
            await client.start()
            for line in lines:
                client.send(line)
            others.append((client, rec))
        await others[-1][1].until(lambda: not others[-1][0].outbox)
        app.connect.button.invoke()
        await turns(lambda: app.client is not None and app.client.state == CONNECTED)
        sam, priya = others[0][0], others[1][0]
        sam.send("@Ms. Rivera the slides for Thursday are below")
        slides = os.path.join(self.tmp, "Thursday slides.pdf")
        with open(slides, "wb") as f:
            f.write(os.urandom(3 * 1024 * 1024))
        up = sam.share(slides)
        await up.finished
        await turns(lambda: "Thursday slides.pdf" in app.chat.conversation())
        app.client.send("Thanks Sam, downloading now")
        big = os.path.join(self.tmp, "field recordings.zip")
        with open(big, "wb") as f:
            f.write(os.urandom(40 * 1024 * 1024))
        slides_info = [e["file"] for e in app.client.messages() if e["kind"] == "file"][0]
        downloads = os.path.join(tempfile.mkdtemp(), "Downloads") if write else self.tmp
        os.makedirs(downloads, exist_ok=True)
        saved = app.files.download(slides_info, os.path.join(downloads, "Thursday slides.pdf"))
        await saved.finished
        upload = app.files.share(big)
        await turns(lambda: upload.state == "active" and upload.done > upload.size * 0.3)
        conversation = app.chat.conversation()
        for expected in ("Sam: Morning all!", "Priya: Yes, I fixed the cable yesterday 👍", "— end of history —",
                         "Ms. Rivera joined", "Sam shared", "Ms. Rivera: Thanks Sam"):
            self.assertIn(expected, conversation)
        self.assertEqual(len(app.chat.online.get(0, "end")), 3)
        if write:
            self.root.update()
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-chat.png"), self.window()))
        await upload.finished
        priya.send("see you at 3")


class RoomsTests(TkTestCase):
    async def test_rooms_direct_messages_typing_seen_and_search(self):
        """Rooms and direct conversations on the left, typing and "seen by" under the conversation, search."""
        app = await self.setUpApp()
        await self.submit_form("Ms. Rivera")
        people = {}
        for name in ("Sam", "Priya", "Jo"):
            client, rec = make_client(self.port, name)
            self.addCleanup(client.stop)
            await client.start()
            people[name] = (client, rec)
        sam, priya, jo = people["Sam"][0], people["Priya"][0], people["Jo"][0]
        for client in (sam, priya):
            await client.join("science-dept")
        sam.send("Lab results are in the shared folder", "#science-dept")
        priya.send("Thanks! I'll grade them tonight", "#science-dept")
        # join the room by typing its name, as a user would
        if shutil.which("xdotool"):
            await self.type_into(app.chat.roomEntry, "science-dept")
            xdotool("key", "Return")
        else:
            app.chat.roomEntry.insert(0, "science-dept")
            app.chat._joinTyped()
        await turns(lambda: app.chat.current == "#science-dept")
        await turns(lambda: "Sam: Lab results are in the shared folder" in app.chat.conversation())
        self.assertIn("# science-dept", app.chat.header.cget("text"))
        # the people list shows the room's members (Jo is online but not in the room)
        await turns(lambda: app.chat.onlineLabel.cget("text") == "In #science-dept (3)")
        self.assertEqual(app.chat.onlineNames, ["Ms. Rivera", "Priya", "Sam"])
        self.assertEqual(list(app.chat.convList.get(0, "end"))[:2], ["#  general", "#  science-dept"])
        app.client.send("Great, the microscopes are booked for Friday", "#science-dept")
        await turns(lambda: "Ms. Rivera: Great, the microscopes" in app.chat.conversation())
        # Sam reads it: "seen by" appears under the conversation
        await people["Sam"][1].until(lambda: "Great, the microscopes are booked for Friday" in people["Sam"][1].texts())
        sam.markRead("#science-dept")
        await turns(lambda: app.chat.seenLabel.cget("text") == "✓ Seen by Sam")
        priya.typingNow("#science-dept")
        await turns(lambda: app.chat.typingLabel.cget("text") == "Priya is typing…")
        # a direct message from Jo arrives while the room is on screen: listed with its unread count
        jo.setPresence(status="covering room 12")
        jo.send("Could you cover my 2 pm class?", "@Ms. Rivera")
        await turns(lambda: any(line.startswith("@  Jo") and "● 1" in line for line in app.chat.convList.get(0, "end")))
        self.assertNotIn("cover my 2 pm", app.chat.conversation())
        self.assertNotIn("cover my 2 pm", str(people["Sam"][1].events))  # nobody else has it
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-rooms.png"), self.window())
        # open the direct conversation from the list
        index = [i for i, c in enumerate(app.chat.convs) if c == "@Jo"][0]
        app.chat.convList.selection_clear(0, "end")
        app.chat.convList.selection_set(index)
        app.chat.convList.event_generate("<<ListboxSelect>>")
        await turns(lambda: app.chat.current == "@Jo")
        self.assertIn("Jo: Could you cover my 2 pm class?", app.chat.conversation())
        self.assertIn("@ Jo", app.chat.header.cget("text"))
        self.assertIn("covering room 12", app.chat.header.cget("text"))
        app.chat.input.insert("1.0", "Sure, I'll take it")
        app.chat.send()
        await people["Jo"][1].until(lambda: "Sure, I'll take it" in people["Jo"][1].texts())
        jo.markRead("@Ms. Rivera")
        await turns(lambda: app.chat.seenLabel.cget("text") == "✓ Seen by Jo")
        jo.typingNow("@Ms. Rivera")
        await turns(lambda: app.chat.typingLabel.cget("text") == "Jo is typing…")
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-direct.png"), self.window())
        # search from the box on the right: results from the room and the direct conversation
        app.chat.search.delete(0, "end")
        app.chat.search.insert(0, "class")
        app.chat._search()
        await turns(lambda: "Found 1 message for “class”" in app.chat.conversation())
        self.assertIn("@Jo  Jo → Ms. Rivera: Could you cover my 2 pm class?", app.chat.conversation())
        # slash commands work in the window too
        app.chat.input.insert("1.0", "/away marking papers")
        app.chat.send()
        await turns(lambda: (sam.presence.get("Ms. Rivera") or {}).get("away"))
        await turns(lambda: "○ Ms. Rivera (you) — marking papers" in app.chat.online.get(0, "end"))
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-search.png"), self.window())

    async def test_kicked_user_is_told_and_stays_out(self):
        """Removed by the operator: the window says why and does not reconnect by itself."""
        app = await self.setUpApp()
        await self.submit_form("eve")
        self.server.factory.users["eve"].kick("kicked", "You were removed by the operator: shouting.")
        await turns(lambda: "You were removed by the operator: shouting." in app.chat.conversation())
        await turns(lambda: app.client.state == "disconnected")
        self.assertIn("shouting", app.chat.status.cget("text"))
        self.assertTrue(app.client.stopped)
        self.assertEqual(app.chat.conversation().count("shouting"), 1)  # said once
        self.assertEqual(app.chat.online.get(0, "end"), ())  # not a window that looks connected
        self.assertEqual(str(app.chat.input.cget("state")), "disabled")
        app.chat.backButton.invoke()
        await turns(lambda: app.connect.winfo_ismapped())
        self.assertIn("shouting", app.connect.message.cget("text"))


class JoiningTests(TkTestCase):
    async def test_changed_passkey_returns_to_the_form_and_the_queued_message_goes_out(self):
        """After a rotation the reconnect is refused: the form says so, keeps server/port/name; typing the new
        passkey brings the conversation back and sends what was written meanwhile."""
        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        self.server.factory.verifier.rotate("the-new-one")
        app.client.proto.transport.abortConnection()  # e.g. the server restarted
        await turns(lambda: app.client.state != CONNECTED)
        app.chat.input.insert("1.0", "written while out")
        app.chat.send()
        self.assertIn("written while out", [f["text"] for f in app.client.outbox.values()])
        await turns(lambda: app.connect.winfo_ismapped())
        self.assertEqual(app.connect.message.cget("text"), text.PASSKEY_CHANGED)
        self.assertEqual((app.connect.host.get(), app.connect.port.get(), app.connect.name.get()),
                         ("127.0.0.1", str(self.port), "alice"))
        self.assertEqual(app.connect.passkey.get(), "")
        await turns(lambda: self.root.focus_get() is app.connect.entries["passkey"])
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-passkey-changed.png"), self.window())
        if shutil.which("xdotool"):
            await self.type_into(app.connect.entries["passkey"], "the-new-one")
            xdotool("key", "Return")
        else:
            app.connect.passkey.set("the-new-one")
            app.connect.button.invoke()
        await brec.until(lambda: "written while out" in brec.texts())
        await turns(lambda: app.chat.winfo_ismapped() and "alice: written while out" in app.chat.conversation())
        self.assertEqual(app.client.outbox, {})
        self.assertFalse(app.connect.winfo_ismapped())

    async def test_join_link_fills_the_form_pins_and_refuses_another_certificate(self):
        """A link pasted into the address field (or given on the command line) fills the form; its certificate is
        checked: the right server is pinned on first contact, a server with another certificate is refused."""
        from tcpchat import link
        from tcpchat.client.core import KnownServers
        from tcpchat.ui.tk import parse_args

        app = await self.setUpApp()
        good = link.JoinLink("127.0.0.1", self.port, self.server.fingerprint, PASSKEY).format()
        wrong = link.JoinLink("127.0.0.1", self.port, "SHA256:" + ":".join(["0F"] * 32), PASSKEY).format()

        app.connect.host.set(wrong)  # as if pasted
        self.assertEqual((app.connect.host.get(), app.connect.port.get(), app.connect.passkey.get()),
                         ("127.0.0.1", str(self.port), PASSKEY))
        app.connect.name.set("alice")
        app.connect.button.invoke()
        await turns(lambda: "not the one in the join link" in app.connect.message.cget("text"))
        self.assertIsNone(KnownServers(self.settings.known_servers).get("127.0.0.1", self.port))
        self.assertIsNone(app.chat)

        args = parse_args([good, "--name", "bob"])
        app.prefill(args.joined, name=args.name)
        self.assertEqual(app.connect.name.get(), "bob")
        app.connect.button.invoke()
        await turns(lambda: app.client.state == CONNECTED)
        self.assertEqual(KnownServers(self.settings.known_servers).get("127.0.0.1", self.port), self.server.fingerprint)


def test_desktop_client_options():
    """--host/--port/--name and a link fill the form; anything else is refused (exit status 2), not ignored."""
    from tcpchat.ui.tk import parse_args

    args = parse_args(["--host", "10.0.0.5", "--port", "999", "--name", "zoe"])
    assert (args.host, args.port, args.name, args.joined) == ("10.0.0.5", 999, "zoe", None)
    assert parse_args(["tcpchat://10.1.1.1:77/"]).joined.port == 77
    for bad in (["--hots", "x"], ["--port", "0"], ["not-a-link"], ["a", "b"]):
        with pytest.raises(SystemExit) as raised:
            parse_args(bad)
        assert raised.value.code == 2


class InviteTests(TkTestCase):
    async def test_invite_shows_a_qr_code_of_the_join_link(self):
        """Invite… shows the server's network address with the proved certificate, as a QR code that decodes to
        the link shown; leaving out the passkey redraws both."""
        from tcpchat import link

        from .qrtools import decode

        app = await self.setUpApp()
        # what a real server advertises: its LAN address (and a certificate claim the client does not take)
        self.server.factory.joinLink = f"tcpchat://192.0.2.7:{self.port}/?fp=SHA256-" + "00" * 32
        await self.submit_form("alice")
        app.chat.inviteButton.invoke()
        dialog = app.inviteDialog
        await turns(lambda: dialog.winfo_viewable())

        def shown_code():
            grid = [[False] * (int(dialog.canvas.cget("width")) // dialog.MODULE)
                    for _ in range(int(dialog.canvas.cget("height")) // dialog.MODULE)]
            for item in dialog.canvas.find_all():
                x0, y0, _, _ = dialog.canvas.coords(item)
                grid[int(y0) // dialog.MODULE][int(x0) // dialog.MODULE] = True
            return decode(grid)

        joined = link.parse(dialog.text.get())
        self.assertEqual((joined.host, joined.port, joined.passkey), ("192.0.2.7", self.port, PASSKEY))
        self.assertEqual(joined.fingerprint, self.server.fingerprint)  # what the login proved
        self.assertEqual(shown_code(), dialog.text.get())
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-invite.png"), str(int(dialog.wm_frame(), 16)))
        dialog.withPasskey.set(False)
        dialog.draw()
        self.assertIsNone(link.parse(dialog.text.get()).passkey)
        self.assertEqual(shown_code(), dialog.text.get())
        self.assertIs(app.invite(), dialog)  # one dialog, brought to the front
        dialog.destroy()


class DiscoveryFormTests(TkTestCase):
    async def test_servers_heard_on_the_network_fill_the_form_on_a_click(self):
        """The form lists announced servers (fed here by a stand-in browser: the real one is tested in network
        namespaces); a click fills in address and port only — an announcement is never trusted for the certificate."""
        from tcpchat.discovery import Server

        app = await self.setUpApp()
        form = app.connect
        self.assertFalse(form.foundList.winfo_ismapped())
        form.fingerprint = "SHA256:" + ":".join(["11"] * 32)  # from an earlier link, for another server
        form.showServers([Server("a._tcpchat._tcp.local.", "Library", "192.0.2.44", 4000, 1, True,
                                 "SHA256:" + ":".join(["22"] * 32)),
                          Server("b._tcpchat._tcp.local.", "test server", "127.0.0.1", self.port, 1, True, None)])
        await turns(lambda: form.foundList.winfo_ismapped())
        self.assertEqual(form.foundList.get(0, "end"), ("Library — 192.0.2.44:4000", f"test server — 127.0.0.1:{self.port}"))
        if write_docs():
            self.root.update()
            screenshot(os.path.join(DOCS, "tk-discovered.png"), self.window())
        form.foundList.selection_set(1)
        form.foundList.event_generate("<<ListboxSelect>>")
        await turns(lambda: form.port.get() == str(self.port))
        self.assertEqual(form.host.get(), "127.0.0.1")
        self.assertIsNone(form.linkedFingerprint("127.0.0.1", self.port))
        await self.submit_form("alice")
        form.showServers([])
        self.assertFalse(form.foundList.winfo_ismapped())


class _KeepRunning:
    """The reactor as the window sees it, except that closing the window does not stop it (the tests go on)."""

    running = True

    def __init__(self, real):
        self._real = real
        self.stopped = False

    def __getattr__(self, name):
        return getattr(self._real, name)

    def stop(self):
        self.stopped = True


class OutboxTests(TkTestCase):
    async def test_written_while_the_server_is_down_is_kept_through_closing_and_sent_by_the_next_window(self):
        """Closing the window with a message not yet stored keeps it on disk (next to the form's settings); the
        next window, joining the same server as the same name, sends it, once."""
        import tkinter as tk

        from twisted.internet import tksupport

        from tcpchat.ui.tk import App

        app = await self.setUpApp()
        await self.submit_form("alice")
        app.reactor = _KeepRunning(reactor)
        await self.server.stop()
        await turns(lambda: app.client.state != CONNECTED)
        app.chat.input.insert("1.0", "kept for the next window")
        app.chat.send()
        assert len(app.client.outbox) == 1
        app.close()  # not connected: it asks, in the window
        self.assertIn("1 message is not sent: the server cannot be reached", app.chat.conversation())
        self.assertFalse(app.reactor.stopped)
        self.assertIn("Close anyway", app.chat.urlTags.values())
        app.close()  # "Close anyway" (or closing again): what waits is kept
        await turns(lambda: app.reactor.stopped)
        kept = os.path.join(self.tmp, "outbox")
        self.assertEqual(len(os.listdir(kept)), 1)

        self.server = InProcessServer(self.tmp)  # the same data, the same port: the server is back
        await self.server.start(self.port)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.server.stop()))
        root = tk.Tk()
        self.addCleanup(root.destroy)
        second = App(root, reactor, self.settings)
        self.addCleanup(lambda: second.client.stop(grace=0) if second.client is not None else None)
        second.connect.name.set("alice")
        second.connect.passkey.set(PASSKEY)
        second.connect.button.invoke()
        await turns(lambda: second.client is not None and not second.client.outbox
                    and second.client.state == CONNECTED)
        events = await self.server.store.events_after(0, 100)
        self.assertEqual([e["text"] for e in events if e["kind"] == "message"], ["kept for the next window"])
        await turns(lambda: not os.listdir(kept))  # stored: nothing left on disk

    async def test_closing_waits_for_what_is_on_its_way_and_says_so(self):
        app = await self.setUpApp(message_rate=2.0, message_burst=1.0)
        await self.submit_form("alice")
        app.reactor = _KeepRunning(reactor)
        for n in range(4):  # over the rate limit: the last ones wait for their turn
            app.chat.input.insert("1.0", f"message {n}")
            app.chat.send()
        app.close()
        self.assertIn("Sending", app.chat.log.get("1.0", "end"))
        await turns(lambda: app.reactor.stopped, limit=2000)
        events = await self.server.store.events_after(0, 100)
        self.assertEqual([e["text"] for e in events if e["kind"] == "message"], [f"message {n}" for n in range(4)])


class SmallWindowTests(TkTestCase):
    async def test_at_its_smallest_the_input_is_there_and_it_opens_at_the_newest_message(self):
        """At 560x380 the people panel gives way and the message box stays on screen and works; a login over a
        long history opens at its newest message with nothing counted as new; a link is a link."""
        app = await self.setUpApp(history=200)
        writer, wrec = await self.written([f"earlier message {n}" for n in range(60)]
                                          + ["see https://example.org/timetable for the rooms"])
        self.root.geometry("560x380")
        await self.submit_form("alice")
        await turns(lambda: self.root.winfo_width() <= 600 and "right" not in app.chat.panels)
        await turns(lambda: app.chat.input.winfo_viewable() and app.chat.atEnd())
        self.root.update_idletasks()
        bottom = self.root.winfo_rooty() + self.root.winfo_height()
        box = app.chat.input
        self.assertLessEqual(box.winfo_rooty() + box.winfo_height(), bottom)  # all of it inside the window
        self.assertGreater(app.chat.log.winfo_height(), 120)  # and room to read
        self.assertEqual(app.chat.unread, 0)
        self.assertFalse(app.chat.newBar.winfo_ismapped())
        self.assertIn("https://example.org/timetable", app.chat.urlTags.values())
        box.insert("1.0", "typed in a small window")
        app.chat.send()
        await wrec.until(lambda: "typed in a small window" in wrec.texts())
        await turns(lambda: "alice: typed in a small window" in app.chat.conversation() and app.chat.atEnd())
        if write_docs():
            self.root.update()  # (drawn, not only in the widget)
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-small.png"), self.window()))
        # the people panel is a toggle here: it takes the conversations list's place, and gives it back
        self.assertTrue(app.chat.peopleButton.winfo_ismapped() or app.chat.peopleButton.winfo_manager() == "grid")
        app.chat.peopleButton.invoke()
        await turns(lambda: app.chat.online.winfo_ismapped() and "side" not in app.chat.panels)
        self.assertIn("● alice (you)", app.chat.online.get(0, "end"))
        self.assertEqual(app.chat.peopleButton.cget("text"), "Hide people")
        app.chat.peopleButton.invoke()
        await turns(lambda: app.chat.panels == ("side",) and not app.chat.online.winfo_ismapped())
        self.root.geometry("1000x640")
        await turns(lambda: app.chat.panels == ("side", "right") and not app.chat.peopleButton.winfo_ismapped())


class ThumbnailTests(TkTestCase):
    async def test_a_shared_png_and_jpeg_appear_inline_and_a_bad_one_stays_a_link(self):
        """Pictures shared by someone else show as thumbnails in the conversation (fetched without a row in the
        transfers list); a file that only says it is a PNG stays a plain link, and nothing breaks."""
        from PIL import Image

        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        paths = []
        for name, fmt, colour in (("board.png", "PNG", (40, 110, 220)), ("trip.jpg", "JPEG", (230, 120, 40))):
            path = os.path.join(self.tmp, name)
            Image.new("RGB", (800, 500), colour).save(path, fmt)
            paths.append(path)
        fake = os.path.join(self.tmp, "not-really.png")
        with open(fake, "wb") as f:
            f.write(b"\x89PNG but not a picture at all")
        for path in paths + [fake]:
            await bob.share(path).finished
        await turns(lambda: len(app.chat.log.image_names()) == 2, limit=4000)
        await turns(lambda: "not-really.png" in app.chat.conversation())
        for name in app.chat.log.image_names():
            width, height = int(self.root.call("image", "width", name)), int(self.root.call("image", "height", name))
            self.assertEqual(max(width, height), 240)  # made small (800x500 -> 240x150)
        self.assertEqual(app.chat.transfers.winfo_children(), [])  # no rows for the thumbnails' pictures
        if write_docs():
            self.root.geometry("940x640")
            app.chat.scrollToEnd()
            self.root.update()
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-thumbnails.png"), self.window()))


class ShortcutTests(TkTestCase):
    async def test_up_edits_the_last_message_esc_clears_and_ctrl_a_selects_all(self):
        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        box = app.chat.input
        box.insert("1.0", "the meeting is at 10, room 4")
        app.chat.send()
        await turns(lambda: not app.client.outbox and app.client.lastOwnMessage(app.chat.current) is not None)
        box.focus_force()
        box.event_generate("<Up>")
        self.assertEqual(box.get("1.0", "end-1c"), "the meeting is at 10, room 4")
        box.event_generate("<Control-a>")
        self.assertEqual(box.get("sel.first", "sel.last"), "the meeting is at 10, room 4")
        box.delete("1.0", "end")
        box.insert("1.0", "the meeting is at 11, room 4")
        app.chat.send()
        await brec.until(lambda: any(c[1]["kind"] == "edit" for c in brec.changes))
        mine = app.client.lastOwnMessage(app.chat.current)
        await turns(lambda: "the meeting is at 11, room 4 (edited)" in app.chat.conversation())
        self.assertEqual(mine["text"], "the meeting is at 11, room 4")
        box.insert("1.0", "never mind")
        box.event_generate("<Escape>")
        self.assertEqual(box.get("1.0", "end-1c"), "")


class _At:
    """Where a right click happened (what Tk gives a binding)."""

    def __init__(self, log, index):
        x, y, _, _ = log.bbox(index)
        self.x, self.y = x + 2, y + 2
        self.x_root, self.y_root = log.winfo_rootx() + self.x, log.winfo_rooty() + self.y


def menu_items(menu):
    return {menu.entrycget(i, "label"): i for i in range(menu.index("end") + 1) if menu.type(i) != "separator"}


class LongDayTests(TkTestCase):
    async def test_only_the_newest_page_is_drawn_and_scrolling_up_brings_older_ones_from_the_server(self):
        """A conversation with more history than one page opens with its newest page drawn; scrolling to the top
        draws the page before, then asks the server for what it does not hold, until the very first message;
        following a busy conversation keeps at most KEEP events drawn."""
        from tcpchat.ui import tklog

        app = await self.setUpApp(history=200)
        await self.written([f"line {n}" for n in range(400)])
        await self.submit_form("alice")
        await turns(lambda: "line 399" in app.chat.conversation())
        self.assertLessEqual(len(app.chat.events.drawn), tklog.KEEP)
        self.assertNotIn("line 10\n", app.chat.conversation())
        for _ in range(20):  # each scroll to the top: a page more, held or from the server
            if "writer: line 0\n" in app.chat.conversation():
                break
            before = len(app.chat.events.drawn)
            app.chat.log.yview_moveto(0.0)
            app.chat.showOlder()
            await turns(lambda: len(app.chat.events.drawn) > before, limit=4000)
            self.assertGreater(app.chat.log.yview()[0], 0.0)  # the view stays where it was, not at the new top
        texts = [app.client.events[i].get("text") for i in app.chat.events.drawn
                 if app.client.events[i].get("kind") == "message"]
        self.assertEqual(texts, [f"line {n}" for n in range(400)])  # all of it, in order, once each
        app.chat.scrollToEnd()
        for n in range(tklog.KEEP + 50):
            app.chat.add({"id": 100000 + n, "ts": 0, "kind": "message", "room": "general", "name": "writer",
                          "text": f"live {n}"}, "message")
        self.assertEqual(len(app.chat.events.drawn), tklog.KEEP)
        self.assertIn(f"live {tklog.KEEP + 49}", app.chat.conversation())
        self.assertTrue(app.chat.atEnd())

    async def test_context_menu_replies_edits_and_reacts(self):
        """Right-click a message: Reply quotes it in what is sent next, React adds a reaction (and a tick in the
        menu next time), Edit on one's own message changes it; a downloaded file offers Open and Show in folder."""
        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        bob.send("Who has the projector key?")
        await turns(lambda: "bob: Who has the projector key?" in app.chat.conversation())
        event = next(e for e in app.client.messages(app.chat.current) if e.get("text") == "Who has the projector key?")
        log = app.chat.log

        from tcpchat.ui import tkmenu

        def open_menu(ident):
            self.root.update()
            app.chat.log.see(log.tag_ranges(f"e{ident}")[0])
            self.root.update()
            self.assertEqual(tkmenu.message_menu(app.chat, _At(log, log.tag_ranges(f"e{ident}")[0])), "break")
            menu = app.chat.contextMenu
            menu.unpost()
            return menu

        menu = open_menu(event["id"])
        items = menu_items(menu)
        self.assertEqual(set(items), {"Reply", "Copy text", "React"})  # not Edit: it is bob's
        menu.invoke(items["Reply"])
        self.assertIn("Replying to bob", app.chat.replyLabel.cget("text"))
        app.chat.input.insert("1.0", "I have it")
        app.chat.send()
        await brec.until(lambda: any(e.get("text") == "I have it" and (e.get("reply") or {}).get("id") == event["id"]
                                     for e in brec.events))
        await turns(lambda: "↪ bob: Who has the projector key?" in app.chat.conversation())
        self.assertFalse(app.chat.replyLabel.winfo_ismapped())
        react = self.root.nametowidget(menu.entrycget(menu_items(menu)["React"], "menu"))
        react.invoke(1)  # the second emoji
        from tcpchat import wire

        emoji = wire.REACTIONS[1]
        await turns(lambda: alice_reacted(app, event["id"], emoji))
        await brec.until(lambda: alice_reacted(bob, event["id"], emoji))  # and bob sees it
        menu = open_menu(event["id"])
        react = self.root.nametowidget(menu.entrycget(menu_items(menu)["React"], "menu"))
        self.assertEqual(react.entrycget(1, "label"), "✓ " + emoji)
        mine = app.client.lastOwnMessage(app.chat.current)
        menu = open_menu(mine["id"])
        items = menu_items(menu)
        self.assertIn("Edit", items)
        menu.invoke(items["Edit"])
        self.assertEqual(app.chat.input.get("1.0", "end-1c"), "I have it")
        app.chat.input.delete("1.0", "end")
        app.chat.input.insert("1.0", "I have it, at the desk")
        app.chat.send()
        await turns(lambda: "I have it, at the desk (edited)" in app.chat.conversation())
        if write_docs():
            bob.react(event["id"], wire.REACTIONS[0])
            await turns(lambda: "bob" in (app.client.events[event["id"]].get("reactions") or {}).get(wire.REACTIONS[0], []))
            self.root.geometry("940x600")
            self.root.update()
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-reply-reactions.png"), self.window()))
        # a file, downloaded: Open and Show in folder
        path = os.path.join(self.tmp, "minutes.txt")
        with open(path, "w") as f:
            f.write("minutes of the meeting\n")
        await bob.share(path).finished
        await turns(lambda: "minutes.txt" in app.chat.conversation())
        shared = next(e for e in app.client.messages(app.chat.current) if e.get("kind") == "file")
        self.assertNotIn("Open", menu_items(open_menu(shared["id"])))
        dest = os.path.join(self.tmp, "got-minutes.txt")
        await app.files.download(shared["file"], dest).finished
        await turns(lambda: "Saved minutes.txt" in app.chat.conversation())
        self.assertIn("Show in folder", app.chat.urlTags.values())
        items = menu_items(open_menu(shared["id"]))
        self.assertIn("Open", items)
        self.assertIn("Show in folder", items)
        self.assertEqual(app.files.downloaded[shared["file"]["id"]], dest)
        # files copied in a file manager, pasted into the message box: shared; text is pasted as text
        copied = os.path.join(self.tmp, "seating plan.txt")
        with open(copied, "w") as f:
            f.write("row 1: ann, bob\n")
        self.root.clipboard_clear()
        self.root.clipboard_append("file://" + copied.replace(" ", "%20"))
        app.chat.input.event_generate("<<Paste>>")
        await turns(lambda: any(e.get("kind") == "file" and e["file"].get("name") == "seating plan.txt"
                                for e in bob.messages()), limit=4000)
        self.assertEqual(app.chat.input.get("1.0", "end-1c"), "")
        self.root.clipboard_clear()
        self.root.clipboard_append("just words, not a file")
        app.chat.input.event_generate("<<Paste>>")
        self.assertEqual(app.chat.input.get("1.0", "end-1c"), "just words, not a file")


def alice_reacted(app_or_client, ident, emoji):
    client = getattr(app_or_client, "client", app_or_client)
    return "alice" in ((client.events.get(ident) or {}).get("reactions") or {}).get(emoji, [])


class LooksTests(TkTestCase):
    async def test_dark_theme_font_zoom_and_keyboard_switching_are_remembered(self):
        """The theme button turns the window dark (and back); Ctrl+plus makes every font larger; both come back
        in the next window; Ctrl+K narrows the conversations to what is typed and goes there; Alt+Down and
        Alt+Up step through the list."""
        from tcpchat.ui import tkstyle
        from tcpchat.ui.tk import App, Settings

        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        for said in ("Morning! The printer on floor 2 is fixed.", "Slides for today: https://example.org/slides",
                     "Lunch at 12:30 in the small room?"):
            bob.send(said)
        await turns(lambda: "Lunch at 12:30" in app.chat.conversation())
        app.chat.input.insert("1.0", "Sounds good, see you there")
        app.chat.send()
        await turns(lambda: "alice: Sounds good" in app.chat.conversation())
        app.commands.run("/join lab")
        await turns(lambda: any(c.lower() == "#lab" for c in app.chat.convs))
        light = app.chat.log.cget("background")
        app.chat.themeButton.invoke()
        self.assertEqual(app.theme, "dark")
        self.assertEqual(app.chat.log.cget("background"), tkstyle.PALETTES["dark"]["log"])
        self.assertEqual(app.chat.convList.cget("background"), tkstyle.PALETTES["dark"]["log"])
        self.assertNotEqual(light, app.chat.log.cget("background"))
        size = app.fonts["body"].cget("size")
        self.root.event_generate("<Control-plus>")
        self.root.event_generate("<Control-plus>")
        self.assertEqual(app.fonts["body"].cget("size"), size + 2)
        self.assertEqual(app.chat.log.cget("font"), str(app.fonts["body"]))  # the log follows the named font
        if write_docs():
            self.root.geometry("940x600")
            app.switch("#general")
            self.root.update()
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-dark-large.png"), self.window()))
            app.zoom(0)
            self.root.geometry("560x380")
            await turns(lambda: self.root.winfo_width() <= 600 and "right" not in app.chat.panels)
            self.root.update()
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-dark-small.png"), self.window()))
            app.zoom(1)
            app.zoom(1)
        # the next window opens as this one was left
        again = Settings(self.settings.path, self.settings.known_servers)
        self.assertEqual((again.values["theme"], again.values["fontSize"]), ("dark", size + 2))
        # Ctrl+K: type part of a name, Enter
        app.switch("#general")
        from tcpchat.ui import tknav

        picker = tknav.quick_switch(app)
        picker.typed.set("la")
        self.assertEqual(picker.shown, [next(c for c in app.chat.convs if c.lower() == "#lab")])
        picker.pick()
        self.assertEqual(app.chat.current.lower(), "#lab")
        tknav.step(app, -1)
        self.assertEqual(app.chat.current.lower(), "#general")
        tknav.step(app, 1)
        self.assertEqual(app.chat.current.lower(), "#lab")
        await self.keys("ctrl+0")  # real key presses, in the message box
        await turns(lambda: app.fonts["body"].cget("size") == tkstyle.default_size())
        app.chat.themeButton.invoke()
        self.assertEqual(app.chat.log.cget("background"), tkstyle.PALETTES["light"]["log"])


class ProfileTests(TkTestCase):
    async def test_profiles_set_in_the_dialog_shown_in_the_list_and_on_a_card(self):
        """Profile… sets one's bio and a picture made 128x128 from a photo; others see it; someone's bio is in the
        people list and a click shows their card with the picture; /whois says it in words."""
        import io

        from PIL import Image

        from tcpchat.ui.tkprofile import ProfileDialog

        app = await self.setUpApp()
        await self.submit_form("alice")
        bob, brec = make_client(self.port, "bob")
        self.addCleanup(bob.stop)
        await bob.start()
        photo = os.path.join(self.tmp, "holiday.jpg")
        Image.new("RGB", (1600, 900), (200, 90, 40)).save(photo, "JPEG")
        dialog = ProfileDialog(self.root, app)
        dialog.bio.set("Teaches maths,   room 12")
        dialog.pick(photo)
        await dialog.save()
        await turns(lambda: (bob.model.profileOf("alice").get("bio") == "Teaches maths, room 12"
                             and "picture" in bob.model.profileOf("alice")), limit=4000)
        picture = bob.model.profileOf("alice")["picture"]
        got = os.path.join(self.tmp, "alice.png")
        await bob.download(picture, got).finished
        with Image.open(got) as made:
            self.assertEqual(made.size, (128, 128))
        # bob's profile, set from the library client, in alice's window
        square = io.BytesIO()
        Image.new("RGB", (128, 128), (40, 120, 220)).save(square, "PNG")
        await bob.setProfile(bio="Lab technician, ask me about the 3D printer", picture=square.getvalue())
        await turns(lambda: any("Lab technician" in line for line in app.chat.online.get(0, "end")))
        at = next(i for i, n in enumerate(app.chat.onlineNames) if n == "bob")
        app.chat.online.selection_set(at)
        app.chat.online.event_generate("<<ListboxSelect>>")
        await turns(lambda: app.chat.card.photo is not None, limit=4000)
        self.assertIn("Lab technician", app.chat.card.bio.cget("text"))
        await turns(lambda: app.chat.card.winfo_ismapped())
        app.commands.run("/whois bob")
        self.assertIn("bio: Lab technician, ask me about the 3D printer", app.chat.conversation())
        if write_docs():
            bob.send("The printer is free this afternoon if anyone needs it.")
            await turns(lambda: "printer is free" in app.chat.conversation())
            self.root.geometry("940x600")
            self.root.update()
            self.assertTrue(screenshot(os.path.join(DOCS, "tk-profile.png"), self.window()))
        app.commands.run("/help")
        self.assertIn("/whois NAME — someone's profile", app.chat.conversation())  # one per line, no columns
