"""Ingest: turn a path the watcher or a rescan noticed into an index record or a quarantine.

One direction only: paths come in, records go to the index. Validation and hashing run
in a bounded thread pool (a large whole-tree backlog in helper processes, see
:mod:`clipd.hashworker`); every index write goes through the single writer thread, which
also decides job-id conflicts so two files can never claim one id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from operator import methodcaller
from pathlib import Path

from clipd.async_index import AsyncIndex
from clipd.config import IngestConfig, StorageConfig
from clipd.hashworker import (
    HashWorkers,
    Outcome,
    Request,
    Verdict,
    WorkerGone,
    examine_many,
    examine_one,
)
from clipd.index import Index
from clipd.metrics import Metrics
from clipd.naming import is_day_folder, is_ignored, parse_relpath
from clipd.quarantine import quarantine_file
from clipd.reconcile import ReconcilePlan, StatTuple, Walk, plan_reconcile, walk_tree
from clipd.record import ClipRecord

__all__ = ["Ingestor", "Outcome", "ReconcileReport"]

logger = logging.getLogger(__name__)
# Files per worker-thread hop in a whole-tree pass (each batch is also one index write).
_BATCH = 512
_QUIET_BATCH = 8  # more records than this at once are logged one line per batch
# A whole-tree pass whose walk finds this many files more than the index holds (a first
# index, a restored tree) examines them in helper processes (ingest.hash_processes):
# starting two costs ~0.2 s of CPU, and a small clip ~90 µs in threads against ~30 µs
# of the daemon's time with helpers, so they pay from about 2,500 files.
_PROCESS_MIN_FILES = 4096
# Files per request to a helper process (fewer hand-overs than _BATCH; one index write).
_PROCESS_BATCH = 2048
_MAX_RETRIES = 30


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    examined: int
    recorded: int
    dropped: int
    quarantined: int
    stale_tmp_removed: int
    seconds: float


def _record_blocking(ix: Index, clips_dir: Path, records: Sequence[ClipRecord]) -> list[str]:
    """Write records on the writer thread; returns a conflict reason (or "") per record.

    A job id already indexed at another path whose file still exists is a conflict;
    if that file is gone, this is a move and the row follows the file.
    """
    reasons: list[str] = []
    accepted: list[ClipRecord] = []
    known = ix.get_many([r.job_id for r in records])
    for record in records:
        existing = known.get(record.job_id)
        if (
            existing is not None
            and existing.relpath != record.relpath
            and (clips_dir / existing.relpath).exists()
        ):
            reasons.append(
                f"conflict: job id {record.job_id} is already indexed at {existing.relpath}"
            )
            continue
        if (
            existing is not None
            and existing.relpath == record.relpath
            and existing.sha256
            and existing.sha256 != record.sha256
        ):
            # Writers rename new clips in; a recorded clip's bytes never legitimately
            # change, so new bytes under an old name are tampering or rot.
            reasons.append(
                f"integrity: bytes changed after the clip was recorded (sha256 was "
                f"{existing.sha256}, now {record.sha256})"
            )
            continue
        if existing is not None:
            # Keep what the row knows beyond the file itself.
            record = replace(
                record,
                ingested_at=existing.ingested_at,
                display_title=existing.display_title,
                backed_up=existing.backed_up and existing.sha256 == record.sha256,
            )
        accepted.append(record)
        reasons.append("")
    if accepted:
        ix.upsert_many(accepted)
    return reasons


def _drop_gone_blocking(ix: Index, clips_dir: Path, job_ids: Sequence[str]) -> list[str]:
    """Drop the rows of ``job_ids`` whose files are gone now; returns those dropped.

    On the writer thread, so in order with every other write: a clip the watcher
    recorded while the walk went on (written into a folder the walk had already listed,
    or moved there) keeps its row although the walk did not see its file.
    """
    prefix = f"{clips_dir}/"
    rows = ix.get_many(job_ids)
    gone = [j for j, row in rows.items() if not _walkable(prefix + row.relpath)]
    ix.delete_many(gone)
    return gone


def _walkable(path: str) -> bool:
    """Is there an entry at ``path`` that a walk would report (anything but a folder)?"""
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


class Ingestor:
    """Receives noticed paths on the event loop and records or quarantines them."""

    def __init__(
        self,
        clips_dir: Path,
        storage: StorageConfig,
        ingest: IngestConfig,
        index: AsyncIndex,
        metrics: Metrics,
        stale_tmp_s: float,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.clips_dir = clips_dir
        self.storage = storage
        self.ingest = ingest
        self.stale_tmp_s = stale_tmp_s
        self._index = index
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._pool = ThreadPoolExecutor(ingest.hash_workers, thread_name_prefix="clipd-hash")
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Files a writer still holds open, looked at again later; not pending work, so
        # a stop does not wait for the writer (the next start's reconcile finds them).
        self._held: dict[str, asyncio.TimerHandle] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._final: set[str] = set()
        self._retries: dict[str, int] = {}
        self._extensions = frozenset(storage.extensions)
        self._quarantine_lock = asyncio.Lock()
        self.on_recorded: list[Callable[[], None]] = []

    # -- from the watcher (event loop) ------------------------------------------------

    def relpath_of(self, path: str) -> str | None:
        """``<day>/<name>`` for a path directly inside a day folder of the tree, else None."""
        try:
            rel = Path(path).relative_to(self.clips_dir)
        except ValueError:
            return None
        parts = rel.parts
        if len(parts) != 2 or not is_day_folder(parts[0]) or is_ignored(parts[1]):
            return None
        return f"{parts[0]}/{parts[1]}"

    def notice(self, relpath: str, delay_s: float = 0.0) -> None:
        """Look at ``relpath`` after ``delay_s`` (debounced); must run on the loop."""
        loop = asyncio.get_running_loop()
        self._cancel_looks(relpath)
        if delay_s > 0:
            self._timers[relpath] = loop.call_later(delay_s, self._start, relpath, False)
        else:
            self._start(relpath, True)

    def _cancel_looks(self, relpath: str) -> None:
        for timers in (self._timers, self._held):
            timer = timers.pop(relpath, None)
            if timer is not None:
                timer.cancel()

    def _start(self, relpath: str, final: bool) -> None:
        self._timers.pop(relpath, None)
        self._held.pop(relpath, None)
        if final:
            self._final.add(relpath)
        if relpath in self._running:
            self._again.add(relpath)
            return
        task = asyncio.get_running_loop().create_task(self._run(relpath))
        self._running[relpath] = task

    async def _run(self, relpath: str) -> None:
        try:
            while True:
                self._again.discard(relpath)
                final = relpath in self._final
                self._final.discard(relpath)
                try:
                    await self.process(relpath, final)
                except OSError:
                    logger.error(
                        "ingest of %s failed; the next rescan retries", relpath, exc_info=True
                    )
                if relpath not in self._again:
                    break
        finally:
            self._running.pop(relpath, None)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._timers)

    async def drain(self) -> None:
        """Wait until nothing is pending or running (timers included)."""
        while self._running or self._timers:
            tasks = list(self._running.values())
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0.05)

    # -- processing ---------------------------------------------------------------------

    async def process(self, relpath: str, final: bool = True) -> Outcome:
        """Examine one file and record, quarantine or forget it. Raises OSError on I/O.

        ``final``: the writer is known to be done (close or rename event).
        """
        parsed = parse_relpath(relpath, self._extensions)
        name = parsed[1] if parsed else None
        known = await self._index.read(lambda ix: ix.get_by_relpath(relpath))
        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(
            self._pool,
            examine_one,
            f"{self.clips_dir}/{relpath}",
            relpath,
            name,
            None if known is None else known.identity,
            self.storage.min_bytes,
            self.storage.max_bytes,
            int(self.ingest.settle_seconds * 1e9),
            self._clock_ns(),
            final,
        )
        if isinstance(verdict, ClipRecord):
            verdict = Verdict(Outcome.RECORDED, record=verdict)
        return await self._apply(relpath, verdict, known)

    async def _apply(self, relpath: str, verdict: Verdict, known: ClipRecord | None) -> Outcome:
        outcome = verdict.outcome
        reason = verdict.reason
        if outcome is Outcome.BUSY:
            # Judged once the writer closes it (its close event), or at a later look.
            self._retries.pop(relpath, None)
            self._cancel_looks(relpath)
            self._held[relpath] = asyncio.get_running_loop().call_later(
                max(self.ingest.settle_seconds, 0.1), self._start, relpath, False
            )
            return outcome
        if outcome is Outcome.RETRY:
            tries = self._retries.get(relpath, 0) + 1
            self._retries[relpath] = tries
            if tries <= _MAX_RETRIES:
                self.notice(relpath, max(self.ingest.settle_seconds, 0.1))
                return outcome
            reason = f"{reason or 'invalid'} (still so after {_MAX_RETRIES} tries)"
        self._retries.pop(relpath, None)
        if outcome is Outcome.UNCHANGED:
            return outcome
        if outcome is Outcome.GONE:
            if known is not None:
                await self._index.write(lambda ix: ix.delete(known.job_id))
                logger.info("forgot %s (job %s): file is gone", relpath, known.job_id)
            return outcome
        if outcome is Outcome.RECORDED:
            assert verdict.record is not None
            (reason,) = await self._record([verdict.record])
            if not reason:
                return outcome
        await self._quarantine(relpath, reason, known)
        return Outcome.QUARANTINED

    async def _record(self, records: Sequence[ClipRecord]) -> list[str]:
        reasons = await self._index.write(lambda ix: _record_blocking(ix, self.clips_dir, records))
        # A whole-tree pass can record thousands of clips: one line per batch at info,
        # one per clip at debug (20k info lines cost a cold index a third of its time).
        bulk = len(records) > _QUIET_BATCH
        level = logging.DEBUG if bulk else logging.INFO
        recorded = recorded_bytes = 0
        verbose = logger.isEnabledFor(level)
        for record, reason in zip(records, reasons, strict=True):
            if reason:
                continue
            recorded += 1
            recorded_bytes += record.size_bytes
            if verbose:
                logger.log(
                    level,
                    "recorded %s (job %s, %d bytes, sha256 %s)",
                    record.relpath,
                    record.job_id,
                    record.size_bytes,
                    record.sha256,
                )
        self._metrics.ingested_files.inc(recorded)
        self._metrics.ingested_bytes.inc(recorded_bytes)
        if bulk:
            logger.info(
                "recorded %d clips, %s to %s", recorded, records[0].relpath, records[-1].relpath
            )
        if any(not r for r in reasons):
            for callback in self.on_recorded:
                callback()
        return reasons

    async def _quarantine(self, relpath: str, reason: str, known: ClipRecord | None) -> None:
        parsed = parse_relpath(relpath)
        job_id = parsed[1].job_id if parsed else ""
        loop = asyncio.get_running_loop()
        # One at a time: a watcher event and a rescan can both condemn one file, and two
        # concurrent moves would race for the sidecar name (the loser's note vanishes and
        # the file lands under "<name>.1").
        async with self._quarantine_lock:
            moved = await loop.run_in_executor(
                self._pool, quarantine_file, self.clips_dir, relpath, reason, job_id
            )
        if known is not None:
            await self._index.write(lambda ix: ix.delete(known.job_id))
        if moved is not None:
            self._metrics.quarantined_files.labels(_reason_label(reason)).inc()
            if reason.startswith("integrity"):
                self._metrics.integrity_mismatches.inc()
                logger.error("integrity mismatch on %s: %s", relpath, reason)

    # -- whole-tree passes ------------------------------------------------------------

    async def reconcile(self) -> ReconcileReport:
        """Walk the tree, hash what is new or changed, drop rows of vanished files."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        helpers = _Helpers(
            min(self.ingest.hash_processes, self.ingest.hash_workers),
            self._index.totals.files + _PROCESS_MIN_FILES,
        )
        try:
            # The helpers start during the walk once it has seen enough files that the
            # index cannot know (their start-up then overlaps the rest of the walk).
            walk = await loop.run_in_executor(self._pool, walk_tree, self.clips_dir, helpers.seen)
            return await self._reconcile(walk, helpers.workers, started)
        finally:
            # Shielded: a cancelled pass still reaps its helpers.
            await asyncio.shield(loop.run_in_executor(None, helpers.close))

    async def _reconcile(
        self, walk: Walk, workers: HashWorkers | None, started: float
    ) -> ReconcileReport:
        loop = asyncio.get_running_loop()
        indexed = await self._index.read(lambda ix: ix.identity_keys())
        plan: ReconcilePlan = plan_reconcile(
            walk, indexed, self._clock_ns(), int(self.stale_tmp_s * 1e9)
        )
        dropped: list[str] = []
        if plan.to_drop:
            dropped = await self._index.write(
                lambda ix: _drop_gone_blocking(ix, self.clips_dir, plan.to_drop)
            )
            logger.info("dropped %d index rows whose files are gone", len(dropped))
        removed = await loop.run_in_executor(self._pool, self._remove_stale_tmp, plan.stale_tmp)
        counts = {o: 0 for o in Outcome}
        known = plan.known
        size = _BATCH if workers is None else _PROCESS_BATCH
        chunks = [plan.to_examine[i : i + size] for i in range(0, len(plan.to_examine), size)]
        batches = [self._examine_batch(c, known, workers) for c in chunks]
        for outcomes in asyncio.as_completed(batches):
            for outcome in await outcomes:
                counts[outcome] += 1
        return ReconcileReport(
            examined=len(plan.to_examine),
            recorded=counts[Outcome.RECORDED],
            dropped=len(dropped),
            quarantined=counts[Outcome.QUARANTINED],
            stale_tmp_removed=removed,
            seconds=time.monotonic() - started,
        )

    async def _examine_batch(
        self,
        relpaths: Sequence[str],
        indexed: dict[str, StatTuple],
        workers: HashWorkers | None = None,
    ) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        request = Request(
            str(self.clips_dir),
            relpaths,
            {r: indexed[r] for r in relpaths if r in indexed},
            self._extensions,
            self.storage.min_bytes,
            self.storage.max_bytes,
            int(self.ingest.settle_seconds * 1e9),
            self._clock_ns(),
        )

        def run() -> list[ClipRecord | Verdict]:
            if workers is not None:
                with contextlib.suppress(WorkerGone):  # logged once by HashWorkers
                    return workers.examine(request)
            return examine_many(request)

        verdicts = await loop.run_in_executor(self._pool, run)
        fresh = [v for v in verdicts if type(v) is ClipRecord]
        reasons = iter(await self._record(fresh)) if fresh else iter(())
        outcomes = []
        for relpath, verdict in zip(relpaths, verdicts, strict=True):
            if isinstance(verdict, ClipRecord):
                reason = next(reasons)
                if not reason:
                    outcomes.append(Outcome.RECORDED)
                    continue
                verdict = Verdict(Outcome.QUARANTINED, reason)
            if verdict.outcome is Outcome.UNCHANGED:
                outcomes.append(verdict.outcome)
                continue
            known = await self._index.read(methodcaller("get_by_relpath", relpath))
            outcomes.append(await self._apply(relpath, verdict, known))
        return outcomes

    def _remove_stale_tmp(self, relpaths: Sequence[str]) -> int:
        removed = 0
        for relpath in relpaths:
            try:
                os.unlink(self.clips_dir / relpath)
            except FileNotFoundError:
                continue
            removed += 1
            logger.warning(
                "removed stale temp file %s (older than %.0f minutes: a writer crashed)",
                relpath,
                self.stale_tmp_s / 60,
            )
        return removed

    def close(self) -> None:
        for timers in (self._timers, self._held):
            for timer in timers.values():
                timer.cancel()
            timers.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Helpers:
    """Starts hash worker processes from the walk once it has seen ``threshold`` files."""

    def __init__(self, count: int, threshold: int) -> None:
        self._count = count
        self._threshold = threshold
        self._lock = threading.Lock()
        self._done = False  # started once, or closed: never (again)
        self.workers: HashWorkers | None = None

    def seen(self, files: int) -> None:
        """Called on the walking thread after each day folder."""
        if self._done or self._count < 1 or files < self._threshold:
            return
        with self._lock:
            if self._done:
                return  # the pass ended (cancelled) while the walk went on
            self._done = True
            try:
                self.workers = HashWorkers(self._count)
            except OSError as exc:
                logger.warning("cannot start hash worker processes (%s): hashing in threads", exc)

    def close(self) -> None:
        """Stop the workers if any started; none starts after this. Blocks."""
        with self._lock:
            self._done = True
            workers, self.workers = self.workers, None
        if workers is not None:
            workers.close()


def _reason_label(reason: str) -> str:
    """A small, bounded label value for the quarantine counter."""
    for label in (
        "conflict",
        "symlink",
        "regular file",
        "signature",
        "min_bytes",
        "max_bytes",
        "name",
        "changing",
        "integrity",
    ):
        if label in reason:
            return label.replace(" ", "_")
    return "other"
