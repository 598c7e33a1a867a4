"""The watcher: watchdog's inotify observer feeding paths to ingest on the event loop.

The observer thread does one thing: hand each event to the loop with
``call_soon_threadsafe``. watchdog may drop events on an inotify queue overflow
(older versions silently, gorakhargosh/watchdog#654) and cannot add watches past the
per-user limit; both are detected where possible and answered with a full rescan,
and a periodic rescan in the daemon covers whatever cannot be detected.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

__all__ = ["Watcher"]

logger = logging.getLogger(__name__)
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


# A hidden file at the top of the tree: never a clip, and ingest never looks at it.
_PROBE_NAME = ".clipd-watch-probe"
_PROBE_TIMEOUT_S = 5.0
_QUIET_KINDS = frozenset({"opened", "closed_no_write", "attrib"})
# What the daemon reacts to. watchdog >= 4 builds the inotify mask from this list, so
# IN_OPEN and IN_CLOSE_NOWRITE stay out of it: otherwise every read of a clip (hashing,
# downloads, scrub) wakes the observer thread twice, which cost a cold index of 20k
# clips half its time. Older watchdog never asks for those events.
_WANTED_EVENTS = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileClosedEvent,
]
_SCHEDULE_ARGS: dict[str, Any] = (
    {"event_filter": _WANTED_EVENTS}
    if "event_filter" in inspect.signature(BaseObserver.schedule).parameters
    else {}
)


class _Handler(FileSystemEventHandler):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[..., None],
        hidden: str,
        probe: str,
    ) -> None:
        self._loop = loop
        self._sink = sink
        self._hidden = hidden
        self._probe = probe
        self.probe_seen = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if src == self._probe:
            self.probe_seen.set()
            return
        # Cheap filters only: every SQLite write in .clipd/ is an event we never want.
        if event.event_type in _QUIET_KINDS or src.startswith(self._hidden):
            return
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        self._loop.call_soon_threadsafe(self._sink, event.event_type, src, dest, event.is_directory)


def _probe(path: Path, seen: threading.Event) -> bool:
    """Touch ``path`` until the watcher reports it (or time runs out); blocks."""
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            path.write_bytes(b"")
            if seen.wait(0.05):
                return True
        return False
    finally:
        path.unlink(missing_ok=True)


class _OverflowSpotter(logging.Handler):
    """Newer watchdog logs a warning when the kernel queue overflows: turn it into a rescan."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._loop = loop
        self._on_lost = on_lost

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().lower()
        if "overflow" in text or ("watch" in text and "limit" in text):
            self._loop.call_soon_threadsafe(self._on_lost, "overflow")


class _StopNoise(logging.Filter):
    """Drops watchdog's ERROR about an emitter read racing its own stop.

    watchdog 6-7 log "InotifyEmitter.queue_events() called when the thread is inactive"
    when an inotify event arrives while clipd stops the observer; nothing is lost (clipd
    is stopping, the next start reconciles), but an ERROR in the journal at every such
    stop would send operators looking for a fault that is not there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in str(record.msg)


_STOP_NOISE = _StopNoise()
logging.getLogger("watchdog.observers.inotify").addFilter(_STOP_NOISE)


class Watcher:
    """Recursive inotify watch over the clips tree.

    ``on_event(kind, path, dest_path, is_directory)`` and ``on_lost(cause)`` are called
    on the event loop.
    """

    def __init__(
        self,
        clips_dir: Path,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[str, str, str, bool], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._clips_dir = clips_dir
        self._loop = loop
        self._on_event = on_event
        self._on_lost = on_lost
        self._observer: Any = None
        self._spotter = _OverflowSpotter(loop, on_lost)

    def start_blocking(self, quiet: bool = False) -> bool:
        """Start the observer (adds a watch per folder: blocks). False if watches failed.

        ``quiet`` logs a failure at debug level (the caller already reported the outage).
        """
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(self._spotter)
        observer = Observer()
        observer.daemon = True
        probe = self._clips_dir / _PROBE_NAME
        handler = _Handler(self._loop, self._on_event, str(self._clips_dir / ".clipd"), str(probe))
        try:
            observer.schedule(handler, str(self._clips_dir), recursive=True, **_SCHEDULE_ARGS)
            observer.start()
            # watchdog adds its watches in the emitter thread after start() returns: wait
            # until an event really arrives, so the reconcile walk that follows cannot
            # miss a file written between the two.
            watching = _probe(probe, handler.probe_seen)
        except OSError as exc:
            watching, problem = False, str(exc)
        else:
            problem = f"no inotify event within {_PROBE_TIMEOUT_S:.0f} s"
        if not watching:
            (logger.debug if quiet else logger.error)(
                "cannot watch %s (%s): falling back to periodic rescans; raise "
                "fs.inotify.max_user_watches / max_user_instances",
                self._clips_dir,
                problem,
            )
            self._stop_observer(observer)
            return False
        self._observer = observer
        return True

    def is_alive(self) -> bool:
        """False once the observer or any of its emitters died (e.g. a watch limit hit)."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        # watchdog drops an emitter that failed to start instead of raising.
        emitters = list(observer.emitters)
        return bool(emitters) and all(emitter.is_alive() for emitter in emitters)

    def stop_blocking(self) -> None:
        """Stop and join the observer thread; blocks briefly."""
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self._spotter)
        if self._observer is not None:
            self._stop_observer(self._observer)
            self._observer = None

    @staticmethod
    def _stop_observer(observer: Any) -> None:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
