"""The index's SQLite schema: connection settings, versioned migrations.

The schema version lives in ``PRAGMA user_version``; each entry of ``_MIGRATIONS``
takes the database one version up and is never edited once released (a new change is
a new entry). :func:`migrate` is safe against another process migrating at the same
time: each step re-checks the version under the write lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "connect", "migrate"]

_MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE clips(
        job_id TEXT PRIMARY KEY,
        relpath TEXT NOT NULL UNIQUE,
        day TEXT NOT NULL,
        title TEXT NOT NULL,
        ext TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        ingested_at REAL NOT NULL,
        verified_at REAL NOT NULL,
        display_title TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'ok',
        backed_up INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX clips_by_mtime ON clips(mtime_ns);
    CREATE INDEX clips_by_verified ON clips(verified_at);
    CREATE INDEX clips_not_backed_up ON clips(ingested_at) WHERE backed_up = 0;
    CREATE TABLE totals(id INTEGER PRIMARY KEY CHECK (id = 1), files INTEGER NOT NULL,
                        bytes INTEGER NOT NULL);
    INSERT INTO totals VALUES (1, 0, 0);
    CREATE TABLE day_totals(day TEXT PRIMARY KEY, files INTEGER NOT NULL, bytes INTEGER NOT NULL);
    -- bytes added per UTC day of ingest, for the growth trend; never decremented
    CREATE TABLE added_daily(day TEXT PRIMARY KEY, files INTEGER NOT NULL,
                             bytes INTEGER NOT NULL);
    CREATE TABLE downloads_daily(day TEXT NOT NULL, job_id TEXT NOT NULL,
                                 count INTEGER NOT NULL, bytes INTEGER NOT NULL,
                                 PRIMARY KEY (day, job_id)) WITHOUT ROWID;
    CREATE TRIGGER clips_ai AFTER INSERT ON clips BEGIN
        UPDATE totals SET files = files + 1, bytes = bytes + NEW.size_bytes;
        INSERT INTO day_totals VALUES (NEW.day, 1, NEW.size_bytes)
            ON CONFLICT(day) DO UPDATE SET files = files + 1, bytes = bytes + NEW.size_bytes;
        INSERT INTO added_daily VALUES (date(NEW.ingested_at, 'unixepoch'), 1, NEW.size_bytes)
            ON CONFLICT(day) DO UPDATE SET files = files + 1, bytes = bytes + NEW.size_bytes;
    END;
    CREATE TRIGGER clips_ad AFTER DELETE ON clips BEGIN
        UPDATE totals SET files = files - 1, bytes = bytes - OLD.size_bytes;
        UPDATE day_totals SET files = files - 1, bytes = bytes - OLD.size_bytes
            WHERE day = OLD.day;
        DELETE FROM day_totals WHERE day = OLD.day AND files <= 0;
    END;
    CREATE TRIGGER clips_au AFTER UPDATE OF size_bytes, day ON clips BEGIN
        UPDATE totals SET bytes = bytes - OLD.size_bytes + NEW.size_bytes;
        UPDATE day_totals SET files = files - 1, bytes = bytes - OLD.size_bytes
            WHERE day = OLD.day;
        DELETE FROM day_totals WHERE day = OLD.day AND files <= 0;
        INSERT INTO day_totals VALUES (NEW.day, 1, NEW.size_bytes)
            ON CONFLICT(day) DO UPDATE SET files = files + 1, bytes = bytes + NEW.size_bytes;
    END;
    """,
    # version 2: the write methods keep the aggregates, one statement per touched day
    # and batch instead of three trigger statements per row (half a cold index's writes)
    """
    DROP TRIGGER clips_ai;
    DROP TRIGGER clips_ad;
    DROP TRIGGER clips_au;
    """,
]


SCHEMA_VERSION = len(_MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the index at ``path`` in autocommit mode, WAL, waiting up to 30 s
    for another process's lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode stays consistent after a crash; a power cut may lose the last
    # transactions, which the start-up reconcile then redoes from the tree.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database on ``conn`` to :data:`SCHEMA_VERSION`; blocks on SQLite.

    Raises RuntimeError when the database is newer than this clipd.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"{path}: schema version {version} is newer than this clipd "
            f"({SCHEMA_VERSION}); upgrade clipd"
        )
    for number in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated between our read and our lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] <= number:
                for statement in _split_sql(_MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("--") or not stripped:
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
