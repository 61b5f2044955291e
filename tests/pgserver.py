"""
A throw-away PostgreSQL server for tests and demos, from Debian's packages
(``apt-get install postgresql``): a new cluster in a temporary directory,
listening on 127.0.0.1 and a private socket directory, stopped and deleted
afterwards.  As root it runs as the ``postgres`` user (PostgreSQL refuses
root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, Optional


def binaries() -> Optional[str]:
    """The directory of PostgreSQL's server programs, or None when it is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, fsync: bool = True) -> None:
        bindir = binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.fsync = fsync
        self.root = tempfile.mkdtemp(prefix="tcpchat-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self.proc: Optional[subprocess.Popen] = None
        self._as_user: Dict[str, Any] = {}
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o755)
            # PostgreSQL's own process as that user (not under runuser, which would not pass on signals)
            self._as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> "PgServer":
        if not os.path.exists(self.data):
            subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                                       "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._as_user)
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port),
                        "-h", "127.0.0.1", "-k", self.root, "-c", f"fsync={'on' if self.fsync else 'off'}",
                        "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "log"), "ab"), **self._as_user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded: until it accepts connections
            if self.proc.poll() is not None:
                raise RuntimeError("PostgreSQL did not start: " + self.log()[-2000:])
            ready = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port)])
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not become ready in time: " + self.log()[-2000:])

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn_for(database), autocommit=True) as conn:
            conn.execute(statement)

    def stop(self, fast: bool = True) -> None:
        """Stop the server (``fast``: SIGINT, PostgreSQL's fast shutdown; otherwise SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            import signal

            self.proc.send_signal(signal.SIGINT if fast else signal.SIGKILL)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
