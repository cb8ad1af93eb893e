"""Answers reused until the next commit (metafs/answers.py): never stale, never crossing
tokens or formats, never for a long poll. Real server on loopback, real SQLite file."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from metafs.server.answers import AnswerCache, answer_key
from metafs.server.http import READ_AT
from tests.support.servers import EXAMPLE, HEADERS, ZK1, ZK1_PATH, ServerProcess


def reused(http: httpx.Client) -> int:
    m = re.search(r"^metafs_http_answers_reused_total (\S+)$", http.get("/metrics").text, re.M)
    assert m, "metric metafs_http_answers_reused_total is missing"
    return int(float(m.group(1)))


def scope(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, object]:
    return {"path": "/v1/kv/a", "query_string": query, "headers": headers or []}


def test_answer_key_leaves_out_long_polls_and_proxied_requests() -> None:
    assert answer_key(scope(b"format=json")) is not None
    for query in (b"index=3", b"wait=1s", b"format=json&index=3", b"ind%65x=3", b"wa%69t=1", b"index"):
        assert answer_key(scope(query)) is None, query
    assert answer_key(scope(headers=[(b"x-forwarded-for", b"10.0.0.1")])) is None


def test_answer_key_holds_what_the_answer_depends_on() -> None:
    base = [(b"metadata-flavor", b"metafs"), (b"authorization", b"Bearer a"), (b"user-agent", b"x")]
    key = answer_key(scope(b"format=text", base))
    assert key == answer_key(scope(b"format=text", [*base[:2], (b"user-agent", b"y")]))  # not keyed
    others = [
        scope(b"format=json", base),
        scope(b"format=text", [base[0], (b"authorization", b"Bearer b")]),
        scope(b"format=text", [*base, (b"accept", b"application/json")]),
        scope(b"format=text", [*base, (b"if-none-match", b'"3.text"')]),
        scope(b"format=text", base[1:]),  # no Metadata-Flavor: the server refuses it
    ]
    assert all(answer_key(s) != key for s in others)


def test_kept_answers_are_bounded_in_number_and_bytes() -> None:
    """An ASGI app answering 3 KB per path, behind a cache of at most 5 answers and 10 KB:
    the least recently used go first, a commit drops them all."""
    made: list[str] = []
    head = [7]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        made.append(scope["path"])
        scope[READ_AT] = head[0]  # what a read does (see metafs.server.render)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 3000})

    async def get(cache: AnswerCache, path: str) -> None:
        async def receive() -> Message:
            return {"type": "http.request"}

        async def send(message: Message) -> None:
            pass

        await cache({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)

    async def run() -> None:
        cache = AnswerCache(app, lambda: head[0], entries=5, max_bytes=10_000)
        for i in range(8):
            await get(cache, f"/v1/kv/{i}")
        assert (len(cache), cache.size) == (3, 9000)  # 10 KB hold three
        await get(cache, "/v1/kv/7")  # kept: not made again
        await get(cache, "/v1/kv/0")  # dropped long ago: made again
        assert made.count("/v1/kv/7") == 1 and made.count("/v1/kv/0") == 2
        head[0] = 8  # a commit
        await get(cache, "/v1/kv/7")
        assert made.count("/v1/kv/7") == 2 and (len(cache), cache.size) == (1, 3000)
        few = AnswerCache(app, lambda: head[0], entries=2, max_bytes=1 << 20)
        for i in range(4):
            await get(few, f"/v1/view/{i}")
        assert len(few) == 2

    asyncio.run(run())


@pytest.mark.timeout(60)
def test_reused_until_the_next_commit(loaded: httpx.Client) -> None:
    url = f"/v1/kv/{ZK1_PATH}/hostname"
    first = loaded.get(url)
    before = reused(loaded)
    again = loaded.get(url)
    assert reused(loaded) == before + 1
    assert (again.status_code, again.text) == (200, "s4-1\n")
    for h in ("etag", "x-metafs-revision", "x-metafs-index", "last-modified", "content-type"):
        assert again.headers[h] == first.headers[h], h
    assert loaded.get(url, headers={"Accept": "application/json"}).json() == "s4-1"  # its own answer
    not_modified = loaded.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert (not_modified.status_code, not_modified.content) == (304, b"")

    # a write, then at once a read: the new value, at the write's revision
    for i in range(5):
        w = loaded.put(url, content=f"zk-{i}", headers={"Content-Type": "text/plain"})
        assert w.status_code == 200
        r = loaded.get(url)
        assert (r.text, r.headers["x-metafs-revision"]) == (f"zk-{i}\n", w.headers["x-metafs-revision"])
        assert loaded.get(url).text == f"zk-{i}\n"
    # the view and the listings change with it
    assert loaded.get(f"/v1/view/{ZK1}/self/hostname").text == "zk-4\n"
    label = f"/v1/kv/{ZK1_PATH}/labels/tier"
    assert loaded.put(label, content="gold").status_code == 200
    assert [loaded.get(label).text for _ in range(2)] == ["gold\n"] * 2
    assert loaded.delete(label).status_code == 200
    assert loaded.get(label).status_code == 404


@pytest.mark.timeout(60)
def test_a_revoked_token_is_refused_at_once(loaded: httpx.Client) -> None:
    made = loaded.post("/v1/tokens/", json={"kind": "unit", "subject": ZK1})
    assert made.status_code == 201, made.text
    unit = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {made.json()['token']}"}
    url = f"{loaded.base_url}/v1/view/{ZK1}/self/hostname"
    assert httpx.get(url, headers=unit).text == "s4-1\n"
    before = reused(loaded)
    assert httpx.get(url, headers=unit).text == "s4-1\n"
    assert reused(loaded) == before + 1
    assert loaded.delete(f"/v1/tokens/{made.json()['id']}").status_code == 200
    assert httpx.get(url, headers=unit).status_code == 401
    # and a kept answer is not given to a request the server refuses
    assert httpx.get(url, headers={**unit, "X-Forwarded-For": "10.0.0.9"}).status_code == 403
    op_url = f"/v1/view/{ZK1}/self/hostname"
    assert loaded.get(op_url).status_code == 200
    assert loaded.get(op_url, headers={"X-Forwarded-For": "10.0.0.9"}).status_code == 403
    assert (
        httpx.get(
            f"{loaded.base_url}{op_url}", headers={"Authorization": HEADERS["Authorization"]}
        ).status_code
        == 403
    )


@pytest.mark.timeout(60)
def test_long_polls_wait_even_when_an_answer_is_kept(loaded: httpx.Client) -> None:
    url = f"/v1/kv/{ZK1_PATH}/hostname"
    index = loaded.get(url).headers["x-metafs-index"]
    for query in (f"index={index}&wait=1s", f"ind%65x={index}&wait=1s"):
        for _ in range(2):
            t0 = time.monotonic()
            r = loaded.get(f"{url}?{query}")
            took = time.monotonic() - t0
            assert r.text == "s4-1\n"
            assert took >= 0.9, f"{query}: answered after {took:.3f}s, not after the 1 s wait"


@pytest.mark.timeout(60)
def test_a_commit_through_another_server_on_the_file_is_seen(loaded: httpx.Client, tmp_path: Path) -> None:
    url = f"/v1/kv/{ZK1_PATH}/hostname"
    assert loaded.get(url).text == "s4-1\n"
    assert loaded.get(url).text == "s4-1\n"  # kept now
    db = next(tmp_path.glob("*.db"))
    other = ServerProcess(db).start()
    try:
        w = httpx.put(other.url + url, content="elsewhere", headers={**HEADERS, "Content-Type": "text/plain"})
        assert w.status_code == 200
    finally:
        other.stop()
    r = loaded.get(url)
    assert (r.text, r.headers["x-metafs-revision"]) == ("elsewhere\n", w.headers["x-metafs-revision"])


@pytest.mark.timeout(60)
def test_answer_cache_0_turns_it_off(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "off.db").start("--answer-cache", "0")
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=10) as c:
            assert c.post("/v1/load", content=EXAMPLE.read_bytes()).status_code == 200
            for _ in range(3):
                assert c.get(f"/v1/kv/{ZK1_PATH}/hostname").text == "s4-1\n"
            assert reused(c) == 0
    finally:
        srv.stop()
