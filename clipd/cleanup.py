"""Retention's I/O shell: gather what the planner needs, apply its plan, run as a service.

Deleting is crash-safe and batched: mark a batch of rows ``deleting`` in one
transaction, unlink the files (one fsync per day folder, not per file), then drop the
rows in one transaction. A crash in between leaves rows marked ``deleting`` that
:func:`clipd.removal.finish_pending` completes at the next start. A file another
process holds with an flock (a download, a copy) is skipped this round.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipd.config import Config
from clipd.index import AsyncIndex, ClipSummary, Index
from clipd.naming import is_day_folder
from clipd.retention import Deletion, Plan, Policy, TmpFile, Usage, over_high_mark, plan
from clipd.storage import Backend

if TYPE_CHECKING:
    import asyncio

    from clipd.daemon import Daemon
    from clipd.metrics import Metrics

__all__ = [
    "Applied",
    "Snapshot",
    "apply_blocking",
    "apply_plan",
    "gather_blocking",
    "retention_service",
    "run_once",
    "summary_line",
    "usage_of",
]

logger = logging.getLogger(__name__)
_MB = 10**6  # decimal, like the GB of the config
_CHUNK = 512  # deletions per writer-thread hop, so ingest never waits long
_MIN_TRIGGER_GAP_S = 1.0  # ingest-triggered runs at most this often


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The planner's inputs, read in one worker-thread hop."""

    records: tuple[ClipSummary, ...]
    usage: Usage | None
    tmp_files: tuple[TmpFile, ...]
    day_entries: dict[str, int] | None
    unindexed: tuple[str, ...]  # clip-looking files the index does not know (yet)


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


def summary_line(applied: Applied) -> str:
    """The legacy cron script's log line, kept so existing log parsers still work."""
    return (
        f"Cleanup completed: {len(applied.deleted)} files deleted, "
        f"{applied.freed_bytes / _MB:.1f} MB freed, {len(applied.dirs_removed)} empty dirs removed"
    )


# -- gathering (blocking) ------------------------------------------------------------------


def usage_of(path: Path) -> Usage:
    """Filesystem usage of ``path`` as ``df`` reports it; blocks (statvfs).

    The figures ``psutil.disk_usage`` gives, without importing psutil (a CLI command
    pays for every import): free is what an unprivileged writer may still use."""
    st = os.statvfs(path)
    return Usage(
        total_bytes=st.f_blocks * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        free_bytes=st.f_bavail * st.f_frsize,
    )


def _scan_days(
    clips_dir: Path,
) -> tuple[list[TmpFile], dict[str, int], set[str]]:
    tmp: list[TmpFile] = []
    entries: dict[str, int] = {}
    files: set[str] = set()
    try:
        with os.scandir(clips_dir) as top:
            days = [
                e.name for e in top if is_day_folder(e.name) and e.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return tmp, entries, files
    for day in days:
        count = 0
        try:
            folder = os.scandir(clips_dir / day)
        except FileNotFoundError:
            continue
        with folder:
            for entry in folder:
                count += 1
                relpath = f"{day}/{entry.name}"
                if entry.name.startswith(".") or entry.is_dir(follow_symlinks=False):
                    continue
                if entry.name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        tmp.append(TmpFile(relpath, st.st_size, st.st_mtime_ns))
                else:
                    files.add(relpath)
        entries[day] = count
    return tmp, entries, files


def gather_blocking(ix: Index, clips_dir: Path, local: bool) -> Snapshot:
    """Read rows, usage and the day folders; blocks on SQLite and the disk.

    ``local`` says the clips are files under ``clips_dir`` (else no disk rule applies
    and no folder is scanned).
    """
    records = tuple(ix.summaries())
    if not local:
        return Snapshot(records, None, (), None, ())
    tmp, entries, on_disk = _scan_days(clips_dir)
    indexed = {r.relpath for r in records}
    unindexed = tuple(sorted(on_disk - indexed))
    return Snapshot(records, usage_of(clips_dir), tuple(tmp), entries, unindexed)


def stores_locally(backend: Backend) -> bool:
    """Whether the backend keeps clips as local files (so disk usage and flocks apply)."""
    return backend.local_path("1970-01-01/probe_x.mp4") is not None


# -- applying (blocking parts) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unlinked:
    deleted: list[Deletion]
    skipped: list[Deletion]
    gone: list[Deletion]
    failed: list[Deletion]

    def extend(self, other: _Unlinked) -> None:
        self.deleted.extend(other.deleted)
        self.skipped.extend(other.skipped)
        self.gone.extend(other.gone)
        self.failed.extend(other.failed)


def _unlink_local(clips_dir: Path, deletions: Sequence[Deletion]) -> _Unlinked:
    """Unlink files, skipping flock-held ones; one fsync per touched day folder."""
    return _finish_unlinks(_start_unlinks(clips_dir, deletions, None))


_DayResult = tuple[int | None, _Unlinked]


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


def _finish_unlinks(futures: Sequence[Future[_DayResult]]) -> _Unlinked:
    """Wait for a batch's folders, fsync each (after all of its unlinks), merge outcomes.

    Raises the first folder's OSError (after closing every folder)."""
    wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            _close_all(futures)
            raise error
    out = _Unlinked([], [], [], [])
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
) -> tuple[int | None, _Unlinked]:
    """Unlink ``wanted`` in one day folder; returns its open fd (to fsync) and the outcome."""
    out = _Unlinked([], [], [], [])
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


def _unlink_in(dir_fd: int, names: list[str], wanted: dict[str, Deletion], out: _Unlinked) -> None:
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


def _remove_empty_days(
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


def _log_deletions(applied: Sequence[Deletion], now: float) -> None:
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


def _marker(job_ids: list[str]) -> Callable[[Index], None]:
    return lambda ix: ix.set_state_many(job_ids, "deleting")


def _finisher(done: list[str], kept: list[str]) -> Callable[[Index], None]:
    return lambda ix: _finish_rows(ix, done, kept)


def _ids(deletions: Iterable[Deletion]) -> list[str]:
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
    unlinked = _Unlinked([], [], [], [])
    size = _CHUNK * 4
    chunks = [the_plan.deletions[i : i + size] for i in range(0, len(the_plan.deletions), size)]
    with ThreadPoolExecutor(_UNLINK_THREADS, thread_name_prefix="clipd-unlink") as pool:
        running: list[Future[_DayResult]] = []
        try:
            for chunk in chunks:
                ix.set_state_many(_ids(chunk), "deleting")
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
    _log_deletions(unlinked.deleted, now)
    dirs = _remove_empty_days(clips_dir, the_plan.empty_days, the_plan.deletions)
    return _applied(unlinked, dirs)


def _finish_batch(ix: Index, part: _Unlinked, into: _Unlinked) -> None:
    """Drop the rows of what is gone now, put back those of files kept; collect."""
    _finish_rows(ix, _ids(part.deleted + part.gone), _ids(part.skipped + part.failed))
    into.extend(part)


def _applied(unlinked: _Unlinked, dirs: Sequence[str]) -> Applied:
    return Applied(
        tuple(unlinked.deleted),
        tuple(unlinked.skipped),
        tuple(unlinked.gone),
        tuple(unlinked.failed),
        tuple(dirs),
    )


# -- applying (event loop) -----------------------------------------------------------------
# The functions below import asyncio where they run: ``clipd cleanup`` imports this module
# and never needs it (about 25 ms of its start-up).


async def apply_plan(
    index: AsyncIndex, backend: Backend, clips_dir: Path, the_plan: Plan, now: float
) -> Applied:
    """Apply a plan from the event loop: index writes on the writer thread, unlinks in
    worker threads, remote deletes through the backend. Raises OSError from the store."""
    import asyncio

    unlinked = _Unlinked([], [], [], [])
    local = stores_locally(backend)
    for start in range(0, len(the_plan.deletions), _CHUNK):
        chunk = the_plan.deletions[start : start + _CHUNK]
        marked = _ids(chunk)
        await index.write(_marker(marked))
        if local:
            part = await asyncio.to_thread(_unlink_local, clips_dir, chunk)
        else:
            part = _Unlinked([], [], [], [])
            for deletion in chunk:
                existed = await backend.delete(deletion.relpath)
                (part.deleted if existed else part.gone).append(deletion)
        done, kept = _ids(part.deleted + part.gone), _ids(part.skipped + part.failed)
        await index.write(_finisher(done, kept))
        for name in ("deleted", "skipped", "gone", "failed"):
            getattr(unlinked, name).extend(getattr(part, name))
    _log_deletions(unlinked.deleted, now)
    dirs: list[str] = []
    if local and the_plan.empty_days:
        dirs = await asyncio.to_thread(
            _remove_empty_days, clips_dir, the_plan.empty_days, the_plan.deletions
        )
    return _applied(unlinked, dirs)


def _busy(extras: dict[str, Any]) -> frozenset[str]:
    # The jobs API may publish the job ids it is sending right now.
    downloading = extras.get("downloading")
    return frozenset(downloading) if downloading else frozenset()


async def run_once(daemon: Daemon, draining: bool = False) -> tuple[Applied, bool]:
    """One retention pass in the daemon: gather, plan, apply, log, count.

    Returns what was applied and whether the watermark drain goes on: it began at the high
    mark and the filesystem, measured after the pass, is still above the low mark."""
    import asyncio

    started = time.monotonic()
    config: Config = daemon.config
    clips_dir = config.clips_dir
    local = stores_locally(daemon.backend)
    snapshot = await daemon.index.read(lambda ix: gather_blocking(ix, clips_dir, local))
    now = time.time()
    policy = Policy.from_config(config.retention)
    the_plan = plan(
        snapshot.records,
        snapshot.usage,
        policy,
        now,
        tmp_files=snapshot.tmp_files,
        busy=_busy(daemon.state.extras),
        day_entries=snapshot.day_entries,
        draining=draining,
    )
    applied = await apply_plan(daemon.index, daemon.backend, clips_dir, the_plan, now)
    if over_high_mark(snapshot.usage, policy, draining):
        draining = over_high_mark(await asyncio.to_thread(usage_of, clips_dir), policy, True)
    else:
        draining = False
    if the_plan.unmet:
        logger.warning(
            "retention targets still not met (%s): every other clip is protected "
            "(younger than %.0f minutes, being downloaded or locked)",
            ", ".join(r.value for r in the_plan.unmet),
            config.retention.protect_recent_minutes,
        )
    metrics: Metrics = daemon.metrics
    metrics.retention_deleted_files.inc(len(applied.deleted))
    metrics.retention_freed_bytes.inc(applied.freed_bytes)
    metrics.retention_last_run.set(time.time())
    metrics.retention_last_duration.set(time.monotonic() - started)
    logger.info("%s", summary_line(applied))
    return applied, draining


def _limits_check(config: Config, local: bool) -> Callable[[Index], bool]:
    """Cheap check after ingest: is any size or disk limit crossed? Blocks briefly."""
    policy = Policy.from_config(config.retention)

    def check(ix: Index) -> bool:
        if policy.max_size_bytes and ix.totals().bytes > policy.max_size_bytes:
            return True
        if not local:
            return False
        usage = usage_of(config.clips_dir)
        if usage.percent >= policy.high_watermark_percent:
            return True
        return bool(policy.min_free_bytes) and usage.free_bytes < policy.min_free_bytes

    return check


async def retention_service(daemon: Daemon) -> None:
    """The daemon's retention task: a pass at start, every ``retention.interval_seconds``,
    and at once when ingest pushes usage over a limit. Runs until cancelled."""
    import asyncio

    wake = asyncio.Event()
    daemon.ingestor.on_recorded.append(wake.set)
    local = stores_locally(daemon.backend)
    try:
        triggered = False
        draining = False
        while True:
            if triggered and not draining:
                over = await daemon.index.read(_limits_check(daemon.config, local))
                if not over:
                    triggered = await _wait(wake, daemon.config.retention.interval_seconds)
                    continue
            try:
                _, draining = await run_once(daemon, draining)
            except OSError:
                logger.error("retention pass failed; the next one retries", exc_info=True)
            await asyncio.sleep(_MIN_TRIGGER_GAP_S if wake.is_set() else 0)
            triggered = await _wait(wake, daemon.config.retention.interval_seconds)
    finally:
        with contextlib.suppress(ValueError):
            daemon.ingestor.on_recorded.remove(wake.set)


async def _wait(wake: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``wake`` or the timeout; True when woken by ingest."""
    import asyncio

    # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that arrives as the
    # event is set (gh-86296), and the daemon would then never stop.
    try:
        async with asyncio.timeout(timeout_s):
            await wake.wait()
    except TimeoutError:
        return False
    wake.clear()
    return True
