"""Unit tests of the server with a store that fails (a fake store, in a unit test only)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from metafs import auth
from metafs.server.app import MetadataServer
from metafs.server.run import event_loop
from metafs.store import Guard, Op, Snapshot, Store, StoreError
from metafs.store.base import Compaction
from tests.support.servers import HEADERS, OPERATOR_TOKEN


class DownStore(Store):
    """Every call fails the way an unreachable backend does."""

    @contextlib.asynccontextmanager
    async def snapshot(self, seen: int = 0) -> AsyncIterator[Snapshot]:
        raise StoreError("disk I/O error")
        yield  # pragma: no cover

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> int:
        raise StoreError("disk I/O error")

    async def wait(self, prefixes: Sequence[str], after: int, timeout: float) -> int | None:
        raise StoreError("disk I/O error")

    def release_waiters(self) -> None:
        pass

    async def revision(self) -> int:
        raise StoreError("disk I/O error")

    async def renew_identity(self) -> str:
        raise StoreError("disk I/O error")

    async def compact(self, before: float) -> Compaction:
        raise StoreError("disk I/O error")

    async def close(self) -> None:
        pass


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_store_that_is_down_gives_503_everywhere() -> None:
    app = MetadataServer(DownStore(), operator_digest=auth.digest(OPERATOR_TOKEN)).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://metafs", headers=HEADERS) as c:
        for method, path in [
            ("GET", "/healthz"),
            ("GET", "/v1/kv/5/"),
            ("GET", "/v1/view/x/self/hostname"),
            ("PUT", "/v1/kv/5/t/s/u/hostname"),
            ("POST", "/v1/load"),
        ]:
            r = await c.request(method, path, content=b"accounts: {}")
            assert r.status_code == 503, (method, path, r.text)
            assert r.text == "the metadata store is unavailable\n"
            j = await c.request(method, path, content=b"accounts: {}", headers={"Accept": "application/json"})
            assert j.json()["error"]["status"] == 503


@pytest.mark.anyio
async def test_a_gone_client_is_told_by_uvicorns_flag_without_a_receive() -> None:
    """The sweep of parked polls reads uvicorn's ``disconnected`` flag; only a server
    without one is asked with a (cancelled) receive."""
    from starlette.requests import Request

    from metafs.server.longpoll import gone as _gone

    class Cycle:
        def __init__(self, disconnected: bool) -> None:
            self.disconnected = disconnected
            self.received = 0

        async def receive(self) -> dict[str, str]:
            self.received += 1
            return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": "/v1/kv/a", "headers": []}
    for flag in (False, True):
        cycle = Cycle(flag)
        assert await _gone(Request(scope, cycle.receive)) is flag
        assert cycle.received == 0

    async def plain_receive() -> dict[str, str]:
        return {"type": "http.disconnect"}

    assert await _gone(Request(scope, plain_receive)) is True


def test_auto_runs_tls_on_uvloop_and_plaintext_on_asyncio() -> None:
    assert event_loop("auto", tls=True) == "uvloop"
    assert event_loop("auto", tls=False) == "asyncio"
    assert event_loop("asyncio", tls=True) == "asyncio"
    assert event_loop("uvloop", tls=False) == "uvloop"
