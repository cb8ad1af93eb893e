"""The server's write-coalescing transport: a response's head and body leave as one
write, in order, and nothing held is lost at close or reordered past a big write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from metafs.server.connections import CoalescingTransport

pytestmark = [pytest.mark.timeout(10), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server's loop


class Recording:
    """A transport that records its writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.writes))

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


def coalescing() -> tuple[CoalescingTransport, Recording]:
    rec = Recording()
    return CoalescingTransport(rec, asyncio.get_running_loop()), rec  # type: ignore[arg-type]


async def test_head_and_body_go_as_one_write() -> None:
    t, rec = coalescing()
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert rec.writes == [] and t.get_write_buffer_size() == 19
    t.write(b"body")
    assert rec.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing
    assert len(rec.writes) == 1


async def test_a_lone_small_write_goes_at_the_next_turn() -> None:
    t, rec = coalescing()
    t.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    await asyncio.sleep(0)
    assert rec.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]


async def test_big_writes_keep_their_order_and_are_not_copied_into_one() -> None:
    t, rec = coalescing()
    big = b"x" * (CoalescingTransport.JOIN + 1)
    t.write(b"head")
    t.write(big)
    t.write(b"tail")
    t.close()
    assert rec.writes == [b"head", big, b"tail"] and rec.closed
    t2, rec2 = coalescing()
    t2.write(b"y" * (CoalescingTransport.HOLD + 1))
    assert len(rec2.writes) == 1  # not held


async def test_abort_drops_what_is_held_and_the_rest_is_the_transports() -> None:
    t, rec = coalescing()
    t.write(b"head")
    t.abort()
    await asyncio.sleep(0)
    assert rec.aborted and rec.writes == []
    assert t.get_extra_info("peername") == "extra peername"


async def test_over_a_real_socket() -> None:
    """Through asyncio's own transport: what the peer reads is every write, in order."""
    got = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.read())
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    t = CoalescingTransport(writer.transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    parts = [b"a" * 10, b"b" * 100_000, b"c", b"d" * 5000]
    for p in parts:
        t.write(p)
    t.write_eof()
    assert await asyncio.wait_for(got, 5) == b"".join(parts)
    writer.close()
    server.close()
    await server.wait_closed()
