"""The index schema: a version-1 database upgrades with its aggregates intact, the
version is recorded, reopening is idempotent, and a newer schema is refused."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from clipd.index import Index, index_path
from clipd.record import Totals
from clipd.schema import _MIGRATIONS, SCHEMA_VERSION, _split_sql
from tests.test_index import _assert_aggregates_match_rows, rec


def test_version_1_index_keeps_its_aggregates_after_the_upgrade(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    for statement in _split_sql(_MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO clips (job_id, relpath, day, title, ext, size_bytes, mtime_ns,"
        " ctime_ns, inode, sha256, ingested_at, verified_at)"
        " VALUES ('a', '2026-11-24/T_a.mp4', '2026-11-24', 'T', '.mp4', 10, 1, 1, 1,"
        " '', 1e9, 1e9)"
    )
    conn.commit()
    conn.close()
    ix = Index(path)
    try:
        assert ix.totals() == Totals(1, 10)
        ix.upsert_many([rec("b", size=5), replace(rec("a"), size_bytes=20, day="2026-11-25")])
        ix.delete("b")
        _assert_aggregates_match_rows(ix)
        assert ix.added_daily("1970-01-01") == {"2001-09-09": Totals(2, 15)}
        triggers = ix._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert triggers.fetchall() == []
    finally:
        ix.close()


def test_schema_version_is_recorded_and_reopen_is_idempotent(tmp_path: Path) -> None:
    Index(index_path(tmp_path)).close()
    ix = Index(index_path(tmp_path))
    ix.upsert(rec("a"))
    ix.close()
    conn = sqlite3.connect(index_path(tmp_path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Index(index_path(tmp_path)).close()
    conn = sqlite3.connect(index_path(tmp_path))
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this clipd"):
        Index(index_path(tmp_path))


def test_every_migration_is_applied_once_in_order(tmp_path: Path) -> None:
    Index(index_path(tmp_path)).close()
    conn = sqlite3.connect(index_path(tmp_path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert len(_MIGRATIONS) == SCHEMA_VERSION
    finally:
        conn.close()
