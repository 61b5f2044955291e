"""
TLS for tcpchat: the server's self-signed certificate, fingerprints, contexts,
and the channel binding the login proof is tied to.

Nobody on a classroom network has a certificate authority, so the server makes
its own key and certificate on first start.  Clients do not check it against a
CA: the login proof (see :mod:`tcpchat.pake`) is bound to the TLS session, so a
man-in-the-middle with its own certificate cannot complete a login, and after
one successful login the client pins the certificate's fingerprint.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any, List, Optional, Sequence, Tuple

#: Label for RFC 5705 keying material exported from the TLS session.
EXPORTER_LABEL = b"EXPORTER-tcpchat-login-v1"


def subject_names(hostname: str, addresses: Sequence[str] = ()) -> List[Any]:
    """
    What a generated certificate names: the host name, ``HOST.local`` (mDNS),
    ``localhost`` and the machine's addresses — so that a device told to trust
    the certificate gets no warning for any of them.
    """
    import ipaddress

    from cryptography import x509

    host = (hostname or "tcpchat").split(".")[0][:63]
    dns = [host, f"{host}.local", "localhost"]
    names: List[Any] = [x509.DNSName(n) for n in dict.fromkeys(dns)]
    for address in dict.fromkeys(["127.0.0.1", *addresses]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            continue
    return names


def ensure_certificate(directory: str, hostname: str, addresses: Sequence[str] = ()) -> Tuple[str, str]:
    """
    Paths of ``server.pem`` (certificate) and ``server.key`` (private key) in
    ``directory``, creating both if either is missing (naming ``hostname`` and
    ``addresses``: :func:`subject_names`).  An existing pair is kept as it is:
    clients have pinned it.
    """
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hostname or "tcpchat")[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(subject_names(hostname, addresses)), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    with open(cert_path + ".tmp", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(key_path + ".tmp", key_path)
    os.replace(cert_path + ".tmp", cert_path)
    return cert_path, key_path


def fingerprint_der(der: bytes) -> str:
    """``SHA256:`` and the certificate's SHA-256 in colon-separated hex pairs."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fingerprint_pem(pem: bytes) -> str:
    from OpenSSL import crypto

    cert = crypto.load_certificate(crypto.FILETYPE_PEM, pem)
    return fingerprint_der(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))


def peer_fingerprint(transport: Any) -> Optional[str]:
    """Fingerprint of the certificate the other side of a TLS transport presented."""
    get = getattr(transport, "getPeerCertificate", None)
    cert = get() if get is not None else None
    if cert is None:
        return None
    from OpenSSL import crypto

    return fingerprint_der(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))


def server_options(cert_path: str, key_path: str) -> Any:
    """The server's TLS settings (TLS 1.2 or newer)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from twisted.internet import ssl

    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    # (Twisted takes cryptography's key and certificate objects; its stubs still name pyOpenSSL's)
    return ssl.CertificateOptions(privateKey=key, certificate=cert,  # type: ignore[arg-type]
                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


def client_options() -> Any:
    """
    Client TLS settings: encrypt, but do not judge the certificate by a CA;
    the login proof and the pinned fingerprint authenticate the server.
    """
    from twisted.internet import ssl

    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


def channel_binding(transport: Any) -> bytes:
    """
    32 bytes unique to this TLS session (RFC 5705 exporter), or ``b""`` on a
    plaintext connection.  Both ends get the same bytes only if they share one
    TLS session, i.e. if nobody is relaying between two sessions.
    """
    get = getattr(transport, "getHandle", None)
    handle = get() if get is not None else None
    export = getattr(handle, "export_keying_material", None)
    if export is None:
        return b""
    try:
        return bytes(export(EXPORTER_LABEL, 32))
    except Exception:  # the handshake has not completed: nothing to bind to
        return b""
