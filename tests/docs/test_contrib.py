"""contrib/ checked against the real tools that exist here: systemd-analyze for the units,
YAML and JSON parsers for the Kubernetes and hooks.d files."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.servers import OPERATOR_TOKEN, ROOT, ServerProcess

UNITS = sorted(p for p in (ROOT / "contrib" / "systemd").iterdir() if p.suffix in (".service", ".timer"))
METAFS = str(Path(sys.executable).parent / "metafs")


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify_clean(tmp_path: Path) -> None:
    names = ["metafs-backup.service", "metafs-backup.timer", "metafs-mount.service", "metafs-server.service"]
    assert [u.name for u in UNITS] == names
    copies = []
    for unit in UNITS:  # the units name /usr/local/bin/metafs: verify checks it exists
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/usr/local/bin/metafs", METAFS))
        copies.append(copy)
    r = verify(copies)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    # and the check does catch a broken unit
    broken = tmp_path / "broken.service"
    broken.write_text(copies[2].read_text().replace("Restart=always", "Restart=sometimes"))
    r = verify([broken])
    assert "Failed to parse service restart specifier" in r.stderr, r.stderr


def test_kubernetes_example_uses_mount_propagation() -> None:
    docs = list(yaml.safe_load_all((ROOT / "contrib" / "kubernetes" / "daemonset.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["DaemonSet", "Pod"]
    daemon = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "run", "mountPath": "/run/metafs", "mountPropagation": "Bidirectional"} in daemon[
        "volumeMounts"
    ]
    assert "--anchors" in daemon["command"]
    pod = docs[1]["spec"]["containers"][0]["volumeMounts"][0]
    assert pod["mountPropagation"] == "HostToContainer" and pod["readOnly"] is True
    assert docs[1]["spec"]["volumes"][0]["hostPath"]["path"].startswith("/run/metafs/anchors/")


def test_hooks_d_file_selects_annotated_containers() -> None:
    hook = json.loads((ROOT / "contrib" / "oci" / "metafs.json").read_text())
    assert hook["version"] == "1.0.0" and hook["stages"] == ["createRuntime"]
    assert hook["hook"]["args"][:2] == ["metafs", "oci-hook"]
    assert list(hook["when"]["annotations"]) == ["^io\\.metafs\\.unit$"]


@pytest.mark.timeout(60)
def test_the_backup_unit_takes_a_backup(server: ServerProcess, tmp_path: Path) -> None:
    """metafs-backup.service's command, as systemd hands it to the shell ($$ and %% unescaped,
    $STATE_DIRECTORY set), against a real server: a verified backup lands there."""
    unit = (ROOT / "contrib" / "systemd" / "metafs-backup.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    command = line.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%")
    command = command.replace("/usr/local/bin/metafs", METAFS)
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/sh", "-c"]
    env = {
        "PATH": "/usr/bin:/bin",
        "STATE_DIRECTORY": str(tmp_path),
        "METADATA_CONNECTION_URL": server.url,
        "METAFS_TOKEN": OPERATOR_TOKEN,
    }
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    (made,) = tmp_path.glob("metafs-*.jsonl")
    assert re.fullmatch(r"metafs-\d{8}T\d{6}Z\.jsonl", made.name)
    assert made.read_bytes().startswith(b'{"metafs_backup": 1')
