"""Per-clip download counters: counted in memory on the loop, written to the index in batches.

A download must never cost an index write: handlers call :meth:`DownloadLog.count`
(a dict update on the event loop) and the ``download_flusher`` service writes the
accumulated ``(day, job id, count, bytes)`` rows in one transaction every few seconds
and once more at stop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from clipd.async_index import AsyncIndex
from clipd.naming import day_of

if TYPE_CHECKING:
    from clipd.daemon import Daemon
    from clipd.web import State

__all__ = ["FLUSH_EVERY_S", "DownloadLog", "download_flusher", "download_log"]

logger = logging.getLogger(__name__)
FLUSH_EVERY_S = 5.0
_EXTRAS_KEY = "download_log"
_DAY_S = 86400
# A flush's write in the writer thread and the rows it carries.
_Write = tuple["asyncio.Future[None]", list[tuple[str, str, int, int]]]


class DownloadLog:
    """Pending download increments keyed by (UTC day, job id); loop-only, no locking."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pending: dict[tuple[str, str], list[int]] = {}
        self._day: tuple[int, str] = (-1, "")  # (days since the epoch, its UTC day)
        self._writing: _Write | None = None  # the last flush's write, until it ends

    def _today(self) -> str:
        # Formatting a date per download is measurable; the day changes once a day.
        now = self._clock()
        number = int(now // _DAY_S)
        if number != self._day[0]:
            self._day = (number, day_of(now))
        return self._day[1]

    def count(self, job_id: str, size_bytes: int) -> None:
        """Note one download of ``size_bytes`` body bytes (call on the loop)."""
        entry = self._pending.setdefault((self._today(), job_id), [0, 0])
        entry[0] += 1
        entry[1] += size_bytes

    def take(self) -> list[tuple[str, str, int, int]]:
        """Everything pending as index rows, leaving nothing pending."""
        pending, self._pending = self._pending, {}
        return [(day, job, n, size) for (day, job), (n, size) in pending.items()]

    def put_back(self, rows: list[tuple[str, str, int, int]]) -> None:
        """Return rows a failed flush could not write, to retry with the next batch."""
        for day, job, n, size in rows:
            entry = self._pending.setdefault((day, job), [0, 0])
            entry[0] += n
            entry[1] += size

    async def flush(self, index: AsyncIndex) -> int:
        """Write pending rows in one transaction; returns how many rows were written.

        Raises what the write raised (the rows stay pending). Cancelled, it still lets
        a write the writer thread has begun finish: only that write's outcome says
        whether its rows were counted, so they are neither lost nor counted twice.
        """
        earlier = self._writing
        if earlier is not None:
            # A cancelled flush's write may still be running: rows it fails to write
            # come back only when it ends, and must go into this batch.
            await asyncio.wait([earlier[0]])
            self._settle(earlier)
        rows = self.take()
        if not rows:
            return 0
        writing = (asyncio.ensure_future(index.write(lambda ix: ix.add_downloads(rows))), rows)
        self._writing = writing
        writing[0].add_done_callback(lambda _: self._settle(writing))
        await asyncio.shield(writing[0])
        return len(rows)

    def _settle(self, writing: _Write) -> None:
        """Once, when a flush's write has ended: put its rows back unless it committed."""
        if self._writing is not writing:
            return
        self._writing = None
        done, rows = writing
        if done.cancelled() or done.exception() is not None:
            self.put_back(rows)


def download_log(state: State) -> DownloadLog:
    """The daemon's shared DownloadLog (made on first use)."""
    return state.shared(_EXTRAS_KEY, DownloadLog)


async def download_flusher(daemon: Daemon, every_s: float = FLUSH_EVERY_S) -> None:
    """Service: flush download counters every ``every_s`` and once more when stopped."""
    log = download_log(daemon.state)
    try:
        while True:
            await asyncio.sleep(every_s)
            try:
                await log.flush(daemon.index)
            except (OSError, sqlite3.Error):
                logger.error("could not write download counters; retrying", exc_info=True)
    finally:
        # Runs when the daemon cancels its services: the index is still open then.
        await log.flush(daemon.index)
