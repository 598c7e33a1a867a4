"""S3 faults during ``clipd migrate`` and the backup service: retried, reported, nothing
unverified placed.

The store is moto in server mode behind :class:`FaultProxy` (tests/reliability/s3faults.py),
which throttles (503 SlowDown), fails (500 InternalError), resets connections and cuts
bodies short while keeping Content-Length, per key and per attempt. A SeaweedFS restart
under a running backup daemon is the one fault the real server gives on demand.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from clipd.cli import main
from tests.helpers import DaemonProcess, clip_bytes, disk_clips, index_rows, wait_for, write_clip
from tests.reliability.conftest import report_figures, temp_files
from tests.reliability.s3faults import Fault, FaultProxy, Rule, moto_endpoint
from tests.s3server import S3Server

MIB = 1024 * 1024
_KEY_ID, _SECRET = "clipd-faults", "clipd-faults-secret"


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, int]]:
    with moto_endpoint() as address:
        yield address


@pytest.fixture
def proxy(moto: tuple[str, int]) -> Iterator[FaultProxy]:
    faults = FaultProxy(*moto).start()
    try:
        yield faults
    finally:
        faults.stop()


def _client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=_KEY_ID,
        aws_secret_access_key=_SECRET,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


@pytest.fixture
def store(moto: tuple[str, int]) -> Any:
    """A client talking to moto directly (no faults): to set up and to check."""
    return _client(f"http://{moto[0]}:{moto[1]}")


def _bucket(store: Any, name: str) -> str:
    bucket = f"{name}-{uuid.uuid4().hex[:12]}"
    store.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def env(proxy: FaultProxy, clips_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "AWS_ACCESS_KEY_ID": _KEY_ID,
        "AWS_SECRET_ACCESS_KEY": _SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": proxy.url,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)  # boto3 reads credentials from the process env
    return {**values, "CLIPS_DIR": str(clips_dir)}


def _migrate(
    bucket: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = main(["migrate", "--from", f"s3://{bucket}", "--concurrency", "4", "--json"], env)
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{") :])


def _put_clips(
    store: Any, bucket: str, names: list[str], with_sha: bool = True
) -> dict[str, bytes]:
    """One clip object per name under 2024-10-01/; every other one without a SHA-256."""
    objects = {}
    for n, name in enumerate(names):
        data = clip_bytes(200_000 + n * 1000, n)
        key = f"2024-10-01/{name}.mp4"
        meta = {"sha256": hashlib.sha256(data).hexdigest()} if with_sha and n % 2 == 0 else {}
        store.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta)
        objects[key] = data
    return objects


def _assert_tree_holds_only(clips_dir: Path, objects: dict[str, bytes]) -> None:
    """Every clip in the tree is the object's bytes, indexed with their hash; no temp file."""
    on_disk = {
        p.relative_to(clips_dir).as_posix(): p.read_bytes() for p in clips_dir.glob("*/*.mp4")
    }
    assert on_disk == objects
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert temp_files(clips_dir) == []


def test_migrate_retries_throttling_errors_resets_and_cut_bodies_then_moves_every_clip(
    proxy: FaultProxy,
    store: Any,
    env: dict[str, str],
    clips_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = _bucket(store, "mig-retry")
    objects = _put_clips(
        store,
        bucket,
        [f"Slow_s{n}" for n in range(3)]
        + [f"Err_i{n}" for n in range(3)]
        + [f"Reset_r{n}" for n in range(3)]
        + [f"Cut_t{n}" for n in range(3)],
    )
    # A multipart object without a stored SHA-256: verified by its ETag, which needs
    # HeadObject(PartNumber=1) for the part size; that HEAD is throttled too.
    big = clip_bytes(11 * MIB, 99)
    (tmp_path / "big.mp4").write_bytes(big)
    store.upload_file(
        str(tmp_path / "big.mp4"),
        bucket,
        "2024-10-02/Big_m1.mp4",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    objects["2024-10-02/Big_m1.mp4"] = big
    proxy.set_rules(
        Rule(Fault.SLOWDOWN, "GET", times=2, query_contains="list-type"),  # boto3 retries
        Rule(Fault.SLOWDOWN, "GET", "_s", times=2),
        Rule(Fault.INTERNAL, "GET", "_i", times=1),
        Rule(Fault.RESET, "GET", "_r", times=1),
        Rule(Fault.TRUNCATE, "GET", "_t", times=2),
        Rule(Fault.TRUNCATE, "GET", "Big_m1", times=1),
        Rule(Fault.SLOWDOWN, "HEAD", "Big_m1", times=2),
    )

    code, summary = _migrate(bucket, env, capsys)

    assert (code, summary["moved"], summary["failed"]) == (0, 13, 0), summary["failures"]
    _assert_tree_holds_only(clips_dir, objects)
    assert proxy.injected == {"slowdown": 2 + 6 + 2, "internal": 3, "reset": 3, "truncate": 7}
    report_figures(
        tmp_path,
        "s3_faults_migrate_retry",
        {"objects": 13, "requests": proxy.requests, **proxy.injected},
    )


def test_migrate_lists_objects_that_keep_failing_places_none_and_a_rerun_completes(
    proxy: FaultProxy,
    store: Any,
    env: dict[str, str],
    clips_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = _bucket(store, "mig-fail")
    objects = _put_clips(
        store, bucket, ["Good_g1", "Good_g2", "Slow_s1", "Err_i1", "Reset_r1", "Cut_t1", "Cut_t2"]
    )
    failing = {
        "2024-10-01/Slow_s1.mp4",
        "2024-10-01/Err_i1.mp4",
        "2024-10-01/Reset_r1.mp4",
        "2024-10-01/Cut_t1.mp4",
        "2024-10-01/Cut_t2.mp4",
    }
    proxy.set_rules(
        Rule(Fault.SLOWDOWN, "GET", "_s1", times=None),
        Rule(Fault.INTERNAL, "GET", "_i1", times=None),
        Rule(Fault.RESET, "GET", "_r1", times=None),
        Rule(Fault.TRUNCATE, "GET", "_t", times=None),
    )

    code, summary = _migrate(bucket, env, capsys)

    assert code == 1
    assert (summary["moved"], summary["failed"]) == (2, 5)
    assert {f["key"] for f in summary["failures"]} == failing
    assert all(f["reason"] for f in summary["failures"])
    _assert_tree_holds_only(clips_dir, {k: v for k, v in objects.items() if k not in failing})
    attempts = dict(proxy.injected)

    proxy.set_rules()
    code, summary = _migrate(bucket, env, capsys)

    assert (code, summary["moved"], summary["skipped"], summary["failed"]) == (0, 5, 2, 0)
    _assert_tree_holds_only(clips_dir, objects)
    report_figures(tmp_path, "s3_faults_migrate_persistent", {"objects": 7, **attempts})


def _backup_env(proxy: FaultProxy, bucket: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": _KEY_ID,
        "AWS_SECRET_ACCESS_KEY": _SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": proxy.url,
        "CLIPD_BACKUP_S3_BUCKET": bucket,
        "CLIPD_BACKUP_PREFIX": "bk",
    }


def _assert_backed_up(store: Any, bucket: str, written: dict[str, bytes]) -> None:
    """The bucket holds exactly the clips, each with its bytes and SHA-256 metadata."""
    listed = store.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == sorted(f"bk/{r}" for r in written)
    for relpath, data in written.items():
        got = store.get_object(Bucket=bucket, Key=f"bk/{relpath}")
        assert got["Body"].read() == data, relpath
        assert got["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()


def _write_clips(clips_dir: Path, names: list[str]) -> dict[str, bytes]:
    written = {}
    for n, name in enumerate(names):
        data = clip_bytes(150_000 + n, n)
        write_clip(clips_dir, "2024-10-03", f"{name}.mp4", data)
        written[f"2024-10-03/{name}.mp4"] = data
    return written


def test_backup_rides_out_throttling_errors_and_resets_and_every_copy_matches(
    proxy: FaultProxy,
    store: Any,
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
    tmp_path: Path,
) -> None:
    bucket = _bucket(store, "bk-retry")
    proxy.set_rules(
        Rule(Fault.SLOWDOWN, "PUT", "_s", times=2),
        Rule(Fault.INTERNAL, "PUT", "_i", times=1),
        Rule(Fault.RESET, "PUT", "_r", times=2),
    )
    written = _write_clips(
        clips_dir, ["Slow_s1", "Slow_s2", "Err_i1", "Err_i2", "Reset_r1", "Reset_r2"]
    )
    daemon = make_daemon(env=_backup_env(proxy, bucket)).start()

    wait_for(
        lambda: daemon.metric("clipd_backup_uploaded_files_total") == 6, 60, "every clip backed up"
    )

    assert daemon.metric("clipd_backup_backlog_files") == 0
    _assert_backed_up(store, bucket, written)
    assert proxy.injected == {"slowdown": 4, "internal": 2, "reset": 4}
    report_figures(
        tmp_path,
        "s3_faults_backup_retry",
        {
            "clips": 6,
            "failures_total": daemon.metric("clipd_backup_failures_total"),
            **proxy.injected,
        },
    )
    daemon.stop()


@pytest.mark.slow  # botocore retries a throttled PUT for ~20 s before clipd counts it
def test_backup_counts_failures_through_an_outage_and_drains_the_backlog_after_it(
    proxy: FaultProxy,
    store: Any,
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
    tmp_path: Path,
) -> None:
    bucket = _bucket(store, "bk-outage")
    proxy.set_rules(
        Rule(Fault.SLOWDOWN, "PUT", "", times=None), Rule(Fault.RESET, "POST", "", times=None)
    )
    written = _write_clips(clips_dir, [f"Clip_o{n}" for n in range(4)])
    daemon = make_daemon(env=_backup_env(proxy, bucket)).start()

    wait_for(
        lambda: daemon.metric("clipd_backup_failures_total") >= 4,
        60,
        "every upload failing while the store throttles",
    )
    assert daemon.metric("clipd_backup_backlog_files") == 4
    assert "backup of 2024-10-03/Clip_o" in daemon.log()
    assert store.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    proxy.set_rules()

    wait_for(lambda: daemon.metric("clipd_backup_backlog_files") == 0, 60, "the backlog drained")
    _assert_backed_up(store, bucket, written)
    report_figures(
        tmp_path,
        "s3_faults_backup_outage",
        {
            "clips": 4,
            "failures_total": daemon.metric("clipd_backup_failures_total"),
            **proxy.injected,
        },
    )
    daemon.stop()


@pytest.mark.slow
def test_backup_resumes_after_seaweedfs_restarts_under_a_running_daemon(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
) -> None:
    # test_backup.py starts the daemon with the store already down; here the daemon has
    # live (pooled) connections when the store goes away and comes back.
    bucket = make_bucket("restart")
    env = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "CLIPD_BACKUP_S3_BUCKET": bucket,
        "CLIPD_BACKUP_PREFIX": "bk",
    }
    daemon = make_daemon(env=env).start()
    first = _write_clips(clips_dir, ["Before_b1", "Before_b2"])
    wait_for(
        lambda: daemon.metric("clipd_backup_uploaded_files_total") == 2,
        30,
        "the first clips backed up",
    )
    s3_server.stop()
    try:
        second = {}
        for n in range(3):
            data = clip_bytes(120_000 + n, 10 + n)
            write_clip(clips_dir, "2024-10-04", f"During_d{n}.mp4", data)
            second[f"2024-10-04/During_d{n}.mp4"] = data
        wait_for(
            lambda: daemon.metric("clipd_backup_failures_total") >= 1,
            60,
            "an upload failing while SeaweedFS is down",
        )
        assert daemon.metric("clipd_backup_backlog_files") == 3
    finally:
        s3_server.start()

    wait_for(lambda: daemon.metric("clipd_backup_backlog_files") == 0, 60, "the backlog drained")
    _assert_backed_up(s3_server.client(), bucket, {**first, **second})
    daemon.stop()
