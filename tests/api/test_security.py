"""Scoping: every route x every token kind x own / other unit / other account; the SSRF
guard; hostile input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import EXAMPLE, HEADERS, ZK1, ServerProcess

ZK2 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117"  # same service as ZK1, on node-b
WEB1 = "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"  # account 7, on node-a
WEB2 = "3b1f2c9e-0002-4a6e-9d2b-5c1e8f000002"  # account 7, on node-b
ZK1_SEED = f"5/test1/s4/{ZK1}"
WEB1_SEED = f"7/shop/web/{WEB1}"
FLAVOR = {"Metadata-Flavor": "metafs"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    srv = ServerProcess(tmp_path_factory.mktemp("sec") / "metafs.db").start()
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=10) as op:
            assert op.post("/v1/load", content=EXAMPLE.read_bytes()).status_code == 200
            assert op.put("/v1/hosts/node-d", json={"hostname": "node-d"}).status_code == 200
            tokens = {"operator": HEADERS["Authorization"].split()[1]}
            for name, kind, subject in [
                ("unit", "unit", ZK1),
                ("unit-web", "unit", WEB1),
                ("host", "host", "node-a"),
                ("host-empty", "host", "node-d"),
            ]:
                r = op.post("/v1/tokens/", json={"kind": kind, "subject": subject})
                assert r.status_code == 201, r.text
                assert r.json()["token"].startswith(f"mfs_{kind}_")
                tokens[name] = r.json()["token"]
        yield srv, tokens
    finally:
        srv.stop()


def get(env: tuple[ServerProcess, dict[str, str]], who: str, path: str, **kw: object) -> httpx.Response:
    srv, tokens = env
    headers = {**FLAVOR, "Authorization": f"Bearer {tokens[who]}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(str(kw.pop("method", "GET")), srv.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


# who, path, status, what the body must be (or contain) when 200
MATRIX = [
    # a unit's own view; a peer's; another account's
    ("unit", f"/v1/view/{ZK1}/self/hostname", 200, "s4-1\n"),
    ("unit", f"/v1/view/{ZK2}/self/hostname", 403, None),
    ("unit", f"/v1/view/{WEB1}/self/hostname", 403, None),
    ("unit", "/v1/view/no-such-unit/self/hostname", 403, None),  # existence is not revealed
    ("unit-web", f"/v1/view/{WEB1}/self/hostname", 200, "web-1\n"),
    ("unit-web", f"/v1/view/{ZK1}/", 403, None),
    ("host", f"/v1/view/{ZK1}/self/hostname", 200, "s4-1\n"),
    ("host", f"/v1/view/{WEB1}/self/hostname", 200, "web-1\n"),
    ("host", f"/v1/view/{ZK2}/self/hostname", 403, None),
    ("host", f"/v1/view/{WEB2}/", 403, None),
    ("host-empty", f"/v1/view/{ZK1}/", 403, None),
    ("operator", f"/v1/view/{WEB2}/self/hostname", 200, "web-2\n"),
    # the seed's layout
    ("unit", f"/v1/kv/{ZK1_SEED}/hostname", 200, "s4-1\n"),
    ("unit", f"/v1/kv/5/test1/s4/{ZK2}/hostname", 200, "s4-2\n"),  # its own service's peers
    ("unit", f"/v1/kv/{WEB1_SEED}/hostname", 403, None),
    ("unit", "/v1/kv/", 200, "5/\n"),
    ("unit", "/v1/kv/5/", 200, "test1/\n"),
    ("unit", "/v1/kv/7/", 403, None),
    ("unit", "/v1/kv/8/", 403, None),
    ("unit-web", "/v1/kv/", 200, "7/\n"),
    ("unit-web", "/v1/kv/7/shop/", 200, "web/\n"),  # not the api service
    ("unit-web", "/v1/kv/7/shop/api/", 403, None),
    ("host", "/v1/kv/", 200, "5/\n7/\n"),
    ("host", "/v1/kv/7/shop/", 200, "web/\n"),
    ("host", "/v1/kv/7/shop/api/", 403, None),
    ("host-empty", "/v1/kv/", 200, ""),
    ("host-empty", "/v1/kv/5/", 403, None),
    ("operator", "/v1/kv/7/shop/", 200, "api/\nweb/\n"),
    # unit listings
    ("unit", "/v1/units/", 200, f"{ZK1}\n"),
    (
        "host",
        "/v1/units/",
        200,
        "".join(f"{u}\n" for u in sorted([ZK1, WEB1, "3b1f2c9e-0004-4a6e-9d2b-5c1e8f000004"])),
    ),
    ("host-empty", "/v1/units/", 200, ""),
    # watches
    ("unit", f"/v1/watch?units={ZK1}&format=text", 200, "units/\n"),
    ("unit", f"/v1/watch?units={ZK2},{WEB1}&format=text", 200, "units/\n"),  # left out
    ("host", f"/v1/watch?units={WEB1}&list=1&format=text", 200, "list\nunits/\n"),
    ("host", f"/v1/watch?units={WEB2}&format=text", 200, "units/\n"),
    # the document API, tokens: the operator's
    ("unit", "/v1/accounts/", 403, None),
    ("unit", "/v1/accounts/5", 403, None),
    ("host", "/v1/hosts/node-a", 403, None),
    ("unit", "/v1/tokens/", 403, None),
    ("host", "/v1/tokens/", 403, None),
    ("operator", "/v1/accounts/", 200, "5/\n7/\n"),
]


@pytest.mark.parametrize(("who", "path", "status", "body"), MATRIX)
def test_read_scope(
    env: tuple[ServerProcess, dict[str, str]], who: str, path: str, status: int, body: str | None
) -> None:
    r = get(env, who, path)
    assert r.status_code == status, r.text
    if body is not None:
        assert r.text == body
    if who != "operator" and status == 200:
        text = r.text + get(env, who, path, headers={"Accept": "application/json"}).text
        foreign = {
            "unit": ["3b1f2c9e", "web-", "shop", "api-1"],
            "unit-web": ["f58ce48e", "s4-", "test1", "api-1"],
        }
        for word in foreign.get(who, []):
            assert word not in text, f"{who} saw {word!r} at {path}"
    if status == 403:
        assert "may not" in r.text


WRITES = [
    ("PUT", f"/v1/kv/{ZK1_SEED}/hostname", b"x"),
    ("DELETE", f"/v1/kv/{ZK1_SEED}/labels/io.example%2Fzone", None),
    ("PUT", "/v1/accounts/5/stacks/test1", b"{}"),
    ("DELETE", "/v1/hosts/node-c", None),
    ("POST", "/v1/load", b"accounts: {}"),
    ("POST", "/v1/tokens/", b'{"kind": "operator"}'),
]


@pytest.mark.parametrize("who", ["unit", "unit-web", "host", "host-empty"])
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_only_the_operator_writes(
    env: tuple[ServerProcess, dict[str, str]], who: str, method: str, path: str, body: bytes | None
) -> None:
    before = httpx.get(env[0].url + "/healthz", headers=HEADERS).headers["x-metafs-revision"]
    r = get(env, who, path, method=method, content=body)
    assert r.status_code == 403 and "operator token" in r.text, r.text
    assert httpx.get(env[0].url + "/healthz", headers=HEADERS).headers["x-metafs-revision"] == before


@pytest.mark.timeout(60)
def test_a_scoped_token_sees_revisions_of_its_own_scope(tmp_path: Path) -> None:
    """Commits elsewhere move the store's revision, not what a unit or host token is
    shown: neither in X-Metafs-Revision nor on /healthz. Answers are still reused."""
    srv = ServerProcess(tmp_path / "metafs.db").start()
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=10) as op:
            assert op.post("/v1/load", content=EXAMPLE.read_bytes()).status_code == 200
            unit = op.post("/v1/tokens/", json={"kind": "unit", "subject": ZK1}).json()["token"]
            host = op.post("/v1/tokens/", json={"kind": "host", "subject": "node-a"}).json()["token"]
            scoped = {
                name: httpx.Client(
                    base_url=srv.url, headers={**FLAVOR, "Authorization": f"Bearer {tok}"}, timeout=10
                )
                for name, tok in (("unit", unit), ("host", host))
            }
            paths = {"unit": [f"/v1/view/{ZK1}/", f"/v1/kv/{ZK1_SEED}/hostname"], "host": ["/v1/units/"]}

            def seen() -> dict[str, list[str]]:
                out = {}
                for name, c in scoped.items():
                    for p in paths[name]:
                        r = c.get(p)
                        assert r.status_code == 200, r.text
                        assert r.headers["x-metafs-revision"] == r.headers["x-metafs-index"]
                        out[p] = r.headers["x-metafs-revision"]
                return out

            before = seen()
            store = int(op.get("/v1/kv/").headers["x-metafs-revision"])
            for i in range(5):  # another account's writes
                op.put(f"/v1/kv/{WEB1_SEED}/labels/tick", content=str(i)).raise_for_status()
            assert int(op.get("/v1/kv/").headers["x-metafs-revision"]) == store + 5
            assert seen() == before
            reused = op.get("/metrics").text
            assert seen() == before  # and the second time from the kept answers
            count = "metafs_http_answers_reused_total"
            assert _metric(op.get("/metrics").text, count) > _metric(reused, count)
            for c in scoped.values():
                assert c.get("/healthz").text == "ok\n"
            assert httpx.get(srv.url + "/healthz").text == "ok\n"
            assert op.get("/healthz").text == f"ok revision {store + 5}\n"
            op.put(f"/v1/kv/{ZK1_SEED}/labels/tick", content="1").raise_for_status()
            after = seen()  # its own scope's change shows
            assert [int(after[p]) for p in paths["unit"]] == [store + 6] * 2, after
            assert after["/v1/units/"] == before["/v1/units/"]  # the list did not change
    finally:
        srv.stop()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_watch_leaves_out_what_is_out_of_scope(env: tuple[ServerProcess, dict[str, str]]) -> None:
    r = get(env, "unit", f"/v1/watch?units={ZK1},{ZK2},{WEB1}&list=1&format=json")
    assert sorted(r.json()["units"]) == [ZK1]
    r = get(env, "host", f"/v1/watch?units={ZK1},{ZK2},{WEB1}&format=json")
    assert sorted(r.json()["units"]) == sorted([ZK1, WEB1])


def test_tokens_401_revocation_and_listing(env: tuple[ServerProcess, dict[str, str]]) -> None:
    srv, _ = env
    url = f"{srv.url}/v1/view/{ZK1}/self/hostname"
    r = httpx.get(url, headers=FLAVOR)
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="metafs"'
    assert httpx.get(url, headers={**FLAVOR, "Authorization": "Bearer mfs_unit_forged"}).status_code == 401
    assert httpx.get(url, headers={**FLAVOR, "Authorization": "Basic abc"}).status_code == 401
    with httpx.Client(base_url=srv.url, headers=HEADERS) as op:
        r = op.post("/v1/tokens/", json={"kind": "unit", "subject": ZK1})
        token, tid = r.json()["token"], r.json()["id"]
        listed = op.get("/v1/tokens/?format=json").json()
        assert listed[tid] == {"kind": "unit", "subject": ZK1, "created": r.json()["created"]}
        assert token not in op.get("/v1/tokens/?format=json").text
        assert httpx.get(url, headers={**FLAVOR, "Authorization": f"Bearer {token}"}).status_code == 200
        assert op.delete(f"/v1/tokens/{tid}").status_code == 200
        assert httpx.get(url, headers={**FLAVOR, "Authorization": f"Bearer {token}"}).status_code == 401
        assert op.delete(f"/v1/tokens/{tid}").status_code == 404
        assert op.post("/v1/tokens/", json={"kind": "root"}).status_code == 400
        assert op.post("/v1/tokens/", json={"kind": "unit", "subject": "../x"}).status_code == 400


def test_ssrf_guard_and_no_cors(env: tuple[ServerProcess, dict[str, str]]) -> None:
    srv, tokens = env
    auth = {"Authorization": f"Bearer {tokens['unit']}"}
    url = f"{srv.url}/v1/view/{ZK1}/self/hostname"
    r = httpx.get(url, headers=auth)
    assert r.status_code == 403 and "Metadata-Flavor" in r.text
    assert httpx.get(url, headers={**auth, "Metadata-Flavor": "Google"}).status_code == 403
    r = httpx.get(url, headers={**auth, **FLAVOR, "X-Forwarded-For": "10.0.0.9"})
    assert r.status_code == 403 and "X-Forwarded-For" in r.text
    ok = httpx.get(url, headers={**auth, **FLAVOR, "Origin": "http://evil.example"})
    assert ok.status_code == 200
    assert not any(h.startswith("access-control-") for h in ok.headers)
    pre = httpx.options(
        url, headers={**FLAVOR, "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert pre.status_code in (401, 403, 405) and not any(
        h.startswith("access-control-") for h in pre.headers
    )
    assert httpx.get(f"{srv.url}/healthz").status_code == 200  # health needs neither


# -- hostile input: each a clear 4xx, nothing changed ------------------------------------

HOSTILE = [
    ("GET", "/v1/kv/5%2Ftest1/", None, "application/json", 400, "not a valid account id"),
    ("GET", f"/v1/view/{ZK1}%2F..%2F{WEB1}/", None, "application/json", 400, "not a valid unit id"),
    ("PUT", "/v1/accounts/a%2Fb", b"{}", "application/json", 400, "not a valid account id"),
    ("PUT", "/v1/hosts/%2E%2E", b"{}", "application/json", 400, "relative segments"),
    ("PUT", f"/v1/kv/{ZK1_SEED}/hostname", b"x" * 70_000, "text/plain", 400, "value longer than"),
    ("PUT", f"/v1/kv/{ZK1_SEED}/hostname", b"a\x00b", "text/plain", 400, "NUL"),
    (
        "PUT",
        f"/v1/kv/{ZK1_SEED}/labels",
        b"[" * 5000 + b"]" * 5000,
        "application/json",
        400,
        "nested too deeply",
    ),
    ("POST", "/v1/load", b"a: " + b"[" * 5000, "application/yaml", 400, ""),
    (
        "POST",
        "/v1/load",
        b"!!python/object/apply:os.system ['touch /tmp/pwned']",
        "application/yaml",
        400,
        "cannot parse",
    ),
    ("POST", "/v1/load", b"a: &a [1,2]\nb: *a\n", "application/yaml", 400, "aliases"),
    (
        "POST",
        "/v1/load",
        b'{"accounts": {"5": {"stackz": {}}}}',
        "application/json",
        400,
        "accounts.5.stackz: unknown field",
    ),
    (
        "POST",
        "/v1/load",
        b'{"hosts": {"h": {"agent_ip": 1}}}',
        "application/json",
        400,
        "hosts.h.agent_ip: expected a string",
    ),
    ("POST", "/v1/load", b"\xff\xfe", "application/yaml", 400, "not UTF-8"),
    ("POST", "/v1/load", b"[1, 2]", "application/json", 400, "expected a mapping"),
]


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status", "message"), HOSTILE)
def test_hostile_input(
    env: tuple[ServerProcess, dict[str, str]],
    method: str,
    path: str,
    body: bytes | None,
    ctype: str,
    status: int,
    message: str,
) -> None:
    srv, _ = env
    before = httpx.get(srv.url + "/healthz", headers=HEADERS).headers["x-metafs-revision"]
    r = httpx.request(
        method, srv.url + path, content=body, headers={**HEADERS, "Content-Type": ctype}, timeout=20
    )
    assert r.status_code == status, r.text
    assert message in r.text
    assert httpx.get(srv.url + "/healthz", headers=HEADERS).headers["x-metafs-revision"] == before
    assert not Path("/tmp/pwned").exists()


def test_oversized_and_slow_bodies(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "m.db").start("--max-body", "1000", "--body-timeout", "1")
    try:
        r = httpx.post(srv.url + "/v1/load", content=b"#" * 2000, headers=HEADERS)
        assert r.status_code == 413 and "over the limit" in r.text

        def slow() -> Iterator[bytes]:
            yield b"accounts:"
            time.sleep(3)
            yield b" {}"

        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/load", content=slow(), headers=HEADERS, timeout=10)
        assert r.status_code == 408 and time.monotonic() - t0 < 3.5
        assert httpx.get(srv.url + "/healthz", headers=HEADERS).text == "ok revision 0\n"
    finally:
        srv.stop()


def test_a_slow_client_does_not_stall_others(env: tuple[ServerProcess, dict[str, str]]) -> None:
    srv, _ = env
    done = threading.Event()

    def trickle() -> Iterator[bytes]:
        yield b"accounts:"
        done.wait(5)
        yield b" {}"

    t = threading.Thread(
        target=lambda: httpx.post(srv.url + "/v1/load", content=trickle(), headers=HEADERS, timeout=20)
    )
    t.start()
    try:
        t0 = time.monotonic()
        assert get(env, "operator", f"/v1/view/{ZK1}/self/cardinal_value").text == "1\n"
        assert time.monotonic() - t0 < 1
    finally:
        done.set()
        t.join(10)
