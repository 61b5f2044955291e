"""Metrics (--metrics): scraped from a running twistd during traffic, the counters move and the text parses with
Prometheus' own parser; /healthz answers 200, and 503 on a store that cannot be written."""

import os
import socket
import sqlite3
import urllib.request

import pytest

from twisted.internet import reactor
from twisted.trial import unittest

from .procs import TWISTD, RawClient, ServerProcess

needs_twistd = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@needs_twistd
def test_metrics_move_with_traffic_and_parse(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path, extra=["--metrics", f"tcp:{port}:interface=127.0.0.1"]).start()
    try:
        before = scrape(port)
        alice, bob = RawClient(server.port), RawClient(server.port)
        alice.login("alice", features=["rooms"])
        bob.login("bob", features=["rooms"])
        assert RawClient(server.port).login("mallory", passkey="wrong")[-1]["code"] == "bad-passkey"
        for n in range(20):
            alice.send({"type": "say", "text": f"message {n}", "cid": f"c{n}"})
        alice.recv_until(lambda f: f.get("cid") == "c19")
        bob.recv_until(lambda f: f.get("text") == "message 19")
        alice.upload("notes.txt", b"x" * 100_000)
        alice.send({"type": "history", "limit": 5000})  # over the documented limit: refused, counted
        alice.recv_until(lambda f: f.get("type") == "error")
        after = scrape(port)
        assert value(after, "tcpchat_logins_total") - value(before, "tcpchat_logins_total") == 2
        assert value(after, "tcpchat_login_failures_total", code="bad-passkey") == 1
        assert value(after, "tcpchat_events_total", kind="message") == 20
        assert value(after, "tcpchat_events_total", kind="file") == 1
        assert value(after, "tcpchat_deliveries_total", mode="live") >= 20  # bob got every message live
        assert value(after, "tcpchat_upload_bytes_total") == 100_000
        assert value(after, "tcpchat_refusals_total", code="bad-frame") >= 1
        assert value(after, "tcpchat_users_online") == 2
        assert value(after, "tcpchat_connections", state="live", transport="tcp") == 2
        assert value(after, "tcpchat_ack_seconds_count") == 20
        assert value(after, "tcpchat_ack_seconds_bucket", le="+Inf") == 20
        assert value(after, "tcpchat_commit_batch_events_sum") >= 21  # every event went through a group commit
        assert value(after, "tcpchat_files_bytes") == 100_000
        assert value(after, "tcpchat_database_bytes") > 0
        documented = open(os.path.join(os.path.dirname(__file__), "..", "docs", "OPERATIONS.rst"), encoding="utf-8").read()
        served = {name for name, _ in after}
        for name in served:
            family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count").removesuffix("_created")
            assert f"``{family}``" in documented or f"``{family}_total``" in documented, family
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
        assert "Traceback" not in server.log()
    finally:
        server.close()


class HealthTests(unittest.TestCase):
    async def test_healthz_fails_on_a_read_only_store(self):
        """The store opened read-only (as on a disk remounted read-only): /healthz says 503 and why; writable, 200."""
        import pathlib

        from tcpchat.server.metrics import make_site

        from .helpers import make_factory
        from .test_fallback import http

        tmp = pathlib.Path(self.mktemp())
        tmp.mkdir()
        factory = make_factory(tmp)
        listening = reactor.listenTCP(0, make_site(factory), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/healthz"
        self.assertEqual(await http("GET", url), (200, b"ok\n"))
        store = factory.store
        store._db.close()
        store._db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, isolation_level=None)
        status, body = await http("GET", url)
        self.assertEqual(status, 503)
        self.assertIn(b"the store is not writable: attempt to write a readonly database", body)
