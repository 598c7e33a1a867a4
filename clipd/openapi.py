"""The OpenAPI 3 document of clipd's HTTP API, served at ``GET /api/v1/openapi.json``.

Every endpoint and every error it can answer is listed; a schemathesis test runs the
real server against this document, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aiohttp import web

from clipd import __version__

__all__ = ["document", "openapi_json"]

_ERROR_REF = {"$ref": "#/components/responses/Error"}
# A request aiohttp's HTTP parser rejects (a non-UTF-8 path, an overlong request line, a
# malformed header) is answered 400 in plain text before any clipd code sees it.
_BAD_REQUEST_REF = {"$ref": "#/components/responses/BadRequest"}
_JSON = "application/json"
_CLIP_TYPES = (
    "video/mp4",
    "video/x-m4v",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
    "image/gif",
    "application/octet-stream",
)


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _BAD_REQUEST_REF if code == 400 else _ERROR_REF for code in codes}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _bad_request() -> dict[str, Any]:
    response = _json(
        "Error",
        "A bad request, as JSON; in plain text when the HTTP request itself cannot be "
        "parsed (answered by aiohttp before it reaches clipd).",
    )
    response["content"]["text/plain"] = {"schema": {"type": "string"}}
    return response


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "Job id: 1-64 of A-Z, a-z, 0-9 and '-'.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
}

_CLIP_HEADERS = {
    "ETag": {
        "description": "Strong: the clip's SHA-256 hex in quotes; absent (as is "
        "Repr-Digest) when the clip has no known SHA-256.",
        "schema": {"type": "string"},
    },
    "Repr-Digest": {
        "description": "RFC 9530 sha-256 of the whole clip.",
        "schema": {"type": "string"},
    },
    "Content-Disposition": {
        "description": "attachment; filename=…; filename*=UTF-8''…",
        "schema": {"type": "string"},
    },
    "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
}

_DOWNLOAD_PARAMS = [
    _JOB_ID,
    {
        "name": "expires",
        "in": "query",
        "required": False,
        "description": "Signed links: expiry (Unix seconds).",
        "schema": {"type": "string"},
    },
    {
        "name": "sig",
        "in": "query",
        "required": False,
        "description": "Signed links: HMAC-SHA256 hex from `clipd sign`.",
        "schema": {"type": "string"},
    },
    _header("Range", "One byte range, e.g. bytes=0-1023."),
    _header("If-Range", "Entity-tag or HTTP-date; stale → the full 200."),
    _header("If-None-Match", "Entity-tags; a match → 304."),
    _header("If-Match", "Entity-tags; no match → 412."),
    _header("If-Modified-Since", "HTTP-date; not modified since → 304."),
    _header("If-Unmodified-Since", "HTTP-date; modified since → 412."),
]


def _download(head: bool) -> dict[str, Any]:
    body = (
        {}
        if head
        else {
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _CLIP_TYPES}
        }
    )
    return {
        "operationId": "headJobDownload" if head else "getJobDownload",
        "summary": "The clip's bytes, after an integrity check"
        + (" (headers only)" if head else ""),
        "tags": ["jobs"],
        "parameters": _DOWNLOAD_PARAMS,
        "responses": {
            "200": {
                "description": "The whole clip (empty body when nginx sends it via "
                "X-Accel-Redirect).",
                "headers": _CLIP_HEADERS,
                **body,
            },
            "206": {"description": "One byte range of the clip.", "headers": _CLIP_HEADERS, **body},
            "302": {
                "description": "Redirect to a presigned URL (remote backends).",
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            "304": {"description": "Not modified (If-None-Match / If-Modified-Since)."},
            **_errors(400, 403, 404, 409, 412, 416, 502),
        },
    }


def _paths() -> dict[str, Any]:
    job = "/api/v1/jobs/{job_id}"
    return {
        "/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "Readiness",
                "tags": ["ops"],
                "responses": {
                    "200": _json("Health", "Ready and serving."),
                    "503": _json("Health", "Starting, stopping or degraded."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics",
                "tags": ["ops"],
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/v1/storage/metrics": {
            "get": {
                "operationId": "getStorageMetrics",
                "summary": "Storage use (legacy fields kept)",
                "tags": ["ops"],
                "responses": {"200": _json("StorageMetrics", "Storage use.")},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenapi",
                "summary": "This document",
                "tags": ["ops"],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document.",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        job + "/download": {"get": _download(head=False), "head": _download(head=True)},
        job: {
            "get": {
                "operationId": "getJob",
                "summary": "The job's clip record",
                "tags": ["jobs"],
                "parameters": [_JOB_ID],
                "responses": {"200": _json("Job", "The record."), **_errors(400, 404)},
            },
            "put": {
                "operationId": "putJob",
                "summary": "Upload a clip",
                "tags": ["jobs"],
                "security": [{"bearer": []}],
                "parameters": [
                    _JOB_ID,
                    {
                        "name": "title",
                        "in": "query",
                        "required": False,
                        "description": "Title (any text; sanitized for the file name).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "ext",
                        "in": "query",
                        "required": False,
                        "description": "Extension; default from Content-Type, else .mp4.",
                        "schema": {"type": "string"},
                    },
                    _header("x-amz-checksum-sha256", "base64 SHA-256 of the body."),
                    _header("Repr-Digest", "RFC 9530, e.g. sha-256=:<base64>:."),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        t: {"schema": {"type": "string", "format": "binary"}} for t in _CLIP_TYPES
                    },
                },
                "responses": {
                    "201": _json("Job", "Stored and recorded."),
                    **_errors(400, 401, 403, 409, 413, 422, 502, 507),
                },
            },
            "delete": {
                "operationId": "deleteJob",
                "summary": "Delete the clip and its record",
                "tags": ["jobs"],
                "security": [{"bearer": []}],
                "parameters": [_JOB_ID],
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors(400, 401, 403, 404, 502),
                },
            },
        },
    }


def _schemas() -> dict[str, Any]:
    string, integer, number = {"type": "string"}, {"type": "integer"}, {"type": "number"}
    nullable_int = {"type": ["integer", "null"]}
    return {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {"error": string, "detail": string},
        },
        "Health": {
            "type": "object",
            "required": ["status", "ready"],
            "properties": {
                "status": string,
                "ready": {"type": "boolean"},
                "stopping": {"type": "boolean"},
                "watcher": string,
                "storage_backend": string,
                "file_count": nullable_int,
            },
        },
        "StorageMetrics": {
            "type": "object",
            "required": [
                "storage_backend",
                "clips_disk_used_bytes",
                "clips_disk_used_mb",
                "file_count",
                "base_path",
            ],
            "properties": {
                "storage_backend": string,
                "clips_disk_used_bytes": integer,
                "clips_disk_used_mb": number,
                "file_count": integer,
                "base_path": string,
            },
        },
        "Job": {
            "type": "object",
            "required": [
                "job_id",
                "title",
                "day",
                "size_bytes",
                "sha256",
                "created",
                "download_url",
            ],
            "properties": {
                "job_id": string,
                "title": string,
                "file_title": string,
                "filename": string,
                "day": string,
                "size_bytes": integer,
                "sha256": {
                    "type": "string",
                    "pattern": "^([0-9a-f]{64})?$",
                    "description": "Empty for an S3 object stored without "
                    "x-amz-meta-sha256 (s3 mode).",
                },
                "content_type": string,
                "created": string,
                "created_at": number,
                "modified_at": number,
                "download_url": string,
            },
        },
    }


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clipd",
            "version": __version__,
            "description": "Storage daemon for video clips: downloads with integrity "
            "checks, uploads, removal, metrics. Every error is JSON "
            '{"error", "detail"}.',
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {
                "Error": _json("Error", "An error, as JSON."),
                "BadRequest": _bad_request(),
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "CLIPD_API_TOKEN"}
            },
        },
    }


@lru_cache(maxsize=1)
def _body() -> bytes:
    return json.dumps(document(), indent=1).encode()


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json."""
    return web.Response(body=_body(), content_type="application/json")
