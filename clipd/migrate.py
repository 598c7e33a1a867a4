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
import gc
import heapq
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from clipd.checks import identity_of
from clipd.config import Config
from clipd.errors import ClipdError, StorageError
from clipd.index import Index, index_path
from clipd.migrate_fetch import Fetcher, Item, Result, Status
from clipd.record import ClipRecord, new_record
from clipd.storage.local import fsync_dir
from clipd.storage.s3 import ObjectInfo, list_objects, list_pages, make_client
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
    return _Planner(prefix, extensions, max_bytes).add(listed)


class _Planner:
    """:func:`plan_migration` one listing page at a time (pages come in key order).

    The first key (in key order) to claim a job id keeps it, across pages too."""

    def __init__(self, prefix: str, extensions: frozenset[str], max_bytes: int) -> None:
        self.prefix, self.extensions, self.max_bytes = prefix, extensions, max_bytes
        self.owners: dict[str, str] = {}

    def add(self, listed: Iterable[ObjectInfo]) -> MigratePlan:
        items: list[Item] = []
        not_clips: list[tuple[str, str]] = []
        for info in sorted(listed, key=lambda i: i.key):
            plan = plan_key(
                info.key,
                self.prefix,
                info.size_bytes,
                info.last_modified_s,
                self.extensions,
                self.max_bytes,
            )
            if isinstance(plan, NotClip):
                if plan is not NotClip.FOLDER:
                    not_clips.append((info.key, plan.value))
                continue
            owner = self.owners.setdefault(plan.name.job_id, info.key)
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
    return new_record(
        plan.name, plan.local_relpath, plan.day, identity, result.sha256, now, backed_up=backed_up
    )


def source_of(url: str, config: Config, connections: int) -> tuple[Any, str, str]:
    """A botocore S3 client, bucket and prefix for ``--from s3://BUCKET[/PREFIX]``."""
    try:
        bucket, prefix = parse_s3_url(url)
    except ValueError as exc:
        raise ClipdError(f"--from: {exc}") from exc
    client = make_client(config.s3, max_pool_connections=connections, transfers=False)
    return client, bucket, prefix


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


# The first listing page is short so that downloads start while the rest is listed.
_FIRST_PAGE_KEYS = 100


def run_migrate(args: argparse.Namespace, config: Config) -> Summary:
    """List, fetch, verify and commit; blocks. The summary says what happened.

    Fetching starts with the first listing page: each page's clips are queued (largest
    first) as soon as it is planned, while the next page is listed."""
    started = time.monotonic()
    with _gc_paused_for_start_up() as start_up_done:
        client, bucket, prefix = source_of(args.source, config, args.concurrency + 4)
        start_up_done()
        return _migrate(args, config, client, bucket, prefix, started)


@contextmanager
def _gc_paused_for_start_up() -> Iterator[Callable[[], None]]:
    """No cyclic collection while boto3 is imported and its client built.

    Those ~100,000 objects (modules, service model, endpoint rules) live as long as the
    run; the collector would scan them again and again while they pile up (~60 ms of
    CPU before the first GET, when nothing else runs). The callback sets them aside
    (``gc.freeze``) and resumes collection; leaving the block puts them back.
    """
    enabled = gc.isenabled()
    resumed = False

    def resume() -> None:
        nonlocal resumed
        if not resumed:
            resumed = True
            gc.freeze()
            if enabled:
                gc.enable()

    gc.disable()
    try:
        yield resume
    finally:
        resume()
        gc.unfreeze()


def _migrate(
    args: argparse.Namespace,
    config: Config,
    client: Any,
    bucket: str,
    prefix: str,
    started: float,
) -> Summary:
    clips_dir = config.clips_dir
    (clips_dir / ".clipd").mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        plan = list_source(client, bucket, prefix, config)
        summary = Summary(not_clips=list(plan.not_clips))
        for key, reason in plan.not_clips:
            logger.warning("not a clip, skipped: s3://%s/%s: %s", bucket, key, reason)
        present = _Folders(clips_dir, create=False).present(plan.items)
        for item in plan.items:
            print(
                f"{'present' if item.plan.local_relpath in present else 'would move'}: "
                f"{item.info.key} -> {item.plan.local_relpath}"
            )
        summary.seconds = time.monotonic() - started
        return summary
    summary = Summary()
    listing_error: StorageError | None = None
    index = Index(index_path(clips_dir))
    fetcher = Fetcher(client, bucket, clips_dir, {})
    try:
        fetcher.rows = {r.relpath: r for r in index.records()}
        progress = _Progress(0, 0, sys.stderr)
        backed_up = bucket == config.backup.s3_bucket
        work = _WorkQueue()
        results: queue.SimpleQueue[Result] = queue.SimpleQueue()

        def worker() -> None:
            while (job := work.get()) is not None:
                try:
                    result = fetcher.fetch(*job)
                except Exception as exc:  # a bug must not leave the collector waiting
                    logger.exception("fetching %s failed", job[0].info.key)
                    result = Result(job[0], Status.FAILED, f"{type(exc).__name__}: {exc}")
                results.put(result)

        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="clipd-migrate") as pool:
            workers = [pool.submit(worker) for _ in range(args.concurrency)]
            try:
                queued, listing_error = _list_into(work, client, bucket, prefix, config, summary)
            finally:
                work.close()
            progress.total_files, progress.total_bytes = work.totals()
            try:
                _collect(
                    (results.get() for _ in range(queued)),
                    summary,
                    progress,
                    lambda batch: _commit(index, clips_dir, batch, backed_up),
                    index,
                    clips_dir,
                )
            except BaseException:
                work.cancel()  # stop at the objects being fetched now
                raise
            for done in workers:
                done.result()
        progress.close()
    finally:
        fetcher.close()
        index.close()
    if listing_error is not None:
        # What was listed before the failure is fetched and committed; the rest is not.
        raise listing_error
    summary.seconds = time.monotonic() - started
    return summary


def _list_into(
    work: _WorkQueue, client: Any, bucket: str, prefix: str, config: Config, summary: Summary
) -> tuple[int, StorageError | None]:
    """List the bucket page by page, queueing each page's clips at once.

    Returns how many were queued, and the StorageError of a listing that failed part
    way (the objects queued before it are still fetched and committed)."""
    from botocore.exceptions import BotoCoreError, ClientError

    planner = _Planner(prefix, frozenset(config.storage.extensions), config.storage.max_bytes)
    folders = _Folders(config.clips_dir, create=True)
    queued = 0
    try:
        for page in list_pages(client, bucket, prefix, first_page=_FIRST_PAGE_KEYS):
            plan = planner.add(page)
            for key, reason in plan.not_clips:
                logger.warning("not a clip, skipped: s3://%s/%s: %s", bucket, key, reason)
            summary.not_clips.extend(plan.not_clips)
            present = folders.present(plan.items)
            for item in plan.items:
                work.put(item, item.plan.local_relpath in present)
            queued += len(plan.items)
    except (BotoCoreError, ClientError) as exc:
        return queued, StorageError(f"listing s3://{bucket}/{prefix}: {exc}")
    return queued, None


class _WorkQueue:
    """Objects to fetch, largest first (a big one started last would run alone at the
    end); ``get`` returns None once closed and empty. Thread-safe."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Item, bool]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._count = self._bytes = 0

    def put(self, item: Item, present: bool) -> None:
        with self._cond:
            heapq.heappush(self._heap, (-item.info.size_bytes, self._count, item, present))
            self._count += 1
            self._bytes += item.info.size_bytes
            self._cond.notify()

    def totals(self) -> tuple[int, int]:
        """Objects and bytes queued so far."""
        with self._cond:
            return self._count, self._bytes

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Close, dropping what no worker has taken yet."""
        with self._cond:
            self._heap.clear()
        self.close()

    def get(self) -> tuple[Item, bool] | None:
        with self._cond:
            while not self._heap and not self._closed:
                self._cond.wait()
            if not self._heap:
                return None
            _, _, item, present = heapq.heappop(self._heap)
            return item, present


class _Folders:
    """Which planned relpaths a file already takes: one listing per day folder (not a
    lookup per object, which contends on the folder's lock); creates them if asked."""

    def __init__(self, clips_dir: Path, create: bool) -> None:
        self.clips_dir, self.create = clips_dir, create
        self.listed: set[Path] = set()
        self.taken: set[str] = set()

    def present(self, items: Iterable[Item]) -> set[str]:
        for folder in sorted({Path(item.plan.local_relpath).parent for item in items}):
            if folder in self.listed:
                continue
            self.listed.add(folder)
            if self.create:
                (self.clips_dir / folder).mkdir(parents=True, exist_ok=True)
            try:
                names = os.listdir(self.clips_dir / folder)
            except FileNotFoundError:
                continue
            self.taken.update((folder / name).as_posix() for name in names)
        return self.taken


def _collect(
    done: Iterator[Result],
    summary: Summary,
    progress: _Progress,
    commit: Callable[[list[Result]], None],
    index: Index,
    clips_dir: Path,
) -> None:
    batch: list[Result] = []
    batch_bytes = 0
    for result in done:
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
