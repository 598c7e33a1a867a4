"""The sidecar index: one SQLite database (WAL) beside the clips tree.

Aggregates (file count, bytes, bytes per day, bytes added per day) are kept by the
write methods in the same transaction as the row change (per batch: one statement per
touched day), so reading them is O(1). Nothing else may write the ``clips`` table.
:class:`Index` is the blocking API (used from worker threads and the CLI);
:class:`clipd.async_index.AsyncIndex` wraps it for the event loop, and the record
types it stores live in :mod:`clipd.record`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from clipd.record import ClipRecord, ClipSummary, Identity, Totals
from clipd.schema import connect, migrate

__all__ = [
    "INDEX_DIRNAME",
    "Index",
    "index_path",
]

INDEX_DIRNAME = ".clipd"


def index_path(clips_dir: Path) -> Path:
    return clips_dir / INDEX_DIRNAME / "index.sqlite3"


_COLUMNS = [f.name for f in fields(ClipRecord)]
# A flat row tuple; dataclasses.astuple deep-copies every field (most of an upsert's cost).
_as_row = attrgetter(*_COLUMNS)


def _row_to_record(row: tuple[Any, ...]) -> ClipRecord:
    # Positional (the SELECT lists the fields in order): keywords cost half as much again.
    values: list[Any] = list(row)
    values[-1] = bool(values[-1])  # backed_up, an INTEGER column
    return ClipRecord(*values)


_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM clips"
# A set-based filter on many job ids, passed as one JSON array (SQLite >= 3.38 has JSON).
_IN_IDS = "job_id IN (SELECT value FROM json_each(?))"
_identity_key = itemgetter(0, 1, 2, 3, 4)
_job_of_row = itemgetter(5)
_UPSERT = (
    f"INSERT INTO clips ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
    " ON CONFLICT(job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "job_id")
)


class _Delta:
    """Changes to the aggregates made by one batch of row writes, applied at once."""

    __slots__ = ("added_by_time", "by_day", "files", "size_bytes")

    def __init__(self) -> None:
        self.files = 0
        self.size_bytes = 0
        self.by_day: dict[str, list[int]] = {}
        # Keyed by ingest time (a batch shares one); SQLite turns it into the UTC day.
        self.added_by_time: dict[float, list[int]] = {}

    def add(self, day: str, files: int, size_bytes: int) -> None:
        self.files += files
        self.size_bytes += size_bytes
        entry = self.by_day.setdefault(day, [0, 0])
        entry[0] += files
        entry[1] += size_bytes

    def added(self, ingested_at: float, size_bytes: int) -> None:
        entry = self.added_by_time.setdefault(ingested_at, [0, 0])
        entry[0] += 1
        entry[1] += size_bytes

    def apply(self, conn: sqlite3.Connection) -> None:
        if not self.by_day:
            return
        conn.execute(
            "UPDATE totals SET files = files + ?, bytes = bytes + ?", (self.files, self.size_bytes)
        )
        conn.executemany(
            "INSERT INTO day_totals VALUES (?, ?, ?) ON CONFLICT(day) DO UPDATE SET"
            " files = files + excluded.files, bytes = bytes + excluded.bytes",
            ((day, f, b) for day, (f, b) in self.by_day.items()),
        )
        conn.executemany(
            "DELETE FROM day_totals WHERE day = ? AND files <= 0", ((d,) for d in self.by_day)
        )
        conn.executemany(
            "INSERT INTO added_daily VALUES (date(?, 'unixepoch'), ?, ?) ON CONFLICT(day)"
            " DO UPDATE SET files = files + excluded.files, bytes = bytes + excluded.bytes",
            ((t, f, b) for t, (f, b) in self.added_by_time.items()),
        )


class Index:
    """Blocking access to the index; one instance per thread that uses it.

    Every method blocks on SQLite (it waits up to 30 s for another process's lock).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = connect(path)
        # Rows changed by writes that leave every indexed clip as a download sees it
        # (new clips, download counters, verification and backup marks): AsyncIndex
        # keeps its generation, and so the download cache, for them.
        self.benign_changes = 0
        migrate(self._conn, path)

    def close(self) -> None:
        self._conn.close()

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> Index._Tx:
        return Index._Tx(self._conn)

    # -- reads ---------------------------------------------------------------------------

    def get(self, job_id: str) -> ClipRecord | None:
        row = self._conn.execute(_SELECT + " WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _row_to_record(row)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, ClipRecord]:
        """job id → row for those of ``job_ids`` that are indexed (one query per 500)."""
        found: dict[str, ClipRecord] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self._conn.execute(_SELECT + f" WHERE job_id IN ({marks})", chunk):
                record = _row_to_record(row)
                found[record.job_id] = record
        return found

    def get_by_relpath(self, relpath: str) -> ClipRecord | None:
        row = self._conn.execute(_SELECT + " WHERE relpath = ?", (relpath,)).fetchone()
        return None if row is None else _row_to_record(row)

    def totals(self) -> Totals:
        files, size = self._conn.execute("SELECT files, bytes FROM totals").fetchone()
        return Totals(files, size)

    def day_totals(self) -> dict[str, Totals]:
        rows = self._conn.execute("SELECT day, files, bytes FROM day_totals ORDER BY day")
        return {day: Totals(files, size) for day, files, size in rows}

    def added_daily(self, since_day: str) -> dict[str, Totals]:
        rows = self._conn.execute(
            "SELECT day, files, bytes FROM added_daily WHERE day >= ? ORDER BY day", (since_day,)
        )
        return {day: Totals(files, size) for day, files, size in rows}

    def records(self, order_by: str = "mtime_ns") -> Iterator[ClipRecord]:
        """All rows, oldest first by ``order_by`` (``mtime_ns`` or ``verified_at``)."""
        if order_by not in {"mtime_ns", "verified_at", "ingested_at"}:
            raise ValueError(order_by)
        for row in self._conn.execute(_SELECT + f" ORDER BY {order_by}, job_id"):
            yield _row_to_record(row)

    def summaries(self) -> list[ClipSummary]:
        """Every row's job id, relpath, size, mtime and state, in no particular order.

        What retention plans with: a full-table scan into named tuples, without the
        other columns nor the mtime index's lookup per row."""
        return list(
            map(
                ClipSummary._make,
                self._conn.execute(
                    "SELECT job_id, relpath, size_bytes, mtime_ns, state FROM clips"
                ),
            )
        )

    def identity_keys(self) -> dict[tuple[str, int, int, int, int], str]:
        """(relpath, size, mtime_ns, ctime_ns, inode) → job id for every row (reconcile).

        Built without a Python-level step per row: a warm restart reads 20k of them."""
        rows = self._conn.execute(
            "SELECT relpath, size_bytes, mtime_ns, ctime_ns, inode, job_id FROM clips"
        ).fetchall()
        return dict(zip(map(_identity_key, rows), map(_job_of_row, rows), strict=True))

    def identities(self) -> dict[str, tuple[str, Identity]]:
        """relpath → (job id, identity) for every row: what reconcile compares with."""
        rows = self._conn.execute(
            "SELECT relpath, job_id, size_bytes, mtime_ns, ctime_ns, inode FROM clips"
        )
        return {r[0]: (r[1], Identity(r[2], r[3], r[4], r[5])) for r in rows}

    def least_recently_verified(self, limit: int) -> list[ClipRecord]:
        rows = self._conn.execute(
            _SELECT + " WHERE state = 'ok' ORDER BY verified_at, job_id LIMIT ?", (limit,)
        )
        return [_row_to_record(r) for r in rows]

    def not_backed_up(self, limit: int) -> list[ClipRecord]:
        rows = self._conn.execute(
            _SELECT + " WHERE backed_up = 0 AND state = 'ok' ORDER BY ingested_at LIMIT ?",
            (limit,),
        )
        return [_row_to_record(r) for r in rows]

    def backlog(self) -> int:
        (count,) = self._conn.execute(
            "SELECT count(*) FROM clips WHERE backed_up = 0 AND state = 'ok'"
        ).fetchone()
        return int(count)

    def pending_deletes(self) -> list[ClipRecord]:
        rows = self._conn.execute(_SELECT + " WHERE state = 'deleting'")
        return [_row_to_record(r) for r in rows]

    def downloads(self, since_day: str) -> list[tuple[str, str, int, int]]:
        """(day, job id, count, bytes) rows on or after ``since_day``."""
        return list(
            self._conn.execute(
                "SELECT day, job_id, count, bytes FROM downloads_daily WHERE day >= ?"
                " ORDER BY day, job_id",
                (since_day,),
            )
        )

    # -- writes --------------------------------------------------------------------------

    def upsert(self, record: ClipRecord) -> None:
        """Insert or replace the row of ``record.job_id`` (aggregates follow)."""
        self.upsert_many([record])

    def upsert_many(self, records: Iterable[ClipRecord]) -> None:
        """Insert or replace rows by job id in one transaction, aggregates included."""
        rows = [_as_row(r) for r in records]
        if not rows:
            return
        with self._transaction() as conn:
            current = self._days_and_sizes(conn, [row[0] for row in rows])
            only_new, before = not current, conn.total_changes
            delta = _Delta()
            for row in rows:
                job_id, day, size, ingested_at = row[0], row[2], row[5], row[10]
                previous = current.get(job_id)
                if previous is None:
                    delta.add(day, 1, size)
                    delta.added(ingested_at, size)
                else:
                    delta.add(previous[0], -1, -previous[1])
                    delta.add(day, 1, size)
                current[job_id] = (day, size)
            conn.executemany(_UPSERT, rows)
            delta.apply(conn)
            if only_new:  # inserts (job id and relpath are unique): no clip changed
                self.benign_changes += conn.total_changes - before

    def delete_many(self, job_ids: Iterable[str]) -> None:
        """Delete rows by job id in one transaction (unknown ids are ignored)."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return
        with self._transaction() as conn:
            delta = _Delta()
            for day, size in self._days_and_sizes(conn, ids).values():
                delta.add(day, -1, -size)
            conn.executemany("DELETE FROM clips WHERE job_id = ?", ((j,) for j in ids))
            delta.apply(conn)

    def finish_deletions(self, done: Sequence[str], kept: Sequence[str] = ()) -> None:
        """Drop the rows of ``done`` and set ``kept`` back to ``ok``, in one transaction.

        Set-based: one statement per step for the whole batch (the ids go in as one JSON
        array), the aggregates fixed up from a GROUP BY in the same transaction; retention
        finishes a batch of removals with it (``kept``: files it could not delete)."""
        with self._transaction() as conn:
            if done:
                ids = json.dumps(list(done))
                delta = _Delta()
                for day, files, size in conn.execute(
                    "SELECT day, count(*), sum(size_bytes) FROM clips"
                    f" WHERE {_IN_IDS} GROUP BY day",
                    (ids,),
                ):
                    delta.add(day, -files, -size)
                conn.execute(f"DELETE FROM clips WHERE {_IN_IDS}", (ids,))
                delta.apply(conn)
            if kept:
                conn.execute(
                    f"UPDATE clips SET state = 'ok' WHERE {_IN_IDS}", (json.dumps(list(kept)),)
                )

    def delete(self, job_id: str) -> None:
        self.delete_many([job_id])

    @staticmethod
    def _days_and_sizes(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for job_id, day, size in conn.execute(
                f"SELECT job_id, day, size_bytes FROM clips WHERE job_id IN ({marks})", chunk
            ):
                found[job_id] = (day, size)
        return found

    def set_state(self, job_id: str, state: str) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE clips SET state = ? WHERE job_id = ?", (state, job_id))

    def set_state_many(self, job_ids: Iterable[str], state: str) -> None:
        """Set ``state`` on many rows in one transaction (retention marks a batch).

        One set-based statement, the ids passed as one JSON array (unknown ids are
        ignored), like :meth:`finish_deletions`."""
        ids = json.dumps(list(job_ids))
        with self._transaction() as conn:
            conn.execute(f"UPDATE clips SET state = ? WHERE {_IN_IDS}", (state, ids))

    def set_verified(self, job_id: str, verified_at: float) -> None:
        with self._benign_transaction() as conn:
            conn.execute("UPDATE clips SET verified_at = ? WHERE job_id = ?", (verified_at, job_id))

    def set_backed_up(self, job_id: str) -> None:
        with self._benign_transaction() as conn:
            conn.execute("UPDATE clips SET backed_up = 1 WHERE job_id = ?", (job_id,))

    def add_downloads(self, batch: Iterable[tuple[str, str, int, int]]) -> None:
        """Add (day, job id, count, bytes) increments in one transaction."""
        with self._benign_transaction() as conn:
            conn.executemany(
                "INSERT INTO downloads_daily VALUES (?, ?, ?, ?) ON CONFLICT(day, job_id)"
                " DO UPDATE SET count = count + excluded.count, bytes = bytes + excluded.bytes",
                batch,
            )

    @contextlib.contextmanager
    def _benign_transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose changes all count as :attr:`benign_changes`."""
        before = self._conn.total_changes
        try:
            with self._transaction() as conn:
                yield conn
        finally:
            self.benign_changes += self._conn.total_changes - before
