"""Retention's I/O shell: gather what the planner needs, apply its plan, run as a service.

The deleting itself (crash-safe and batched: mark, unlink, drop) lives in
:mod:`clipd.eviction`; this module gathers the planner's inputs, drives eviction from
the event loop for the daemon and runs retention as a service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipd import eviction
from clipd.async_index import AsyncIndex
from clipd.config import Config
from clipd.eviction import Applied
from clipd.index import Index
from clipd.naming import is_day_folder
from clipd.record import ClipSummary
from clipd.retention import GB, Plan, Policy, TmpFile, Usage, over_high_mark, plan
from clipd.storage import Backend

if TYPE_CHECKING:
    import asyncio

    from clipd.daemon import Daemon
    from clipd.metrics import Metrics

__all__ = [
    "Snapshot",
    "apply_plan",
    "gather_blocking",
    "retention_service",
    "run_once",
    "start_line",
    "summary_line",
    "usage_of",
]

logger = logging.getLogger(__name__)
_MB = 10**6  # decimal, like the GB of the config
_MIN_TRIGGER_GAP_S = 1.0  # ingest-triggered runs at most this often


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The planner's inputs, read in one worker-thread hop."""

    records: tuple[ClipSummary, ...]
    usage: Usage | None
    tmp_files: tuple[TmpFile, ...]
    day_entries: dict[str, int] | None
    unindexed: tuple[str, ...]  # clip-looking files the index does not know (yet)


def start_line(clip_bytes: int) -> str:
    """The legacy cron script's first line of a run (decimal GB, like the MB of the last)."""
    return f"Starting cleanup - Current storage: {clip_bytes / GB:.1f} GB"


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


# -- applying (event loop) -----------------------------------------------------------------
# The functions below import asyncio where they run: ``clipd cleanup`` imports this module
# and never needs it (about 25 ms of its start-up).


def _marker(job_ids: list[str]) -> Callable[[Index], None]:
    return lambda ix: ix.set_state_many(job_ids, "deleting")


def _finisher(done: list[str], kept: list[str]) -> Callable[[Index], None]:
    return lambda ix: ix.finish_deletions(done, kept)


async def apply_plan(
    index: AsyncIndex, backend: Backend, clips_dir: Path, the_plan: Plan, now: float
) -> Applied:
    """Apply a plan from the event loop: index writes on the writer thread, unlinks in
    worker threads, remote deletes through the backend. Raises OSError from the store."""
    import asyncio

    unlinked = eviction.Unlinked([], [], [], [])
    local = stores_locally(backend)
    for start in range(0, len(the_plan.deletions), eviction.CHUNK):
        chunk = the_plan.deletions[start : start + eviction.CHUNK]
        marked = eviction.ids(chunk)
        await index.write(_marker(marked))
        if local:
            part = await asyncio.to_thread(eviction.unlink_local, clips_dir, chunk)
        else:
            part = eviction.Unlinked([], [], [], [])
            for deletion in chunk:
                existed = await backend.delete(deletion.relpath)
                (part.deleted if existed else part.gone).append(deletion)
        done, kept = (
            eviction.ids(part.deleted + part.gone),
            eviction.ids(part.skipped + part.failed),
        )
        await index.write(_finisher(done, kept))
        for name in ("deleted", "skipped", "gone", "failed"):
            getattr(unlinked, name).extend(getattr(part, name))
    eviction.log_deletions(unlinked.deleted, now)
    dirs: list[str] = []
    if local and the_plan.empty_days:
        dirs = await asyncio.to_thread(
            eviction.remove_empty_days, clips_dir, the_plan.empty_days, the_plan.deletions
        )
    return eviction.applied(unlinked, dirs)


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
    logger.info("%s", start_line(sum(r.size_bytes for r in snapshot.records)))
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
    daemon.metrics.retention_enabled.set(1)
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
