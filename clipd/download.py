"""Integrity-checked downloads: GET|HEAD /api/v1/jobs/{job_id}/download.

A download looks the job id up in the index (never a path built from the request; a
record read in the last seconds may come from :mod:`clipd.record_cache`), checks that
the file's identity still equals the record (re-hashing off the loop when it does not:
same bytes → refresh and serve, other bytes → 409 and quarantine), decides
conditionals and ranges purely against the SHA-256 ETag (:mod:`clipd.conditional`),
and then hands the bytes to aiohttp's ``FileResponse`` (sendfile), to nginx
(``X-Accel-Redirect``) or to the backend (a presigned URL, or :mod:`clipd.proxy`).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from aiohttp import web

from clipd.batch import Batcher
from clipd.checks import FileChangedError, NotRegularFileError, identity_of, sha256_file
from clipd.clipfile import CheckedPath, ClipFileResponse, StaleEntry
from clipd.conditional import Decision, Outcome, decide
from clipd.config import WebConfig
from clipd.downloads_log import download_log
from clipd.errors import Forbidden, IntegrityMismatch, NotFound, PreconditionFailed, StorageError
from clipd.index import Index
from clipd.jobs import CONTENT_TYPES, find_record, job_id_of
from clipd.proxy import ObjectChanged, proxy_download
from clipd.quarantine import integrity_reason, quarantine_file
from clipd.record import ClipRecord, Identity
from clipd.record_cache import RecordCache
from clipd.signing import Verdict, download_path, verify
from clipd.storage import Backend
from clipd.web import STATE, State, error_body

__all__ = ["content_disposition", "download_job", "record_cache", "repr_digest"]

logger = logging.getLogger(__name__)

_FULL_PREFIX = "full/"
# Index-path attempts when the file changes between the check and the send.
_ATTEMPTS = 2
_CACHE_KEY = "record_cache"
_IDENTITIES_KEY = "identity_batcher"
_FAST_PATH_OFF = "cached_downloads_off"
# Compared with request entity-tags when a clip has no SHA-256: no entity-tag's opaque
# part can hold a DQUOTE (RFC 9110 §8.8.3), so only "*" matches it.
_NO_ETAG = '"'


def _clock(state: State) -> Callable[[], float]:
    clock = state.extras.get("clock", time.time)
    assert callable(clock)
    return clock  # type: ignore[no-any-return]


# -- response headers --------------------------------------------------------------------


def content_disposition(record: ClipRecord) -> str:
    """``attachment`` with an ASCII ``filename=`` and a UTF-8 ``filename*=`` (RFC 6266)."""
    stored = record.relpath.rpartition("/")[2]
    wanted = (record.display_title + record.ext) if record.display_title else stored
    encoded = quote(wanted, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{stored}\"; filename*=UTF-8''{encoded}"


def repr_digest(sha256_hex: str) -> str:
    """``Repr-Digest`` for a SHA-256 (RFC 9530: a structured-field byte sequence)."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode() + ":"


def _clip_headers(record: ClipRecord, config: WebConfig) -> dict[str, str]:
    # A fresh dict per response: the caller may add X-Accel-Redirect to it.
    return dict(_clip_headers_cached(record, config.cache_control))


# Formatting these (date, quoting, base64) is a measurable part of a download's cost;
# a record is immutable and any change to it (refresh, rename) makes another key.
@functools.lru_cache(maxsize=1024)  # ~1.5 KiB each
def _clip_headers_cached(record: ClipRecord, cache_control: str) -> dict[str, str]:
    return {
        "Last-Modified": formatdate(record.mtime_ns // 1_000_000_000, usegmt=True),
        "Cache-Control": cache_control,
        "Accept-Ranges": "bytes",
        "Content-Type": CONTENT_TYPES.get(record.ext.lower(), "application/octet-stream"),
        "Content-Disposition": content_disposition(record),
        **_validators(record),
    }


@functools.lru_cache(maxsize=4096)
def _quoted(relpath: str) -> str:
    return quote(relpath)


def _validators(record: ClipRecord) -> dict[str, str]:
    """ETag and Repr-Digest from the SHA-256; none without one (an S3 object stored
    without ``x-amz-meta-sha256``), as an empty digest would make both invalid."""
    if not record.sha256:
        return {}
    return {"ETag": f'"{record.sha256}"', "Repr-Digest": repr_digest(record.sha256)}


# -- finding the record and its file ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """A download's index record and its file's path, with the file's identity when the
    same worker-thread hop could lstat it (``stat_done``; ``current`` None: gone)."""

    record: ClipRecord
    local: Path | None
    current: Identity | None = None
    stat_done: bool = False


def _identity_blocking(local: Path) -> Identity | None:
    try:
        return identity_of(os.lstat(local))
    except FileNotFoundError:
        return None


def _find_blocking(ix: Index, backend: Backend, job_id: str) -> _Found | None:
    # One worker-thread hop for the index read and the lstat the integrity check needs:
    # each hop costs the event loop more than the SQLite read itself.
    record = ix.get(job_id)
    if record is None or record.state != "ok":
        return None
    local = backend.local_path(record.relpath)
    if local is None:
        return _Found(record, None)
    return _Found(record, local, _identity_blocking(local), stat_done=True)


def _identities(state: State) -> Batcher[Path, Identity | None]:
    """The daemon's batcher of ``lstat`` identity checks (made on first use)."""
    return state.shared(_IDENTITIES_KEY, lambda: Batcher(_identity_blocking))


def record_cache(state: State) -> RecordCache:
    """The daemon's cache of recently downloaded records (made on first use)."""
    return state.shared(_CACHE_KEY, RecordCache)


async def _find(state: State, job_id: str) -> _Found:
    index, backend, cache = state.index, state.backend, record_cache(state)
    cached = cache.get(job_id, index.generation)
    if cached is not None:
        # One worker-thread hop for the lstat alone, shared by every download that
        # needs one in this loop iteration.
        generation = cached.generation
        current = await _identities(state)(cached.local)
        if current == cached.record.identity and index.generation == generation:
            return _Found(cached.record, cached.local, current, stat_done=True)
        # Touched, replaced or gone, or the index changed meanwhile: the index decides.
        cache.drop(job_id)
    # Taken before the read: a write committed after it makes the entry stale at once.
    generation, read_at = index.generation, cache.now()
    found = await index.read(lambda ix: _find_blocking(ix, backend, job_id))
    if found is None:
        # Not (or no longer) in the index: find_record decides what a miss means.
        record = await find_record(state, job_id)
        return _Found(record, backend.local_path(record.relpath))
    if found.local is not None and found.current == found.record.identity:
        cache.put(found.record, found.local, generation, read_at)
    return found


# -- integrity ---------------------------------------------------------------------------


async def _verified(state: State, found: _Found) -> ClipRecord:
    """The record, refreshed if the file was touched but its bytes are the same.

    Raises NotFound when the file is gone and IntegrityMismatch (after quarantining the
    file and dropping its row) when its bytes no longer match the SHA-256.
    """
    record, local = found.record, found.local
    current = found.current if found.stat_done else await state.backend.stat(record.relpath)
    if current is None:
        await _gone(state, record, local)
    if current == record.identity:
        return record
    if local is None:
        # Remote bytes cannot be re-hashed cheaply; refuse until a re-listing re-checks them.
        await _refuse(
            state, record, f"stored object changed: {current} != {record.identity}", local=False
        )
    try:
        sha256, identity = await asyncio.to_thread(sha256_file, local)
    except FileNotFoundError:
        await _gone(state, record, local)
    except FileChangedError:
        logger.warning(
            "job %s: %s is being modified right now; refused", record.job_id, record.relpath
        )
        raise IntegrityMismatch(
            f"the file of job {record.job_id} is being modified; it is not served"
        ) from None
    except NotRegularFileError:
        await _refuse(
            state, record, "became a folder, FIFO or device: only regular files are served"
        )
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        await _refuse(state, record, "became a symlink: only regular files are served")
    if sha256 != record.sha256:
        await _refuse(state, record, f"sha256 {sha256} != recorded {record.sha256}")
    return await _refresh(state, record, identity)


async def _gone(state: State, record: ClipRecord, local: Path | None) -> NoReturn:
    """Raise 404 for a vanished file, or 409 when the watcher quarantined it for its bytes."""
    if local is not None:
        reason = await asyncio.to_thread(
            integrity_reason, state.clips_dir, record.relpath, record.job_id
        )
        if reason is not None:
            raise IntegrityMismatch(
                f"the file of job {record.job_id} no longer matches its SHA-256; it was quarantined"
            )
    raise NotFound(f"the file of job {record.job_id} is gone")


async def _refresh(state: State, record: ClipRecord, identity: Identity) -> ClipRecord:
    refreshed = replace(
        record,
        size_bytes=identity.size_bytes,
        mtime_ns=identity.mtime_ns,
        ctime_ns=identity.ctime_ns,
        inode=identity.inode,
        verified_at=_clock(state)(),
    )
    await state.index.write(lambda ix: ix.upsert(refreshed))
    logger.info(
        "job %s: %s was touched but its bytes still match; record refreshed",
        record.job_id,
        record.relpath,
    )
    return refreshed


async def _refuse(state: State, record: ClipRecord, reason: str, local: bool = True) -> NoReturn:
    """Count, log and (for a local file) quarantine a clip whose bytes changed; raises 409.

    A file the watcher's ingest quarantined at the same moment is counted and logged
    there, once (it moved the file; this move finds nothing).
    """
    moved = None
    if local:
        moved = await asyncio.to_thread(
            quarantine_file,
            state.clips_dir,
            record.relpath,
            f"integrity: {reason}",
            record.job_id,
        )
        await state.index.write(lambda ix: ix.delete(record.job_id))
        if moved is not None:
            state.metrics.quarantined_files.labels("integrity").inc()
    if moved is not None or not local:
        state.metrics.integrity_mismatches.inc()
        logger.error(
            "integrity mismatch on download of job %s (%s): %s",
            record.job_id,
            record.relpath,
            reason,
        )
    raise IntegrityMismatch(
        f"the file of job {record.job_id} no longer matches its SHA-256; it was quarantined"
        if local
        else f"the stored object of job {record.job_id} changed; it is not served"
    )


# -- GET|HEAD .../download -----------------------------------------------------------------


def _check_signature(state: State, request: web.Request, job_id: str) -> None:
    config = state.config.web
    if not config.require_signed_downloads:
        return
    if not config.signing_key:
        raise Forbidden("signed downloads are required but web.signing_key is empty")
    verdict = verify(
        config.signing_key, request.method, download_path(job_id), request.query, _clock(state)()
    )
    if verdict is not Verdict.OK:
        raise Forbidden(
            f"a valid signed link is required (link is {verdict.value}); "
            "get one with `clipd sign JOB_ID`"
        )


def _body_bytes(decision: Decision, record: ClipRecord, method: str) -> int:
    if method == "HEAD":
        return 0
    if decision.outcome is Outcome.PARTIAL:
        return decision.end - decision.start + 1
    return record.size_bytes


async def download_job(request: web.Request) -> web.StreamResponse:
    """GET|HEAD /api/v1/jobs/{job_id}/download: the clip, after every check."""
    state: State = request.app[STATE]
    job_id = job_id_of(request)
    _check_signature(state, request, job_id)
    answer = await _send_cached(state, request, job_id)
    for _ in range(_ATTEMPTS):
        if answer is not None:
            break
        answer = await _send_checked(state, request, job_id)
    else:
        # Changed between our check and FileResponse's stat, twice running.
        raise IntegrityMismatch(f"the file of job {job_id} is being modified; it is not served")
    response, record, decision = answer
    state.metrics.downloads_answered(response.status).inc()
    if response.status in {200, 206}:
        sent = _body_bytes(decision, record, request.method)
        state.metrics.download_bytes.inc(sent)
        if request.method == "GET":
            download_log(state).count(job_id, sent)
    return response


def _decide(request: web.Request, record: ClipRecord) -> Decision:
    return decide(
        request.method,
        request.headers,
        record.sha256 or _NO_ETAG,
        record.mtime_ns,
        record.size_bytes,
    )


async def _send_cached(
    state: State, request: web.Request, job_id: str
) -> tuple[web.StreamResponse, ClipRecord, Decision] | None:
    """Send a clip whose record is in the cache, its identity checked by FileResponse's
    own ``stat`` (:class:`~clipd.clipfile.CheckedPath`); None when the cache cannot
    answer (no entry, a stale one, nginx sends the bytes, or no body to send)."""
    index, cache = state.index, record_cache(state)
    if state.config.web.accel_redirect or _FAST_PATH_OFF in state.extras:
        return None
    cached = cache.get(job_id, index.generation)
    if cached is None:
        return None
    record, generation = cached.record, cached.generation
    decision = _decide(request, record)
    if decision.outcome not in {Outcome.FULL, Outcome.PARTIAL}:
        return None  # 304, 412, 416 are answered after the usual check
    path = CheckedPath.of(cached.local, record.identity, lambda: index.generation == generation)
    downloading: Counter[str] = state.shared("downloading", Counter)
    headers = _clip_headers(record, state.config.web)
    response = ClipFileResponse(path, headers, request, decision, job_id, downloading)
    if not await _sent(response, request):
        # Touched, replaced or gone, or the index changed: nothing was sent yet.
        cache.drop(job_id)
        return None
    if not path.checked:
        # An aiohttp that no longer stats the path it was given: this download was
        # sent on the cached record's word; never again.
        state.extras[_FAST_PATH_OFF] = True
        logger.error("FileResponse did not stat the clip's path: cached downloads now re-check")
    return response, record, decision


async def _send_checked(
    state: State, request: web.Request, job_id: str
) -> tuple[web.StreamResponse, ClipRecord, Decision] | None:
    """Answer from the index, after the integrity check; a local clip is sent here, so
    that a file changed or removed after the check (FileResponse stats it again through
    :class:`~clipd.clipfile.CheckedPath`) returns None to check it anew, never a reply
    of aiohttp's own."""
    found = await _find(state, job_id)
    record = await _verified(state, found)
    decision = _decide(request, record)
    headers = _clip_headers(record, state.config.web)
    response = await _respond(state, request, record, found.local, decision, headers)
    if isinstance(response, ClipFileResponse) and not await _sent(response, request):
        record_cache(state).drop(job_id)
        return None
    return response, record, decision


async def _sent(response: ClipFileResponse, request: web.Request) -> bool:
    """Send ``response`` from the handler; False when the file no longer matches what
    it was checked against (:class:`~clipd.clipfile.StaleEntry`: nothing was sent)."""
    try:
        await response.prepare(request)
    except StaleEntry:
        return False
    except ConnectionError:
        # The client went away mid-send. Returned as it is, the response meets the same
        # error again when aiohttp finishes it, and aiohttp closes the connection quietly
        # there, as for any response it sends itself (raised here, it would be logged).
        pass
    return True


def _unchanged() -> bool:
    return True  # the record was read and checked for this download


async def _respond(
    state: State,
    request: web.Request,
    record: ClipRecord,
    local: Path | None,
    decision: Decision,
    headers: dict[str, str],
) -> web.StreamResponse:
    outcome = decision.outcome
    if outcome is Outcome.PRECONDITION_FAILED:
        raise PreconditionFailed(decision.reason)
    if outcome is Outcome.NOT_MODIFIED:
        keep = ("ETag", "Last-Modified", "Cache-Control")
        return web.Response(status=304, headers={k: headers[k] for k in keep if k in headers})
    if outcome is Outcome.RANGE_NOT_SATISFIABLE:
        response = error_body(416, "range_not_satisfiable", decision.reason)
        response.headers["Content-Range"] = f"bytes */{record.size_bytes}"
        if "ETag" in headers:
            response.headers["ETag"] = headers["ETag"]
        return response
    if local is None and state.config.s3.download_mode == "proxy":
        try:
            return await proxy_download(state.backend, request, record, decision, headers)
        except ObjectChanged as exc:
            await _refuse(
                state, record, f"stored object changed: {exc.current} != {record.identity}", False
            )
    if local is None:
        url = await state.backend.presign(record.relpath, state.config.s3.presign_ttl_seconds)
        if url is None:
            raise StorageError(f"the backend has no URL for job {record.job_id}")
        redirect = {"Location": url, "Cache-Control": "no-store"}
        if "ETag" in headers:
            redirect["ETag"] = headers["ETag"]
        return web.Response(status=302, headers=redirect)
    accel = state.config.web.accel_redirect
    if accel and not _needs_clipd(request):
        # nginx must not honour a Range clipd decided to ignore (stale If-Range):
        # the "full/" location has max_ranges 0.
        prefix = accel + (_FULL_PREFIX if decision.range_ignored else "")
        headers["X-Accel-Redirect"] = prefix + _quoted(record.relpath)
        return web.Response(status=200, headers=headers)
    downloading: Counter[str] = state.shared("downloading", Counter)
    path = CheckedPath.of(local, record.identity, _unchanged)
    return ClipFileResponse(path, headers, request, decision, record.job_id, downloading)


def _needs_clipd(request: web.Request) -> bool:
    # nginx's not-modified filter runs before the ETag clipd hands it is set, so it
    # would answer a (passed) If-Match with 412: clipd sends those few bytes itself.
    return "If-Match" in request.headers
