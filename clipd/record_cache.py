"""Index records of recently downloaded local clips, kept in memory for the next download.

Each download needs its clip's record (relpath, identity, SHA-256, titles). Reading it
from SQLite costs more than the rest of clipd's work on a download: the read runs in a
worker thread, and the sqlite3 module releases and re-takes the GIL several times per
statement, each time waiting for the busy event loop to hand it back. A cached entry
replaces that read; it never replaces the integrity check.

When an entry is used (all of this is checked by :func:`clipd.download._find`):

- the file's ``lstat`` identity (inode, size, mtime_ns, ctime_ns), taken in a worker
  thread for this download, must equal the identity in the record, exactly as it must
  equal the index row without the cache. Any other answer (a replaced, touched, moved
  or deleted file, a symlink) drops the entry and the download reads the index, which
  decides as before (refresh, 409 and quarantine, 404);
- the index must not have changed since the record was read
  (:attr:`clipd.async_index.AsyncIndex.generation`, checked before and after the ``lstat``).
  The generation is bumped after each committed write of this daemon that changed a
  clip row (removals, quarantines, refreshes, re-ingests, uploads: seen at once; new
  clips, download counters and verification or backup marks keep it:
  :attr:`clipd.index.Index.benign_changes`), and by the first write after
  another process committed to the database (SQLite's ``PRAGMA data_version``). The
  daemon writes at least once a second (the totals refresh), so a change made by
  ``clipd cleanup``, ``clipd migrate`` or a hand edit ends every entry within about a
  second, even when it leaves the file as it is (a cleanup killed between marking a
  row ``deleting`` and unlinking its file);
- the entry is younger than ``max_age_s`` (30 s): a backstop should the refresh stall.

Bounded (LRU, ``capacity`` entries, ~1 KiB each) and loop-only: no locking.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipd.record import ClipRecord

__all__ = ["CACHE_CAPACITY", "MAX_AGE_S", "CachedRecord", "RecordCache"]

CACHE_CAPACITY = 4096
MAX_AGE_S = 30.0


@dataclass(frozen=True, slots=True)
class CachedRecord:
    """A record read from the index at ``generation``, with its clip's local path."""

    record: ClipRecord
    local: Path
    generation: int
    read_at: float  # the cache's clock (monotonic seconds)


class RecordCache:
    """job id → :class:`CachedRecord`, LRU-bounded, emptied when the generation moves."""

    def __init__(
        self,
        capacity: int = CACHE_CAPACITY,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.max_age_s = max_age_s
        self._clock = clock
        self._generation = 0
        self._entries: OrderedDict[str, CachedRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, job_id: str, generation: int) -> CachedRecord | None:
        """The entry of ``job_id`` if it was read at ``generation`` and is young enough."""
        if not self._at(generation):
            return None
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        if self._clock() - entry.read_at >= self.max_age_s:
            del self._entries[job_id]
            return None
        self._entries.move_to_end(job_id)
        return entry

    def put(self, record: ClipRecord, local: Path, generation: int, read_at: float) -> None:
        """Keep ``record``, read from the index at ``generation`` (taken before the read)
        and at ``read_at`` (:meth:`now`, also taken before the read)."""
        if not self._at(generation):
            return  # the index changed since this record was read
        self._entries[record.job_id] = CachedRecord(record, local, generation, read_at)
        self._entries.move_to_end(record.job_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def _at(self, generation: int) -> bool:
        """Whether ``generation`` is the cache's; a newer one empties it first (every
        entry was read before the index changed: none can be trusted)."""
        if generation > self._generation:
            self._entries.clear()
            self._generation = generation
        return generation == self._generation

    def drop(self, job_id: str) -> None:
        """Forget ``job_id`` (its file no longer matches the entry)."""
        self._entries.pop(job_id, None)

    def now(self) -> float:
        return self._clock()
