"""Full disk: on a small tmpfs clips tree, PUT answers 507 and keeps nothing, the index
stays equal to the disk, ingest and downloads go on, and retention frees space oldest
first."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

from tests.helpers import clip_bytes, disk_clips, index_rows, wait_for, write_clip
from tests.reliability.conftest import AUTH, TOKEN, job_of, request, temp_files, tmpfs

CLIP_BYTES = 256 * 1024
BASE_ENV = {
    "CLIPD_API_TOKEN": TOKEN,
    "CLIPD_RETENTION_MAX_AGE_HOURS": "100000",
    "CLIPD_RETENTION_PROTECT_RECENT_MINUTES": "0",
    "CLIPD_RETENTION_INTERVAL_SECONDS": "0.2",
}


def used_percent(path: Path) -> float:
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return 100.0 * used / ((used + st.f_bavail * st.f_frsize) or 1)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def flushed(clips: Path) -> bool:
    conn = sqlite3.connect(clips / ".clipd" / "index.sqlite3")
    try:
        return bool(conn.execute("SELECT count(*) FROM downloads_daily").fetchone()[0])
    finally:
        conn.close()


def fill(clips: Path, leave_bytes: int) -> list[str]:
    """Old clips (one minute apart, oldest first) until less than ``leave_bytes`` is free."""
    written: list[str] = []
    base = time.time() - 3600
    n = 0
    while free_bytes(clips) > leave_bytes + CLIP_BYTES + 64 * 1024:
        day = f"2026-11-{20 + n // 10}"
        name = f"Full_f{n:03d}.mp4"
        write_clip(clips, day, name, clip_bytes(CLIP_BYTES, n), mtime=base + 60 * n)
        written.append(f"{day}/{name}")
        n += 1
    return written


def test_full_disk_refuses_uploads_keeps_serving_and_retention_frees_space(
    make_daemon, clips_dir: Path
) -> None:
    with tmpfs(clips_dir, "8m"):
        written = fill(clips_dir, leave_bytes=400 * 1024)
        # No watermark yet: the disk stays full while uploads, ingest and downloads run.
        daemon = make_daemon(
            env={
                **BASE_ENV,
                "CLIPD_RETENTION_HIGH_WATERMARK_DISK_PERCENT": "100",
                "CLIPD_RETENTION_LOW_WATERMARK_DISK_PERCENT": "100",
            }
        ).start()
        assert set(index_rows(clips_dir)) == set(written)

        status, _, body = request(
            f"{daemon.url}/api/v1/jobs/toobig?title=Big", "PUT", clip_bytes(1024 * 1024, 99), AUTH
        )
        assert status == 507, body
        assert temp_files(clips_dir) == []
        assert daemon.get("/api/v1/jobs/toobig")[0] == 404

        # Downloads go on, bytes intact.
        for relpath in (written[0], written[-1]):
            status, headers, body = daemon.get(f"/api/v1/jobs/{job_of(relpath)}/download")
            assert status == 200
            assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'

        # Completely full (a filler outside the day folders): still no 5xx, still serving.
        filler = clips_dir / ".filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        try:
            assert free_bytes(clips_dir) < 64 * 1024
            status, _, _ = request(
                f"{daemon.url}/api/v1/jobs/tiny?title=Tiny", "PUT", clip_bytes(200_000, 98), AUTH
            )
            assert status == 507
            assert temp_files(clips_dir) == []
            for relpath in written[:5]:
                assert daemon.get(f"/api/v1/jobs/{job_of(relpath)}/download")[0] == 200
            assert daemon.get("/health")[0] == 200
            # Past a download-counter flush (a SQLite write on the full disk).
            wait_for(
                lambda: flushed(clips_dir) or "could not write download counters" in daemon.log(),
                what="a download-counter flush on the full disk",
            )
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
            assert daemon.get("/health")[0] == 200
        finally:
            filler.unlink()

        # Ingest of new small clips and uploads that fit go on.
        write_clip(clips_dir, "2026-11-29", "Small_s1.mp4", clip_bytes(20_000, 1))
        wait_for(lambda: daemon.get("/api/v1/jobs/s1")[0] == 200, what="small clip ingested")
        status, _, body = request(
            f"{daemon.url}/api/v1/jobs/u1?title=Fits", "PUT", clip_bytes(30_000, 2), AUTH
        )
        assert status == 201, body
        assert daemon.stop() == 0
        assert index_rows(clips_dir) == disk_clips(clips_dir)
        assert temp_files(clips_dir) == []

        # Retention with watermarks: frees space below the low mark, oldest first.
        before = used_percent(clips_dir)
        assert before > 80, before
        daemon.env.update(
            {
                "CLIPD_RETENTION_HIGH_WATERMARK_DISK_PERCENT": "80",
                "CLIPD_RETENTION_LOW_WATERMARK_DISK_PERCENT": "50",
            }
        )
        daemon.start()
        # Retention plans with file sizes, but the filesystem frees a little less (the
        # index's own journal grows while it deletes): the drain goes on, measuring, until
        # the disk is at the low mark. Half a point of slack for writes after the last pass.
        wait_for(lambda: used_percent(clips_dir) < 50.5, timeout=20, what="disk below the low mark")
        assert daemon.stop() == 0
        rows = index_rows(clips_dir)
        assert rows == disk_clips(clips_dir)
        gone = [r for r in written if r not in rows]
        kept = [r for r in written if r in rows]
        assert gone and kept
        assert gone == written[: len(gone)], "retention must evict the oldest clips first"
        assert {"2026-11-29/Small_s1.mp4"} <= set(rows)
        print(
            f"\nfull disk: {before:.0f}% used → {used_percent(clips_dir):.0f}% "
            f"after retention; {len(gone)} of {len(written)} old clips evicted"
        )
