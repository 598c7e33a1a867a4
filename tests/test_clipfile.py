"""ClipFileResponse and CheckedPath: what FileResponse is handed, and when it refuses."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from clipd.checks import identity_of
from clipd.clipfile import CheckedPath, ClipFileResponse, StaleEntry
from clipd.conditional import decide

ETAG = '"' + "ab" * 32 + '"'


async def test_clip_removed_before_sending_answers_404(aiohttp_client, tmp_path: Path) -> None:
    downloading: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.StreamResponse:
        decision = decide("GET", request.headers, "ab" * 32, 1, 10)
        gone = tmp_path / "2026-11-24" / "Gone_gone1.mp4"  # never existed: as if evicted
        return ClipFileResponse(gone, {"ETag": ETAG}, request, decision, "gone1", downloading)

    app = web.Application()
    app.router.add_get("/clip", handler)
    client = await aiohttp_client(app)
    response = await client.get("/clip")
    assert response.status == 404
    await response.read()
    assert not downloading
    # The connection stays usable: a second request on it is answered too.
    assert (await client.get("/clip")).status == 404


def test_checked_path_stat_is_the_identity_check(tmp_path: Path) -> None:
    clip = tmp_path / "Clip_j1.mp4"
    clip.write_bytes(b"x" * 100)
    identity = identity_of(os.lstat(clip))
    current = [True]
    path = CheckedPath.of(clip, identity, lambda: current[0])
    assert path.stat().st_ino == identity.inode and path.checked
    current[0] = False  # the index changed since the record was read
    with pytest.raises(StaleEntry):
        CheckedPath.of(clip, identity, lambda: current[0]).stat()
    os.utime(clip, ns=(1, 1))  # touched
    with pytest.raises(StaleEntry):
        CheckedPath.of(clip, identity, lambda: True).stat()
    link = tmp_path / "Link_j2.mp4"
    link.symlink_to(clip)  # a symlink has its own inode: never the clip's identity
    with pytest.raises(StaleEntry):
        CheckedPath.of(link, identity_of(os.stat(clip)), lambda: True).stat()
    clip.unlink()
    with pytest.raises(StaleEntry):
        CheckedPath.of(clip, identity, lambda: True).stat()


async def test_stale_checked_path_sends_nothing(aiohttp_client, tmp_path: Path) -> None:
    clip = tmp_path / "Clip_j1.mp4"
    clip.write_bytes(b"old bytes")
    identity = identity_of(os.lstat(clip))
    clip.write_bytes(b"new bytes")  # same size; the ctime moved
    downloading: Counter[str] = Counter()
    outcomes: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        decision = decide("GET", request.headers, "ab" * 32, 1, 9)
        path = CheckedPath.of(clip, identity, lambda: True)
        response = ClipFileResponse(path, {"ETag": ETAG}, request, decision, "j1", downloading)
        try:
            await response.prepare(request)
        except StaleEntry:
            outcomes.append("stale")
            return web.json_response({"error": "stale"}, status=409)
        return response

    app = web.Application()
    app.router.add_get("/clip", handler)
    client = await aiohttp_client(app)
    response = await client.get("/clip")
    assert response.status == 409 and await response.json() == {"error": "stale"}
    assert outcomes == ["stale"] and not downloading
