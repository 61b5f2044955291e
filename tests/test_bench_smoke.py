"""A seconds-long run of the benchmark tool, so it keeps working (it is not a performance test)."""

import json
import os
import subprocess
import sys

import pytest

from .procs import TWISTD

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench.py")


@pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
def test_benchmark_quick_run(tmp_path):
    """bench.py --quick measures tcpchat end to end and reports no lost, duplicated or reordered message."""
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, BENCH, "--quick", "--servers", "tcpchat,seed", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    cells = {c["recv"]: c for c in data["cells"] if c["server"] == "tcpchat"}
    assert set(cells) == {"scan", "parse"}  # receivers that scan the stream, and receivers that parse every frame
    for cell in cells.values():
        assert cell["logged_in"] == 5 and cell["lost"] == 0 and cell["duplicated"] == 0 and cell["reordered"] == 0
        assert cell["deliveries"] > 0 and cell["p99_ms"] > 0
    assert data["files"]["download_MBps"] > 0 and data["files"]["upload_MBps"] > 0
    assert "server" in result.stdout and "files (" in result.stdout
    queries = {q["query"]: q for q in data["search"]["queries"]}
    assert queries["common word"]["found"] == 20 and queries["no match"]["found"] == 0
    assert "search over 3,000 messages" in result.stdout
