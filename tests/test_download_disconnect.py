"""A client that leaves mid-download costs a closed connection, never an error in the log."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import clip_bytes, wait_for, write_clip

DAY = "2026-11-20"


def test_client_leaving_mid_download_logs_no_error(make_daemon, clips_dir: Path) -> None:
    # Far more than the loopback socket buffers hold: the send is cut short for sure.
    write_clip(clips_dir, DAY, "Big_big1.mp4", clip_bytes(32 * 1024 * 1024, 1))
    daemon = make_daemon().start()
    for _ in range(3):  # the first from the index, the next ones from the record cache
        with socket.create_connection(("127.0.0.1", daemon.port)) as client:
            client.sendall(b"GET /api/v1/jobs/big1/download HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
        # Closed with most of the body unread: the daemon's next write fails.
    # A download is counted when its send ends, here by the broken connection.
    wait_for(
        lambda: daemon.metric('clipd_downloads_total{code="200"}') >= 3,
        what="the three downloads ended",
    )
    assert daemon.get("/health")[0] == 200
    log = daemon.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
