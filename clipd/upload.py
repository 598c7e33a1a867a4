"""PUT /api/v1/jobs/{job_id}: a clip uploaded by a writer that is not on the host.

The body is streamed (never buffered whole) to a hidden ``*.tmp`` in today's folder and
hashed while it is written; the file is fsynced, checked against
``x-amz-checksum-sha256`` or ``Repr-Digest`` when given, validated like any ingested
clip (size bounds, container signature), moved in through the backend and recorded
before the response. Whatever goes wrong, the temp file is removed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiohttp import web

from clipd.checks import BLOCK_BYTES, signature_ok
from clipd.errors import (
    ChecksumMismatch,
    Conflict,
    InsufficientStorage,
    InvalidClip,
    InvalidRequest,
    PayloadTooLarge,
)
from clipd.jobs import job_id_of, record_json, require_writer
from clipd.naming import ClipName, build_name, day_of, sanitize_title
from clipd.record import ClipRecord, new_record
from clipd.web import STATE, State

__all__ = ["expected_sha256", "put_job"]

logger = logging.getLogger(__name__)

_EXT_BY_TYPE = {
    "video/mp4": ".mp4",
    "video/x-m4v": ".m4v",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "image/gif": ".gif",
}
_DEFAULT_EXT = ".mp4"
_SNIFF_BYTES = 64
_REPR_SHA256_RE = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?(?=,|$)")
_FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})
_IN_FLIGHT = "uploads_in_flight"


@dataclass(frozen=True, slots=True)
class _Received:
    sha256: str
    size_bytes: int
    head: bytes


def expected_sha256(headers: Mapping[str, str]) -> bytes | None:
    """The SHA-256 the client promises, from ``x-amz-checksum-sha256`` or ``Repr-Digest``.

    Raises InvalidRequest (400) for a header that is present but malformed.
    """
    amz = headers.get("x-amz-checksum-sha256")
    if amz is not None:
        return _b64_digest("x-amz-checksum-sha256", amz.strip())
    repr_digest = headers.get("Repr-Digest")
    if repr_digest is None:
        return None
    match = _REPR_SHA256_RE.search(repr_digest)
    if match is None:
        if "sha-256" in repr_digest.lower():
            raise InvalidRequest(f"Repr-Digest={repr_digest[:120]!r}: malformed sha-256 member")
        return None  # only algorithms clipd does not check
    return _b64_digest("Repr-Digest sha-256", match.group(1))


def _b64_digest(name: str, value: str) -> bytes:
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise InvalidRequest(f"{name}={value[:80]!r}: must be the base64 of a 32-byte SHA-256")
    return digest


def _extension(request: web.Request, allowed: tuple[str, ...]) -> str:
    ext = request.query.get("ext")
    if ext is None:
        content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        ext = _EXT_BY_TYPE.get(content_type, _DEFAULT_EXT)
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext not in allowed:
        raise InvalidRequest(f"ext={ext[:20]!r}: must be one of " + ", ".join(allowed))
    return ext


def _open_tmp(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "xb")  # closed by the caller's finally


def _write(f: IO[bytes], digest: hashlib._Hash, data: bytes) -> None:
    f.write(data)
    digest.update(data)


def _finish(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _discard(f: IO[bytes] | None, path: Path) -> None:
    if f is not None:
        f.close()
    path.unlink(missing_ok=True)


async def _receive(request: web.Request, f: IO[bytes], max_bytes: int) -> _Received:
    """Stream the body into ``f`` in ~1 MiB writes, hashing as it goes; 413 past the cap."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    pending = bytearray()
    async for chunk in request.content.iter_chunked(BLOCK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body is over web.max_upload_bytes ({max_bytes} bytes)")
        if len(head) < _SNIFF_BYTES:
            head += chunk[: _SNIFF_BYTES - len(head)]
        pending += chunk
        if len(pending) >= BLOCK_BYTES:
            await asyncio.to_thread(_write, f, digest, bytes(pending))
            pending.clear()
    if pending:
        await asyncio.to_thread(_write, f, digest, bytes(pending))
    await asyncio.to_thread(_finish, f)
    return _Received(digest.hexdigest(), size, head)


async def put_job(request: web.Request) -> web.Response:
    """PUT /api/v1/jobs/{job_id}?title=…&ext=…: store an uploaded clip, 201 with its record."""
    state: State = request.app[STATE]
    config = state.config
    job_id = job_id_of(request)
    require_writer(request, config.web)
    raw_title = request.query.get("title", "")
    title = sanitize_title(raw_title)
    ext = _extension(request, config.storage.extensions)
    expected = expected_sha256(request.headers)
    max_bytes = config.web.max_upload_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(
            f"Content-Length {request.content_length} is over web.max_upload_bytes ({max_bytes})"
        )
    in_flight: set[str] = state.extras.setdefault(_IN_FLIGHT, set())
    if job_id in in_flight or await state.index.get(job_id) is not None:
        raise Conflict(f"job id {job_id} already exists; DELETE it first to replace it")
    in_flight.add(job_id)
    try:
        record = await _store(state, request, job_id, title, raw_title, ext, expected)
    finally:
        in_flight.discard(job_id)
    state.metrics.ingested_files.inc()
    state.metrics.ingested_bytes.inc(record.size_bytes)
    logger.info(
        "uploaded %s (job %s, %d bytes, sha256 %s)",
        record.relpath,
        job_id,
        record.size_bytes,
        record.sha256,
    )
    body = record_json(record, config.web.base_url)
    return web.json_response(body, status=201, headers={"Location": body["download_url"]})


async def _store(
    state: State,
    request: web.Request,
    job_id: str,
    title: str,
    raw_title: str,
    ext: str,
    expected: bytes | None,
) -> ClipRecord:
    config = state.config
    now = time.time()
    day = day_of(now)
    name = build_name(title, job_id, ext)
    relpath = f"{day}/{name}"
    # Hidden and *.tmp: the watcher ignores it, and a crash leaves it to stale-tmp cleanup.
    tmp = state.clips_dir / day / f".{name}.{secrets.token_hex(6)}.tmp"
    f: IO[bytes] | None = None
    try:
        f = await asyncio.to_thread(_open_tmp, tmp)
        received = await _receive(request, f, config.web.max_upload_bytes)
        await asyncio.to_thread(f.close)
        f = None
        _validate(received, expected, ext, config.storage.min_bytes, config.storage.max_bytes)
        identity = await state.backend.put(tmp, relpath, received.sha256)
        record = new_record(
            ClipName(title, job_id, ext),
            relpath,
            day,
            identity,
            received.sha256,
            now,
            display_title=raw_title if raw_title and raw_title != title else "",
        )
        # Recorded before the response, with the identity the file has now: when the
        # watcher's event for the new name arrives, ingest finds it unchanged.
        await state.index.write(lambda ix: ix.upsert(record))
        return record
    except OSError as exc:
        if exc.errno in _FULL_DISK:
            logger.error("upload of job %s refused: %s", job_id, exc.strerror)
            await _drain(request, config.web.max_upload_bytes)
            raise InsufficientStorage(
                f"no space left for job {job_id} ({exc.strerror}); nothing was kept"
            ) from exc
        if isinstance(exc, FileExistsError):
            raise Conflict(f"{relpath} already exists") from exc
        raise
    finally:
        await asyncio.to_thread(_discard, f, tmp)


async def _drain(request: web.Request, limit_bytes: int) -> None:
    """Read and drop the rest of a refused body (up to the upload cap), so that the
    client, still sending, gets the answer rather than a reset connection."""
    left = limit_bytes
    while left > 0 and (chunk := await request.content.readany()):
        left -= len(chunk)


def _validate(
    received: _Received, expected: bytes | None, ext: str, min_bytes: int, max_bytes: int
) -> None:
    if expected is not None and expected.hex() != received.sha256:
        raise ChecksumMismatch(
            f"body sha256 {received.sha256} != the given checksum {expected.hex()}; "
            "nothing was kept"
        )
    if received.size_bytes < min_bytes:
        raise InvalidClip(f"size {received.size_bytes} bytes is below min_bytes {min_bytes}")
    if received.size_bytes > max_bytes:
        raise InvalidClip(f"size {received.size_bytes} bytes is above max_bytes {max_bytes}")
    if not signature_ok(ext, received.head):
        raise InvalidClip(f"container signature does not match {ext}")
