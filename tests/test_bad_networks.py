"""tcpchat on impaired links, inside network namespaces these tests make (a veth pair, never the host's network):
rate limits with tbf. Skipped, saying why, where namespaces or tc cannot be used."""

import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest

from .helpers import PASSKEY
from .netns import lan, shape
from .procs import TWISTD, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
NETCLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netclient.py")
MBIT = 125_000  # bytes per second


def in_ns(net, ns, *args, timeout=180):
    run = subprocess.run(net.run(ns, [sys.executable, NETCLIENT, *args]), capture_output=True, text=True,
                         timeout=timeout, env=dict(os.environ, TCPCHAT_PASSKEY=PASSKEY))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(shutil.which("tc") is None, reason="tc (iproute2) is not installed")
def test_chat_stays_quick_during_a_download_on_a_1_mbit_link(tmp_path):
    """On a 1 Mbit/s link (tbf on the server's side), a download of 1 MiB shares its connection with chat: every
    message reaches the downloading client within 0.5 s, and the file still moves at most of the link's rate."""
    with lan() as net:
        server = ServerProcess(tmp_path, port=12345, prefix=net.run(net.server_ns, []))
        server.listen = "tcp:12345"
        server.start()
        try:
            # shared from the server's own loopback: it goes up unimpeded
            shared = in_ns(net, net.server_ns, "upload", "127.0.0.1", "12345", str(1024 * 1024))["file"]
            shape(net, net.server_ns, net.server_dev, "tbf", "rate", "1mbit", "burst", "16kb", "latency", "100ms")
            got = in_ns(net, net.client_ns, "download-and-chat", net.server_ip, "12345", str(shared["id"]), "20")
        finally:
            server.close()
    latencies = got["latencies"]
    assert got["done"] and got["bytes"] == shared["size"]
    assert len(latencies) == 20
    rate = got["bytes"] / got["seconds"]
    print(f"\n  1 Mbit/s: chat during a 1 MiB download p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms; the download at {rate / MBIT:.2f} Mbit/s")
    assert max(latencies) < 0.5, latencies
    assert rate > 0.6 * MBIT  # pacing keeps the link busy
