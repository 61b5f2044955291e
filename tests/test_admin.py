"""tcpchat-admin against a running twistd -n tcpchat: each action visible to connected clients and in the audit
table; the admin socket refuses other accounts by its permissions; one server per data directory."""

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from .procs import BIN, TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
ADMIN = os.path.join(BIN, "tcpchat-admin")
RICH = ["rooms", "edits", "profiles"]


def admin(data_dir, *args, user=None):
    command = [ADMIN, "--data-dir", data_dir, *args]
    if user is not None:
        command = ["runuser", "-u", user, "--"] + command
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def data_dir():
    """A data directory others could reach (mode 0755 all the way): only the socket's own mode keeps them out."""
    top = tempfile.mkdtemp(prefix="tcpchat-admin-", dir="/tmp")
    os.chmod(top, 0o755)
    os.mkdir(os.path.join(top, "data"), 0o755)
    yield os.path.join(top, "data")
    shutil.rmtree(top, ignore_errors=True)


def test_console_actions_reach_clients_and_the_audit(data_dir):
    server = ServerProcess(data_dir).start()
    try:
        alice, bob = RawClient(server.port), RawClient(server.port)
        alice.login("alice", features=RICH)
        bob.login("bob", features=RICH)
        done = admin(data_dir, "status")
        assert done.returncode == 0, done.stderr
        assert "online: 2" in done.stdout and "keeps everything" in done.stdout
        who = admin(data_dir, "who")
        assert "alice  from 127.0.0.1 via tcp" in who.stdout and "bob  from 127.0.0.1" in who.stdout
        assert admin(data_dir, "announce", "Fire drill at 11:00").returncode == 0
        for client in (alice, bob):
            said = client.recv_until(lambda f: f.get("kind") == "announce")[-1]
            assert (said["text"], said["name"]) == ("Fire drill at 11:00", "console")
        assert admin(data_dir, "mute", "alice", "--minutes", "5").returncode == 0
        assert alice.recv_until(lambda f: f.get("type") == "error")[-1]["code"] == "muted"
        alice.send({"type": "say", "text": "can I talk?", "cid": "m1"})
        assert alice.recv_until(lambda f: f.get("cid") == "m1")[-1]["code"] == "muted"
        assert admin(data_dir, "unmute", "alice").returncode == 0
        kicked = admin(data_dir, "kick", "bob", "--reason", "flooding")
        assert kicked.returncode == 0 and "bob was kicked." in kicked.stdout
        bye = bob.recv_until(lambda f: f.get("type") == "bye")[-1]
        assert bye["reason"] == "kicked" and "flooding" in bye["message"]
        assert admin(data_dir, "ban", "bob", "--minutes", "10", "--reason", "spam").returncode == 0
        again = RawClient(server.port)
        assert again.login("bob")[-1]["code"] == "banned"
        bans = admin(data_dir, "bans")
        assert "name bob: 10 min left — spam (by console)" in bans.stdout
        assert admin(data_dir, "unban", "bob").returncode == 0
        assert RawClient(server.port).login("bob")[-1]["type"] == "synced"
        shown = admin(data_dir, "passkey")
        assert shown.stdout.strip() == f"Passkey: {server.passkey}"
        rotated = admin(data_dir, "passkey", "--rotate", "new-key-for-the-term")
        assert rotated.returncode == 0 and "Passkey: new-key-for-the-term" in rotated.stdout
        assert RawClient(server.port).login("carol")[-1]["code"] == "bad-passkey"
        assert RawClient(server.port).login("carol", passkey="new-key-for-the-term")[-1]["type"] == "synced"
        # refused actions say why and exit 1; nothing is audited for them
        nobody = admin(data_dir, "kick", "zed")
        assert nobody.returncode == 1 and "Nobody of that name is online." in nobody.stderr
        assert admin(data_dir, "announce", " ").returncode == 1
        audit = admin(data_dir, "audit", "-n", "50")
        lines = audit.stdout.splitlines()
        assert [line.split("console: ")[1].split()[0] for line in lines] == \
            ["announce", "mute", "unmute", "kick", "ban", "bans", "unban", "rotate"]
        assert "new-key-for-the-term" not in audit.stdout  # a passkey is never written to the audit
        answer = json.loads(admin(data_dir, "--json", "status").stdout)
        users = json.loads(admin(data_dir, "--json", "who").stdout)["users"]
        assert answer["ok"] and answer["online"] == len(users) and "alice" in [u["name"] for u in users]
    finally:
        server.close()
    db = sqlite3.connect(os.path.join(data_dir, "tcpchat.sqlite3"))
    rows = db.execute("SELECT actor, action FROM audit ORDER BY id").fetchall()
    assert rows == [("console", a) for a in ("announce", "mute", "unmute", "kick", "ban", "bans", "unban", "rotate")]
    assert admin(data_dir, "status").returncode == 3  # no server now: said so, status 3


def connect_as(uid, gid, path):
    """In a child process running as ``uid``: what connecting to the UNIX socket ``path`` gives."""
    import socket

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            os.setgid(gid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(b'{"action": "passkey"}\n')
            result = b"connected " + sock.recv(4096)
        except PermissionError:
            result = b"permission denied"
        except OSError as e:
            result = str(e).encode()
        os.write(write, result)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        result = f.read().decode()
    os.waitpid(child, 0)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_the_admin_socket_refuses_other_accounts_by_permission(data_dir):
    import pwd

    nobody = pwd.getpwnam("nobody")
    server = ServerProcess(data_dir).start()
    try:
        sock = os.path.join(data_dir, "admin.sock")
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        assert os.stat(data_dir).st_mode & 0o005  # the directory itself is open: the socket's mode is what refuses
        assert connect_as(nobody.pw_uid, nobody.pw_gid, sock) == "permission denied"
        assert server.passkey in connect_as(0, 0, sock)  # (the server's own account, root here, is let in)
        denied = admin(os.path.join(data_dir, "elsewhere"), "passkey")
        assert denied.returncode == 3 and "no tcpchat server is running" in denied.stderr
    finally:
        server.close()


def test_one_server_per_data_directory(data_dir):
    server = ServerProcess(data_dir).start()
    try:
        second = subprocess.run([TWISTD, "-n", "--pidfile=", "tcpchat", "--listen", "tcp:0:interface=127.0.0.1",
                                 "--data-dir", data_dir, "--insecure-plaintext"], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode != 0
        assert f"another tcpchat server is running on {data_dir}" in second.stdout + second.stderr
        assert admin(data_dir, "status").returncode == 0  # the first one is untouched
    finally:
        server.close()
