"""systemd integration: sd_notify messages (via sdnotify) and socket activation."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import sdnotify

__all__ = ["Notifier", "listen_socket", "watchdog_interval_s"]

_SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING when NOTIFY_SOCKET is set; otherwise nothing."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        # sdnotify reads NOTIFY_SOCKET itself and never raises unless debug=True.
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None

    def send(self, *fields: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half of WATCHDOG_USEC, when the watchdog is meant for this process (sd_watchdog_enabled)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def listen_socket(environ: Mapping[str, str] = os.environ) -> socket.socket | None:
    """The first socket passed by systemd socket activation (sd_listen_fds), or None."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit() or int(count) < 1:
        return None
    sock = socket.socket(fileno=_SD_LISTEN_FDS_START)
    sock.setblocking(False)
    os.set_inheritable(_SD_LISTEN_FDS_START, False)
    return sock
