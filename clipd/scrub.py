"""Scrub: re-hash indexed clips in the background to find bit rot and silent tampering.

Least recently verified first, at ``scrub.mb_per_second`` (a token bucket), skipping
clips verified within ``scrub.min_interval_hours``. A clip whose bytes no longer match
its SHA-256 while its ``stat`` still does is quarantined with the reason, its row
dropped, ``clipd_scrub_mismatches_total`` counted and an error logged. A clip whose
``stat`` changed is not judged here: ingest is asked to look at it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from clipd.checks import BLOCK_BYTES, identity_of
from clipd.index import Index
from clipd.quarantine import quarantine_file
from clipd.record import ClipRecord, Identity

if TYPE_CHECKING:
    from clipd.daemon import Daemon

__all__ = ["TokenBucket", "Verdict", "due", "scrub_one", "scrub_service"]

logger = logging.getLogger(__name__)
_MB = 10**6
_HOP_BYTES = 4 * BLOCK_BYTES  # read per worker-thread hop, between rate checks
_BATCH = 256
_MAX_IDLE_S = 30.0
_MIN_IDLE_S = 1.0
_DEFER_S = 60.0  # a clip ingest must look at again is not re-tried sooner


class TokenBucket:
    """Byte-rate limiter: ``reserve(n)`` says how long to wait before reading n bytes."""

    def __init__(
        self, rate_bytes_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_bytes_per_s
        self._clock = clock
        self._tokens = 0.0
        self._last = clock()

    def reserve(self, n: int) -> float:
        """Take ``n`` bytes' worth of tokens (going into debt); the seconds to wait."""
        now = self._clock()
        burst = max(self.rate, float(_HOP_BYTES))  # at most a second's worth saved up
        self._tokens = min(burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class Verdict(Enum):
    MATCH = "match"
    MISMATCH = "mismatch"
    CHANGED = "changed"  # stat differs from the row: ingest's business
    GONE = "gone"


def due(
    records: list[ClipRecord], now: float, min_interval_s: float, deferred: dict[str, float]
) -> list[ClipRecord]:
    """Rows to scrub now (pure): verified long enough ago and not deferred."""
    return [
        r
        for r in records
        if now - r.verified_at >= min_interval_s and deferred.get(r.job_id, 0.0) <= now
    ]


@dataclass
class _Reader:
    fd: int
    identity: Identity
    digest: hashlib._Hash

    @classmethod
    def open(cls, path: Path) -> _Reader:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return cls(fd, identity_of(os.fstat(fd)), hashlib.sha256())

    def read_hop(self) -> int:
        """Hash up to one hop of bytes; 0 at the end. Blocks on the disk."""
        buf = bytearray(BLOCK_BYTES)
        view = memoryview(buf)
        total = 0
        while total < _HOP_BYTES:
            n = os.readv(self.fd, [buf])
            if not n:
                break
            self.digest.update(view[:n])
            total += n
        return total

    def unchanged(self) -> bool:
        return identity_of(os.fstat(self.fd)) == self.identity


async def scrub_one(path: Path, record: ClipRecord, bucket: TokenBucket) -> tuple[Verdict, str]:
    """Re-hash one clip at the bucket's rate; returns the verdict and the digest found.

    Hashing runs in worker threads, one bounded hop at a time, so cancelling is prompt.
    """
    try:
        reader = await asyncio.to_thread(_Reader.open, path)
    except FileNotFoundError:
        return Verdict.GONE, ""
    try:
        if reader.identity != record.identity:
            return Verdict.CHANGED, ""
        while True:
            wait = bucket.reserve(_HOP_BYTES)
            if wait > 0:
                await asyncio.sleep(wait)
            if not await asyncio.to_thread(reader.read_hop):
                break
        if not await asyncio.to_thread(reader.unchanged):
            return Verdict.CHANGED, ""
    finally:
        os.close(reader.fd)  # closing a regular file does not block
    actual = reader.digest.hexdigest()
    return (Verdict.MATCH if actual == record.sha256 else Verdict.MISMATCH), actual


def _quarantine_if_same(clips_dir: Path, record: ClipRecord, reason: str) -> Path | None:
    """Quarantine the file only if its stat still matches the row; blocks."""
    try:
        if identity_of((clips_dir / record.relpath).lstat()) != record.identity:
            return None
    except FileNotFoundError:
        return None
    return quarantine_file(clips_dir, record.relpath, reason, record.job_id)


def _drop_if_same(record: ClipRecord) -> Callable[[Index], None]:
    def drop(ix: Index) -> None:
        row = ix.get(record.job_id)
        if row is not None and row.sha256 == record.sha256 and row.relpath == record.relpath:
            ix.delete(record.job_id)

    return drop


async def _handle(daemon: Daemon, record: ClipRecord, verdict: Verdict, actual: str) -> None:
    clips_dir = daemon.config.clips_dir
    if verdict is Verdict.MATCH:
        now = time.time()
        await daemon.index.write(lambda ix: ix.set_verified(record.job_id, now))
        daemon.metrics.scrub_verified_bytes.inc(record.size_bytes)
        return
    if verdict is not Verdict.MISMATCH:
        daemon.ingestor.notice(record.relpath)
        return
    reason = f"integrity: scrub found SHA-256 {actual}, index has {record.sha256}"
    moved = await asyncio.to_thread(_quarantine_if_same, clips_dir, record, reason)
    if moved is None:
        daemon.ingestor.notice(record.relpath)
        return
    await daemon.index.write(_drop_if_same(record))
    daemon.metrics.scrub_mismatches.inc()
    daemon.metrics.quarantined_files.labels("integrity").inc()
    logger.error(
        "scrub: %s (job %s) no longer matches its SHA-256 (index %s, now %s): quarantined to %s",
        record.relpath,
        record.job_id,
        record.sha256,
        actual,
        moved,
    )


async def scrub_service(daemon: Daemon) -> None:
    """The daemon's scrub task; runs until cancelled."""
    bucket = TokenBucket(daemon.config.scrub.mb_per_second * _MB)
    deferred: dict[str, float] = {}
    while True:
        config = daemon.config.scrub
        bucket.rate = config.mb_per_second * _MB
        min_interval_s = config.min_interval_hours * 3600
        batch = await daemon.index.read(lambda ix: ix.least_recently_verified(_BATCH))
        now = time.time()
        deferred = {job: until for job, until in deferred.items() if until > now}
        todo = due(batch, now, min_interval_s, deferred)
        for record in todo:
            path = daemon.backend.local_path(record.relpath)
            if path is None:
                logger.info(
                    "scrub: the %s backend keeps no local bytes; the store checks "
                    "its own checksums, scrub stops",
                    daemon.backend.name,
                )
                return
            verdict, actual = await scrub_one(path, record, bucket)
            if verdict is not Verdict.MATCH:
                deferred[record.job_id] = time.time() + _DEFER_S
            await _handle(daemon, record, verdict, actual)
        if len(todo) < _BATCH:
            await asyncio.sleep(_idle_s(batch, time.time(), min_interval_s))


def _idle_s(batch: list[ClipRecord], now: float, min_interval_s: float) -> float:
    """How long to sleep when nothing is due: until the oldest row is, within bounds."""
    if not batch:
        return _MAX_IDLE_S
    next_due = min(r.verified_at for r in batch) + min_interval_s - now
    return min(_MAX_IDLE_S, max(_MIN_IDLE_S, next_due))
