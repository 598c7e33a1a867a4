"""Load: 200 concurrent download connections, 50 new clips a second and retention
evicting at the same time: no failed request, nothing served that does not hash to its
ETag, RSS and event-loop lag bounded. Figures are printed and written as JSON."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.helpers import (
    DaemonProcess,
    clip_bytes,
    disk_clips,
    index_rows,
    wait_for,
    write_clip,
)
from tests.reliability.conftest import report_figures

CONNECTIONS = 200
# Each connection asks for a clip every 0.5 s (400 requests/s in all): a busy site, not a
# flood. Flat out, the loop lag measures the queue in front of the CPU, not blocking calls.
REQUEST_EVERY_S = 0.5
CLIPS_PER_S = 50
CLIP_BYTES = 32 * 1024
RSS_LIMIT_BYTES = 200 * 1024**2
LAG_P99_LIMIT_S = 0.25
# The short run shares CI's two cores with the rest of the suite: it only guards against
# gross blocking; the long run holds the 0.25 s bound.
SHORT_LAG_P99_LIMIT_S = 1.0
# Read at import: the autouse clean_environ fixture removes every CLIPD_* variable
# before a test body runs.
LONG_RUN_S = float(os.environ.get("CLIPD_TEST_LOAD_SECONDS", "60"))
ENV = {
    "CLIPD_RETENTION_MAX_SIZE_GB": "0.004",  # ~120 clips of 32 KiB: retention never rests
    "CLIPD_RETENTION_MAX_AGE_HOURS": "1000",
    "CLIPD_RETENTION_PROTECT_RECENT_MINUTES": "0",
    "CLIPD_RETENTION_INTERVAL_SECONDS": "0.5",
    "CLIPD_INGEST_SETTLE_SECONDS": "0.1",
}


@dataclass
class Tally:
    ok: int = 0
    ok_bytes: int = 0
    evicted: int = 0
    failures: list[str] = field(default_factory=list)
    rss_peak: int = 0
    written: int = 0


class IndexView:
    """Job ids and states straight from the daemon's SQLite index (read-only)."""

    def __init__(self, clips: Path) -> None:
        self.conn = sqlite3.connect(
            f"file:{clips / '.clipd' / 'index.sqlite3'}?mode=ro", uri=True, check_same_thread=False
        )
        self.lock = threading.Lock()

    def ids(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute("SELECT job_id FROM clips WHERE state='ok'")]

    def is_live(self, job: str) -> bool:
        with self.lock:
            row = self.conn.execute("SELECT state FROM clips WHERE job_id = ?", (job,)).fetchone()
        return row is not None and row[0] == "ok"

    def close(self) -> None:
        self.conn.close()


def writer(clips: Path, stop: threading.Event, tally: Tally) -> None:
    """50 new clips a second, on a schedule (a late clip is written at once)."""
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        due = started + n / CLIPS_PER_S
        if (wait := due - time.monotonic()) > 0:
            stop.wait(wait)
            continue
        write_clip(clips, "2026-11-30", f"Load_w{n}.mp4", clip_bytes(CLIP_BYTES, n))
        n += 1
        tally.written = n


def sample_rss(pid: int, stop: threading.Event, tally: Tally) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        tally.rss_peak = max(tally.rss_peak, process.memory_info().rss)
        stop.wait(0.2)


async def downloader(
    session: aiohttp.ClientSession,
    url: str,
    view: IndexView,
    ids: list[list[str]],
    deadline: float,
    tally: Tally,
    rng: random.Random,
) -> None:
    next_at = time.monotonic() + rng.uniform(0, REQUEST_EVERY_S)
    while (now := time.monotonic()) < deadline:
        if next_at > now:
            await asyncio.sleep(next_at - now)
        next_at = max(next_at + REQUEST_EVERY_S, time.monotonic() - REQUEST_EVERY_S)
        pool = ids[0]
        job = pool[rng.randrange(len(pool))]
        try:
            async with session.get(f"{url}/api/v1/jobs/{job}/download") as response:
                body = await response.read()
                if response.status == 200:
                    if response.headers["ETag"] != f'"{hashlib.sha256(body).hexdigest()}"':
                        tally.failures.append(f"{job}: body does not hash to its ETag")
                    tally.ok += 1
                    tally.ok_bytes += len(body)
                elif response.status == 404 and not await asyncio.to_thread(view.is_live, job):
                    tally.evicted += 1  # retention took it between the pick and the GET
                else:
                    tally.failures.append(f"{job}: {response.status} {body[:200]!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failures.append(f"{job}: {type(exc).__name__}: {exc}")


async def drive(daemon: DaemonProcess, seconds: float, tally: Tally) -> None:
    view = IndexView(daemon.clips_dir)
    ids = [view.ids()]
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS), timeout=timeout
        ) as session:

            async def refresh() -> None:
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    ids[0] = await asyncio.to_thread(view.ids) or ids[0]

            await asyncio.gather(
                refresh(),
                *(
                    downloader(session, daemon.url, view, ids, deadline, tally, random.Random(i))
                    for i in range(CONNECTIONS)
                ),
            )
    finally:
        view.close()


def lag_p99(metrics_text: str) -> tuple[float, int]:
    """The p99 of clipd_event_loop_lag_seconds (the upper bound of its bucket), and count."""
    buckets = []
    for line in metrics_text.splitlines():
        m = re.match(r'clipd_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    buckets.sort()
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= 0.99 * total:
            return bound, int(total)
    return float("inf"), int(total)


def run_load(
    make_daemon, clips: Path, tmp_path: Path, seconds: float, lag_limit_s: float = LAG_P99_LIMIT_S
) -> None:
    base = time.time() - 600
    for i in range(120):
        write_clip(
            clips, "2026-11-29", f"Seed_s{i}.mp4", clip_bytes(CLIP_BYTES, -i - 1), mtime=base + i
        )
    daemon = make_daemon(env=ENV).start()
    assert daemon.proc is not None
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(clips, stop, tally)),
        threading.Thread(target=sample_rss, args=(daemon.proc.pid, stop, tally)),
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    cpu_before = psutil.Process(daemon.proc.pid).cpu_times()
    try:
        asyncio.run(drive(daemon, seconds, tally))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    elapsed = time.monotonic() - started
    cpu_after = psutil.Process(daemon.proc.pid).cpu_times()
    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    _, _, metrics = daemon.get("/metrics")
    p99, samples = lag_p99(metrics.decode())
    evicted_total = daemon.metric("clipd_retention_deleted_files_total")
    # The writer's last rename may land just before the stop: a clip renamed in during
    # shutdown is left to the next start's reconcile, so let ingest catch up first.
    wait_for(
        lambda: index_rows(clips) == disk_clips(clips), what="the index caught up with the writer"
    )
    assert daemon.stop() == 0
    assert index_rows(clips) == disk_clips(clips)
    figures = {
        "seconds": round(elapsed, 1),
        "connections": CONNECTIONS,
        "downloads_ok": tally.ok,
        "downloads_per_s": round(tally.ok / elapsed),
        "download_mib_per_s": round(tally.ok_bytes / elapsed / 1024**2, 1),
        "downloads_404_after_eviction": tally.evicted,
        "failed_requests": len(tally.failures),
        "clips_written": tally.written,
        "clips_evicted_by_retention": int(evicted_total),
        "rss_peak_mib": round(tally.rss_peak / 1024**2, 1),
        "daemon_cpu_percent": round(100 * cpu_s / elapsed),
        "host_load_average_1m": round(os.getloadavg()[0], 1),
        "event_loop_lag_p99_s_at_most": p99,
        "event_loop_lag_samples": samples,
    }
    report_figures(tmp_path, "load", figures)
    assert tally.failures == [], tally.failures[:20]
    assert tally.ok > 0 and evicted_total > 0
    assert tally.written >= CLIPS_PER_S * seconds * 0.9
    assert tally.rss_peak < RSS_LIMIT_BYTES
    assert p99 <= lag_limit_s


def test_load_short_downloads_writes_and_eviction(
    make_daemon, clips_dir: Path, tmp_path: Path
) -> None:
    run_load(make_daemon, clips_dir, tmp_path, 10.0, SHORT_LAG_P99_LIMIT_S)


@pytest.mark.slow
def test_load_downloads_writes_and_eviction(make_daemon, clips_dir: Path, tmp_path: Path) -> None:
    run_load(make_daemon, clips_dir, tmp_path, LONG_RUN_S)
