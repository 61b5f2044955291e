"""
Passkeys: what they look like, how they are generated and compared (pure).

The passkey is what the person running the server reads aloud.  It uses an
alphabet without look-alike characters (no 0/o, 1/l/i) and is shown as two
groups of five, e.g. ``k7m2x-qp9ra`` (10 characters of a 31-letter alphabet:
49 bits).  Case, spaces and dashes do not matter when it is typed.
"""

from __future__ import annotations

import math
import secrets

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
GROUP = 5
GROUPS = 2
#: Entropy of a generated passkey, in bits.
BITS = GROUP * GROUPS * math.log2(len(ALPHABET))


def generate_passkey() -> str:
    """
    A fresh random passkey, easy to read aloud and type.
    """
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(GROUP)) for _ in range(GROUPS))
    return "-".join(groups)


def canonical_passkey(text: str) -> str:
    """
    The form passkeys are compared in: lower case, no spaces or dashes.
    """
    return "".join(c for c in text.lower() if c not in " -\t")
