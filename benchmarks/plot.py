"""
Plots of a bench.py run: delivery latency percentiles against the number of
receivers, one line per server, one panel per way of receiving.

    .venv/bin/python benchmarks/bench.py --json /tmp/bench.json
    .venv/bin/python benchmarks/plot.py /tmp/bench.json docs/latency.png

Needs matplotlib (``pip install matplotlib``; not a dependency of tcpchat
itself).  Each point is the median of the run's repeats; the bar spans the
smallest and largest repeat.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

COLOURS = {"tcpchat": "#1f77b4", "relay": "#2ca02c", "ngircd": "#d62728", "seed": "#7f7f7f", "tcpchat-ws": "#9467bd"}
RECEIVERS = {"scan": "receivers scan the stream in bulk", "parse": "receivers parse every frame"}


def plot(results: Dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    cells = [c for c in results["cells"] if "error" not in c and c.get("p99_ms") == c.get("p99_ms")]
    modes = [m for m in ("scan", "parse") if any(c.get("recv", "scan") == m for c in cells)]
    fig, axes = plt.subplots(2, len(modes), figsize=(6.2 * len(modes), 7.5), squeeze=False, sharex=True)
    for col, mode in enumerate(modes):
        rows = [c for c in cells if c.get("recv", "scan") == mode]
        for line, (key, title) in enumerate((("p99_ms", "p99"), ("p50_ms", "p50"))):
            ax = axes[line][col]
            for server in sorted({c["server"] for c in rows}, key=list(COLOURS).index):
                mine = sorted((c for c in rows if c["server"] == server), key=lambda c: c["N"])
                ns = [c["N"] for c in mine]
                mid = [c[key] for c in mine]
                spread = [c.get(key + "_spread") or (c[key], c[key]) for c in mine]
                low = [m - s[0] for m, s in zip(mid, spread)]
                high = [s[1] - m for m, s in zip(mid, spread)]
                lost = sum(c.get("lost") or 0 for c in mine)
                label = server + (f" (lost {lost:,.0f} messages: its latency is of the few delivered)" if lost else "")
                ax.errorbar(ns, mid, yerr=[low, high], marker="o", capsize=4, label=label,
                            color=COLOURS.get(server))
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted({c["N"] for c in rows}))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
            ax.set_title(f"{title} delivery latency, {RECEIVERS.get(mode, mode)}", fontsize=10)
            ax.set_ylabel("ms (log scale)")
            ax.grid(True, which="both", alpha=0.3)
            if line == 1:
                ax.set_xlabel("receivers (N), one sender at 50 msg/s")
            ax.legend(fontsize=8)
    runs = max((c.get("runs", 1) for c in cells), default=1)
    fig.suptitle(f"tcpchat, a bare Twisted relay, ngircd and the seed in one run: median of {runs} repeats, "
                 "bars from the lowest to the highest repeat", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        results = json.load(f)
    try:
        plot(results, argv[1])
    except ImportError:
        print("plot.py needs matplotlib: .venv/bin/pip install matplotlib", file=sys.stderr)
        return 2
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
