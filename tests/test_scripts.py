"""The README's commands work with no package index once set up."""

import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(ROOT, "scripts", "serve")


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, ".venv", ".tcpchat-installed")),
                    reason="the scripts have not set up .venv here")
def test_serve_starts_offline_quickly(tmp_path):
    """After one setup, ./scripts/serve reaches its banner in under 2 s with no package index reachable."""
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS="", PYTHONUNBUFFERED="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    began = time.monotonic()
    proc = subprocess.Popen([SERVE, "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", str(tmp_path),
                             "--insecure-plaintext"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out = b""
        while b"is ready" not in out and time.monotonic() - began < 20:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        elapsed = time.monotonic() - began
        assert b"is ready" in out, out.decode(errors="replace")
        assert b"pip" not in out.lower() or b"error" not in out.lower()
        assert elapsed < 2.0, f"{elapsed:.2f} s to the banner"
    finally:
        proc.terminate()
        proc.wait(20)


OFFLINE = dict(PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_INDEX_URL="http://127.0.0.1:9/simple",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, ".venv", ".tcpchat-installed")),
                    reason="the scripts have not set up .venv here")
def test_offline_bundle_installs_into_a_fresh_venv_with_no_index(tmp_path):
    """scripts/bundle writes a wheelhouse from this setup; its install.sh installs it with --no-index elsewhere,
    and the server it installed starts; a bundle for another Python is refused with a clear message."""
    env = dict(os.environ, **OFFLINE)
    usb = tmp_path / "usb"
    made = subprocess.run([os.path.join(ROOT, "scripts", "bundle"), str(usb)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    wheels = sorted(os.listdir(usb / "wheels"))
    for needed in ("tcpchat-", "Twisted-", "spake2-", "cryptography-", "segno-", "zeroconf-"):
        assert any(w.startswith(needed) for w in wheels), (needed, wheels)

    target = tmp_path / "elsewhere"
    installed = subprocess.run(["sh", str(usb / "install.sh"), str(target)], env=env, capture_output=True,
                               text=True, timeout=300, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "tcpchat is installed" in installed.stdout
    proc = subprocess.Popen([str(target / "bin" / "twistd"), "-n", "--pidfile=", "tcpchat", "--listen",
                             "tcp:0:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        out = b""
        deadline = time.monotonic() + 30
        while b"is ready" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert b"is ready" in out, out.decode(errors="replace")
    finally:
        proc.terminate()
        proc.wait(20)

    (usb / "BUILT-FOR").write_text("python=2.7 machine=pdp11\n")
    refused = subprocess.run(["sh", str(usb / "install.sh"), str(tmp_path / "other")], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1
    assert "made for python=2.7 machine=pdp11" in refused.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, ".venv", ".tcpchat-installed")),
                    reason="the scripts have not set up .venv here")
def test_cluster_script_starts_postgresql_and_nodes_that_share_one_conversation(tmp_path):
    """scripts/cluster 2: PostgreSQL and two nodes on consecutive ports; a message said on one reaches a user
    on the other; Ctrl-C stops everything and leaves nothing behind."""
    import glob
    import signal
    import socket
    import tempfile

    from . import pgserver
    from .procs import RawClient

    if pgserver.binaries() is None:
        pytest.skip("PostgreSQL is not installed")
    for base in range(23456, 23456 + 400, 2):  # two free consecutive ports (bounded search)
        try:
            for port in (base, base + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tcpchat-cluster-*")))
    proc = subprocess.Popen([os.path.join(ROOT, "scripts", "cluster"), "2", "--base-port", str(base),
                             "--insecure-plaintext", "--passkey", "abcde-fghjk", "--message-rate", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, **OFFLINE),
                            start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 90
        while b"tcpchat cluster: 2 nodes" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert b"tcpchat cluster: 2 nodes" in out, out.decode(errors="replace")[-3000:]
        ann, ben = RawClient(base), RawClient(base + 1)
        assert ann.login("ann")[-1]["type"] == "synced" and ben.login("ben")[-1]["type"] == "synced"
        ann.send({"type": "say", "text": "across nodes", "cid": "x1"})
        got = ben.recv_until(lambda f: f.get("type") == "event" and f.get("text") == "across nodes")
        assert got[-1]["name"] == "ann"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # (Ctrl-C reaches the whole group, as in a terminal)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out + rest).decode(errors="replace")[-3000:]
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "tcpchat-cluster-*"))) == before
