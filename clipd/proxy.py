"""Remote clips streamed through clipd (``[s3] download_mode = "proxy"``).

The default answers a download of a remote clip with a 302 to a presigned URL. In proxy
mode clipd fetches the bytes itself (a ranged GetObject in a worker thread) and streams
them with the same headers, ETag, Range and error semantics as a local clip. The GET's
own answer names the object's size, LastModified and ETag: when they no longer equal the
record, nothing is sent (:class:`ObjectChanged`; the caller refuses with 409).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from clipd.conditional import Decision, Outcome
from clipd.errors import NotFound
from clipd.record import ClipRecord, Identity
from clipd.storage import Backend

__all__ = ["CHUNK_BYTES", "ObjectChanged", "proxy_download"]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # per read from the store (one worker-thread hop each)


class ObjectChanged(Exception):
    """The stored object is not the one the record describes (size, LastModified or ETag)."""

    def __init__(self, current: Identity) -> None:
        super().__init__(f"stored object changed: {current}")
        self.current = current


async def proxy_download(
    backend: Backend,
    request: web.BaseRequest,
    record: ClipRecord,
    decision: Decision,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Stream the clip's bytes (or the decided range) from the store."""
    partial = decision.outcome is Outcome.PARTIAL
    first, last = (decision.start, decision.end) if partial else (0, record.size_bytes - 1)
    response = web.StreamResponse(status=206 if partial else 200, headers=headers)
    response.content_length = last - first + 1 if record.size_bytes else 0
    if partial:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{record.size_bytes}"
    if request.method == "HEAD" or not record.size_bytes:
        await response.prepare(request)
        return response
    body = await backend.open_range(record.relpath, first, last)
    if body is None:
        raise NotFound(f"the object of job {record.job_id} is gone")
    if body.identity != record.identity:
        await asyncio.to_thread(body.close)
        raise ObjectChanged(body.identity)
    sent = 0
    try:
        await response.prepare(request)
        while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; aiohttp closes the connection quietly when it finishes
    except Exception as exc:  # the store broke off mid-body: the client sees it short
        logger.warning(
            "job %s: the store ended the body after %d of %d bytes: %s",
            record.job_id,
            sent,
            last - first + 1,
            exc,
        )
        if request.transport is not None:
            request.transport.close()
    finally:
        await asyncio.to_thread(body.close)
    return response
