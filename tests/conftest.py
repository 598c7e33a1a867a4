"""Shared fixtures: a clean environment, temp clips trees, the real daemon as a process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess

pytest_plugins = ["tests.s3server"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CLIPD_*/AWS_* or legacy variable from the caller's shell leaks into a test."""
    legacy = {
        "STORAGE_BACKEND",
        "CLIPS_DIR",
        "BASE_URL",
        "S3_BUCKET",
        "S3_PREFIX",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "JOURNAL_STREAM",
    }
    for name in list(os.environ):
        if name.startswith(("CLIPD_", "AWS_")) or name in legacy:
            monkeypatch.delenv(name)


@pytest.fixture
def clips_dir(tmp_path: Path) -> Path:
    path = tmp_path / "clips"
    path.mkdir()
    return path


@pytest.fixture
def make_daemon(tmp_path: Path, clips_dir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory: a DaemonProcess over ``clips_dir`` (not started); all are killed at the end."""
    made: list[DaemonProcess] = []

    def make(
        env: dict[str, str] | None = None, args: list[str] | None = None, clips: Path | None = None
    ) -> DaemonProcess:
        daemon = DaemonProcess(
            clips or clips_dir, tmp_path, env=dict(env or {}), args=list(args or [])
        )
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()
