"""The daemon: wires config, index, watcher, ingest and web; signals and sd_notify.

Start order (reverse on stop): index → HTTP socket → watcher → reconcile → READY=1.
The watcher starts before the reconcile walk so nothing written during it is missed;
the socket is bound first so that health checks get a 503 while the index is not yet
reconciled (the jobs API answers "starting" until READY=1, see :mod:`clipd.web`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from clipd import config as config_mod
from clipd.async_index import AsyncIndex
from clipd.config import Config
from clipd.errors import ClipdError, ConfigError
from clipd.index import index_path
from clipd.ingest import Ingestor
from clipd.logs import setup_logging
from clipd.metrics import IndexCollector, Metrics
from clipd.notify import Notifier, listen_socket, watchdog_interval_s
from clipd.removal import finish_pending
from clipd.storage import Backend
from clipd.storage.local import LocalBackend
from clipd.watcher import Watcher
from clipd.web import State, make_app

__all__ = ["Catalog", "CatalogFactory", "Daemon"]

logger = logging.getLogger(__name__)
_AIOHTTP_VERSION = tuple(int(p) for p in aiohttp.__version__.split(".")[:2])
_KEEPALIVE_S = 75.0
_WATCH_CHECK_S = 5.0
_POLL_RESCAN_S = 10.0
_RESCAN_DEBOUNCE_S = 0.2
_STATUS_EVERY_S = 10.0
_DRAIN_TIMEOUT_S = 10.0
# Keys that only take effect at start: SIGHUP logs that they need a restart.
_RESTART_KEYS = (
    "storage",
    "web.listen",
    "s3",
    "ingest.hash_workers",
    "ingest.hash_processes",
)

Service = Callable[["Daemon"], Coroutine[Any, Any, None]]


class Catalog(Protocol):
    """Keeps the index current when the clips are not a local tree (s3 mode).

    With a catalog the daemon runs no tree watcher and no tree reconcile: ``reconcile``
    fills the index before READY=1 and ``run`` keeps it current until cancelled.
    """

    async def reconcile(self) -> str:
        """Bring the index in line with the store; returns a one-line summary."""
        ...

    async def run(self) -> None:
        """Keep the index current (periodic re-list) until cancelled."""
        ...


CatalogFactory = Callable[["Daemon"], Catalog]


class Daemon:
    """One running clipd. ``services`` are extra long-running tasks (retention, scrub…)."""

    def __init__(
        self,
        config: Config,
        reload: Callable[[], Config],
        environ: Mapping[str, str] = os.environ,
        services: list[Service] | None = None,
        extra_routes: list[web.RouteDef] | None = None,
        backend: Backend | None = None,
        catalog: CatalogFactory | None = None,
    ) -> None:
        self.config = config
        self._reload = reload
        self._environ = environ
        self.notifier = Notifier(environ)
        self.metrics = Metrics()
        self.index = AsyncIndex(index_path(config.clips_dir))
        self.backend: Backend = backend or LocalBackend(config.clips_dir)
        self.state = State(
            config=config, index=self.index, metrics=self.metrics, backend=self.backend
        )
        self.ingestor = Ingestor(
            config.clips_dir,
            config.storage,
            config.ingest,
            self.index,
            self.metrics,
            stale_tmp_s=config.retention.stale_tmp_minutes * 60,
        )
        self.services = services or []
        self._extra_routes = extra_routes or []
        self._stop = asyncio.Event()
        self._rescan = asyncio.Event()
        self._rescan_cause = ""
        self._watcher: Watcher | None = None
        self._runner: web.AppRunner | None = None
        self._index_open = False
        self.bound: list[tuple[str, int]] = []
        self.catalog = catalog(self) if catalog is not None else None

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop cleanly. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.notifier.send("STATUS=starting: opening index")
        self.index.track_backlog = bool(self.config.backup.s3_bucket)
        try:
            await self.index.open()
            self._index_open = True
            self.metrics.registry.register(IndexCollector(self.state.gauges))
            await finish_pending(self.index, self.backend)
            # Bound first: until READY=1, /health answers 503 and the API "starting"
            # (web.py), rather than a refused connection during a long reconcile.
            await self._start_web()
            if self.catalog is not None:
                self.notifier.send("STATUS=starting: listing the store")
                self.state.watcher = "none"
                logger.info("%s", await self.catalog.reconcile())
            else:
                await self._start_tree()
            if not self._stop.is_set():  # asked to stop while reconciling: never ready
                self._announce_ready()
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(c) for c in self._background()]
                await self._stop.wait()
                self.state.stopping = True
                self.notifier.send("STOPPING=1", "STATUS=stopping: draining")
                logger.info("stopping: draining requests and ingest")
                for task in tasks:
                    task.cancel()
        finally:
            await self._shutdown()
        logger.info("stopped")
        return 0

    def _announce_ready(self) -> None:
        self.state.ready = True
        totals = self.index.totals
        self.notifier.send("READY=1", self._status_line(totals.files, totals.bytes))
        logger.info(
            "ready: %d clips, %d bytes, serving on %s",
            totals.files,
            totals.bytes,
            ", ".join(f"{h}:{p}" for h, p in self.bound),
        )

    async def _start_tree(self) -> None:
        await self._start_watcher()
        self.notifier.send("STATUS=starting: reconciling index with the tree")
        report = await self.ingestor.reconcile()
        logger.info(
            "reconciled: %d examined, %d recorded, %d dropped, %d quarantined in %.3f s",
            report.examined,
            report.recorded,
            report.dropped,
            report.quarantined,
            report.seconds,
        )

    def request_stop(self) -> None:
        self._stop.set()

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        jobs: list[Coroutine[Any, Any, None]] = [self._status()]
        if self.catalog is not None:
            jobs.append(self.catalog.run())
        else:
            jobs += [self._rescanner(), self._watch_guard()]
        interval = watchdog_interval_s(self._environ)
        if interval is not None:
            jobs.append(self._pinger(interval))
        jobs.extend(service(self) for service in self.services)
        return jobs

    async def _shutdown(self) -> None:
        # Reverse of start: stop taking requests, stop watching, finish ingest, close index.
        self.state.ready = False
        if self._runner is not None:
            await self._runner.cleanup()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop_blocking)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ingestor.drain(), _DRAIN_TIMEOUT_S)
        await asyncio.to_thread(self.ingestor.close)
        if self._index_open:
            # A removal cancelled mid-way (retention, DELETE) is finished now rather than
            # at the next start, so a clean stop leaves the index equal to the store.
            await finish_pending(self.index, self.backend)
        await self.index.close()

    # -- parts --------------------------------------------------------------------------

    async def _start_watcher(self, quiet: bool = False) -> None:
        watcher = Watcher(
            self.config.clips_dir, asyncio.get_running_loop(), self._on_fs_event, self.want_rescan
        )
        ok = await asyncio.to_thread(watcher.start_blocking, quiet)
        self._watcher = watcher
        if ok and self.state.watcher == "polling":
            logger.warning("inotify watcher is back; leaving polling mode")
        self.state.watcher = "inotify" if ok else "polling"

    async def _start_web(self) -> None:
        app = make_app(self.state, self._extra_routes)
        # aiohttp 3.9 moved shutdown_timeout from the site to the runner; 3.8 (Debian 12)
        # hands unknown runner arguments to every connection handler, which then fails.
        drain: dict[str, Any] = {"shutdown_timeout": _DRAIN_TIMEOUT_S}
        on_runner = _AIOHTTP_VERSION >= (3, 9)
        # keepalive_timeout also bounds a connection that never finishes its request
        # (aiohttp has no header timeout), so idle or slowloris sockets are reclaimed.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=_KEEPALIVE_S,
            **(drain if on_runner else {}),
        )
        await self._runner.setup()
        on_site = {} if on_runner else drain
        inherited = listen_socket(self._environ)
        if inherited is not None:
            site: web.BaseSite = web.SockSite(self._runner, inherited, **on_site)
        else:
            host, port = config_mod.parse_listen(self.config.web.listen)
            site = web.TCPSite(self._runner, host, port, reuse_address=True, **on_site)
        try:
            await site.start()
        except OSError as exc:
            message = f"web.listen={self.config.web.listen!r}: cannot listen there ({exc.strerror})"
            if exc.errno == errno.EADDRINUSE:
                # Often transient (the previous instance still closing): exit 1, so
                # systemd's Restart=on-failure tries again; 78 would stop it for good.
                raise ClipdError(message) from exc
            raise ConfigError(message) from exc
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            self.bound.append(sock.getsockname()[:2])

    def _on_fs_event(self, kind: str, src: str, dest: str, is_directory: bool) -> None:
        if is_directory:
            if kind in {"created", "moved", "deleted"}:
                self.want_rescan(f"folder {kind}")
            return
        settle = self.config.ingest.settle_seconds
        for path, delay in ((src, settle if kind in {"created", "modified"} else 0.0), (dest, 0.0)):
            if not path or kind in {"opened", "closed_no_write", "attrib"}:
                continue
            relpath = self.ingestor.relpath_of(path)
            if relpath is not None:
                self.ingestor.notice(relpath, delay)

    def want_rescan(self, cause: str) -> None:
        """Ask for a full rescan soon (debounced); safe to call often, on the loop."""
        if cause == "overflow":
            self.metrics.watcher_overflows.inc()
            if not self._rescan.is_set():  # one line per rescan, not per lost batch
                logger.warning("inotify events were lost (queue overflow): rescanning the tree")
        self._rescan_cause = self._rescan_cause or cause
        self._rescan.set()

    async def _rescanner(self) -> None:
        interval = self.config.ingest.rescan_interval_seconds
        while True:
            # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that arrives
            # as the event is set (gh-86296), and the daemon then never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._rescan.wait()
            await asyncio.sleep(_RESCAN_DEBOUNCE_S)  # gather a burst of folder events
            cause, self._rescan_cause = self._rescan_cause or "periodic", ""
            self._rescan.clear()
            self.metrics.watcher_rescans.inc()
            report = await self.ingestor.reconcile()
            log = logger.info if report.examined or report.dropped else logger.debug
            log(
                "rescan (%s): %d examined, %d recorded, %d dropped, %d quarantined",
                cause,
                report.examined,
                report.recorded,
                report.dropped,
                report.quarantined,
            )
            interval = self.config.ingest.rescan_interval_seconds
            if self.state.watcher == "polling":
                interval = min(interval, _POLL_RESCAN_S)

    async def _watch_guard(self) -> None:
        # A dead observer (e.g. a watch limit hit on a new folder) is restarted; while it
        # cannot be, each failed attempt is followed by a rescan, so clips still arrive.
        while True:
            await asyncio.sleep(_WATCH_CHECK_S)
            if self._watcher is None or self._watcher.is_alive():
                continue
            if self.state.watcher == "inotify":
                logger.error("the inotify watcher stopped (watch limit?); restarting it")
                self.metrics.watcher_overflows.inc()
            await asyncio.to_thread(self._watcher.stop_blocking)
            await self._start_watcher(quiet=self.state.watcher == "polling")
            self.want_rescan("watcher restart")

    async def _pinger(self, interval_s: float) -> None:
        # Sent from the event loop itself: a wedged loop stops the pings and systemd
        # restarts the service.
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(_STATUS_EVERY_S)
            totals = self.index.totals
            self.notifier.send(self._status_line(totals.files, totals.bytes))

    def _status_line(self, files: int, size: int) -> str:
        return f"STATUS=serving {files} clips, {size / 1e9:.2f} GB; watcher {self.state.watcher}"

    def _on_sighup(self) -> None:
        try:
            new = self._reload()
        except ConfigError as exc:
            logger.error("reload refused, keeping the running config: %s", exc)
            return
        old = self.config
        for dotted in _RESTART_KEYS:
            if _get(old, dotted) != _get(new, dotted):
                logger.warning("config %s changed: it takes effect after a restart", dotted)
        setup_logging(new.log.level, self._environ)
        self.config = new
        self.state.config = new
        logger.info("config reloaded from %s", new.source)


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
