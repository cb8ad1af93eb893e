"""A short churn soak (``make soak`` runs the long one: tests/support/churn.py): services
of 200 units loaded, read through a host-mode mount, moved between hosts and deleted,
over SQLite and over etcd. No wrong answer; memory, fds and inodes flat after the first
rounds; the daemon's inodes back at the start once the units are gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.churn import churn, flat
from tests.support.etcd_cluster import EtcdCluster

ROUNDS = int(os.environ.get("METAFS_CHURN_ROUNDS", "8"))


@pytest.mark.timeout(300)
def test_churn_over_sqlite(tmp_path: Path) -> None:
    report = churn(ROUNDS, 200, tmp_path)
    assert report["wrong"] == []
    assert flat(report) == []
    assert report["settled"]["inodes"] <= report["start_inodes"] + 5


@pytest.mark.timeout(300)
def test_churn_over_etcd(tmp_path: Path, etcd: EtcdCluster) -> None:
    report = churn(ROUNDS, 200, tmp_path, etcd.url())
    assert report["wrong"] == []
    assert flat(report) == []
