"""The mount daemon's Prometheus metrics, read from its status at scrape time
(prometheus-client only: the daemon does not load the server's HTTP stack)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .status import Status

#: status field -> (metric name after ``metafs_mount_``, help)
GAUGES = {
    "views_cached": ("views_cached", "Unit views held by the cache"),
    "units_listed": ("units_listed", "Units the server lists for this mount (host mode)"),
    "stale": ("stale", "1 while the server is unreachable and cached views are served stale"),
    "stale_seconds": ("stale_seconds", "How long the views have been stale"),
    "revision": ("revision", "The store revision the watcher has caught up to"),
    "views_bytes": ("views_bytes", "What the cached views weigh, estimated (bytes)"),
    "inodes": ("inodes", "Inodes the kernel holds (what statfs reports in use)"),
}
COUNTERS = {
    "fetches": ("view_fetches", "Views fetched from the server"),
    "fetch_errors": ("view_fetch_errors", "View fetches that failed"),
    "watch_answers": ("watch_answers", "Answers of the long poll that keeps views fresh"),
    "invalidations": ("invalidations", "Kernel cache invalidations sent"),
    "evictions": ("view_evictions", "Views dropped while their unit exists (idle, over --cache-size)"),
}


class MountCollector(Collector):
    """The mount daemon's metrics, taken from ``status()`` each time Prometheus scrapes."""

    def __init__(self, status: Status) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        for field, (name, doc) in GAUGES.items():
            yield GaugeMetricFamily(f"metafs_mount_{name}", doc, value=float(getattr(st, field)))
        for field, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(f"metafs_mount_{name}", doc, value=float(getattr(st, field)))
        server = GaugeMetricFamily(
            "metafs_mount_server", "The server the daemon talks to now", labels=["url"]
        )
        server.add_metric([st.server], 1.0)
        yield server


def mount_registry(status: Status) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(MountCollector(status))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
