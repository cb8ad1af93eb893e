"""Warm reads through a mount beside tmpfs and the hello filesystems."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.servers import ServerProcess

from ..fixtures import hello_ll, hello_pyfuse3, mount
from ..harness import QUICK, Report, rounds
from ..workloads import pread_vs_tmpfs, read_file


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    print("warm reads (µs per operation)")
    n = 200 if QUICK else 1000
    with (
        mount(srv, tmp / "warm", "9/bench/big/big-00000") as m,
        hello_ll(tmp) as hello,
        hello_pyfuse3(tmp) as hello_py,
        hello_pyfuse3(tmp, "--direct-io") as hello_py_dio,
    ):
        f = m / "self" / "hostname"
        assert f.read_text() == "big-0\n"
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            t = shm / "hostname"
            t.write_text("big-0\n")
            (shm / "all_hosts").mkdir()
            for i in range(100):
                (shm / "all_hosts" / f"big-{i:05d}").mkdir()
            tmpfs_read = rounds(read_file(t), n)
            hello_read = rounds(read_file(hello / "hello"), n)
            hello_py_read = rounds(read_file(hello_py / "hello"), n)
            hello_dio_read = rounds(read_file(hello_py_dio / "hello"), n)
            ours = rounds(read_file(f), n)
            report.record(
                "warm read",
                "open+read+close self/hostname",
                ours,
                "µs",
                ("hello_ll", hello_read[0]),
                goal="<= 1.5x hello_ll",
            )
            report.record("warm read", "open+read+close on tmpfs", tmpfs_read, "µs")
            report.record(
                "warm read", "open+read+close /hello of hello_ll", hello_read, "µs", ("tmpfs", tmpfs_read[0])
            )
            report.record(
                "warm read",
                "the same hello in pyfuse3",
                hello_py_read,
                "µs",
                ("hello_ll", hello_read[0]),
            )
            report.record(
                "warm read",
                "the same hello in pyfuse3, direct_io",
                hello_dio_read,
                "µs",
                ("hello_ll", hello_read[0]),
            )
            report.record(
                "warm read",
                "self/hostname against pyfuse3 hello, direct_io",
                ours,
                "µs",
                ("hello_pyfuse3 direct_io", hello_dio_read[0]),
            )
            report.record(
                "warm read",
                "stat self/hostname",
                rounds(lambda: os.stat(f), n * 5),
                "µs",
                ("tmpfs", rounds(lambda: os.stat(t), n * 5)[0]),
                goal="<= 1.2x tmpfs",
            )
            ours_pread, tmpfs_pread = pread_vs_tmpfs(f, t, n * 5)
            report.record(
                "warm read",
                "pread on an open fd",
                ours_pread,
                "µs",
                ("tmpfs", tmpfs_pread),
                goal="<= 1.2x tmpfs",
            )
            report.record(
                "warm read",
                "Python open().read()",
                rounds(lambda: f.read_bytes(), n),
                "µs",
                ("tmpfs", rounds(lambda: t.read_bytes(), n)[0]),
            )
            cat_ = rounds(lambda: subprocess.run(["cat", str(f)], stdout=subprocess.DEVNULL), 20, 5)
            report.record(
                "warm read",
                "cat as a process",
                cat_,
                "µs",
                (
                    "tmpfs",
                    rounds(lambda: subprocess.run(["cat", str(t)], stdout=subprocess.DEVNULL), 20, 5)[0],
                ),
            )
            ah = m / "service" / "all_hosts"
            assert len(os.listdir(ah)) == 100
            report.record(
                "warm read",
                "list all_hosts/ (100 units)",
                rounds(lambda: os.listdir(ah), n // 5),
                "µs",
                ("tmpfs", rounds(lambda: os.listdir(shm / "all_hosts"), n // 5)[0]),
            )
        finally:
            shutil.rmtree(shm)
