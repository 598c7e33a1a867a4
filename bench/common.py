"""Shared benchmark helpers: build clip trees, run ``clipd run`` and the reference tools.

Every helper blocks. Figures are wall-clock seconds from ``time.perf_counter``.
Benchmarks are not tests: they print figures and goals, they never assert.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers import MP4_HEAD, clip_bytes

__all__ = [
    "REPO",
    "Daemon",
    "Row",
    "WrkResult",
    "drop_caches",
    "free_port",
    "load_average",
    "make_tree",
    "print_rows",
    "rss_bytes",
    "run_wrk",
    "time_shell",
]

REPO = Path(__file__).resolve().parent.parent
_MiB = 1024 * 1024


def make_tree(clips_dir: Path, count: int, size_bytes: int, per_day: int = 1000) -> int:
    """Write ``count`` valid MP4 clips of ``size_bytes`` into day folders (no fsync).

    Reuses a tree left by an earlier run when it has the same shape (a marker file
    records count and size); returns the number of files written now.
    """
    marker = clips_dir.parent / f".{clips_dir.name}.shape"
    shape = f"{count} {size_bytes} {per_day}"
    if marker.exists() and marker.read_text() == shape and clips_dir.is_dir():
        return 0
    shutil.rmtree(clips_dir, ignore_errors=True)
    clips_dir.mkdir(parents=True)
    body = clip_bytes(size_bytes, seed=1)
    for i in range(count):
        day = (
            f"2024-01-{1 + i // per_day:02d}"
            if i // per_day < 28
            else f"2024-02-{i // per_day - 27:02d}"
        )
        folder = clips_dir / day
        if i % per_day == 0:
            folder.mkdir(exist_ok=True)
        # Distinct content per clip: the head stays a valid ftyp box.
        data = MP4_HEAD + i.to_bytes(8, "big") + body[len(MP4_HEAD) + 8 :]
        (folder / f"Bench_clip_job{i:06d}.mp4").write_bytes(data)
    marker.write_text(shape)
    return count


def make_big_file(path: Path, size_bytes: int) -> None:
    """A file of ``size_bytes`` pseudo-random-looking bytes (reused if the size matches)."""
    if path.exists() and path.stat().st_size == size_bytes:
        return
    block = clip_bytes(_MiB, seed=7)
    with open(path, "wb") as f:
        for _ in range(size_bytes // _MiB):
            f.write(block)


def drop_caches() -> bool:
    """Sync and drop the page, dentry and inode caches (needs root); False if we cannot."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def time_shell(command: str, cold: bool) -> tuple[float, float]:
    """(wall, CPU) seconds ``command`` (run by /bin/sh) takes; drops caches first if ``cold``.

    CPU is user + system time of the command and its children: unlike wall time it
    barely moves when something else shares the machine.
    """
    if cold:
        drop_caches()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews wall-clock figures."""
    return f"{os.getloadavg()[0]:.2f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    """``clipd run`` as a process with its own NOTIFY_SOCKET; times start-up to READY=1."""

    clips_dir: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    ready_s: float = 0.0
    ready_cpu_s: float = 0.0  # user + system seconds of clipd (all threads) at READY=1
    log_path: Path | None = None
    _sock: socket.socket | None = None
    _starts: int = 0

    def start(self, timeout_s: float = 600.0) -> float:
        """Start and wait for READY=1; returns seconds from spawn to READY=1."""
        self._starts += 1
        self.port = self.port or free_port()
        sock_path = self.workdir / f"notify-{os.getpid()}.sock"
        sock_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self.log_path = self.workdir / f"clipd-{self._starts}.log"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "CLIPS_DIR": str(self.clips_dir),
            "CLIPD_LISTEN": f"127.0.0.1:{self.port}",
            "NOTIFY_SOCKET": str(sock_path),
            # Lets a benchmark run a snapshot of clipd (PYTHONPATH=/some/copy).
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            **self.env,
        }
        with open(self.log_path, "wb") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clipd", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,  # not the repo: `-m` would put it before PYTHONPATH
            )
        deadline = started + timeout_s
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"clipd never got ready; log:\n{self.log()[-4000:]}")
            self._sock.settimeout(min(left, 0.5))
            try:
                message = self._sock.recv(65536).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                self.ready_s = time.perf_counter() - started
                cpu = psutil.Process(self.proc.pid).cpu_times()
                self.ready_cpu_s = cpu.user + cpu.system
                return self.ready_s

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def cpu_s(self) -> float:
        """User + system seconds clipd (all its threads) has used so far."""
        assert self.proc is not None
        cpu = psutil.Process(self.proc.pid).cpu_times()
        return float(cpu.user + cpu.system)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return bytes(response.read())

    def get_json(self, path: str) -> object:
        return json.loads(self.get(path))

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` on /metrics."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if m:
                total += float(m.group(2))
        return total

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes (peak from /proc VmHWM)."""
    current = psutil.Process(pid).memory_info().rss
    peak = current
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return current, peak


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    requests_per_s: float
    latency_ms: dict[str, float]  # "50%", "75%", "90%", "99%"
    errors: str
    command: str


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def run_wrk(url: str, threads: int = 2, connections: int = 16, duration_s: int = 10) -> WrkResult:
    """Run ``wrk --latency`` against ``url`` and parse its latency distribution."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    latency = {}
    block = out.partition("Latency Distribution")[2]
    for m in re.finditer(r"^\s+(\d+%)\s+(\S+)$", block, re.MULTILINE):
        latency[m.group(1)] = _to_ms(m.group(2))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = "; ".join(
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return WrkResult(
        int(total.group(1)) if total else 0,
        float(rps.group(1)) if rps else 0.0,
        latency,
        errors,
        " ".join(argv),
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One benchmark line: clipd's figure beside the reference and the goal."""

    name: str
    clipd: str
    reference: str
    ratio: str
    goal: str
    met: bool | None


def print_rows(title: str, rows: Sequence[Row], notes: Mapping[str, str] = {}) -> None:
    """Print rows as a Markdown table (paste-able into bench/README.md)."""
    print(f"\n## {title}\n")
    print("| benchmark | clipd | reference | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        met = "n/a" if r.met is None else ("yes" if r.met else "NO")
        print(f"| {r.name} | {r.clipd} | {r.reference} | {r.ratio} | {r.goal} | {met} |")
    for key, value in notes.items():
        print(f"- {key}: {value}")
    sys.stdout.flush()
