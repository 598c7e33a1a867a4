"""Scrub: the token bucket, and a real daemon catching a flipped byte."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from clipd.scrub import TokenBucket
from tests.helpers import DaemonProcess, clip_bytes, index_rows, wait_for, write_clip


def test_token_bucket_paces_reads_to_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(1_000_000, clock=lambda: now[0])
    assert bucket.reserve(4 * 1024 * 1024) > 4.0  # nothing saved up: wait ~4.2 s
    now[0] += 10.0
    assert bucket.reserve(1000) == 0.0  # ten idle seconds refill (capped at the burst)


def test_token_bucket_caps_the_saved_up_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(10_000_000, clock=lambda: now[0])
    now[0] += 3600.0
    bucket.reserve(10_000_000)
    assert bucket.reserve(10_000_000) > 0.9  # an hour idle saves at most a second's worth


def _flip_byte_keeping_stat(clips_dir: Path, relpath: str) -> None:
    """Bit rot: the bytes change, the stat the index keeps does not (ctime patched in)."""
    path = clips_dir / relpath
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(before.st_size // 2)
        byte = f.read(1)
        f.seek(before.st_size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    conn = sqlite3.connect(clips_dir / ".clipd" / "index.sqlite3")
    try:
        conn.execute(
            "UPDATE clips SET ctime_ns = ?, verified_at = 0 WHERE relpath = ?",
            (path.stat().st_ctime_ns, relpath),
        )
        conn.commit()
    finally:
        conn.close()


def test_scrub_quarantines_a_clip_whose_bytes_rotted(
    clips_dir: Path, make_daemon: Callable[..., DaemonProcess]
) -> None:
    env = {
        "CLIPD_SCRUB_MB_PER_SECOND": "1000",
        "CLIPD_SCRUB_MIN_INTERVAL_HOURS": "0",
        "CLIPD_RETENTION_ENABLED": "false",
    }
    write_clip(clips_dir, "2026-01-01", "Clip_good.mp4", clip_bytes(300_000, 1))
    write_clip(clips_dir, "2026-01-01", "Clip_rot.mp4", clip_bytes(300_000, 2))
    daemon = make_daemon(env=env).start()
    wait_for(lambda: len(index_rows(clips_dir)) == 2, what="both indexed")
    daemon.stop()
    _flip_byte_keeping_stat(clips_dir, "2026-01-01/Clip_rot.mp4")
    daemon.start()
    wait_for(lambda: "2026-01-01/Clip_rot.mp4" not in index_rows(clips_dir), what="row dropped")
    quarantined = clips_dir / ".clipd" / "quarantine" / "2026-01-01" / "Clip_rot.mp4"
    assert quarantined.exists()
    assert "integrity: scrub found SHA-256" in (
        quarantined.with_name("Clip_rot.mp4.json").read_text()
    )
    assert not (clips_dir / "2026-01-01" / "Clip_rot.mp4").exists()
    assert daemon.metric("clipd_scrub_mismatches_total") == 1
    wait_for(
        lambda: daemon.metric("clipd_scrub_verified_bytes_total") >= 300_000,
        what="good clip verified",
    )
    assert "2026-01-01/Clip_good.mp4" in index_rows(clips_dir)
    assert "no longer matches its SHA-256" in daemon.log()
