"""sd_notify over a real datagram socket, the watchdog interval, and socket activation.

The daemon-level sequence (READY after reconcile, STOPPING) is in tests/test_daemon.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipd.notify import Notifier, listen_socket, watchdog_interval_s


def _close(notifier: Notifier) -> None:
    """Close sdnotify's socket (Notifier lives as long as the daemon and never does)."""
    inner = notifier._notifier
    if inner is not None and inner.socket is not None:
        inner.socket.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd's, and its path."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_notifier_sends_fields_as_one_datagram_of_lines(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier(os.environ)
    assert notifier.enabled
    notifier.send("READY=1", "STATUS=3 clips")
    notifier.send("WATCHDOG=1")
    _close(notifier)
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 clips"
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_notifier_reaches_an_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"clipd-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier(os.environ)
        notifier.send("STOPPING=1")
        _close(notifier)
        assert sock.recv(4096) == b"STOPPING=1"


def test_notifier_without_notify_socket_is_disabled_and_sends_nothing(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier({})  # the environ given decides, not the process's
    assert not notifier.enabled
    notifier.send("READY=1")
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_notifier_with_an_empty_notify_socket_is_disabled() -> None:
    assert not Notifier({"NOTIFY_SOCKET": ""}).enabled


# sdnotify drops (never closes) the socket it could not connect.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
def test_notifier_ignores_a_socket_nobody_listens_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    notifier = Notifier(os.environ)
    assert notifier.enabled
    notifier.send("READY=1")  # no exception: a missing systemd never stops clipd


@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
def test_notifier_sends_to_the_notify_socket_of_the_environ_it_is_given(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.send("READY=1")
    _close(notifier)
    sock.settimeout(0.5)
    assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "__self__"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "__other__"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "-30000000"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_PID": "__self__"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_when_meant_for_this_process(
    environ: dict[str, str], interval_s: float | None
) -> None:
    pids = {"__self__": str(os.getpid()), "__other__": str(os.getpid() + 1)}
    environ = {k: pids.get(v, v) for k, v in environ.items()}
    assert watchdog_interval_s(environ) == interval_s


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"LISTEN_FDS": "1"},  # no LISTEN_PID: not for us
        {"LISTEN_PID": "__other__", "LISTEN_FDS": "1"},
        {"LISTEN_PID": "__self__", "LISTEN_FDS": "0"},
        {"LISTEN_PID": "__self__", "LISTEN_FDS": ""},
        {"LISTEN_PID": "__self__", "LISTEN_FDS": "x"},
        {"LISTEN_PID": "__self__"},
    ],
)
def test_listen_socket_is_none_unless_sockets_were_passed_to_this_process(
    environ: dict[str, str],
) -> None:
    # None of these may touch fd 3 (which belongs to someone else in this process).
    pids = {"__self__": str(os.getpid()), "__other__": str(os.getpid() + 1)}
    environ = {k: pids.get(v, v) for k, v in environ.items()}
    assert listen_socket(environ) is None


_CHILD = """
import json, os, sys
from clipd.notify import listen_socket
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
sock = listen_socket(os.environ)
print(json.dumps({
    "fd": sock.fileno(),
    "address": sock.getsockname(),
    "blocking": sock.getblocking(),
    "inheritable": os.get_inheritable(3),
}))
"""


def test_listen_socket_takes_fd_3_non_blocking_and_not_inherited() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        fd = server.fileno()
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(fd)],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(result.stdout) == {
            "fd": 3,
            "address": list(server.getsockname()),
            "blocking": False,
            "inheritable": False,
        }


def test_non_ascii_digits_mean_no_watchdog_and_no_sockets() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "²"}) is None
    assert listen_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "²"}) is None
