"""Crash consistency: kill -9 at random moments during writes, uploads, deletes and
retention; after each restart the index equals the disk and every served clip hashes
to its ETag."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, clip_bytes, disk_clips, index_rows, write_clip

TOKEN = "crash-test-token"
ROUNDS = int(os.environ.get("CLIPD_TEST_CRASH_ROUNDS", "50"))


class Load:
    """Writers, uploaders and deleters running against one daemon until stopped."""

    def __init__(self, daemon: DaemonProcess, rng: random.Random, serial: list[int]) -> None:
        self.daemon = daemon
        self.rng = rng
        self.serial = serial
        self.stop = threading.Event()
        self.errors: list[str] = []

    def _next(self) -> int:
        self.serial[0] += 1
        return self.serial[0]

    def write(self) -> None:
        while not self.stop.is_set():
            try:
                self._write_one(self._next())
            except FileNotFoundError:
                # Retention removed the (past) day folder as the writer entered it; a
                # real writer retries, and so does this one.
                continue

    def _write_one(self, n: int) -> None:
        clips = self.daemon.clips_dir
        day = f"2026-11-{20 + n % 4}"
        if n % 7 == 0:
            # A writer that crashes: its .tmp is left behind, some already stale.
            folder = clips / day
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"Crashed_c{n}.mp4.tmp"
            tmp.write_bytes(b"partial")
            if n % 2:
                os.utime(tmp, (time.time() - 3600, time.time() - 3600))
            return
        write_clip(clips, day, f"Crash_w{n}.mp4", clip_bytes(self.rng.randint(1, 40) * 1000, n))

    def upload(self) -> None:
        while not self.stop.is_set():
            n = self._next()
            data = clip_bytes(self.rng.randint(1, 30) * 1000, n)
            request = urllib.request.Request(
                f"{self.daemon.url}/api/v1/jobs/put-{n}?title=Uploaded",
                data=data,
                method="PUT",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            self._send(request)

    def delete(self) -> None:
        while not self.stop.is_set():
            rows = list(index_rows(self.daemon.clips_dir))
            if not rows:
                time.sleep(0.01)
                continue
            job = rows[self.rng.randrange(len(rows))].rsplit("_", 1)[1].split(".")[0]
            request = urllib.request.Request(
                f"{self.daemon.url}/api/v1/jobs/{job}",
                method="DELETE",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            self._send(request)

    def _send(self, request: urllib.request.Request) -> None:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 and exc.code != 507:
                self.errors.append(f"{request.method} {request.full_url}: {exc.code}")
        except (OSError, urllib.error.URLError):
            pass  # the daemon was killed under us: that is the point


def being_removed(clips: Path, relpath: str) -> bool:
    conn = sqlite3.connect(clips / ".clipd" / "index.sqlite3")
    try:
        row = conn.execute("SELECT state FROM clips WHERE relpath = ?", (relpath,)).fetchone()
    finally:
        conn.close()
    return row is None or row[0] == "deleting"


def check_served(daemon: DaemonProcess, sample: int) -> int:
    """Download a sample of indexed clips; each body must hash to its ETag."""
    clips = daemon.clips_dir
    rows = sorted(index_rows(clips))
    served = 0
    for relpath in random.Random(len(rows)).sample(rows, min(sample, len(rows))):
        job = relpath.rsplit("_", 1)[1].split(".")[0]
        status, headers, body = daemon.get(f"/api/v1/jobs/{job}/download")
        if status == 404 and being_removed(clips, relpath):
            continue  # evicted by retention between the two looks
        assert status == 200, (relpath, status, body[:200])
        assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
        served += 1
    return served


def check_consistent(daemon: DaemonProcess, stale_s: float, started_at: float) -> None:
    """With the daemon stopped: the index equals the disk, and no temp file that was
    already stale when the daemon last started is left."""
    clips = daemon.clips_dir
    assert index_rows(clips) == disk_clips(clips)
    for tmp in clips.glob("*/*.tmp"):
        # mtime has whole-second granularity on some filesystems: one second of slack.
        assert tmp.stat().st_mtime > started_at - stale_s - 1, f"stale temp file left: {tmp}"


@pytest.mark.slow
def test_kill9_rounds_keep_index_equal_to_disk(make_daemon, clips_dir: Path) -> None:
    rng = random.Random(20261130)
    daemon = make_daemon(
        env={
            "CLIPD_API_TOKEN": TOKEN,
            "CLIPD_RETENTION_STALE_TMP_MINUTES": "1",
            "CLIPD_RETENTION_MAX_SIZE_GB": "0.002",  # about 2 MB: retention evicts all the time
            "CLIPD_RETENTION_PROTECT_RECENT_MINUTES": "0",
            "CLIPD_RETENTION_INTERVAL_SECONDS": "0.2",
            "CLIPD_INGEST_SETTLE_SECONDS": "0.1",
        }
    )
    serial = [0]
    errors: list[str] = []
    served = 0
    for _ in range(ROUNDS):
        started_at = time.time()
        daemon.start()  # READY=1: the restart reconciled whatever the crash left
        served += check_served(daemon, sample=5)
        assert daemon.stop() == 0
        check_consistent(daemon, stale_s=60, started_at=started_at)
        daemon.start()
        load = Load(daemon, rng, serial)
        threads = [threading.Thread(target=fn) for fn in (load.write, load.upload, load.delete)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 0.6))  # the random moment of the crash, not a sync
        daemon.kill9()
        load.stop.set()
        for thread in threads:
            thread.join(10)
        errors += load.errors
    started_at = time.time()
    daemon.start()
    served += check_served(daemon, sample=50)
    assert daemon.stop() == 0
    check_consistent(daemon, stale_s=60, started_at=started_at)
    assert not errors, errors[:10]
    assert serial[0] > ROUNDS * 5, "the load generators hardly ran"
    assert served > ROUNDS, "hardly any clip was served back"
