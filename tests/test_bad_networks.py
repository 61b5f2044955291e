"""tcpchat on impaired links, inside network namespaces these tests make (a veth pair, never the host's network):
rate limits with tbf. Skipped, saying why, where namespaces or tc cannot be used."""

import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

import pytest

from .helpers import PASSKEY
from .netns import lan, shape
from .procs import BIN, TWISTD, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
NETCLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netclient.py")
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "delayrelay.py")
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


class Cli:
    """tcpchat-cli --plain in the client's namespace; every line it prints, with when it came."""

    def __init__(self, net, home, host, port, *extra):
        env = dict(os.environ, HOME=home, PYTHONUNBUFFERED="1", TCPCHAT_PASSKEY=PASSKEY)
        command = net.run(net.client_ns, [os.path.join(BIN, "tcpchat-cli"), "--host", host, "--port", str(port),
                                          "--name", "walker", "--plain", *extra])
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True, bufsize=1)
        self.lines = []  # (monotonic time, line)
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.lines.append((time.monotonic(), None))
            self.cond.notify_all()

    def say(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern, after, timeout):
        """The time of the first line after ``after`` matching ``pattern``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, line in self.lines:
                    if at >= after and line is not None and re.search(pattern, line):
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1][1] is None):
                    raise AssertionError(f"tcpchat-cli never printed {pattern!r}:\n" +
                                         "\n".join(str(l) for _, l in self.lines))
                self.cond.wait(left)


def ipt(net, ns, *rule):
    subprocess.run(net.run(ns, ["iptables", *rule]), check=True, capture_output=True, timeout=30)


@pytest.mark.skipif(shutil.which("iptables") is None or shutil.which("tc") is None,
                    reason="iptables and tc are needed to impair the link (apt install iptables iproute2)")
def test_a_client_rides_out_delay_loss_outages_blackholes_and_a_new_address(tmp_path):
    """tcpchat-cli through 200 +- 50 ms of delay and 5 % loss each way, then the link down for 30 s, then 20 s of a
    link that drops everything silently, then a new address: it reconnects by itself within the stated times, and
    every message written is stored exactly once."""
    with lan() as net:
        server = ServerProcess(tmp_path, port=12345, tls=True, prefix=net.run(net.server_ns, []))
        server.listen = "tcp:12345"
        server.start()
        relay = subprocess.Popen(net.run(net.server_ns, [sys.executable, RELAY, net.server_ip, "13000", "127.0.0.1",
                                                         "12345", "200", "50"]), stdout=subprocess.PIPE, text=True)
        cli = None
        try:
            assert relay.stdout.readline().strip() == "relaying"
            for ns in (net.server_ns, net.client_ns):
                ipt(net, ns, "-A", "INPUT", "-i", net.server_dev if ns == net.server_ns else net.client_dev,
                    "-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP")
            home = str(tmp_path / "home")
            os.mkdir(home)
            cli = Cli(net, home, net.server_ip, 13000)
            cli.wait_for(r"Connected to", 0, 60)
            written = []

            def say(text):
                written.append(text)
                cli.say(text)

            for n in range(10):  # impaired, but up
                say(f"through the bad link {n}")
            # the link goes down for 30 s; what is written meanwhile waits in the outbox
            subprocess.run(net.run(net.client_ns, ["ip", "link", "set", net.client_dev, "down"]), check=True)
            down = time.monotonic()
            for n in range(5):
                say(f"while the link is down {n}")
            with cli.cond:
                cli.cond.wait_for(lambda: time.monotonic() - down >= 30, timeout=40)  # (the outage itself)
            subprocess.run(net.run(net.client_ns, ["ip", "link", "set", net.client_dev, "up"]), check=True)
            up = time.monotonic()
            back = cli.wait_for(r"Connected to", up, 60)
            reconnect_after_outage = back - up
            # a link that silently drops everything for 20 s (no RST, no ICMP)
            for chain in ("INPUT", "OUTPUT"):
                ipt(net, net.client_ns, "-I", chain, "1", "-j", "DROP")
            hole = time.monotonic()
            for n in range(3):
                say(f"into the black hole {n}")
            with cli.cond:
                cli.cond.wait_for(lambda: time.monotonic() - hole >= 20, timeout=30)
            for chain in ("INPUT", "OUTPUT"):
                ipt(net, net.client_ns, "-D", chain, "1")
            # a new address (as after roaming to another access point): the old connection is dead
            prefix = net.client_ip.rsplit(".", 1)[0]
            subprocess.run(net.run(net.client_ns, ["ip", "addr", "del", f"{net.client_ip}/24", "dev",
                                                   net.client_dev]), check=True)
            subprocess.run(net.run(net.client_ns, ["ip", "addr", "add", f"{prefix}.3/24", "dev", net.client_dev]),
                           check=True)
            moved = time.monotonic()
            for n in range(3):
                say(f"from a new address {n}")
            cli.proc.stdin.write("/quit\n")
            cli.proc.stdin.flush()
            assert cli.proc.wait(180) == 0  # /quit waits until everything is stored: exit 0 means it is
            done = time.monotonic()
        finally:
            if cli is not None and cli.proc.poll() is None:
                cli.proc.kill()
            relay.kill()
            server.close()
    db = sqlite3.connect(os.path.join(str(tmp_path), "tcpchat.sqlite3"))
    stored = [t for (t,) in db.execute("SELECT text FROM events WHERE kind = 'message' ORDER BY id")]
    assert sorted(stored) == sorted(written) and len(stored) == len(set(stored))  # no loss, no duplicate
    assert stored[:10] == written[:10]  # in order, as written, where nothing interrupted them
    print(f"\n  bad links: reconnected {reconnect_after_outage:.1f} s after a 30 s outage ended; everything written "
          f"after the black hole and the new address stored {done - moved:.1f} s after the address changed")
    assert reconnect_after_outage < 20
    assert done - moved < 90


@pytest.mark.skipif(shutil.which("tc") is None, reason="tc (iproute2) is not installed")
def test_chat_stays_quick_during_an_upload_on_a_1_mbit_link(tmp_path):
    """The other direction: tcpchat-cli shares 512 KiB over a 1 Mbit/s uplink (tbf on the client's side) and keeps
    writing; the client core paces the file data like the server does, so each message reaches someone else within
    0.5 s, and the file gets there too."""
    with lan() as net:
        server = ServerProcess(tmp_path, port=12345, prefix=net.run(net.server_ns, []))
        server.listen = "tcp:12345"
        server.start()
        ear = subprocess.Popen(net.run(net.server_ns, [sys.executable, NETCLIENT, "listen", "127.0.0.1", "12345", "10"]),
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, TCPCHAT_PASSKEY=PASSKEY))
        cli = None
        try:
            assert ear.stdout.readline().strip() == "listening"
            shape(net, net.client_ns, net.client_dev, "tbf", "rate", "1mbit", "burst", "16kb", "latency", "100ms")
            home = str(tmp_path / "home")
            os.mkdir(home)
            survey = str(tmp_path / "survey.bin")
            with open(survey, "wb") as f:
                f.write(os.urandom(512 * 1024))
            cli = Cli(net, home, net.server_ip, 12345, "--insecure-plaintext")
            connected = cli.wait_for(r"Connected to", 0, 60)
            cli.say(f"/file {survey}")
            cli.wait_for(r"Sharing survey.bin", connected, 30)
            for n in range(10):  # one every 0.3 s, all while the upload (about 4.3 s) goes on
                with cli.cond:
                    cli.cond.wait_for(lambda: False, timeout=0.3)  # (the pace of typing, not a synchronisation)
                cli.say(f"ping {time.monotonic()}")
            heard = json.loads(ear.communicate(timeout=120)[0])
        finally:
            if cli is not None and cli.proc.poll() is None:
                cli.proc.kill()
            if ear.poll() is None:
                ear.kill()
            server.close()
    latencies = heard["latencies"]
    assert len(latencies) == 10 and heard["file_at"] is not None
    assert heard["file_at"] > heard["arrivals"][5]  # the messages were written while the file was on its way
    print(f"\n  1 Mbit/s uplink: chat during a 512 KiB upload p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 0.5, latencies
