"""The Docker runtime shim and `metafs install-hook`, without an engine: which runc
command lines carry a bundle, which containers get the hook, and what the shim hands
runc (an ``echo`` stands in for it here; tests/containers/test_engines.py runs dockerd)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from metafs.mount import install, runtime
from tests.support.servers import cli


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("args", "bundle"),
    [
        (["--root", "/r", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "id"], "/b"),
        (["--systemd-cgroup", "create", "-b", "/b2", "--pid-file", "/p", "id"], "/b2"),
        (["--root=/r", "run", "--bundle=/b3", "id"], "/b3"),
        (["--root", "/r", "start", "id"], None),
        (["--root", "/r", "delete", "--force", "id"], None),
        (["features"], None),
        ([], None),
    ],
)
def test_the_bundle_of_a_runc_command_line(args: list[str], bundle: str | None) -> None:
    got = runtime.bundle_of(args)
    assert (str(got) if got else None) == bundle


@pytest.mark.timeout(10)
def test_which_containers_ask_for_a_unit() -> None:
    assert runtime.unit_of({"process": {"env": ["PATH=/bin", "DEPLOYMENT_UNIT_ID=5/s/v/u1"]}}) == "5/s/v/u1"
    assert runtime.unit_of({"annotations": {"io.metafs.unit": "u2"}, "process": {"env": []}}) == "u2"
    assert runtime.unit_of({"process": {"env": ["DEPLOYMENT_UNIT_ID="]}}) is None
    assert runtime.unit_of({"process": {"env": ["OTHER=1"]}}) is None


@pytest.mark.timeout(30)
def test_the_shim_adds_the_hook_once_then_runs_runc(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = {"process": {"env": ["DEPLOYMENT_UNIT_ID=5/test1/s4/u1"]}, "hooks": {"prestart": []}}
    (bundle / "config.json").write_text(json.dumps(config))
    hook = tmp_path / "metafs"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    shim = ["runtime", "--anchors", "/a", "--hook", str(hook), "--runc", "/bin/echo"]
    for _ in range(2):  # a bundle that comes through twice gets one hook
        r = cli(*shim, "--root", "/r", "create", "--bundle", str(bundle), "cid")
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"--root /r create --bundle {bundle} cid\n"  # runc's line, untouched
    edited = json.loads((bundle / "config.json").read_text())
    assert edited["annotations"] == {"io.metafs.unit": "5/test1/s4/u1"}
    assert edited["hooks"]["createRuntime"] == [
        {"path": str(hook), "args": ["metafs", "oci-hook", "--anchors", "/a"], "timeout": 10}
    ]
    assert edited["hooks"]["prestart"] == []

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"process": {"env": ["A=1"]}}))
    r = cli(*shim, "create", "--bundle", str(plain), "cid2")
    assert r.returncode == 0 and json.loads((plain / "config.json").read_text()) == {
        "process": {"env": ["A=1"]}
    }

    r = cli(
        "runtime",
        "--hook",
        str(tmp_path / "missing"),
        "--runc",
        "/bin/echo",
        "create",
        "--bundle",
        str(bundle),
        "c",
    )
    assert r.returncode == 1 and "is not an executable: run `metafs install-hook`" in r.stderr
    assert r.stdout == ""  # runc never ran: the container does not start
    r = cli("runtime", "--runc", str(tmp_path / "no-runc"), "state", "cid")
    assert r.returncode == 1 and "runc not found" in r.stderr


@pytest.mark.timeout(30)
def test_install_hook_writes_what_the_shipped_hook_file_says(tmp_path: Path) -> None:
    bin_path, hooks, daemon = tmp_path / "bin" / "metafs", tmp_path / "hooks.d", tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"log-level": "warn", "runtimes": {"other": {"path": "/x"}}}))
    args = ["--bin", str(bin_path), "--hooks-dir", str(hooks), "--anchors", "/run/metafs/anchors"]
    r = cli("install-hook", *args, "--docker-config", str(daemon))
    assert r.returncode == 0, r.stderr
    shipped = json.loads((Path(__file__).parents[2] / "contrib" / "oci" / "metafs.json").read_text())
    written = json.loads((hooks / "metafs.json").read_text())
    assert written == {**shipped, "hook": {**shipped["hook"], "path": str(bin_path)}}
    merged = json.loads(daemon.read_text())
    assert merged["log-level"] == "warn" and merged["runtimes"]["other"] == {"path": "/x"}
    assert merged["runtimes"]["metafs"] == install.runtime_entry(str(bin_path), "/run/metafs/anchors")
    version = cli("--version")
    launched = subprocess.run([str(bin_path), "--version"], capture_output=True, text=True)
    assert launched.stdout == version.stdout  # the launcher runs this metafs

    daemon.write_text("{not json")
    r = cli("install-hook", *args, "--docker-config", str(daemon))
    assert r.returncode == 1 and f"{daemon}: not JSON" in r.stderr
