"""Eviction: delete a retention plan's files from a local tree, crash-safe and batched.

Deleting is crash-safe and batched: mark a batch of rows ``deleting`` in one
transaction, unlink the files (one fsync per day folder, not per file), then drop the
rows in one transaction. A crash in between leaves rows marked ``deleting`` that
:func:`clipd.removal.finish_pending` completes at the next start. A file another
process holds with an flock (a download, a copy) is skipped this round.

These are the blocking parts: :func:`apply_blocking` runs them all from one thread (the
``clipd cleanup`` command); :func:`clipd.cleanup.apply_plan` drives the same steps from
the event loop. Nothing here imports asyncio, so the CLI does not pay for it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from clipd.index import Index
from clipd.naming import is_day_folder
from clipd.retention import Deletion, Plan

__all__ = [
    "CHUNK",
    "Applied",
    "Unlinked",
    "applied",
    "apply_blocking",
    "ids",
    "log_deletions",
    "remove_empty_days",
    "unlink_local",
]

logger = logging.getLogger(__name__)
CHUNK = 512  # deletions per writer-thread hop, so ingest never waits long


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a plan did."""

    deleted: tuple[Deletion, ...]
    skipped: tuple[Deletion, ...]  # held with an flock by another process
    gone: tuple[Deletion, ...]  # already missing; their rows were dropped
    failed: tuple[Deletion, ...]  # unlink failed (permissions…); kept
    dirs_removed: tuple[str, ...]

    @property
    def freed_bytes(self) -> int:
        return sum(d.size_bytes for d in self.deleted)


@dataclass(frozen=True, slots=True)
class Unlinked:
    """What unlinking a batch did, sorted by outcome; lists, so batches can be merged."""

    deleted: list[Deletion]
    skipped: list[Deletion]
    gone: list[Deletion]
    failed: list[Deletion]

    def extend(self, other: Unlinked) -> None:
        """Append ``other``'s outcomes to this one's."""
        self.deleted.extend(other.deleted)
        self.skipped.extend(other.skipped)
        self.gone.extend(other.gone)
        self.failed.extend(other.failed)


def unlink_local(clips_dir: Path, deletions: Sequence[Deletion]) -> Unlinked:
    """Unlink files, skipping flock-held ones; one fsync per touched day folder."""
    return _finish_unlinks(_start_unlinks(clips_dir, deletions, None))


_DayResult = tuple[int | None, Unlinked]


def _start_unlinks(
    clips_dir: Path, deletions: Sequence[Deletion], pool: Executor | None
) -> list[Future[_DayResult]]:
    """Start unlinking a batch, one task per day folder (done at once without a pool).

    Each folder is worked on in directory order (what ``find -delete`` does): unlinking
    in the filesystem's own order touches far fewer directory and inode-table blocks
    than the plan's age order, which hops between folders. With a ``pool`` the folders
    go in parallel: an unlink may wait on the device (a filesystem mounted with
    ``discard`` trims the freed blocks synchronously), and those waits then overlap.
    """
    by_day: dict[str, dict[str, Deletion]] = {}
    for deletion in deletions:
        day, _, name = deletion.relpath.partition("/")
        by_day.setdefault(day, {})[name] = deletion
    if pool is not None:
        return [pool.submit(_unlink_day, clips_dir, day, by_day[day]) for day in sorted(by_day)]
    done: list[Future[_DayResult]] = []
    try:
        for day in sorted(by_day):
            future: Future[_DayResult] = Future()
            future.set_result(_unlink_day(clips_dir, day, by_day[day]))
            done.append(future)
    except BaseException:
        _close_all(done)
        raise
    return done


def _finish_unlinks(futures: Sequence[Future[_DayResult]]) -> Unlinked:
    """Wait for a batch's folders, fsync each (after all of its unlinks), merge outcomes.

    Raises the first folder's OSError (after closing every folder)."""
    wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            _close_all(futures)
            raise error
    out = Unlinked([], [], [], [])
    results = [f.result() for f in futures]
    try:
        # fsync every folder only after all unlinks: the first fsync commits the
        # filesystem journal for all of them, the rest then find nothing left to do.
        for dir_fd, _ in results:
            if dir_fd is not None:
                os.fsync(dir_fd)
    finally:
        _close_all(futures)
    for _, part in results:
        out.extend(part)
    return out


def _close_all(futures: Iterable[Future[_DayResult]]) -> None:
    for future in futures:
        if future.done() and future.exception() is None:
            dir_fd = future.result()[0]
            if dir_fd is not None:
                os.close(dir_fd)


def _unlink_day(
    clips_dir: Path, day: str, wanted: dict[str, Deletion]
) -> tuple[int | None, Unlinked]:
    """Unlink ``wanted`` in one day folder; returns its open fd (to fsync) and the outcome."""
    out = Unlinked([], [], [], [])
    try:
        dir_fd = os.open(clips_dir / day, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        out.gone.extend(wanted.values())
        return None, out
    try:
        order = {name: n for n, name in enumerate(os.listdir(dir_fd))}
        names = sorted(wanted, key=lambda name: order.get(name, -1))
        _unlink_in(dir_fd, names, wanted, out)
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd, out


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _unlink_in(dir_fd: int, names: list[str], wanted: dict[str, Deletion], out: Unlinked) -> None:
    """Unlink ``names`` inside one open folder, each while holding its flock.

    A file another process holds with an flock (a download, a copy) is skipped. Taking
    the lock before the unlink and keeping it until after closes the window in which a
    reader could lock the file between the check and the unlink.
    """
    for name in names:
        deletion = wanted[name]
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info(
                    "skipping %s this round: another process holds a lock on it", deletion.relpath
                )
                out.skipped.append(deletion)
                continue
            else:
                os.unlink(name, dir_fd=dir_fd)
            finally:
                os.close(fd)  # closing drops our own lock
        except FileNotFoundError:
            out.gone.append(deletion)
            continue
        except OSError as exc:
            logger.error("cannot delete %s: %s", deletion.relpath, exc.strerror)
            out.failed.append(deletion)
            continue
        out.deleted.append(deletion)


_FRESH_FOLDER_S = 60.0


def remove_empty_days(
    clips_dir: Path, days: Iterable[str], deletions: Iterable[Deletion]
) -> list[str]:
    """rmdir each day folder that is empty now (a non-empty one is left alone), then
    fsync the tree root once.

    A folder that was empty already (nothing deleted from it) is kept while it is young:
    a writer may have just made it and be about to put its temp file there. One at a
    time: rmdir takes the tree root's lock, threads would only queue on it.
    """
    emptied_now = {d.day for d in deletions}
    wanted = [day for day in days if is_day_folder(day)]
    if not wanted:
        return []
    try:
        root_fd = os.open(clips_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        removed = [d for d in wanted if _remove_day(root_fd, d, keep_young=d not in emptied_now)]
        if removed:
            os.fsync(root_fd)
    finally:
        os.close(root_fd)
    return removed


def _remove_day(root_fd: int, day: str, keep_young: bool) -> bool:
    """rmdir one day folder if it is empty (and, with ``keep_young``, not young)."""
    try:
        if keep_young and time.time() - os.stat(day, dir_fd=root_fd).st_mtime < _FRESH_FOLDER_S:
            return False
        os.rmdir(day, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno not in {errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT}:
            logger.error("cannot remove empty folder %s: %s", day, exc.strerror)
        return False
    return True


def log_deletions(applied: Sequence[Deletion], now: float) -> None:
    """Log one info line per deleted file (path, job, size, age, rule) at ``now``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    for d in applied:
        logger.info(
            "deleted %s (job %s, %d bytes, %.1f h old): %s",
            d.relpath,
            d.job_id or "-",
            d.size_bytes,
            (now - d.mtime_ns / 1e9) / 3600,
            d.reason.value,
        )


def _finish_rows(ix: Index, done: Sequence[str], kept: Sequence[str]) -> None:
    ix.finish_deletions(done, kept)


def ids(deletions: Iterable[Deletion]) -> list[str]:
    """The job ids of ``deletions`` (stale temp files have none and are left out)."""
    return [d.job_id for d in deletions if d.job_id]


_UNLINK_THREADS = 4  # folders the CLI unlinks at once (their device waits overlap)


def apply_blocking(ix: Index, clips_dir: Path, the_plan: Plan, now: float) -> Applied:
    """Apply a plan to a local tree from this thread (the CLI); blocks throughout.

    Per batch: mark the rows ``deleting`` (one transaction), unlink in a few threads,
    fsync the folders, then drop the rows set-based (one transaction). Batches are
    pipelined: while the threads unlink one batch, this thread marks the next and then
    drops the rows of the one before, so index writes overlap the unlinks' waits. Per
    file the order stays: marked, unlinked, its folder fsynced, its row dropped.
    """
    unlinked = Unlinked([], [], [], [])
    size = CHUNK * 4
    chunks = [the_plan.deletions[i : i + size] for i in range(0, len(the_plan.deletions), size)]
    with ThreadPoolExecutor(_UNLINK_THREADS, thread_name_prefix="clipd-unlink") as pool:
        running: list[Future[_DayResult]] = []
        try:
            for chunk in chunks:
                ix.set_state_many(ids(chunk), "deleting")
                started = _start_unlinks(clips_dir, chunk, pool)
                previous, running = running, started
                if previous:
                    _finish_batch(ix, _finish_unlinks(previous), unlinked)
            if running:
                previous, running = running, []
                _finish_batch(ix, _finish_unlinks(previous), unlinked)
        except BaseException:
            wait(running)
            _close_all(running)
            raise
    log_deletions(unlinked.deleted, now)
    dirs = remove_empty_days(clips_dir, the_plan.empty_days, the_plan.deletions)
    return applied(unlinked, dirs)


def _finish_batch(ix: Index, part: Unlinked, into: Unlinked) -> None:
    """Drop the rows of what is gone now, put back those of files kept; collect."""
    _finish_rows(ix, ids(part.deleted + part.gone), ids(part.skipped + part.failed))
    into.extend(part)


def applied(unlinked: Unlinked, dirs: Sequence[str]) -> Applied:
    """Freeze what the unlinks did and the folders removed into an :class:`Applied`."""
    return Applied(
        tuple(unlinked.deleted),
        tuple(unlinked.skipped),
        tuple(unlinked.gone),
        tuple(unlinked.failed),
        tuple(dirs),
    )
