"""`metafs mount` tells a person what is wrong at start: a token the server refuses is a
configuration error (exit 1, naming the token and how to give it, nothing mounted); a
server that does not answer yet still mounts (boot order), and says so on stderr."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.mounts import Mount, mounted
from tests.support.servers import ZK1, ServerProcess, cli, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("unit", [None, ZK1])
@pytest.mark.parametrize("token", ["", "mfs_unit_not-a-token-the-server-knows"])
def test_a_refused_token_is_an_error(
    loaded: httpx.Client, server: ServerProcess, tmp_path: Path, unit: str | None, token: str
) -> None:
    where = tmp_path / "mnt"
    where.mkdir()
    args = ["mount", str(where), "--server", server.url, "--log-file", str(tmp_path / "m.log")]
    r = cli(*args, *(["--unit", unit] if unit else []), env={"METAFS_TOKEN": token})
    try:
        assert r.returncode == 1, r.stderr
        assert "the server refused the token" in r.stderr and "--token" in r.stderr, r.stderr
        assert "HTTP 401" in r.stderr
        assert not mounted(where)
    finally:
        if mounted(where):
            cli("umount", str(where))


def test_an_unreachable_server_mounts_and_says_so(tmp_path: Path) -> None:
    m = Mount(
        tmp_path / "mnt",
        f"http://127.0.0.1:{free_port()}",
        tmp_path / "m.log",
        None,
        ("--fetch-timeout", "1"),
    )
    m.path.mkdir()
    r = cli("mount", str(m.path), "--server", m.server, "--log-file", str(m.log), "--fetch-timeout", "1")
    try:
        assert r.returncode == 0, r.stderr
        assert "mounted, but no server answered" in r.stderr and "127.0.0.1" in r.stderr
        assert r.stderr.count("\n") == 1
        assert mounted(m.path)
    finally:
        m.stop()
    assert not mounted(m.path)
