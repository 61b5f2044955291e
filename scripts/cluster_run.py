"""scripts/cluster: PostgreSQL and N tcpchat nodes on 127.0.0.1 with temporary data (see docs/SCALING.rst)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.pgserver import PgServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("nodes", nargs="?", type=int, default=3, help="how many tcpchat nodes (default 3)")
    p.add_argument("--base-port", type=int, default=12345, help="the first node's port; the others follow")
    p.add_argument("--interface", default="127.0.0.1", help="where the nodes listen (default 127.0.0.1)")
    args, extra = p.parse_known_args()
    if not 1 <= args.nodes <= 32:
        p.error("from 1 to 32 nodes")
    top = tempfile.mkdtemp(prefix="tcpchat-cluster-")
    pg = PgServer()
    procs = []
    try:
        pg.start()
        pg.sql("CREATE DATABASE tcpchat")
        dsn = pg.dsn_for("tcpchat")
        files = os.path.join(top, "files")
        os.makedirs(files)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        cert = key = None
        for i in range(args.nodes):
            data = os.path.join(top, f"node{i + 1}")
            os.makedirs(data)
            command = [twistd, "-n", "--pidfile=", "tcpchat", "--listen",
                       f"tcp:{args.base_port + i}:interface={args.interface}:backlog=1024", "--data-dir", data,
                       "--database", dsn, "--files-dir", files, "--node-name", f"node{i + 1}", "--no-announce"]
            if cert is not None:  # every node shows the first one's certificate (clients pin it)
                command += ["--certificate", cert, "--private-key", key]
            procs.append(subprocess.Popen(command + extra, cwd=data))
            if cert is None and "--insecure-plaintext" not in extra:
                cert, key = os.path.join(data, "server.pem"), os.path.join(data, "server.key")
                deadline = time.monotonic() + 60
                while not (os.path.exists(cert) and os.path.exists(key)):  # bounded: the first node makes them
                    if time.monotonic() > deadline or procs[0].poll() is not None:
                        raise SystemExit("the first node did not start (see its output above)")
                    time.sleep(0.1)
        for i, proc in enumerate(procs):  # bounded: until every node accepts connections
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection((args.interface, args.base_port + i), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"node {i + 1} did not start (see its output above)")
                    time.sleep(0.1)
        print(f"\ntcpchat cluster: {args.nodes} nodes on {args.interface}:{args.base_port}"
              f"-{args.base_port + args.nodes - 1}, PostgreSQL at {dsn}, files in {files}. Ctrl-C stops it.\n",
              flush=True)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        return 1  # a node stopped by itself
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.destroy()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
