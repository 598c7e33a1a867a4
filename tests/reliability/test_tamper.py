"""Tampering and rot: bytes changed behind clipd's back are never served, the scrub and
``clipd verify`` find them, and a truncated, replaced or renamed file never causes a 5xx."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import DaemonProcess, clip_bytes, disk_clips, index_rows, wait_for, write_clip
from tests.reliability.conftest import request

DAY = "2026-11-24"
SIZE = 300_000
# Ingest waits this long before it looks at a modified file: the download path meets the
# change first, as it would for a change ingest never hears about.
SLOW_INGEST = {"CLIPD_INGEST_SETTLE_SECONDS": "30"}


def add_clips(clips: Path, count: int) -> dict[str, bytes]:
    data = {}
    for i in range(count):
        body = clip_bytes(SIZE, 1000 + i)
        # An hour old: settled, even for a daemon with a long settle time.
        write_clip(clips, DAY, f"Tamper_t{i}.mp4", body, mtime=time.time() - 3600)
        data[f"t{i}"] = body
    return data


def path_of(clips: Path, job: str) -> Path:
    return clips / DAY / f"Tamper_{job}.mp4"


def flip_keeping_size_and_mtime(path: Path, offset: int = SIZE // 2) -> None:
    """Change bytes in place, then put the mtime back: only ctime (and the hash) tell."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    except FileNotFoundError:
        return  # a running daemon's watcher met the write first and quarantined the file
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def quarantined(clips: Path, job: str) -> bool:
    return (clips / ".clipd" / "quarantine" / DAY / f"Tamper_{job}.mp4").exists()


def assert_never_served(daemon: DaemonProcess, job: str, good: bytes) -> int:
    """GET, HEAD and a Range GET: nothing but the original bytes, never a 5xx."""
    codes = []
    for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-99"})):
        status, resp_headers, body = request(
            f"{daemon.url}/api/v1/jobs/{job}/download", method, headers=headers
        )
        assert status < 500, (job, method, status, body[:300])
        if status in (200, 206) and method == "GET":
            # Only a file whose bytes still hash to the record may be served.
            expected = good if status == 200 else good[:100]
            assert body == expected, (job, method, status)
            assert resp_headers["ETag"] == f'"{hashlib.sha256(good).hexdigest()}"'
        codes.append(status)
    return codes[0]


def test_changed_bytes_with_size_and_mtime_kept_are_refused_and_quarantined(
    make_daemon, clips_dir: Path, tmp_path: Path
) -> None:
    data = add_clips(clips_dir, 3)
    # A hard link outside the watched tree: writes through it raise no inotify event in
    # the clips tree, so only the download's own check can catch them.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(path_of(clips_dir, "t0"), elsewhere / "t0.mp4")
    daemon = make_daemon(env=SLOW_INGEST).start()
    assert daemon.get("/api/v1/jobs/t0/download")[2] == data["t0"]
    flip_keeping_size_and_mtime(elsewhere / "t0.mp4")
    flip_keeping_size_and_mtime(path_of(clips_dir, "t1"))  # ingest hears of this one
    status, headers, body = daemon.get("/api/v1/jobs/t0/download")
    assert status == 409, body
    assert b"no longer matches" in body and headers["Content-Type"].startswith("application/json")
    # Whichever of download and ingest meets it first: refused (Range and HEAD too).
    assert assert_never_served(daemon, "t1", data["t1"]) in (404, 409)
    for job in ("t0", "t1"):
        assert quarantined(clips_dir, job)
        assert not path_of(clips_dir, job).exists()
        assert daemon.get(f"/api/v1/jobs/{job}/download")[0] == 404
    assert daemon.metric('clipd_quarantined_files_total{reason="integrity"}') == 2
    assert "integrity mismatch on download of job t0" in daemon.log()
    assert daemon.get("/api/v1/jobs/t2/download")[2] == data["t2"]  # the untouched one
    assert daemon.stop() == 0
    assert index_rows(clips_dir) == disk_clips(clips_dir)


def rot_under_stat(clips: Path, job: str) -> None:
    """Bit rot as the disk would do it: bytes change and the inode's stat does not.

    A user-space write always moves ctime, so the index row takes the new stat instead
    (with the daemon stopped), leaving only the bytes to tell."""
    path = path_of(clips, job)
    flip_keeping_size_and_mtime(path)
    st = path.stat()
    conn = sqlite3.connect(clips / ".clipd" / "index.sqlite3")
    try:
        with conn:
            conn.execute(
                "UPDATE clips SET mtime_ns = ?, ctime_ns = ?, inode = ? WHERE job_id = ?",
                (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, job),
            )
    finally:
        conn.close()


def test_scrub_and_verify_find_rot_that_stat_cannot_see(make_daemon, clips_dir: Path) -> None:
    data = add_clips(clips_dir, 4)
    daemon = make_daemon().start()
    assert daemon.stop() == 0
    rot_under_stat(clips_dir, "t1")
    rot_under_stat(clips_dir, "t3")

    verify = subprocess.run(
        [sys.executable, "-m", "clipd", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "CLIPS_DIR": str(clips_dir)},
    )
    assert verify.returncode != 0, verify.stdout
    changed = sorted(
        line.split()[1] for line in verify.stdout.splitlines() if line.startswith("CHANGED")
    )
    assert changed == [f"{DAY}/Tamper_t1.mp4", f"{DAY}/Tamper_t3.mp4"], verify.stdout

    daemon.env.update({"CLIPD_SCRUB_MB_PER_SECOND": "1000", "CLIPD_SCRUB_MIN_INTERVAL_HOURS": "0"})
    daemon.start()
    wait_for(
        lambda: quarantined(clips_dir, "t1") and quarantined(clips_dir, "t3"),
        timeout=20,
        what="the scrub quarantining both rotten clips",
    )
    assert daemon.metric("clipd_scrub_mismatches_total") == 2
    for job in ("t1", "t3"):
        assert assert_never_served(daemon, job, data[job]) == 404
    for job in ("t0", "t2"):
        assert daemon.get(f"/api/v1/jobs/{job}/download")[2] == data[job]
    assert daemon.stop() == 0
    assert index_rows(clips_dir) == disk_clips(clips_dir)


def test_truncated_replaced_renamed_and_odd_files_never_cause_a_5xx(
    make_daemon, clips_dir: Path, tmp_path: Path
) -> None:
    data = add_clips(clips_dir, 8)
    canary = tmp_path / "canary.txt"
    canary.write_bytes(b"CANARY-SECRET-" * 100)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(path_of(clips_dir, "t0"), elsewhere / "t0.mp4")  # no inotify event through it
    daemon = make_daemon().start()
    folder = clips_dir / DAY

    # Truncated: size differs, the re-hash fails, 409 and quarantine.
    os.truncate(elsewhere / "t0.mp4", SIZE // 2)
    assert assert_never_served(daemon, "t0", data["t0"]) == 409
    assert quarantined(clips_dir, "t0")

    # Replaced by a new inode with the same bytes (a restore, a copy): served, refreshed.
    write_clip(clips_dir, DAY, "Tamper_t1.mp4", data["t1"], mtime=time.time() - 3600)
    status, headers, body = daemon.get("/api/v1/jobs/t1/download")
    assert status == 200 and body == data["t1"]
    assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert index_rows(clips_dir)[f"{DAY}/Tamper_t1.mp4"][0] == hashlib.sha256(body).hexdigest()

    # Replaced by other bytes of the same size through a rename over it: refused (by
    # the download or by ingest, whichever meets it first).
    write_clip(clips_dir, DAY, "Tamper_t2.mp4", clip_bytes(SIZE, 77), mtime=time.time() - 3600)
    assert assert_never_served(daemon, "t2", data["t2"]) in (404, 409)

    # Renamed to another job's name: the old id is gone, the new name is ingested.
    os.rename(path_of(clips_dir, "t3"), folder / "Tamper_r3.mp4")
    assert assert_never_served(daemon, "t3", data["t3"]) == 404
    wait_for(lambda: daemon.get("/api/v1/jobs/r3")[0] == 200, what="renamed clip ingested")
    assert daemon.get("/api/v1/jobs/r3/download")[2] == data["t3"]

    # Deleted behind clipd's back.
    path_of(clips_dir, "t4").unlink()
    assert assert_never_served(daemon, "t4", data["t4"]) == 404

    # Replaced by a symlink to a file outside the tree: never followed.
    path_of(clips_dir, "t5").unlink()
    path_of(clips_dir, "t5").symlink_to(canary)
    assert assert_never_served(daemon, "t5", data["t5"]) in (404, 409)

    # Replaced by a directory, and by a FIFO (an open would block on it).
    path_of(clips_dir, "t6").unlink()
    path_of(clips_dir, "t6").mkdir()
    assert assert_never_served(daemon, "t6", data["t6"]) in (404, 409)
    path_of(clips_dir, "t7").unlink()
    os.mkfifo(path_of(clips_dir, "t7"))
    assert assert_never_served(daemon, "t7", data["t7"]) in (404, 409)

    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
    assert daemon.stop() == 0
    for odd in ("t5", "t6", "t7"):
        path = path_of(clips_dir, odd)
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif path.exists() or path.is_symlink():
            path.unlink()
    rows = index_rows(clips_dir)
    assert rows == disk_clips(clips_dir)
    assert set(rows) == {f"{DAY}/Tamper_t1.mp4", f"{DAY}/Tamper_r3.mp4"}
