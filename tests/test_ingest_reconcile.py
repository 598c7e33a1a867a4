"""Whole-tree passes and what the watcher records while they walk."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from clipd import ingest as ingest_mod
from clipd.async_index import AsyncIndex
from clipd.config import load
from clipd.index import index_path
from clipd.ingest import Ingestor, ReconcileReport
from clipd.metrics import Metrics
from clipd.reconcile import Walk
from tests.helpers import clip_bytes, index_rows

DAY = "2026-11-21"


def _folder(clips_dir: Path, day: str, count: int) -> list[str]:
    folder = clips_dir / day
    folder.mkdir(parents=True, exist_ok=True)
    settled = time.time() - 3600  # older than the settle time: recorded at once
    for i in range(count):
        path = folder / f"Clip_{day.replace('-', '')}c{i}.mp4"
        path.write_bytes(clip_bytes(2000, i))
        os.utime(path, (settled, settled))
    return sorted(f"{day}/{p.name}" for p in folder.iterdir())


def _reconcile(clips_dir: Path) -> ReconcileReport:
    config = load({}, {"CLIPS_DIR": str(clips_dir)}, "")

    async def run() -> ReconcileReport:
        index = AsyncIndex(index_path(clips_dir))
        await index.open()
        ingestor = Ingestor(clips_dir, config.storage, config.ingest, index, Metrics(), 3600)
        try:
            return await ingestor.reconcile()
        finally:
            await asyncio.to_thread(ingestor.close)
            await index.close()

    return asyncio.run(run())


def test_a_row_is_dropped_only_if_its_file_is_gone_when_the_drop_is_written(
    clips_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relpaths = _folder(clips_dir, DAY, 4)
    assert _reconcile(clips_dir).recorded == 4
    late, gone, folder = relpaths[:3]
    (clips_dir / gone).unlink()
    (clips_dir / folder).unlink()
    (clips_dir / folder).mkdir()  # not a clip any more
    # `late` as a walk sees a clip the watcher recorded in a folder it had already listed.
    walk_tree = ingest_mod.walk_tree

    def walk_missing_late(*args: object) -> Walk:
        walk = walk_tree(*args)  # type: ignore[arg-type]
        del walk.files[late]
        return walk

    monkeypatch.setattr(ingest_mod, "walk_tree", walk_missing_late)
    report = _reconcile(clips_dir)
    assert report.dropped == 2
    assert set(index_rows(clips_dir)) == {late, relpaths[3]}
