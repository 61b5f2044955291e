"""contrib/tcpchat.service: verified by systemd-analyze (and a broken copy is not), its hardening scored, and its
ExecStart run as written (paths for this machine): it starts, tcpchat-admin reaches it, SIGTERM stops it with exit
0, and a start that cannot listen exits 1 with one line saying why (what Restart=on-failure acts on)."""

import os
import re
import shlex
import shutil
import socket
import subprocess

import pytest

from .procs import BIN, TWISTD, ServerProcess

UNIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "contrib", "tcpchat.service")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (apt install systemd)")


def unit_for_here(tmp_path, text=None):
    """The unit with this machine's twistd in place of /opt/tcpchat's."""
    text = text if text is not None else open(UNIT, encoding="utf-8").read()
    path = tmp_path / "tcpchat.service"
    path.write_text(text.replace("/opt/tcpchat/.venv/bin/twistd", TWISTD), encoding="utf-8")
    return str(path)


@needs_analyze
def test_the_unit_verifies_and_is_hardened(tmp_path):
    checked = subprocess.run([ANALYZE, "verify", unit_for_here(tmp_path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stderr
    broken = open(UNIT, encoding="utf-8").read().replace("RestartSec=5s", "RestartSec=soon").replace(
        "/opt/tcpchat/.venv/bin/twistd", "/no/such/twistd")
    (tmp_path / "broken").mkdir()
    path = tmp_path / "broken" / "tcpchat.service"
    path.write_text(broken, encoding="utf-8")
    refused = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "not executable" in refused.stderr  # (the check can fail)
    scored = subprocess.run([ANALYZE, "security", "--offline=yes", unit_for_here(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    level = float(re.search(r"Overall exposure level for tcpchat.service: ([\d.]+)", scored.stdout).group(1))
    assert level <= 2.0, scored.stdout  # systemd's scale: 0 (locked down) to 10 (exposed); ≤ 2 is "OK"


def exec_start(data_dir, port):
    """The unit's ExecStart as argv, for a data directory and port of this test."""
    line = next(l for l in open(UNIT, encoding="utf-8") if l.startswith("ExecStart="))
    argv = shlex.split(line[len("ExecStart="):])
    argv[0] = TWISTD
    argv = [data_dir if a == "/var/lib/tcpchat" else a for a in argv]
    argv[argv.index("--port") + 1] = str(port)
    return argv + ["--no-announce"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
def test_exec_start_runs_stops_cleanly_and_fails_with_status_1(tmp_path):
    data = str(tmp_path / "state")
    os.mkdir(data, 0o700)  # what StateDirectory= makes
    server = ServerProcess(data, passkey=None, tls=True)
    server.argv = exec_start(data, free_port())
    server.start()
    try:
        assert "Retention:   off (everything is kept)" in server.log()
        status = subprocess.run([os.path.join(BIN, "tcpchat-admin"), "--data-dir", data, "status"],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "online: 0" in status.stdout
        # a second start on the same port (another data directory): one line, exit 1
        other = str(tmp_path / "other")
        os.mkdir(other, 0o700)
        argv = exec_start(other, server.port)
        clash = subprocess.run(argv, cwd=other, capture_output=True, text=True, timeout=60)
        assert clash.returncode == 1
        assert re.search(r"tcpchat could not start: cannot listen on \*:\d+", clash.stdout + clash.stderr)
        assert server.stop() == 0
        assert "tcpchat stopped cleanly" in server.log()
        assert "Traceback" not in server.log()
    finally:
        server.close()
