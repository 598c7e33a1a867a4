"""Retention never evicts a clip while it is being downloaded."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.helpers import clip_bytes, index_rows, wait_for, write_clip

DAY = "2026-11-20"


def test_clip_being_downloaded_is_evicted_only_after_the_download(
    make_daemon, clips_dir: Path, tmp_path: Path
) -> None:
    big = write_clip(clips_dir, DAY, "Big_big1.mp4", clip_bytes(64 * 1024 * 1024, 1))
    small = write_clip(clips_dir, DAY, "Small_small1.mp4", clip_bytes(10_000, 2))
    config = tmp_path / "clipd.toml"
    config.write_text("[retention]\nprotect_recent_minutes = 0\ninterval_seconds = 0.2\n")
    daemon = make_daemon(args=["--config", str(config)]).start()
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", daemon.port))
    try:
        reader.sendall(b"GET /api/v1/jobs/big1/download HTTP/1.1\r\nHost: x\r\n\r\n")
        # The first bytes prove the download started; the reader then stops reading,
        # so the 64 MiB body stays in flight.
        assert reader.recv(1024).startswith(b"HTTP/1.1 200")
        config.write_text(
            "[retention]\nprotect_recent_minutes = 0\ninterval_seconds = 0.2\n"
            "max_size_gb = 0.000001\n"
        )
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not small.exists(), what="the idle clip evicted")
        assert big.exists()
        assert f"{DAY}/Big_big1.mp4" in index_rows(clips_dir)
    finally:
        reader.close()
    # Removal unlinks the file before it drops the row (crash-safe order): wait for both.
    wait_for(
        lambda: not big.exists() and index_rows(clips_dir) == {},
        what="the clip evicted once its download ended",
    )
