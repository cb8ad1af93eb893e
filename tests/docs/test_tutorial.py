"""The ten-minute tutorial (docs/tutorial.md), run as written (only its directory and port are
changed, and `make deps`, which `make test` has just done, is skipped)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.mounts import mounted
from tests.support.servers import ROOT, free_port


def tutorial() -> str:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    block = text.split("<!-- tutorial:start -->", 1)[1].split("<!-- tutorial:end -->", 1)[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


@pytest.mark.timeout(180)
def test_the_tutorial_works_line_by_line(tmp_path: Path) -> None:
    script = tutorial()
    where = tmp_path / "tutorial"
    script, n = re.subn(
        r"^DIR=/tmp/metafs-tutorial PORT=8500 ", f"DIR={where} PORT={free_port()} ", script, flags=re.M
    )
    assert n == 1, "the tutorial's DIR=... PORT=... line changed: update this test"
    script, n = re.subn(r"^make deps .*$", ":", script, flags=re.M)
    assert n == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFS_", "METADATA_", "DEPLOYMENT_"))}
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    try:
        assert r.returncode == 0, f"the tutorial failed:\n{r.stdout}\n{r.stderr}"
        out = r.stdout
        assert "s4-1\ns4-2\ns4-3\n" in out  # the peers' hostnames through the mount
        assert "state       fresh" in out  # metafs status
        assert "\nzk-one.example.net\n" in out  # the running container saw the change
        assert "\nready\n" in out  # metafs wait
        assert re.search(r"http://127\.0\.0\.1:\d+/ui#token=mfs_operator_", out)
        assert not mounted(where / "units")
        assert not any(str(where) in line for line in Path("/proc/self/mounts").read_text().splitlines())
    finally:
        if r.returncode != 0:  # take down what a failed run left
            for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
                if str(where) in line:
                    subprocess.run(["umount", "-l", line.split()[1]], check=False, capture_output=True)
            subprocess.run(["pkill", "-f", str(where)], check=False)
