"""clipd migrate / verify-migration / s3-lifecycle against a real SeaweedFS."""

from __future__ import annotations

import datetime
import gc
import json
import os
import types
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.utils import parse_timestamp

from clipd import migrate
from clipd.cli import main
from clipd.migrate import plan_migration
from clipd.migrate_fetch import Fetcher, Status
from clipd.storage import s3 as s3mod
from clipd.storage.s3 import ObjectInfo, Presigner, list_objects
from tests.helpers import clip_bytes, disk_clips, index_rows
from tests.s3server import S3Server

MIB = 1024 * 1024
EXT = frozenset({".mp4", ".webm"})


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_DEFAULT_REGION": s3_server.region,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # boto3 reads credentials from the process env
    return env


def run(
    args: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, Any]:
    code = main([*args, "--json"], env)
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{") :])


def put(s3: Any, bucket: str, key: str, data: bytes, **extra: Any) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)


def test_plan_keeps_day_layout_and_dates_other_keys_by_last_modified() -> None:
    listed = [
        ObjectInfo("p/2024-03-01/Good_a1.mp4", "2024-03-01/Good_a1.mp4", 10, 0.0, "x"),
        ObjectInfo("p/loose/My Clip!_b2.MP4", "loose/My Clip!_b2.MP4", 10, 86400.0 * 2, "x"),
        ObjectInfo("p/notes.txt", "notes.txt", 10, 0.0, "x"),
        ObjectInfo("p/NoJobId.mp4", "NoJobId.mp4", 10, 0.0, "x"),
        ObjectInfo("p/2024-03-01/Empty_c3.mp4", "2024-03-01/Empty_c3.mp4", 0, 0.0, "x"),
        ObjectInfo("p/2024-03-02/Dup_a1.mp4", "2024-03-02/Dup_a1.mp4", 10, 0.0, "x"),
    ]
    plan = plan_migration(listed, "p/", EXT, 10**9)
    assert [i.plan.local_relpath for i in plan.items] == [
        "2024-03-01/Good_a1.mp4",
        "1970-01-03/My_Clip_b2.MP4",
    ]
    reasons = dict(plan.not_clips)
    assert set(reasons) == {
        "p/notes.txt",
        "p/NoJobId.mp4",
        "p/2024-03-01/Empty_c3.mp4",
        "p/2024-03-02/Dup_a1.mp4",
    }
    assert "already taken" in reasons["p/2024-03-02/Dup_a1.mp4"]


def test_migrate_moves_clips_verified_and_lists_non_clips(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("mig")
    good = clip_bytes(300_000, 1)
    put(s3, bucket, "legacy/2024-05-01/Cat_video_job-1.mp4", good)
    put(s3, bucket, "legacy/odd folder/Ünïcode + space_job2.mp4", clip_bytes(1000, 2))
    put(
        s3,
        bucket,
        "legacy/2024-05-01/Meta_job3.mp4",
        clip_bytes(5000, 3),
        Metadata={"sha256": __import__("hashlib").sha256(clip_bytes(5000, 3)).hexdigest()},
    )
    put(s3, bucket, "legacy/readme.txt", b"hello")
    put(s3, bucket, "legacy/2024-05-01/Fake_job4.mp4", b"not a video at all" * 10)
    big = clip_bytes(12 * MIB, 5)
    (clips_dir.parent / "big.mp4").write_bytes(big)
    s3.upload_file(
        str(clips_dir.parent / "big.mp4"),
        bucket,
        "legacy/2024-05-02/Big_job5.mp4",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}/legacy"], env, capsys)

    assert code == 1  # non-clips were skipped
    assert summary["moved"] == 4 and summary["failed"] == 0
    assert {o["key"] for o in summary["not_clip_objects"]} == {
        "legacy/readme.txt",
        "legacy/2024-05-01/Fake_job4.mp4",
    }
    assert (clips_dir / "2024-05-01/Cat_video_job-1.mp4").read_bytes() == good
    assert (clips_dir / "2024-05-02/Big_job5.mp4").read_bytes() == big
    assert not (clips_dir / "2024-05-01/Fake_job4.mp4").exists()
    assert index_rows(clips_dir) == disk_clips(clips_dir)  # the download's SHA-256, no rehash
    assert len(disk_clips(clips_dir)) == 4
    assert not list(clips_dir.rglob("*.tmp"))


def test_migrate_rerun_moves_nothing_and_leaves_files_untouched(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("idem")
    for n in range(5):
        put(s3, bucket, f"2024-06-0{n + 1}/Clip_j{n}.mp4", clip_bytes(20_000 + n, n))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}
    assert run(["migrate", "--from", f"s3://{bucket}"], env, capsys)[0] == 0
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in clips_dir.rglob("*.mp4")}

    code, summary = run(["migrate", "--from", f"s3://{bucket}"], env, capsys)

    assert code == 0 and summary["moved"] == 0 and summary["skipped"] == 5
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in clips_dir.rglob("*.mp4")}
    assert after == before


def test_migrate_finishes_after_an_interrupted_run(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("resume")
    data = clip_bytes(50_000, 9)
    put(s3, bucket, "2024-07-01/Clip_r1.mp4", data)
    # What kill -9 mid-download leaves: a partial hidden temp file and no clip.
    (clips_dir / "2024-07-01").mkdir()
    (clips_dir / "2024-07-01/.Clip_r1.mp4.migrate.tmp").write_bytes(data[:1000])
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}"], env, capsys)

    assert code == 0 and summary["moved"] == 1
    assert (clips_dir / "2024-07-01/Clip_r1.mp4").read_bytes() == data
    assert not list(clips_dir.rglob("*.tmp"))


def test_verify_migration_finds_damaged_missing_and_extra_clips(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("verify")
    for n in range(3):
        put(s3, bucket, f"2024-08-01/Clip_v{n}.mp4", clip_bytes(40_000, n))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}
    assert run(["migrate", "--from", f"s3://{bucket}"], env, capsys)[0] == 0
    assert run(["verify-migration", "--from", f"s3://{bucket}"], env, capsys)[0] == 0
    damaged = clips_dir / "2024-08-01/Clip_v1.mp4"
    raw = bytearray(damaged.read_bytes())
    raw[30_000] ^= 0xFF  # same size, one flipped byte
    damaged.write_bytes(bytes(raw))
    os.unlink(clips_dir / "2024-08-01/Clip_v2.mp4")
    (clips_dir / "2024-08-01/Stray_x9.mp4").write_bytes(clip_bytes(100, 7))

    code, report = run(["verify-migration", "--from", f"s3://{bucket}"], env, capsys)

    assert code == 1
    assert [e["job_id"] for e in report["different"]] == ["v1"]
    assert [e["job_id"] for e in report["missing"]] == ["v2"]
    assert [e["job_id"] for e in report["extra"]] == ["x9"]


def test_migrate_refuses_to_overwrite_a_different_local_copy(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("conflict")
    put(s3, bucket, "2024-09-01/Clip_c1.mp4", clip_bytes(1000, 1))
    (clips_dir / "2024-09-01").mkdir()
    (clips_dir / "2024-09-01/Clip_c1.mp4").write_bytes(clip_bytes(1000, 2))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}"], env, capsys)

    assert code == 1 and summary["failed"] == 1
    assert (clips_dir / "2024-09-01/Clip_c1.mp4").read_bytes() == clip_bytes(1000, 2)


def test_s3_lifecycle_rounds_max_age_up_to_days_and_applies_it(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = make_bucket("life")
    env = {
        **s3_env,
        "CLIPS_DIR": str(clips_dir),
        "S3_BUCKET": bucket,
        "S3_PREFIX": "clips",
        "CLIPD_RETENTION_MAX_AGE_HOURS": "30",
    }

    assert main(["s3-lifecycle", "--apply"], env) == 0

    rules = s3_server.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules[0]["Expiration"]["Days"] == 2
    assert rules[0]["Filter"]["Prefix"] == "clips/"


def test_fetch_reconnects_after_the_server_dropped_its_idle_connection(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("keepalive")
    data = [clip_bytes(10_000 + n, n) for n in range(2)]
    for n, body in enumerate(data):
        put(s3, bucket, f"2024-10-01/Clip_k{n}.mp4", body)
    items = plan_migration(list(list_objects(s3, bucket, "")), "", EXT, 10**9).items
    (clips_dir / "2024-10-01").mkdir()
    fetcher = Fetcher(s3, bucket, clips_dir, {})
    try:
        first = fetcher.fetch(items[0], present=False)
        s3_server.restart()  # the keep-alive connection of this thread is now dead
        second = fetcher.fetch(items[1], present=False)
    finally:
        fetcher.close()

    assert [first.status, second.status] == [Status.MOVED, Status.MOVED]
    assert [r.tmp.read_bytes() for r in (first, second) if r.tmp] == data


@pytest.mark.parametrize("token", [None, "session/token+with=odd chars"])
def test_presigner_signs_urls_exactly_as_boto3_does(
    token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="eu-west-3",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret/key+x",
        aws_session_token=token,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    presigner = Presigner(client, "bucket", 600)
    assert not presigner.fallback
    # One clock for both signers, so the URLs must be equal to the last byte.
    frozen = datetime.datetime(2026, 11, 30, 12, 34, 56)
    if hasattr(botocore.auth, "get_current_datetime"):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: frozen)
    else:  # older botocore reads datetime.datetime.utcnow() in botocore.auth
        clock = types.ModuleType("datetime")
        clock.__dict__.update(datetime.__dict__)
        clock.datetime = type(
            "Frozen", (datetime.datetime,), {"utcnow": staticmethod(lambda: frozen)}
        )  # type: ignore[attr-defined]
        monkeypatch.setattr(botocore.auth, "datetime", clock)
    for key in ("2024-01-01/Clip_a1.mp4", "odd folder/Ünïcode + space~%_b2.mp4", "a//b?c#d_c3.mp4"):
        theirs = client.generate_presigned_url(
            "get_object", Params={"Bucket": "bucket", "Key": key}, ExpiresIn=600
        )
        assert "X-Amz-Date=20261130T123456Z" in theirs
        assert presigner.url(key) == theirs


def test_presigned_urls_fetch_odd_keys_from_the_store(
    s3_server: S3Server, make_bucket: Callable[..., str], s3_env: dict[str, str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("sign")
    keys = ["2024-01-01/Clip_a1.mp4", "odd folder/Ünïcode + space~%_b2.mp4"]
    for n, key in enumerate(keys):
        put(s3, bucket, key, clip_bytes(1000 + n, n))
    presigner = Presigner(s3, bucket, 600)
    assert not presigner.fallback
    for n, key in enumerate(keys):
        with urllib.request.urlopen(presigner.url(key), timeout=30) as response:
            assert response.read() == clip_bytes(1000 + n, n)


def test_migrate_fetches_page_by_page_and_the_first_key_keeps_a_job_id(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrate, "_FIRST_PAGE_KEYS", 2)
    monkeypatch.setattr(migrate, "list_pages", _small_pages(migrate.list_pages))
    s3 = s3_server.client()
    bucket = make_bucket("pages")
    bodies = {f"2024-08-0{n}/Clip_p{n}.mp4": clip_bytes(2000 + 500 * n, n) for n in range(1, 7)}
    bodies["2024-08-09/Dup_p1.mp4"] = clip_bytes(3000, 99)  # job id p1 again, listed later
    for key, body in bodies.items():
        put(s3, bucket, key, body)
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}"], env, capsys)

    assert code == 1 and summary["moved"] == 6 and summary["failed"] == 0
    assert [o["key"] for o in summary["not_clip_objects"]] == ["2024-08-09/Dup_p1.mp4"]
    for key, body in bodies.items():
        if not key.startswith("2024-08-09"):
            assert (clips_dir / key).read_bytes() == body
    assert index_rows(clips_dir) == disk_clips(clips_dir)


def _small_pages(list_pages: Callable[..., Any]) -> Callable[..., Any]:
    """list_pages with pages of at most 3 keys after the first (SeaweedFS honours MaxKeys)."""

    def pages(client: Any, bucket: str, prefix: str, first_page: int | None = None) -> Any:
        seen: list[Any] = []
        for page in list_pages(client, bucket, prefix, first_page=first_page):
            for start in range(0, len(page), 3):
                seen.append(page[start : start + 3])
                yield page[start : start + 3]
        assert len(seen) >= 3

    return pages


def test_migrate_dry_run_lists_what_would_move_and_writes_nothing(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("dry")
    put(s3, bucket, "2024-09-01/Clip_d1.mp4", clip_bytes(4000, 1))
    put(s3, bucket, "2024-09-02/Clip_d2.mp4", clip_bytes(4000, 2))
    (clips_dir / "2024-09-01").mkdir()
    (clips_dir / "2024-09-01/Clip_d1.mp4").write_bytes(clip_bytes(4000, 1))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code = main(["migrate", "--from", f"s3://{bucket}", "--dry-run"], env)

    out = capsys.readouterr().out
    assert code == 0
    assert "present: 2024-09-01/Clip_d1.mp4 -> 2024-09-01/Clip_d1.mp4" in out
    assert "would move: 2024-09-02/Clip_d2.mp4 -> 2024-09-02/Clip_d2.mp4" in out
    assert not (clips_dir / "2024-09-02").exists()
    assert not (clips_dir / ".clipd" / "index.sqlite3").exists()


def test_migrate_over_plain_http_never_reads_the_ca_bundle(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The TLS context (and its CA bundle) is built only for an https:// endpoint, as
    # botocore does: an http:// store does not pay for loading certificates.
    assert s3_server.endpoint_url.startswith("http://")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(clips_dir.parent / "no-such-bundle.pem"))
    s3 = s3_server.client()
    bucket = make_bucket("plain")
    data = clip_bytes(9000, 4)
    put(s3, bucket, "2024-10-01/Clip_h1.mp4", data)
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}"], env, capsys)

    assert code == 0 and summary["moved"] == 1
    assert (clips_dir / "2024-10-01/Clip_h1.mp4").read_bytes() == data


@pytest.mark.parametrize("enabled", [True, False])
def test_migrate_leaves_the_garbage_collector_as_it_found_it(
    enabled: bool,
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("gc")
    put(s3, bucket, "2024-10-02/Clip_g1.mp4", clip_bytes(3000, 5))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}
    was_enabled = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        code, summary = run(["migrate", "--from", f"s3://{bucket}"], env, capsys)
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0  # start-up objects set aside only for the run
    finally:
        (gc.enable if was_enabled else gc.disable)()
    assert code == 0 and summary["moved"] == 1


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T13:29:09.000Z",
        "2026-11-30T13:29:09+02:00",
        "Mon, 30 Nov 2026 13:29:09 GMT",
        "1700000000",
        1700000000,
        "2026-11-30T13:29:09",
    ],
)
def test_listing_timestamps_parse_as_botocore_parses_them(value: Any) -> None:
    ours, theirs = s3mod._parse_timestamp(value), parse_timestamp(value)
    assert ours == theirs and (ours.tzinfo is None) == (theirs.tzinfo is None)
