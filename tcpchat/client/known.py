"""Pinned server certificates: trust on first use, like SSH's ``known_hosts``."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional


class KnownServers:
    """
    Certificate fingerprints of servers this user has logged in to (trust on
    first use, like SSH's known_hosts), in a small JSON file.
    """

    def __init__(self, path: Optional[str] = None) -> None:
        if path is None:
            try:
                from platformdirs import user_data_dir

                path = os.path.join(user_data_dir("tcpchat"), "known_servers.json")
            except ImportError:  # pragma: no cover
                path = os.path.join(os.path.expanduser("~"), ".tcpchat_known_servers.json")
        self.path = path

    def _load(self) -> Dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, host: str, port: int) -> Optional[str]:
        return self._load().get(f"{host}:{port}")

    def pin(self, host: str, port: int, fingerprint: str) -> None:
        data = self._load()
        data[f"{host}:{port}"] = fingerprint
        self._save(data)

    def forget(self, host: str, port: int) -> bool:
        data = self._load()
        found = data.pop(f"{host}:{port}", None) is not None
        self._save(data)
        return found

    def _save(self, data: Dict[str, str]) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass
