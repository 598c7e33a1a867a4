"""Backup to S3: each clip copied with its SHA-256, backlog drains after an outage."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from clipd.backup import backoff_s
from tests.helpers import DaemonProcess, clip_bytes, running, wait_for, write_clip
from tests.s3server import S3Server


def test_backoff_doubles_up_to_five_minutes() -> None:
    assert [backoff_s(n) for n in (0, 1, 2, 3)] == [0.0, 1.0, 2.0, 4.0]
    assert backoff_s(50) == 300.0


def _env(s3_server: S3Server, bucket: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "CLIPD_BACKUP_S3_BUCKET": bucket,
        "CLIPD_BACKUP_PREFIX": "bk",
    }


def test_backup_copies_new_clips_with_sha256_metadata(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
) -> None:
    bucket = make_bucket("bk")
    data = clip_bytes(30_000, 4)
    with running(make_daemon(env=_env(s3_server, bucket))) as daemon:
        write_clip(clips_dir, "2024-01-02", "Clip_b1.mp4", data)
        wait_for(
            lambda: daemon.metric("clipd_backup_uploaded_files_total") >= 1,
            20,
            "the clip backed up",
        )
        assert daemon.metric("clipd_backup_backlog_files") == 0
    head = s3_server.client().head_object(Bucket=bucket, Key="bk/2024-01-02/Clip_b1.mp4")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_backup_backlog_drains_after_an_outage(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
) -> None:
    bucket = make_bucket("outage")
    for n in range(3):
        write_clip(clips_dir, "2024-01-03", f"Clip_o{n}.mp4", clip_bytes(10_000, n))
    s3_server.stop()
    try:
        daemon = make_daemon(env=_env(s3_server, bucket)).start()
        wait_for(
            lambda: daemon.metric("clipd_backup_failures_total") >= 1,
            60,
            "an upload failing while S3 is down",
        )
        assert daemon.metric("clipd_backup_backlog_files") == 3
    finally:
        s3_server.start()
    wait_for(lambda: daemon.metric("clipd_backup_backlog_files") == 0, 60, "the backlog drained")
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"bk/2024-01-03/Clip_o{n}.mp4" for n in range(3)}
    daemon.stop()
