"""A clip removed between the integrity check and the send answers 404, never a drop."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from aiohttp import web

from clipd.conditional import decide
from clipd.jobs import _ClipFileResponse


async def test_clip_removed_before_sending_answers_404(aiohttp_client, tmp_path: Path) -> None:
    downloading: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.StreamResponse:
        decision = decide("GET", request.headers, "ab" * 32, 1, 10)
        gone = tmp_path / "2026-11-24" / "Gone_gone1.mp4"  # never existed: as if evicted
        return _ClipFileResponse(
            gone, {"ETag": '"' + "ab" * 32 + '"'}, request, decision, "gone1", downloading
        )

    app = web.Application()
    app.router.add_get("/clip", handler)
    client = await aiohttp_client(app)
    response = await client.get("/clip")
    assert response.status == 404
    await response.read()
    assert not downloading
    # The connection stays usable: a second request on it is answered too.
    assert (await client.get("/clip")).status == 404
