"""Hostile input against the real daemon: schemathesis over the OpenAPI document,
traversal and encoding attacks on every path parameter and header, slow clients,
oversized headers and bodies. Zero 5xx, and nothing outside the clips tree is read."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from schemathesis import GenerationMode

from tests.helpers import DaemonProcess, clip_bytes, write_clip
from tests.reliability.conftest import AUTH, TOKEN, request
from tests.test_openapi import _fuzz

SECRET = b"CANARY-7f3a-SECRET"
DAY = "2026-11-24"


class OpenWatch:
    """inotify on one file: did anybody open or read it? (no strace needed)"""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        wd = libc.inotify_add_watch(self.fd, str(path).encode(), self.IN_ACCESS | self.IN_OPEN)
        assert wd >= 0, os.strerror(ctypes.get_errno())

    def events(self) -> int:
        count = 0
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(data):
                _, mask, _, name_len = struct.unpack_from("iIII", data, offset)
                count += bool(mask & (self.IN_ACCESS | self.IN_OPEN))
                offset += 16 + name_len

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    workdir = tmp_path_factory.mktemp("hostile")
    clips = workdir / "clips"
    for i in range(3):
        write_clip(
            clips, DAY, f"Clip_job{i}.mp4", clip_bytes(2000 + i, i), mtime=time.time() - 3600
        )
    canary = workdir / "canary.txt"  # next to the tree: ../canary.txt from it
    canary.write_bytes(SECRET * 10)
    (clips / DAY / "passwd").write_bytes(SECRET)  # inside the tree, but not a clip
    daemon = DaemonProcess(
        clips, workdir, env={"CLIPD_API_TOKEN": TOKEN, "CLIPD_WEB_MAX_UPLOAD_BYTES": "1000000"}
    )
    try:
        yield daemon.start(), canary
    finally:
        daemon.close()


def raw(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send bytes as they are (no client-side quoting or checks); the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


ID_ATTACKS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2Fcanary.txt",
    "%2e%2e",
    "%2e%2e%2fcanary.txt",
    "%2E%2E%2F%2E%2E%2Fcanary.txt",
    "..",
    "..%5C..%5Ccanary.txt",
    "..\\..\\canary.txt",
    "%00",
    "job1%00",
    "job1%00.mp4",
    "job1%0a",
    "%0d%0aX-Injected:%201",
    "a" * 65,
    "a" * 5000,
    "%FF",
    "%C0%AF",
    "%C0%AE%C0%AE%C0%AFcanary.txt",
    "%E3%82%B8%E3%83%A7",
    "ジョブ".encode().decode("latin-1"),
    "%2Fetc%2Fpasswd",
    "%2F" + "tmp",
    "~root",
    "job1%2F..%2F..%2Fcanary.txt",
    "job1;rm",
    "*",
    "%25252e%25252e",
    "CON",
    "job1%20",
    "%u002e%u002e",
    "..%252F..%252Fcanary.txt",
    "passwd",
    DAY + "%2Fpasswd",
]
PATHS = ["/api/v1/jobs/{}", "/api/v1/jobs/{}/download"]
RAW_PATHS = [
    "/api/v1/jobs/../../../canary.txt",
    "/api/v1/jobs/job1/../../../../canary.txt",
    "/../canary.txt",
    "//api/v1/jobs/job1/download",
    "/api/v1/jobs/job1/download/..",
    "/%2e%2e/%2e%2e/canary.txt",
    "/api/v1/jobs/job1/download?expires=../../x&sig=%00",
    "/api/v1/jobs/job1/download?expires=99999999999999999999999&sig=" + "A" * 2000,
    "/api/v1/jobs/job1/download?expires=-1&sig=%FF%FE",
    "/api/v1/openapi.json/../../canary.txt",
    "/metrics/../canary.txt",
    "/health%00",
    "http://evil/api/v1/jobs/job1/download",
    "*",
    "/api/v1/jobs/job1/download#frag",
    "/api/v1/jobs/%00/download",
]
HEADER_ATTACKS = [
    ("Range", "bytes=-1"),
    ("Range", "bytes=0-0," * 2000 + "0-0"),
    ("Range", "bytes=999999999999999999999999-"),
    ("Range", "bytes=a-b"),
    ("Range", "bytes=5-1"),
    ("Range", "items=0-1"),
    ("Range", "bytes=0-1\x00"),
    ("Range", "bytes=-0"),
    ("Range", "bytes=0-1,-1,5-"),
    ("Range", "bytes=" + "9" * 5000),
    ("If-Range", '"' + "x" * 5000),
    ("If-Range", "Thu, 01 Jan 9999 00:00:00 GMT"),
    ("If-Range", "Mon, 32 Foo 1800 99:99:99 GMT"),
    ("If-Range", 'W/"abc"'),
    ("If-None-Match", '"' * 1000),
    ("If-None-Match", "*"),
    ("If-None-Match", "ÿþ"),
    ("If-None-Match", ", ,, ,"),
    ("If-Match", "W/*"),
    ("If-Match", '"a", W/"b", *, "'),
    ("If-Modified-Since", "yesterday"),
    ("If-Unmodified-Since", "0"),
    ("Authorization", "Bearer " + "A" * 7000),
    ("Authorization", "Basic Og=="),
    ("Authorization", "Bearer ÿ"),
    ("Authorization", "Bearer"),
    ("Authorization", "Bearer  "),
    ("Repr-Digest", "sha-256=:!!!:"),
    ("Repr-Digest", "sha-256=:" + "A" * 7000 + ":"),
    ("Repr-Digest", "sha-256=::, sha-256=:x:"),
    ("x-amz-checksum-sha256", "%%%"),
    ("x-amz-checksum-sha256", "A" * 7000),
    ("Content-Type", "video/mp4; charset=ÿ"),
    ("Accept-Encoding", "gzip;q=" + "9" * 1000),
    ("Host", "../../canary.txt"),
    ("X-Accel-Redirect", "/../canary.txt"),
    ("X-Forwarded-For", "%00"),
]


def assert_safe(answer: bytes, what: object) -> None:
    status = status_of(answer)
    assert status < 500, (what, answer[:400])
    assert SECRET not in answer, what


def test_traversal_and_encoding_attacks_never_5xx_nor_read_outside(server) -> None:
    daemon, canary = server
    watch = OpenWatch(canary)
    sent = 0
    try:
        for template in PATHS:
            for attack in ID_ATTACKS:
                target = template.format(attack).encode("latin-1")
                for method in (b"GET", b"HEAD", b"DELETE", b"PUT"):
                    head = (
                        method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                        b"Content-Length: 16\r\nConnection: close\r\n\r\n"
                    )
                    answer = raw(daemon.port, head, b"\0\0\0\x18ftypmp42abcd")
                    if method != b"HEAD":
                        assert_safe(answer, (method, target))
                    sent += 1
        for target_s in RAW_PATHS:
            head = f"GET {target_s} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert_safe(raw(daemon.port, head.encode("latin-1")), target_s)
            sent += 1
        for name, value in HEADER_ATTACKS:
            for method, path in (
                ("GET", "/api/v1/jobs/job1/download"),
                ("PUT", "/api/v1/jobs/hostile1?title=..%2F..%2Fcanary"),
                ("DELETE", "/api/v1/jobs/job2"),
            ):
                auth = "" if name == "Authorization" else f"Authorization: Bearer {TOKEN}\r\n"
                head = (
                    f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{name}: {value}\r\n"
                    f"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                assert_safe(raw(daemon.port, head.encode("latin-1")), (method, name, value[:40]))
                sent += 1
        # Titles that try to leave the day folder are sanitized into it.
        for title in ("..%2F..%2Fcanary", "%2Fetc%2Fpasswd", "..\\..\\x", "%00", "%C3%BF" * 300):
            status, _, body = request(
                f"{daemon.url}/api/v1/jobs/title{sent}?title={title}",
                "PUT",
                clip_bytes(1000, sent),
                AUTH,
            )
            assert status in (201, 400), (title, status, body)
            sent += 1
        assert watch.events() == 0, "something opened the canary next to the clips tree"
    finally:
        watch.close()
    assert not list(daemon.clips_dir.parent.glob("*.mp4"))  # nothing written outside
    # aiohttp itself logs each malformed request (a 400) with a traceback; clipd must not.
    log = daemon.log()
    assert "ERROR clipd" not in log and "internal_error" not in log, log[-3000:]
    print(f"\nhostile: {sent} attack requests, zero 5xx, canary never opened")


def test_content_length_lies_and_smuggling_are_refused(server) -> None:
    daemon, canary = server
    put = (
        b"PUT /api/v1/jobs/lie{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\n"
    )
    cases = [
        (b"Content-Length: 10\r\nConnection: close\r\n\r\n", b"\0" * 1000),
        (b"Content-Length: -1\r\nConnection: close\r\n\r\n", b""),
        (b"Content-Length: 1, 2\r\nConnection: close\r\n\r\n", b"ab"),
        (b"Content-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n", b""),
        (
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            b"0\r\n\r\nGET /api/v1/jobs/job1 HTTP/1.1\r\n\r\n",
        ),
        (b"Transfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n", b"0\r\n\r\n"),
        (b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
    ]
    for i, (rest, body) in enumerate(cases):
        answer = raw(daemon.port, put.replace(b"{}", str(i).encode()) + rest, body)
        assert_safe(answer, rest)
    # A body shorter than its Content-Length, then the client goes away.
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(put.replace(b"{}", b"short") + b"Content-Length: 100000\r\n\r\nabc")
    assert daemon.get("/health")[0] == 200
    assert daemon.get("/api/v1/jobs/lieshort")[0] == 404
    del canary


def test_oversized_headers_and_bodies_are_refused(server) -> None:
    daemon, _ = server
    big = "A" * 64 * 1024
    for head in (
        f"GET /api/v1/jobs/job1/download HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n"
        "Connection: close\r\n\r\n",
        f"GET /api/v1/jobs/{big}/download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        status = status_of(raw(daemon.port, head.encode()))
        assert status in (400, 413, 414, 431), status
    # Many small headers: aiohttp 3.9+ caps their count (400); 3.8 accepts them (a 404
    # here): a 4xx either way, never a crash.
    many = "".join(f"X-{i}: y\r\n" for i in range(500))
    head = f"GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"
    assert 400 <= status_of(raw(daemon.port, head.encode())) < 500
    # Declared too large: refused before reading; streamed too large: refused past the cap.
    status, _, body = request(f"{daemon.url}/api/v1/jobs/huge1", "PUT", b"x" * 2_000_000, AUTH)
    assert status == 413, body

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\0\0\0\x18ftypmp42" + b"x" * 65524

    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("PUT", "/api/v1/jobs/huge2", body=chunks(), headers={**AUTH}, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert daemon.get("/api/v1/jobs/huge2")[0] == 404
    assert daemon.get("/health")[0] == 200


def test_slow_clients_do_not_exhaust_the_server(server) -> None:
    daemon, _ = server
    socks = []
    stop = threading.Event()
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
            sock.sendall(b"GET /api/v1/jobs/job1/download HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)

        def drip() -> None:
            while not stop.is_set():
                for sock in socks:
                    with contextlib.suppress(OSError):  # the server may have closed it
                        sock.sendall(b"a")
                stop.wait(1.0)

        dripper = threading.Thread(target=drip)
        dripper.start()
        worst = 0.0
        deadline = time.monotonic() + 10
        answered = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, _, body = request(f"{daemon.url}/api/v1/jobs/job1/download", timeout=2)
            worst = max(worst, time.monotonic() - started)
            assert status == 200 and body == clip_bytes(2001, 1)
            answered += 1
            time.sleep(0.25)  # pacing of the probe, not a synchronisation
        stop.set()
        dripper.join()
        assert worst < 1.0, worst
        print(
            f"\nslowloris: 200 sockets dripping 1 byte/s for 10 s; {answered} normal "
            f"requests answered, slowest {worst * 1000:.0f} ms"
        )
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_schemathesis_short_run_never_5xx(server) -> None:
    daemon, _ = server
    calls = _fuzz(daemon, GenerationMode.POSITIVE, 25)
    calls += _fuzz(daemon, GenerationMode.POSITIVE, 12, {"job_id": "job0"})
    calls += _fuzz(daemon, GenerationMode.NEGATIVE, 12)
    assert calls >= 200, calls
    print(f"\nschemathesis: {calls} cases, zero 5xx")


@pytest.mark.slow
def test_schemathesis_thousand_cases_never_5xx(server) -> None:
    daemon, _ = server
    calls = _fuzz(daemon, GenerationMode.POSITIVE, 150)
    calls += _fuzz(daemon, GenerationMode.POSITIVE, 80, {"job_id": "job0"})
    calls += _fuzz(daemon, GenerationMode.NEGATIVE, 80)
    assert calls >= 1000, calls
    print(f"\nschemathesis: {calls} cases, zero 5xx")
