"""
Several tcpchat nodes on one PostgreSQL database: one conversation.

Each node is a whole server (its own listeners, sessions and rules); what
they share is the database (:class:`tcpchat.store.postgres.PgStore`), which
gives every event its id in commit order without gaps.  This module keeps a
node in step with the others:

* **Events.**  A commit anywhere runs ``pg_notify`` (channel
  ``tcpchat_events``); each node LISTENs on a connection of its own, read by
  the reactor (no thread waits on it), and then reads what follows its
  ``lastId`` from the database and delivers it in id order, exactly as if it
  had committed it itself.  A node's own commit that does not follow its
  ``lastId`` (another node committed in between) waits until the gap is read.
  Without notifications (the listening connection lost) each node reads
  every :attr:`Cluster.poll` seconds anyway: slower, never lost.
* **Who is online.**  ``join`` and ``leave`` events say who is on which node
  (the store keeps an ``online`` table in the same transactions); a name
  held on another node is taken (``name-taken``), unless the client shows
  that connection's session token (a reconnect to another node): then the
  old holder is written off and the name moves here.
* **A node that dies** stops writing its heartbeat (every
  :attr:`Cluster.heartbeat` seconds); after :attr:`Cluster.dead_after`
  seconds the first living node writes a ``leave`` ("lost") for each of its
  users, as their own server would have.
* **Hints** (typing, read markers, presence, profiles, bans, passkey
  rotation) cross on the channel ``tcpchat_hints`` as JSON; they are not
  stored, and a node that misses one loses only a hint.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from typing import Any, Dict, List, Optional, Set

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from tcpchat import wire
from tcpchat.server.table import CHECKING
from tcpchat.store.postgres import CHANNEL

HINTS = "tcpchat_hints"
#: PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more: bigger hints are not sent (they are hints)
HINT_BYTES = 7900


def token_hash(token: Optional[str]) -> Optional[str]:
    """What the database keeps of a session token: enough to recognise it, not to use it."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


@implementer(IReadDescriptor)
class _Listening:
    """A LISTENing PostgreSQL connection read by the reactor when its socket is readable."""

    def __init__(self, cluster: "Cluster", conn: Any) -> None:
        self.cluster = cluster
        self.conn = conn
        # the reactor watches a duplicate of libpq's socket: libpq closes its own when the connection fails,
        # and the reactor must still be able to stop watching the one it was given
        self.fd = os.dup(conn.pgconn.socket)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "tcpchat-listen"

    def doRead(self) -> Any:
        import psycopg

        pgconn = self.conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as e:
            return e  # the reactor calls connectionLost
        while True:
            note = pgconn.notifies()
            if note is None:
                return None
            self.cluster.notified(note.relname.decode(), note.extra.decode("utf-8", "replace"))

    def connectionLost(self, reason: Any) -> None:
        self.cluster.listenerLost(self)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Cluster:
    log = Logger()
    #: seconds between heartbeats; a node not heard for ``dead_after`` seconds is dead
    heartbeat = 2.0
    dead_after = 10.0
    #: seconds between reads of the database when no notification came
    poll = 1.0

    def __init__(self, factory: Any, store: Any, reactor: Any, address: str = "", shared_passkey: bool = True) -> None:
        self.factory = factory
        self.store = store
        self.reactor = reactor
        self.node: str = store.node
        #: where clients reach this node (told to the others, for the welcome's list of nodes)
        self.address = address
        #: name key -> (name, node) of users logged in on other nodes
        self.remote: Dict[str, Any] = {}
        self._remoteKeys: List[str] = []
        #: ids this node committed that were not yet delivered (a gap before them was being read)
        self._mine: Set[int] = set()
        self._following = False
        self._again = False
        self._listening: Optional[_Listening] = None
        self._loops: List[task.LoopingCall] = []
        self._stopped = False
        self.started = False
        #: the other living nodes' addresses (node -> address)
        self.nodes: Dict[str, str] = {}
        #: the passkey is the cluster's (kept in the database), not this node's data directory's
        self.sharedPasskey = shared_passkey
        factory.cluster = self
        factory.passkeyListeners.append(self._rotated)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> Optional[str]:
        """After the factory started: learn who is online elsewhere, listen, beat. Fires with the cluster's
        passkey (the first node's, kept in the database) when the passkey is shared, else None."""
        self.started = True
        passkey = None
        if self.sharedPasskey:
            passkey = await self.store.shared_passkey(self.factory.verifier.passkey)
            if passkey != self.factory.verifier.passkey:
                self.factory.verifier.rotate(passkey)
        for nkey, name, node in await self.store.online_users():
            if node != self.node:
                self._addRemote(nkey, name, node)
            elif nkey not in self.factory.users:  # left over from this node's previous life (a crash)
                self.factory.submit({"kind": "leave", "name": name, "reason": "lost",
                                     **self.factory.lobby()}).addErrback(lambda f: None)
        await self.store.heartbeat(self.address, self.reactor.seconds())
        self._listen()
        for interval, f in ((self.poll, self.follow), (self.heartbeat, self.beat)):
            loop = task.LoopingCall(f)
            loop.clock = self.reactor
            loop.start(interval, now=False)
            self._loops.append(loop)
        self.log.info("Node {node} joined the cluster ({count} users online on other nodes)", node=self.node,
                      count=len(self.remote))
        return passkey

    def _rotated(self, passkey: str) -> None:
        if self.sharedPasskey:
            self.store.set_meta("passkey", passkey).addErrback(
                lambda f: self.log.failure("Could not keep the new passkey in the database", f))

    def stop(self) -> None:
        self._stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._dropListener()

    # ------------------------------------------------------------ notifications

    def _listen(self) -> None:
        if self._stopped or self._listening is not None:
            return
        dsn = self.store.dsn

        def connect() -> Any:
            import psycopg

            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5,
                                   application_name=f"tcpchat {self.node} listen")
            conn.execute(f"LISTEN {CHANNEL}")
            conn.execute(f"LISTEN {HINTS}")
            return conn

        def connected(conn: Any) -> None:
            if self._stopped:
                conn.close()
                return
            self._listening = _Listening(self, conn)
            self.reactor.addReader(self._listening)
            self.follow()  # what was committed while nobody listened

        def failed(failure: Any) -> None:
            self.log.warn("Cannot listen for the other nodes ({why}); reading the database every {poll} s",
                          why=failure.getErrorMessage().strip(), poll=self.poll)
            if not self._stopped:
                self.reactor.callLater(self.heartbeat, self._listen)

        deferToThread(connect).addCallbacks(connected, failed)

    def listenerLost(self, listening: _Listening) -> None:
        if listening is not self._listening:
            return
        self.log.warn("Lost the notification connection to the database; reading it every {poll} s until it "
                      "is back", poll=self.poll)
        self._dropListener()
        if not self._stopped:
            self.reactor.callLater(self.heartbeat, self._listen)

    def _dropListener(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            self.reactor.removeReader(listening)
            listening.close()

    def notified(self, channel: str, payload: str) -> None:
        if channel == CHANNEL:
            last, _, node = payload.partition(" ")
            if node != self.node and last.isdigit() and int(last) > self.factory.lastId:
                self.follow()
        elif channel == HINTS:
            self._hint(payload)

    # ------------------------------------------------------------ events in id order

    def inStep(self, fresh: List[Dict[str, Any]]) -> bool:
        """This node committed ``fresh``: True if they may be delivered now (nothing missing before them)."""
        last = self.factory.lastId
        if fresh[0]["id"] == last + 1:
            return True
        if fresh[-1]["id"] <= last:
            return False  # already read back from the database (a commit is seen whole or not at all) and delivered
        self._mine.update(e["id"] for e in fresh)
        self.follow()
        return False

    def follow(self) -> Optional[Deferred]:
        """Read and deliver, in id order, what the database holds after ``lastId`` (one reader at a time)."""
        if self._following:
            self._again = True
            return None
        self._following = True

        async def follow() -> None:
            factory = self.factory
            try:
                while not self._stopped and not factory.closed:
                    self._again = False
                    events = await self.store.events_after(factory.lastId, factory.limits.catchup_page)
                    fresh = [e for e in events if e["id"] > factory.lastId]
                    if fresh and fresh[0]["id"] == factory.lastId + 1:
                        for event in fresh:
                            if event["id"] in self._mine:
                                self._mine.discard(event["id"])
                            else:
                                self._effects(event)
                        factory.absorb(fresh)
                    if len(events) < factory.limits.catchup_page and not self._again:
                        return
            finally:
                self._following = False

        d = Deferred.fromCoroutine(follow())
        d.addErrback(lambda f: self.log.warn("Could not read the other nodes' events ({why}); trying again",
                                             why=f.getErrorMessage()))
        return d

    def _effects(self, event: Dict[str, Any]) -> None:
        """What another node's event changes in this node's memory (its own rules changed it there)."""
        factory = self.factory
        kind, name = event["kind"], event.get("name") or ""
        key = wire.name_key(name) if name else ""
        if kind == "join":
            factory.directory.known[key] = name
            self._writtenOff(key, name)  # (a client that reconnected to another node)
            self._addRemote(key, name, "?")
        elif kind == "leave":
            self._dropRemote(key)
            self._writtenOff(key, name)  # (another node took the name over, or thought this node dead)
        elif kind == "room-join":
            factory.directory.join(event["room"], key, name)
        elif kind == "room-leave":
            try:
                factory.directory.leave(event["room"], key)
            except wire.ProtocolError:
                pass

    def _writtenOff(self, key: str, name: str) -> None:
        """Another node says ``key`` is not here any more: close its connection here without a ``leave``
        (the store would not keep one: the user is online on that node now)."""
        factory = self.factory
        holder = factory.users.get(key)
        if holder is not None:
            self.log.info("{name} is on another node now; closing its connection here", name=name)
            del factory.users[key]
            factory.dropName(key)
            factory.roster.plain.discard(holder)
            factory.marked.discard(holder)
            holder.abort("replaced")

    # ------------------------------------------------------------ who is online

    def _addRemote(self, key: str, name: str, node: str) -> None:
        if key not in self.remote:
            import bisect

            bisect.insort(self._remoteKeys, key)
        self.remote[key] = (name, node)

    def _dropRemote(self, key: str) -> None:
        if self.remote.pop(key, None) is not None:
            import bisect

            at = bisect.bisect_left(self._remoteKeys, key)
            if at < len(self._remoteKeys) and self._remoteKeys[at] == key:
                del self._remoteKeys[at]

    @staticmethod
    def tokenOf(session: Any) -> Optional[str]:
        return token_hash(session.session)

    def elsewhere(self, key: str) -> bool:
        """Is the name ``key`` logged in on another node?"""
        return key in self.remote

    def names(self, keys: List[str], names: List[str]) -> List[str]:
        """Everyone logged in on any node, in name-key order: this node's (``keys``/``names``) and the others'."""
        if not self.remote:
            return list(names)
        remote = ((k, self.remote[k][0]) for k in self._remoteKeys)
        return [name for _, name in heapq.merge(zip(keys, names), remote)]

    def claim(self, login: Any, frame: Dict[str, Any], name: str) -> None:
        """
        ``name`` is held on another node and the client showed a session token: if it is that
        connection's, write the old holder off ("lost") and complete the login here.
        """
        session = login.session
        key = wire.name_key(name)
        token = frame.get("session")
        state = session.state

        def checked(holder: Any) -> None:
            if session.state != CHECKING:
                return  # gone meanwhile
            session.state = state
            if holder is None:
                self._dropRemote(key)  # it left meanwhile
            elif token_hash(token) == holder[1]:
                self.log.info("{name} reconnected here from node {node}", name=name, node=holder[0])
                old = self.remote.get(key, (name,))[0]
                self._dropRemote(key)
                self.factory.submit({"kind": "leave", "name": old, "reason": "lost", "node": holder[0],
                                     **self.factory.lobby()}).addErrback(lambda f: None)
            try:
                login.complete(frame, name)
            except wire.ProtocolError as e:
                login.failed(e)

        session.state = CHECKING
        d = self.store.online_holder(key)
        d.addCallback(checked)
        d.addErrback(session.internal, "hello")

    # ------------------------------------------------------------ the living and the dead

    def beat(self) -> Optional[Deferred]:
        """Say we are alive; the first living node writes off the users of nodes that are not."""
        if self._stopped:
            return None
        now = self.reactor.seconds()

        async def beat() -> None:
            await self.store.heartbeat(self.address, now)
            if self._stopped:
                return
            seen = await self.store.cluster(now - self.dead_after)
            self.nodes = {node: address for node, address in seen["alive"] if node != self.node}
            living = sorted({node for node, _ in seen["alive"]} | {self.node})
            if living[0] != self.node:
                return  # another node reaps
            for node, users in seen["dead"].items():
                self.log.warn("Node {node} has not been heard for {after} s: {count} users there are written off",
                              node=node, after=self.dead_after, count=len(users))
                for nkey, name in users:
                    self._dropRemote(nkey)
                    await self.factory.submit({"kind": "leave", "name": name, "reason": "lost", "node": node,
                                               **self.factory.lobby()})
                await self.store.forget_node(node)

        d = Deferred.fromCoroutine(beat())
        d.addErrback(lambda f: None if self._stopped else self.log.warn("Cluster heartbeat failed: {why}",
                                                                        why=f.getErrorMessage()))
        return d

    # ------------------------------------------------------------ hints

    def publish(self, kind: str, **payload: Any) -> None:
        """Tell the other nodes a hint (not stored; dropped when too big)."""
        text = json.dumps({"k": kind, "n": self.node, **payload}, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) > HINT_BYTES:
            return
        self.store.notify(HINTS, text).addErrback(lambda f: None)

    def _hint(self, payload: str) -> None:
        try:
            hint = json.loads(payload)
        except ValueError:
            return
        if not isinstance(hint, dict) or hint.get("n") == self.node:
            return
        factory = self.factory
        kind = hint.get("k")
        if kind == "conv" and isinstance(hint.get("aud"), list):
            factory.tell(hint["frame"], [p for p in factory.users.values() if _can_see(p, tuple(hint["aud"]))])
        elif kind == "all" and hint.get("feature") in ("rich", "profiles"):
            factory.tellEveryone(hint["frame"], hint["feature"], here=True)
        elif kind == "mod" and isinstance(hint.get("frame"), dict):
            factory.moderation.remote(hint.get("action"), hint["frame"]).addErrback(
                lambda f: self.log.failure("Could not apply another node's moderation", f))


def _can_see(session: Any, aud: Any) -> bool:
    from tcpchat.server.social import can_see

    return bool(can_see(session, aud))


class ClusterService(service.Service):
    """Runs a :class:`Cluster` while the server runs (started once storage is open, stopped before it closes)."""

    def __init__(self, cluster: Cluster, chat: Any) -> None:
        self.cluster = cluster
        self.chat = chat

    def startService(self) -> None:
        super().startService()

        def started(passkey: Optional[str]) -> None:
            if passkey is not None:
                self.chat.passkey = passkey  # (for the banner: the cluster's, not this data directory's)
            self.chat._storageReady()  # now listen

        Deferred.fromCoroutine(self.cluster.start()).addCallbacks(started, self.chat._failed)

    def stopService(self) -> Any:
        super().stopService()
        self.cluster.stop()
