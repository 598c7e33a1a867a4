"""Test helpers: write clips like a real writer, run the real daemon as a process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def clip_bytes(size: int, seed: int = 0, head: bytes = MP4_HEAD) -> bytes:
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (head + body)[:size] if size >= len(head) else head[:size]


def write_clip(
    clips_dir: Path,
    day: str,
    name: str,
    data: bytes,
    atomic: bool = True,
    mtime: float | None = None,
) -> Path:
    """Write like a well-behaved writer: tmp, fsync, rename, fsync the folder."""
    folder = clips_dir / day
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    target = folder / (name + ".tmp") if atomic else final
    with open(target, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    if atomic:
        os.rename(target, final)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return final


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


class NotifySocket:
    """A real datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if needle in message:
                return message
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            self.messages.append(data)
            if needle in data:
                return data
        raise AssertionError(f"no {needle!r} on NOTIFY_SOCKET; got {self.messages!r}")

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DaemonProcess:
    """``clipd run`` as a real process, started with a NOTIFY_SOCKET of our own."""

    clips_dir: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    notify: NotifySocket | None = None
    log_path: Path | None = None
    starts: int = 0

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> DaemonProcess:
        self.starts += 1
        self.port = self.port or free_port()
        if self.notify is None:
            self.notify = NotifySocket(self.workdir / f"notify-{id(self)}.sock")
        self.notify.messages.clear()
        self.log_path = self.workdir / f"clipd-{self.starts}.log"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "CLIPS_DIR": str(self.clips_dir),
            "CLIPD_LISTEN": f"127.0.0.1:{self.port}",
            "CLIPD_INGEST_SETTLE_SECONDS": "0.2",
            "NOTIFY_SOCKET": str(self.notify.path),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clipd", "run", "--log-level", "debug", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.notify is not None
        try:
            self.notify.wait("READY=1", timeout)
        except AssertionError:
            raise AssertionError(f"clipd never got ready; log:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get_json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def metric(self, name: str) -> float:
        _, _, body = self.get("/metrics")
        total = 0.0
        found = False
        for line in body.decode().splitlines():
            m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if m:
                total += float(m.group(2))
                found = True
        assert found, f"{name} not in /metrics"
        return total

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.notify is not None:
            self.notify.close()


def index_rows(clips_dir: Path) -> dict[str, tuple[str, int]]:
    """relpath → (sha256, size) straight from the SQLite index."""
    import sqlite3

    conn = sqlite3.connect(clips_dir / ".clipd" / "index.sqlite3")
    try:
        rows = conn.execute("SELECT relpath, sha256, size_bytes FROM clips").fetchall()
    finally:
        conn.close()
    return {r[0]: (r[1], r[2]) for r in rows}


def disk_clips(clips_dir: Path) -> dict[str, tuple[str, int]]:
    """relpath → (sha256, size) of every clip file in day folders."""
    out = {}
    for path in sorted(clips_dir.glob("[0-9]*/*")):
        if path.name.endswith(".tmp") or path.name.startswith("."):
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # A running daemon's retention may evict a clip between glob and read.
            continue
        out[f"{path.parent.name}/{path.name}"] = (hashlib.sha256(data).hexdigest(), len(data))
    return out


@contextlib.contextmanager
def running(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    try:
        yield daemon.start()
    finally:
        daemon.close()
