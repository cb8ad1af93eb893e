"""The client's one request loop, through an injected transport (httpx.MockTransport):
failover order, 5xx skipped while another server may answer, rounds with backoff, and
the same behaviour from the sync and the async driver."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
import trio

from metafs.client import AsyncMetadataClient, ClientError, MetadataClient, key_path
from metafs.client_tls import why_failed


def transport(answers: dict[str, int | Exception], seen: list[str]) -> httpx.MockTransport:
    """Each server's host answers with a status, or fails with an exception."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}:{request.url.port}")
        answer = answers[f"{request.url.host}:{request.url.port}"]
        if isinstance(answer, Exception):
            raise answer
        headers = {"X-Metafs-Index": "7"}
        return httpx.Response(answer, text="ok\n" if answer == 200 else "broken\n", headers=headers)

    return httpx.MockTransport(handle)


def test_failover_goes_on_from_the_server_that_answered_last() -> None:
    seen: list[str] = []
    refused = httpx.ConnectError("refused")
    answers: dict[str, int | Exception] = {"a:1": refused, "b:2": 503, "c:3": 200}
    with MetadataClient("a:1,b:2,c:3", transport=transport(answers, seen)) as c:
        ans = c.request("GET", "/v1/kv/")
        assert (ans.status, ans.body, ans.index, c.current) == (200, b"ok\n", 7, "http://c:3")
        assert seen == ["a:1", "b:2", "c:3"]
        c.request("GET", "/v1/kv/")
        assert seen[3:] == ["c:3"]  # the one that answered last is asked first


def test_a_status_outside_ok_is_an_error_with_the_servers_message() -> None:
    with MetadataClient("a:1", transport=transport({"a:1": 404}, [])) as c, pytest.raises(ClientError) as err:
        c.request("GET", "/v1/kv/x")
    assert (err.value.status, str(err.value)) == (404, "broken (HTTP 404)")


def test_rounds_with_backoff_then_unreachable() -> None:
    seen: list[str] = []
    answers: dict[str, int | Exception] = {"a:1": httpx.ConnectError("refused")}
    with MetadataClient("a:1", rounds=3, transport=transport(answers, seen)) as c:
        t0 = time.monotonic()
        with pytest.raises(ClientError, match="server unreachable: http://a:1/v1/kv/: refused"):
            c.request("GET", "/v1/kv/")
        took = time.monotonic() - t0
    assert seen == ["a:1"] * 3
    assert took >= 0.2 + 0.4  # backoff between rounds: 0.2 s, then 0.4 s


def test_the_async_driver_runs_the_same_loop() -> None:
    seen: list[str] = []
    answers: dict[str, int | Exception] = {"a:1": 502, "b:2": 200}

    def handle(request: httpx.Request) -> httpx.Response:
        return transport(answers, seen).handle_request(request)

    async def main() -> None:
        c = AsyncMetadataClient("a:1,b:2", transport=httpx.MockTransport(handle))
        try:
            ans = await c.request("GET", "/v1/units/")
        finally:
            await c.aclose()
        assert (ans.status, c.current) == (200, "http://b:2")

    trio.run(main)
    assert seen == ["a:1", "b:2"]


def test_keys_become_api_paths() -> None:
    assert key_path("5/test1/s4/u/labels/io.example%2Fzone") == "/v1/kv/5/test1/s4/u/labels/io.example%2Fzone"
    assert key_path("self/hostname", "5/t/s/u1") == "/v1/view/u1/self/hostname"
    assert key_path("accounts/5/") == "/v1/accounts/5/"
    with pytest.raises(ClientError, match="give --unit"):
        key_path("self/hostname")


def test_a_get_on_a_connection_the_server_closed_is_sent_again_once() -> None:
    """A kept-alive connection closed by the server while idle shows only when reused:
    a GET is sent once more at once (a busy client was served stale for seconds)."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) in (1, 3, 4) or request.method == "PUT":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, text="ok\n")

    with MetadataClient("a:1", rounds=1, transport=httpx.MockTransport(handle)) as c:
        assert c.request("GET", "/v1/kv/").body == b"ok\n"
        assert calls == ["GET", "GET"]
        with pytest.raises(ClientError, match="the server closed the connection"):
            c.request("GET", "/v1/kv/")  # twice in a row: unreachable, as before
        with pytest.raises(ClientError):
            c.request("PUT", "/v1/kv/x")  # a write is never sent twice
    assert calls == ["GET", "GET", "GET", "GET", "PUT"]


def test_plain_http_servers_load_no_ca_certificates_and_https_ones_do() -> None:
    """Loading the system's CA certificates took ~90 ms of every client's start (a
    restarted mount daemon's, each CLI command's); a plain http client needs none."""
    plain = MetadataClient(["http://127.0.0.1:1", "http://127.0.0.2:1"])
    assert isinstance(plain._verify, ssl.SSLContext)
    assert plain._verify.cert_store_stats()["x509_ca"] == 0
    assert plain._verify.verify_mode == ssl.CERT_REQUIRED  # a TLS peer would be refused
    https = MetadataClient(["http://127.0.0.1:1", "https://metafs.example:8500"])._verify
    assert https.verify_mode == ssl.CERT_REQUIRED and https.check_hostname  # the system's CAs
    plain.close()


def test_a_failure_with_no_message_is_named_by_its_kind() -> None:
    url = "http://127.0.0.1:1/v1/view/u/"
    assert why_failed(url, httpx.ConnectTimeout("")) == f"{url}: ConnectTimeout"
    assert why_failed(url, httpx.ConnectError("refused")) == f"{url}: refused"
