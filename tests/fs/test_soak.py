"""A short soak in CI (`make soak` runs the long one): no error, no torn read, and no
file descriptor left behind by either process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.soak import soak


@pytest.mark.timeout(120)
def test_short_soak(tmp_path: Path) -> None:
    report = soak(15, tmp_path)
    assert report["error_count"] == 0, report["errors"]
    assert report["reads"] > 1000 and report["writes"] > 100, report
    for who in ("daemon", "server"):
        first, last = report["first_last"][f"{who}_fds"]
        assert last <= first + 5, f"{who} file descriptors grew from {first} to {last}"
