"""Shared fixtures: an in-memory server wired to StringTransports."""

from __future__ import annotations

import os
import struct
from typing import Any, Dict, List, Optional

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection

from tcpchat import wire
from tcpchat.auth import PasskeyVerifier
from tcpchat.server.chat import ChatFactory, Limits
from tcpchat.server.files import FileService
from tcpchat.store.sqlite import Store

PASSKEY = "abcde-fghjk"


#: the engine make_factory's stores use: "sqlite", or "postgresql" (set per test by conftest's ``store_engine``)
ENGINE = "sqlite"
#: the test PostgreSQL server (tests.pgserver.PgServer), started once when a test first needs it
PG: Any = None
_schemas = iter(range(1, 10**9))
_schema_of: Dict[str, str] = {}


def new_store(tmp_path: Any) -> Any:
    """A synchronous store of the engine under test: SQLite in ``tmp_path``, or a new PostgreSQL schema."""
    if ENGINE == "sqlite":
        return Store(str(tmp_path / "chat.sqlite3"))
    from tcpchat.store.postgres import PgStore

    schema = _schema_of.get(str(tmp_path))  # the same directory: the same database (a restart)
    if schema is None:
        schema = _schema_of[str(tmp_path)] = f"t{os.getpid()}_{next(_schemas)}"
        PG.sql(f"CREATE SCHEMA {schema}")
    return PgStore(PG.dsn + f"?options=-csearch_path%3D{schema}")


def make_factory(tmp_path: Any, files: bool = False, store: Optional[Store] = None, admin_passkey: Optional[str] = None,
                 **limits: Any) -> ChatFactory:
    """A started server with a synchronous store (SQLite, or PostgreSQL: ``ENGINE``) and a fake clock."""
    clock = task.Clock()
    clock.advance(1_700_000_000)
    store = store or new_store(tmp_path)
    limits.setdefault("message_rate", 0)  # tests send bursts; the rate limit has tests of its own
    factory = ChatFactory(store, PasskeyVerifier(PASSKEY), clock, "test server", Limits(**limits),
                          admin_passkey=admin_passkey)
    if files:
        factory.files = FileService(factory, str(tmp_path / "files"))
    factory.start()
    return factory


class Peer:
    """One connection to ``factory`` over a StringTransport, with frame helpers."""

    _port = 40000

    def __init__(self, factory: ChatFactory, host: str = "192.0.2.10") -> None:
        Peer._port += 1
        self.factory = factory
        self.proto = factory.buildProtocol(IPv4Address("TCP", host, Peer._port))
        self.transport = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", host, Peer._port))
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        self._buffer = b""

    def send(self, frame: Dict[str, Any]) -> None:
        self.send_payload(wire.encode(frame))

    def send_payload(self, payload: bytes) -> None:
        self.proto.dataReceived(struct.pack(">I", len(payload)) + payload)

    def frames(self) -> List[Any]:
        """Every frame written to this peer since the last call, decoded."""
        out, self._buffer = split_frames(self._buffer + self.transport.value(), wire.SERVER_FRAMES)
        self.transport.clear()
        return out

    def login(self, name: str, passkey: str = PASSKEY, **extra: Any) -> List[Any]:
        self.send({"type": "hello", "version": 1, "name": name, "passkey": passkey, **extra})
        return self.frames()

    @property
    def connected(self) -> bool:
        return self.transport.connected


def split_frames(buffer: bytes, table: Any = wire.CLIENT_FRAMES) -> tuple:
    """Decode the whole length-prefixed frames at the start of ``buffer``: (frames, what is left)."""
    out = []
    while len(buffer) >= 4:
        (n,) = struct.unpack(">I", buffer[:4])
        if len(buffer) < 4 + n:
            break
        out.append(wire.decode(buffer[4 : 4 + n], table))
        buffer = buffer[4 + n :]
    return out, buffer


def kinds(frames: List[Any]) -> List[str]:
    return [f["type"] if isinstance(f, dict) else "data" for f in frames]
