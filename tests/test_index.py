"""The SQLite index: aggregates kept by its write methods, readers beside a writer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipd.async_index import AsyncIndex
from clipd.index import Index, index_path
from clipd.record import ClipRecord, ClipSummary, Totals


def rec(job: str, day: str = "2026-11-24", size: int = 10, ingested_at: float = 1e9) -> ClipRecord:
    return ClipRecord(
        job_id=job,
        relpath=f"{day}/T_{job}.mp4",
        day=day,
        title="T",
        ext=".mp4",
        size_bytes=size,
        mtime_ns=1,
        ctime_ns=1,
        inode=1,
        sha256="0" * 64,
        ingested_at=ingested_at,
        verified_at=ingested_at,
    )


@pytest.fixture
def index(tmp_path: Path) -> Index:
    ix = Index(index_path(tmp_path))
    yield ix
    ix.close()


def test_aggregates_follow_inserts_updates_and_deletes(index: Index) -> None:
    index.upsert_many([rec("a", size=10), rec("b", size=20), rec("c", "2026-11-25", 5)])
    assert index.totals() == Totals(3, 35)
    assert index.day_totals() == {"2026-11-24": Totals(2, 30), "2026-11-25": Totals(1, 5)}
    index.upsert(replace(rec("a"), size_bytes=100))
    assert index.totals() == Totals(3, 125)
    index.delete_many(["a", "b"])
    assert index.totals() == Totals(1, 5)
    assert index.day_totals() == {"2026-11-25": Totals(1, 5)}
    assert index.added_daily("1970-01-01") == {"2001-09-09": Totals(3, 35)}


def test_records_and_summaries_read_back_every_column(index: Index) -> None:
    rows = [replace(rec("a", size=7), mtime_ns=5, backed_up=True), rec("b", "2026-11-25")]
    index.upsert_many(rows)
    index.set_state("b", "deleting")
    stored = [rows[0], replace(rows[1], state="deleting")]
    assert list(index.records()) == sorted(stored, key=lambda r: (r.mtime_ns, r.job_id))
    assert type(next(index.records()).backed_up) is bool
    assert sorted(index.summaries()) == [
        ClipSummary(r.job_id, r.relpath, r.size_bytes, r.mtime_ns, r.state) for r in stored
    ]


def test_set_state_many_marks_only_the_given_rows_and_ignores_unknown_ids(index: Index) -> None:
    index.upsert_many([rec("a"), rec("b"), rec("c")])
    index.set_state_many(iter(["a", "c", "zz"]), "deleting")
    assert {r.job_id: r.state for r in index.records()} == {
        "a": "deleting",
        "b": "ok",
        "c": "deleting",
    }
    assert [r.job_id for r in index.pending_deletes()] == ["a", "c"]
    index.set_state_many([], "ok")
    assert index.totals() == Totals(3, 30)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"),
            st.integers(0, 10**9),
            st.sampled_from(["2026-11-01", "2026-11-02"]),
            st.booleans(),
        )
    )
)
def test_aggregates_always_equal_a_full_count(tmp_path_factory, ops) -> None:
    ix = Index(index_path(tmp_path_factory.mktemp("ix")))
    try:
        for job, size, day, delete in ops:
            if delete:
                ix.delete(job)
            else:
                ix.upsert(rec(job, day, size))
        rows = list(ix.records())
        assert ix.totals() == Totals(len(rows), sum(r.size_bytes for r in rows))
        per_day: dict[str, Totals] = {}
        for r in rows:
            t = per_day.get(r.day, Totals(0, 0))
            per_day[r.day] = Totals(t.files + 1, t.bytes + r.size_bytes)
        assert ix.day_totals() == per_day
    finally:
        ix.close()


def _assert_aggregates_match_rows(ix: Index) -> None:
    rows = list(ix.records())
    assert ix.totals() == Totals(len(rows), sum(r.size_bytes for r in rows))
    per_day: dict[str, Totals] = {}
    for r in rows:
        t = per_day.get(r.day, Totals(0, 0))
        per_day[r.day] = Totals(t.files + 1, t.bytes + r.size_bytes)
    assert ix.day_totals() == per_day


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.sampled_from("abcdef"),
                    st.integers(0, 10**9),
                    st.sampled_from(["2026-11-01", "2026-11-02", "2026-11-03"]),
                ),
                max_size=8,
            ),
            st.lists(st.sampled_from("abcdefz"), max_size=4),
        )
    )
)
def test_batched_writes_keep_aggregates_equal_to_a_full_count(tmp_path_factory, batches) -> None:
    # A batch may name one job id twice (the later row wins) or move it to another day.
    ix = Index(index_path(tmp_path_factory.mktemp("ix")))
    try:
        for upserts, deletes in batches:
            ix.upsert_many(rec(job, day, size) for job, size, day in upserts)
            _assert_aggregates_match_rows(ix)
            ix.delete_many(deletes + deletes)
            _assert_aggregates_match_rows(ix)
    finally:
        ix.close()


async def test_async_index_reads_see_writes(tmp_path: Path) -> None:
    ix = AsyncIndex(index_path(tmp_path))
    await ix.open()
    try:
        await ix.write(lambda w: w.upsert(rec("x", size=7)))
        assert (await ix.get("x")) == rec("x", size=7)
        assert await ix.read(lambda r: r.totals()) == Totals(1, 7)
    finally:
        await ix.close()
