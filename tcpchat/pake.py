"""
The login proof: SPAKE2 over the passkey, bound to the TLS session.

Both sides run SPAKE2 (the ``spake2`` package, Ed25519 group, identities
``tcpchat client`` / ``tcpchat server``) with the canonical passkey as the
password, then prove they reached the same key *and* see the same TLS session:

    server_confirm = HMAC-SHA256(K, "tcpchat server confirm" || cb)
    client_confirm = HMAC-SHA256(K, "tcpchat client confirm" || cb)

where ``cb`` is :func:`tcpchat.tls.channel_binding` (32 bytes exported from the
TLS session; empty on a plaintext connection).  Nothing sent lets an
eavesdropper test passkey guesses offline, and a relay that terminates TLS
itself sees a different ``cb`` on each side, so its confirmations never match.

Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Callable, Tuple

from spake2 import SPAKE2_A, SPAKE2_B
from spake2.parameters.ed25519 import ParamsEd25519

from tcpchat.passkeys import canonical_passkey

CLIENT_ID = b"tcpchat client"
SERVER_ID = b"tcpchat server"
SERVER_LABEL = b"tcpchat server confirm"
CLIENT_LABEL = b"tcpchat client confirm"
#: Length of a SPAKE2 message in this group, in bytes.
MESSAGE_BYTES = 33


class PakeError(Exception):
    """The peer's SPAKE2 message is malformed."""


def _password(passkey: str) -> bytes:
    return canonical_passkey(passkey).encode("utf-8")


def confirm(key: bytes, label: bytes, binding: bytes) -> bytes:
    return hmac.new(key, label + binding, hashlib.sha256).digest()


Entropy = Callable[[int], bytes]


def client_start(passkey: str, entropy: Entropy = os.urandom) -> Tuple[SPAKE2_A, bytes]:
    """Begin as the client: the state to keep and the message to send (``entropy``: for test vectors only)."""
    state = SPAKE2_A(_password(passkey), idA=CLIENT_ID, idB=SERVER_ID, params=ParamsEd25519, entropy_f=entropy)
    return state, state.start()


def server_respond(passkey: str, client_message: bytes, binding: bytes,
                   entropy: Entropy = os.urandom) -> Tuple[bytes, bytes, bytes]:
    """
    As the server, answer a client's message.  Returns ``(message,
    server_confirm, expected_client_confirm)``.
    """
    state = SPAKE2_B(_password(passkey), idA=CLIENT_ID, idB=SERVER_ID, params=ParamsEd25519, entropy_f=entropy)
    message = state.start()
    try:
        key = state.finish(client_message)
    except Exception as e:  # the library raises several kinds for bad points
        raise PakeError(str(e)) from None
    return message, confirm(key, SERVER_LABEL, binding), confirm(key, CLIENT_LABEL, binding)


def client_finish(state: SPAKE2_A, server_message: bytes, server_confirm: bytes, binding: bytes) -> bytes:
    """
    As the client, check the server's confirmation; returns our own.

    :raises PakeError: the server does not know the passkey, or someone is
        relaying the connection (the two cannot be told apart, by design).
    """
    try:
        key = state.finish(server_message)
    except Exception as e:
        raise PakeError(str(e)) from None
    if not hmac.compare_digest(confirm(key, SERVER_LABEL, binding), server_confirm):
        raise PakeError("the server could not prove it knows the passkey")
    return confirm(key, CLIENT_LABEL, binding)
