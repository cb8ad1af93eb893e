"""etcd's JSON gateway (``/v3/...``) as the store calls it: the members, one call with
failover and backoff, and what etcd's answers mean (retry elsewhere, too large,
compacted, refused).

Why the gateway and not a gRPC client: the Python etcd3 clients are unmaintained and pin
old protobuf/grpcio releases; the gateway is part of etcd itself (3.4 in Debian), speaks
JSON over HTTP/1.1, and httpx is already our HTTP client. The cost is base64 keys and an
HTTP round trip per call (about 0.3-1 ms on loopback).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..backoff import Backoff
from .base import StoreError, TooLarge, prefix_end

log = logging.getLogger("metafs.store.etcd")
#: keys read in one page of a long range (a backup, a compaction)
PAGE = 2000


class Compacted(StoreError):
    """etcd no longer has the revision a read asked for."""


class EtcdAuthError(StoreError):
    """etcd refused the user and password (or the client certificate): a configuration
    error, fatal at start."""


@dataclass(frozen=True, slots=True)
class EtcdAccess:
    """How to reach a secured etcd (``etcd+https://``): its CA, a client certificate (with
    no CN when users are on: etcd's gateway refuses one with a CN), a user and password."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    user: str | None = None
    password: str | None = None

    def context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            what = (
                f"--etcd-cert-file {self.cert_file}" if self.cert_file else f"--etcd-ca-file {self.ca_file}"
            )
            raise EtcdAuthError(f"{what}: {getattr(exc, 'strerror', None) or exc}") from None
        return ctx


#: gRPC codes (as the gateway reports them) after which another member, or the same one a
#: moment later, may answer: UNAVAILABLE, DEADLINE_EXCEEDED, and a member that has not yet
#: applied the revision a snapshot reads at.
RETRY_CODES = {14, 4}
RETRY_TEXT = ("leader", "future revision", "timed out", "too many requests", "not capable")
#: etcd's answers to a transaction over its limits, and the flag that raises each
LIMITS = {"too many operations": "--max-txn-ops", "request is too large": "--max-request-bytes"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def encode(value: str | None, now: float) -> str:
    return b64(f"{now!r}\n" if value is None else f"{now!r}\n{value}")


def decode(raw: str | None) -> tuple[float, str]:
    head, _, value = unb64(raw or "").partition("\n")
    try:
        return float(head), value
    except ValueError:  # a key written by something other than metafs
        return 0.0, value


def parse_url(url: str) -> tuple[list[str], str]:
    """``etcd://host:port[,host:port...][/namespace]`` (``etcd+https://``: over TLS) ->
    member URLs and the key prefix."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "etcd+https" else "http"
    hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
    if not hosts:
        raise ValueError(f"store URL {url!r} names no etcd member (etcd://127.0.0.1:2379,...)")
    for h in hosts:
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"store URL {url!r}: etcd member {h!r} is not HOST:PORT")
    ns = parts.path.strip("/")
    return [f"{scheme}://{h}" for h in hosts], (ns + "/" if ns else "metafs/")


class Gateway:
    """The members of one etcd cluster, called in turn: the one that answered last first."""

    def __init__(self, endpoints: list[str], timeout: float, access: EtcdAccess | None = None) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.access = access or EtcdAccess()
        self.current = 0
        self.closed = False
        #: etcd's auth token (``--etcd-user``): sent raw as ``Authorization``, renewed when it
        #: expires (``--auth-token-ttl`` idle seconds)
        self.token = ""
        https = any(e.startswith("https:") for e in endpoints)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=1.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
            # the gateway passes Grpc-Metadata-* on: fail requests and watches on a member
            # that has lost its leader instead of letting them hang there
            headers={"Grpc-Metadata-hasleader": "true"},
            verify=self.access.context() if https else True,
        )

    @property
    def endpoint(self) -> str:
        """The member called next."""
        return self.endpoints[self.current]

    def next_member(self) -> None:
        self.current = (self.current + 1) % len(self.endpoints)

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """A streamed POST to the current member with no read timeout (the watch)."""
        if self.access.user and not self.token:
            await self.authenticate()
        async with self.http.stream(
            "POST",
            self.endpoint + path,
            json=body,
            timeout=httpx.Timeout(None, connect=1.0),
            headers={"Authorization": self.token} if self.token else None,
        ) as resp:
            yield resp

    async def authenticate(self) -> None:
        """A new auth token for ``--etcd-user`` (etcd's simple tokens expire when idle)."""
        self.token = ""
        data = await self.call(
            "/v3/auth/authenticate", {"name": self.access.user, "password": self.access.password or ""}
        )
        self.token = str(data.get("token", ""))

    async def pages(
        self, prefix: str, revision: int = 0
    ) -> AsyncGenerator[tuple[int, list[dict[str, Any]]], None]:
        """Every key under ``prefix``, :data:`PAGE` at a time, at ``revision`` (0: the head,
        then the first page's): each page with the revision it was read at."""
        start, end = b64(prefix), b64(prefix_end(prefix))
        while True:
            req: dict[str, Any] = {"key": start, "range_end": end, "limit": str(PAGE)}
            if revision:
                req["revision"] = str(revision)
            data = await self.call("/v3/kv/range", req)
            revision = revision or int(data["header"]["revision"])
            kvs = data.get("kvs", [])
            if kvs:
                yield revision, kvs
            if not data.get("more") or not kvs:
                return
            start = b64(unb64(kvs[-1]["key"]) + "\0")

    async def aclose(self) -> None:
        self.closed = True
        await self.http.aclose()

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to one member; on a member that cannot answer, the next, with backoff."""
        if self.closed:
            raise StoreError("store is closed")
        deadline = time.monotonic() + self.timeout
        backoff, problem, renewed = Backoff(0.02, 0.5), "", False
        logging_in = path == "/v3/auth/authenticate"
        if self.access.user and not self.token and not logging_in:
            await self.authenticate()
        while True:
            endpoint = self.endpoint
            try:
                headers = {"Authorization": self.token} if self.token and not logging_in else None
                resp = await self.http.post(endpoint + path, json=body, headers=headers)
                if resp.status_code == 400 and b"HTTPS server" in resp.content:
                    raise EtcdAuthError(f"etcd {endpoint} speaks TLS: use etcd+https:// (and --etcd-ca-file)")
                data: dict[str, Any] = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                problem = f"{endpoint}: {type(exc).__name__} {exc}".strip()
            else:
                if resp.status_code == 200 and "error" not in data:
                    return data
                message = str(data.get("message") or data.get("error") or resp.status_code)
                if logging_in and "authentication failed" in message:
                    raise EtcdAuthError(
                        f"etcd authentication failed for user {self.access.user!r} at {endpoint}:"
                        " wrong name or password (--etcd-user, $METAFS_ETCD_PASSWORD or --etcd-password-file)"
                    )
                if "invalid auth token" in message and self.access.user and not renewed:
                    renewed = True  # expired while idle: log in again, try once more
                    await self.authenticate()
                    continue
                if "CommonName" in message:
                    raise EtcdAuthError(f"etcd {endpoint}: {message} (use a client certificate with no CN)")
                if "user name is empty" in message or "permission denied" in message:
                    raise EtcdAuthError(
                        f"etcd {endpoint}{path}: {message} (--etcd-user, and its role's keys)"
                    )
                for text, flag in LIMITS.items():
                    if text in message:
                        raise TooLarge(f"etcd refused a transaction this large ({message}): raise its {flag}")
                if "compacted" in message:
                    raise Compacted(f"etcd {endpoint}{path}: {message}")
                if data.get("code") not in RETRY_CODES and not any(t in message for t in RETRY_TEXT):
                    raise StoreError(f"etcd {endpoint}{path}: {message}")
                problem = f"{endpoint}: {message}"
            if time.monotonic() + backoff.delay > deadline:
                raise StoreError(f"no etcd member answered within {self.timeout:g}s (last: {problem})")
            log.debug("etcd call failed, trying the next member: %s", problem)
            self.next_member()
            await backoff.wait()
