"""PUT /api/v1/jobs/{job_id} (clipd/upload.py) on a real aiohttp server, tree and index.

Moved unchanged from tests/test_jobs.py, whose Api helpers they share; the end-to-end
PUT through a real daemon stays there.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from clipd.naming import day_of
from tests.helpers import clip_bytes
from tests.test_jobs import AUTH, TOKEN, Api, _error, _make_api


@pytest.fixture
async def api(aiohttp_client: Any, clips_dir: Path) -> AsyncIterator[Api]:
    async with _make_api(aiohttp_client, clips_dir) as made:
        yield made


def _leftovers(clips_dir: Path) -> list[Path]:
    return [p for p in clips_dir.rglob("*") if p.is_file() and ".clipd" not in p.parts]


async def test_put_stores_records_and_serves_the_clip(api: Api) -> None:
    data = clip_bytes(300_000, 7)
    b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    response = await api.client.put(
        "/api/v1/jobs/up1",
        params={"title": "Été à Paris"},
        data=data,
        headers={**AUTH, "x-amz-checksum-sha256": b64, "Content-Type": "video/mp4"},
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["title"] == "Été à Paris" and body["sha256"] == hashlib.sha256(data).hexdigest()
    record = await api.row("up1")
    assert record is not None and record.title == "t_Paris"
    assert record.display_title == "Été à Paris"
    assert record.relpath == f"{day_of(time.time())}/{record.title}_up1.mp4"
    path = api.clips_dir / record.relpath
    assert path.read_bytes() == data
    assert (record.size_bytes, record.mtime_ns, record.inode) == (
        len(data),
        path.stat().st_mtime_ns,
        path.stat().st_ino,
    )
    assert _leftovers(api.clips_dir) == [path]
    download = await api.client.get("/api/v1/jobs/up1/download")
    assert await download.read() == data
    assert (
        "filename*=UTF-8''%C3%89t%C3%A9%20%C3%A0%20Paris.mp4"
        in download.headers["Content-Disposition"]
    )


async def test_put_with_repr_digest_and_default_title(api: Api) -> None:
    data = clip_bytes(5000, 3)
    b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    response = await api.client.put(
        "/api/v1/jobs/up2", data=data, headers={**AUTH, "Repr-Digest": f"sha-256=:{b64}:"}
    )
    assert response.status == 201, await response.text()
    record = await api.row("up2")
    assert record is not None and record.title == "Clip" and record.display_title == ""


@pytest.mark.parametrize(
    "header",
    [
        {"x-amz-checksum-sha256": base64.b64encode(b"\0" * 32).decode()},
        {"Repr-Digest": "sha-256=:" + base64.b64encode(b"\1" * 32).decode() + ":"},
        {"x-amz-checksum-sha256": "not base64!"},
    ],
)
async def test_put_with_a_bad_checksum_keeps_nothing(api: Api, header: dict[str, str]) -> None:
    response = await api.client.put(
        "/api/v1/jobs/up1", data=clip_bytes(100_000, 1), headers={**AUTH, **header}
    )
    await _error(response, 400)
    assert _leftovers(api.clips_dir) == []
    assert await api.row("up1") is None


async def test_put_of_a_bad_container_is_422_and_keeps_nothing(api: Api) -> None:
    response = await api.client.put("/api/v1/jobs/up1", data=b"not a video" * 100, headers=AUTH)
    body = await _error(response, 422)
    assert "signature" in body["detail"]
    assert _leftovers(api.clips_dir) == [] and await api.row("up1") is None


async def test_put_of_an_existing_job_is_409(api: Api) -> None:
    record = await api.add("job1")
    response = await api.client.put("/api/v1/jobs/job1", data=clip_bytes(1000, 2), headers=AUTH)
    await _error(response, 409)
    assert (api.clips_dir / record.relpath).read_bytes() == clip_bytes(4096, 1)


async def test_put_over_the_size_cap_is_413_declared_or_streamed(api: Api) -> None:
    api.configure(CLIPD_API_TOKEN=TOKEN, CLIPD_WEB_MAX_UPLOAD_BYTES="50000")
    await _error(
        await api.client.put("/api/v1/jobs/up1", data=clip_bytes(60_000), headers=AUTH), 413
    )

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(8):
            yield clip_bytes(10_000, i)

    await _error(await api.client.put("/api/v1/jobs/up1", data=chunks(), headers=AUTH), 413)
    assert _leftovers(api.clips_dir) == [] and await api.row("up1") is None


async def test_put_auth_mirrors_delete(api: Api) -> None:
    await _error(await api.client.put("/api/v1/jobs/up1", data=b"x"), 401)
    api.configure()
    await _error(await api.client.put("/api/v1/jobs/up1", data=b"x", headers=AUTH), 403)
    assert _leftovers(api.clips_dir) == []


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[None]:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {result.stderr.strip()}"
        )
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


async def test_put_on_a_full_disk_is_507_and_the_server_keeps_serving(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    clips = tmp_path / "small"
    clips.mkdir()
    with _tmpfs(clips, "2m"):
        async with _make_api(aiohttp_client, clips) as api:
            await api.add("job1", size=10_000)
            big = io.BytesIO(clip_bytes(3 * 1024**2))
            response = await api.client.put("/api/v1/jobs/big", data=big, headers=AUTH)
            body = await _error(response, 507)
            assert "nothing was kept" in body["detail"]
            assert [p.name for p in _leftovers(clips)] == ["My_Clip_job1.mp4"]
            assert await api.row("big") is None
            assert (await api.client.get("/api/v1/jobs/job1/download")).status == 200
