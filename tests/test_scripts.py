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
