"""Eviction's crash-safe unlinking on real trees: flock-held files, vanished files, batches."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from clipd import eviction
from clipd.index import Index, index_path
from clipd.retention import Policy
from tests.helpers import disk_clips, index_rows
from tests.test_cleanup import H, make_tree, run_cleanup


def test_cleanup_skips_a_file_another_process_holds_with_flock(clips_dir: Path) -> None:
    make_tree(clips_dir, {"held": ("2026-01-01", 50), "free": ("2026-01-01", 40)})
    held = clips_dir / "2026-01-01" / "Clip_held.mp4"
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        _, applied = run_cleanup(clips_dir, Policy(max_age_s=24 * H))
        assert [d.relpath for d in applied.skipped] == ["2026-01-01/Clip_held.mp4"]
        assert held.exists()
        ix = Index(index_path(clips_dir))
        try:
            row = ix.get("held")
        finally:
            ix.close()
        assert row is not None and row.state == "ok"  # released for the next round
        assert set(index_rows(clips_dir)) == {"2026-01-01/Clip_held.mp4"}
    finally:
        os.close(fd)
    run_cleanup(clips_dir, Policy(max_age_s=24 * H))
    assert index_rows(clips_dir) == {} and disk_clips(clips_dir) == {}


def test_cleanup_drops_rows_of_files_already_gone(clips_dir: Path) -> None:
    make_tree(clips_dir, {"a": ("2026-01-01", 50)})
    (clips_dir / "2026-01-01" / "Clip_a.mp4").unlink()
    _, applied = run_cleanup(clips_dir, Policy(max_age_s=24 * H))
    assert len(applied.gone) == 1
    assert index_rows(clips_dir) == {}


def test_cleanup_in_many_batches_keeps_index_aggregates_exact(
    clips_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of 4 over several folders: marks, parallel unlinks and set-based drops
    # pipelined; a held clip and one already gone among them.
    monkeypatch.setattr(eviction, "CHUNK", 1)
    days = [f"2026-01-0{d}" for d in range(1, 6)]
    ages = {f"o{i}": (days[i % 5], 30 + i) for i in range(23)}
    ages |= {f"n{i}": (days[i % 5], 1) for i in range(4)}
    make_tree(clips_dir, ages)
    (clips_dir / "2026-01-02" / "Clip_o6.mp4").unlink()
    held = os.open(clips_dir / "2026-01-03" / "Clip_o7.mp4", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)
        _, applied = run_cleanup(clips_dir, Policy(max_age_s=24 * H))
    finally:
        os.close(held)
    assert len(applied.deleted) == 21 and len(applied.gone) == 1
    assert [d.job_id for d in applied.skipped] == ["o7"]
    left = {f"{days[i % 5]}/Clip_n{i}.mp4" for i in range(4)} | {"2026-01-03/Clip_o7.mp4"}
    assert set(index_rows(clips_dir)) == left == set(disk_clips(clips_dir))
    ix = Index(index_path(clips_dir))
    try:
        records = list(ix.records())
        assert ix.totals() == (len(left), sum(r.size_bytes for r in records))
        per_day: dict[str, tuple[int, int]] = {}
        for r in records:
            files, size = per_day.get(r.day, (0, 0))
            per_day[r.day] = (files + 1, size + r.size_bytes)
        assert {day: tuple(t) for day, t in ix.day_totals().items()} == per_day
        assert all(r.state == "ok" for r in records)
    finally:
        ix.close()
