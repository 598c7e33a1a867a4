"""Expire 10,000 clips across 30 day folders: ``clipd cleanup --max-age`` vs ``find -delete``.

Both run in the same process, on identical copies of one tree (same files, same
mtimes), on the same filesystem. clipd's tree is indexed first (as the daemon keeps
it); that setup is not timed. Usage: ``python -m bench.bench_cleanup [--clips N]``.

``--baseline DIR`` also runs a snapshot of clipd (``git archive <rev> clipd | tar -x -C
DIR``) on a third identical copy in the same rounds, for an A/B comparison on a shared
machine. Each clipd then runs from the temp folder with its own ``PYTHONPATH``
(``python -m`` puts the working directory first, which would shadow the snapshot).
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

from clipd.index import Index, index_path
from clipd.record import ClipRecord

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


def timed(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU is the child's user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        cmd, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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
    parser.add_argument("--baseline", help="also run the clipd snapshot in this folder (A/B)")
    args = parser.parse_args([] if argv is None else argv)
    names = ["find", "clipd"] + (["old"] if args.baseline else [])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    left = 0
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            trees = {name: Path(tmp) / name for name in names}
            trees["clipd"].mkdir()
            records = build_tree(trees["clipd"], args.clips, args.size)
            for name in names:
                if name != "clipd":
                    shutil.copytree(trees["clipd"], trees[name], copy_function=shutil.copy2)
            shutil.rmtree(trees["find"] / ".clipd", ignore_errors=True)
            for name in names:
                if name != "find":
                    ix = Index(index_path(trees[name]))
                    ix.upsert_many(records)
                    ix.close()
            os.sync()
            repo = str(Path(__file__).resolve().parent.parent)
            find_cmd = ["find", str(trees["find"]), "-mmin", f"+{_MAX_AGE_H * 60}", "-delete"]
            runs: dict[str, tuple[list[str], dict[str, str] | None, Path | None]] = {
                "find": (find_cmd, None, None)
            }
            for name, path in (("clipd", repo), ("old", args.baseline)):
                if name in names:
                    env = {
                        **os.environ,
                        "CLIPS_DIR": str(trees[name]),
                        "CLIPD_LOG_LEVEL": "warning",
                    }
                    if args.baseline:
                        env["PYTHONPATH"] = str(path)
                    runs[name] = (CLIPD_CMD, env, Path(tmp) if args.baseline else None)
            # Rotate which goes first so none always pays for another's writeback.
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                w, c = timed(*runs[name])
                wall[name].append(w)
                cpu[name].append(c)
            left += sum(1 for name in names for _ in trees[name].glob("[0-9]*/*"))
        print(
            f"round {round_no + 1}: "
            + ", ".join(f"{n} {wall[n][-1]:.3f} s (CPU {cpu[n][-1]:.3f} s)" for n in names),
            flush=True,
        )
    med = {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}
    print(
        f"clips: {args.clips} in {_DAYS} day folders, {args.size} bytes each, "
        f"{args.rounds} rounds (medians)"
    )
    t_find, c_find = med["find"]
    t_clipd, c_clipd = med["clipd"]
    print(
        f"find:  find <dir> -mmin +{_MAX_AGE_H * 60} -delete  {t_find:.3f} s (CPU {c_find:.3f} s)"
    )
    print(f"clipd: clipd cleanup --max-age {_MAX_AGE_H}  {t_clipd:.3f} s (CPU {c_clipd:.3f} s)")
    if args.baseline:
        t_old, c_old = med["old"]
        print(f"old:   {args.baseline}  {t_old:.3f} s (CPU {c_old:.3f} s)")
        print(f"ratio old/find: {t_old / t_find:.2f}x wall, {c_old / c_find:.2f}x CPU")
    print(
        f"ratio clipd/find: {t_clipd / t_find:.2f}x wall, {c_clipd / c_find:.2f}x CPU "
        "(goal <= 1.5x wall)"
    )
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
