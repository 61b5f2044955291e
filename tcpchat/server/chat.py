"""
The chat server's shared state and rules: the Factory.

:class:`ChatFactory` holds what every connection shares (the passkey verifier,
who is logged in, the recent conversation, the group-commit journal) and
builds one :class:`tcpchat.server.protocol.ChatProtocol` per TCP connection.
It never touches sockets itself: it knows connected users only as sessions
(:class:`tcpchat.server.session.ISession`), which call it, and which it calls
back through that contract and their delivery (``session.delivery.offer``).
"""

from __future__ import annotations

import bisect
import collections
import hmac
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tcpchat import wire
from tcpchat.auth import IPasskeyVerifier
from tcpchat.server.guard import ConnectionCaps, LoginGuard, TokenBucket
from tcpchat.server.journal import Journal
from tcpchat.server.metrics import Stats
from tcpchat.server.moderation import Moderation
from tcpchat.server.profiles import Profiles
from tcpchat.server.roster import Roster
from tcpchat.server.session import Shared
from tcpchat.server.social import DEFAULT_KEY, Audience, Directory, audience, can_see, placement
from tcpchat.store.errors import StoreBusy, StoreClosed
from tcpchat.store.sqlite import Event, Store


#: Presence listed in ``welcome`` and ``users`` frames, in bytes at most.
PRESENCE_BYTES = 64 * 1024
#: The audience of events everyone may read (the default room).
_EVERYONE = ("room", DEFAULT_KEY)


class Limits:
    """
    Tunable numbers of one server, with their documented defaults.
    """

    history = 50  #: events replayed on login
    welcome_users = 1000  #: names a welcome lists at most (with more online it says how many; ``who`` has more)
    recent_cache = 2048  #: committed events kept in memory for replay and catch-up
    login_timeout = 15.0  #: seconds a connection may take to log in
    login_attempts = 5  #: failed logins allowed on one connection
    ping_interval = 30.0  #: seconds of silence before the server pings
    ping_timeout = 30.0  #: seconds to answer a ping
    send_timeout = 120.0  #: seconds a client may read nothing while data waits for it
    sweep_interval = 5.0  #: how often timeouts are checked
    sendq = 256 * 1024  #: bytes queued to a slow reader before it falls back to catch-up
    batch_max = 1000  #: events written per group commit at most
    batch_bytes = 64 * 1024  #: ... and about this many bytes of text at most
    catchup_page = 200  #: events read from storage per catch-up step
    max_file_size = 1024**3  #: bytes
    max_storage = 10 * 1024**3  #: bytes of distinct file contents
    max_uploads = 4  #: concurrent uploads per connection
    upload_timeout = 60.0  #: seconds an upload may stall
    max_connections = 10000  #: open connections in all (0: no limit)
    max_per_address = 256  #: open connections from one address (0: no limit): a classroom behind one router
    max_login_waiters = 256  #: logins from one address waiting for a free login slot
    message_rate = 10.0  #: messages per second a user may keep sending (0: no limit)
    message_burst = 30.0  #: ... with bursts of this many
    pake_rate = 200.0  #: SPAKE2 logins started per second, server-wide
    away_after = 600.0  #: seconds without sending anything before a user is shown as away
    typing_interval = 2.0  #: a user's typing notices in one conversation are relayed at most this often
    action_rate = 20.0  #: other requests (search, join, read markers, ...) per second a user may keep sending
    action_burst = 60.0  #: ... with bursts of this many
    max_rooms = 1000  #: rooms on the server (besides the default one)
    max_joined = 100  #: rooms one user may be in
    handshake_timeout = 10.0  #: seconds a TLS connection may take to finish its handshake
    close_grace = 5.0  #: seconds a closing connection has to take what is queued before it is aborted
    prelogin_output = 64 * 1024  #: bytes the server sends a connection before it logs in, at most
    prelogin_rate = 5.0  #: frames per second a connection may send before logging in ...
    prelogin_burst = 20.0  #: ... with bursts of this many
    sendq_hard = 2 * 1024**2  #: bytes of answers queued to a peer that does not read before it is aborted
    max_reads = 4  #: database reads (history, search, ...) one connection may have in flight
    poll_hold = 20.0  #: seconds the HTTPS fallback holds a poll while there is nothing to send
    crowd = 200  #: with this many online, "roster" clients get joins and leaves as one roster frame per ...
    roster_interval = 1.0  #: ... this many seconds, not as an event each (tcpchat.server.roster)
    max_refused = 50  #: refused frames (invalid, over budget) a connection may send in a second before a second unread

    def __init__(self, **overrides: Any) -> None:
        for key, value in overrides.items():
            if not hasattr(Limits, key):
                raise TypeError(f"unknown limit {key!r}")
            setattr(self, key, value)

    def advertised(self) -> Dict[str, Any]:
        """The limits a client needs to know (sent in ``welcome``)."""
        return {
            "max_frame": wire.MAX_FRAME,
            "max_text_bytes": wire.MAX_TEXT_BYTES,
            "max_chunk": wire.MAX_CHUNK,
            "max_file_size": self.max_file_size,
            "ping_interval": self.ping_interval,
            "ping_timeout": self.ping_timeout,
            "away_after": self.away_after,
            "typing_interval": self.typing_interval,
        }


class ChatFactory(ConnectionCaps, Factory):
    """
    Shared state of one chat server.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        store: Store,
        verifier: IPasskeyVerifier,
        clock: Any,
        server_name: str = "tcpchat",
        limits: Optional[Limits] = None,
        files: Any = None,
        admin_passkey: Optional[str] = None,
        worker: Any = None,
    ) -> None:
        from tcpchat.server.protocol import ChatProtocol

        self.protocol = ChatProtocol
        self.store = store
        self.verifier = verifier
        self.clock = clock
        self.serverName = server_name
        #: ``tcpchat://…`` (no passkey) where people on the network join, once the service knows its addresses
        self.joinLink: Optional[str] = None
        self.limits = limits or Limits()
        self.files = files
        #: logged-in protocols by name key
        self.users: Dict[str, Any] = {}
        #: every open connection, logged in or not
        self.connections: Set[Any] = set()
        self.recent: Deque[Event] = collections.deque(maxlen=max(self.limits.recent_cache, self.limits.history))
        self.lastId = 0
        self.stopping = False
        #: what the server counts (tcpchat.server.metrics; scraped with --metrics)
        self.stats = Stats()
        self.journal = Journal(store, clock, self.limits, self._committed)
        self.journal.stats = self.stats
        self._sweeper: Optional[task.LoopingCall] = None
        self.perHost: Dict[str, int] = {}
        #: sockets accepted whose TLS has not started (counted in ``perHost`` too)
        self.waitingSockets = 0
        #: who is logged in, in the order of their name keys (kept sorted as people come and go)
        self._keys: List[str] = []
        self._names: List[str] = []
        self.guard = LoginGuard(clock)
        #: wrong admin passkeys, per address (10 per 10 min, then a lockout that doubles)
        self.operGuard = LoginGuard(clock)
        #: SPAKE2 costs milliseconds of CPU: a global budget keeps a login flood from starving the chat
        self.pakeBudget = TokenBucket(clock, self.limits.pake_rate, self.limits.pake_rate)
        #: runs blocking CPU work (password hashing) off the reactor thread: ``worker(f, *args)`` -> Deferred
        self.worker = worker or maybeDeferred
        self.directory = Directory()
        #: bios and pictures (feature "profiles")
        self.profiles = Profiles()
        #: joins and leaves in a crowd, for clients with the "roster" feature
        self.roster = Roster(self)
        #: the logged-in sessions that are away or have a status line (what ``presence()`` lists)
        self.marked: Set[Any] = set()
        self.moderation = Moderation(self, admin_passkey)
        #: the other nodes on the same database (tcpchat.server.cluster.Cluster), or None: alone
        self.cluster: Any = None
        #: called with the new passkey after an operator rotated it
        self.passkeyListeners: List[Any] = []
        #: connections aborted or refused since the last sweep, by reason (logged once per sweep, not per socket)
        self.tally: Dict[str, int] = collections.Counter()

    # ------------------------------------------------------------ lifecycle

    def start(self, sweeping: bool = True) -> Deferred:
        """
        Open storage and load the recent conversation; fires when ready.
        ``sweeping``: run :meth:`sweep` every ``Limits.sweep_interval`` (the
        server's service runs it with a ``TimerService`` instead).
        """

        async def start() -> None:
            self.lastId = await self.store.open()
            social = await self.store.load_social()
            self.directory.load(social)
            self.profiles.load(social.get("profiles", []))
            self.moderation.load(social["bans"])
            for event in await self.store.events_before(None, self.recent.maxlen or 0):
                self.recent.append(event)
            if self.files is not None:
                await self.files.start()
            if sweeping:
                self._sweeper = task.LoopingCall(self.sweep)
                self._sweeper.clock = self.clock
                self._sweeper.start(self.limits.sweep_interval, now=False)

        return Deferred.fromCoroutine(start())

    def stop(self) -> Deferred:
        """
        Tell everyone the server is going down, record their leaving, write
        everything pending and close storage.
        """

        async def stop() -> None:
            self.stopping = True
            if self._sweeper is not None and self._sweeper.running:
                self._sweeper.stop()
            leaving = []
            for session in list(self.connections):
                session.sendFrame({"type": "bye", "reason": "shutdown", "message": "The server is shutting down."})
                if session.name is not None:
                    leaving.append(self.submit(self.leaveEvent(session, "shutdown")))
            if leaving:
                await DeferredList(leaving, consumeErrors=True)
            await self.drained()
            await self.saveReads()
            await self.store.index_pending().addErrback(self.storeTrouble, "Could not update the search index")
            for session in list(self.connections):
                session.close()
            self.journal.closed = True
            await self.store.close()

        return Deferred.fromCoroutine(stop())

    # ------------------------------------------------------------ journal

    def submit(self, event: Dict[str, Any]) -> Deferred:
        """Store ``event`` (group commit, see :class:`Journal`); fires with ``(stored_event, duplicate)``."""
        return self.journal.submit(event)

    def drained(self) -> Deferred:
        return self.journal.drained()

    @property
    def closed(self) -> bool:
        return self.journal.closed

    def _committed(self, fresh: List[Event]) -> None:
        """Events just committed here (not duplicates): remember and deliver them, in id order (in a cluster,
        other nodes may have committed the ids before them: :mod:`tcpchat.server.cluster` fills the gap first)."""
        if self.cluster is None or self.cluster.inStep(fresh):
            self.absorb(fresh)

    def absorb(self, fresh: List[Event]) -> None:
        """Committed events that follow ``lastId`` without a gap: remember and deliver them."""
        events = self.stats.events
        for event in fresh:
            events[event["kind"]] += 1
            if event["kind"] == "delete":
                self._forget(event["target"])
            elif event["kind"] in ("edit", "react"):
                self._change(event)
        self.recent.extend(fresh)
        self.lastId = fresh[-1]["id"]
        self.broadcast(fresh)

    # ------------------------------------------------------------ delivery

    def broadcast(self, events: List[Event]) -> None:
        """
        Offer committed events (one group commit's worth) to every logged-in
        connection.  Each frame is encoded once; a connection gets the whole
        batch in one write.
        """
        shared = Shared([wire.encode({"type": "event", **event}) for event in events])
        senders = {event.get("name") for event in events if event["kind"] == "message"}
        audiences: Optional[List[Any]] = [audience(event) for event in events]
        if all(aud == _EVERYONE for aud in audiences or ()):
            # the usual case: everyone may read all of it, and most connections get exactly
            # the same bytes: each transport frames them once for all its connections
            audiences = None
        quiet = self.roster.quiet(events, shared, audiences)  # (in a crowd: the batch without joins and leaves)
        for session in self.roster.audience(events, quiet):
            session.delivery.offer(events, shared, senders, audiences, quiet)

    def _forget(self, event_id: int) -> None:
        """A deleted message leaves the in-memory conversation too."""
        i = self._recentPosition(event_id)
        if i is not None:
            old = self.recent[i]
            tomb: Dict[str, Any] = {k: old[k] for k in ("id", "ts", "room", "to", "name") if k in old}
            tomb["kind"] = "deleted"
            self.recent[i] = tomb

    def _change(self, event: Dict[str, Any]) -> None:
        """An edit or a reaction changes the message it names in memory too (as the store did)."""
        i = self._recentPosition(event["target"])
        if i is None or self.recent[i]["kind"] not in ("message", "file"):
            return
        old = self.recent[i]
        if event["kind"] == "edit" and old["kind"] == "message":
            self.recent[i] = wire.apply_edit(old, event)
        elif event["kind"] == "react":
            self.recent[i] = wire.apply_reaction(old, event)

    def _recentIndex(self, event_id: int) -> int:
        """Index in ``recent`` of the first event with an id of at least ``event_id``."""
        recent = self.recent
        lo, hi = 0, len(recent)
        while lo < hi:
            mid = (lo + hi) // 2
            if recent[mid]["id"] < event_id:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _recentPosition(self, event_id: int) -> Optional[int]:
        """Where event ``event_id`` is in ``recent``, if memory holds it."""
        i = self._recentIndex(event_id)
        return i if i < len(self.recent) and self.recent[i]["id"] == event_id else None

    def findEvent(self, event_id: int) -> Deferred:
        """Fires with a stored event (from memory when it is there) or None."""
        i = self._recentPosition(event_id)
        if i is not None:
            return succeed(self.recent[i])
        return self.store.get_event(event_id).addCallback(lambda row: None if row is None else row[0])

    def recentAfter(self, after: int, limit: int) -> Optional[List[Event]]:
        """
        Up to ``limit`` committed events after ``after`` from memory, or None
        when memory no longer holds the event that follows ``after``.
        """
        recent = self.recent
        if after >= self.lastId:
            return []
        if not recent or recent[0]["id"] > after + 1:
            return None
        lo = self._recentIndex(after + 1)
        out = []
        for i in range(lo, min(lo + limit, len(recent))):
            out.append(recent[i])
        return out

    def eventsAfter(self, after: int, limit: int) -> Deferred:
        """Committed events after ``after``: from memory when it has them."""
        cached = self.recentAfter(after, limit)
        if cached is not None:
            return succeed(cached)
        return self.store.events_after(after, limit)

    def replayStart(self, session: Any, after: Optional[int]) -> int:
        """
        The id after which a freshly logged-in connection's replay starts:
        ``after`` if it asked, else just before the latest ``Limits.history``
        events it may read (looked for among the events held in memory).
        """
        if after is not None:
            return min(after, self.lastId)
        history = self.limits.history
        if history <= 0 or not self.recent:
            return self.lastId
        count = 0
        for event in reversed(self.recent):
            if event["kind"] != "deleted" and can_see(session, audience(event)):
                count += 1
                if count == history:
                    return event["id"] - 1
        return self.recent[0]["id"] - 1

    # ------------------------------------------------------------ rules

    def register(self, session: Any, name: str, token: Optional[str]) -> str:
        """
        Give ``name`` to ``session`` (whose passkey is proved), or raise
        ``name-taken``.  A reconnecting client that shows the session token of
        a connection we have not yet seen die takes that name over.
        """
        key = wire.name_key(name)
        if self.cluster is not None and self.cluster.elsewhere(key):
            raise wire.ProtocolError(wire.ErrorCode.NAME_TAKEN)
        holder = self.users.get(key)
        if holder is not None:
            if token is None or not hmac.compare_digest(token, holder.session):
                raise wire.ProtocolError(wire.ErrorCode.NAME_TAKEN)
            # the same client is back before we noticed its old connection die
            self.log.info("{name} reconnected; closing the stale connection from {peer}", name=holder.name, peer=holder.peer)
            holder.leaveReason = "lost"
            self.logout(holder, "lost")
            holder.abort("replaced")
        self.users[key] = session
        at = bisect.bisect_left(self._keys, key)
        self._keys.insert(at, key)
        self._names.insert(at, name)
        return name

    def logout(self, session: Any, reason: str) -> None:
        """``session`` (logged in) went away: forget it and record its leaving once."""
        key = wire.name_key(session.name)
        self.roster.plain.discard(session)
        self.marked.discard(session)
        if self.users.get(key) is session:
            del self.users[key]
            self.dropName(key)
            if not self.stopping:
                self.submit(self.leaveEvent(session, reason)).addErrback(lambda f: None)

    def dropName(self, key: str) -> None:
        """Take ``key`` out of the sorted list of who is logged in here."""
        at = bisect.bisect_left(self._keys, key)
        if at < len(self._keys) and self._keys[at] == key:
            del self._keys[at]
            del self._names[at]

    def joinEvent(self, session: Any) -> Dict[str, Any]:
        event = {"kind": "join", "name": session.name, "nkey": session.nkey, **self.lobby()}
        if self.cluster is not None:  # (not on the wire: the store keeps who is online where, and the token's hash)
            event["token"] = self.cluster.tokenOf(session)
        return event

    def leaveEvent(self, session: Any, reason: str) -> Dict[str, Any]:
        return {"kind": "leave", "name": session.name, "reason": reason, **self.lobby()}

    def lobby(self) -> Dict[str, str]:
        """The event fields of the default room."""
        return {"room": self.directory.rooms[DEFAULT_KEY], **placement(_EVERYONE)}

    def presence(self) -> Dict[str, Dict[str, Any]]:
        """Who is away or has a status line: name -> {"away", "status"}."""
        out, size = {}, 0
        for session in self.marked:  # (only those away or with a status: a crowd's logins cost the same)
            if session.away or session.status:
                size += 4 * (len(session.name) + len(session.status)) + 40
                if size > PRESENCE_BYTES:
                    break  # bounded: a login never gets a frame it cannot take
                out[session.name] = {"away": session.away, "status": session.status}
        return out

    def tell(self, frame: Dict[str, Any], sessions: Any, exclude: Any = None) -> None:
        """Send one frame (not an event: nothing stored) to these sessions."""
        shared = Shared([wire.encode(frame)])
        for session in sessions:
            if session is exclude or not session.delivery.live or session.delivery.slow():
                continue  # a hint is not worth growing a slow reader's queue
            session.deliver(shared.payloads, shared)

    def tellEveryone(self, frame: Dict[str, Any], feature: str, exclude: Any = None, here: bool = False) -> None:
        """Send a hint to everyone logged in whose client asked for ``feature`` (on every node unless ``here``)."""
        self.tell(frame, [p for p in self.users.values() if getattr(p, feature)], exclude)
        if self.cluster is not None and not here:
            self.cluster.publish("all", feature=feature, frame=frame)

    def tellConversation(self, aud: Audience, frame: Dict[str, Any], exclude: Any = None) -> None:
        """Send a hint (typing, read marker) to everyone logged in who may read conversation ``aud``."""
        self.tell(frame, [p for p in self.users.values() if can_see(p, aud)], exclude)
        if self.cluster is not None and exclude is not None:  # (exclude: said here, so the other nodes hear it)
            self.cluster.publish("conv", aud=aud, frame=frame)

    def saveReads(self) -> Deferred:
        """Store read markers that moved (they are hints: a crash may lose the last few seconds)."""
        dirty = self.directory.take_dirty()
        if not dirty:
            return succeed(None)
        return self.store.save_reads(dirty).addErrback(
            self.storeTrouble, "Could not store read markers")

    def onPasskeyRotated(self, passkey: str) -> None:
        self.log.info("The passkey was changed by an operator; new logins need the new one")
        for listener in self.passkeyListeners:
            listener(passkey)

    def userNames(self, limit: Optional[int] = None) -> List[str]:
        """Who is logged in (the first ``limit``), by name key (a copy: kept sorted as people come and go)."""
        if self.cluster is not None:
            return self.cluster.names(self._keys, self._names)[:limit]
        return self._names[:limit]

    def onlineCount(self) -> int:
        """How many are logged in (on every node of a cluster)."""
        return len(self._names) + (len(self.cluster.remote) if self.cluster is not None else 0)

    def storeTrouble(self, failure: Any, what: str) -> None:
        """Background storage work failed: a busy or unreachable database is a warning (it is retried), the
        rest a traceback."""
        if failure.check(StoreBusy, StoreClosed):
            self.log.warn("{what}: {why} (tried again later)", what=what, why=failure.getErrorMessage())
        else:
            self.log.failure(what, failure)

    def noteAbort(self, session: Any, why: str) -> None:
        """A connection was aborted or refused: counted, and logged once per sweep (a flood must not flood the log)."""
        self.tally[why] += 1

    def read(self, session: Any, method: Any, *args: Any, **kwargs: Any) -> Deferred:
        """
        Run a store read for ``session``: at most ``Limits.max_reads`` in flight per
        connection (past that its further requests wait unread), and skipped on
        the database thread if the connection has gone meanwhile.
        """
        session.readsInFlight += 1
        if session.readsInFlight >= self.limits.max_reads:
            session.holdReading("reads")

        def done(result: Any) -> Any:
            session.readsInFlight -= 1
            session.releaseReading("reads")
            return result

        return method(*args, wanted=session.isOpen, **kwargs).addBoth(done)

    def sweep(self) -> None:
        """Apply every time limit to every connection (runs periodically)."""
        if self.tally:
            self.log.info("Connections dropped or refused in the last {interval} s: {tally}",
                          interval=self.limits.sweep_interval,
                          tally=", ".join(f"{n} {why}" for why, n in sorted(self.tally.items())))
            self.tally.clear()
        now = self.clock.seconds()
        for session in list(self.connections):
            session.checkTimeouts(now)
        self.saveReads()
        self.store.index_pending().addErrback(self.storeTrouble, "Could not update the search index")
        if self.files is not None:
            self.files.sweep(now)
        self.guard.prune()
        self.operGuard.prune()
