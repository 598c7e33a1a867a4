"""The shipped nginx snippet in front of a real clipd: X-Accel-Redirect end to end."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, clip_bytes, free_port, wait_for, write_clip

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SNIPPET = Path(__file__).resolve().parent.parent / "packaging" / "nginx" / "clipd.conf"
DAY = "2026-11-24"
DATA = clip_bytes(300_000, 5)
SHA = hashlib.sha256(DATA).hexdigest()

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt install nginx-light)"
)


@dataclass
class Front:
    port: int
    clipd: DaemonProcess
    clips_dir: Path

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()


def _config(tmp: Path, listen_port: int, clipd_port: int, clips_dir: Path) -> Path:
    site = SNIPPET.read_text()
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{clipd_port};"),
        ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
        ("/var/lib/clipd/clips/", f"{clips_dir}/"),
    ):
        assert old in site, f"{old!r} is no longer in {SNIPPET}"
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
error_log {tmp}/error.log info;
events {{ worker_connections 128; }}
http {{
  access_log off;
{temp}
{site}
}}
""")
    return path


@pytest.fixture
def front(make_daemon: Any, clips_dir: Path, tmp_path: Path) -> Iterator[Front]:
    write_clip(clips_dir, DAY, "Front_job1.mp4", DATA)
    clipd = make_daemon(env={"CLIPD_WEB_ACCEL_REDIRECT": "/_clips/"}).start()
    ngx = tmp_path / "nginx"
    ngx.mkdir()
    port = free_port()
    conf = _config(ngx, port, clipd.port, clips_dir)
    assert NGINX is not None
    check = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(ngx)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(ngx), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        made = Front(port, clipd, clips_dir)
        wait_for(lambda: _answers(made), what="nginx listening")
        yield made
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def _answers(front: Front) -> bool:
    try:
        return front.request("GET", "/health")[0] == 200
    except OSError:
        return False


def test_nginx_sends_the_bytes_with_clipds_headers(front: Front) -> None:
    status, headers, body = front.request("GET", "/api/v1/jobs/job1/download")
    assert status == 200
    assert body == DATA
    assert headers.get_all("ETag") == [f'"{SHA}"']
    assert len(headers.get_all("Repr-Digest")) == 1
    assert headers.get_all("Content-Disposition") == [
        "attachment; filename=\"Front_job1.mp4\"; filename*=UTF-8''Front_job1.mp4"
    ]
    assert headers.get_all("Cache-Control") == ["private, max-age=3600"]
    assert headers["Content-Type"] == "video/mp4"
    assert "X-Accel-Redirect" not in headers


def test_nginx_head_and_ranges(front: Front) -> None:
    status, headers, body = front.request("HEAD", "/api/v1/jobs/job1/download")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(DATA))
    status, headers, body = front.request(
        "GET", "/api/v1/jobs/job1/download", {"Range": "bytes=100-199"}
    )
    assert status == 206 and body == DATA[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"


def test_nginx_if_range_current_is_partial_and_stale_is_whole(front: Front) -> None:
    status, _, body = front.request(
        "GET", "/api/v1/jobs/job1/download", {"Range": "bytes=0-9", "If-Range": f'"{SHA}"'}
    )
    assert (status, body) == (206, DATA[:10])
    status, headers, body = front.request(
        "GET", "/api/v1/jobs/job1/download", {"Range": "bytes=0-9", "If-Range": '"stale"'}
    )
    assert status == 200 and body == DATA
    assert "Content-Range" not in headers


def test_nginx_conditionals_follow_clipds_etag(front: Front) -> None:
    status, headers, body = front.request(
        "GET", "/api/v1/jobs/job1/download", {"If-None-Match": f'"{SHA}"'}
    )
    assert status == 304 and body == b"" and headers["ETag"] == f'"{SHA}"'
    status, _, body = front.request(
        "GET", "/api/v1/jobs/job1/download", {"If-None-Match": '"other"'}
    )
    assert status == 200 and body == DATA
    status, _, body = front.request("GET", "/api/v1/jobs/job1/download", {"If-Match": f'"{SHA}"'})
    assert status == 200 and body == DATA
    status, _, _ = front.request("GET", "/api/v1/jobs/job1/download", {"If-Match": '"other"'})
    assert status == 412


def test_nginx_never_serves_a_tampered_clip(front: Front) -> None:
    path = front.clips_dir / DAY / "Front_job1.mp4"
    st = path.stat()
    data = bytearray(DATA)
    data[5000] ^= 0xFF
    path.write_bytes(bytes(data))
    # The watcher may quarantine the rewritten clip before the mtime is put back.
    with contextlib.suppress(FileNotFoundError):
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    status, headers, body = front.request("GET", "/api/v1/jobs/job1/download")
    # Whichever meets the change first refuses it: the download's own check (409), or
    # the watcher, which quarantines the clip and drops its row (404 afterwards).
    assert status in {404, 409}
    assert b"integrity_mismatch" in body if status == 409 else b"not_found" in body
    assert headers["Content-Type"].startswith("application/json")
    assert bytes(data[:4096]) not in body


def test_internal_location_is_not_reachable_directly(front: Front) -> None:
    status, _, _ = front.request("GET", f"/_clips/{DAY}/Front_job1.mp4")
    assert status == 404
    status, _, _ = front.request("GET", "/_clips/.clipd/index.sqlite3")
    assert status == 404
