"""clipd migrate's exit code: objects that are not clips by name never fail a run; one
named like a clip but not placed does (real SeaweedFS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import clip_bytes
from tests.s3server import S3Server
from tests.test_migrate import put, run, s3_env  # noqa: F401  (s3_env is a fixture)


def test_a_readme_is_listed_but_the_run_succeeds(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],  # noqa: F811
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("migcli")
    put(s3, bucket, "legacy/2024-05-01/Cat_job1.mp4", clip_bytes(3000, 1))
    put(s3, bucket, "legacy/readme.txt", b"hello")
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}/legacy"], env, capsys)
    assert code == 0, summary
    assert summary["moved"] == 1
    assert [o["key"] for o in summary["not_clip_objects"]] == ["legacy/readme.txt"]
    # A re-run moves nothing and still succeeds.
    code, summary = run(["migrate", "--from", f"s3://{bucket}/legacy"], env, capsys)
    assert (code, summary["moved"]) == (0, 0)


def test_an_object_named_like_a_clip_but_left_behind_fails_the_run(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],  # noqa: F811
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket("migcli2")
    put(s3, bucket, "legacy/2024-05-01/Cat_job1.mp4", clip_bytes(3000, 1))
    put(s3, bucket, "legacy/2024-05-01/Junk_job2.mp4", b"not a video at all" * 10)
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}

    code, summary = run(["migrate", "--from", f"s3://{bucket}/legacy"], env, capsys)
    assert code == 1, summary
    assert [o["key"] for o in summary["not_clip_objects"]] == ["legacy/2024-05-01/Junk_job2.mp4"]


def test_verify_migration_lists_junk_as_not_a_clip_not_as_missing(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],  # noqa: F811
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # migrate never places an object whose bytes are not a clip; calling it "missing"
    # made verify-migration fail forever, and no re-run of migrate could mend that.
    s3 = s3_server.client()
    bucket = make_bucket("migcli3")
    put(s3, bucket, "legacy/2024-05-01/Cat_job1.mp4", clip_bytes(3000, 1))
    put(s3, bucket, "legacy/2024-05-01/Junk_job2.mp4", b"not a video at all" * 10)
    put(s3, bucket, "legacy/2024-05-01/Lost_job3.mp4", clip_bytes(3000, 3))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir)}
    assert run(["migrate", "--from", f"s3://{bucket}/legacy"], env, capsys)[0] == 1

    code, report = run(["verify-migration", "--from", f"s3://{bucket}/legacy"], env, capsys)
    assert (code, report["matching"], report["missing"]) == (0, 2, []), report
    assert [(e["job_id"], e["key"]) for e in report["not_clips"]] == [
        ("job2", "legacy/2024-05-01/Junk_job2.mp4")
    ]
    assert "container signature" in report["not_clips"][0]["detail"]
    # A real clip gone from the tree is still missing.
    (clips_dir / "2024-05-01" / "Lost_job3.mp4").unlink()
    code, report = run(["verify-migration", "--from", f"s3://{bucket}/legacy"], env, capsys)
    assert code == 1 and [e["job_id"] for e in report["missing"]] == ["job3"], report


def test_migrate_and_verify_take_the_legacy_s3_bucket_when_from_is_left_out(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    s3_env: dict[str, str],  # noqa: F811
    clips_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The legacy guide runs `migrate_s3_to_local.py` / `verify_migration.py` with no
    # arguments: the bucket comes from S3_BUCKET ("for migration only").
    s3 = s3_server.client()
    bucket = make_bucket("miglegacy")
    put(s3, bucket, "legacy/2024-05-01/Cat_job1.mp4", clip_bytes(3000, 1))
    put(s3, bucket, "elsewhere/2024-05-01/Dog_job2.mp4", clip_bytes(3000, 2))
    env = {**s3_env, "CLIPS_DIR": str(clips_dir), "S3_BUCKET": bucket, "S3_PREFIX": "legacy"}

    code, summary = run(["migrate"], env, capsys)
    assert (code, summary["moved"]) == (0, 1), summary
    assert (clips_dir / "2024-05-01" / "Cat_job1.mp4").exists()
    code, report = run(["verify-migration"], env, capsys)
    assert (code, report["matching"]) == (0, 1), report
    # --from still wins over the environment.
    code, summary = run(["migrate", "--from", f"s3://{bucket}/elsewhere"], env, capsys)
    assert (code, summary["moved"]) == (0, 1), summary
    # restore reads the backup bucket the daemon writes to.
    restored = clips_dir.parent / "restored"
    restored.mkdir()
    backup = {**s3_env, "CLIPS_DIR": str(restored), "CLIPD_BACKUP_S3_BUCKET": bucket}
    code, summary = run(["restore"], {**backup, "CLIPD_BACKUP_PREFIX": "elsewhere"}, capsys)
    assert (code, summary["moved"]) == (0, 1), summary
    assert (restored / "2024-05-01" / "Dog_job2.mp4").exists()


def test_migrate_without_from_or_s3_bucket_is_a_usage_error(
    clips_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipd.cli import main

    assert main(["migrate"], {"CLIPS_DIR": str(clips_dir)}) == 2
    assert "--from s3://BUCKET[/PREFIX]" in capsys.readouterr().err
