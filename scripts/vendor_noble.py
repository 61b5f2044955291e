"""
Vendor the audited @noble libraries the browser client uses (pinned, with their licences):

    python scripts/vendor_noble.py            # fetches the pinned tarballs with `npm pack`, then copies

Only the modules reachable from what tcpchat imports are copied (ES modules, as published); the
``@noble/hashes/…`` imports inside @noble/curves are rewritten to relative paths, so the files run
in a browser and in Node with no bundler and no import map.  The result is committed: nothing is
fetched at run time.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

PINNED = {"curves": "2.4.0", "hashes": "2.4.0"}
ENTRIES = {"curves": ["ed25519.js"], "hashes": ["sha2.js", "hkdf.js", "hmac.js", "utils.js"]}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tcpchat", "web", "vendor", "noble")
IMPORT = re.compile(r"""(from\s+|import\s*\(?\s*)(['"])([^'"]+)\2""")


def main() -> int:
    work = tempfile.mkdtemp(prefix="tcpchat-noble-")
    shutil.rmtree(OUT, ignore_errors=True)
    notes = []
    for name, version in PINNED.items():
        subprocess.run(["npm", "pack", f"@noble/{name}@{version}", "--silent"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        tarball = os.path.join(work, f"noble-{name}-{version}.tgz")
        digest = hashlib.sha256(open(tarball, "rb").read()).hexdigest()
        notes.append(f"@noble/{name} {version}  npm tarball sha256 {digest}  MIT")
        with tarfile.open(tarball) as tar:
            tar.extractall(os.path.join(work, name), filter="data")
    for name in PINNED:
        src = os.path.join(work, name, "package")
        todo, seen = list(ENTRIES[name]), set()
        while todo:
            rel = os.path.normpath(todo.pop())
            if rel in seen:
                continue
            seen.add(rel)
            text = open(os.path.join(src, rel), encoding="utf-8").read()

            def rewrite(m, rel=rel):
                spec = m.group(3)
                if spec.startswith("@noble/hashes/"):
                    target = os.path.join("..", "hashes", spec[len("@noble/hashes/"):])
                    todo_other.append(spec[len("@noble/hashes/"):])
                    path = os.path.relpath(os.path.join(OUT, "curves", target), os.path.join(OUT, name, os.path.dirname(rel)))
                    return f"{m.group(1)}{m.group(2)}{path if path.startswith('.') else './' + path}{m.group(2)}"
                if spec.startswith("."):
                    todo.append(os.path.join(os.path.dirname(rel), spec))
                return m.group(0)

            todo_other: list = []
            text = IMPORT.sub(rewrite, text)
            ENTRIES["hashes"].extend(todo_other)
            dest = os.path.join(OUT, name, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            open(dest, "w", encoding="utf-8").write(text)
        shutil.copy(os.path.join(src, "LICENSE"), os.path.join(OUT, name, "LICENSE"))
    open(os.path.join(OUT, "VERSIONS.txt"), "w").write("\n".join(notes) + "\n")
    print(f"vendored into {OUT}:\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
