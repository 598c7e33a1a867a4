"""The HTTP layer: aiohttp app, JSON error middleware, health and metrics endpoints.

Handlers only read: the index through :class:`AsyncIndex`, usage through psutil in a
thread. Every error a client can cause is a JSON 4xx ``{"error", "detail"}``; anything
else is logged and answered with a JSON 500, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from clipd.config import Config
from clipd.errors import ClipdError
from clipd.index import AsyncIndex
from clipd.metrics import Metrics, render
from clipd.storage import Backend

__all__ = ["STATE", "State", "error_body", "make_app"]

logger = logging.getLogger(__name__)
_MB = 1024 * 1024


@dataclass
class State:
    """What handlers share. ``config`` is swapped whole on SIGHUP."""

    config: Config
    index: AsyncIndex
    metrics: Metrics
    backend: Backend
    ready: bool = False
    stopping: bool = False
    watcher: str = "starting"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def clips_dir(self) -> Path:
        return self.config.clips_dir


# aiohttp >= 3.9 has typed AppKeys; Debian 12's 3.8.4 only string keys.
STATE: Any = web.AppKey("clipd_state", State) if hasattr(web, "AppKey") else "clipd_state"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClipdError as exc:
        return error_body(exc.status, exc.error, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        reason = exc.reason.lower().replace(" ", "_")
        response = error_body(exc.status, reason, exc.text or exc.reason)
        for name in ("Allow", "Location", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=True)
        return error_body(500, "internal_error", "clipd hit an unexpected error; see its log")


async def _health(request: web.Request) -> web.Response:
    state: State = request.app[STATE]
    totals = await state.index.read(lambda ix: ix.totals()) if state.ready else None
    body = {
        "status": "ok" if state.ready and not state.stopping else "starting",
        "ready": state.ready,
        "stopping": state.stopping,
        "watcher": state.watcher,
        "storage_backend": state.config.storage.backend,
        "file_count": totals.files if totals else None,
    }
    if state.stopping:
        body["status"] = "stopping"
    return web.json_response(body, status=200 if state.ready and not state.stopping else 503)


async def _metrics(request: web.Request) -> web.Response:
    state: State = request.app[STATE]
    payload = await asyncio.to_thread(render, state.metrics.registry)
    response = web.Response(body=payload)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _storage_metrics(request: web.Request) -> web.Response:
    state: State = request.app[STATE]
    totals = await state.index.read(lambda ix: ix.totals())
    disk = await asyncio.to_thread(psutil.disk_usage, str(state.clips_dir))
    return web.json_response(
        {
            "storage_backend": state.config.storage.backend,
            "clips_disk_used_bytes": totals.bytes,
            "clips_disk_used_mb": round(totals.bytes / _MB, 2),
            "file_count": totals.files,
            "base_path": state.backend.base_path,
            "disk_total_bytes": disk.total,
            "disk_free_bytes": disk.free,
            "disk_used_bytes": disk.used,
            "disk_used_ratio": round(disk.used / disk.total, 6) if disk.total else 0.0,
        }
    )


def make_app(state: State, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    """Build the application; ``extra_routes`` come from other parts (the jobs API)."""
    app = web.Application(middlewares=[_errors], client_max_size=1024**2)
    app[STATE] = state
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/v1/storage/metrics", _storage_metrics)
    if extra_routes:
        app.router.add_routes(extra_routes)
    return app
