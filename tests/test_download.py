"""GET/HEAD /api/v1/jobs/{job_id}/download (clipd/download.py) on a real aiohttp server.

Moved unchanged from tests/test_jobs.py, whose Api helpers they share. The record
cache has tests/test_jobs_cache.py; hostile job ids (download and record routes) stay
in tests/test_jobs.py.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from clipd import download
from clipd.downloads_log import download_log
from clipd.naming import day_of
from clipd.quarantine import quarantine_dir
from clipd.record import ClipRecord
from clipd.storage.local import LocalBackend
from clipd.web import State
from tests.helpers import clip_bytes
from tests.test_jobs import DAY, Api, _error, _make_api, _metric, _settled


@pytest.fixture
async def api(aiohttp_client: Any, clips_dir: Path) -> AsyncIterator[Api]:
    async with _make_api(aiohttp_client, clips_dir) as made:
        yield made


async def test_download_sends_the_clip_with_sha256_validators(api: Api) -> None:
    record = await api.add("job1")
    response = await api.client.get("/api/v1/jobs/job1/download")
    assert response.status == 200
    assert await response.read() == (api.clips_dir / record.relpath).read_bytes()
    h = response.headers
    assert h["ETag"] == f'"{record.sha256}"'
    digest = base64.b64encode(bytes.fromhex(record.sha256)).decode()
    assert h["Repr-Digest"] == f"sha-256=:{digest}:"
    assert h["Accept-Ranges"] == "bytes"
    assert h["Cache-Control"] == "private, max-age=3600"
    assert h["Content-Type"] == "video/mp4"
    assert h["Content-Length"] == str(record.size_bytes)
    assert h["Last-Modified"] == formatdate(record.mtime_ns // 10**9, usegmt=True)
    assert h["Content-Disposition"].startswith('attachment; filename="My_Clip_job1.mp4"')
    # Counted once the body is sent, i.e. as the handler resumes after the client read it.
    await _settled(lambda: _metric(api.state, "clipd_downloads_total", code="200") == 1)
    assert _metric(api.state, "clipd_download_bytes_total") == record.size_bytes


async def test_head_sends_headers_without_body(api: Api) -> None:
    record = await api.add("job1")
    response = await api.client.head("/api/v1/jobs/job1/download")
    assert response.status == 200
    assert await response.read() == b""
    assert response.headers["Content-Length"] == str(record.size_bytes)
    assert response.headers["ETag"] == f'"{record.sha256}"'


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=4000-", 4000, 4095),
        ("bytes=-16", 4080, 4095),
        ("bytes=4090-99999", 4090, 4095),
    ],
)
async def test_range_is_served_as_206(api: Api, range_header: str, start: int, end: int) -> None:
    record = await api.add("job1")
    data = (api.clips_dir / record.relpath).read_bytes()
    response = await api.client.get("/api/v1/jobs/job1/download", headers={"Range": range_header})
    assert response.status == 206
    assert await response.read() == data[start : end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert response.headers["ETag"] == f'"{record.sha256}"'


async def test_unsatisfiable_range_is_416_json(api: Api) -> None:
    await api.add("job1")
    response = await api.client.get(
        "/api/v1/jobs/job1/download", headers={"Range": "bytes=5000-6000"}
    )
    await _error(response, 416)
    assert response.headers["Content-Range"] == "bytes */4096"


async def test_if_range_with_current_etag_or_date_honours_the_range(api: Api) -> None:
    record = await api.add("job1")
    last_modified = formatdate(record.mtime_ns // 10**9, usegmt=True)
    for validator in (f'"{record.sha256}"', last_modified):
        response = await api.client.get(
            "/api/v1/jobs/job1/download", headers={"Range": "bytes=0-9", "If-Range": validator}
        )
        assert response.status == 206, validator
        assert len(await response.read()) == 10


async def test_stale_if_range_sends_the_whole_clip(api: Api) -> None:
    record = await api.add("job1")
    for validator in (
        '"' + "0" * 64 + '"',
        f'W/"{record.sha256}"',
        formatdate(record.mtime_ns // 10**9 - 60, usegmt=True),
    ):
        response = await api.client.get(
            "/api/v1/jobs/job1/download", headers={"Range": "bytes=0-9", "If-Range": validator}
        )
        assert response.status == 200, validator
        assert len(await response.read()) == record.size_bytes
        assert "Content-Range" not in response.headers


async def test_if_none_match_is_304_and_if_match_mismatch_is_412(api: Api) -> None:
    record = await api.add("job1")
    etag = f'"{record.sha256}"'
    response = await api.client.get(
        "/api/v1/jobs/job1/download", headers={"If-None-Match": f'"other", {etag}'}
    )
    assert response.status == 304
    assert response.headers["ETag"] == etag
    assert await response.read() == b""
    response = await api.client.get(
        "/api/v1/jobs/job1/download", headers={"If-None-Match": '"other"'}
    )
    assert response.status == 200
    body = await _error(
        await api.client.get("/api/v1/jobs/job1/download", headers={"If-Match": '"other"'}), 412
    )
    assert body["error"] == "precondition_failed"
    response = await api.client.get("/api/v1/jobs/job1/download", headers={"If-Match": etag})
    assert response.status == 200


async def test_if_modified_since_is_304_when_not_modified(api: Api) -> None:
    record = await api.add("job1")
    later = formatdate(record.mtime_ns // 10**9 + 10, usegmt=True)
    response = await api.client.get(
        "/api/v1/jobs/job1/download", headers={"If-Modified-Since": later}
    )
    assert response.status == 304


async def test_non_ascii_title_gets_rfc6266_disposition(api: Api) -> None:
    await api.add("job1", title="Caf_au_lait", display_title="Café ☕ «au lait»")
    response = await api.client.get("/api/v1/jobs/job1/download")
    disposition = response.headers["Content-Disposition"]
    assert disposition == (
        'attachment; filename="Caf_au_lait_job1.mp4"; '
        "filename*=UTF-8''Caf%C3%A9%20%E2%98%95%20%C2%ABau%20lait%C2%BB.mp4"
    )
    disposition.encode("ascii")  # a header must stay ASCII


async def test_clip_modified_behind_clipds_back_is_refused_and_quarantined(api: Api) -> None:
    record = await api.add("job1")
    path = api.clips_dir / record.relpath
    data = bytearray(path.read_bytes())  # same size, other bytes, mtime put back
    data[100:108] = b"tampered"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(record.mtime_ns, record.mtime_ns))
    assert path.stat().st_size == record.size_bytes
    body = await _error(await api.client.get("/api/v1/jobs/job1/download"), 409)
    assert body["error"] == "integrity_mismatch"
    assert not path.exists()
    assert list(quarantine_dir(api.clips_dir).glob(f"{DAY}/*job1.mp4"))
    assert await api.row("job1") is None
    assert _metric(api.state, "clipd_integrity_mismatches_total") == 1
    await _error(await api.client.get("/api/v1/jobs/job1/download"), 404)


async def test_a_tampered_clip_the_watcher_quarantined_first_is_counted_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await api.add("job1")
    path = api.clips_dir / record.relpath
    path.write_bytes(b"X" * record.size_bytes)
    # The watcher's ingest moved it (and counted it) between this download's hash and its
    # own quarantine move, which then finds nothing to move.
    monkeypatch.setattr(download, "quarantine_file", lambda *args: None)
    body = await _error(await api.client.get("/api/v1/jobs/job1/download"), 409)
    assert body["error"] == "integrity_mismatch"
    assert _metric(api.state, "clipd_integrity_mismatches_total") == 0
    assert await api.row("job1") is None


async def test_a_tampered_clip_the_watcher_moved_away_mid_check_is_refused_with_409(
    api: Api,
) -> None:
    record = await api.add("job1")
    path = api.clips_dir / record.relpath
    path.write_bytes(b"X" * record.size_bytes)
    # The watcher's ingest saw the same change and quarantined the file before this
    # download looked; its row is still in the index for a moment.
    download.quarantine_file(api.clips_dir, record.relpath, "integrity: bytes changed", "job1")
    body = await _error(await api.client.get("/api/v1/jobs/job1/download"), 409)
    assert body["error"] == "integrity_mismatch"
    assert "quarantined" in body["detail"]


@pytest.mark.parametrize("change", ["removed", "rewritten"])
async def test_clip_changed_between_check_and_send_is_checked_again(
    api: Api, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    record = await api.add("job1")
    path = api.clips_dir / record.relpath
    checked = download._verified

    async def checked_then_changed(state: State, found: Any) -> ClipRecord:
        result = await checked(state, found)
        if path.exists() and path.read_bytes()[:4] != b"XXXX":
            if change == "removed":
                path.unlink()  # as retention would, right after the check
            else:
                path.write_bytes(b"X" * record.size_bytes)  # other bytes, same size
        return result

    monkeypatch.setattr(download, "_verified", checked_then_changed)
    response = await api.client.get("/api/v1/jobs/job1/download")
    # Never aiohttp's own empty 404 with the clip's headers: the index path decides again.
    if change == "removed":
        body = await _error(response, 404)
        assert body["detail"] == "the file of job job1 is gone"
    else:
        body = await _error(response, 409)
        assert body["error"] == "integrity_mismatch"
        assert list(quarantine_dir(api.clips_dir).glob(f"{DAY}/*job1.mp4"))
    assert "ETag" not in response.headers


async def test_touched_clip_with_same_bytes_is_served_and_record_refreshed(api: Api) -> None:
    record = await api.add("job1")
    path = api.clips_dir / record.relpath
    os.utime(path, ns=(record.mtime_ns + 5 * 10**9, record.mtime_ns + 5 * 10**9))
    response = await api.client.get("/api/v1/jobs/job1/download")
    assert response.status == 200
    refreshed = await api.row("job1")
    assert refreshed is not None and refreshed.mtime_ns == record.mtime_ns + 5 * 10**9
    assert refreshed.sha256 == record.sha256
    assert _metric(api.state, "clipd_integrity_mismatches_total") == 0


async def test_clip_swapped_for_a_symlink_is_never_served(api: Api, tmp_path: Path) -> None:
    record = await api.add("job1")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(clip_bytes(4096, 1))
    path = api.clips_dir / record.relpath
    path.unlink()
    path.symlink_to(outside)
    await _error(await api.client.get("/api/v1/jobs/job1/download"), 409)
    assert outside.exists() and not path.is_symlink()


async def test_unknown_job_is_404_json(api: Api) -> None:
    body = await _error(await api.client.get("/api/v1/jobs/nope/download"), 404)
    assert body["error"] == "not_found"


# -- signed links, X-Accel-Redirect, remote backends -------------------------------------------


async def test_signed_links_are_required_when_configured(api: Api) -> None:
    from clipd.signing import signed_url

    await api.add("job1")
    api.configure(CLIPD_WEB_SIGNING_KEY="k1", CLIPD_WEB_REQUIRE_SIGNED_DOWNLOADS="true")
    now = 1_900_000_000.0
    api.state.extras["clock"] = lambda: now
    await _error(await api.client.get("/api/v1/jobs/job1/download"), 403)
    url = signed_url("http://x", "k1", "job1", 3600, now)
    path = url.removeprefix("http://x")
    assert (await api.client.get(path)).status == 200
    assert (await api.client.head(path)).status == 200
    await _error(await api.client.get(path.replace("sig=", "sig=0")), 403)
    api.state.extras["clock"] = lambda: now + 3601
    body = await _error(await api.client.get(path), 403)
    assert "expired" in body["detail"]
    api.state.extras["clock"] = lambda: now
    api.configure(CLIPD_WEB_SIGNING_KEY="k2", CLIPD_WEB_REQUIRE_SIGNED_DOWNLOADS="true")
    await _error(await api.client.get(path), 403)  # rotated key


async def test_accel_redirect_hands_nginx_the_path_and_clipds_headers(api: Api) -> None:
    record = await api.add("job1")
    api.configure(CLIPD_WEB_ACCEL_REDIRECT="/_clips/")
    response = await api.client.get("/api/v1/jobs/job1/download")
    assert response.status == 200
    assert response.headers["X-Accel-Redirect"] == f"/_clips/{record.relpath}"
    assert response.headers["ETag"] == f'"{record.sha256}"'
    assert "Repr-Digest" in response.headers and "Content-Disposition" in response.headers
    stale = await api.client.get(
        "/api/v1/jobs/job1/download", headers={"Range": "bytes=0-9", "If-Range": '"stale"'}
    )
    assert stale.headers["X-Accel-Redirect"] == f"/_clips/full/{record.relpath}"
    fresh = await api.client.get(
        "/api/v1/jobs/job1/download",
        headers={"Range": "bytes=0-9", "If-Range": f'"{record.sha256}"'},
    )
    assert fresh.headers["X-Accel-Redirect"] == f"/_clips/{record.relpath}"


class _RemoteBackend(LocalBackend):
    """A backend whose bytes are elsewhere: no local path, a presigned URL instead."""

    def local_path(self, relpath: str) -> Path | None:
        return None

    async def presign(self, relpath: str, ttl_s: int) -> str | None:
        return f"https://bucket.example/{relpath}?ttl={ttl_s}"


async def test_remote_clip_is_redirected_to_a_presigned_url(
    aiohttp_client: Any, clips_dir: Path
) -> None:
    async with _make_api(aiohttp_client, clips_dir, backend=_RemoteBackend(clips_dir)) as api:
        record = await api.add("job1")
        response = await api.client.get("/api/v1/jobs/job1/download", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == f"https://bucket.example/{record.relpath}?ttl=900"


async def test_downloads_are_counted_in_memory_and_flushed_in_one_batch(api: Api) -> None:
    await api.add("job1")
    for _ in range(3):
        assert (await api.client.get("/api/v1/jobs/job1/download")).status == 200
    assert (await api.client.head("/api/v1/jobs/job1/download")).status == 200
    assert await api.state.index.read(lambda ix: ix.downloads("2000-01-01")) == []
    assert await download_log(api.state).flush(api.state.index) == 1
    rows = await api.state.index.read(lambda ix: ix.downloads("2000-01-01"))
    assert rows == [(day_of(time.time()), "job1", 3, 3 * 4096)]
