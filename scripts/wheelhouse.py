"""
Write a wheel for every distribution installed in this Python's environment,
from the installed files themselves (no package index, no build step):
``python scripts/wheelhouse.py DIR``.  Used by ``scripts/bundle``.

A wheel is a zip of what its installation put into site-packages plus its
``.dist-info`` (whose ``WHEEL`` file keeps the original tags, so a compiled
package stays tagged for this platform).  Files installed outside
site-packages (console scripts) are left out: pip writes them again from
``entry_points.txt``.  Byte-code caches and pip's own bookkeeping
(``INSTALLER``, ``REQUESTED``, ``direct_url.json``) are left out too.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import sys
import sysconfig
import zipfile
from importlib import metadata
from typing import Iterable, List, Tuple

#: never carried: the installer's own tools come with every new venv
SKIP = {"pip", "setuptools", "wheel"}
BOOKKEEPING = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _tags(wheel_file: str) -> str:
    """``cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64`` from a WHEEL file's Tag lines."""
    pythons: List[str] = []
    abis: List[str] = []
    platforms: List[str] = []
    for line in wheel_file.splitlines():
        if line.startswith("Tag:"):
            py, abi, plat = line.split(":", 1)[1].strip().split("-")
            for seen, value in ((pythons, py), (abis, abi), (platforms, plat)):
                if value not in seen:
                    seen.append(value)
    if not pythons:
        return "py3-none-any"
    return "-".join(".".join(part) for part in (pythons, abis, platforms))


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(dist: metadata.Distribution, site: str, out_dir: str) -> Tuple[str, int]:
    """One installed distribution -> ``out_dir/NAME-VERSION-TAGS.whl``; returns (path, files)."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    info_dir = next(str(f).split("/")[0] for f in dist.files or () if str(f).split("/")[0].endswith(".dist-info"))
    wheel_meta = (dist.read_text("WHEEL") or "")
    target = os.path.join(out_dir, f"{name}-{version}-{_tags(wheel_meta)}.whl")
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as whl:
        for entry in dist.files or ():
            relative = str(entry)
            parts = relative.split("/")
            if relative.startswith("..") or "__pycache__" in parts or relative.endswith(".pyc"):
                continue
            if parts[0] == info_dir and parts[-1] in BOOKKEEPING:
                continue
            path = os.path.join(site, relative)
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            whl.writestr(zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0)), data,
                         compress_type=zipfile.ZIP_DEFLATED)
            info = whl.getinfo(relative)
            info.external_attr = (os.stat(path).st_mode & 0o777) << 16
            writer.writerow([relative, _digest(data), len(data)])
            count += 1
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        whl.writestr(f"{info_dir}/RECORD", record.getvalue())
    return target, count


def distributions(site: str) -> Iterable[metadata.Distribution]:
    for dist in metadata.distributions(path=[site]):
        if dist.metadata["Name"] and dist.metadata["Name"].lower() not in SKIP:
            yield dist


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: wheelhouse.py DIR", file=sys.stderr)
        return 2
    out_dir = argv[0]
    os.makedirs(out_dir, exist_ok=True)
    site = sysconfig.get_paths()["purelib"]
    for dist in sorted(distributions(site), key=lambda d: d.metadata["Name"].lower()):
        path, files = repack(dist, site, out_dir)
        print(f"  {os.path.basename(path)}  ({files} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
