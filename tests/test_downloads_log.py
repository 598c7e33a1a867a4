"""DownloadLog on its own: per-day counting with an injected clock, take/put_back, and
flushes into a real SQLite index (one download-level test is in tests/test_jobs.py)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipd import config as config_mod
from clipd.async_index import AsyncIndex
from clipd.downloads_log import FLUSH_EVERY_S, DownloadLog, download_flusher, download_log
from clipd.index import Index, index_path
from clipd.metrics import Metrics
from clipd.naming import day_of
from clipd.storage.local import LocalBackend
from clipd.web import State

# 2026-11-24T00:00:00Z
MIDNIGHT = 1795478400.0


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[AsyncIndex]:
    ix = AsyncIndex(index_path(tmp_path))
    await ix.open()
    yield ix
    await ix.close()


async def _rows(index: AsyncIndex) -> list[tuple[str, str, int, int]]:
    return await index.read(lambda ix: ix.downloads("2000-01-01"))


def test_counts_and_bytes_add_up_per_day_and_job() -> None:
    log = DownloadLog(clock=_Clock(MIDNIGHT + 5))
    log.count("a", 100)
    log.count("a", 50)
    log.count("b", 0)
    assert sorted(log.take()) == [("2026-11-24", "a", 2, 150), ("2026-11-24", "b", 1, 0)]


def test_take_leaves_nothing_pending() -> None:
    log = DownloadLog(clock=_Clock(MIDNIGHT))
    log.count("a", 1)
    assert log.take() == [("2026-11-24", "a", 1, 1)]
    assert log.take() == []


def test_a_download_after_utc_midnight_counts_on_the_next_day() -> None:
    clock = _Clock(MIDNIGHT - 0.001)
    log = DownloadLog(clock=clock)
    log.count("a", 10)
    clock.now = MIDNIGHT
    log.count("a", 20)
    assert sorted(log.take()) == [("2026-11-23", "a", 1, 10), ("2026-11-24", "a", 1, 20)]


def test_a_clock_going_back_a_day_counts_on_that_day_again() -> None:
    clock = _Clock(MIDNIGHT + 10)
    log = DownloadLog(clock=clock)
    log.count("a", 1)
    clock.now = MIDNIGHT - 10
    log.count("a", 2)
    assert sorted(log.take()) == [("2026-11-23", "a", 1, 2), ("2026-11-24", "a", 1, 1)]


def test_put_back_merges_with_downloads_counted_since() -> None:
    log = DownloadLog(clock=_Clock(MIDNIGHT))
    log.count("a", 10)
    rows = log.take()
    log.count("a", 5)
    log.count("b", 7)
    log.put_back([*rows, ("2026-11-20", "c", 3, 300)])
    assert sorted(log.take()) == [
        ("2026-11-20", "c", 3, 300),
        ("2026-11-24", "a", 2, 15),
        ("2026-11-24", "b", 1, 7),
    ]


_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("count"), st.sampled_from("abc"), st.integers(0, 10**9)),
        st.tuples(st.just("day"), st.integers(-3, 3)),
        st.tuples(st.just("take_and_put_back"), st.booleans()),
    ),
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(events=_EVENTS)
def test_property_take_and_put_back_lose_and_invent_no_count(
    events: list[tuple[object, ...]],
) -> None:
    """Whatever mix of counts, day changes and failed flushes (take then put_back, or
    a successful one whose rows are kept aside): every download and byte is in exactly
    one row at the end, on the day it was counted."""
    clock = _Clock(MIDNIGHT)
    log = DownloadLog(clock=clock)
    expected: Counter[tuple[str, str]] = Counter()
    expected_bytes: Counter[tuple[str, str]] = Counter()
    written: list[tuple[str, str, int, int]] = []
    for event in events:
        if event[0] == "count":
            _, job, size = event
            assert isinstance(job, str) and isinstance(size, int)
            log.count(job, size)
            day = day_of(clock.now)
            expected[day, job] += 1
            expected_bytes[day, job] += size
        elif event[0] == "day":
            assert isinstance(event[1], int)
            clock.now = MIDNIGHT + event[1] * 86400 + 1
        else:
            rows = log.take()
            if event[1]:
                log.put_back(rows)  # the flush failed
            else:
                written.extend(rows)  # the flush succeeded
    written.extend(log.take())
    got: Counter[tuple[str, str]] = Counter()
    got_bytes: Counter[tuple[str, str]] = Counter()
    for day, job, n, size in written:
        got[day, job] += n
        got_bytes[day, job] += size
    assert got == expected and got_bytes == expected_bytes


async def test_flush_of_nothing_writes_nothing_even_on_a_closed_index(tmp_path: Path) -> None:
    never_opened = AsyncIndex(index_path(tmp_path))
    assert await DownloadLog().flush(never_opened) == 0


async def test_flush_writes_one_row_per_day_and_job_and_adds_to_earlier_flushes(
    index: AsyncIndex,
) -> None:
    clock = _Clock(MIDNIGHT)
    log = DownloadLog(clock=clock)
    log.count("a", 10)
    log.count("b", 1)
    assert await log.flush(index) == 2
    log.count("a", 5)
    assert await log.flush(index) == 1
    assert await _rows(index) == [("2026-11-24", "a", 2, 15), ("2026-11-24", "b", 1, 1)]
    assert await log.flush(index) == 0


async def test_failed_flush_keeps_the_rows_for_the_next_one(tmp_path: Path) -> None:
    log = DownloadLog(clock=_Clock(MIDNIGHT))
    log.count("a", 10)
    closed = AsyncIndex(index_path(tmp_path))  # not open: every write raises
    with pytest.raises(RuntimeError, match="not open"):
        await log.flush(closed)
    log.count("a", 1)
    await closed.open()
    try:
        assert await log.flush(closed) == 1
        assert await _rows(closed) == [("2026-11-24", "a", 2, 11)]
    finally:
        await closed.close()


async def test_flush_keeps_a_generation_so_cached_records_stay_valid(index: AsyncIndex) -> None:
    log = DownloadLog(clock=_Clock(MIDNIGHT))
    log.count("a", 10)
    before = index.generation
    await log.flush(index)
    assert index.generation == before


def _state(tmp_path: Path, index: AsyncIndex) -> State:
    cfg = config_mod.load({}, {"CLIPS_DIR": str(tmp_path)}, None)
    return State(config=cfg, index=index, metrics=Metrics(), backend=LocalBackend(tmp_path))


async def test_download_log_is_one_object_per_state(tmp_path: Path, index: AsyncIndex) -> None:
    state, other = _state(tmp_path, index), _state(tmp_path, index)
    assert download_log(state) is download_log(state)
    assert download_log(other) is not download_log(state)


async def test_flusher_writes_what_is_pending_when_it_is_cancelled(
    tmp_path: Path, index: AsyncIndex
) -> None:
    state = _state(tmp_path, index)
    daemon: Any = SimpleNamespace(state=state, index=index)
    task = asyncio.create_task(download_flusher(daemon, every_s=3600.0))
    await asyncio.sleep(0)  # the flusher is now waiting for its first period
    download_log(state).count("a", 42)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await _rows(index)
    assert [(job, n, size) for _, job, n, size in rows] == [("a", 1, 42)]


async def test_flusher_flushes_every_period_while_running(
    tmp_path: Path, index: AsyncIndex
) -> None:
    assert FLUSH_EVERY_S == 5.0
    state = _state(tmp_path, index)
    daemon: Any = SimpleNamespace(state=state, index=index)
    download_log(state).count("a", 1)
    task = asyncio.create_task(download_flusher(daemon, every_s=0.01))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not await _rows(index):
            assert asyncio.get_running_loop().time() < deadline, "no periodic flush"
            await asyncio.sleep(0.01)
        # The row is committed but the flush may not have got its result yet; a write
        # queued behind it on the single writer returns after it has.
        await index.write(lambda ix: None)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(job, n) for _, job, n, _ in await _rows(index)] == [("a", 1)]


async def test_flush_cancelled_during_its_write_counts_each_download_once(
    index: AsyncIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed, release = threading.Event(), threading.Event()
    real = Index.add_downloads

    def add_downloads(self: Index, batch: Any) -> None:
        real(self, batch)
        committed.set()  # in the database; the loop has not heard back yet
        release.wait(10)

    monkeypatch.setattr(Index, "add_downloads", add_downloads)
    log = DownloadLog(clock=_Clock(MIDNIGHT))
    log.count("a", 10)
    flush = asyncio.create_task(log.flush(index))
    assert await asyncio.to_thread(committed.wait, 10)
    flush.cancel()  # e.g. the daemon stopping its services
    with pytest.raises(asyncio.CancelledError):
        await flush
    release.set()
    await log.flush(index)  # what the flusher does in its finally
    assert await _rows(index) == [("2026-11-24", "a", 1, 10)]
