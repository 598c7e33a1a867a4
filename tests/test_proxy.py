"""Proxy mode's streaming: the GET's own identity is checked; a broken store body is cut."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import ClientPayloadError, web

from clipd.conditional import decide
from clipd.proxy import ObjectChanged, proxy_download
from clipd.record import ClipRecord, Identity

DATA = bytes(range(256)) * 40
IDENTITY = Identity(len(DATA), 10**18, 10**18, 0)
RECORD = ClipRecord(
    "p1", "2024-05-02/Clip_p1.mp4", "2024-05-02", "Clip", ".mp4", *IDENTITY, "ab" * 32, 0.0, 0.0
)


class _Body:
    def __init__(self, identity: Identity, data: bytes, fail_after: int | None = None) -> None:
        self.identity, self._data, self._fail_after, self._at = identity, data, fail_after, 0
        self.closed = False

    def read(self, size: int) -> bytes:
        if self._fail_after is not None and self._at >= self._fail_after:
            raise OSError("connection reset by the store")
        chunk = self._data[self._at : self._at + min(size, 1000)]
        self._at += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


class _Backend:
    def __init__(self, body: _Body) -> None:
        self.body = body

    async def open_range(self, relpath: str, first: int, last: int) -> _Body:
        self.body._data = self.body._data[first : last + 1]
        return self.body


async def _serve(aiohttp_client: Any, backend: _Backend, outcome: list[str]) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        decision = decide("GET", request.headers, RECORD.sha256, RECORD.mtime_ns, len(DATA))
        try:
            return await proxy_download(backend, request, RECORD, decision, {})  # type: ignore[arg-type]
        except ObjectChanged:
            outcome.append("changed")
            return web.json_response({"error": "integrity_mismatch"}, status=409)

    app = web.Application()
    app.router.add_get("/clip", handler)
    return await aiohttp_client(app)


async def test_the_gets_own_identity_must_equal_the_record(aiohttp_client: Any) -> None:
    replaced = _Body(Identity(len(DATA), 2 * 10**18, 2 * 10**18, 0), DATA)
    outcome: list[str] = []
    client = await _serve(aiohttp_client, _Backend(replaced), outcome)
    response = await client.get("/clip")
    assert response.status == 409 and outcome == ["changed"] and replaced.closed
    assert DATA[:100] not in await response.read()


async def test_ranges_come_from_the_store_as_decided(aiohttp_client: Any) -> None:
    client = await _serve(aiohttp_client, _Backend(_Body(IDENTITY, DATA)), [])
    response = await client.get("/clip", headers={"Range": "bytes=100-2599"})
    assert response.status == 206 and await response.read() == DATA[100:2600]
    assert response.headers["Content-Range"] == f"bytes 100-2599/{len(DATA)}"


async def test_a_store_breaking_off_mid_body_cuts_the_response_short(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = _Body(IDENTITY, DATA, fail_after=3000)
    client = await _serve(aiohttp_client, _Backend(body), [])
    with caplog.at_level(logging.WARNING, logger="clipd.proxy"):
        response = await client.get("/clip")
        assert response.status == 200
        with pytest.raises(ClientPayloadError):  # shorter than its Content-Length
            await response.read()
    assert body.closed
    assert "the store ended the body after 3000 of 10240 bytes" in caplog.text
