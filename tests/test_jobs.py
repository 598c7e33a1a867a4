"""The jobs API on a real aiohttp server over a real tree and index: downloads and DELETE.

PUT (clipd/upload.py) is in tests/test_upload.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clipd.async_index import AsyncIndex
from clipd.checks import sha256_file
from clipd.config import load
from clipd.index import index_path
from clipd.jobs import routes
from clipd.metrics import Metrics
from clipd.record import ClipRecord
from clipd.storage.local import LocalBackend
from clipd.web import State, make_app
from tests.helpers import clip_bytes, index_rows, wait_for, write_clip

DAY = "2026-11-24"
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    client: Any
    state: State
    clips_dir: Path

    def configure(self, **env: str) -> None:
        """Swap the config, as SIGHUP does (env names as in production)."""
        self.state.config = load({}, {"CLIPS_DIR": str(self.clips_dir), **env}, None)

    async def add(
        self,
        job_id: str,
        size: int = 4096,
        title: str = "My_Clip",
        display_title: str = "",
        ext: str = ".mp4",
        seed: int = 1,
    ) -> ClipRecord:
        data = clip_bytes(size, seed)
        path = write_clip(self.clips_dir, DAY, f"{title}_{job_id}{ext}", data)
        sha, identity = sha256_file(path)
        now = time.time()
        record = ClipRecord(
            job_id=job_id,
            relpath=f"{DAY}/{path.name}",
            day=DAY,
            title=title,
            ext=ext,
            size_bytes=identity.size_bytes,
            mtime_ns=identity.mtime_ns,
            ctime_ns=identity.ctime_ns,
            inode=identity.inode,
            sha256=sha,
            ingested_at=now,
            verified_at=now,
            display_title=display_title,
        )
        await self.state.index.write(lambda ix: ix.upsert(record))
        return record

    async def row(self, job_id: str) -> ClipRecord | None:
        return await self.state.index.get(job_id)


@contextlib.asynccontextmanager
async def _make_api(
    aiohttp_client: Any, clips_dir: Path, backend: Any = None, **env: str
) -> AsyncIterator[Api]:
    config = load({}, {"CLIPS_DIR": str(clips_dir), "CLIPD_API_TOKEN": TOKEN, **env}, None)
    index = AsyncIndex(index_path(clips_dir))
    await index.open()
    state = State(
        config=config,
        index=index,
        metrics=Metrics(),
        backend=backend or LocalBackend(clips_dir),
        ready=True,
    )
    client = await aiohttp_client(make_app(state, routes()))
    try:
        yield Api(client, state, clips_dir)
    finally:
        await index.close()


@pytest.fixture
async def api(aiohttp_client: Any, clips_dir: Path) -> AsyncIterator[Api]:
    async with _make_api(aiohttp_client, clips_dir) as made:
        yield made


def _metric(state: State, name: str, **labels: str) -> float:
    value = state.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


async def _settled(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` on the loop (the server runs between polls) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached within the deadline"
        await asyncio.sleep(0.01)


async def _error(response: Any, status: int) -> dict[str, str]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "detail"}
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("a%2Fb", 400),
        ("..%2F..%2Fetc", 400),
        ("a.b", 400),
        ("a%00b", 400),
        ("%FF", 400),
        ("x" * 65, 400),
        ("%C3%A9", 400),
        ("a_b", 400),
        ("..", 404),
        ("%2E%2E", 404),
    ],
)
async def test_hostile_job_ids_are_refused_as_json(api: Api, raw: str, status: int) -> None:
    await api.add("job1")
    for path in (f"/api/v1/jobs/{raw}/download", f"/api/v1/jobs/{raw}"):
        response = await api.client.get(path)
        await _error(response, status)


async def test_job_record_as_json(api: Api) -> None:
    record = await api.add("job1", display_title="Mon clip")
    response = await api.client.get("/api/v1/jobs/job1")
    assert response.status == 200
    body = await response.json()
    assert body["job_id"] == "job1" and body["title"] == "Mon clip"
    assert body["sha256"] == record.sha256 and body["size_bytes"] == 4096
    assert body["download_url"] == "http://localhost:8000/api/v1/jobs/job1/download"


# -- DELETE ------------------------------------------------------------------------------------


async def test_delete_needs_a_configured_token(api: Api) -> None:
    await api.add("job1")
    api.configure()
    body = await _error(await api.client.delete("/api/v1/jobs/job1", headers=AUTH), 403)
    assert "CLIPD_API_TOKEN" in body["detail"]
    assert await api.row("job1") is not None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer tökén"},
    ],
)
async def test_delete_with_a_wrong_token_is_401(api: Api, headers: dict[str, str]) -> None:
    await api.add("job1")
    response = await api.client.delete("/api/v1/jobs/job1", headers=headers)
    await _error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await api.row("job1") is not None


async def test_delete_removes_file_and_record(api: Api) -> None:
    record = await api.add("job1")
    response = await api.client.delete("/api/v1/jobs/job1", headers=AUTH)
    assert response.status == 204
    assert not (api.clips_dir / record.relpath).exists()
    assert await api.row("job1") is None
    await _error(await api.client.delete("/api/v1/jobs/job1", headers=AUTH), 404)


# -- the real daemon ------------------------------------------------------------------------


def test_daemon_put_download_delete_end_to_end(make_daemon: Any, clips_dir: Path) -> None:
    import urllib.request

    daemon = make_daemon(env={"CLIPD_API_TOKEN": TOKEN}).start()
    data = clip_bytes(200_000, 9)
    request = urllib.request.Request(
        daemon.url + "/api/v1/jobs/e2e?title=End%20to%20end", data=data, method="PUT", headers=AUTH
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    status, _, body = daemon.get("/api/v1/jobs/e2e/download", {"Range": "bytes=0-99"})
    assert status == 206 and body == data[:100]
    status, _, body = daemon.get("/api/v1/jobs/e2e/download")
    assert status == 200 and body == data
    rows = index_rows(clips_dir)
    (relpath,) = rows
    assert rows[relpath] == (hashlib.sha256(data).hexdigest(), len(data))
    # The watcher saw the new name too: ingest must leave the upload's row alone.
    wait_for(lambda: "e2e" in daemon.log(), what="upload logged")
    assert daemon.metric("clipd_downloads_total") == 2
    assert daemon.stop() == 0
    import sqlite3

    conn = sqlite3.connect(clips_dir / ".clipd" / "index.sqlite3")
    try:
        downloads = conn.execute("SELECT job_id, count, bytes FROM downloads_daily").fetchall()
        display = conn.execute("SELECT display_title FROM clips").fetchall()
    finally:
        conn.close()
    assert downloads == [("e2e", 2, 100 + len(data))]
    assert display == [("End to end",)]
    log = daemon.log()
    assert "clipd.quarantine" not in log and "clipd.ingest: recorded" not in log, log
