"""
Coverage-guided fuzzing of the frame decoder and the server protocol with atheris.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_wire.py -max_total_time=300

The property: ``wire.decode`` raises nothing but ``ProtocolError``, and a
server connection fed any bytes answers without an internal error.  (The test
suite checks the same with hypothesis; this is the by-hand, longer-running
version.)
"""

import sys

import atheris

with atheris.instrument_imports():
    from tcpchat import wire

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection

from tcpchat.auth import PasskeyVerifier
from tcpchat.server.chat import ChatFactory, Limits
from tcpchat.store.sqlite import Store

clock = task.Clock()
factory = ChatFactory(Store(":memory:"), PasskeyVerifier("abcde-fghjk"), clock, "fuzz", Limits(message_rate=0))
factory.start()


def one_input(data: bytes) -> None:
    try:
        wire.decode(data)
    except wire.ProtocolError:
        pass
    proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
    transport = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", "192.0.2.1", 1))
    transport.protocol = proto
    proto.makeConnection(transport)
    proto.dataReceived(data)
    assert b"internal-error" not in transport.value(), transport.value()
    transport.loseConnection()


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
