"""twistd tcpchat options and the service they build."""

import os

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from tcpchat import tap
from tcpchat.auth import ALPHABET, BITS, PasskeyVerifier, generate_passkey


def parse(*args):
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_defaults(tmp_path, monkeypatch):
    """With no options: port 12345 on all interfaces, ./tcpchat-data, history 50."""
    monkeypatch.chdir(tmp_path)
    options = parse()
    assert {k: options[k] for k in options.keys()} == {
        "port": 12345,
        "listen": ["tcp:12345:backlog=1024"],
        "data-dir": str(tmp_path / "tcpchat-data"),
        "passkey": None,
        "passkey-file": None,
        "admin-passkey": None,
        "history": 50,
        "server-name": options["server-name"],
        "max-file-size": 1024**3,
        "max-storage": 10 * 1024**3,
        "certificate": None,
        "private-key": None,
        "max-connections": 10000,
        "max-per-address": 256,
        "message-rate": 10.0,
        "metrics": None,  # off unless asked for
        "database": None,  # SQLite in the data directory
        "files-dir": None,  # the data directory's files/
        "node-name": None,
        "dead-node-after": 10.0,
        "crowd": 200,
        "keep-messages": 0,  # retention off: everything is kept
        "keep-files": 0,
        "insecure-plaintext": 0,
        "no-web": 0,
        "no-announce": 0,
        "login-timeout": 15.0,
    }
    assert options["server-name"].startswith("tcpchat on ")
    assert not os.path.isdir(tmp_path / "tcpchat-data")  # made by makeService: parsing has no side effects (0.3)


def test_everything_given(tmp_path):
    """Every option is parsed into the expected value; --listen repeats."""
    options = parse(
        "--listen", "tcp:0:interface=127.0.0.1", "-l", "tcp6:0", "--data-dir", str(tmp_path / "d"),
        "--passkey", "secret", "--history", "10", "--server-name", "Room 4", "--max-file-size", "200M",
        "--max-storage", "2G",
    )
    assert options["listen"] == ["tcp:0:interface=127.0.0.1", "tcp6:0"]
    assert options["passkey"] == "secret" and options["history"] == 10 and options["server-name"] == "Room 4"
    assert options["max-file-size"] == 200 * 1024**2 and options["max-storage"] == 2 * 1024**3


def test_passkey_file(tmp_path):
    """--passkey-file reads the first line."""
    (tmp_path / "key").write_text("from-file\nignored\n")
    assert parse("--passkey-file", str(tmp_path / "key"), "-d", str(tmp_path))["passkey"] == "from-file"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "--port must be from 0 to 65535"),
        (["--history", "5000"], "--history must be from 0 to 1000"),
        (["--passkey", "a", "--passkey-file", "b"], "not both"),
        (["--passkey-file", "/nonexistent/key"], "cannot read --passkey-file"),
        (["--passkey", " - "], "must not be empty"),
        (["--max-file-size", "lots"], "not a size"),
    ],
)
def test_bad_values_are_usage_errors(tmp_path, monkeypatch, args, message):
    """Bad option values produce a clear usage error, not a traceback."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(usage.UsageError, match=message):
        parse(*args)


def test_option_parsing_changes_nothing_and_a_bad_data_dir_is_one_clear_line(tmp_path):
    """Parsing creates no directory; makeService does, and one it cannot create stops with a clear message."""
    options = parse("--data-dir", str(tmp_path / "not-yet"))
    assert not (tmp_path / "not-yet").exists()
    bad = parse("--data-dir", "/proc/nope/data")
    with pytest.raises(SystemExit, match="cannot create --data-dir /proc/nope/data"):
        tap.makeService(bad, MemoryReactorClock())
    service = tap.makeService(options, MemoryReactorClock())
    assert (tmp_path / "not-yet").is_dir()
    for runner in service.runners:
        runner.stop()


def test_help_documents_every_option():
    """twistd tcpchat --help mentions each option."""
    text = str(tap.Options())
    for option in ("--port", "--listen", "--data-dir", "--passkey", "--passkey-file", "--history",
                   "--server-name", "--max-file-size", "--max-storage"):
        assert option in text


def test_make_service_listens_where_told(tmp_path):
    """makeService builds listeners for every --listen endpoint once storage is open."""
    options = parse("-l", "tcp:0:interface=127.0.0.1", "-l", "tcp:5555", "-d", str(tmp_path), "--passkey", "pk")
    reactor = MemoryReactorClock()
    service = tap.makeService(options, reactor)
    assert service.passkey == "pk"
    assert service.fingerprint.startswith("SHA256:") and service.tls_options is not None
    assert (tmp_path / "server.pem").exists() and (tmp_path / "server.key").stat().st_mode & 0o077 == 0
    assert [type(e).__name__ for e in service.endpoints] == ["TCP4ServerEndpoint", "TCP4ServerEndpoint"]
    for runner in service.runners:
        runner.stop()


def test_plaintext_only_when_asked_loudly(tmp_path):
    """Without --insecure-plaintext the service wraps every listener in TLS; with it, none."""
    options = parse("-l", "tcp:0", "-d", str(tmp_path), "--insecure-plaintext")
    service = tap.makeService(options, MemoryReactorClock())
    assert service.tls_options is None and service.fingerprint is None
    for runner in service.runners:
        runner.stop()
    assert "DANGER" in str(tap.Options())


def test_certificate_options(tmp_path):
    """A user-supplied certificate needs its key, and both must exist."""
    with pytest.raises(usage.UsageError, match="go together"):
        parse("--certificate", "x.pem", "-d", str(tmp_path))
    with pytest.raises(usage.UsageError, match="no such file"):
        parse("--certificate", "x.pem", "--private-key", "x.key", "-d", str(tmp_path))


def test_generated_passkeys_are_readable_and_strong():
    """Generated passkeys avoid look-alike characters and carry at least 40 bits."""
    assert BITS >= 40
    assert not set("01ilo") & set(ALPHABET)
    keys = {generate_passkey() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        a, b = key.split("-")
        assert len(a) == len(b) == 5 and set(a + b) <= set(ALPHABET)


def test_verifier_rotates():
    """After rotation the old passkey no longer works."""
    verifier = PasskeyVerifier("old-key")
    assert verifier.verify("OLDKEY")
    verifier.rotate("new-key")
    assert not verifier.verify("old-key") and verifier.verify("new key")


def test_process_settings_are_set_while_running_and_put_back():
    """The one place that changes the process: the switch interval on start, signal handlers once the (injected)
    reactor runs; SIGTERM stops that reactor; stopping puts both back."""
    import signal
    import sys

    from tcpchat.server.service import SWITCH_INTERVAL, ProcessSettings

    class Reactor(MemoryReactorClock):
        def callFromThread(self, f, *args):
            f(*args)

    reactor = Reactor()
    interval, handler = sys.getswitchinterval(), signal.getsignal(signal.SIGTERM)
    settings = ProcessSettings(reactor)
    settings.startService()
    try:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        assert signal.getsignal(signal.SIGTERM) == handler  # not before the reactor runs
        for hook, args, kwargs in reactor.whenRunningHooks:
            hook(*args, **kwargs)
        ours = signal.getsignal(signal.SIGTERM)
        assert ours != handler and signal.getsignal(signal.SIGINT) == ours
        reactor.running = True
        ours(signal.SIGTERM, None)
        assert reactor.hasStopped
    finally:
        settings.stopService()
    assert sys.getswitchinterval() == pytest.approx(interval)
    assert signal.getsignal(signal.SIGTERM) == handler


def test_service_is_a_multiservice_that_listens_only_once_storage_is_open(tmp_path):
    """makeService: process settings, then storage; the listeners, the sweep timer and the banner come after."""
    from twisted.application.service import MultiService

    from tcpchat.server.service import ProcessSettings, StorageService

    service = tap.makeService(parse("-l", "tcp:0", "-d", str(tmp_path), "--insecure-plaintext"), MemoryReactorClock())
    assert isinstance(service, MultiService) and service.name == "tcpchat"
    assert [type(s) for s in service] == [ProcessSettings, StorageService]
    for runner in service.runners:
        runner.stop()


def test_the_generated_certificate_names_the_machine(tmp_path):
    """Host name, HOST.local, localhost and the machine's addresses are in the subjectAltName (a device that trusts
    the certificate then gets no warning, whichever name or address it used)."""
    import ipaddress

    from cryptography import x509

    from tcpchat import tls

    cert, _ = tls.ensure_certificate(str(tmp_path), "classroom-pc.lan", ["192.168.1.20", "not-an-address"])
    names = x509.load_pem_x509_certificate(open(cert, "rb").read()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["classroom-pc", "classroom-pc.local", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                         ipaddress.ip_address("192.168.1.20")]


def test_database_takes_only_a_postgresql_address(tmp_path):
    """--database is for a cluster's PostgreSQL; anything else is refused with what to do instead."""
    with pytest.raises(usage.UsageError, match="postgresql://"):
        parse("--database", str(tmp_path / "other.sqlite3"))
    options = parse("--database", "postgresql://tcpchat@db.lan/tcpchat", "--files-dir", "shared")
    assert options["database"] == "postgresql://tcpchat@db.lan/tcpchat"
    assert options["files-dir"] == os.path.abspath("shared")

