"""An S3 fault injector: moto in server mode behind a small HTTP proxy that misbehaves.

A real S3 server does not throttle, fail or cut a body on demand, so the reliability
scenarios put :class:`FaultProxy` (plain asyncio, its own thread) in front of moto's
``ThreadedMotoServer``. The proxy forwards every request byte for byte (the Host header
too, so SigV4 and presigned URLs stay valid) unless a :class:`Rule` picks it; then it
answers as a struggling store would:

- ``SLOWDOWN``: ``503 SlowDown`` (S3's throttling answer), the request never reaches moto;
- ``INTERNAL``: ``500 InternalError``;
- ``RESET``: reads the request, then resets the connection (RST) without a response;
- ``TRUNCATE``: forwards, sends the real status and headers (the full Content-Length)
  and half the body, then closes the connection.

A rule picks requests by method, path and query substrings and fails the first ``times`` of each
path (``times=None``: every one), so a test decides whether retries can win.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import pytest

__all__ = ["Fault", "FaultProxy", "Rule", "moto_endpoint"]

_HEAD_LIMIT_BYTES = 64 * 1024
_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
)


class Fault(Enum):
    SLOWDOWN = "slowdown"
    INTERNAL = "internal"
    RESET = "reset"
    TRUNCATE = "truncate"


@dataclass(frozen=True, slots=True)
class Rule:
    """Fail the first ``times`` matching requests per path (None: all) with ``fault``."""

    fault: Fault
    method: str = "GET"
    key_contains: str = ""  # in the path without the query
    times: int | None = 1
    query_contains: str = ""

    def matches(self, method: str, target: str) -> bool:
        path, _, query = target.partition("?")
        return method == self.method and self.key_contains in path and self.query_contains in query


@dataclass
class _Head:
    raw: bytes
    first_line: str
    headers: dict[str, str]  # lower-case names

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(raw) > _HEAD_LIMIT_BYTES:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return _Head(raw, lines[0], headers)


async def _read_body(reader: asyncio.StreamReader, head: _Head, until_eof: bool) -> bytes:
    """The body as sent (chunk framing kept)."""
    if head.chunked:
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            parts.append(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = await reader.readuntil(b"\r\n")
                    parts.append(line)
                    if line == b"\r\n":
                        return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    length = head.content_length
    if length is not None:
        return await reader.readexactly(length)
    return await reader.read() if until_eof else b""


def _with_connection_close(head: _Head) -> bytes:
    lines = [
        ln
        for ln in head.raw.decode("latin-1").split("\r\n")
        if ln and not ln.lower().startswith("connection:")
    ]
    return ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("latin-1")


def _error_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = _ERROR_XML.format(code=code, message=message).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nx-amz-request-id: fault-proxy\r\n\r\n"
    )
    return head.encode() + body


class FaultProxy:
    """The proxy; ``url`` is the endpoint to give clients; rules change at any time."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._rules: list[Rule] = []
        self._seen: Counter[tuple[int, str]] = Counter()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_rules(self, *rules: Rule) -> None:
        """Replace the rules (and forget how often each path was failed)."""
        with self._lock:
            self._rules = list(rules)
            self._seen.clear()

    def start(self) -> FaultProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            for n, rule in enumerate(self._rules):
                if not rule.matches(method, path):
                    continue
                key = (n, path.split("?", 1)[0])
                self._seen[key] += 1
                if rule.times is None or self._seen[key] <= rule.times:
                    self.injected[rule.fault.value] += 1
                    return rule.fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the client connection must end."""
        head = await _read_head(reader)
        if head is None:
            return False
        method, _, rest = head.first_line.partition(" ")
        path = rest.rpartition(" ")[0]
        if head.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await _read_body(reader, head, until_eof=False)
        fault = self._pick(method, path)
        if fault is Fault.SLOWDOWN:
            writer.write(
                _error_response(503, "Slow Down", "SlowDown", "Please reduce your request rate.")
            )
            await writer.drain()
            return True
        if fault is Fault.INTERNAL:
            writer.write(
                _error_response(
                    500,
                    "Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            )
            await writer.drain()
            return True
        if fault is Fault.RESET:
            sock = writer.get_extra_info("socket")
            # SO_LINGER 0: close() sends RST, as a crashed store or middlebox does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        status_head, status_body = await self._forward(head, body)
        if fault is Fault.TRUNCATE:
            writer.write(status_head + status_body[: len(status_body) // 2])
            await writer.drain()
            return False
        writer.write(status_head + status_body)
        await writer.drain()
        return head.headers.get("connection", "").lower() != "close"

    async def _forward(self, head: _Head, body: bytes) -> tuple[bytes, bytes]:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(_with_connection_close(head) + body)
            await up_writer.drain()
            while True:
                response = await _read_head(up_reader)
                if response is None:
                    raise ConnectionError("upstream closed without a response")
                if not response.first_line.split(" ")[1].startswith("1"):
                    break  # skip interim 1xx answers
            has_body = head.first_line.split(" ", 1)[0] != "HEAD"
            data = await _read_body(up_reader, response, until_eof=has_body) if has_body else b""
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()
        raw = response.raw
        if response.content_length is None and not response.chunked and has_body:
            raw = raw[:-2] + f"Content-Length: {len(data)}\r\n\r\n".encode()
        return raw, data


@contextlib.contextmanager
def moto_endpoint() -> Iterator[tuple[str, int]]:
    """moto's S3 in server mode on 127.0.0.1 (a free port), for one block."""
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()
