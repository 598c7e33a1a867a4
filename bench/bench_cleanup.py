"""Expire 10,000 clips across 30 day folders: ``clipd cleanup --max-age`` vs ``find -delete``.

Both run in the same process, on identical copies of one tree (same files, same
mtimes), on the same filesystem. clipd's tree is indexed first (as the daemon keeps
it); that setup is not timed. Usage: ``python -m bench.bench_cleanup [--clips N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clipd.index import ClipRecord, Index, index_path

_DAYS = 30
_AGE_H = 48
_MAX_AGE_H = 24
CLIPD_CMD = [sys.executable, "-m", "clipd", "cleanup", "--max-age", str(_MAX_AGE_H)]


def build_tree(root: Path, clips: int, size: int) -> list[ClipRecord]:
    """Write ``clips`` small clips over ``_DAYS`` day folders, all ``_AGE_H`` hours old."""
    data = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * (size - 12)
    digest = hashlib.sha256(data).hexdigest()
    old = time.time() - _AGE_H * 3600
    records = []
    for i in range(clips):
        day = f"2026-10-{1 + i % _DAYS:02d}"
        folder = root / day
        folder.mkdir(exist_ok=True)
        name = f"Bench_clip_j{i}.mp4"
        path = folder / name
        path.write_bytes(data)
        os.utime(path, (old, old))
        st = path.lstat()
        records.append(
            ClipRecord(
                job_id=f"j{i}",
                relpath=f"{day}/{name}",
                day=day,
                title="Bench_clip",
                ext=".mp4",
                size_bytes=st.st_size,
                mtime_ns=st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns,
                inode=st.st_ino,
                sha256=digest,
                ingested_at=old,
                verified_at=old,
            )
        )
    return records


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU is the child's user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``argv`` are its flags (none when bench.run_all calls it)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per clip")
    parser.add_argument("--dir", help="where to build the trees (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args([] if argv is None else argv)
    find_s: list[float] = []
    clipd_s: list[float] = []
    find_cpu: list[float] = []
    clipd_cpu: list[float] = []
    left = 0
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            clipd_tree, find_tree = Path(tmp) / "clipd", Path(tmp) / "find"
            clipd_tree.mkdir()
            records = build_tree(clipd_tree, args.clips, args.size)
            shutil.copytree(clipd_tree, find_tree, copy_function=shutil.copy2)
            shutil.rmtree(find_tree / ".clipd", ignore_errors=True)
            ix = Index(index_path(clipd_tree))
            ix.upsert_many(records)
            ix.close()
            os.sync()
            env = {**os.environ, "CLIPS_DIR": str(clipd_tree), "CLIPD_LOG_LEVEL": "warning"}
            find_cmd = ["find", str(find_tree), "-mmin", f"+{_MAX_AGE_H * 60}", "-delete"]
            # Alternate which goes first so neither always pays for the other's writeback.
            runs = [("find", find_cmd, None), ("clipd", CLIPD_CMD, env)]
            for name, cmd, cmd_env in runs if round_no % 2 == 0 else runs[::-1]:
                wall, cpu = timed(cmd, cmd_env)
                (find_s if name == "find" else clipd_s).append(wall)
                (find_cpu if name == "find" else clipd_cpu).append(cpu)
            left += sum(1 for _ in clipd_tree.glob("[0-9]*/*"))
            left += sum(1 for _ in find_tree.glob("[0-9]*/*"))
        print(
            f"round {round_no + 1}: find {find_s[-1]:.3f} s (CPU {find_cpu[-1]:.3f} s), "
            f"clipd {clipd_s[-1]:.3f} s (CPU {clipd_cpu[-1]:.3f} s)",
            flush=True,
        )
    t_find, t_clipd = statistics.median(find_s), statistics.median(clipd_s)
    print(
        f"clips: {args.clips} in {_DAYS} day folders, {args.size} bytes each, "
        f"{args.rounds} rounds (medians)"
    )
    c_find, c_clipd = statistics.median(find_cpu), statistics.median(clipd_cpu)
    print(
        f"find:  find <dir> -mmin +{_MAX_AGE_H * 60} -delete  {t_find:.3f} s (CPU {c_find:.3f} s)"
    )
    print(f"clipd: clipd cleanup --max-age {_MAX_AGE_H}  {t_clipd:.3f} s (CPU {c_clipd:.3f} s)")
    print(
        f"ratio clipd/find: {t_clipd / t_find:.2f}x wall, {c_clipd / c_find:.2f}x CPU "
        "(goal <= 1.5x wall)"
    )
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
