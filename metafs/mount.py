"""Mounting and unmounting: the mount daemon's life, from a clean mountpoint to a clean exit.

``metafs mount`` starts this daemon in its own session and returns once the filesystem
is mounted (the daemon reports "ok" or its error through a pipe); ``--foreground`` runs
it in place for systemd. SIGTERM, SIGINT and ``metafs umount`` unmount cleanly. A dead
mount left by a crashed daemon ("Transport endpoint is not connected") is detached and
replaced.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from . import mountstatus
from .anchors import Anchors, mounts
from .client import AsyncMetadataClient, ClientError, unit_id_of
from .fs import MetaFS
from .viewcache import ViewCache

log = logging.getLogger("metafs.mount")

FSNAME = "metafs"
#: what the kernel answers on a FUSE mount whose daemon is gone
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


class MountError(Exception):
    """The mount could not be made (one line, for stderr)."""


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str
    servers: str
    unit: str | None = None
    token: str | None = None
    fetch_timeout: float = 5.0
    cache_timeout: float = 300.0
    poll_wait: float = 55.0
    anchors: str | None = None  # host mode: keep ANCHORS/<unit> bound (see anchors.py)
    status_socket: str | None = None  # default: mountstatus.socket_path(mountpoint)
    metrics_listen: tuple[str, int] | None = None  # also serve /metrics on this TCP address


def fusermount() -> str:
    exe = shutil.which("fusermount3") or shutil.which("fusermount")
    if exe is None:
        raise MountError("fusermount3 not found: install the fuse3 package")
    return exe


def mount_fstype(mountpoint: str) -> str | None:
    """The filesystem type mounted at ``mountpoint`` (last mount wins), or None."""
    return mounts().get(mountstatus.resolve(mountpoint))  # never touching the mount itself


def prepare_mountpoint(mountpoint: str) -> None:
    """Make ``mountpoint`` ready: detach a dead FUSE mount, refuse a live metafs one."""
    if is_dead(mountpoint):
        log.warning("%s: dead mount from an earlier daemon; detaching it", mountpoint)
        subprocess.run([fusermount(), "-uz", mountpoint], check=False, capture_output=True)
        if is_dead(mountpoint):
            raise MountError(f"{mountpoint}: cannot detach the dead mount left there")
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: not a directory (or does not exist)")
    if mount_fstype(mountpoint) == f"fuse.{FSNAME}":
        raise MountError(f"{mountpoint}: a metafs filesystem is already mounted here")


def _stop_daemon(mountpoint: str, timeout: float = 10.0) -> bool:
    """SIGTERM the daemon serving ``mountpoint``; True once the mount is gone."""
    try:
        pid = int(mountstatus.read(mountpoint, timeout=2)["pid"])
        os.kill(pid, signal.SIGTERM)
    except (OSError, KeyError, ValueError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mount_fstype(mountpoint) is None:
            return True
        time.sleep(0.05)
    return False


def is_dead(mountpoint: str) -> bool:
    """A FUSE mount whose daemon is gone. ``statfs`` always reaches the daemon (``stat``
    of the root may be answered from the kernel's cache)."""
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno in DEAD
    return False


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount a metafs mount (``lazy``: detach now even if busy). A live daemon is asked
    to stop (SIGTERM, found through its status socket): it releases its anchors' binds
    first, which an unmount from outside would leave behind."""
    dead = is_dead(mountpoint)
    fstype = mount_fstype(mountpoint)
    if fstype is None or not fstype.startswith("fuse"):
        raise MountError(f"{mountpoint}: not a metafs mount")
    if not dead and _stop_daemon(mountpoint):
        return
    args = [fusermount(), "-uz" if lazy or dead else "-u", mountpoint]
    r = subprocess.run(args, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
        raise MountError(f"{mountpoint}: {msg} (try --lazy)")


async def run(opts: MountOptions, ready: Callable[[str], None]) -> None:
    """Mount and serve until unmounted or signalled; ``ready("ok")`` once mounted."""
    unit = unit_id_of(opts.unit) if opts.unit else None
    if opts.anchors and unit:
        raise MountError("--anchors needs host mode (no --unit): it anchors every unit of the host")
    if opts.anchors and not os.path.isdir(opts.anchors):
        raise MountError(f"--anchors {opts.anchors}: not a directory")
    prepare_mountpoint(opts.mountpoint)
    client = AsyncMetadataClient(opts.servers, opts.token)
    cache = ViewCache(
        client, host_mode=unit is None, fetch_timeout=opts.fetch_timeout, poll_wait=opts.poll_wait
    )
    fs = MetaFS(cache, unit, opts.cache_timeout)
    try:
        with trio.fail_after(opts.fetch_timeout):
            if unit is None:
                await cache.load_units()
            else:  # no data yet (views are fetched on first access): open the connection
                await client.request("GET", "/healthz")
    except (ClientError, trio.TooSlowError) as exc:
        log.warning("server not reachable (%s); starting anyway, retrying in the background", exc)
    # resolve paths now: once mounted, a path through the mount is answered by this very
    # thread, so nothing here may touch it synchronously
    anchors = Anchors(opts.anchors, opts.mountpoint) if opts.anchors else None
    where = mountstatus.resolve(opts.mountpoint)
    status_path = Path(opts.status_socket) if opts.status_socket else mountstatus.socket_path(where)
    options = set(pyfuse3.default_options)
    options |= {f"fsname={FSNAME}", f"subtype={FSNAME}", "ro", "allow_other", "nosuid", "nodev", "noatime"}
    try:
        pyfuse3.init(fs, opts.mountpoint, options)
    except RuntimeError as exc:
        raise MountError(f"{opts.mountpoint}: mount failed: {exc}") from None
    fs.live = True
    log.info(
        "mounted %s (%s) from %s", opts.mountpoint, f"unit {unit}" if unit else "host mode", opts.servers
    )
    started = time.time()

    def status() -> dict[str, Any]:
        stale = cache.stale_since
        return {
            "mountpoint": where,
            "unit": unit,
            "servers": client.roots,
            "server": client.current,
            "stale": stale is not None,
            "stale_seconds": time.monotonic() - stale if stale is not None else 0.0,
            "last_error": cache.stats.last_error,
            "revision": cache.index,
            "last_change": cache.stats.last_change,
            "views_cached": len(cache.views),
            "units_listed": len(cache.units.children),
            "fetches": cache.stats.fetches,
            "fetch_errors": cache.stats.fetch_errors,
            "watch_answers": cache.stats.watch_answers,
            "invalidations": cache.stats.invalidations,
            "pid": os.getpid(),
            "started": started,
            "rss_bytes": mountstatus.rss_bytes(),
        }

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            await nursery.start(mountstatus.serve, status, status_path, opts.metrics_listen)
            nursery.start_soon(_serve, nursery)
            nursery.start_soon(_signals, nursery, anchors)
            if anchors is not None:
                await anchors.release_stale()
                await anchors.sync(cache.units.children)
                nursery.start_soon(_keep_anchored, anchors, cache)
            ready("ok")
    finally:
        fs.stop_invalidator()
        pyfuse3.close(unmount=True)
        await client.aclose()
        log.info("unmounted %s", opts.mountpoint)


async def _serve(nursery: trio.Nursery) -> None:
    await pyfuse3.main()  # returns when the filesystem is unmounted from outside
    nursery.cancel_scope.cancel()


async def _signals(nursery: trio.Nursery, anchors: Anchors | None) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("%s: unmounting", signal.Signals(sig).name)
            if anchors is not None:  # while the filesystem still answers the lookups
                await anchors.release_all()
            nursery.cancel_scope.cancel()
            return


async def _keep_anchored(anchors: Anchors, cache: ViewCache) -> None:
    while True:
        await cache.units_changed()
        await anchors.sync(cache.units.children)


def default_log_file(mountpoint: str) -> Path:
    base = Path("/var/log/metafs") if os.geteuid() == 0 else Path.home() / ".cache" / "metafs"
    name = os.path.realpath(mountpoint).strip("/").replace("/", "-") or "root"
    return base / f"mount-{name}.log"
