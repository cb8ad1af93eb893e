"""Reader tokens (read what an operator reads, write nothing, mint nothing), `/metrics`
behind a token on request, and gzip for the clients that ask: never for one that did not,
even right after another got a gzip answer to the same request."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import pytest

from metafs.client import MetadataClient
from tests.bench.workloads import big_service
from tests.support.servers import HEADERS, ZK1, ZK1_PATH, ServerProcess, cli

pytestmark = pytest.mark.timeout(60)


def test_a_reader_reads_everything_and_writes_nothing(loaded: httpx.Client, server: ServerProcess) -> None:
    r = cli("token", "create", "--kind", "reader", "--server", server.url)
    assert r.returncode == 0, r.stderr
    reader = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {r.stdout.strip()}"}
    with httpx.Client(base_url=server.url, headers=reader) as c:
        assert c.get(f"/v1/kv/{ZK1_PATH}/hostname").text == "s4-1\n"
        assert (
            c.get("/v1/view/3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001/self/hostname").text == "web-1\n"
        )  # another account
        assert c.get("/v1/accounts/").status_code == 200
        assert len(c.get("/v1/units/").text.splitlines()) == len(loaded.get("/v1/units/").text.splitlines())
        refused = [
            c.put(f"/v1/kv/{ZK1_PATH}/hostname", content="x"),
            c.delete(f"/v1/kv/{ZK1_PATH}"),
            c.post("/v1/load", json=big_service(1)),
            c.post("/v1/tokens/", json={"kind": "reader"}),
            c.get("/v1/tokens/"),
            c.get("/v1/backup"),
        ]
        assert [x.status_code for x in refused] == [403] * 6, [x.text for x in refused]
        assert "a reader token may not write" in refused[0].text
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/hostname").text == "s4-1\n"  # nothing changed


WEB1 = "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"  # account 7's


def test_one_accounts_reader_reads_that_account_and_nothing_else(
    loaded: httpx.Client, server: ServerProcess
) -> None:
    r = cli("token", "create", "--kind", "reader", "--subject", "5", "--server", server.url)
    assert r.returncode == 0, r.stderr
    reader = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {r.stdout.strip()}"}
    with httpx.Client(base_url=server.url, headers=reader) as c:
        assert c.get(f"/v1/kv/{ZK1_PATH}/hostname").text == "s4-1\n"
        assert c.get(f"/v1/view/{ZK1}/self/hostname").text == "s4-1\n"
        assert c.get("/v1/units/").text.split() == sorted(
            u for u in loaded.get("/v1/units/").text.split() if u.startswith("f58ce48e")
        )
        assert c.get("/v1/accounts/?format=json").json().keys() == {"5"}
        assert c.get("/v1/accounts/5/stacks/test1/services/s4/units/").status_code == 200
        assert c.get("/v1/kv/?keys").json() == loaded.get("/v1/kv/5/?keys").json()
        watched = c.get("/v1/watch", params={"units": f"{ZK1},{WEB1}", "format": "json"}).json()
        assert list(watched["units"]) == [ZK1]  # the other account's unit is left out
        refused = [
            c.get(f"/v1/view/{WEB1}/self/hostname"),
            c.get("/v1/kv/7/shop/web/"),
            c.get("/v1/accounts/7/"),
            c.get("/v1/hosts/"),
            c.get("/v1/hosts/node-a/"),
            c.put(f"/v1/kv/{ZK1_PATH}/hostname", content="x"),
            c.post("/v1/tokens/", json={"kind": "reader", "subject": "7"}),
            c.get("/metrics", headers={}),  # open by default: the next test closes it
        ]
        assert [x.status_code for x in refused] == [403] * 7 + [200], [x.text for x in refused]
        assert "reads account '5' only" in refused[2].text
        # the account gains a unit: the reader sees it at its next read
        added = loaded.put(
            "/v1/accounts/5/stacks/test1/services/s4/units/new-1",
            json={"hostname": "s4-9", "cardinal_value": 9},
        )
        assert added.status_code in (200, 201), added.text
        assert "new-1" in c.get("/v1/units/").text.split()
    r = cli("token", "create", "--kind", "reader", "--subject", "no/such", "--server", server.url)
    assert r.returncode == 1 and "subject" in r.stderr


def test_metrics_behind_a_token(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "m.db").start("--metrics-auth", "token")
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS) as op:
            reader = op.post("/v1/tokens/", json={"kind": "reader"}).json()["token"]
            account = op.post("/v1/tokens/", json={"kind": "reader", "subject": "5"}).json()["token"]
            unit = op.post("/v1/tokens/", json={"kind": "unit", "subject": ZK1}).json()["token"]

        def get(token: str | None) -> httpx.Response:
            return httpx.get(
                srv.url + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}
            )

        assert get(None).status_code == 401 and get("mfs_reader_nope").status_code == 401
        assert get(unit).status_code == 403
        assert get(account).status_code == 403 and "one account's reader" in get(account).text
        for ok in (reader, HEADERS["Authorization"].split()[1]):
            r = get(ok)
            assert r.status_code == 200 and "metafs_http_requests_total" in r.text
    finally:
        srv.stop()


def test_gzip_for_those_who_ask_and_never_for_those_who_do_not(
    loaded: httpx.Client, server: ServerProcess
) -> None:
    assert loaded.post("/v1/load", json=big_service(1000, "web")).status_code == 200
    listing = "/v1/view/web-00000/service/all_hosts/?format=json"  # what a host's ls of all_hosts/ costs
    plain_headers = {**HEADERS, "Accept-Encoding": "identity"}
    for _ in range(2):  # the second round: answers kept since the last commit
        raw = httpx.get(server.url + listing, headers={**HEADERS, "Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip" and "accept-encoding" in raw.headers["vary"].lower()
        packed = int(raw.headers["content-length"])
        text = raw.text  # httpx decodes it
        plain = httpx.get(server.url + listing, headers=plain_headers)  # right after: not gzip
        assert "content-encoding" not in plain.headers and plain.content == text.encode()
        assert len(plain.content) > 4 * packed, (len(plain.content), packed)
        assert len(plain.json()) == 1000
    # a small answer goes as it is
    small = httpx.get(
        server.url + f"/v1/kv/{ZK1_PATH}/hostname", headers={**HEADERS, "Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in small.headers
    # a view over gzip is the same view
    view = f"/v1/view/{ZK1}/?format=json"
    z = httpx.get(server.url + view, headers={**HEADERS, "Accept-Encoding": "gzip"})
    assert z.json() == httpx.get(server.url + view, headers=plain_headers).json()
    with httpx.stream("GET", server.url + view, headers={**HEADERS, "Accept-Encoding": "gzip"}) as s:
        body = b"".join(s.iter_raw())  # the bytes as sent
    assert gzip.decompress(body) == httpx.get(server.url + view, headers=plain_headers).content
    # the CLI and the mount daemon ask for it (httpx's default)
    with MetadataClient(server.url) as c:
        assert "gzip" in c._http.headers["accept-encoding"]
