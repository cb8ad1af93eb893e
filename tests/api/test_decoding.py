"""The mount's view cache decodes a big answer off its event loop (metafs/mount/peers.py):
5,000 peers are ~5 MB of JSON and ~0.5 s of decoding and packing, during which a loop
that did it itself answered neither the kernel nor its other requests (the 5,000-unit
fan-out of ``make bench`` timed its clients out). Against a real server and SQLite file."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
import trio

from metafs import jsonstream
from metafs.mount import peers
from metafs.protocol import PEERS_AT
from metafs.tree import Dir, Leaf
from tests.support.churn import service
from tests.support.servers import ServerProcess
from tests.support.viewcaches import running_cache

UNITS = 1000  # ~1 MB of peers: past DECODE_IN_THREAD many times over


@pytest.mark.timeout(120)
def test_peers_and_big_answers_are_decoded_off_the_loop(
    http: httpx.Client, server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    http.post("/v1/load", json=service("big", UNITS, {})).raise_for_status()
    loop_thread: list[int] = []
    decoded_in: list[tuple[int, int]] = []  # (thread, bytes) of every decode of an answer
    pieces = jsonstream.pieces

    def watched(body: bytes, levels: int = 2) -> Any:
        decoded_in.append((threading.get_ident(), len(body)))
        return pieces(body, levels)

    monkeypatch.setattr(jsonstream, "pieces", watched)
    me, peer = "big-0000", "big-0500"

    async def main() -> tuple[Any, Any]:
        loop_thread.append(threading.get_ident())
        async with running_cache(server.url, timeout=30) as cache:
            listed = await cache.node_at(me, PEERS_AT, listing=True)
            name = await cache.node_at(me, (*PEERS_AT, peer, "hostname"))
        return listed, name

    listed, name = trio.run(main)
    assert isinstance(listed, Dir) and len(listed.children) == UNITS
    expected = http.get(f"/v1/view/{peer}/self/hostname").text.strip()
    assert isinstance(name, Leaf) and str(name.value) == expected
    big = [(t, n) for t, n in decoded_in if n > peers.DECODE_IN_THREAD]
    assert big, decoded_in  # the peers answer was decoded here (not elsewhere, unseen)
    assert all(t != loop_thread[0] for t, _ in big), "a big answer was decoded on the loop"


@pytest.mark.timeout(30)
def test_a_small_answer_is_decoded_on_the_loop() -> None:
    async def main() -> tuple[Any, Any]:
        return await peers.decoded(b'{"a": 1}'), await peers.decoded(
            json.dumps({"b": "x" * 100_000}).encode()
        )

    small, big = trio.run(main)
    assert small == {"a": 1} and big == {"b": "x" * 100_000}
