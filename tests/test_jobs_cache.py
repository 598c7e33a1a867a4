"""The in-memory record cache of downloads: used only while file, index and age allow.

Each invalidation path has a test that fails when its check is removed: the file's
identity (replaced, deleted), the index generation (a row changed by this daemon, or by
another process with the file untouched: SQLite's data_version), the entry's age, and a
real ``clipd cleanup`` process beside a real daemon.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from clipd.download import record_cache
from clipd.index import index_path
from clipd.record import ClipRecord
from clipd.record_cache import RecordCache
from tests.helpers import clip_bytes, write_clip
from tests.test_jobs import DAY, Api, _error, _make_api

URL = "/api/v1/jobs/job1/download"


@pytest.fixture
async def api(aiohttp_client: Any, clips_dir: Path) -> AsyncIterator[Api]:
    async with _make_api(aiohttp_client, clips_dir) as made:
        yield made


def _count_reads(api: Api) -> list[int]:
    """Count the index reads from now on (the instance's ``read``, wrapped)."""
    calls = [0]
    real = api.state.index.read

    async def read(fn: Callable[[Any], Any]) -> Any:
        calls[0] += 1
        return await real(fn)

    api.state.index.read = read  # type: ignore[method-assign]
    return calls


async def _served(api: Api, record: ClipRecord) -> None:
    response = await api.client.get(URL)
    assert response.status == 200, await response.text()
    assert response.headers["ETag"] == f'"{record.sha256}"'
    assert len(await response.read()) == record.size_bytes


async def test_second_download_reads_no_index(api: Api) -> None:
    record = await api.add("job1")
    reads = _count_reads(api)
    await _served(api, record)
    assert reads[0] == 1
    await _served(api, record)
    await api.state.index.refresh_totals()  # a write that changes nothing
    await _served(api, record)
    assert reads[0] == 1
    assert len(record_cache(api.state)) == 1


async def test_cached_record_is_not_trusted_once_the_file_was_replaced(api: Api) -> None:
    record = await api.add("job1")
    await _served(api, record)
    path = api.clips_dir / record.relpath
    other = path.with_name("other.tmp")
    data = bytearray(path.read_bytes())
    data[100:108] = b"tampered"
    other.write_bytes(bytes(data))  # same size, other bytes and inode, mtime put back
    os.utime(other, ns=(record.mtime_ns, record.mtime_ns))
    os.rename(other, path)
    body = await _error(await api.client.get(URL), 409)
    assert body["error"] == "integrity_mismatch"
    assert not path.exists() and await api.row("job1") is None


async def test_cached_record_is_not_trusted_once_the_file_was_touched(api: Api) -> None:
    record = await api.add("job1")
    await _served(api, record)
    path = api.clips_dir / record.relpath
    os.utime(path, ns=(record.mtime_ns + 10**9, record.mtime_ns + 10**9))
    await _served(api, record)
    # The index path ran: it re-hashed the same bytes and refreshed the row.
    refreshed = await api.row("job1")
    assert refreshed is not None and refreshed.mtime_ns == record.mtime_ns + 10**9


async def test_cached_record_is_not_trusted_once_the_file_was_deleted(api: Api) -> None:
    record = await api.add("job1")
    await _served(api, record)
    (api.clips_dir / record.relpath).unlink()
    body = await _error(await api.client.get(URL), 404)
    # Decided by the integrity check (the index row is still there), not by a failed open.
    assert body["detail"] == "the file of job job1 is gone"


@pytest.mark.parametrize(
    "change",
    [
        lambda ix: ix.delete("job1"),
        lambda ix: ix.set_state("job1", "deleting"),
    ],
    ids=["row-dropped", "row-marked-deleting"],
)
async def test_row_changed_by_the_daemon_ends_the_cached_record(
    api: Api, change: Callable[[Any], None]
) -> None:
    record = await api.add("job1")
    await _served(api, record)
    await api.state.index.write(change)  # the file stays as it is
    body = await _error(await api.client.get(URL), 404)
    assert body["detail"] == "no clip with job id job1"


async def test_row_changed_by_another_process_ends_the_cached_record_at_the_next_write(
    api: Api,
) -> None:
    record = await api.add("job1")
    await _served(api, record)
    # Another process marks the row (as a `clipd cleanup` killed before its unlink
    # leaves it); the file is untouched, so nothing on disk shows the change.
    conn = sqlite3.connect(index_path(api.clips_dir))
    try:
        conn.execute("UPDATE clips SET state = 'deleting' WHERE job_id = 'job1'")
        conn.commit()
    finally:
        conn.close()
    # The daemon's next write (the totals refresh runs once a second) notices the
    # other connection's commit; the entry is far younger than its max age.
    await api.state.index.refresh_totals()
    body = await _error(await api.client.get(URL), 404)
    assert body["detail"] == "no clip with job id job1"


@pytest.mark.parametrize(
    "write",
    [
        lambda ix: ix.add_downloads([(DAY, "job1", 1, 100)]),  # the counter flush
        lambda ix: ix.set_verified("job1", 1e9),  # a scrub's verification
        lambda ix: ix.set_backed_up("job1"),  # a backup's mark
        None,  # a new clip ingested
    ],
    ids=["download-counters", "scrub-verified", "backed-up", "new-clip"],
)
async def test_writes_that_change_no_indexed_clip_keep_the_cache(
    api: Api, write: Callable[[Any], None] | None
) -> None:
    record = await api.add("job1")
    await _served(api, record)
    generation = api.state.index.generation
    if write is None:
        await api.add("job2", seed=2)
    else:
        await api.state.index.write(write)
    assert api.state.index.generation == generation
    reads = _count_reads(api)
    await _served(api, record)
    assert reads == [0]


async def test_re_recording_an_indexed_clip_ends_the_cached_record(api: Api) -> None:
    record = await api.add("job1")
    await _served(api, record)
    generation = api.state.index.generation
    # The same job id recorded again (its row replaced in the same upsert as a new clip).
    newer = await api.add("job1", seed=3)
    assert api.state.index.generation > generation
    reads = _count_reads(api)
    response = await api.client.get(URL)
    assert response.headers["ETag"] == f'"{newer.sha256}"'
    assert reads == [1]


def test_record_cache_is_lru_bounded_and_emptied_by_a_newer_generation(tmp_path: Path) -> None:
    now = [0.0]
    cache = RecordCache(capacity=2, max_age_s=5.0, clock=lambda: now[0])

    def record(job_id: str) -> ClipRecord:
        return ClipRecord(
            job_id, f"{DAY}/C_{job_id}.mp4", DAY, "C", ".mp4", 1, 2, 3, 4, "ab" * 32, 0.0, 0.0
        )

    for job_id in ("a", "b"):
        cache.put(record(job_id), tmp_path / job_id, 0, now[0])
    assert cache.get("a", 0) is not None  # a is now the most recent
    cache.put(record("c"), tmp_path / "c", 0, now[0])
    assert len(cache) == 2 and cache.get("b", 0) is None and cache.get("a", 0) is not None
    cache.put(record("d"), tmp_path / "d", 0, now[0])  # read before generation 1 ...
    assert cache.get("a", 1) is None and len(cache) == 0  # ... and 1 empties the cache
    cache.put(record("d"), tmp_path / "d", 0, now[0])  # a read older than the cache: dropped
    assert len(cache) == 0
    cache.put(record("d"), tmp_path / "d", 1, now[0])
    now[0] += 5.0
    assert cache.get("d", 1) is None and len(cache) == 0


def _head(url: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers)


def test_clipd_cleanup_in_another_process_stops_cached_downloads(
    make_daemon: Any, clips_dir: Path
) -> None:
    old = time.time() - 10 * 3600
    data = clip_bytes(100_000, 3)
    write_clip(clips_dir, DAY, "Old_job1.mp4", data, mtime=old)
    daemon = make_daemon().start()
    # HEAD fills the cache and counts no download: no counter flush (an index write)
    # ends the entry before the cleanup does.
    for _ in range(2):
        status, headers = _head(daemon.url + URL)
        assert status == 200 and headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    result = subprocess.run(
        [sys.executable, "-m", "clipd", "cleanup", "--clips-dir", str(clips_dir), "--max-age", "1"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert not (clips_dir / DAY / "Old_job1.mp4").exists()
    status, _, body = daemon.get(URL)
    assert status == 404, body
    # The lstat of the cached entry failed, so the index answered (its row is gone).
    assert b"no clip with job id job1" in body
