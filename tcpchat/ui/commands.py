"""
Slash commands, shared by both user interfaces.

:class:`Commands` turns a line such as ``/msg bob hi`` into calls on the
client core and tells the *view* what to show.  A view provides:

* ``show(line, style="system")`` — print a line (styles as in :mod:`text`);
* ``current`` — the conversation on screen (``"#room"`` or ``"@name"``) and
  ``switch(conv)`` to change it;
* ``share(path)``, ``get(rest)``, ``invite()`` and ``quit()``.

No toolkit, no sockets: the same code serves the terminal and the Tk window.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from tcpchat import wire
from tcpchat.client.core import LOBBY, ChatClient, conversation_of
from tcpchat.ui import text

#: (usage, help) of every command, in the order /help lists them.
COMMANDS: List[Tuple[str, str]] = [
    ("/join ROOM", "join (or create) a room and switch to it"),
    ("/leave [ROOM]", "leave a room (default: the one on screen)"),
    ("/rooms", "list the rooms"),
    ("/msg NAME TEXT", "send a direct message, and switch to that conversation"),
    ("/query NAME", "switch to your direct conversation with NAME"),
    ("/switch #ROOM|@NAME", "switch conversation"),
    ("/who", "who is online, away, and their status"),
    ("/away [STATUS]", "show yourself as away (with a status line)"),
    ("/back", "show yourself as here again"),
    ("/status [TEXT]", "set (or clear) your status line"),
    ("/profile [BIO]", "set your one-line bio (none: show your profile; '-': clear it)"),
    ("/picture PATH|none", "set (or remove) your profile picture, made 128x128 from any picture"),
    ("/whois NAME", "someone's profile: bio, picture, status"),
    ("/search WORDS", "search the messages you can read"),
    ("/seen", "who has seen your last message here"),
    ("/history", "show older messages of this conversation"),
    ("/delete [ID]", "delete your last message here (or message ID)"),
    ("/edit TEXT", "change the text of your last message here"),
    ("/reply NAME|ID TEXT", "answer NAME's last message here (or message ID), quoting it"),
    ("/react NAME|ID EMOJI", "react to NAME's last message here (or message ID): " + " ".join(wire.REACTIONS)),
    ("/register PASSWORD", "protect your name: later logins with it need this password"),
    ("/file PATH", "share a file in this conversation"),
    ("/get ID [DEST]", "download shared file ID"),
    ("/oper KEY", "become an operator with the server's admin passkey"),
    ("/kick NAME [REASON]", "operator: disconnect someone"),
    ("/ban NAME [MINUTES] [REASON]", "operator: ban a name (0 or no minutes: for good)"),
    ("/banip NAME [MINUTES] [REASON]", "operator: ban a name and the address it uses"),
    ("/unban NAME|ADDRESS", "operator: lift a ban"),
    ("/mute NAME [MINUTES]", "operator: stop someone from sending"),
    ("/unmute NAME", "operator: let them speak again"),
    ("/announce TEXT", "operator: a notice to everyone"),
    ("/passkey [NEW]", "operator: change the join passkey now (people here stay)"),
    ("/bans", "operator: list bans and mutes"),
    ("/release NAME", "operator: remove a name's password (its owner forgot it)"),
    ("/invite", "a join link (and QR code) with the passkey, to bring someone in"),
    ("/help", "show this list"),
    ("/quit", "leave the chat"),
]


def help_text(columns: bool = True) -> str:
    """The commands: in two columns (a terminal's fixed-width font), or one "command — what" per line."""
    if not columns:
        return "\n".join(f"{c} — {h}" for c, h in COMMANDS)
    width = max(len(c) for c, _ in COMMANDS)
    return "\n".join(f"  {c.ljust(width)}  {h}" for c, h in COMMANDS)


def _minutes(words: List[str]) -> Tuple[Optional[int], List[str]]:
    """An optional leading number of minutes (as seconds) and the rest."""
    if words and words[0].isdigit():
        return int(words[0]) * 60, words[1:]
    return None, words


class Commands:
    """Runs slash commands for one view."""

    def __init__(self, client: ChatClient, view: Any) -> None:
        self.client = client
        self.view = view

    def run(self, entry: str) -> None:
        word, _, rest = entry.strip().partition(" ")
        rest = rest.strip()
        handler: Optional[Callable[[str], None]] = getattr(self, "do_" + word[1:].lower(), None)
        if handler is None:
            self.view.show(f"Unknown command {word}; /help lists them.", "error")
            return
        try:
            handler(rest)
        except wire.ProtocolError as e:
            self.view.show(e.message, "error")
        except ValueError as e:
            self.view.show(str(e), "error")

    # ------------------------------------------------------------ helpers

    def _later(self, d: Any, done: Callable[[Any], None]) -> None:
        """Show the answer of a request, or why it failed."""
        d.addCallbacks(done, lambda f: self.view.show(getattr(f.value, "message", str(f.value)), "error"))

    def _usage(self, usage: str) -> None:
        self.view.show(f"Usage: {usage}", "error")

    def _mod(self, action: str, **members: Any) -> None:
        if not self.client.operator:
            self.view.show("Only an operator may do that; use /oper KEY first.", "error")
            return

        def done(frame: Dict[str, Any]) -> None:
            self.view.show(str(frame.get("message", "Done.")))
            if frame.get("passkey"):
                self.view.show(f"New passkey: {frame['passkey']} — tell it only to people who should join.")
            for ban in frame.get("bans") or []:
                left = ban.get("remaining")
                when = "for good" if left is None else f"{int(left) // 60 + 1} min left"
                self.view.show(f"  {ban.get('kind')} {ban.get('value')}: {when}" +
                               (f" ({ban['reason']})" if ban.get("reason") else ""))

        self._later(self.client.moderate(action, **members), done)

    # ------------------------------------------------------------ conversations

    def do_help(self, rest: str) -> None:
        self.view.show("Commands:\n" + help_text(getattr(self.view, "fixedWidth", True)))

    def do_invite(self, rest: str) -> None:
        self.view.invite()

    def do_quit(self, rest: str) -> None:
        self.view.quit()

    do_exit = do_quit

    def do_join(self, rest: str) -> None:
        if not rest:
            return self._usage("/join ROOM")
        self._later(self.client.join(rest), lambda room: self.view.switch("#" + room))

    def do_leave(self, rest: str) -> None:
        room = rest or (self.view.current[1:] if self.view.current.startswith("#") else "")
        if not room:
            return self._usage("/leave ROOM")
        if wire.name_key(wire.normalize_room(room)) == wire.name_key(wire.DEFAULT_ROOM):
            self.view.show(wire.ERROR_TEXT[wire.ErrorCode.CANNOT_LEAVE], "error")
            return
        self.client.leave(room)
        if self.view.current.startswith("#") and wire.name_key(self.view.current[1:]) == wire.name_key(room.lstrip("#")):
            self.view.switch(LOBBY)

    def do_rooms(self, rest: str) -> None:
        def show(rooms: List[Dict[str, Any]]) -> None:
            lines = [f"  #{r['room']}  ({r['members']} {'member' if r['members'] == 1 else 'members'})"
                     + ("  — joined" if r.get("joined") else "") for r in rooms]
            self.view.show("Rooms (/join ROOM):\n" + "\n".join(lines))

        self._later(self.client.listRooms(), show)

    def do_msg(self, rest: str) -> None:
        name, _, message = rest.partition(" ")
        if not name or not message.strip():
            return self._usage("/msg NAME TEXT")
        conv = "@" + name.lstrip("@")
        self.view.switch(conv)
        self.client.send(message, conv)

    def do_query(self, rest: str) -> None:
        if not rest:
            return self._usage("/query NAME")
        self.view.switch("@" + rest.split()[0].lstrip("@"))

    def do_switch(self, rest: str) -> None:
        target = rest.split()[0] if rest else ""
        if target.startswith("@") and len(target) > 1:
            self.view.switch(target)
        elif target:
            room = wire.normalize_room(target)
            if self.client.model.roomOf("#" + room) is None:
                self.view.show(f"You are not in #{room}; /join {room} first.", "error")
                return
            self.view.switch("#" + room)
        else:
            self._usage("/switch #ROOM or /switch @NAME")

    do_go = do_switch

    def do_who(self, rest: str) -> None:
        lines = []
        for name in sorted(self.client.users, key=wire.name_key):
            info = self.client.model.presenceOf(name)
            line = ("○ " if info.get("away") else "● ") + name + (" (you)" if name == self.client.name else "")
            if info.get("away"):
                line += " — away"
            if info.get("status"):
                line += f": {info['status']}"
            lines.append("  " + line)
        self.view.show(f"Online ({len(lines)}):\n" + "\n".join(lines))

    def do_away(self, rest: str) -> None:
        self.client.setPresence(True, rest if rest else None)
        self.view.show("You are shown as away" + (f": {rest}" if rest else "") + " (/back when you return).")

    def do_back(self, rest: str) -> None:
        self.client.setPresence(False)
        self.view.show("You are shown as here.")

    def do_status(self, rest: str) -> None:
        self.client.setPresence(status=rest)
        self.view.show(f"Status: {rest}" if rest else "Status cleared.")

    def _profiles(self) -> bool:
        if not self.client.profiles:
            self.view.show("This server keeps no profiles (it is older).", "error")
        return self.client.profiles

    def do_profile(self, rest: str) -> None:
        if not self._profiles():
            return
        if not rest:
            return self.do_whois(self.client.name)
        bio = "" if rest.strip() == "-" else rest
        try:
            d = self.client.setProfile(bio=bio)
        except ValueError as e:
            self.view.show(str(e), "error")
            return
        self._later(d, lambda _: self.view.show(f"Bio: {' '.join(bio.split())}" if bio else "Bio cleared."))

    def do_picture(self, rest: str) -> None:
        if not self._profiles():
            return
        if not rest:
            return self._usage("/picture PATH|none")
        if rest.strip().lower() == "none":
            self._later(self.client.setProfile(picture=b""), lambda _: self.view.show("Picture removed."))
            return
        path = os.path.expanduser(rest.strip('"'))
        if not os.path.isfile(path):
            self.view.show(f"No such file: {path}", "error")
            return
        from twisted.internet.threads import deferToThread

        from tcpchat.ui import thumbs

        made = deferToThread(thumbs.avatar, path)  # (decoding a photo takes a while: not on the reactor)
        made.addCallback(lambda data: self.client.setProfile(picture=data))
        self._later(made, lambda _: self.view.show("Picture set."))

    def do_whois(self, rest: str) -> None:
        name = rest.strip().lstrip("@")
        if not name:
            return self._usage("/whois NAME")
        profile = self.client.model.profileOf(name)
        info = self.client.model.presenceOf(name)
        online = any(wire.name_key(u) == wire.name_key(name) for u in self.client.users)
        lines = [f"{name}: {'away' if info.get('away') else 'online' if online else 'not online'}"
                 + (f" — {info['status']}" if info.get("status") else "")]
        lines.append(f"  bio: {profile['bio']}" if profile.get("bio") else "  no bio")
        picture = profile.get("picture")
        if isinstance(picture, dict):
            lines.append(f"  picture: {picture.get('mime')}, {text.human_size(picture.get('size', 0))}")
        self.view.show("\n".join(lines))

    def do_search(self, rest: str) -> None:
        if not rest:
            return self._usage("/search WORDS")

        def show(events: List[Dict[str, Any]]) -> None:
            if not events:
                self.view.show(f"No messages found for “{rest}”.")
                return
            lines = []
            for event in events:
                where = conversation_of(event, self.client.name)
                _, line = text.describe(event, self.client.name)
                lines.append(f"  [{text.clock(event.get('ts'))}] {where}  {line}")
            self.view.show(f"Found {len(events)} message{'s' if len(events) > 1 else ''} for “{rest}”:\n"
                           + "\n".join(lines))

        self._later(self.client.search(rest), show)

    def do_seen(self, rest: str) -> None:
        conv = self.view.current
        mine = self.client.lastOwnMessage(conv)
        if mine is None:
            self.view.show("You have not written anything here yet.")
            return
        seen = self.client.seenBy(conv, mine)
        self.view.show(text.seen_line(seen) if seen else "Nobody has seen your last message yet.")

    def do_history(self, rest: str) -> None:
        self.client.loadOlder(conv=self.view.current)

    def do_delete(self, rest: str) -> None:
        if rest:
            if not rest.isdigit():
                return self._usage("/delete [ID]")
            self.client.delete(int(rest))
            return
        mine = self.client.lastOwnMessage(self.view.current)
        if mine is None:
            self.view.show("You have no message here to delete.", "error")
            return
        self.client.delete(mine["id"])

    def _target(self, who: str, usage: str) -> Optional[Dict[str, Any]]:
        """The message ``who`` names here: an event id, or a name (their last message here)."""
        if not self.client.edits:
            self.view.show("This server has no edits, replies or reactions (it is older).", "error")
            return None
        events = [e for e in self.client.messages(self.view.current) if e["kind"] in ("message", "file")]
        if who.lstrip("#").isdigit():
            found = [e for e in events if e["id"] == int(who.lstrip("#"))]
        else:
            found = [e for e in events if wire.name_key(str(e.get("name", ""))) == wire.name_key(who.lstrip("@"))]
        if not found:
            self.view.show(f"No message of {who} here. Usage: {usage}", "error")
            return None
        return found[-1]

    def do_edit(self, rest: str) -> None:
        if not rest:
            return self._usage("/edit TEXT")
        if not self.client.edits:
            self.view.show("This server has no edits, replies or reactions (it is older).", "error")
            return
        mine = self.client.lastOwnMessage(self.view.current)
        if mine is None:
            self.view.show("You have no message here to edit.", "error")
            return
        self._later(self.client.edit(mine["id"], rest), lambda _: None)

    def do_reply(self, rest: str) -> None:
        who, _, said = rest.partition(" ")
        if not who or not said.strip():
            return self._usage("/reply NAME|ID TEXT")
        target = self._target(who, "/reply NAME|ID TEXT")
        if target is not None:
            self.client.send(said.strip(), self.view.current, reply=target["id"])

    def do_react(self, rest: str) -> None:
        who, _, emoji = rest.partition(" ")
        emoji = emoji.strip()
        if not who or emoji not in wire.REACTIONS:
            return self._usage("/react NAME|ID EMOJI (one of " + " ".join(wire.REACTIONS) + ")")
        target = self._target(who, "/react NAME|ID EMOJI")
        if target is not None:
            mine = self.client.name in ((target.get("reactions") or {}).get(emoji) or [])
            self._later(self.client.react(target["id"], emoji, on=not mine), lambda _: None)  # again: take it back

    def do_file(self, rest: str) -> None:
        path = os.path.expanduser(rest.strip('"'))
        if not path:
            return self._usage("/file PATH")
        if not os.path.isfile(path):
            self.view.show(f"No such file: {path}", "error")
            return
        self.view.show(f"Sharing {wire.safe_file_name(os.path.basename(path))}…")
        self.view.share(path)

    def do_get(self, rest: str) -> None:
        self.view.get(rest)

    # ------------------------------------------------------------ moderation

    def do_oper(self, rest: str) -> None:
        if not rest:
            return self._usage("/oper KEY")
        self._later(self.client.oper(rest), lambda _: self.view.show(
            "You are an operator now: /kick /ban /banip /unban /mute /unmute /delete /announce /passkey /bans."))

    def do_kick(self, rest: str) -> None:
        name, _, reason = rest.partition(" ")
        if not name:
            return self._usage("/kick NAME [REASON]")
        self._mod("kick", name=name, reason=reason.strip() or None)

    def do_ban(self, rest: str, address: bool = False) -> None:
        words = rest.split()
        if not words:
            return self._usage("/ban NAME [MINUTES] [REASON]")
        duration, reason = _minutes(words[1:])
        self._mod("ban", name=words[0], address=True if address else None, duration=duration,
                  reason=" ".join(reason) or None)

    def do_banip(self, rest: str) -> None:
        self.do_ban(rest, address=True)

    def do_unban(self, rest: str) -> None:
        if not rest:
            return self._usage("/unban NAME|ADDRESS")
        target = rest.split()[0]
        looks_like_address = all(c in "0123456789.:abcdefABCDEF" for c in target) and ("." in target or ":" in target)
        if looks_like_address:
            self._mod("unban", address=target)
        else:
            self._mod("unban", name=target)

    def do_mute(self, rest: str) -> None:
        words = rest.split()
        if not words:
            return self._usage("/mute NAME [MINUTES]")
        duration, reason = _minutes(words[1:])
        self._mod("mute", name=words[0], duration=duration, reason=" ".join(reason) or None)

    def do_unmute(self, rest: str) -> None:
        if not rest:
            return self._usage("/unmute NAME")
        self._mod("unmute", name=rest.split()[0])

    def do_announce(self, rest: str) -> None:
        if not rest:
            return self._usage("/announce TEXT")
        self._mod("announce", text=rest)

    def do_passkey(self, rest: str) -> None:
        self._mod("rotate", passkey=rest or None)

    def do_bans(self, rest: str) -> None:
        self._mod("bans")

    def do_release(self, rest: str) -> None:
        if not rest:
            return self._usage("/release NAME")
        self._mod("release", name=rest.split()[0])

    def do_register(self, rest: str) -> None:
        if len(rest) < 8:
            return self._usage("/register PASSWORD (at least 8 characters)")
        self._later(self.client.register(rest), lambda frame: self.view.show(
            f"Your name {frame['name']} is protected: logging in with it now needs this password "
            "(this client remembers it until you quit)."))
