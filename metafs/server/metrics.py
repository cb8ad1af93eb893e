"""The server's Prometheus metrics (prometheus-client), kept by an ASGI middleware and the
request handlers.

Labels never carry ids, paths or tokens: ``route`` is the first segment of the API path
(``kv``, ``view``, ``watch``...), so the number of series stays small and fixed.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol import ROUTES

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: one sample per counter is what scrapers need

API_ROUTES = frozenset(ROUTES)
OTHER_ROUTES = {"/healthz": "healthz", "/metrics": "metrics", "/openapi.json": "openapi", "/ui": "ui"}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def route_of(path: str) -> str:
    """The ``route`` label of a request path."""
    parts = path.split("/", 3)
    if len(parts) > 2 and parts[1] == "v1":
        return parts[2] if parts[2] in API_ROUTES else "other"
    return OTHER_ROUTES.get(path.rstrip("/") or path, "other")


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class ServerMetrics:
    """The server's metrics, in a registry of its own (several servers in one test process
    do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, open fds, CPU seconds
        self.requests = Counter(
            "metafs_http_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "metafs_http_request_duration_seconds",
            "Time to answer a request, by route (long polls are left out: they wait on purpose)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.long_polls = Gauge(
            "metafs_long_polls_open", "Long polls waiting for a change now", registry=self.registry
        )
        self.revision = Gauge(
            "metafs_store_revision",
            "The latest store revision this server has read or written",
            registry=self.registry,
        )
        self.answers_reused = Counter(
            "metafs_http_answers_reused",
            "Reads answered with an answer kept since the last commit (no store read)",
            registry=self.registry,
        )
        self.compacted = Gauge(
            "metafs_store_compacted_revision",
            "The store's compacted revision: deltas and long polls from below it answer 410",
            registry=self.registry,
        )
        self.tombstones = Gauge(
            "metafs_store_tombstones",
            "Tombstones of deletes kept (younger than --history-retention), at the last compaction",
            registry=self.registry,
        )
        self.compactions = Counter(
            "metafs_store_compactions",
            "Compaction runs, by result (ok, error)",
            ["result"],
            registry=self.registry,
        )
        self.compaction_seconds = Histogram(
            "metafs_store_compaction_duration_seconds",
            "Time one compaction run took",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0),
            registry=self.registry,
        )
        self.compacted_tombstones = Counter(
            "metafs_store_compacted_tombstones",
            "Tombstones removed by compaction",
            registry=self.registry,
        )
        self.tls_reloads = Counter(
            "metafs_tls_reloads",
            "TLS files read again on SIGHUP, by result (ok, error: the old certificate stays)",
            ["result"],
            registry=self.registry,
        )
        self.tls_expiry = Gauge(
            "metafs_tls_certificate_expiry_timestamp_seconds",
            "When the server's certificate expires (Unix time): alert before it lapses",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "metafs_store_errors", "Requests answered 503 because the store failed", registry=self.registry
        )
        self.cache_bytes = Gauge(
            "metafs_cache_bytes",
            "What each cache of the server holds, in bytes (views: estimated); each has a bound",
            ["cache"],
            registry=self.registry,
        )
        self.cache_entries = Gauge(
            "metafs_cache_entries",
            "Entries each cache of the server holds",
            ["cache"],
            registry=self.registry,
        )
        self.slow_headers = Counter(
            "metafs_http_slow_headers",
            "Connections closed with 408: a request's headers did not arrive within --header-timeout",
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "metafs_http_connections_refused",
            "Connections answered 503 and closed: over --max-connections open",
            registry=self.registry,
        )

        self._revision = 0

    def saw_revision(self, revision: int) -> None:
        if revision > self._revision:
            self._revision = revision
            self.revision.set(revision)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app``: count every HTTP request and time those that are not long polls."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start, status = time.perf_counter(), 500

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = route_of(scope["path"])
                self.requests.labels(route, scope["method"], str(status)).inc()
                if b"index=" not in scope.get("query_string", b""):
                    self.latency.labels(route).observe(time.perf_counter() - start)

        return measured
