"""An API fuzz run: schemathesis against the server's own OpenAPI document, with an
operator token and with a unit token. It must find no 5xx and no scope leak. Bounded for
CI; METAFS_FUZZ_EXAMPLES raises the number of cases per operation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import EXAMPLE, HEADERS, OPERATOR_TOKEN, ServerProcess

EXAMPLES = os.environ.get("METAFS_FUZZ_EXAMPLES", "8")
ZK1 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"
FOREIGN = ["3b1f2c9e", "web-", "shop", "api-1", "storefront"]  # account 7, never for ZK1's token


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    srv = ServerProcess(tmp_path / "fuzz.db").start("--max-wait", "0.2", "--body-timeout", "2")
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS) as op:
            assert op.post("/v1/load", content=EXAMPLE.read_bytes()).status_code == 200
            unit = op.post("/v1/tokens/", json={"kind": "unit", "subject": ZK1}).json()["token"]
        yield srv, unit
    finally:
        srv.stop()


def schemathesis(url: str, token: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    cmd = [exe, "run", f"{url}/openapi.json", "--url", url, "--checks", "not_a_server_error"]
    cmd += ["--max-examples", EXAMPLES, "--header", "Metadata-Flavor: metafs"]
    cmd += ["--header", f"Authorization: Bearer {token}", "--report", "har", "--report-dir", str(tmp_path)]
    cmd += ["--request-timeout", "5", "--seed", "1", "--phases", "examples,coverage,fuzzing"]
    tmp_path.mkdir(parents=True, exist_ok=True)  # the report, and schemathesis' cache
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)


@pytest.mark.timeout(600)
def test_fuzz_finds_no_server_error_and_no_scope_leak(
    fuzzed: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    if shutil.which("st", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("schemathesis is not installed (it is a test dependency in pyproject.toml)")
    srv, unit_token = fuzzed
    for name, token in (("operator", OPERATOR_TOKEN), ("unit", unit_token)):
        report = tmp_path / name
        r = schemathesis(srv.url, token, report)
        assert r.returncode == 0, f"{name}: {r.stdout[-3000:]}\n{r.stderr[-2000:]}"
        assert "passed" in r.stdout.lower() or "no issues found" in r.stdout.lower(), r.stdout[-2000:]
        if name == "unit":
            har = "".join(p.read_text() for p in report.glob("har-*.json"))
            assert har, "no HAR report written"
            # every response the unit token got: nothing of another account in it
            entries = json.loads(har)["log"]["entries"]
            assert len(entries) > 50, len(entries)
            for entry in entries:
                if entry["response"]["status"] == 200:
                    text = entry["response"]["content"].get("text", "")
                    for word in FOREIGN:
                        assert word not in text, f"unit token saw {word!r} at {entry['request']['url']}"
