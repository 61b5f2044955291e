"""
The login proof as PROTOCOL.rst specifies it, implemented here from the document alone (no SPAKE2 library),
gives the published test vectors — and so does tcpchat's own implementation.
"""

import hashlib
import hmac
import json
import os

from tcpchat import pake

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = json.load(open(os.path.join(ROOT, "docs", "spake2-vectors.json")))

# ---- edwards25519 (RFC 8032), the minimum the proof needs
Q = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, Q - 2, Q) % Q
I = pow(2, (Q - 1) // 4, Q)
ZERO = (0, 1, 1, 0)


def recover_x(y):
    xx = (y * y - 1) * pow(D * y * y + 1, Q - 2, Q) % Q
    x = pow(xx, (Q + 3) // 8, Q)
    if (x * x - xx) % Q:
        x = x * I % Q
    if (x * x - xx) % Q:
        return None  # not on the curve
    return Q - x if x % 2 else x  # the even root


def point(x, y):
    return (x, y, 1, x * y % Q)


def add(p, r):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = r
    a, b = (y1 - x1) * (y2 - x2) % Q, (y1 + x1) * (y2 + x2) % Q
    c, dd = 2 * D * t1 * t2 % Q, 2 * z1 * z2 % Q
    e, f, g, h = b - a, dd - c, dd + c, b + a
    return (e * f % Q, g * h % Q, f * g % Q, e * h % Q)


def mul(k, p):
    out = ZERO
    while k:
        if k & 1:
            out = add(out, p)
        p = add(p, p)
        k >>= 1
    return out


def neg(p):
    x, y, z, t = p
    return (-x % Q, y, z, -t % Q)


def encode(p):
    x, y, z, _ = p
    zi = pow(z, Q - 2, Q)
    x, y = x * zi % Q, y * zi % Q
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def decode(data):
    value = int.from_bytes(data, "little")
    y = value & ((1 << 255) - 1)
    x = recover_x(y)
    assert x is not None
    if (x & 1) != (value >> 255):
        x = Q - x
    return point(x, y)


def is_zero(p):
    return encode(p) == encode(ZERO)


BASE = point(recover_x(4 * pow(5, Q - 2, Q) % Q), 4 * pow(5, Q - 2, Q) % Q)


def hkdf(ikm, info, length):
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()  # RFC 5869, empty salt = 32 zero bytes
    out, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
    return out[:length]


def element_from_seed(seed):
    y = int.from_bytes(hkdf(seed, b"SPAKE2 arbitrary element", 48), "big") % Q
    for plus in range(1000):
        x = recover_x((y + plus) % Q)
        if x is None:
            continue
        p8 = mul(8, point(x, (y + plus) % Q))
        if not is_zero(p8):
            return p8


def run(vector):
    pw = vector["password"].encode()
    w = int.from_bytes(hkdf(pw, b"SPAKE2 pw", 48), "big") % L
    m, n = element_from_seed(b"M"), element_from_seed(b"N")
    x = int.from_bytes(bytes.fromhex(vector["client_entropy"]), "big") % L
    y = int.from_bytes(bytes.fromhex(vector["server_entropy"]), "big") % L
    X = add(mul(x, BASE), mul(w, m))
    Y = add(mul(y, BASE), mul(w, n))
    k_client = mul(x, add(decode(encode(Y)), neg(mul(w, n))))
    k_server = mul(y, add(decode(encode(X)), neg(mul(w, m))))
    assert encode(k_client) == encode(k_server)
    ids = (VECTORS["client_id"].encode(), VECTORS["server_id"].encode())
    transcript = (hashlib.sha256(pw).digest() + hashlib.sha256(ids[0]).digest() + hashlib.sha256(ids[1]).digest()
                  + encode(X) + encode(Y) + encode(k_client))
    key = hashlib.sha256(transcript).digest()
    cb = bytes.fromhex(vector["channel_binding"])
    return {
        "M": encode(m).hex(), "N": encode(n).hex(), "w": w.to_bytes(32, "little").hex(),
        "x": x.to_bytes(32, "little").hex(), "y": y.to_bytes(32, "little").hex(),
        "client_message": (b"A" + encode(X)).hex(), "server_message": (b"B" + encode(Y)).hex(),
        "K": encode(k_client).hex(), "key": key.hex(),
        "server_confirm": hmac.new(key, b"tcpchat server confirm" + cb, hashlib.sha256).hexdigest(),
        "client_confirm": hmac.new(key, b"tcpchat client confirm" + cb, hashlib.sha256).hexdigest(),
    }


def test_an_implementation_from_the_document_gives_the_vectors():
    for vector in VECTORS["vectors"]:
        got = run(vector)
        assert (got.pop("M"), got.pop("N")) == (VECTORS["M"], VECTORS["N"])
        assert got == {k: vector[k] for k in got}


def test_tcpchat_gives_the_vectors():
    for vector in VECTORS["vectors"]:
        def fixed(hexdata):
            return lambda n: bytes.fromhex(hexdata)[:n]

        state, hello = pake.client_start(vector["passkey"], fixed(vector["client_entropy"]))
        cb = bytes.fromhex(vector["channel_binding"])
        reply, server_confirm, client_confirm = pake.server_respond(vector["passkey"], hello, cb,
                                                                    fixed(vector["server_entropy"]))
        assert (hello.hex(), reply.hex()) == (vector["client_message"], vector["server_message"])
        assert (server_confirm.hex(), client_confirm.hex()) == (vector["server_confirm"], vector["client_confirm"])
        assert pake.client_finish(state, reply, server_confirm, cb).hex() == vector["client_confirm"]


def test_the_document_publishes_the_vectors():
    text = open(os.path.join(ROOT, "PROTOCOL.rst"), encoding="utf-8").read()
    for value in [VECTORS["M"], VECTORS["N"]] + [v[k] for v in VECTORS["vectors"] for k in
                                                 ("w", "client_message", "server_message", "K", "key",
                                                  "server_confirm", "client_confirm")]:
        assert value in text.replace("\n", "").replace(" ", ""), value


def test_the_browser_implementation_gives_the_vectors():
    """tcpchat/web/spake2.js (on the vendored @noble libraries) in Node: the same vectors, a wrong passkey refused."""
    import shutil
    import subprocess

    import pytest

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    result = subprocess.run([node, os.path.join(ROOT, "tests", "js", "spake2_vectors.mjs"),
                             os.path.join(ROOT, "docs", "spake2-vectors.json")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 2 vectors" in result.stdout
