#!/usr/bin/env python3
"""
The floor for the benchmark: a bare Twisted relay speaking just enough of tcpchat's protocol for bench.py's
tcpchat load (hello -> welcome + synced; say -> an ack to the sender and the event to everyone else), with no
storage, no rules and no limits.  Whatever tcpchat costs above this is its own; below it, Twisted and Python.

    python benchmarks/relay.py PORT        (0: any free port; prints "relay listening on PORT")
"""

import json
import struct
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver


class Relay(Int32StringReceiver):
    MAX_LENGTH = 1 << 20

    def connectionMade(self):
        self.name = None
        self.next = 0

    def connectionLost(self, reason=None):
        self.factory.clients.discard(self)

    def frame(self, frame):
        payload = json.dumps(frame, separators=(",", ":")).encode()
        self.transport.write(struct.pack(">I", len(payload)) + payload)

    def stringReceived(self, payload):
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "hello":
            self.name = frame["name"]
            self.factory.clients.add(self)
            self.frame({"type": "welcome", "version": 1, "name": self.name, "server": "relay", "users": []})
            self.frame({"type": "synced", "last": self.factory.last})
        elif kind == "say":
            factory = self.factory
            factory.last += 1
            event = json.dumps({"type": "event", "id": factory.last, "ts": 0, "kind": "message", "name": self.name,
                                "text": frame["text"]}, separators=(",", ":")).encode()
            framed = struct.pack(">I", len(event)) + event  # encoded and framed once for everyone
            for client in factory.clients:
                if client is not self:
                    client.transport.write(framed)
            self.frame({"type": "ack", "id": factory.last, "ts": 0, "cid": frame.get("cid")})
        elif kind == "ping":
            self.frame({"type": "pong"})


class RelayFactory(Factory):
    protocol = Relay

    def __init__(self):
        self.clients = set()
        self.last = 0


if __name__ == "__main__":
    port = reactor.listenTCP(int(sys.argv[1]), RelayFactory(), interface="127.0.0.1", backlog=4096)
    print(f"relay listening on {port.getHost().port}", flush=True)
    reactor.run()
