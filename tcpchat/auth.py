"""
The one place where a passkey is checked (directly, or through the SPAKE2
proof of :mod:`tcpchat.pake`), and name passwords.  What a passkey looks like
is :mod:`tcpchat.passkeys`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from zope.interface import Interface, implementer

from tcpchat import pake
from tcpchat.passkeys import ALPHABET, BITS, GROUP, GROUPS, canonical_passkey, generate_passkey

__all__ = ["ALPHABET", "BITS", "GROUP", "GROUPS", "IPasskeyVerifier", "MIN_PASSWORD", "PasskeyVerifier",
           "canonical_passkey", "check_password", "generate_passkey", "hash_password"]

class IPasskeyVerifier(Interface):
    """
    Decides whether what a client offered proves knowledge of the passkey.
    """

    def verify(offered: str) -> bool:
        """True if ``offered`` is the server's passkey (sent in ``hello.passkey``)."""

    def pakeRespond(clientMessage: bytes, binding: bytes) -> tuple:
        """
        Answer a client's SPAKE2 message: ``(message, server_confirm,
        expected_client_confirm)``; see :mod:`tcpchat.pake`.
        """

    def rotate(passkey: str) -> None:
        """Replace the passkey; later logins need the new one."""


@implementer(IPasskeyVerifier)
class PasskeyVerifier:
    """
    Compares the offered passkey with ours in constant time.
    """

    def __init__(self, passkey: str) -> None:
        self.rotate(passkey)

    def rotate(self, passkey: str) -> None:
        canonical = canonical_passkey(passkey)
        if not canonical:
            raise ValueError("the passkey must not be empty")
        self.passkey = passkey
        self._key = canonical.encode("utf-8")

    def verify(self, offered: str) -> bool:
        return hmac.compare_digest(self._key, canonical_passkey(offered).encode("utf-8"))

    def pakeRespond(self, clientMessage: bytes, binding: bytes) -> tuple:
        return pake.server_respond(self.passkey, clientMessage, binding)


#: scrypt cost of name passwords (about 40 ms and 16 MiB per check; run off the reactor thread).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Shortest name password accepted.
MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    """A salted scrypt hash of a name password, as stored (blocking: run it in a thread)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(stored: str, offered: str) -> bool:
    """Does ``offered`` match a hash made by :func:`hash_password`? (blocking)"""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(offered.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)
