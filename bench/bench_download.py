"""Download benchmarks (issue 4): clipd beside nginx serving the same tree, in one run.

1. random 1 MiB clips by job id, 16 connections: clipd alone vs nginx   (≥ 0.5x req/s, aim 0.65x)
2. one 100 MiB clip, 4 connections: clipd alone vs nginx                (≥ 0.9x bytes/s)
3. random 1 MiB clips: nginx + clipd (X-Accel-Redirect) vs nginx alone  (≥ 0.8x req/s)

nginx (one worker, sendfile on, tcp_nopush on, access_log off) serves the tree directly
on one port and runs the shipped ``packaging/nginx/clipd.conf`` site on another. wrk
picks a random path per request from a list (a Lua script), so both sides see the same
mix. Every pair runs twice, alternating sides; the better run of each side counts.
Environment: CLIPD_BENCH_DIR (default /tmp/clipd-bench), CLIPD_BENCH_DL_CLIPS (1000),
CLIPD_BENCH_WRK_S (10), NGINX (default: nginx on PATH or /usr/sbin/nginx).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, Daemon, Row, free_port, load_average, make_tree, print_rows
from tests.helpers import MP4_HEAD, clip_bytes

__all__ = ["main"]

_MiB = 1024 * 1024
_CLIP_BYTES = _MiB
_BIG_BYTES = 100 * _MiB
_BIG_NAME = "Bench_big_jobbig100.mp4"
_DAY = "2024-01-01"  # make_tree puts the first 1,000 clips here
_ROUNDS = 2
_SNIPPET = REPO / "packaging" / "nginx" / "clipd.conf"
_LUA = """\
local paths = {}
for line in io.lines("%(list)s") do paths[#paths + 1] = line end
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(seed * 7919 + os.time())
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": _MiB, "GB": 1024 * _MiB}


@dataclass(frozen=True, slots=True)
class Wrk:
    """One wrk run: requests/s, bytes/s (including partly read responses), errors."""

    requests_per_s: float
    bytes_per_s: float
    errors: str
    command: str


def _wrk(url: str, connections: int, duration_s: int, script: Path | None) -> Wrk:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    errors = "; ".join(
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return Wrk(
        float(rps.group(1)) if rps else 0.0,
        float(transfer.group(1)) * _SIZE_UNITS[transfer.group(2)] if transfer else 0.0,
        errors,
        " ".join(argv),
    )


def _nginx_binary() -> str:
    found = os.environ.get("NGINX") or shutil.which("nginx")
    if found is None and os.path.exists("/usr/sbin/nginx"):
        found = "/usr/sbin/nginx"
    if found is None:
        raise RuntimeError("nginx is not installed (Debian: apt install nginx-light)")
    return found


def _nginx_config(
    tmp: Path, clips_dir: Path, direct_port: int, front_port: int, clipd_port: int
) -> Path:
    """One nginx: the tree served directly, and the shipped site in front of clipd."""
    site = _SNIPPET.read_text()
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{clipd_port};"),
        ("listen 80;", f"listen 127.0.0.1:{front_port};"),
        ("/var/lib/clipd/clips/", f"{clips_dir}/"),
    ):
        if old not in site:
            raise RuntimeError(f"{old!r} is no longer in {_SNIPPET}")
        site = site.replace(old, new)
    temp = "\n".join(
        f"  {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;" if os.geteuid() == 0 else ""
    path = tmp / "nginx.conf"
    path.write_text(f"""{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
{temp}
  server {{
    listen 127.0.0.1:{direct_port};
    root {clips_dir};
  }}
{site}
}}
""")
    return path


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait(pred: Callable[[], bool], what: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _indexed(daemon: Daemon, count: int) -> bool:
    totals = daemon.get_json("/api/v1/storage/metrics")
    assert isinstance(totals, dict)
    return int(totals["file_count"]) >= count


def _build(workdir: Path, count: int) -> tuple[Path, list[str], list[str]]:
    """The tree (reused when unchanged) and the nginx / clipd path lists of the 1 MiB clips."""
    clips_dir = workdir / "clips"
    make_tree(clips_dir, count, _CLIP_BYTES, per_day=1000)
    big = clips_dir / _DAY / _BIG_NAME
    if not big.exists() or big.stat().st_size != _BIG_BYTES:
        block = clip_bytes(_MiB, seed=7)
        tmp = big.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(MP4_HEAD + block[len(MP4_HEAD) :])
            for _ in range(_BIG_BYTES // _MiB - 1):
                f.write(block)
        tmp.rename(big)
    names = sorted(
        p.relative_to(clips_dir).as_posix() for p in clips_dir.glob("20*/Bench_clip_job*.mp4")
    )
    files = ["/" + n for n in names]
    jobs = [f"/api/v1/jobs/{n.rpartition('_')[2].removesuffix('.mp4')}/download" for n in names]
    return clips_dir, files, jobs


def _script(workdir: Path, name: str, paths: list[str]) -> Path:
    listing = workdir / f"{name}.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = workdir / f"{name}.lua"
    script.write_text(_LUA % {"list": listing})
    return script


def _pair(name: str, runs: list[tuple[str, Callable[[], Wrk]]]) -> dict[str, Wrk]:
    """Run the sides alternately ``_ROUNDS`` times; the best of each by requests/s."""
    best: dict[str, Wrk] = {}
    for round_no in range(_ROUNDS):
        for side, run in runs if round_no % 2 == 0 else runs[::-1]:
            result = run()
            errors = f"; {result.errors}" if result.errors else ""
            print(
                f"  {name} round {round_no + 1} {side}: {result.requests_per_s:,.0f} req/s, "
                f"{result.bytes_per_s / _MiB:,.0f} MiB/s{errors} (load {load_average()})",
                flush=True,
            )
            if side not in best or result.bytes_per_s > best[side].bytes_per_s:
                best[side] = result
    return best


def _row(name: str, clipd: Wrk, ref: Wrk, by_bytes: bool, goal: float, aim: str = "") -> Row:
    if by_bytes:
        a, b, unit = clipd.bytes_per_s / _MiB, ref.bytes_per_s / _MiB, "MiB/s"
    else:
        a, b, unit = clipd.requests_per_s, ref.requests_per_s, "req/s"
    ratio = a / b if b else 0.0
    return Row(
        name,
        f"{a:,.0f} {unit}",
        f"{b:,.0f} {unit}",
        f"{ratio:.2f}x",
        f"≥ {goal}x{aim}",
        ratio >= goal and not clipd.errors,
    )


def main() -> None:
    """Run the three download comparisons on one tree; print a table."""
    workdir = Path(os.environ.get("CLIPD_BENCH_DIR", "/tmp/clipd-bench")) / "download"
    count = int(os.environ.get("CLIPD_BENCH_DL_CLIPS", "1000"))
    duration_s = int(os.environ.get("CLIPD_BENCH_WRK_S", "10"))
    workdir.mkdir(parents=True, exist_ok=True)
    nginx = _nginx_binary()
    clips_dir, files, jobs = _build(workdir, count)
    print(
        f"bench_download: {len(files)} x 1 MiB + 1 x 100 MiB in {clips_dir}; "
        f"{os.cpu_count()} CPUs; uptime: "
        f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
        flush=True,
    )
    files_lua = _script(workdir, "nginx-paths", files)
    jobs_lua = _script(workdir, "clipd-paths", jobs)
    direct_port, front_port, clipd_port = free_port(), free_port(), free_port()
    ngx = workdir / "nginx"
    shutil.rmtree(ngx, ignore_errors=True)
    ngx.mkdir()
    conf = _nginx_config(ngx, clips_dir, direct_port, front_port, clipd_port)
    subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(ngx)], check=True)
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(ngx), "-g", "daemon off;"])
    direct = f"http://127.0.0.1:{direct_port}"
    front = f"http://127.0.0.1:{front_port}"
    rows: list[Row] = []
    try:
        _wait(lambda: _answers(direct + files[0]), "nginx")
        for accel in (False, True):
            env = {"CLIPD_WEB_ACCEL_REDIRECT": "/_clips/"} if accel else {}
            daemon = Daemon(clips_dir, workdir, env=env, port=clipd_port)
            ready_s = daemon.start()
            try:
                _wait(lambda d=daemon: _indexed(d, len(files) + 1), "clipd to index the tree")
                print(
                    f"  clipd {'with accel_redirect ' if accel else ''}ready in {ready_s:.1f} s",
                    flush=True,
                )
                rows.extend(
                    _compare(accel, direct, front, daemon.url, files_lua, jobs_lua, duration_s)
                )
            finally:
                daemon.stop()
    finally:
        proc.terminate()
        proc.wait(30)
    print_rows(
        "download (issue 4)",
        rows,
        {
            "machine": f"{os.cpu_count()} CPUs, {os.uname().release}, load {load_average()}",
            "data": f"{clips_dir}: {len(files)} x 1 MiB + {_BIG_NAME} (100 MiB), page cache warm",
            "wrk": f"wrk -t2 -cN -d{duration_s}s -s <random path list>.lua URL; best of "
            f"{_ROUNDS} alternating runs per side",
        },
    )


def _compare(
    accel: bool,
    direct: str,
    front: str,
    clipd: str,
    files_lua: Path,
    jobs_lua: Path,
    duration_s: int,
) -> list[Row]:
    nginx_random = ("nginx", lambda: _wrk(direct, 16, duration_s, files_lua))
    if accel:
        best = _pair(
            "3. random 1 MiB via X-Accel-Redirect",
            [nginx_random, ("nginx+clipd", lambda: _wrk(front, 16, duration_s, jobs_lua))],
        )
        return [
            _row(
                "3. random 1 MiB, 16 conn: nginx + clipd (X-Accel-Redirect) vs nginx",
                best["nginx+clipd"],
                best["nginx"],
                False,
                0.8,
            )
        ]
    best = _pair(
        "1. random 1 MiB", [nginx_random, ("clipd", lambda: _wrk(clipd, 16, duration_s, jobs_lua))]
    )
    rows = [
        _row(
            "1. random 1 MiB, 16 conn: clipd vs nginx",
            best["clipd"],
            best["nginx"],
            False,
            0.5,
            " (aim 0.65x)",
        )
    ]
    big_file = f"{direct}/{_DAY}/{_BIG_NAME}"
    big_job = f"{clipd}/api/v1/jobs/jobbig100/download"
    best = _pair(
        "2. one 100 MiB clip",
        [
            ("nginx", lambda: _wrk(big_file, 4, duration_s, None)),
            ("clipd", lambda: _wrk(big_job, 4, duration_s, None)),
        ],
    )
    rows.append(
        _row("2. one 100 MiB clip, 4 conn: clipd vs nginx", best["clipd"], best["nginx"], True, 0.9)
    )
    return rows


if __name__ == "__main__":
    main()
