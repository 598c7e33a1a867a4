"""remove_clip and finish_pending over a real SQLite index and the local backend.

Covers the crash-safety order (mark, delete bytes, drop row) and the completion of
removals a crash interrupted; retention and cleanup use these through their own tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clipd.async_index import AsyncIndex
from clipd.checks import sha256_file
from clipd.index import index_path
from clipd.naming import parse_relpath
from clipd.record import ClipRecord, Totals, new_record
from clipd.removal import finish_pending, remove_clip
from clipd.storage.local import LocalBackend
from tests.helpers import clip_bytes, write_clip

DAY = "2026-11-24"


@pytest.fixture
async def index(clips_dir: Path) -> AsyncIterator[AsyncIndex]:
    ix = AsyncIndex(index_path(clips_dir))
    await ix.open()
    yield ix
    await ix.close()


async def _add(index: AsyncIndex, clips_dir: Path, job_id: str, size: int = 1000) -> ClipRecord:
    path = write_clip(clips_dir, DAY, f"Clip_{job_id}.mp4", clip_bytes(size, seed=size))
    relpath = f"{DAY}/{path.name}"
    parsed = parse_relpath(relpath)
    assert parsed is not None
    sha, identity = sha256_file(path)
    record = new_record(parsed[1], relpath, DAY, identity, sha, time.time())
    await index.write(lambda ix: ix.upsert(record))
    return record


class _FailingDelete(LocalBackend):
    """The process dies (here: the delete raises) after the row was marked."""

    async def delete(self, relpath: str) -> bool:
        raise OSError("simulated crash before the unlink")


class _SeesStateAtDelete(LocalBackend):
    """Records the row's state at the moment the bytes are deleted."""

    def __init__(self, clips_dir: Path, index: AsyncIndex) -> None:
        super().__init__(clips_dir)
        self.index = index
        self.states: list[str | None] = []

    async def delete(self, relpath: str) -> bool:
        row = await self.index.read(lambda ix: ix.get_by_relpath(relpath))
        self.states.append(None if row is None else row.state)
        return await super().delete(relpath)


async def test_remove_clip_deletes_bytes_and_row_and_updates_totals(
    index: AsyncIndex, clips_dir: Path
) -> None:
    record = await _add(index, clips_dir, "a", 1000)
    await _add(index, clips_dir, "b", 300)
    generation = index.generation
    assert await remove_clip(index, LocalBackend(clips_dir), record) is True
    assert not (clips_dir / record.relpath).exists()
    assert await index.get("a") is None
    assert index.totals == Totals(1, 300)
    assert index.generation > generation  # cached copies of the row are now stale


async def test_remove_clip_of_a_file_already_gone_returns_false_and_drops_the_row(
    index: AsyncIndex, clips_dir: Path
) -> None:
    record = await _add(index, clips_dir, "a")
    (clips_dir / record.relpath).unlink()
    assert await remove_clip(index, LocalBackend(clips_dir), record) is False
    assert await index.get("a") is None
    assert index.totals == Totals(0, 0)


async def test_row_is_marked_deleting_before_the_bytes_go(
    index: AsyncIndex, clips_dir: Path
) -> None:
    record = await _add(index, clips_dir, "a")
    backend = _SeesStateAtDelete(clips_dir, index)
    await remove_clip(index, backend, record)
    assert backend.states == ["deleting"]


async def test_a_removal_interrupted_after_marking_keeps_file_and_marked_row(
    index: AsyncIndex, clips_dir: Path
) -> None:
    record = await _add(index, clips_dir, "a")
    with pytest.raises(OSError, match="simulated crash"):
        await remove_clip(index, _FailingDelete(clips_dir), record)
    assert (clips_dir / record.relpath).exists()
    pending = await index.read(lambda ix: ix.pending_deletes())
    assert [(r.job_id, r.state) for r in pending] == [("a", "deleting")]


async def test_finish_pending_completes_interrupted_removals_only(
    index: AsyncIndex, clips_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    interrupted = await _add(index, clips_dir, "a")
    kept = await _add(index, clips_dir, "b", 300)
    with pytest.raises(OSError):
        await remove_clip(index, _FailingDelete(clips_dir), interrupted)
    with caplog.at_level(logging.WARNING, logger="clipd.removal"):
        assert await finish_pending(index, LocalBackend(clips_dir)) == 1
    assert not (clips_dir / interrupted.relpath).exists()
    assert await index.get("a") is None
    assert await index.get("b") == kept
    assert (clips_dir / kept.relpath).exists()
    assert index.totals == Totals(1, 300)
    assert [r.getMessage() for r in caplog.records] == [
        f"finishing interrupted removal of {interrupted.relpath} (job a)"
    ]


async def test_finish_pending_drops_a_marked_row_whose_file_is_already_gone(
    index: AsyncIndex, clips_dir: Path
) -> None:
    record = await _add(index, clips_dir, "a")
    await index.write(lambda ix: ix.set_state("a", "deleting"))
    (clips_dir / record.relpath).unlink()  # the crash came after the unlink
    assert await finish_pending(index, LocalBackend(clips_dir)) == 1
    assert await index.read(lambda ix: ix.pending_deletes()) == []
    assert index.totals == Totals(0, 0)


async def test_finish_pending_with_nothing_marked_changes_nothing(
    index: AsyncIndex, clips_dir: Path
) -> None:
    record = await _add(index, clips_dir, "a")
    generation = index.generation
    assert await finish_pending(index, LocalBackend(clips_dir)) == 0
    assert await index.get("a") == record
    assert (clips_dir / record.relpath).exists()
    assert index.generation == generation
