"""
Several tcpchat nodes on one PostgreSQL database (docs/SCALING.rst): real
``twistd -n tcpchat --database postgresql://…`` processes on 127.0.0.1 and a
throw-away PostgreSQL server from Debian's packages (tests/pgserver.py).
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import Any, Dict, List, Optional

import pytest

from .procs import RawClient, ServerProcess

_databases = itertools.count(1)


@pytest.fixture
def database(pg_server):
    name = f"cluster{next(_databases)}"
    pg_server.sql(f"CREATE DATABASE {name}")
    return pg_server.dsn_for(name)


ADMIN = "admin-key-1"


def start_nodes(tmp_path, dsn: str, count: int = 3, first: int = 1, *extra: str) -> List[ServerProcess]:
    """``count`` nodes on ``dsn``, sharing one file directory, each with the operator passkey ADMIN."""
    nodes = []
    (tmp_path / "files").mkdir(exist_ok=True)
    for i in range(first, first + count):
        node = ServerProcess(tmp_path / f"node{i}", extra=["--database", dsn, "--node-name", f"n{i}", "--no-announce",
                                                            "--files-dir", str(tmp_path / "files"),
                                                            "--admin-passkey", ADMIN, *extra])
        (tmp_path / f"node{i}").mkdir(exist_ok=True)
        nodes.append(node.start())
    return nodes


class Member:
    """One user: a RawClient on some node, with everything it was told."""

    def __init__(self, name: str, rich: bool = True) -> None:
        self.name = name
        self.rich = rich
        self.client: Optional[RawClient] = None
        self.token: Optional[str] = None
        self.last = 0
        #: ids of every event received, in the order received (across reconnects)
        self.seen: List[int] = []
        self.texts: Dict[int, str] = {}
        #: cid -> id of our own acknowledged messages
        self.acked: Dict[str, int] = {}
        self.unacked: Dict[str, Dict[str, Any]] = {}
        self.frames: List[Dict[str, Any]] = []

    def connect(self, port: int) -> List[Any]:
        self.client = RawClient(port)
        extra: Dict[str, Any] = {"features": ["rooms"]} if self.rich else {}
        if self.token:
            extra.update(session=self.token, after=self.last)
        frames = self.client.login(self.name, **extra)
        assert frames[-1]["type"] == "synced", frames[-1]
        welcome = next(f for f in frames if f["type"] == "welcome")
        self.token = welcome["session"]
        for frame in frames:
            self._take(frame)
        return frames

    def say(self, text: str, cid: str, **where: Any) -> None:
        frame = {"type": "say", "text": text, "cid": cid, **where}
        self.unacked[cid] = frame
        assert self.client is not None
        self.client.send(frame)

    def resend(self) -> None:
        assert self.client is not None
        for frame in list(self.unacked.values()):
            self.client.send(frame)

    def _take(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            return
        self.frames.append(frame)
        if frame["type"] == "event":
            if not frame.get("replay") or frame["id"] > self.last:
                self.seen.append(frame["id"])
                if frame.get("kind") == "message":
                    self.texts[frame["id"]] = frame["text"]
            self.last = max(self.last, frame["id"])
        elif frame["type"] == "ack" and frame.get("cid") in self.unacked:
            said = self.unacked.pop(frame["cid"])
            self.acked[frame["cid"]] = frame["id"]
            self.texts[frame["id"]] = said["text"]

    def pump(self, until: Any, timeout: float = 15.0) -> bool:
        """Read frames until ``until()`` holds (True), the connection closes or the time is up (False)."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        sock = self.client.sock
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(min(left, 1.0))
            try:
                frame = self.client.recv()
            except socket.timeout:
                continue
            except (ConnectionError, OSError):
                return False
            self._take(frame)
        return True

    def messages(self) -> List[str]:
        """The chat messages this user has, in id order."""
        return [self.texts[i] for i in sorted(self.texts)]


def stored_messages(dsn: str) -> List[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, name, cid, text, conv FROM events WHERE kind = 'message' ORDER BY id").fetchall()


def test_three_nodes_one_conversation_same_order_privacy_kept(tmp_path, database):
    """Users on three nodes chat in the default room, a room and directly: everyone sees the same order,
    nobody sees what is not theirs, a name is taken on every node, typing crosses nodes."""
    nodes = start_nodes(tmp_path, database)
    try:
        alice, bob, carol = Member("alice"), Member("bob"), Member("carol")
        for member, node in zip((alice, bob, carol), nodes):
            member.connect(node.port)
        everyone = (alice, bob, carol)
        # each sees the others arrive (join events from the other nodes) and in the users list
        for member in everyone:
            others = {m.name for m in everyone} - {member.name}
            assert member.pump(lambda: others <= {f["name"] for f in member.frames
                                                  if f["type"] == "event" and f.get("kind") == "join"})
        users = RawClient(nodes[0].port)
        users.login("dave")
        users.send({"type": "who"})
        listed = users.recv_until(lambda f: f["type"] == "users")[-1]["users"]
        assert {"alice", "bob", "carol", "dave"} <= set(listed)
        users.close()
        # a name held on another node is taken
        taken = RawClient(nodes[2].port).login("Alice")
        assert taken[-1]["type"] == "error" and taken[-1]["code"] == "name-taken"

        # interleaved messages from the three nodes: one order for everyone
        for i in range(30):
            member = everyone[i % 3]
            member.say(f"m{i} from {member.name}", f"c{i}")
        for member in everyone:
            assert member.pump(lambda: len([t for t in member.texts.values() if t.startswith("m")]) == 30), \
                (member.name, member.messages())
        orders = [[t for t in m.messages() if t.startswith("m")] for m in everyone]
        assert orders[0] == orders[1] == orders[2]
        for member in everyone:
            assert member.seen == sorted(member.seen) and len(member.seen) == len(set(member.seen))

        # a room (alice on n1, bob on n2) and a direct message (alice to carol on n3)
        for member in (alice, bob):
            assert member.client is not None
            member.client.send({"type": "join", "room": "lab"})
        assert bob.pump(lambda: any(f["type"] == "event" and f.get("kind") == "room-join" and f["name"] == "alice"
                                    for f in bob.frames))
        alice.say("lab secret", "lab1", room="lab")
        alice.say("for carol only", "dm1", to="carol")
        bob.say("bob after", "b2")
        assert bob.pump(lambda: "lab secret" in bob.texts.values() and "bob after" in bob.texts.values())
        assert carol.pump(lambda: "for carol only" in carol.texts.values() and "bob after" in carol.texts.values())
        assert "for carol only" not in bob.texts.values()
        assert "lab secret" not in carol.texts.values()

        # typing is a hint: it crosses nodes without being stored
        assert carol.client is not None
        carol.client.send({"type": "typing"})
        assert alice.pump(lambda: any(f["type"] == "typing" and f["name"] == "carol" for f in alice.frames))
    finally:
        for node in nodes:
            node.close()


def test_twenty_kills_of_a_node_mid_burst_lose_and_repeat_nothing(tmp_path, database):
    """20 rounds: bursts from users on all three nodes, kill -9 of one node while they are in flight, its users
    reconnect to another node (session token, ``after``), send again what was not acknowledged; then nothing
    acknowledged is lost, nothing is stored twice, and every user holds the same messages in the same order."""
    nodes = start_nodes(tmp_path, database)
    members = [Member(f"u{i}") for i in range(6)]
    home = {m.name: i % 3 for i, m in enumerate(members)}
    try:
        for m in members:
            m.connect(nodes[home[m.name]].port)
        serial = itertools.count()
        moves = resent = 0
        for round_ in range(20):
            victim = round_ % 3
            for m in members:
                for _ in range(5):
                    n = next(serial)
                    m.say(f"r{round_} {m.name} #{n}", f"c{n}")
            nodes[victim].kill()
            survivors = [i for i in range(3) if i != victim]
            for m in members:
                if home[m.name] == victim:
                    m.pump(lambda: False, timeout=5.0)  # what it still got before the socket closed
                    home[m.name] = survivors[len(m.name) % 2]
                    m.connect(nodes[home[m.name]].port)
                    moves += 1
                    resent += len(m.unacked)
                    m.resend()
            for m in members:
                assert m.pump(lambda: not m.unacked, timeout=30), (round_, m.name, m.unacked)
            nodes[victim].start()  # the same node name, a new process
        assert moves >= 20 and resent > 0  # (every kill moved someone, mid-burst: some messages were not yet acked)
        # each move took the name over at once with the session token (the old holder written off at most once:
        # not when its join had not been committed before the kill), and the cluster knows where everyone is
        import psycopg

        with psycopg.connect(database) as conn:
            (lost,) = conn.execute("SELECT count(*) FROM events WHERE kind = 'leave' AND extra LIKE '%lost%'"
                                   ).fetchone()
            online = dict(conn.execute("SELECT name, node FROM online").fetchall())
        assert moves - 5 <= lost <= moves
        assert online == {m.name: f"n{home[m.name] + 1}" for m in members}
        stored = stored_messages(database)
        texts = [row[3] for row in stored]
        assert len(texts) == len(set(texts)) == 20 * 6 * 5  # every message once: none lost, none twice
        acked = {cid: ident for m in members for cid, ident in m.acked.items()}
        assert len(acked) == 20 * 6 * 5
        by_id = {row[0]: row for row in stored}
        for m in members:
            for cid, ident in m.acked.items():
                assert by_id[ident][1] == m.name and by_id[ident][2] == cid
        final = [row[3] for row in stored]
        for m in members:
            assert m.pump(lambda: len(m.texts) >= len(final), timeout=30), (m.name, len(m.texts))
            assert m.messages() == final, m.name
            assert m.seen == sorted(m.seen) and len(m.seen) == len(set(m.seen)), m.name
    finally:
        for node in nodes:
            node.close()


def test_files_operators_and_the_passkey_are_the_clusters(tmp_path, database):
    """A file shared on one node downloads from another (same bytes); an operator on one node kicks and bans a
    user on another; a passkey rotated on one node is the passkey everywhere."""
    nodes = start_nodes(tmp_path, database, 2)
    try:
        ann, ben = RawClient(nodes[0].port), RawClient(nodes[1].port)
        ann.login("ann")
        ben.login("ben")
        data = bytes(range(256)) * 1000
        done = ann.upload("notes.bin", data)
        assert done["type"] == "upload-done", done
        assert ben.download(done["file"]["id"]) == data

        ann.send({"type": "oper", "passkey": ADMIN})
        assert ann.recv_until(lambda f: f["type"] in ("oper", "error"))[-1]["type"] == "oper"
        ann.send({"type": "mod", "action": "kick", "name": "ben", "reason": "test"})
        assert ann.recv_until(lambda f: f["type"] in ("mod-done", "error"))[-1]["type"] == "mod-done"
        assert ben.closed_by_server()
        ann.send({"type": "mod", "action": "ban", "name": "ben", "duration": 600})
        assert ann.recv_until(lambda f: f["type"] in ("mod-done", "error"))[-1]["type"] == "mod-done"
        deadline = time.monotonic() + 10
        while True:  # (the ban is a hint to the other node: it takes effect within moments)
            again = RawClient(nodes[1].port).login("ben")
            if again[-1].get("code") == "banned" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again[-1].get("code") == "banned", again[-1]

        ann.send({"type": "mod", "action": "rotate", "passkey": "fresh-passkey"})
        assert ann.recv_until(lambda f: f["type"] in ("mod-done", "error"))[-1]["type"] == "mod-done"
        deadline = time.monotonic() + 10
        while True:
            old = RawClient(nodes[1].port).login("cy")
            if old[-1].get("code") == "bad-passkey" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert old[-1].get("code") == "bad-passkey", old[-1]
        assert RawClient(nodes[1].port).login("cy", passkey="fresh-passkey")[-1]["type"] == "synced"
    finally:
        for node in nodes:
            node.close()


def test_without_notifications_nodes_poll_and_listen_again(tmp_path, database, pg_server):
    """The notification connection is cut: messages still cross (each node reads the database every second),
    and the node listens again."""
    import psycopg

    nodes = start_nodes(tmp_path, database, 2)
    try:
        ann, ben = Member("ann"), Member("ben")
        ann.connect(nodes[0].port)
        ben.connect(nodes[1].port)
        with psycopg.connect(database, autocommit=True) as conn:
            cut = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name "
                               "LIKE 'tcpchat % listen'").fetchall()
            assert len(cut) == 2
            nodes[1].wait_for("Lost the notification connection")
            ann.say("while deaf", "d1")
            assert ben.pump(lambda: "while deaf" in ben.texts.values(), timeout=10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # bounded: both listen again (after a heartbeat interval)
                (listening,) = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                            "LIKE 'tcpchat % listen'").fetchone()
                if listening == 2:
                    break
                time.sleep(0.2)
            assert listening == 2
    finally:
        for node in nodes:
            node.close()


def test_postgresql_restarting_pauses_acks_and_resumes_them(tmp_path):
    """PostgreSQL stops: a message is refused as store-busy (nothing half-written), the node stays up; once
    PostgreSQL is back the same message is stored once and acknowledged."""
    from . import pgserver

    if pgserver.binaries() is None:
        pytest.skip("PostgreSQL is not installed")
    pg = pgserver.PgServer().start()
    try:
        pg.sql("CREATE DATABASE restart")
        dsn = pg.dsn_for("restart")
        (node,) = start_nodes(tmp_path, dsn, 1)
        ann = Member("ann")
        ann.connect(node.port)
        ann.say("before", "b1")
        assert ann.pump(lambda: not ann.unacked)
        pg.stop()
        ann.say("during", "d1")
        assert ann.pump(lambda: any(f["type"] == "error" and f.get("code") == "store-busy" for f in ann.frames))
        pg.start()
        deadline = time.monotonic() + 30
        while ann.unacked and time.monotonic() < deadline:  # the client's retry, as an outbox does it
            ann.resend()
            ann.pump(lambda: not ann.unacked, timeout=1.0)
        assert not ann.unacked
        assert [row[3] for row in stored_messages(dsn)] == ["before", "during"]
        node.close()
    finally:
        pg.destroy()


def test_a_dead_nodes_users_are_written_off(tmp_path, database):
    """A node killed whose users do not come back: the others hear them leave ("lost") once the node has not
    been heard for --dead-node-after seconds; their names are free again."""
    nodes = start_nodes(tmp_path, database, 2, 1, "--dead-node-after", "3")
    try:
        ann, ben = Member("ann"), Member("ben")
        ann.connect(nodes[0].port)
        ben.connect(nodes[1].port)
        assert ann.pump(lambda: any(f.get("kind") == "join" and f["name"] == "ben" for f in ann.frames))
        nodes[1].kill()
        killed = time.monotonic()
        assert ann.pump(lambda: any(f.get("kind") == "leave" and f["name"] == "ben" and f.get("reason") == "lost"
                                    for f in ann.frames), timeout=20)
        assert 3 <= time.monotonic() - killed < 12
        assert RawClient(nodes[0].port).login("ben")[-1]["type"] == "synced"
    finally:
        for node in nodes:
            node.close()
