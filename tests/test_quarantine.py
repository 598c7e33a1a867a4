"""quarantine_file on a real temp tree: where files go, their notes, name clashes, races."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from clipd import quarantine as quarantine_mod
from clipd.quarantine import QUARANTINE_DIRNAME, quarantine_dir, quarantine_file

DAY = "2026-11-24"


def _put(clips_dir: Path, relpath: str, data: bytes = b"bytes") -> Path:
    path = clips_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _note(path: Path) -> dict[str, object]:
    note: dict[str, object] = json.loads(path.with_name(path.name + ".json").read_text())
    return note


def test_quarantine_dir_is_inside_the_hidden_index_folder(clips_dir: Path) -> None:
    assert QUARANTINE_DIRNAME == "quarantine"
    assert quarantine_dir(clips_dir) == clips_dir / ".clipd" / "quarantine"


def test_file_moves_to_its_day_folder_with_a_complete_note(clips_dir: Path) -> None:
    source = _put(clips_dir, f"{DAY}/Bad_job1.mp4", b"payload")
    inode = source.stat().st_ino
    before = time.time()
    target = quarantine_file(clips_dir, f"{DAY}/Bad_job1.mp4", "too small", "job1")
    after = time.time()
    assert target == clips_dir / ".clipd" / "quarantine" / DAY / "Bad_job1.mp4"
    assert not source.exists()
    # Renamed, not copied: the same inode, the same bytes.
    assert target.stat().st_ino == inode and target.read_bytes() == b"payload"
    note = _note(target)
    quarantined_at = note.pop("quarantined_at")
    assert isinstance(quarantined_at, float) and before <= quarantined_at <= after
    assert note == {"original_path": f"{DAY}/Bad_job1.mp4", "job_id": "job1", "reason": "too small"}
    # Only the clip and its note: the note's temp file was renamed away.
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "Bad_job1.mp4",
        "Bad_job1.mp4.json",
    ]


def test_job_id_defaults_to_empty_in_the_note_and_dash_in_the_log(
    clips_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _put(clips_dir, f"{DAY}/x.mp4")
    with caplog.at_level(logging.WARNING, logger="clipd.quarantine"):
        target = quarantine_file(clips_dir, f"{DAY}/x.mp4", "not a clip name")
    assert target is not None
    assert _note(target)["job_id"] == ""
    assert [r.getMessage() for r in caplog.records] == [
        f"quarantined {DAY}/x.mp4 (job -): not a clip name -> {target}"
    ]


def test_missing_file_returns_none_and_leaves_no_trace(clips_dir: Path) -> None:
    assert quarantine_file(clips_dir, f"{DAY}/Gone_job1.mp4", "reason", "job1") is None
    assert not quarantine_dir(clips_dir).exists()


def test_same_name_twice_gets_numbered_and_keeps_the_first_note(clips_dir: Path) -> None:
    relpath = f"{DAY}/Dup_job1.mp4"
    targets = []
    for n in range(3):
        _put(clips_dir, relpath, f"copy {n}".encode())
        targets.append(quarantine_file(clips_dir, relpath, f"reason {n}", "job1"))
    folder = quarantine_dir(clips_dir) / DAY
    assert targets == [
        folder / "Dup_job1.mp4",
        folder / "Dup_job1.mp4.1",
        folder / "Dup_job1.mp4.2",
    ]
    for n, target in enumerate(targets):
        assert target is not None
        assert target.read_bytes() == f"copy {n}".encode()
        assert _note(target)["reason"] == f"reason {n}"


def test_a_leftover_note_alone_still_reserves_its_name(clips_dir: Path) -> None:
    folder = quarantine_dir(clips_dir) / DAY
    folder.mkdir(parents=True)
    (folder / "Clip_job1.mp4.json").write_text("{}")
    _put(clips_dir, f"{DAY}/Clip_job1.mp4")
    target = quarantine_file(clips_dir, f"{DAY}/Clip_job1.mp4", "reason")
    assert target == folder / "Clip_job1.mp4.1"
    assert (folder / "Clip_job1.mp4.json").read_text() == "{}"


def test_a_symlink_is_moved_itself_and_its_target_is_left_alone(
    clips_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"not clipd's")
    link = clips_dir / DAY / "Link_job1.mp4"
    link.parent.mkdir()
    link.symlink_to(outside)
    target = quarantine_file(clips_dir, f"{DAY}/Link_job1.mp4", "symlink")
    assert target is not None and target.is_symlink()
    assert os.readlink(target) == str(outside)
    assert outside.read_bytes() == b"not clipd's"
    assert not os.path.lexists(link)


def test_a_dangling_symlink_is_still_quarantined(clips_dir: Path, tmp_path: Path) -> None:
    link = clips_dir / DAY / "Link_job1.mp4"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "nowhere")
    target = quarantine_file(clips_dir, f"{DAY}/Link_job1.mp4", "symlink")
    assert target is not None and target.is_symlink()
    assert not os.path.lexists(link)


def test_file_vanishing_before_the_rename_leaves_no_orphan_note(
    clips_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _put(clips_dir, f"{DAY}/Race_job1.mp4")
    real_rename = os.rename

    def rename_after_someone_else_removed_it(src: str | Path, dst: str | Path) -> None:
        os.unlink(source)  # e.g. retention or the writer, between lexists and rename
        real_rename(src, dst)

    monkeypatch.setattr(quarantine_mod.os, "rename", rename_after_someone_else_removed_it)
    assert quarantine_file(clips_dir, f"{DAY}/Race_job1.mp4", "reason", "job1") is None
    monkeypatch.undo()
    assert list((quarantine_dir(clips_dir) / DAY).iterdir()) == []


def test_two_threads_quarantining_one_file_move_it_once(clips_dir: Path) -> None:
    relpath = f"{DAY}/Both_job1.mp4"
    _put(clips_dir, relpath)
    results: list[Path | None] = []
    start = threading.Barrier(2)

    def run(reason: str) -> None:
        start.wait()
        results.append(quarantine_file(clips_dir, relpath, reason, "job1"))

    threads = [threading.Thread(target=run, args=(r,)) for r in ("download", "ingest")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    folder = quarantine_dir(clips_dir) / DAY
    assert results.count(None) == 1 and folder / "Both_job1.mp4" in results
    assert sorted(p.name for p in folder.iterdir()) == ["Both_job1.mp4", "Both_job1.mp4.json"]


def test_a_file_outside_any_day_folder_goes_to_the_unknown_folder(clips_dir: Path) -> None:
    _put(clips_dir, "Loose_job1.mp4")
    target = quarantine_file(clips_dir, "Loose_job1.mp4", "not in a day folder", "job1")
    assert target == quarantine_dir(clips_dir) / "unknown" / "Loose_job1.mp4"
