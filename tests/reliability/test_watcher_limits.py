"""Watcher limits: an inotify queue overflow and a watch limit hit lose no clip."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.observers.inotify_c import InotifyEvent

from tests.helpers import clip_bytes, disk_clips, index_rows, wait_for, write_clip

INOTIFY = Path("/proc/sys/fs/inotify")


@contextlib.contextmanager
def inotify_limit(name: str, value: int) -> Iterator[int]:
    """Set /proc/sys/fs/inotify/<name> for the block and restore it after."""
    path = INOTIFY / name
    try:
        old = int(path.read_text())
        path.write_text(str(value))
    except OSError as exc:
        pytest.skip(
            f"cannot change {path} here ({exc.strerror}); needs root outside a read-only /proc"
        )
    try:
        yield old
    finally:
        path.write_text(str(old))


def watches_in_use() -> int:
    """Inotify watches held by all processes (what max_user_watches counts, for root)."""
    total = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        with contextlib.suppress(OSError):
            total += fdinfo.read_text().count("inotify wd:")
    return total


def test_queue_overflow_loses_no_clip(make_daemon, clips_dir: Path) -> None:
    # A tiny queue, read at inotify_init: only the daemon started inside sees it.
    with inotify_limit("max_queued_events", 16):
        daemon = make_daemon(env={"CLIPD_INGEST_RESCAN_INTERVAL_SECONDS": "3"}).start()
    count = 400
    # The day folder is watched (its first clip indexed) before the flood ...
    write_clip(clips_dir, "2026-11-24", "Flood_f0.mp4", clip_bytes(256, 0))
    wait_for(lambda: len(index_rows(clips_dir)) == 1, timeout=30, what="the first clip")
    # ... and, stopped while the rest arrive, the daemon reads none of their events: the
    # queue of 16 overflows whatever the host's load (a busy host once let it keep up).
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        for i in range(1, count):
            write_clip(clips_dir, "2026-11-24", f"Flood_f{i}.mp4", clip_bytes(256, i))
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    wait_for(lambda: len(index_rows(clips_dir)) == count, timeout=60, what="all clips indexed")
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert daemon.metric("clipd_watcher_rescans_total") >= 1
    if hasattr(InotifyEvent, "is_queue_overflow"):  # watchdog >= 4 reports overflows
        assert daemon.metric("clipd_watcher_overflows_total") >= 1
    assert daemon.get("/health")[0] == 200


def test_watch_limit_hit_falls_back_to_rescans(make_daemon, clips_dir: Path) -> None:
    # Room for the daemon's first folders and little more: new day folders get no watch.
    daemon = make_daemon(env={"CLIPD_INGEST_RESCAN_INTERVAL_SECONDS": "3"})
    with inotify_limit("max_user_watches", watches_in_use() + 4):
        daemon.start()
        for day in range(1, 29):
            (clips_dir / f"2026-02-{day:02d}").mkdir()
        # Folders past the limit have no watch: clips written into them later produce
        # no event at all, and only the safety rescan can find them.
        wait_for(
            lambda: "rescan (folder created)" in daemon.log(), timeout=60, what="folder rescan"
        )
        for day in range(1, 29):
            write_clip(
                clips_dir, f"2026-02-{day:02d}", f"Many_Days_d{day}.mp4", clip_bytes(300, day)
            )
        wait_for(lambda: len(index_rows(clips_dir)) == 28, timeout=60, what="28 days indexed")
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    # The daemon keeps serving whatever happened to its watches.
    assert daemon.get("/health")[0] == 200


def test_many_day_folders_at_once(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    for day in range(1, 31):
        folder = clips_dir / f"2026-04-{day:02d}"
        folder.mkdir()
        for n in range(3):
            write_clip(
                clips_dir, folder.name, f"Burst_d{day}-{n}.mp4", clip_bytes(200, day * 10 + n)
            )
    wait_for(lambda: len(index_rows(clips_dir)) == 90, timeout=60, what="90 clips")
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert os.path.isdir(clips_dir / ".clipd")
    assert daemon.get("/health")[0] == 200
