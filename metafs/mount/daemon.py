"""The mount daemon's life: from a clean mountpoint to a clean exit.

``metafs mount`` starts this daemon in its own session and returns once the filesystem
is mounted (the daemon reports "ok" or its error through a pipe); ``--foreground`` runs
it in place for systemd. SIGTERM, SIGINT and ``metafs umount`` unmount cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pyfuse3
import trio

from ..client import AsyncMetadataClient, ClientError, unit_id_of
from . import endpoint, status
from .anchors import Anchors
from .fs import MetaFS
from .inodes import InodeTable
from .mountpoint import FSNAME, MountError, prepare_mountpoint
from .notify import KernelNotifier
from .options import MountOptions
from .status import MountStatus
from .viewcache import ViewCache

log = logging.getLogger("metafs.mount")


async def run(opts: MountOptions, ready: Callable[[str], None]) -> None:
    """Mount and serve until unmounted or signalled; ``ready("ok")`` once mounted."""
    unit = unit_id_of(opts.unit) if opts.unit else None
    if opts.anchors and unit:
        raise MountError("--anchors needs host mode (no --unit): it anchors every unit of the host")
    if opts.anchors:
        try:  # made here: containers given an anchor need it before they start
            os.makedirs(opts.anchors, exist_ok=True)
        except OSError as exc:
            raise MountError(f"--anchors {opts.anchors}: {exc.strerror}") from None
    prepare_mountpoint(opts.mountpoint)
    client = AsyncMetadataClient(opts.servers, opts.token, tls=opts.tls)
    inodes = InodeTable((unit,) if unit else ())
    notifier = KernelNotifier(inodes, host_mode=unit is None)
    cache = ViewCache(
        client,
        notifier,
        host_mode=unit is None,
        fetch_timeout=opts.fetch_timeout,
        poll_wait=opts.poll_wait,
        view_ttl=opts.view_ttl,
        max_bytes=opts.cache_size,
    )
    fs = MetaFS(cache, inodes, notifier, unit, opts.cache_timeout)
    unreachable = ""
    try:
        with trio.fail_after(opts.fetch_timeout):
            if unit is None:
                await cache.load_units()
            else:  # no data yet (views are fetched on first access): the token is tried
                await client.request("HEAD", f"/v1/view/{quote(unit, safe='')}/revision", ok=(200, 404))
    except ClientError as exc:
        if exc.status in (401, 403):  # a configuration error, not a boot-order one
            raise MountError(
                f"the server refused the token ({exc}): give one with --token, --token-file,"
                " $METAFS_TOKEN or $METAFS_TOKEN_FILE"
            ) from None
        unreachable = str(exc)
    except trio.TooSlowError:
        unreachable = f"no answer within {opts.fetch_timeout:g}s"
    if unreachable:
        log.warning("server not reachable (%s); starting anyway, retrying in the background", unreachable)
    # resolve paths now: once mounted, a path through the mount is answered by this very
    # thread, so nothing here may touch it synchronously
    anchors = Anchors(opts.anchors, opts.mountpoint) if opts.anchors else None
    where = status.resolve(opts.mountpoint)
    status_path = Path(opts.status_socket) if opts.status_socket else status.socket_path(where)
    options = set(pyfuse3.default_options)
    options |= {f"fsname={FSNAME}", f"subtype={FSNAME}", "ro", "allow_other", "nosuid", "nodev", "noatime"}
    try:
        pyfuse3.init(fs, opts.mountpoint, options)
    except RuntimeError as exc:
        raise MountError(f"{opts.mountpoint}: mount failed: {exc}") from None
    notifier.live = True
    log.info(
        "mounted %s (%s) from %s", opts.mountpoint, f"unit {unit}" if unit else "host mode", opts.servers
    )
    started = time.time()

    def now() -> MountStatus:
        stale = cache.stale_since
        return MountStatus(
            mountpoint=where,
            unit=unit,
            servers=client.roots,
            server=client.current,
            stale=stale is not None,
            stale_seconds=time.monotonic() - stale if stale is not None else 0.0,
            last_error=cache.stats.last_error,
            revision=cache.index,
            last_change=cache.stats.last_change,
            views_cached=len(cache.views),
            views_bytes=cache.size,
            evictions=cache.stats.evictions,
            inodes=len(inodes),
            units_listed=len(cache.units.children),
            fetches=cache.stats.fetches,
            fetch_errors=cache.stats.fetch_errors,
            watch_answers=cache.stats.watch_answers,
            invalidations=notifier.invalidations,
            pid=os.getpid(),
            started=started,
            rss_bytes=status.rss_bytes(),
        )

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            await nursery.start(endpoint.serve, now, status_path, opts.metrics_listen)
            nursery.start_soon(_serve, nursery)
            nursery.start_soon(_signals, nursery, anchors)
            if anchors is not None:
                # the views first: each bind looks its unit up through the mount
                nursery.start_soon(cache.prefetch, sorted(cache.units.children))
                await anchors.sync(cache.units.children)  # stale binds replaced in place
                await anchors.release_stale()
                nursery.start_soon(_keep_anchored, anchors, cache)
            ready(f"ok unreachable: {unreachable}" if unreachable else "ok")
    finally:
        notifier.stop()
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
                await anchors.close()
            nursery.cancel_scope.cancel()
            return


async def _keep_anchored(anchors: Anchors, cache: ViewCache) -> None:
    while True:
        await cache.units_changed()
        await anchors.sync(cache.units.children)
