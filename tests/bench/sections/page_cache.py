"""The page-cache variant of the daemon beside the shipped one: its reads, and torn reads."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx

from tests.support.servers import HEADERS, ServerProcess

from ..fixtures import hello_ll, mount, pagecache_mount
from ..harness import QUICK, Report, rounds, single
from ..workloads import CHURN_VALUES, pread_vs_tmpfs, read_file, torn_reads


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    """The same reads through a variant of the daemon that serves files from the page
    cache (not shipped), and reads racing changes of length through both."""
    print("the page cache instead of direct_io (a variant, not shipped)")
    n = 200 if QUICK else 1000
    key = "/v1/kv/9/bench/big/big-00001/labels/churn"
    httpx.put(srv.url + key, content=CHURN_VALUES[0], headers=HEADERS).raise_for_status()
    with (
        mount(srv, tmp / "shipped", "9/bench/big/big-00001") as real,
        pagecache_mount(srv, tmp / "paged", "9/bench/big/big-00001") as paged,
        hello_ll(tmp) as hello,
    ):
        f = paged / "self" / "hostname"
        assert f.read_text() == "big-1\n"
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            (shm / "hostname").write_text("big-1\n")
            report.record(
                "page cache",
                "open+read+close self/hostname (page cache)",
                rounds(read_file(f), n),
                "µs",
                ("hello_ll", rounds(read_file(hello / "hello"), n)[0]),
            )
            paged_pread, tmpfs_pread = pread_vs_tmpfs(f, shm / "hostname", n * 5)
            report.record(
                "page cache", "pread on an open fd (page cache)", paged_pread, "µs", ("tmpfs", tmpfs_pread)
            )
        finally:
            shutil.rmtree(shm)
        changes = 100 if QUICK else 400
        with httpx.Client(base_url=srv.url, headers=HEADERS) as c:

            def change(value: str) -> None:
                c.put(key, content=value).raise_for_status()

            for name, m in (("direct_io, shipped", real), ("page cache", paged)):
                churn = m / "self" / "labels" / "churn"
                torn, reads, seen = torn_reads([churn], change, changes)
                report.record(
                    "page cache",
                    f"torn reads during {changes} changes of length ({name})",
                    single(torn),
                    f"of {reads}",
                    torn=seen,
                )
                print(f"    ({torn} torn of {reads} reads{': ' if seen else ''}{', '.join(seen)})")
