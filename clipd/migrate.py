"""``clipd migrate`` / ``restore``: copy every clip object of a bucket into the local tree.

The listing is planned (pure :func:`plan_migration`), then a pool of threads fetches the
objects (:mod:`clipd.migrate_fetch`: presigned GET, hash while writing a hidden temp
file, verify) and the main thread commits them in batches: one ``syncfs`` for all temp
files of the batch, the renames, one fsync per touched folder, then the index rows
(SHA-256 from the download, identity from ``lstat`` after the rename: no second hash).

Idempotent: a clip already present with the object's size and hash is left untouched.
Resumable: a kill -9 leaves at most hidden ``*.migrate.tmp`` files, which the next run
truncates and rewrites (the daemon's stale temp-file cleanup removes any others).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from clipd.checks import identity_of
from clipd.config import Config
from clipd.errors import ClipdError, StorageError
from clipd.index import ClipRecord, Index, index_path
from clipd.migrate_fetch import Fetcher, Item, Result, Status
from clipd.storage.local import fsync_dir
from clipd.storage.s3 import ObjectInfo, list_objects, make_client
from clipd.storage.s3keys import NotClip, parse_s3_url, plan_key

__all__ = ["MigratePlan", "Summary", "list_source", "plan_migration", "run_migrate", "source_of"]

logger = logging.getLogger(__name__)
# A batch bounds what a crash throws away and how long renames wait for the flush.
_BATCH_FILES = 256
_BATCH_BYTES = 512 * 1024 * 1024
_LOG_EVERY_S = 5.0
_TTY_EVERY_S = 0.2
_MB = 1e6


@dataclass(frozen=True, slots=True)
class MigratePlan:
    """Clips to fetch, and (key, reason) of listed objects that never enter the tree."""

    items: tuple[Item, ...]
    not_clips: tuple[tuple[str, str], ...]


@dataclass
class Summary:
    """Counts of one run; ``as_dict`` is the ``--json`` output."""

    moved: int = 0
    present: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    not_clips: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "moved": self.moved,
            "skipped": self.present,
            "failed": self.failed,
            "not_clips": len(self.not_clips),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_second": round(self.bytes / _MB / self.seconds, 1) if self.seconds else 0.0,
            "not_clip_objects": [{"key": k, "reason": r} for k, r in self.not_clips],
            "failures": [{"key": k, "reason": r} for k, r in self.failures],
        }


def plan_migration(
    listed: list[ObjectInfo], prefix: str, extensions: frozenset[str], max_bytes: int
) -> MigratePlan:
    """Split a listing into clips to fetch and objects that never enter the tree; pure."""
    items: list[Item] = []
    not_clips: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    for info in sorted(listed, key=lambda i: i.key):
        plan = plan_key(
            info.key, prefix, info.size_bytes, info.last_modified_s, extensions, max_bytes
        )
        if isinstance(plan, NotClip):
            if plan is not NotClip.FOLDER:
                not_clips.append((info.key, plan.value))
            continue
        owner = owners.setdefault(plan.name.job_id, info.key)
        if owner != info.key:
            not_clips.append((info.key, f"job id {plan.name.job_id} already taken by {owner}"))
            continue
        items.append(Item(info, plan))
    return MigratePlan(tuple(items), tuple(not_clips))


# -- the blocking shell ----------------------------------------------------------------


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` with syncfs(2) (sync(2) where missing)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class _Progress:
    """A bar on a terminal (bytes and objects), a log line every few seconds otherwise."""

    def __init__(self, total_files: int, total_bytes: int, stream: TextIO) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.size = 0
        self.tty = stream.isatty()
        self.stream = stream
        self.started = self.last = time.monotonic()

    def add(self, size: int) -> None:
        self.files += 1
        self.size += size
        now = time.monotonic()
        every = _TTY_EVERY_S if self.tty else _LOG_EVERY_S
        if now - self.last < every and self.files < self.total_files:
            return
        self.last = now
        rate = self.size / _MB / max(now - self.started, 1e-6)
        line = (
            f"{self.files}/{self.total_files} objects, {self.size / _MB:.1f}/"
            f"{self.total_bytes / _MB:.1f} MB, {rate:.1f} MB/s"
        )
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        else:
            logger.info("progress: %s", line)

    def close(self) -> None:
        if self.tty and self.files:
            self.stream.write("\n")


def _commit(index: Index, clips_dir: Path, batch: list[Result], backed_up: bool) -> None:
    """Make a batch of verified temp files durable clips, then record them."""
    if not batch:
        return
    _syncfs(clips_dir)
    folders = {clips_dir}
    rows: list[ClipRecord] = []
    now = time.time()
    for result in batch:
        assert result.tmp is not None
        dest = clips_dir / result.item.plan.local_relpath
        try:
            # link() refuses an existing name where rename() would replace it: a clip
            # that appeared there since the listing is never overwritten.
            os.link(result.tmp, dest)
        except FileExistsError:
            logger.warning(
                "%s appeared while migrating; left as it is (not overwritten)",
                result.item.plan.local_relpath,
            )
            continue
        finally:
            os.unlink(result.tmp)
        folders.add(dest.parent)
        rows.append(_row(result, dest, now, backed_up))
    for folder in folders:
        fsync_dir(folder)
    index.upsert_many(rows)


def _row(result: Result, dest: Path, now: float, backed_up: bool) -> ClipRecord:
    plan = result.item.plan
    identity = identity_of(os.lstat(dest))
    return ClipRecord(
        job_id=plan.name.job_id,
        relpath=plan.local_relpath,
        day=plan.day,
        title=plan.name.title,
        ext=plan.name.ext,
        size_bytes=identity.size_bytes,
        mtime_ns=identity.mtime_ns,
        ctime_ns=identity.ctime_ns,
        inode=identity.inode,
        sha256=result.sha256,
        ingested_at=now,
        verified_at=now,
        backed_up=backed_up,
    )


def source_of(url: str, config: Config, connections: int) -> tuple[Any, str, str]:
    """A boto3 client, bucket and prefix for ``--from s3://BUCKET[/PREFIX]``."""
    try:
        bucket, prefix = parse_s3_url(url)
    except ValueError as exc:
        raise ClipdError(f"--from: {exc}") from exc
    return make_client(config.s3, max_pool_connections=connections), bucket, prefix


def list_source(client: Any, bucket: str, prefix: str, config: Config) -> MigratePlan:
    """List the bucket and plan it; StorageError when the listing fails. Blocks."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        listed = list(list_objects(client, bucket, prefix))
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"listing s3://{bucket}/{prefix}: {exc}") from exc
    return plan_migration(
        listed, prefix, frozenset(config.storage.extensions), config.storage.max_bytes
    )


def run_migrate(args: argparse.Namespace, config: Config) -> Summary:
    """List, fetch, verify and commit; blocks. The summary says what happened."""
    started = time.monotonic()
    client, bucket, prefix = source_of(args.source, config, args.concurrency + 4)
    clips_dir = config.clips_dir
    (clips_dir / ".clipd").mkdir(parents=True, exist_ok=True)
    plan = list_source(client, bucket, prefix, config)
    summary = Summary(not_clips=list(plan.not_clips))
    for key, reason in plan.not_clips:
        logger.warning("not a clip, skipped: s3://%s/%s: %s", bucket, key, reason)
    present = _present(clips_dir, plan.items, create=not args.dry_run)
    if args.dry_run:
        for item in plan.items:
            print(
                f"{'present' if item.plan.local_relpath in present else 'would move'}: "
                f"{item.info.key} -> {item.plan.local_relpath}"
            )
        summary.seconds = time.monotonic() - started
        return summary
    index = Index(index_path(clips_dir))
    fetcher = Fetcher(client, bucket, clips_dir, {})
    try:
        fetcher.rows = {r.relpath: r for r in index.records()}
        progress = _Progress(
            len(plan.items), sum(i.info.size_bytes for i in plan.items), sys.stderr
        )
        backed_up = bucket == config.backup.s3_bucket
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="clipd-migrate") as pool:
            # Largest first: a big object started last would run alone at the end.
            ordered = sorted(plan.items, key=lambda i: -i.info.size_bytes)
            futures = [
                pool.submit(fetcher.fetch, item, item.plan.local_relpath in present)
                for item in ordered
            ]
            _collect(
                as_completed(futures),
                summary,
                progress,
                lambda batch: _commit(index, clips_dir, batch, backed_up),
                index,
                clips_dir,
            )
        progress.close()
    finally:
        fetcher.close()
        index.close()
    summary.seconds = time.monotonic() - started
    return summary


def _present(clips_dir: Path, items: tuple[Item, ...], create: bool) -> set[str]:
    """Relpaths of the plan already taken by a file; creates the folders if ``create``."""
    present: set[str] = set()
    for folder in sorted({Path(item.plan.local_relpath).parent for item in items}):
        if create:
            (clips_dir / folder).mkdir(parents=True, exist_ok=True)
        try:
            names = os.listdir(clips_dir / folder)
        except FileNotFoundError:
            continue
        present.update((folder / name).as_posix() for name in names)
    return present


def _collect(
    done: Iterator[Future[Result]],
    summary: Summary,
    progress: _Progress,
    commit: Callable[[list[Result]], None],
    index: Index,
    clips_dir: Path,
) -> None:
    batch: list[Result] = []
    batch_bytes = 0
    for future in done:
        result = future.result()
        key = result.item.info.key
        progress.add(result.item.info.size_bytes)
        if result.status is Status.MOVED:
            batch.append(result)
            batch_bytes += result.item.info.size_bytes
            summary.moved += 1
            summary.bytes += result.item.info.size_bytes
        elif result.status is Status.PRESENT:
            summary.present += 1
            _record_present(index, clips_dir, result)
        elif result.status is Status.NOT_CLIP:
            summary.not_clips.append((key, result.reason))
            logger.warning("not a clip, skipped: %s: %s", key, result.reason)
        else:
            summary.failed += 1
            summary.failures.append((key, result.reason))
            logger.error("failed: %s: %s", key, result.reason)
        if len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
            commit(batch)
            batch, batch_bytes = [], 0
    commit(batch)


def _record_present(index: Index, clips_dir: Path, result: Result) -> None:
    """A verified clip already in the tree: make sure the index has its row."""
    row = index.get(result.item.plan.name.job_id)
    dest = clips_dir / result.item.plan.local_relpath
    if (
        row is not None
        and row.relpath == result.item.plan.local_relpath
        and row.identity == identity_of(os.lstat(dest))
    ):
        return
    index.upsert(_row(result, dest, time.time(), row.backed_up if row else False))
