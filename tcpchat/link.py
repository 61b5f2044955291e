"""
Join links: ``tcpchat://HOST:PORT/?fp=SHA256…&passkey=…`` (pure: no I/O).

A link carries everything a client needs to find a server and to know it is
the right one: its address, the SHA-256 fingerprint of its certificate
(``fp``; a client refuses a server that shows another one) and, optionally,
the passkey.  ``PROTOCOL.rst`` ("Join links") is the specification.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, quote, urlsplit

from tcpchat.wire import DEFAULT_PORT, MAX_LINK

SCHEME = "tcpchat"
#: a link is for people to scan and paste; anything longer is not one of ours
MAX_LENGTH = MAX_LINK

_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")


class BadLink(ValueError):
    """Not a tcpchat join link; the message says what is wrong, in plain words."""


@dataclass(frozen=True)
class JoinLink:
    host: str
    port: int = DEFAULT_PORT
    #: ``SHA256:AB:CD:…`` (the form :func:`tcpchat.tls.fingerprint_der` gives), or None
    fingerprint: Optional[str] = None
    passkey: Optional[str] = None
    #: the server's name, shown before connecting (never trusted)
    name: Optional[str] = None

    def format(self, with_passkey: bool = True) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = []
        if self.fingerprint:
            query.append("fp=" + compact_fingerprint(self.fingerprint))
        if self.passkey and with_passkey:
            query.append("passkey=" + quote(self.passkey, safe=""))
        if self.name:
            query.append("name=" + quote(self.name, safe=""))
        return f"{SCHEME}://{host}:{self.port}/" + ("?" + "&".join(query) if query else "")


def compact_fingerprint(fingerprint: str) -> str:
    """``SHA256:AB:CD:…`` -> ``SHA256-ABCD…`` (64 hex digits, no colons: a shorter QR code)."""
    return "SHA256-" + normalize_fingerprint(fingerprint)[7:].replace(":", "")


def normalize_fingerprint(text: str) -> str:
    """
    Any of ``SHA256:AB:CD:…``, ``SHA256-ABCD…``, ``sha256:abcd…`` or the bare
    64 hex digits -> ``SHA256:AB:CD:…``.  Raises :class:`BadLink` otherwise.
    """
    digits = text.strip()
    if digits[:7].upper() in ("SHA256:", "SHA256-"):
        digits = digits[7:]
    digits = digits.replace(":", "")
    if not _HEX64.fullmatch(digits):
        raise BadLink("the fingerprint (fp=) must be SHA256 followed by 64 hexadecimal digits")
    digits = digits.upper()
    return "SHA256:" + ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def is_link(text: str) -> bool:
    return text.strip().lower().startswith(SCHEME + "://")


def parse(text: str) -> JoinLink:
    """Read a join link; :class:`BadLink` says what is wrong with it."""
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise BadLink("that link is too long to be a tcpchat link")
    if not is_link(text):
        raise BadLink("a tcpchat link starts with tcpchat://")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise BadLink(f"the address in the link is not valid ({e})") from None
    host = parts.hostname
    if not host:
        raise BadLink("the link has no server address")
    if any(c.isspace() or ord(c) < 0x20 for c in host):
        raise BadLink("the server address in the link is not valid")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False, max_num_fields=16)
    except ValueError:
        raise BadLink("the link has too many fields") from None

    def one(key: str) -> Optional[str]:
        values = query.get(key)
        if not values:
            return None
        if len(values) > 1:
            raise BadLink(f"the link gives {key}= more than once")
        return values[0]

    fp = one("fp")
    passkey = one("passkey")
    name = one("name")
    for value in (passkey, name):
        if value is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise BadLink("the link contains control characters")
    return JoinLink(
        host=host,
        port=port if port is not None else DEFAULT_PORT,
        fingerprint=normalize_fingerprint(fp) if fp else None,
        passkey=passkey or None,
        name=name or None,
    )
