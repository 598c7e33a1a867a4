"""Download benchmarks (issue 4): clipd beside nginx serving the same tree, in one run.

1. random 1 MiB clips by job id, 16 connections: clipd alone vs nginx   (≥ 0.5x req/s, aim 0.65x)
2. one 100 MiB clip, 4 connections: clipd alone vs nginx                (≥ 0.9x bytes/s)
3. random 1 MiB clips: nginx + clipd (X-Accel-Redirect) vs nginx alone  (≥ 0.8x req/s)

nginx (one worker, sendfile on, tcp_nopush on, access_log off) serves the tree directly
on one port and runs the shipped ``packaging/nginx/clipd.conf`` site on another. wrk
picks a random path per request from a list (a Lua script), so both sides see the same
mix. Every pair runs twice, alternating sides; the better run of each side counts.
Environment: CLIPD_BENCH_DIR (default /tmp/clipd-bench), CLIPD_BENCH_DL_CLIPS (1000),
CLIPD_BENCH_WRK_S (10), CLIPD_BENCH_DL_ROUNDS (2), NGINX (default: nginx on PATH or
/usr/sbin/nginx).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import REPO, Daemon, Row, free_port, load_average, make_tree, print_rows
from tests.helpers import MP4_HEAD, clip_bytes

__all__ = ["main"]

_MiB = 1024 * 1024
_CLIP_BYTES = _MiB
_BIG_BYTES = 100 * _MiB
_BIG_NAME = "Bench_big_jobbig100.mp4"
_DAY = "2024-01-01"  # make_tree puts the first 1,000 clips here
_ROUNDS = int(os.environ.get("CLIPD_BENCH_DL_ROUNDS", "2"))
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
# The floor for clipd's own figures: aiohttp answering the same clips with nothing but a
# FileResponse per request, or (argv[4] == "accel") nothing but an X-Accel-Redirect to
# the shipped site's internal location (no index, no checks, no middleware, no access log).
_BARE = """\
import sys
from pathlib import Path
from aiohttp import web
root = Path(sys.argv[1])
paths = {line.rpartition("_")[2].removesuffix(".mp4\\n"): line.strip().lstrip("/")
         for line in open(sys.argv[2])}
async def send(request):
    return web.FileResponse(root / paths[request.match_info["job_id"]])
async def accel(request):
    relpath = paths[request.match_info["job_id"]]
    return web.Response(headers={"X-Accel-Redirect": "/_clips/" + relpath})
download = accel if sys.argv[4] == "accel" else send
app = web.Application()
app.router.add_get("/api/v1/jobs/{job_id}/download", download)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[3]), access_log=None, print=None)
"""
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": _MiB, "GB": 1024 * _MiB}


@dataclass(frozen=True, slots=True)
class Wrk:
    """One wrk run: requests/s, bytes/s (including partly read responses), errors, and
    the server's CPU milliseconds (user + system, all threads) per request when known."""

    requests_per_s: float
    bytes_per_s: float
    errors: str
    command: str
    cpu_ms_per_request: float | None = None


def _wrk(
    url: str, connections: int, duration_s: int, script: Path | None, pid: int | None = None
) -> Wrk:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    before = psutil.Process(pid).cpu_times() if pid else None
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    cpu_ms = None
    done = re.search(r"(\d+) requests in", out)
    if before is not None and pid and done and int(done.group(1)):
        after = psutil.Process(pid).cpu_times()
        cpu_s = after.user + after.system - before.user - before.system
        cpu_ms = cpu_s * 1e3 / int(done.group(1))
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
        cpu_ms,
    )


def _nginx_binary() -> str:
    found = os.environ.get("NGINX") or shutil.which("nginx")
    if found is None and os.path.exists("/usr/sbin/nginx"):
        found = "/usr/sbin/nginx"
    if found is None:
        raise RuntimeError("nginx is not installed (Debian: apt install nginx-light)")
    return found


def _site(clips_dir: Path, front_port: int, upstream_port: int, upstream: str) -> str:
    """The shipped site, listening on ``front_port`` in front of ``upstream_port``."""
    site = _SNIPPET.read_text()
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 80;", f"listen 127.0.0.1:{front_port};"),
        ("/var/lib/clipd/clips/", f"{clips_dir}/"),
        ("upstream clipd {", f"upstream {upstream} {{"),
        ("proxy_pass http://clipd;", f"proxy_pass http://{upstream};"),
    ):
        if old not in site:
            raise RuntimeError(f"{old!r} is no longer in {_SNIPPET}")
        site = site.replace(old, new)
    return site


def _nginx_config(
    tmp: Path, clips_dir: Path, direct_port: int, fronts: dict[str, tuple[int, int]]
) -> Path:
    """One nginx: the tree served directly, and the shipped site in front of each
    upstream in ``fronts`` (name → (front port, upstream port))."""
    site = "\n".join(_site(clips_dir, f, u, name) for name, (f, u) in fronts.items())
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
            cpu = result.cpu_ms_per_request
            cpu_text = f", server CPU {cpu:.3f} ms/request" if cpu is not None else ""
            print(
                f"  {name} round {round_no + 1} {side}: {result.requests_per_s:,.0f} req/s, "
                f"{result.bytes_per_s / _MiB:,.0f} MiB/s{cpu_text}{errors} "
                f"(load {load_average()})",
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
    cpu = f" ({clipd.cpu_ms_per_request:.2f} ms CPU/req)" if clipd.cpu_ms_per_request else ""
    ref_cpu = f" ({ref.cpu_ms_per_request:.2f} ms CPU/req)" if ref.cpu_ms_per_request else ""
    return Row(
        name,
        f"{a:,.0f} {unit}{cpu if not by_bytes else ''}",
        f"{b:,.0f} {unit}{ref_cpu if not by_bytes else ''}",
        f"{ratio:.2f}x",
        f"≥ {goal}x{aim}" if goal else "—",
        (ratio >= goal and not clipd.errors) if goal else None,
    )


@dataclass(frozen=True, slots=True)
class _Servers:
    """Where each side listens, and the process whose CPU time a run reports."""

    direct: str  # nginx serving the tree
    front: str  # nginx with the shipped site in front of clipd
    bare: str  # aiohttp FileResponse, nothing else
    bare_front: str  # nginx with the shipped site in front of a bare X-Accel handler
    nginx_pid: int  # the nginx worker
    bare_pid: int
    bare_accel_pid: int
    files_lua: Path
    jobs_lua: Path
    duration_s: int


def main() -> None:
    """Run the three download comparisons on one tree; print a table."""
    workdir = Path(os.environ.get("CLIPD_BENCH_DIR", "/tmp/clipd-bench")) / "download"
    count = int(os.environ.get("CLIPD_BENCH_DL_CLIPS", "1000"))
    duration_s = int(os.environ.get("CLIPD_BENCH_WRK_S", "10"))
    workdir.mkdir(parents=True, exist_ok=True)
    nginx = _nginx_binary()
    clips_dir, files, jobs = _build(workdir, count)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"bench_download: {len(files)} x 1 MiB + 1 x 100 MiB in {clips_dir}; "
        f"{os.cpu_count()} CPUs; uptime: {uptime}",
        flush=True,
    )
    files_lua = _script(workdir, "nginx-paths", files)
    jobs_lua = _script(workdir, "clipd-paths", jobs)
    direct_port, front_port, clipd_port, bare_port = (free_port() for _ in range(4))
    bare_front_port, bare_accel_port = free_port(), free_port()
    ngx = workdir / "nginx"
    shutil.rmtree(ngx, ignore_errors=True)
    ngx.mkdir()
    conf = _nginx_config(
        ngx,
        clips_dir,
        direct_port,
        {"clipd": (front_port, clipd_port), "bare": (bare_front_port, bare_accel_port)},
    )
    subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(ngx)], check=True)
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(ngx), "-g", "daemon off;"])
    bare, bare_accel = (
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BARE,
                str(clips_dir),
                str(files_lua.with_suffix(".txt")),
                str(port),
                mode,
            ]
        )
        for port, mode in ((bare_port, "send"), (bare_accel_port, "accel"))
    )
    rows: list[Row] = []
    try:
        direct = f"http://127.0.0.1:{direct_port}"
        bare_url = f"http://127.0.0.1:{bare_port}"
        _wait(lambda: _answers(direct + files[0]), "nginx")
        _wait(lambda: _answers(bare_url + jobs[0]), "the bare aiohttp server")
        bare_front = f"http://127.0.0.1:{bare_front_port}"
        _wait(lambda: _answers(bare_front + jobs[0]), "nginx + the bare X-Accel handler")
        servers = _Servers(
            direct,
            f"http://127.0.0.1:{front_port}",
            bare_url,
            bare_front,
            psutil.Process(proc.pid).children()[0].pid,
            bare.pid,
            bare_accel.pid,
            files_lua,
            jobs_lua,
            duration_s,
        )
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
                assert daemon.proc is not None
                rows.extend(_compare(servers, daemon.url, daemon.proc.pid, accel))
            finally:
                daemon.stop()
    finally:
        for server in (bare, bare_accel, proc):
            server.terminate()
            server.wait(30)
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


def _compare(servers: _Servers, clipd: str, clipd_pid: int, accel: bool) -> list[Row]:
    d, lua = servers.duration_s, servers.jobs_lua
    nginx_random = (
        "nginx",
        lambda: _wrk(servers.direct, 16, d, servers.files_lua, servers.nginx_pid),
    )
    if accel:
        bare_front = servers.bare_front
        best = _pair(
            "3. random 1 MiB via X-Accel-Redirect",
            [
                nginx_random,
                ("nginx+clipd", lambda: _wrk(servers.front, 16, d, lua, clipd_pid)),
                ("nginx+bare", lambda: _wrk(bare_front, 16, d, lua, servers.bare_accel_pid)),
            ],
        )
        return [
            _row(
                "3. random 1 MiB, 16 conn: nginx + clipd (X-Accel-Redirect) vs nginx",
                best["nginx+clipd"],
                best["nginx"],
                False,
                0.8,
            ),
            _row(
                "3b. same: nginx + bare aiohttp X-Accel-Redirect handler vs nginx (reference)",
                best["nginx+bare"],
                best["nginx"],
                False,
                0.0,
            ),
        ]
    best = _pair(
        "1. random 1 MiB",
        [
            nginx_random,
            ("clipd", lambda: _wrk(clipd, 16, d, lua, clipd_pid)),
            ("bare aiohttp", lambda: _wrk(servers.bare, 16, d, lua, servers.bare_pid)),
        ],
    )
    rows = [
        _row(
            "1. random 1 MiB, 16 conn: clipd vs nginx",
            best["clipd"],
            best["nginx"],
            False,
            0.5,
            " (aim 0.65x)",
        ),
        _row(
            "1b. same: bare aiohttp FileResponse vs nginx (reference)",
            best["bare aiohttp"],
            best["nginx"],
            False,
            0.0,
        ),
    ]
    big_file = f"{servers.direct}/{_DAY}/{_BIG_NAME}"
    big_job = f"{clipd}/api/v1/jobs/jobbig100/download"
    best = _pair(
        "2. one 100 MiB clip",
        [
            ("nginx", lambda: _wrk(big_file, 4, d, None, servers.nginx_pid)),
            ("clipd", lambda: _wrk(big_job, 4, d, None, clipd_pid)),
        ],
    )
    rows.append(
        _row("2. one 100 MiB clip, 4 conn: clipd vs nginx", best["clipd"], best["nginx"], True, 0.9)
    )
    return rows


if __name__ == "__main__":
    main()
