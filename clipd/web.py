"""The HTTP layer: aiohttp app, JSON error middleware, health and metrics endpoints.

Handlers only read: the index through :class:`AsyncIndex`; the usage endpoints answer
from memory (index totals published by the writer, disk usage refreshed every second).
Every error a client can cause is a JSON 4xx ``{"error", "detail"}``; anything
else is logged and answered with a JSON 500, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import psutil
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from clipd.async_index import AsyncIndex
from clipd.config import Config
from clipd.errors import ClipdError
from clipd.metrics import Metrics, TreeGauges, render, used_ratio
from clipd.storage import Backend

__all__ = ["STATE", "DiskUsage", "State", "error_body", "make_app"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_MB = 1024 * 1024
_USAGE_REFRESH_S = 1.0


class DiskUsage(NamedTuple):
    total_bytes: int
    used_bytes: int
    free_bytes: int


def disk_usage(path: Path) -> DiskUsage:
    """Usage of the filesystem holding ``path``; blocks (statvfs)."""
    usage = psutil.disk_usage(str(path))
    return DiskUsage(usage.total, usage.used, usage.free)


@dataclass
class State:
    """What handlers share. ``config`` is swapped whole on SIGHUP.

    ``disk`` is refreshed every second by the app's background task and the index
    totals are published by its writer, so the usage endpoints answer from memory.
    """

    config: Config
    index: AsyncIndex
    metrics: Metrics
    backend: Backend
    ready: bool = False
    stopping: bool = False
    watcher: str = "starting"
    disk: DiskUsage = field(default_factory=lambda: DiskUsage(0, 0, 0))
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def clips_dir(self) -> Path:
        return self.config.clips_dir

    def shared(self, key: str, make: Callable[[], _T]) -> _T:
        """The object handlers share under ``key`` in ``extras``, made on first use."""
        found = self.extras.get(key)
        if found is None:
            found = self.extras[key] = make()
        return found

    def gauges(self) -> TreeGauges:
        """The tree gauges /metrics reports, from memory (never blocks)."""
        totals, disk = self.index.totals, self.disk
        return TreeGauges(
            self.ready,
            totals.files,
            totals.bytes,
            disk.total_bytes,
            disk.free_bytes,
            disk.used_bytes,
            self.index.backlog,
        )

    async def refresh_usage(self) -> None:
        """Re-read disk usage (in a thread) and the index totals (another process,
        e.g. ``clipd cleanup``, may have written the index)."""
        self.disk = await asyncio.to_thread(disk_usage, self.clips_dir)
        await self.index.refresh_totals()


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
        if exc.status >= 500:  # clipd's or its store's fault: the operator must see it
            logger.warning(
                "%s %s answered %d %s: %s",
                request.method,
                request.path,
                exc.status,
                exc.error,
                exc.detail,
            )
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


# Answered before READY=1 too (health checks and scrapes during a long reconcile see
# the counts grow); the jobs API is not: a partial index would call present clips
# unknown and miss job-id conflicts.
_BEFORE_READY = frozenset({"/health", "/metrics", "/api/v1/storage/metrics"})


@web.middleware
async def _until_ready(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The socket is bound before the start-up reconcile; until it is done the index
    # does not describe the tree, so the API would answer from a partial index.
    state: State = request.app[STATE]
    unrouted = request.match_info.http_exception is not None  # its own 404/405
    if state.ready or unrouted or request.path in _BEFORE_READY:
        return await handler(request)
    if state.stopping:
        response = error_body(503, "stopping", "clipd is shutting down")
    else:
        response = error_body(
            503, "starting", "clipd is reconciling its index with the tree; retry shortly"
        )
        response.headers["Retry-After"] = "1"
    return response


async def _health(request: web.Request) -> web.Response:
    state: State = request.app[STATE]
    body = {
        "status": "ok" if state.ready and not state.stopping else "starting",
        "ready": state.ready,
        "stopping": state.stopping,
        "watcher": state.watcher,
        "storage_backend": state.config.storage.backend,
        "file_count": state.index.totals.files if state.ready else None,
    }
    if state.stopping:
        body["status"] = "stopping"
    return web.json_response(body, status=200 if state.ready and not state.stopping else 503)


async def _metrics(request: web.Request) -> web.Response:
    state: State = request.app[STATE]
    # Every collector reads memory only (see State.gauges), so this renders on the loop:
    # a thread hop cost more than the rendering (the GIL hand-over waits up to 5 ms).
    response = web.Response(body=render(state.metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _storage_metrics(request: web.Request) -> web.Response:
    state: State = request.app[STATE]
    totals, disk = state.index.totals, state.disk
    return web.json_response(
        {
            "storage_backend": state.config.storage.backend,
            "clips_disk_used_bytes": totals.bytes,
            "clips_disk_used_mb": round(totals.bytes / _MB, 2),
            "file_count": totals.files,
            "base_path": state.backend.base_path,
            "disk_total_bytes": disk.total_bytes,
            "disk_free_bytes": disk.free_bytes,
            "disk_used_bytes": disk.used_bytes,
            "disk_used_ratio": round(
                used_ratio(disk.total_bytes, disk.used_bytes, disk.free_bytes), 6
            ),
        }
    )


async def _keep_usage_fresh(app: web.Application) -> AsyncIterator[None]:
    # The first refresh happens before the app serves; then once a second for the
    # app's lifetime (it owns the task and cancels it at cleanup).
    state: State = app[STATE]
    await state.refresh_usage()

    async def refresher() -> None:
        while True:
            await asyncio.sleep(_USAGE_REFRESH_S)
            try:
                await state.refresh_usage()
            except (OSError, sqlite3.Error) as exc:
                logger.warning("cannot refresh disk usage and index totals: %s", exc)

    task = asyncio.get_running_loop().create_task(refresher())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


def make_app(state: State, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    """Build the application; ``extra_routes`` come from other parts (the jobs API)."""
    app = web.Application(middlewares=[_errors, _until_ready], client_max_size=1024**2)
    app[STATE] = state
    app.cleanup_ctx.append(_keep_usage_fresh)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/v1/storage/metrics", _storage_metrics)
    if extra_routes:
        app.router.add_routes(extra_routes)
    return app
