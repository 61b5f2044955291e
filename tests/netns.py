"""Two network namespaces joined by a veth pair: a small LAN of our own, never the host's network."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from typing import Iterator, List, NamedTuple

import pytest


class Lan(NamedTuple):
    server_ns: str
    client_ns: str
    server_ip: str
    client_ip: str
    server_dev: str = ""
    client_dev: str = ""

    def run(self, ns: str, args: List[str]) -> List[str]:
        """The command line that runs ``args`` inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *args]


def shape(net: Lan, ns: str, dev: str, *qdisc: str) -> None:
    """Put a queueing discipline on a device of one of our namespaces (e.g. ``tbf rate 1mbit …``)."""
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", *qdisc], check=True,
                   capture_output=True, timeout=30)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def lan() -> Iterator[Lan]:
    """Make the two namespaces (skip the test where that is not possible), remove them afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100000}"
    server_ns, client_ns = f"tcpchat-s{tag}", f"tcpchat-c{tag}"
    a, b = f"tcv{tag}a", f"tcv{tag}b"
    subnet = 10 + os.getpid() % 200
    net = Lan(server_ns, client_ns, f"10.231.{subnet}.1", f"10.231.{subnet}.2", a, b)
    try:
        _ip("netns", "add", server_ns)
        _ip("netns", "add", client_ns)
    except subprocess.CalledProcessError as e:
        _cleanup(net)
        pytest.skip(f"cannot create network namespaces here: {e.stderr.decode(errors='replace').strip()}")
    try:
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", a, "netns", server_ns)
        _ip("link", "set", b, "netns", client_ns)
        for ns, dev, address in ((server_ns, a, net.server_ip), (client_ns, b, net.client_ip)):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield net
    finally:
        _cleanup(net)


def _cleanup(net: Lan) -> None:
    for ns in (net.server_ns, net.client_ns):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
