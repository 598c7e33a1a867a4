"""The watcher's handling of watchdog's own log lines."""

from __future__ import annotations

import logging

import pytest

import clipd.watcher  # noqa: F401  (installs the filter on import)


def test_watchdogs_stop_race_error_stays_out_of_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inotify_log = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.DEBUG, logger="watchdog.observers.inotify"):
        inotify_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
        inotify_log.error("some other inotify trouble")
    assert [r.getMessage() for r in caplog.records] == ["some other inotify trouble"]
