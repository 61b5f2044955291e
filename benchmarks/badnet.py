#!/usr/bin/env python3
"""
tcpchat on impaired links, measured: chat latency during a download and the download's throughput, with no
impairment and with each of 1 Mbit/s (tbf), 5 % loss each way (iptables), and 200 +- 50 ms of delay each way
(the tests' relay), all inside two network namespaces this makes (a veth pair; never the host's network).
Needs root, iproute2, iptables.

    .venv/bin/python benchmarks/badnet.py [--size BYTES] [--messages N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.helpers import PASSKEY  # noqa: E402
from tests.netns import lan, shape  # noqa: E402
from tests.procs import ServerProcess  # noqa: E402

NETCLIENT = os.path.join(ROOT, "tests", "netclient.py")
RELAY = os.path.join(ROOT, "tests", "delayrelay.py")


def measure(net, port: int, size: int, messages: int) -> dict:
    def run(ns, *args):
        done = subprocess.run(net.run(ns, [sys.executable, NETCLIENT, *args]), capture_output=True, text=True,
                              timeout=600, env=dict(os.environ, TCPCHAT_PASSKEY=PASSKEY))
        if done.returncode:
            raise SystemExit(done.stderr)
        return json.loads(done.stdout)

    shared = run(net.server_ns, "upload", "127.0.0.1", "12345", str(size))["file"]
    return run(net.client_ns, "download-and-chat", net.server_ip, str(port), str(shared["id"]), str(messages))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4 * 1024 * 1024, help="bytes downloaded (1 Mbit/s: a quarter)")
    p.add_argument("--messages", type=int, default=30)
    args = p.parse_args()
    cells = [("none", None), ("1 Mbit/s", "rate"), ("5 % loss", "loss"), ("200 ± 50 ms", "delay")]
    print(f"{'impairment':>14} {'chat p50 ms':>12} {'p95 ms':>8} {'max ms':>8} {'download Mbit/s':>16}")
    for label, kind in cells:
        with tempfile.TemporaryDirectory() as tmp, lan() as net:
            server = ServerProcess(tmp, port=12345, prefix=net.run(net.server_ns, []))
            server.listen = "tcp:12345"
            server.start()
            relay = None
            port = 12345
            try:
                size = args.size
                if kind == "rate":
                    shape(net, net.server_ns, net.server_dev, "tbf", "rate", "1mbit", "burst", "16kb", "latency", "100ms")
                    size = args.size // 4
                elif kind == "loss":
                    for ns, dev in ((net.server_ns, net.server_dev), (net.client_ns, net.client_dev)):
                        subprocess.run(net.run(ns, ["iptables", "-A", "INPUT", "-i", dev, "-m", "statistic", "--mode",
                                                    "random", "--probability", "0.05", "-j", "DROP"]), check=True)
                elif kind == "delay":
                    relay = subprocess.Popen(net.run(net.server_ns, [sys.executable, RELAY, net.server_ip, "13000",
                                                                     "127.0.0.1", "12345", "200", "50"]),
                                             stdout=subprocess.PIPE, text=True)
                    assert relay.stdout.readline().strip() == "relaying"
                    port = 13000
                got = measure(net, port, size, args.messages)
            finally:
                if relay is not None:
                    relay.kill()
                server.close()
        lat = got["latencies"]
        rate = got["bytes"] * 8 / got["seconds"] / 1e6
        print(f"{label:>14} {statistics.median(lat) * 1000:>12.0f} {percentile(lat, 0.95) * 1000:>8.0f} "
              f"{max(lat) * 1000:>8.0f} {rate:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
