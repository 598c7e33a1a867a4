"""The index from the event loop: every write on one writer thread, reads on a pool.

:class:`AsyncIndex` wraps the blocking :class:`clipd.index.Index` so nothing blocks
the loop, publishes the aggregates after each write, and bumps ``generation`` when a
write (or another process) changed what a download sees.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from clipd.index import Index
from clipd.record import ClipRecord, Totals

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncIndex"]

_T = TypeVar("_T")


def _running_loop() -> asyncio.AbstractEventLoop:
    # Imported here: the CLI commands use Index alone, and asyncio costs them ~25 ms.
    import asyncio

    return asyncio.get_running_loop()


class AsyncIndex:
    """The index from the event loop: writes on one thread, reads on a small pool."""

    def __init__(self, path: Path, readers: int = 4) -> None:
        self.path = path
        # The aggregates as of the latest write (or refresh), published by the writer
        # thread to the loop: handlers read them without a thread hop. The backup
        # backlog is counted too when ``track_backlog`` is set (backup enabled).
        self.totals = Totals(0, 0)
        self.backlog = 0
        self.track_backlog = False
        # Bumped on the writer thread after every write that changed a row, once it is
        # committed, and by the first write after another process (``clipd cleanup``,
        # ``clipd migrate``, a hand edit) committed to the database: an in-memory copy
        # of a row read before the bump is stale after it.
        self.generation = 0
        self._data_version: int | None = None
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="clipd-index-writer")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="clipd-index-reader")
        self._local = threading.local()
        self._readers: list[Index] = []
        self._lock = threading.Lock()
        self._writer: Index | None = None

    def open_blocking(self) -> None:
        """Create or migrate the database; blocks, call it via ``open``."""
        writer = self._writer_pool.submit(Index, self.path).result()
        self.totals, self.backlog = self._writer_pool.submit(self._aggregates, writer).result()
        self._writer = writer

    async def open(self) -> None:
        await _running_loop().run_in_executor(None, self.open_blocking)

    def _aggregates(self, writer: Index) -> tuple[Totals, int]:
        return writer.totals(), writer.backlog() if self.track_backlog else 0

    def _reader(self) -> Index:
        reader: Index | None = getattr(self._local, "index", None)
        if reader is None:
            reader = Index(self.path)
            self._local.index = reader
            with self._lock:
                self._readers.append(reader)
        return reader

    async def read(self, fn: Callable[[Index], _T]) -> _T:
        """Run ``fn(index)`` on a reader thread."""
        loop = _running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: fn(self._reader()))

    async def write(self, fn: Callable[[Index], _T]) -> _T:
        """Run ``fn(index)`` on the single writer thread, then publish the aggregates.

        ``generation`` is bumped when ``fn`` changed rows beyond
        :attr:`Index.benign_changes` (writes that leave every indexed clip as a download
        sees it: new clips, counters, verification and backup marks).
        """
        writer = self._writer
        if writer is None:
            raise RuntimeError("index is not open")
        loop = _running_loop()

        def run() -> _T:
            self._notice_other_writers(writer)
            changes, benign = writer._conn.total_changes, writer.benign_changes
            try:
                result = fn(writer)
            finally:
                if writer._conn.total_changes - changes != writer.benign_changes - benign:
                    self.generation += 1
            # On the writer thread, after the write: callbacks reach the loop in the
            # order of the writes (and before this write's own result), so ``totals``
            # never goes back in time and is current when ``write`` returns.
            loop.call_soon_threadsafe(self._publish, self._aggregates(writer))
            return result

        return await loop.run_in_executor(self._writer_pool, run)

    def _notice_other_writers(self, writer: Index) -> None:
        """Bump ``generation`` if another connection committed since the last write.

        SQLite's ``data_version`` changes on a connection only for commits made by other
        connections, so this writer's own writes never count.
        """
        (version,) = writer._conn.execute("PRAGMA data_version").fetchone()
        if self._data_version is not None and version != self._data_version:
            self.generation += 1
        self._data_version = version

    def _publish(self, aggregates: tuple[Totals, int]) -> None:
        self.totals, self.backlog = aggregates

    async def refresh_totals(self) -> Totals:
        """Re-read the aggregates (another process may have written the index)."""
        if self._writer is not None:
            await self.write(lambda ix: None)
        return self.totals

    def read_blocking(self, fn: Callable[[Index], _T]) -> _T:
        """Run ``fn`` with this thread's reader (for collectors called off the loop)."""
        return fn(self._reader())

    async def get(self, job_id: str) -> ClipRecord | None:
        return await self.read(lambda ix: ix.get(job_id))

    async def close(self) -> None:
        """Close every connection; the writer finishes queued writes first."""
        loop = _running_loop()
        writer, self._writer = self._writer, None
        if writer is not None:
            await loop.run_in_executor(self._writer_pool, writer.close)
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        with self._lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
