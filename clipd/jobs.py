"""The jobs API: the job record, removal, the helpers its handlers share; the route table.

Downloads (``.../download``) live in :mod:`clipd.download`, uploads (PUT) in
:mod:`clipd.upload`.
"""

from __future__ import annotations

import hmac
import logging
from email.utils import formatdate
from typing import Any

from aiohttp import web

from clipd.config import WebConfig
from clipd.errors import Forbidden, InvalidJobId, NotFound
from clipd.naming import is_job_id
from clipd.record import ClipRecord
from clipd.removal import remove_clip
from clipd.signing import download_path
from clipd.web import STATE, State

__all__ = [
    "CONTENT_TYPES",
    "delete_job",
    "find_record",
    "get_job",
    "job_id_of",
    "record_json",
    "require_writer",
    "routes",
]

logger = logging.getLogger(__name__)

JOB_PATH = "/api/v1/jobs/{job_id}"
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".gif": "image/gif",
}


# -- shared by the handlers ----------------------------------------------------------------


def job_id_of(request: web.Request) -> str:
    """The job id from the path, or InvalidJobId (400) for anything malformed."""
    job_id = request.match_info.get("job_id", "")
    if not is_job_id(job_id):
        shown = job_id.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise InvalidJobId(f"job id {shown[:80]!r}: must match [A-Za-z0-9-]{{1,64}}")
    return job_id


def require_writer(request: web.Request, config: WebConfig) -> None:
    """Check ``Authorization: Bearer <api_token>`` in constant time (403/401 otherwise)."""
    if not config.api_token:
        raise Forbidden(
            "writes are disabled: set CLIPD_API_TOKEN (or [web] api_token) to enable PUT and DELETE"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    good = hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), config.api_token.encode("utf-8", "replace")
    )
    if scheme.lower() != "bearer" or not good:
        raise web.HTTPUnauthorized(
            headers={"WWW-Authenticate": 'Bearer realm="clipd"'},
            text="missing or wrong bearer token in Authorization",
        )


def record_json(record: ClipRecord, base_url: str) -> dict[str, Any]:
    """The public JSON form of a record."""
    return {
        "job_id": record.job_id,
        "title": record.display_title or record.title,
        "file_title": record.title,
        "filename": record.relpath.rpartition("/")[2],
        "day": record.day,
        "size_bytes": record.size_bytes,
        "sha256": record.sha256,
        "content_type": CONTENT_TYPES.get(record.ext.lower(), "application/octet-stream"),
        "created": formatdate(record.ingested_at, usegmt=True),
        "created_at": record.ingested_at,
        "modified_at": record.mtime_ns / 1e9,
        "download_url": base_url.rstrip("/") + download_path(record.job_id),
    }


async def find_record(state: State, job_id: str) -> ClipRecord:
    """The index record of ``job_id`` in state ok; NotFound (404) otherwise."""
    record = await state.index.get(job_id)
    lookup = state.extras.get("lookup")
    if record is None and lookup is not None:
        # The index may lag the store (a clip PUT through another instance sharing the
        # bucket): the catalog that keeps it current looks in the store on a miss.
        record = await lookup(job_id)
    if record is None or record.state != "ok":
        raise NotFound(f"no clip with job id {job_id}")
    return record


# -- GET / DELETE /api/v1/jobs/{job_id} ------------------------------------------------------


async def get_job(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{job_id}: the record as JSON."""
    state: State = request.app[STATE]
    record = await find_record(state, job_id_of(request))
    return web.json_response(record_json(record, state.config.web.base_url))


async def delete_job(request: web.Request) -> web.Response:
    """DELETE /api/v1/jobs/{job_id}: remove file and record (crash-safe), 204."""
    state: State = request.app[STATE]
    job_id = job_id_of(request)
    require_writer(request, state.config.web)
    record = await find_record(state, job_id)
    existed = await remove_clip(state.index, state.backend, record)
    logger.info(
        "deleted job %s (%s) on request%s",
        job_id,
        record.relpath,
        "" if existed else "; its file was already gone",
    )
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    """The jobs API and its OpenAPI document, for :func:`clipd.services.routes_for`."""
    from clipd.download import download_job
    from clipd.openapi import openapi_json
    from clipd.upload import put_job

    return [
        web.get(JOB_PATH + "/download", download_job, name="job_download"),
        web.get(JOB_PATH, get_job, name="job"),
        web.put(JOB_PATH, put_job, name="job_put"),
        web.delete(JOB_PATH, delete_job, name="job_delete"),
        web.get("/api/v1/openapi.json", openapi_json, name="openapi"),
    ]
