"""Helpers shared by the reliability scenarios: a small tmpfs, raw HTTP, figures out."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` for the block; skip where mounting is refused."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {result.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def request(
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; an error status is returned, not raised."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def job_of(relpath: str) -> str:
    """The job id in ``<day>/<title>_<job>.<ext>``."""
    return relpath.rsplit("_", 1)[1].split(".")[0]


def temp_files(clips: Path) -> list[Path]:
    """Every temp file in the day folders, hidden upload temps included."""
    return sorted(p for p in clips.glob("*/*") if p.name.endswith(".tmp") or ".tmp" in p.name)


def report_figures(tmp_path: Path, name: str, figures: Mapping[str, Any]) -> Path:
    """Print the figures of a run and keep them as JSON next to the test's files."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"\n{name}: " + json.dumps(figures, sort_keys=True))
    print(f"{name}: figures written to {path}")
    return path
