"""Retention's I/O shell on real trees, and the daemon evicting as clips arrive."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clipd.checks import identity_of
from clipd.cleanup import gather_blocking, start_line, summary_line
from clipd.eviction import Applied, apply_blocking
from clipd.index import Index, index_path
from clipd.naming import parse_relpath
from clipd.record import ClipRecord
from clipd.retention import Plan, Policy, plan
from tests.helpers import DaemonProcess, clip_bytes, disk_clips, index_rows, wait_for, write_clip

H = 3600.0


def index_tree(clips_dir: Path) -> None:
    """Record every clip file of the tree in the index, as ingest would."""
    records = []
    for path in sorted(clips_dir.glob("[0-9]*/*")):
        relpath = f"{path.parent.name}/{path.name}"
        parsed = parse_relpath(relpath)
        if parsed is None:
            continue
        st = path.lstat()
        ident = identity_of(st)
        records.append(
            ClipRecord(
                job_id=parsed[1].job_id,
                relpath=relpath,
                day=parsed[0],
                title=parsed[1].title,
                ext=parsed[1].ext,
                size_bytes=ident.size_bytes,
                mtime_ns=ident.mtime_ns,
                ctime_ns=ident.ctime_ns,
                inode=ident.inode,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                ingested_at=time.time(),
                verified_at=time.time(),
            )
        )
    ix = Index(index_path(clips_dir))
    try:
        ix.upsert_many(records)
    finally:
        ix.close()


def make_tree(clips_dir: Path, ages_h: dict[str, tuple[str, float]], size: int = 1000) -> None:
    now = time.time()
    for i, (job, (day, age)) in enumerate(ages_h.items()):
        write_clip(clips_dir, day, f"Clip_{job}.mp4", clip_bytes(size, i), mtime=now - age * H)
    index_tree(clips_dir)


def run_cleanup(clips_dir: Path, policy: Policy) -> tuple[Plan, Applied]:
    ix = Index(index_path(clips_dir))
    try:
        snap = gather_blocking(ix, clips_dir, local=True)
        now = time.time()
        p = plan(
            snap.records,
            snap.usage,
            policy,
            now,
            tmp_files=snap.tmp_files,
            day_entries=snap.day_entries,
        )
        return p, apply_blocking(ix, clips_dir, p, now)
    finally:
        ix.close()


def test_cleanup_deletes_expired_clips_rows_and_emptied_day_folders(clips_dir: Path) -> None:
    make_tree(
        clips_dir,
        {"old1": ("2026-01-01", 50), "old2": ("2026-01-02", 30), "new": ("2026-01-02", 1)},
    )
    _, applied = run_cleanup(clips_dir, Policy(max_age_s=24 * H))
    assert set(index_rows(clips_dir)) == {"2026-01-02/Clip_new.mp4"}
    assert set(disk_clips(clips_dir)) == {"2026-01-02/Clip_new.mp4"}
    assert not (clips_dir / "2026-01-01").exists()
    assert summary_line(applied) == (
        "Cleanup completed: 2 files deleted, 0.0 MB freed, 1 empty dirs removed"
    )
    assert (clips_dir / ".clipd" / "index.sqlite3").exists()


def test_cleanup_keeps_young_tmp_and_removes_stale_tmp(clips_dir: Path) -> None:
    make_tree(clips_dir, {"a": ("2026-01-01", 1)})
    stale = clips_dir / "2026-01-01" / "Clip_x.mp4.tmp"
    young = clips_dir / "2026-01-01" / "Clip_y.mp4.tmp"
    for path, age in ((stale, 2 * H), (young, 60.0)):
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - age, time.time() - age))
    run_cleanup(clips_dir, Policy(max_age_s=24 * H, stale_tmp_s=H))
    assert not stale.exists()
    assert young.exists()


def test_daemon_evicts_oldest_first_as_clips_arrive(
    clips_dir: Path, make_daemon: Callable[..., DaemonProcess]
) -> None:
    # Each clip is 400 kB and the limit 1 MB: two fit, so the oldest goes as the third lands.
    daemon = make_daemon(
        env={
            "CLIPD_RETENTION_MAX_SIZE_GB": "0.001",
            "CLIPD_RETENTION_PROTECT_RECENT_MINUTES": "0",
            "CLIPD_SCRUB_ENABLED": "false",
        }
    ).start()
    now = time.time()
    for i in range(5):
        write_clip(
            clips_dir,
            "2026-01-01",
            f"Clip_j{i}.mp4",
            clip_bytes(400_000, i),
            mtime=now - (10 - i) * 60,
        )
        wait_for(
            lambda i=i: f"2026-01-01/Clip_j{i}.mp4" in index_rows(clips_dir), what=f"j{i} indexed"
        )
    wait_for(
        lambda: set(index_rows(clips_dir)) == {"2026-01-01/Clip_j3.mp4", "2026-01-01/Clip_j4.mp4"},
        what="only the two newest left",
    )
    assert set(disk_clips(clips_dir)) == {"2026-01-01/Clip_j3.mp4", "2026-01-01/Clip_j4.mp4"}
    wait_for(lambda: daemon.metric("clipd_retention_deleted_files_total") == 3, what="metric")
    assert daemon.metric("clipd_retention_freed_bytes_total") == 3 * 400_000
    assert daemon.metric("clipd_retention_last_run_timestamp_seconds") > now
    assert "Cleanup completed: 1 files deleted, 0.4 MB freed, 0 empty dirs removed" in daemon.log()


def test_an_instance_that_runs_no_retention_says_so_in_its_metrics(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    # Its last-run timestamp stays 0 forever; without clipd_retention_enabled the
    # ClipdRetentionStale alert could not tell it (an s3 follower, retention off) from a
    # leader whose retention stopped, and fired for it from the first scrape.
    off = make_daemon(env={"CLIPD_RETENTION_ENABLED": "false"}).start()
    assert off.metric("clipd_retention_enabled") == 0
    assert off.metric("clipd_retention_last_run_timestamp_seconds") == 0
    off.stop()
    on = make_daemon().start()
    wait_for(lambda: on.metric("clipd_retention_enabled") == 1, what="retention enabled")


def test_cleanup_keeps_a_young_empty_day_folder(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    old = clips / "2026-01-01"
    young = clips / "2026-01-02"
    old.mkdir(parents=True)
    young.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    result = subprocess.run(
        [sys.executable, "-m", "clipd", "cleanup", "--clips-dir", str(clips)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # A writer may have just made the young folder for its temp file.
    assert young.is_dir()
    assert not old.exists()


def test_start_line_is_the_legacy_one_in_decimal_gb() -> None:
    assert start_line(2_500_000_000) == "Starting cleanup - Current storage: 2.5 GB"
    assert start_line(2 * 2**30) == "Starting cleanup - Current storage: 2.1 GB"  # not GiB
    assert start_line(0) == "Starting cleanup - Current storage: 0.0 GB"


def test_daemon_logs_the_legacy_start_line_before_each_completed_line(
    clips_dir: Path, make_daemon: Callable[..., DaemonProcess]
) -> None:
    write_clip(
        clips_dir, "2026-01-01", "Clip_old.mp4", clip_bytes(1000, 1), mtime=time.time() - 30 * H
    )
    daemon = make_daemon(env={"CLIPD_SCRUB_ENABLED": "false"}).start()
    wait_for(lambda: "Cleanup completed: 1 files deleted" in daemon.log(), what="expiry pass")
    daemon.stop()
    lines = daemon.log().splitlines()
    starts = [i for i, line in enumerate(lines) if "Starting cleanup - Current storage: " in line]
    ends = [i for i, line in enumerate(lines) if "Cleanup completed: " in line]
    assert starts and len(starts) == len(ends)
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    assert lines[starts[0]].endswith(
        "INFO clipd.cleanup: Starting cleanup - Current storage: 0.0 GB"
    )
