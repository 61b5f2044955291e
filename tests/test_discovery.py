"""LAN discovery: a server announces itself; clients on the same network list it, and can then join it."""

import os
import subprocess

from tcpchat import discovery, link

from .netns import lan
from .procs import BIN, TWISTD, ServerProcess

CLI = os.path.join(BIN, "tcpchat-cli")
FP = "SHA256:" + ":".join(["5A"] * 32)


def test_txt_record_round_trips_and_bad_values_are_dropped():
    record = discovery.txt_record("Room 4 " + "x" * 100, FP)
    assert len(record["name"].encode()) <= 63 and record["v"] == "1" and record["tls"] == "1"
    said = discovery.read_txt({k.encode(): v.encode() for k, v in record.items()})
    assert said["fingerprint"] == FP and said["version"] == 1 and said["tls"]
    hostile = discovery.read_txt({b"fp": b"SHA256-nothex", b"v": b"9" * 50, b"name": b"\x1b[31mred\x07"})
    assert hostile == {"name": "[31mred", "version": 0, "tls": True, "fingerprint": None}
    assert discovery.instance_name("a.b\nc") == "a b c"
    assert discovery.txt_record("plain", None) == {"v": "1", "name": "plain", "tls": "0"}


def discover(net, env, seconds=1.5):
    return subprocess.run(net.run(net.client_ns, [CLI, "--discover", "--discover-seconds", str(seconds)]),
                          capture_output=True, text=True, env=env, timeout=60)


def test_discovered_in_a_namespace_lan_and_joined(tmp_path):
    """Server in one namespace, clients in the other (multicast only on their veth): --discover lists it, a
    client joins at the listed address; the server's goodbye removes it; --no-announce keeps it quiet."""
    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "share"), TCPCHAT_PASSKEY="field-site")
    with lan() as net:
        server = ServerProcess(tmp_path, port=12345, passkey="field-site", tls=True,
                               prefix=net.run(net.server_ns, []))
        server.listen = "tcp:12345"  # every interface of the server's namespace: its veth and its loopback
        server.start()
        try:
            server.wait_for(r"Announced on the local network as 'tcpchat on ")
            listed = discover(net, env)
            assert listed.returncode == 0, listed.stdout + listed.stderr
            assert f"{net.server_ip}:12345" in listed.stdout
            fingerprint = link.normalize_fingerprint(server.wait_for(r"certificate (SHA256:\S+)", start=0).group(1))
            assert fingerprint[:18] in listed.stdout

            said = subprocess.run(net.run(net.client_ns, [CLI, "--host", net.server_ip, "--port", "12345", "--name",
                                                          "zoe"]), input="hello across the veth\n", text=True,
                                  capture_output=True, env=env, timeout=60)
            assert said.returncode == 0, said.stdout + said.stderr
            server.wait_for(r"zoe logged in from 10\.231\.")
            heard = subprocess.run(net.run(net.client_ns, [CLI, "--host", net.server_ip, "--port", "12345", "--name",
                                                           "yan"]), input="", text=True, capture_output=True,
                                   env=env, timeout=60)
            assert "zoe: hello across the veth" in heard.stdout

            assert server.stop() == 0
            gone = discover(net, env)
            assert gone.returncode == 1 and "None found" in gone.stdout

            server.extra = ["--no-announce"]
            server.start()
            quiet = discover(net, env)
            assert quiet.returncode == 1 and "None found" in quiet.stdout
            assert "Announced" not in server.log().split("Server Shut Down")[-1]
        finally:
            server.close()
