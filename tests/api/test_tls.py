"""The server on a real network: HTTPS and mutual TLS with openssl-made CAs, certificates
swapped on SIGHUP under an open long poll, a broken file on SIGHUP, plaintext refused on a
non-loopback address, and the clients' one-line messages for certificate problems."""

from __future__ import annotations

import shutil
import signal
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.certs import CA, LOCAL
from tests.support.mounts import MakeMount, wait_for
from tests.support.servers import EXAMPLE, HEADERS, ZK1, ZK1_PATH, ServerProcess, cli

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca, other = CA.make(tmp_path), CA.make(tmp_path, "other")
    server, server_key = ca.issue("server", LOCAL)
    client, client_key = ca.issue("client")
    foreign, foreign_key = other.issue("foreign")
    return {
        "ca": ca.cert,
        "other_ca": other.cert,
        "server": server,
        "server_key": server_key,
        "client": client,
        "client_key": client_key,
        "foreign": foreign,
        "foreign_key": foreign_key,
        "base": tmp_path,
    }


def tls_server(tmp_path: Path, pki: dict[str, Path], mutual: bool) -> ServerProcess:
    srv = ServerProcess(tmp_path / "metafs.db", ca=pki["ca"])
    args = ["--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"])]
    if mutual:
        args += ["--tls-client-ca-file", str(pki["ca"])]
        srv.client_cert = (pki["client"], pki["client_key"])
    srv.start(*args)
    r = httpx.post(
        srv.url + "/v1/load",
        content=EXAMPLE.read_bytes(),
        headers={**HEADERS, "Content-Type": "application/yaml"},
        verify=srv.verify(),
    )
    assert r.status_code == 200, r.text
    return srv


def context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def test_https_only_and_mutual_tls(tmp_path: Path, pki: dict[str, Path], make_mount: MakeMount) -> None:
    srv = tls_server(tmp_path, pki, mutual=True)
    try:
        url = srv.url
        good = context(pki["ca"], (pki["client"], pki["client_key"]))
        r = httpx.get(f"{url}/v1/kv/{ZK1_PATH}/hostname", headers=HEADERS, verify=good)
        assert r.status_code == 200 and r.text == "s4-1\n"
        for cert in (None, (pki["foreign"], pki["foreign_key"])):  # none, or another CA's: no answer
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{url}/healthz", verify=context(pki["ca"], cert))
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port: nothing
            httpx.get(f"http://127.0.0.1:{srv.port}/healthz")
        # the CLI: over https with the CA and a client certificate (flags, then environment)
        flags = ["--server", url, "--ca-file", str(pki["ca"])]
        mine = ["--cert-file", str(pki["client"]), "--key-file", str(pki["client_key"])]
        r = cli("get", f"{ZK1_PATH}/hostname", *flags, *mine)
        assert r.returncode == 0 and r.stdout == "s4-1\n", r.stderr
        env = {"METAFS_CA_FILE": str(pki["ca"]), "METAFS_CERT_FILE": str(pki["client"])}
        env["METAFS_KEY_FILE"] = str(pki["client_key"])
        r = cli("get", f"{ZK1_PATH}/hostname", "--server", url, env=env)
        assert r.returncode == 0 and r.stdout == "s4-1\n", r.stderr
        # certificate problems: one line on stderr, exit 1, naming the server and the reason
        cases = [
            ([], "TLS: unknown CA"),  # the system's CAs do not know ours
            (["--ca-file", str(pki["other_ca"]), *mine], "TLS: unknown CA"),
            (["--ca-file", str(pki["ca"])], "does it want a client certificate"),
        ]
        for extra, said in cases:
            r = cli("get", f"{ZK1_PATH}/hostname", "--server", url, *extra)
            assert r.returncode == 1 and said in r.stderr and url in r.stderr, (extra, r.stderr)
            assert r.stderr.count("\n") == 1 and r.stderr.count(said) == 1, r.stderr  # once, tries counted
        # a mount over mutual TLS
        m = make_mount(url, ZK1, "--ca-file", str(pki["ca"]), *mine)
        assert (m.path / "self" / "hostname").read_text() == "s4-1\n"
        r = httpx.put(f"{url}/v1/kv/{ZK1_PATH}/hostname", content="over-tls", headers=HEADERS, verify=good)
        assert r.status_code == 200
        wait_for(lambda: (m.path / "self" / "hostname").read_text() == "over-tls\n", timeout=10)
    finally:
        srv.stop()


def test_sighup_swaps_the_certificate_and_a_broken_file_keeps_the_old(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(pki["server"], live_cert)
    shutil.copy(pki["server_key"], live_key)
    pki = {**pki, "server": live_cert, "server_key": live_key}
    srv = tls_server(tmp_path, pki, mutual=False)
    try:
        url, verify = srv.url, context(pki["ca"])
        before = ssl.get_server_certificate(("127.0.0.1", srv.port))
        r = httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", headers=HEADERS, verify=verify)
        index = r.headers["x-metafs-index"]
        answered: list[httpx.Response] = []

        def poll() -> None:  # a long poll open across the swap
            answered.append(
                httpx.get(
                    f"{url}/v1/view/{ZK1}/self/hostname",
                    params={"index": index, "wait": "30s"},
                    headers=HEADERS,
                    verify=verify,
                    timeout=40,
                )
            )

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        # a new certificate from the same CA, then SIGHUP: new handshakes get it
        newer, newer_key = CA(pki["base"], "test").issue("newer", LOCAL, days=60)
        shutil.copy(newer, live_cert)
        shutil.copy(newer_key, live_key)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: ssl.get_server_certificate(("127.0.0.1", srv.port)) != before, timeout=10)
        assert srv.proc.poll() is None
        # the poll opened before the swap is answered by a change after it
        r = httpx.put(f"{url}/v1/kv/{ZK1_PATH}/hostname", content="after-hup", headers=HEADERS, verify=verify)
        assert r.status_code == 200
        poller.join(20)
        assert answered and answered[0].status_code == 200 and answered[0].text == "after-hup\n"
        # a broken file on SIGHUP: the server lives, keeps the certificate, logs and counts it
        swapped = ssl.get_server_certificate(("127.0.0.1", srv.port))
        live_cert.write_text("not a certificate\n")
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert srv.proc.poll() is None
        assert ssl.get_server_certificate(("127.0.0.1", srv.port)) == swapped
        metrics = httpx.get(f"{url}/metrics", verify=verify).text
        assert 'metafs_tls_reloads_total{result="error"} 1.0' in metrics
        assert 'metafs_tls_reloads_total{result="ok"} 1.0' in metrics
        expiry = next(x for x in metrics.splitlines() if x.startswith("metafs_tls_certificate_expiry"))
        assert float(expiry.split()[1]) > time.time() + 50 * 86400  # the 60-day certificate's
    finally:
        srv.stop()


def test_plaintext_off_loopback_is_a_choice(tmp_path: Path, pki: dict[str, Path]) -> None:
    r = cli("serve", "--listen", "0.0.0.0:1", "--store", f"sqlite://{tmp_path / 'x.db'}", timeout=20)
    assert r.returncode == 2 and "--tls-cert-file" in r.stderr and "--insecure-plaintext" in r.stderr
    assert not (tmp_path / "x.db").exists()
    r = cli("serve", "--tls-cert-file", str(pki["server"]), "--store", f"sqlite://{tmp_path / 'x.db'}")
    assert r.returncode == 2 and "go together" in r.stderr
    broken = tmp_path / "broken.pem"
    broken.write_text("nope\n")
    args = ["--tls-cert-file", str(broken), "--tls-key-file", str(pki["server_key"])]
    r = cli("serve", "--listen", "127.0.0.1:1", "--store", f"sqlite://{tmp_path / 'y.db'}", *args, timeout=20)
    assert r.returncode == 1 and "not a certificate (or key) in PEM form" in r.stderr, r.stderr
    # --insecure-plaintext lets it go on, with a warning (to 192.0.2.1, TEST-NET: no
    # machine has it, so the bind fails after the choice was made; nothing is exposed)
    r = cli(
        "serve",
        "--listen",
        "192.0.2.1:8500",
        "--insecure-plaintext",
        "--store",
        f"sqlite://{tmp_path / 'z.db'}",
    )
    assert "serving plain HTTP on 192.0.2.1:8500 (--insecure-plaintext)" in r.stderr, r.stderr
    assert r.returncode != 2


def test_the_mount_takes_rotated_client_certificates(
    tmp_path: Path, pki: dict[str, Path], make_mount: MakeMount
) -> None:
    """The mount's client certificate files are replaced by ones from another CA and the
    server restarted trusting only that CA: the mount's new connections use the new
    files (looked at every 5 s) and the next change reaches the files, no remount."""
    srv = tls_server(tmp_path, pki, mutual=True)
    cert, key = tmp_path / "mount.pem", tmp_path / "mount.key"
    shutil.copy(pki["client"], cert)
    shutil.copy(pki["client_key"], key)
    try:
        m = make_mount(
            srv.url, ZK1, "--ca-file", str(pki["ca"]), "--cert-file", str(cert), "--key-file", str(key)
        )
        hostname = m.path / "self" / "hostname"
        assert hostname.read_text() == "s4-1\n"
        # a new client CA: the server trusts only it from now on
        newer = CA.make(pki["base"], "newer")
        rotated, rotated_key = newer.issue("rotated")
        combined = tmp_path / "server-trusts.pem"
        combined.write_bytes(newer.cert.read_bytes())
        shutil.copy(rotated, cert)
        shutil.copy(rotated_key, key)
        srv.stop()
        srv.client_cert = (rotated, rotated_key)
        srv.start(
            "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
            "--tls-client-ca-file", str(combined),
        )  # fmt: skip
        good = context(pki["ca"], (rotated, rotated_key))
        r = httpx.put(f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", content="rotated", headers=HEADERS, verify=good)
        assert r.status_code == 200
        wait_for(lambda: hostname.read_text() == "rotated\n", timeout=20)
        assert "certificate files changed: new connections use them" in m.log.read_text()
    finally:
        srv.stop()
