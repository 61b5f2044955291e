"""
What the server counts, and the Prometheus view of it (``--metrics``).

The server keeps plain counters (:class:`Stats`, on the factory): an
increment is an attribute add, so counting costs nothing on the hot path
whether or not anyone scrapes.  :class:`Collector` turns them, and gauges
read from the live state at scrape time (connections, queues, storage), into
Prometheus metric families; :func:`make_site` serves them with
``prometheus_client`` on ``twisted.web`` at ``/metrics``, with ``/healthz``
answering 200 only while the store takes a write.  Names and labels are
documented in ``docs/OPERATIONS.rst`` (and tested).
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from typing import Any, Iterator, List, Sequence, Tuple

#: seconds buckets for commit and ack latency
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: events per group commit
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Counts per bucket (upper bounds), a sum and a count: what a Prometheus histogram needs."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> List[Tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append((repr(float(bound)), total))
        out.append(("+Inf", self.count))
        return out


class Stats:
    """The server's counters (monotonic, since start)."""

    def __init__(self) -> None:
        self.logins = 0
        self.loginFailures: Counter = Counter()
        self.lockouts = 0
        self.events: Counter = Counter()  # stored, by kind
        self.deliveries: Counter = Counter()  # frames of events sent, "live" or "catch-up"
        self.catchups = 0
        self.slowReaders = 0  # times a reader fell behind and went to catch-up
        self.refusals: Counter = Counter()  # error codes answered to requests
        self.uploadBytes = 0
        self.downloadBytes = 0
        self.commitBatch = Histogram(BATCH_BUCKETS)
        self.commitSeconds = Histogram(LATENCY_BUCKETS)
        self.ackSeconds = Histogram(LATENCY_BUCKETS)
        self.expired: Counter = Counter()  # events and files removed by retention


def _kind(session: Any) -> str:
    return str(getattr(session.link, "kind", "other"))


class Collector:
    """A ``prometheus_client`` collector over one server's :class:`Stats` and live state."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        factory = self.factory
        stats: Stats = factory.stats

        def counter(name: str, doc: str, value: float) -> Any:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            return family

        def labelled(name: str, doc: str, label: str, counts: Counter, kind: Any = CounterMetricFamily) -> Any:
            family = kind(name, doc, labels=[label])
            for key, value in sorted(counts.items()):
                family.add_metric([str(key)], value)
            return family

        def histogram(name: str, doc: str, h: Histogram) -> Any:
            family = HistogramMetricFamily(name, doc)
            family.add_metric([], h.cumulative(), sum_value=h.sum)
            return family

        connections: Counter = Counter()
        queued = slow = 0
        for session in list(factory.connections):
            state = "live" if session.state == "live" else "login"
            connections[(state, _kind(session))] += 1
            delivery = session.delivery
            queued += delivery.queuedWhilePaused if delivery.writePaused else 0
            if session.state == "live" and not delivery.live:
                slow += 1
        family = GaugeMetricFamily("tcpchat_connections", "Open connections, by state and transport.",
                                   labels=["state", "transport"])
        for (state, kind), n in sorted(connections.items()):
            family.add_metric([state, kind], n)
        yield family
        yield GaugeMetricFamily("tcpchat_users_online", "Users logged in.", value=len(factory.users))
        yield counter("tcpchat_logins", "Successful logins.", stats.logins)
        yield labelled("tcpchat_login_failures", "Failed logins, by error code.", "code", stats.loginFailures)
        yield counter("tcpchat_lockouts", "Addresses locked out after repeated wrong passkeys.", stats.lockouts)
        yield labelled("tcpchat_events", "Events stored, by kind (message, file, join, ...).", "kind", stats.events)
        yield labelled("tcpchat_deliveries", "Event frames sent to clients, live or in catch-up.", "mode",
                       stats.deliveries)
        yield counter("tcpchat_catchups", "Catch-up runs (a reconnect, or a slow reader).", stats.catchups)
        yield counter("tcpchat_slow_readers", "Times a reader fell behind and was switched to catch-up.",
                      stats.slowReaders)
        yield GaugeMetricFamily("tcpchat_slow_readers_now", "Logged-in users in catch-up now.", value=slow)
        yield GaugeMetricFamily("tcpchat_send_queue_bytes", "Bytes queued for peers that are not reading.",
                                value=queued)
        yield labelled("tcpchat_refusals", "Requests refused, by error code (slow-down: the rate limit).", "code",
                       stats.refusals)
        yield counter("tcpchat_upload_bytes", "File bytes received.", stats.uploadBytes)
        yield counter("tcpchat_download_bytes", "File bytes sent.", stats.downloadBytes)
        yield histogram("tcpchat_commit_batch_events", "Events per group commit.", stats.commitBatch)
        yield histogram("tcpchat_commit_seconds", "Time of a group commit (write and sync).", stats.commitSeconds)
        yield histogram("tcpchat_ack_seconds", "From a message received to its ack sent.", stats.ackSeconds)
        yield labelled("tcpchat_expired", "Removed by retention: events and files.", "what", stats.expired)
        files = factory.files
        yield GaugeMetricFamily("tcpchat_files_bytes", "Bytes of stored files.",
                                value=files.storedBytes if files is not None else 0)
        path = factory.store.path
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        yield GaugeMetricFamily("tcpchat_database_bytes", "Bytes of the database (with its write-ahead log).",
                                value=size)
        yield GaugeMetricFamily("tcpchat_last_event_id", "The newest event's id.", value=factory.lastId)


def make_site(factory: Any) -> Any:
    """``/metrics`` (Prometheus text format) and ``/healthz`` for one server, on twisted.web."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET, Site

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(factory))

    class Health(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")

            def answer(ok: bool, text: str) -> None:
                request.setResponseCode(200 if ok else 503)
                request.write(text.encode("utf-8") + b"\n")
                request.finish()

            d = factory.store.check_writable()
            d.addCallbacks(lambda _: answer(True, "ok"),
                           lambda f: answer(False, f"the store is not writable: {f.getErrorMessage()}"))
            return NOT_DONE_YET

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    root.putChild(b"healthz", Health())
    class Quiet(Site):
        noisy = False

        def log(self, request: Any) -> None:
            pass  # (no access log: a scrape every 15 s would fill it)

    return Quiet(root)
