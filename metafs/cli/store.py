"""The commands that keep a store over time: ``backup`` (through the server, online) and
``restore`` (into an empty store, offline; SQLite's backup into etcd is the way to
several servers)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from .. import backup
from ..store.etcd_gateway import EtcdAccess
from .options import Failure, Subparsers, add_command, client, client_options, etcd_access, etcd_options

#: records per etcd transaction in a restore (etcd refuses more than --max-txn-ops, 128 by
#: default); SQLite takes the whole backup in one transaction
ETCD_BATCH = 100


def cmd_backup(args: argparse.Namespace) -> int:
    """Stream the backup into a temporary file beside FILE (or in memory up to 64 MB, for
    ``-``), verify it whole, then move it into place (or copy it to stdout)."""
    to_stdout = args.file == "-"
    where = Path(args.file).resolve().parent if not to_stdout else None
    if where is not None and not where.is_dir():
        raise Failure(f"no such directory: {where}")
    with (
        tempfile.SpooledTemporaryFile(64 << 20)
        if to_stdout
        else tempfile.NamedTemporaryFile(dir=where, prefix=".metafs-backup-", delete=False)
    ) as out:
        try:
            with client(args) as c:
                c.backup(out)
            out.flush()
            out.seek(0)
            try:
                done = backup.read(out)
            except backup.BackupError as exc:
                raise Failure(f"the server's backup is not whole: {exc}") from None
            if to_stdout:
                out.seek(0)
                while chunk := out.read(1 << 20):
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            else:
                os.fsync(out.fileno())
                os.replace(out.name, args.file)
        except BaseException:
            if not to_stdout:
                Path(out.name).unlink(missing_ok=True)
            raise
    c_ = done.counts
    print(
        f"backup of store {done.identity} at revision {done.revision}: {c_.records} records"
        f" ({c_.units} units, {c_.tokens} tokens) -> {args.file}",
        file=sys.stderr if to_stdout else sys.stdout,
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    import anyio

    try:
        if args.file == "-":
            done = backup.read(sys.stdin.buffer)
        else:
            with open(args.file, "rb") as f:
                done = backup.read(f)
    except OSError as exc:
        raise Failure(f"cannot read {args.file}: {exc.strerror}") from None
    except backup.BackupError as exc:
        raise Failure(f"{args.file} is refused, nothing was written: {exc}") from None
    identity, revision = anyio.run(_restore, args.store, done, args.batch, etcd_access(args))
    c_ = done.counts
    print(
        f"restored {c_.records} records ({c_.units} units, {c_.tokens} tokens) of the backup at"
        f" revision {done.revision} into {args.store}: a new store {identity}, revision {revision}"
    )
    return 0


async def _restore(url: str, done: backup.Backup, batch: int, etcd: EtcdAccess) -> tuple[str, int]:
    from ..store import Put, StoreError, open_store

    try:
        store = open_store(url, etcd=etcd)
    except (StoreError, ValueError) as exc:
        raise Failure(f"{exc}") from None
    try:
        async with store.running():
            async with store.snapshot() as snap, contextlib.aclosing(snap.scan()) as batches:
                async for found in batches:
                    first = found[0].key
                    raise Failure(
                        f"{url} already holds records (the first: {first}): restore into an"
                        " empty store (a new SQLite file, an unused etcd namespace)"
                    )
            ops = [Put(k, v, at) for k, v, at in done.items]
            step = len(ops) or 1 if url.startswith("sqlite:") else batch
            revision = 0
            for at in range(0, len(ops), step):
                revision = await store.commit(ops[at : at + step])
            return await store.renew_identity(), revision or await store.revision()
    except StoreError as exc:
        raise Failure(f"{exc} (what was written stays: empty the store before trying again)") from None
    finally:
        await store.close()


def add_commands(sub: Subparsers) -> None:
    p = add_command(
        sub, "backup", cmd_backup, "take a consistent backup of the whole store through the server (operator)"
    )
    p.add_argument(
        "file", metavar="FILE", help="where to write it (replaced whole, once verified); - for stdout"
    )
    client_options(p)

    p = add_command(sub, "restore", cmd_restore, "restore a backup into an empty store (offline)")
    p.add_argument("file", metavar="FILE", help="a file written by metafs backup; - for stdin")
    p.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="sqlite:///path/new.db or etcd://HOST:PORT[,...][/namespace]: must hold no records",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=ETCD_BATCH,
        metavar="N",
        help="records per etcd transaction (at most etcd's --max-txn-ops; default %(default)s);"
        " SQLite takes all in one",
    )
    etcd_options(p)
