"""The `metafs` command line against a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import EXAMPLE, HEADERS, OPERATOR_TOKEN, ROOT, ZK1, ZK1_PATH, ServerProcess, cli


def env_for(server: ServerProcess, unit: str | None = ZK1_PATH) -> dict[str, str]:
    env = {"METADATA_CONNECTION_URL": f"{server.url}/v1/kv/"}
    if unit:
        env["DEPLOYMENT_UNIT_ID"] = unit
    return env


def test_load_get_ls(server: ServerProcess) -> None:
    env = env_for(server)
    r = cli("load", str(EXAMPLE), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"loaded {EXAMPLE}: revision 1, 19 records changed\n"
    assert cli("get", "self/cardinal_value", env=env).stdout == "1\n"
    assert cli("get", f"{ZK1_PATH}/hostname", env=env).stdout == "s4-1\n"
    assert cli("get", "hosts/node-b/agent_ip", env=env).stdout == "10.0.0.2\n"
    assert cli("ls", "5/test1/", env=env).stdout == "s4/\n"
    assert cli("ls", "self/hostname", env=env).stdout == "hostname\n"
    assert cli("ls", "service/all_hosts", env=env).stdout.count("/\n") == 3
    r = cli("get", "service/metadata/zk", "--json", env=env)
    assert '"client_port": 2181' in r.stdout
    # --server and --unit override the environment
    r = cli("get", "self/hostname", "--server", server.url, "--unit", "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117")
    assert r.stdout == "s4-2\n"


def test_put_delete_and_errors(server: ServerProcess, tmp_path: Path) -> None:
    env = env_for(server)
    assert cli("load", str(EXAMPLE), env=env).returncode == 0
    r = cli("put", f"{ZK1_PATH}/hostname", "zk-a", env=env)
    assert (r.returncode, r.stdout) == (0, "2\n")
    assert cli("get", "self/hostname", env=env).stdout == "zk-a\n"
    r = cli("put", f"{ZK1_PATH}/labels", '{"a": "1"}', "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert cli("ls", "self/labels", env=env).stdout == "a\n"
    assert cli("delete", f"{ZK1_PATH}/labels/a", env=env).returncode == 0
    assert cli("ls", "self/labels/", env=env).stdout == ""

    r = cli("put", f"{ZK1_PATH}/cardinal_value", "first", env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"metafs: put: invalid metadata; accounts.5.stacks.test1.services.s4.units.{ZK1}"
        ".cardinal_value: expected an integer (HTTP 400)"
    )
    r = cli("get", "self/nothing", env=env)
    assert r.returncode == 1 and "not found" in r.stderr and "HTTP 404" in r.stderr
    assert r.stderr.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "accounts:\n  '9':\n    stacks:\n      s:\n        services:\n          x:\n            scale: -1\n"
    )
    r = cli("load", str(bad), env=env)
    assert r.returncode == 1 and "accounts.9.stacks.s.services.x.scale: must be >= 0" in r.stderr
    r = cli("load", str(tmp_path / "missing.yaml"), env=env)
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = cli("get", "self/hostname", env={"DEPLOYMENT_UNIT_ID": ZK1_PATH})
    assert r.returncode == 1 and "no server given" in r.stderr
    r = cli("get", "hostname", "--server", "http://127.0.0.1:9")
    assert r.returncode == 1 and "server unreachable" in r.stderr
    r = cli("get", "self/hostname", "--server", server.url)
    assert r.returncode == 1 and "DEPLOYMENT_UNIT_ID" in r.stderr


def test_failover_to_the_next_server(server: ServerProcess) -> None:
    assert cli("load", str(EXAMPLE), "--server", server.url).returncode == 0
    r = cli("get", f"{ZK1_PATH}/hostname", "--server", f"http://127.0.0.1:9,{server.url}")
    assert (r.returncode, r.stdout) == (0, "s4-1\n")


def test_wait_until_changed_exists_and_timeout(server: ServerProcess) -> None:
    env = env_for(server)
    assert cli("load", str(EXAMPLE), env=env).returncode == 0
    cmd = [sys.executable, "-m", "metafs.cli", "wait", "self/hostname", "--timeout", "20"]
    full_env = {"PATH": "/usr/bin:/bin", "METAFS_TOKEN": OPERATOR_TOKEN, **env}
    waiter = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        # a change elsewhere in the same view does not end a wait on hostname
        httpx.put(
            f"{server.url}/v1/kv/5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf117/hostname",
            content="x",
            headers=HEADERS,
        )
        time.sleep(0.5)
        assert waiter.poll() is None
        httpx.put(f"{server.url}/v1/kv/{ZK1_PATH}/hostname", content="changed", headers=HEADERS)
        out, _ = waiter.communicate(timeout=10)
        assert (waiter.returncode, out) == (0, "changed\n")
    finally:
        waiter.kill()
        waiter.wait()
    # a key that does not exist yet: waits until it appears
    appear = subprocess.Popen(
        [sys.executable, "-m", "metafs.cli", "wait", "5/test1/s4/late/hostname", "--timeout", "20"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        httpx.put(
            f"{server.url}/v1/accounts/5/stacks/test1/services/s4/units/late",
            json={"cardinal_value": 4, "hostname": "late-4"},
            headers=HEADERS,
        )
        out, _ = appear.communicate(timeout=10)
        assert (appear.returncode, out) == (0, "late-4\n")
    finally:
        appear.kill()
        appear.wait()
    t0 = time.monotonic()
    r = cli("wait", "self/hostname", "--timeout", "0.5", env=env)
    assert r.returncode == 124 and "timed out after 0.5s" in r.stderr
    assert time.monotonic() - t0 < 10


def test_help_for_every_command() -> None:
    for cmd in ("serve", "load", "get", "ls", "put", "delete", "wait"):
        r = cli(cmd, "--help")
        assert r.returncode == 0 and f"usage: metafs {cmd}" in r.stdout
    assert cli().returncode == 2


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "x.db").start()
    assert srv.stop() == 0


@pytest.mark.timeout(60)
def test_bounds_must_be_numbers_that_make_sense(tmp_path: Path) -> None:
    cases = [
        (["mount", str(tmp_path), "--server", "127.0.0.1:1", "--cache-size", "-5"], "--cache-size: '-5'"),
        (["mount", str(tmp_path), "--server", "127.0.0.1:1", "--view-ttl", "0"], "--view-ttl: '0'"),
        (["serve", "--view-cache-size", "lots"], "--view-cache-size: 'lots'"),
        (["serve", "--render-cache-size", "1.5"], "--render-cache-size: '1.5'"),
    ]
    for args, what in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert what in r.stderr.splitlines()[-1], r.stderr
    assert not any(tmp_path.iterdir())  # nothing was made or mounted
