"""A real etcd with TLS, client certificates and users (auth enabled), as production runs
it: metafs serves over it with `etcd+https://`, its CA, a client certificate (no CN: the
gateway refuses one with users on) and a user; a wrong password stops `serve` at start;
an auth token that expires while idle is renewed."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from metafs.store.base import prefix_end
from metafs.store.etcd_gateway import b64
from tests.support.certs import CA, LOCAL
from tests.support.servers import EXAMPLE, HEADERS, ZK1_PATH, ServerProcess, cli, free_port

pytestmark = pytest.mark.timeout(120)
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PASSWORD = "metafs-etcd-password"
TTL = 3  # --auth-token-ttl: simple tokens expire after this many idle seconds


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[dict[str, object]]:
    ca = CA.make(tmp_path, "etcd")
    # etcd's gateway dials etcd's own gRPC with this certificate: it is a client's too
    server, server_key = ca.issue("etcd-server", LOCAL, usage="serverAuth,clientAuth")
    client, client_key = ca.issue("etcd-client")  # subject /O=metafs: no CN
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    log = open(tmp_path / "etcd.log", "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [
            ETCD, "--name=s", f"--data-dir={tmp_path / 'etcd-data'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=s=http://127.0.0.1:{peer}",
            f"--cert-file={server}", f"--key-file={server_key}",
            "--client-cert-auth", f"--trusted-ca-file={ca.cert}",
            f"--auth-token-ttl={TTL}", "--log-level=error", "--logger=zap",
        ],
        stdout=log,
        stderr=log,
    )  # fmt: skip
    log.close()
    tls = httpx.Client(verify=_context(ca.cert, client, client_key), timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if tls.post(url + "/v3/maintenance/status", json={}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "etcd.log").read_text()[-2000:]
            time.sleep(0.1)
        # users: root (etcd wants it before auth is on) and metafs, whose role holds the namespace
        ns = "secure/"
        for path, body in [
            ("/v3/auth/user/add", {"name": "root", "password": "root-pw"}),
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/user/add", {"name": "metafs", "password": PASSWORD}),
            ("/v3/auth/role/add", {"name": "metafs"}),
            (
                "/v3/auth/role/grant",
                {
                    "name": "metafs",
                    "perm": {"permType": "READWRITE", "key": b64(ns), "range_end": b64(prefix_end(ns))},
                },
            ),
            ("/v3/auth/user/grant", {"user": "metafs", "role": "metafs"}),
            ("/v3/auth/enable", {}),
        ]:
            r = tls.post(url + path, json=body)
            assert r.status_code == 200, (path, r.text)
        yield {
            "store": f"etcd+https://127.0.0.1:{port}/secure",
            "url": url,
            "flags": [
                "--etcd-ca-file",
                str(ca.cert),
                "--etcd-cert-file",
                str(client),
                "--etcd-key-file",
                str(client_key),
            ],
            "tls": tls,
        }
    finally:
        tls.close()
        proc.kill()
        proc.wait(10)


def _context(ca: Path, cert: Path, key: Path):  # type: ignore[no-untyped-def]
    import ssl

    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_metafs_over_a_secured_etcd(secured: dict[str, object], tmp_path: Path) -> None:
    store, flags = str(secured["store"]), list(secured["flags"])  # type: ignore[call-overload]
    # without the user, etcd refuses: serve says so and stops (no silent start)
    r = cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--store", store, *flags, timeout=40)
    assert r.returncode == 1 and "user name is empty" in r.stderr, r.stderr[-500:]
    # a wrong password: a message about etcd authentication, exit 1
    bad = cli(
        "serve", "--listen", f"127.0.0.1:{free_port()}", "--store", store, *flags, "--etcd-user", "metafs",
        env={"METAFS_ETCD_PASSWORD": "wrong"}, timeout=40,
    )  # fmt: skip
    assert bad.returncode == 1 and "etcd authentication failed for user 'metafs'" in bad.stderr, bad.stderr[
        -500:
    ]
    # the right one: it serves, reads and writes, and long polls wake
    password = tmp_path / "etcd.password"
    password.write_text(PASSWORD + "\n")
    srv = ServerProcess(tmp_path / "unused.db", store=store)
    srv.start(*flags, "--etcd-user", "metafs", "--etcd-password-file", str(password))
    try:
        r = httpx.post(
            srv.url + "/v1/load",
            content=EXAMPLE.read_bytes(),
            headers={**HEADERS, "Content-Type": "application/yaml"},
        )
        assert r.status_code == 200, r.text
        assert httpx.get(f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", headers=HEADERS).text == "s4-1\n"
        # idle past the auth token's TTL: the next call renews it and goes through
        time.sleep(TTL + 2)
        r = httpx.put(
            f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", content="after-idle", headers=HEADERS, timeout=20
        )
        assert r.status_code == 200, r.text
        seen = httpx.get(f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", headers=HEADERS)
        index = seen.headers["x-metafs-index"]
        assert seen.text == "after-idle\n"
        # the watch stream, idle past the TTL too, still wakes a long poll
        time.sleep(TTL + 2)
        t0 = time.monotonic()
        import threading

        woken: list[httpx.Response] = []
        poll = threading.Thread(
            target=lambda: woken.append(
                httpx.get(
                    f"{srv.url}/v1/kv/{ZK1_PATH}/hostname",
                    params={"index": index, "wait": "20s"},
                    headers=HEADERS,
                    timeout=30,
                )
            )
        )
        poll.start()
        time.sleep(0.5)
        assert (
            httpx.put(f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", content="woken", headers=HEADERS).status_code
            == 200
        )
        poll.join(25)
        assert woken and woken[0].text == "woken\n" and time.monotonic() - t0 < 15
    finally:
        srv.stop()


def test_compaction_over_a_secured_etcd(secured: dict[str, object], tmp_path: Path) -> None:
    """The metafs user compacts its tombstones; if etcd refuses it the compaction of
    etcd's own history, that is said once and left to etcd, and nothing else fails."""
    store, flags = str(secured["store"]), list(secured["flags"])  # type: ignore[call-overload]
    password = tmp_path / "etcd.password"
    password.write_text(PASSWORD)
    srv = ServerProcess(tmp_path / "unused.db", store=store)
    srv.start(
        *flags, "--etcd-user", "metafs", "--etcd-password-file", str(password), "--history-retention", "1s"
    )
    try:
        r = httpx.post(
            srv.url + "/v1/load",
            content=EXAMPLE.read_bytes(),
            headers={**HEADERS, "Content-Type": "application/yaml"},
        )
        assert r.status_code == 200
        gone = int(httpx.delete(f"{srv.url}/v1/kv/{ZK1_PATH}", headers=HEADERS).headers["x-metafs-revision"])
        deadline = time.monotonic() + 20
        while True:
            text = httpx.get(srv.url + "/metrics").text
            line = next(x for x in text.splitlines() if x.startswith("metafs_store_compacted_revision "))
            if float(line.split()[1]) >= gone:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert 'metafs_store_compactions_total{result="error"}' not in text or (
            'metafs_store_compactions_total{result="error"} 0.0' in text
        )
    finally:
        srv.stop()
