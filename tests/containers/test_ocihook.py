"""The OCI runtime hook under real runc: a container annotated with its unit gets /meta
from the host's anchors, one without the annotation is left alone, and a unit that has
no anchor here stops the container with a message naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.containers import make_bundle, runc_unusable
from tests.support.mounts import MakeMount
from tests.support.servers import ZK1, ServerProcess

from .test_container import SCRIPT

HOOK = str(Path(sys.executable).parent / "metafs")

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_annotated(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount, anchors: Path, tmp_path: Path
) -> Iterator[Run]:
    """Run a runc container with ``annotations`` and the metafs hook, and no /meta mount of
    its own; a host-mode mount with ``anchors`` serves the units."""
    if reason := runc_unusable():
        pytest.skip(reason)
    make_mount(server.url, None, "--anchors", str(anchors))
    assert (anchors / ZK1).is_dir()
    ids: list[str] = []

    def run(script: str, annotations: dict[str, str]) -> subprocess.CompletedProcess[str]:
        bundle = make_bundle(tmp_path / f"bundle{len(ids)}", anchors / ZK1, script)
        config = json.loads((bundle / "config.json").read_text())
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/meta"]
        config["annotations"] = annotations
        hook = {"path": HOOK, "args": ["metafs", "oci-hook", "--anchors", str(anchors)], "timeout": 20}
        config["hooks"] = {"createRuntime": [hook]}
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        cid = f"metafs-hook-{uuid.uuid4().hex[:8]}"
        ids.append(cid)
        cmd = ["runc", "run", "--bundle", str(bundle), cid]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    try:
        yield run
    finally:
        for cid in ids:
            subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)


@pytest.mark.timeout(120)
def test_the_hook_gives_an_annotated_container_its_unit(run_annotated: Run) -> None:
    r = run_annotated(SCRIPT, {"io.metafs.unit": f"5/test1/s4/{ZK1}"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["uid=1000", "myid=1", "server.1=s4-1:2888:3888"], r.stdout
    assert "write: refused" in lines and "foreign: 0" in lines
    assert "top: revision self service stack " in lines


@pytest.mark.timeout(120)
def test_the_hook_leaves_other_containers_alone_and_refuses_unknown_units(run_annotated: Run) -> None:
    r = run_annotated('echo "meta: $(ls /meta | wc -l)"', {"org.example.other": "x"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "meta: 0\n"
    r = run_annotated("echo started", {"io.metafs.unit": "no-such-unit"})
    assert r.returncode != 0 and "started" not in r.stdout
    assert "unit 'no-such-unit' has no anchor" in r.stderr, r.stderr
    r = run_annotated("echo started", {"io.metafs.unit": ZK1, "io.metafs.target": "/../etc"})
    assert r.returncode != 0 and "io.metafs.target" in r.stderr, r.stderr
