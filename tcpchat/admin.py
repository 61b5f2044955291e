"""
``tcpchat-admin``: manage a tcpchat server from the machine it runs on.

Everything but ``backup`` and ``restore`` talks to the running server over
its admin socket (``DATA-DIR/admin.sock``, readable by the server's account
only): the same operator actions as ``/oper`` in a client, audited the same
way, with no chat client and no admin passkey.  ``backup`` copies a running
(or stopped) server's data consistently; ``restore`` checks a backup and
puts it in place of a stopped server's data.

Exit status: 0 done, 1 refused or failed (the reason is printed), 2 bad
usage, 3 no server is running on that data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional

from tcpchat.server.admin import SOCKET_NAME

DEFAULT_DATA_DIR = "tcpchat-data"
#: seconds to wait for the server's answer
TIMEOUT = 30.0


class NotRunning(Exception):
    """No server answers on the data directory's admin socket."""


def ask(data_dir: str, request: Dict[str, Any], timeout: float = TIMEOUT) -> Dict[str, Any]:
    """Send one request to the server running on ``data_dir``; its answer."""
    path = os.path.join(data_dir, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise NotRunning(f"no tcpchat server is running on {data_dir} (no {SOCKET_NAME})") from None
        except ConnectionRefusedError:
            raise NotRunning(f"no tcpchat server is running on {data_dir} ({SOCKET_NAME} is left from an "
                             "earlier one)") from None
        except PermissionError:
            raise PermissionError(f"{path}: only the server's own account (or root) may use it") from None
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    if not answer:
        raise ConnectionError("the server closed the admin socket without an answer")
    return dict(json.loads(answer))


def _duration(minutes: Optional[float]) -> Dict[str, Any]:
    return {"duration": int(minutes * 60)} if minutes else {}


def _requests(args: argparse.Namespace) -> Dict[str, Any]:
    """The request a command line makes."""
    command = args.command
    reason = {"reason": args.reason} if getattr(args, "reason", None) else {}
    if command in ("status", "who", "bans", "expire"):
        return {"action": command}
    if command == "kick":
        return {"action": "kick", "name": args.name, **reason}
    if command == "ban":
        request: Dict[str, Any] = {"action": "ban", **_duration(args.minutes), **reason}
        if args.name:
            request["name"] = args.name
        if args.address:
            request["address"] = args.address if args.address != "same" else True
        return request
    if command == "unban":
        target = args.target
        return {"action": "unban", ("address" if any(c in target for c in ".:") else "name"): target}
    if command == "mute":
        return {"action": "mute", "name": args.name, **_duration(args.minutes), **reason}
    if command == "unmute":
        return {"action": "unmute", "name": args.name}
    if command == "release":
        return {"action": "release", "name": args.name}
    if command == "announce":
        return {"action": "announce", "text": " ".join(args.text)}
    if command == "passkey":
        if args.rotate is None:
            return {"action": "passkey"}
        return {"action": "rotate", **({"passkey": args.rotate} if args.rotate else {})}
    if command == "audit":
        return {"action": "audit", "count": args.count}
    raise AssertionError(command)


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    if seconds < 2 * 86400:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} days"


def show(command: str, answer: Dict[str, Any]) -> List[str]:
    """What to print for an answer."""
    if command == "status":
        from tcpchat.ui.text import human_size

        kept = answer.get("retention") or {}
        lines = [f"{answer['server']} (tcpchat {answer['version']}), up {_ago(answer['uptime'])}",
                 f"  online: {answer['online']} ({answer['connections']} connections)",
                 f"  events: {answer['last_event']}; database {human_size(answer['database_bytes'])}, "
                 f"files {human_size(answer['files_bytes'])}"]
        lines.append("  retention: " + (", ".join(f"{k} {v} days" for k, v in kept.items()) if kept else "keeps everything"))
        return lines
    if command == "who":
        users = answer["users"]
        lines = [f"{len(users)} online:"]
        for user in users:
            extra = (" (away)" if user["away"] else "") + (f" — {user['status']}" if user["status"] else "") + \
                    (" [operator]" if user["operator"] else "")
            lines.append(f"  {user['name']}  from {user['address']} via {user['via']}, for {_ago(user['connected'])}{extra}")
        return lines
    if command == "audit":
        return [f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['ts']))}  {r['actor']}: {r['action']} "
                f"{json.dumps(r['detail'], ensure_ascii=False)}" for r in answer["audit"]] or ["(no operator actions yet)"]
    lines = [str(answer.get("message", "Done."))] if answer.get("message") or command != "passkey" else []
    if answer.get("passkey"):
        lines.append(f"Passkey: {answer['passkey']}")
    for ban in answer.get("bans") or []:
        left = "for good" if ban.get("remaining") is None else f"{_ago(ban['remaining'])} left"
        lines.append(f"  {ban['kind']} {ban['value']}: {left}" + (f" — {ban['reason']}" if ban.get("reason") else "")
                     + f" (by {ban['by']})")
    return lines


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tcpchat-admin", description="Manage the tcpchat server running on this machine.")
    p.add_argument("--data-dir", "-d", default=DEFAULT_DATA_DIR, help="the server's --data-dir (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="uptime, who is online, storage")
    sub.add_parser("who", help="who is online, from where")
    kick = sub.add_parser("kick", help="disconnect someone")
    kick.add_argument("name")
    kick.add_argument("--reason")
    ban = sub.add_parser("ban", help="ban a name and/or an address")
    ban.add_argument("name", nargs="?")
    ban.add_argument("--address", help="an IP address, or 'same': the one NAME is connected from")
    ban.add_argument("--minutes", type=float, help="for how long (default: for good)")
    ban.add_argument("--reason")
    unban = sub.add_parser("unban", help="lift a ban on a name or an address")
    unban.add_argument("target")
    mute = sub.add_parser("mute", help="stop someone from sending")
    mute.add_argument("name")
    mute.add_argument("--minutes", type=float)
    mute.add_argument("--reason")
    unmute = sub.add_parser("unmute", help="let them speak again")
    unmute.add_argument("name")
    release = sub.add_parser("release", help="remove a name's password (its owner forgot it)")
    release.add_argument("name")
    announce = sub.add_parser("announce", help="a notice to everyone")
    announce.add_argument("text", nargs="+")
    passkey = sub.add_parser("passkey", help="show the join passkey (--rotate: change it now)")
    passkey.add_argument("--rotate", nargs="?", const="", metavar="NEW", help="a new passkey (none given: a fresh one)")
    sub.add_parser("bans", help="list bans and mutes in force")
    sub.add_parser("expire", help="delete what retention (--keep-messages, --keep-files) says is past its time, now")
    audit = sub.add_parser("audit", help="the latest operator actions")
    audit.add_argument("--count", "-n", type=int, default=20)
    backup = sub.add_parser("backup", help="a consistent copy of the data, while the server runs or not")
    backup.add_argument("out", help="a new directory for the backup")
    restore = sub.add_parser("restore", help="check a backup and put it in place (the server must be stopped)")
    restore.add_argument("backup", help="a directory made by 'tcpchat-admin backup'")
    restore.add_argument("--force", action="store_true", help="replace data that is there (it is moved aside)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    data_dir = os.path.abspath(args.data_dir)
    try:
        if args.command in ("backup", "restore"):
            from tcpchat import backup

            if args.command == "backup":
                lines = backup.backup(data_dir, os.path.abspath(args.out))
            else:
                lines = backup.restore(os.path.abspath(args.backup), data_dir, force=args.force)
            print("\n".join(lines))
            return
        answer = ask(data_dir, _requests(args))
    except NotRunning as e:
        print(f"tcpchat-admin: {e}", file=sys.stderr)
        sys.exit(3)
    except (OSError, ValueError) as e:
        print(f"tcpchat-admin: {e}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    elif answer.get("ok"):
        print("\n".join(show(args.command, answer)))
    if not answer.get("ok"):
        if not args.json:
            print(f"tcpchat-admin: {answer.get('message') or answer.get('code')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
