"""Docker and Podman for real, by every documented route to /meta: the bind of an anchor
(both engines), the hooks.d hook (Podman) and the runtime shim (Docker), each installed
by `metafs install-hook`. A container builds the ZooKeeper server list, cannot write,
sees nothing of another account, sees a change while running and, on the bind route,
lives through a SIGKILL and restart of the mount daemon reading every 10 ms: the old
value, "not connected", the new value; never a missing file."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.containers.test_container import SCRIPT, check_start
from tests.support import engines
from tests.support.mounts import MakeMount, wait_for
from tests.support.servers import ZK1, ZK1_PATH, ServerProcess, cli

NOT_CONNECTED = "Transport endpoint is not connected"
ABORTED = "Software caused connection abort"
#: SCRIPT, then the hostname every 10 ms until it reads "final" (at most 60 s)
WATCH = (
    SCRIPT
    + r"""
echo ready
i=0
while [ $i -lt 6000 ]; do
  v="$(cat /meta/self/hostname 2>&1)"; echo "read: $v"
  [ "$v" = final ] && break
  usleep 10000; i=$((i+1))
done
"""
)


@pytest.fixture(params=["docker", "podman"])
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if reason := engines.unusable(name):
        pytest.skip(f"{name} cannot run here: {reason}")
    return name


@pytest.fixture
def engine(engine_name: str, tmp_path: Path) -> Iterator[engines.Engine]:
    with engines.dockerd() if engine_name == "docker" else engines.podman() as e:
        yield e


class Lines:
    """A running container's output lines, collected as they come, with their times."""

    def __init__(self, proc: object) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        for line in self.proc.stdout:  # type: ignore[attr-defined]
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]

    def reads(self) -> list[str]:
        return [t.removeprefix("read: ") for t in self.texts() if t.startswith("read: ")]

    def join(self) -> None:
        self._thread.join(30)


def bind_options(engine: engines.Engine, anchor: Path) -> list[str]:
    """The documented bind route (contrib/docker, contrib/podman): read-only, rslave."""
    if engine.name == "docker":
        return ["--mount", f"type=bind,source={anchor},target=/meta,readonly,bind-propagation=rslave"]
    return ["-v", f"{anchor}:/meta:ro,rslave"]


@pytest.mark.timeout(180)
def test_the_bind_route_survives_a_daemon_restart(
    engine: engines.Engine, loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount, anchors: Path
) -> None:
    m = make_mount(server.url, None, "--anchors", str(anchors))
    proc = engine.popen(bind_options(engine, anchors / ZK1), WATCH)
    out = Lines(proc)
    try:
        wait_for(lambda: "ready" in out.texts(), timeout=30)
        check_start(out.texts())
        wait_for(lambda: len(out.reads()) > 3, timeout=10)
        assert set(out.reads()) == {"s4-1"}
        assert loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="live").status_code == 200
        wait_for(lambda: out.reads()[-1] == "live", timeout=10)  # a change while running

        (pid,) = m.pids
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: NOT_CONNECTED in out.reads()[-1], timeout=10)
        assert loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="final").status_code == 200
        restarted = time.monotonic()
        m.start()
        wait_for(lambda: proc.poll() is not None, timeout=20)  # it stops once it reads "final"
        out.join()
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        first = next(t for t, text in out.lines if text == "read: final")
        reads = out.reads()
        outage = {r for r in reads if r not in ("s4-1", "live", "final")}
        # the dead connection's errors only, never "No such file" (a false "not set"): a
        # read in flight while the new daemon aborts the old connection gets ECONNABORTED
        assert outage and all(NOT_CONNECTED in r or ABORTED in r for r in outage), outage
        print(
            f"{engine.name}: {len(reads)} reads, {sum(NOT_CONNECTED in r for r in reads)} not connected,"
            f" 0 missing; restart -> first good read {1e3 * (first - restarted):.0f} ms"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def install_hook(tmp_path: Path, anchors: Path, *extra: str) -> tuple[Path, Path]:
    """`metafs install-hook` into ``tmp_path``: the executable and the hooks.d it wrote."""
    bin_path, hooks = tmp_path / "bin" / "metafs", tmp_path / "hooks.d"
    args = ["--bin", str(bin_path), "--hooks-dir", str(hooks), "--anchors", str(anchors), *extra]
    r = cli("install-hook", *args)
    assert r.returncode == 0, r.stderr
    assert os.access(bin_path, os.X_OK)
    hook = json.loads((hooks / "metafs.json").read_text())
    assert hook["hook"]["path"] == str(bin_path)
    assert hook["hook"]["args"] == ["metafs", "oci-hook", "--anchors", str(anchors)]
    again = cli("install-hook", *args)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout  # idempotent
    return bin_path, hooks


def check_hook_route(engine: engines.Engine, options: list[str], unknown: list[str], none: list[str]) -> None:
    r = engine.run(options, SCRIPT)
    assert r.returncode == 0, r.stderr
    check_start(r.stdout.splitlines())
    r = engine.run(none, "ls -A /meta | wc -l")  # a container that asks for nothing
    assert r.returncode == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)
    r = engine.run(unknown, "echo started")  # a unit with no anchor here: it never starts
    assert r.returncode != 0 and "started" not in r.stdout
    assert "has no anchor" in r.stderr, r.stderr


#: how a container asks for a unit on each engine's hook route: Podman by annotation
#: (hooks.d), Docker by DEPLOYMENT_UNIT_ID through the runtime shim
ASKS = {
    "podman": (lambda unit: ["--annotation", f"io.metafs.unit={unit}"], []),
    "docker": (
        lambda unit: ["--runtime", "metafs", "-e", f"DEPLOYMENT_UNIT_ID={unit}"],
        ["--runtime", "metafs"],
    ),
}


@pytest.mark.timeout(180)
def test_the_hook_route_as_installed(
    engine_name: str,
    loaded: httpx.Client,
    server: ServerProcess,
    make_mount: MakeMount,
    anchors: Path,
    tmp_path: Path,
) -> None:
    """`metafs install-hook`, then Podman through its hooks.d, Docker through the shim."""
    make_mount(server.url, None, "--anchors", str(anchors))
    config = tmp_path / "daemon.json"
    _, hooks = install_hook(tmp_path, anchors, "--docker-config", str(config))
    runtime = json.loads(config.read_text())["runtimes"]["metafs"]
    assert runtime["runtimeArgs"][:1] == ["runtime"]
    asks, plain = ASKS[engine_name]
    started = engines.podman(hooks_dir=hooks) if engine_name == "podman" else engines.dockerd(config)
    with started as engine:
        check_hook_route(engine, asks(ZK1_PATH), unknown=asks("5/test1/s4/no-such-unit"), none=plain)
