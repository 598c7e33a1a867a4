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
        address = environ.get("NOTIFY_SOCKET", "")
        self.enabled = bool(address)
        # sdnotify reads NOTIFY_SOCKET itself and never raises unless debug=True.
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        if self._notifier is not None and address != os.environ.get("NOTIFY_SOCKET"):
            # sdnotify took os.environ's address; send to the one this daemon was given.
            self._notifier.socket = _connected(address)

    def send(self, *fields: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))


def _connected(address: str) -> socket.socket | None:
    # As sd_notify(3): "@" stands for the abstract namespace.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect("\0" + address[1:] if address.startswith("@") else address)
    except OSError:
        sock.close()
        return None
    return sock


def _number(value: str) -> int | None:
    # isdigit() alone accepts digits int() refuses ("²"): junk means "none", as in sd(3).
    return int(value) if value.isascii() and value.isdigit() else None


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half of WATCHDOG_USEC, when the watchdog is meant for this process (sd_watchdog_enabled)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    usec_n = _number(usec)
    if not usec_n or (pid and pid != str(os.getpid())):
        return None
    return usec_n / 2e6


def listen_socket(environ: Mapping[str, str] = os.environ) -> socket.socket | None:
    """The first socket passed by systemd socket activation (sd_listen_fds), or None."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = _number(environ.get("LISTEN_FDS", ""))
    if count is None or count < 1:
        return None
    sock = socket.socket(fileno=_SD_LISTEN_FDS_START)
    sock.setblocking(False)
    os.set_inheritable(_SD_LISTEN_FDS_START, False)
    return sock
