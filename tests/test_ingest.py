"""Ingestor.process on a real tree and SQLite index, with an injected clock.

The daemon-level paths (watcher events, conflicts and tampering quarantined by a real
process) are in tests/test_daemon.py; whole-tree passes in tests/test_ingest_reconcile.py
and tests/test_reconcile.py. These pin down each outcome, what a row keeps when its
file moves, the retry of files still being written, and the metric labels.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from clipd import checks
from clipd.async_index import AsyncIndex
from clipd.config import load
from clipd.index import index_path
from clipd.ingest import Ingestor, Outcome
from clipd.metrics import Metrics
from clipd.quarantine import quarantine_dir
from clipd.record import Totals
from tests.helpers import clip_bytes

DAY = "2026-11-24"
NOW_NS = 1_795_500_000 * 10**9  # 2026-11-24T06:00Z
SETTLED_S = NOW_NS / 1e9 - 3600  # written an hour ago


@dataclass
class Rig:
    ingestor: Ingestor
    index: AsyncIndex
    metrics: Metrics
    clips_dir: Path
    clock: list[int]
    recorded_calls: list[int]

    def put(self, name: str, data: bytes, day: str = DAY, mtime_s: float = SETTLED_S) -> str:
        path = self.clips_dir / day / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime_s, mtime_s))
        return f"{day}/{name}"

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
async def rig(clips_dir: Path) -> AsyncIterator[Rig]:
    config = load({}, {"CLIPS_DIR": str(clips_dir), "CLIPD_INGEST_SETTLE_SECONDS": "0.2"}, "")
    index = AsyncIndex(index_path(clips_dir))
    await index.open()
    metrics = Metrics()
    clock = [NOW_NS]
    ingestor = Ingestor(
        clips_dir, config.storage, config.ingest, index, metrics, 3600, lambda: clock[0]
    )
    calls: list[int] = []
    ingestor.on_recorded.append(lambda: calls.append(1))
    try:
        yield Rig(ingestor, index, metrics, clips_dir, clock, calls)
    finally:
        await asyncio.to_thread(ingestor.close)
        await index.close()


@pytest.mark.parametrize(
    ("path", "relpath"),
    [
        (f"{DAY}/Clip_a.mp4", f"{DAY}/Clip_a.mp4"),
        (f"{DAY}/anything.txt", f"{DAY}/anything.txt"),  # judged later, by process
        (f"{DAY}/.hidden.mp4", None),
        (f"{DAY}/Clip_a.mp4.tmp", None),
        ("Clip_a.mp4", None),  # not in a day folder
        ("misc/Clip_a.mp4", None),
        ("2026-02-30/Clip_a.mp4", None),  # not a calendar day
        (f"{DAY}/sub/Clip_a.mp4", None),  # too deep
        (DAY, None),
    ],
)
def test_relpath_of_accepts_only_visible_names_directly_in_day_folders(
    clips_dir: Path, path: str, relpath: str | None
) -> None:
    config = load({}, {"CLIPS_DIR": str(clips_dir)}, "")
    ingestor = Ingestor(clips_dir, config.storage, config.ingest, None, Metrics(), 3600)  # type: ignore[arg-type]
    try:
        assert ingestor.relpath_of(f"{clips_dir}/{path}") == relpath
        assert ingestor.relpath_of(f"/elsewhere/{path}") is None
    finally:
        ingestor.close()


async def test_settled_clip_is_recorded_counted_and_announced(rig: Rig) -> None:
    data = clip_bytes(5000, seed=1)
    relpath = rig.put("My_Clip_a.mp4", data)
    assert await rig.ingestor.process(relpath) is Outcome.RECORDED
    row = await rig.index.get("a")
    assert row is not None
    assert (row.relpath, row.day, row.title, row.ext) == (relpath, DAY, "My_Clip", ".mp4")
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert row.ingested_at == row.verified_at == NOW_NS / 1e9
    assert rig.metric("clipd_ingested_files_total") == 1.0
    assert rig.metric("clipd_ingested_bytes_total") == 5000.0
    assert rig.recorded_calls == [1]
    assert rig.index.totals == Totals(1, 5000)


async def test_processing_an_unchanged_clip_again_writes_and_counts_nothing(rig: Rig) -> None:
    relpath = rig.put("Clip_a.mp4", clip_bytes(5000))
    await rig.ingestor.process(relpath)
    row, generation = await rig.index.get("a"), rig.index.generation
    rig.clock[0] += 10**12
    assert await rig.ingestor.process(relpath) is Outcome.UNCHANGED
    assert await rig.index.get("a") == row
    assert rig.index.generation == generation
    assert rig.metric("clipd_ingested_files_total") == 1.0
    assert rig.recorded_calls == [1]


async def test_a_file_a_writer_holds_open_waits_for_it_however_old_its_mtime(rig: Rig) -> None:
    # A writer that pauses longer than the settle time (no close event yet) must not get
    # its half-written clip recorded, served, and later quarantined as tampered.
    relpath = rig.put("Clip_a.mp4", clip_bytes(5000))  # settled by mtime
    writer = os.open(rig.clips_dir / relpath, os.O_WRONLY)
    try:
        assert await rig.ingestor.process(relpath, final=False) is Outcome.BUSY
        assert await rig.index.get("a") is None
        assert not rig.ingestor.busy  # a stop does not wait for the writer
    finally:
        os.close(writer)
    assert await rig.ingestor.process(relpath, final=False) is Outcome.RECORDED


async def test_a_fresh_file_nobody_writes_is_recorded_without_waiting(rig: Rig) -> None:
    # E.g. renamed in just before the daemon started: READY=1 waits for it, not 2 s more.
    relpath = rig.put("Clip_a.mp4", clip_bytes(5000), mtime_s=NOW_NS / 1e9 - 0.1)
    assert await rig.ingestor.process(relpath, final=False) is Outcome.RECORDED


async def test_where_writers_cannot_be_seen_a_fresh_file_waits_for_the_settle_time(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the file's owner and no CAP_LEASE, or a filesystem without leases.
    monkeypatch.setattr(checks, "open_for_writing", lambda fd: None)
    relpath = rig.put("Clip_a.mp4", clip_bytes(5000), mtime_s=NOW_NS / 1e9 - 0.1)
    assert await rig.ingestor.process(relpath, final=False) is Outcome.RETRY
    assert rig.ingestor.busy  # a retry is scheduled
    assert await rig.index.get("a") is None
    rig.clock[0] += 10**9  # now settled (the retry comes after settle_seconds)
    await asyncio.wait_for(rig.ingestor.drain(), 10)
    row = await rig.index.get("a")
    assert row is not None and row.relpath == relpath


async def test_a_final_event_records_a_fresh_clip_at_once(rig: Rig) -> None:
    relpath = rig.put("Clip_a.mp4", clip_bytes(5000), mtime_s=NOW_NS / 1e9)
    assert await rig.ingestor.process(relpath, final=True) is Outcome.RECORDED


async def test_a_fresh_invalid_file_is_retried_not_quarantined(rig: Rig) -> None:
    relpath = rig.put("Clip_a.mp4", b"not yet a video", mtime_s=NOW_NS / 1e9 - 0.1)
    assert await rig.ingestor.process(relpath) is Outcome.RETRY
    assert (rig.clips_dir / relpath).exists()
    assert rig.metric("clipd_quarantined_files_total", reason="signature") == 0.0


@pytest.mark.parametrize(
    ("name", "data", "label"),
    [
        ("Clip_a.mp4", b"\x1a\x45\xdf\xa3" + bytes(5000), "signature"),
        ("Clip_a.mp4", b"", "min_bytes"),
        ("no-job-id.mp4", clip_bytes(5000), "name"),
        ("Clip_a.avi", clip_bytes(5000), "name"),
    ],
)
async def test_settled_invalid_files_are_quarantined_under_a_small_label(
    rig: Rig, name: str, data: bytes, label: str
) -> None:
    relpath = rig.put(name, data)
    assert await rig.ingestor.process(relpath) is Outcome.QUARANTINED
    assert not (rig.clips_dir / relpath).exists()
    assert (quarantine_dir(rig.clips_dir) / DAY / name).exists()
    assert rig.metric("clipd_quarantined_files_total", reason=label) == 1.0
    assert rig.metric("clipd_integrity_mismatches_total") == 0.0
    assert rig.index.totals == Totals(0, 0)


async def test_a_second_file_claiming_a_job_id_is_a_counted_conflict(rig: Rig) -> None:
    first = rig.put("First_a.mp4", clip_bytes(5000, seed=1))
    await rig.ingestor.process(first)
    second = rig.put("Second_a.mp4", clip_bytes(6000, seed=2), day="2026-11-25")
    assert await rig.ingestor.process(second) is Outcome.QUARANTINED
    row = await rig.index.get("a")
    assert row is not None and row.relpath == first
    assert rig.metric("clipd_quarantined_files_total", reason="conflict") == 1.0
    assert rig.recorded_calls == [1]


async def test_a_moved_clip_keeps_its_row_history(rig: Rig) -> None:
    old = rig.put("Clip_a.mp4", clip_bytes(5000))
    await rig.ingestor.process(old)
    row = await rig.index.get("a")
    assert row is not None
    kept = replace(row, display_title="Mon clip", backed_up=True)
    await rig.index.write(lambda ix: ix.upsert(kept))
    (rig.clips_dir / "2026-11-25").mkdir()
    os.rename(rig.clips_dir / old, rig.clips_dir / "2026-11-25" / "Clip_a.mp4")
    rig.clock[0] += 10**12
    assert await rig.ingestor.process("2026-11-25/Clip_a.mp4") is Outcome.RECORDED
    moved = await rig.index.get("a")
    assert moved is not None
    assert (moved.relpath, moved.day) == ("2026-11-25/Clip_a.mp4", "2026-11-25")
    # What the row knew beyond the file: first ingest time, display title, backup mark.
    assert (moved.ingested_at, moved.display_title, moved.backed_up) == (
        row.ingested_at,
        "Mon clip",
        True,
    )
    assert rig.index.totals == Totals(1, 5000)


async def test_a_vanished_file_forgets_its_row(rig: Rig) -> None:
    relpath = rig.put("Clip_a.mp4", clip_bytes(5000))
    await rig.ingestor.process(relpath)
    (rig.clips_dir / relpath).unlink()
    assert await rig.ingestor.process(relpath) is Outcome.GONE
    assert await rig.index.get("a") is None
    assert rig.index.totals == Totals(0, 0)


async def test_a_vanished_unknown_file_writes_nothing(rig: Rig) -> None:
    generation = rig.index.generation
    assert await rig.ingestor.process(f"{DAY}/Clip_a.mp4") is Outcome.GONE
    assert rig.index.generation == generation
    assert not quarantine_dir(rig.clips_dir).exists()
