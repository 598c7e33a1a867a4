"""The operator commands as a user runs them: ``python -m clipd cleanup|report|monitor``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import clip_bytes, disk_clips, index_rows
from tests.test_cleanup import make_tree


def clipd(clips_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "CLIPS_DIR": str(clips_dir)}
    return subprocess.run(
        [sys.executable, "-m", "clipd", *args], env=env, text=True, capture_output=True, timeout=60
    )


def tree_listing(clips_dir: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(clips_dir)), p.stat().st_mtime_ns)
        for p in clips_dir.rglob("*")
        if ".clipd" not in p.parts
    )


def test_cleanup_dry_run_prints_the_plan_and_changes_nothing(clips_dir: Path) -> None:
    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    before = (tree_listing(clips_dir), index_rows(clips_dir))
    result = clipd(clips_dir, "cleanup", "--dry-run", "--max-age", "24")
    assert result.returncode == 0, result.stderr
    assert "would delete 1 files" in result.stdout
    assert "expired" in result.stdout and "2026-01-01/Clip_old.mp4" in result.stdout
    assert (tree_listing(clips_dir), index_rows(clips_dir)) == before


def test_cleanup_max_age_deletes_expired_and_reports_json(clips_dir: Path) -> None:
    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    result = clipd(clips_dir, "cleanup", "--max-age", "24", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["deleted_files"] == 1 and out["freed_bytes"] == 1000
    assert out["empty_dirs_removed"] == 1
    assert set(disk_clips(clips_dir)) == set(index_rows(clips_dir)) == {"2026-01-02/Clip_new.mp4"}


def test_cleanup_command_imports_neither_asyncio_nor_a_toml_parser(clips_dir: Path) -> None:
    # A cron job's start-up: the daemon's event loop machinery and the config file
    # parser (no --config given) are not loaded at all.
    make_tree(clips_dir, {"old": ("2026-01-01", 30)})
    code = (
        "import sys; from clipd.cli import main; rc = main(['cleanup', '--max-age', '24']);"
        "print(rc, sorted({'asyncio', 'tomllib', 'aiohttp'} & set(sys.modules)))"
    )
    env = {"PATH": os.environ.get("PATH", ""), "CLIPS_DIR": str(clips_dir)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, text=True, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"
    assert index_rows(clips_dir) == {}


def test_cleanup_size_threshold_is_decimal_gb_and_evicts_oldest(clips_dir: Path) -> None:
    make_tree(clips_dir, {"a": ("2026-01-02", 3), "b": ("2026-01-02", 2), "c": ("2026-01-02", 1)})
    result = clipd(clips_dir, "cleanup", "--size-threshold", "0.000002")  # 2000 bytes
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("Cleanup completed: 1 files deleted, 0.0 MB")
    assert set(index_rows(clips_dir)) == {"2026-01-02/Clip_b.mp4", "2026-01-02/Clip_c.mp4"}


def test_cleanup_bad_max_age_exits_78_naming_the_flag(clips_dir: Path) -> None:
    result = clipd(clips_dir, "cleanup", "--max-age", "-3")
    assert result.returncode == 78
    assert "--max-age='-3': must be > 0" in result.stderr


def test_report_json_figures_are_exact(clips_dir: Path) -> None:
    make_tree(
        clips_dir,
        {
            "a": ("2026-01-01", 0.5),
            "b": ("2026-01-01", 3),
            "c": ("2026-01-02", 30),
            "d": ("2026-01-02", 200),
        },
    )
    result = clipd(clips_dir, "report", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["directory"] == str(clips_dir)
    assert out["files"] == 4 and out["total_bytes"] == 4000
    assert out["file_types"] == {".mp4": 4}
    assert out["age_distribution"] == {"0-1h": 1, "1-6h": 1, "6-24h": 0, "1-7d": 1, "7d+": 1}
    assert 0 < out["disk_usage_percent"] < 100
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert out["growth"]["bytes_added"][today] == 4000
    assert out["downloads"]["per_day"] == []


def test_monitor_exit_codes_follow_monitoring_plugins(clips_dir: Path) -> None:
    make_tree(clips_dir, {"a": ("2026-01-01", 1)})
    ok = clipd(clips_dir, "monitor", "--warning", "100", "--critical", "100")
    warning = clipd(clips_dir, "monitor", "--warning", "0", "--critical", "100")
    critical = clipd(clips_dir, "monitor", "--warning", "0", "--critical", "0")
    assert (ok.returncode, warning.returncode, critical.returncode) == (0, 1, 2)
    assert ok.stdout.startswith("CLIPD OK - disk ") and "1 clips" in ok.stdout
    assert "| disk_used_percent=" in ok.stdout and ok.stdout.count("\n") == 1
    assert warning.stdout.startswith("CLIPD WARNING") and critical.stdout.startswith("CLIPD CRIT")


def test_monitor_is_unknown_when_the_tree_cannot_be_read(tmp_path: Path) -> None:
    missing = clipd(tmp_path / "nope", "monitor")
    assert missing.returncode == 3 and missing.stdout.startswith("CLIPD UNKNOWN")
    no_index = clipd(tmp_path, "monitor")
    assert no_index.returncode == 3 and "no index" in no_index.stdout


def test_monitor_bad_usage_is_unknown_not_critical(clips_dir: Path) -> None:
    # For a monitoring plugin exit 2 means CRITICAL: argparse's usage exit must not page.
    bad_value = clipd(clips_dir, "monitor", "--warning", "abc")
    unknown_flag = clipd(clips_dir, "monitor", "--bogus")
    assert (bad_value.returncode, unknown_flag.returncode) == (3, 3)
    assert "--warning: invalid float value: 'abc'" in bad_value.stderr
    assert "unrecognized arguments: --bogus" in unknown_flag.stderr


def test_other_commands_keep_exit_2_for_bad_usage(clips_dir: Path) -> None:
    assert clipd(clips_dir, "report", "--since", "abc").returncode == 2
    assert clipd(clips_dir, "cleanup", "--bogus").returncode == 2


def test_report_warns_when_clips_on_disk_are_not_in_the_index(clips_dir: Path) -> None:
    # A tree the daemon has not indexed yet (first install, daemon stopped): the report
    # counts only indexed clips, so it must not let "Files: 0" pass for the truth.
    now = time.time()
    for i in range(3):
        path = clips_dir / "2026-01-01" / f"Clip_new{i}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(clip_bytes(1000, i))
        os.utime(path, (now, now))
    result = clipd(clips_dir, "report")
    assert result.returncode == 0, result.stderr
    assert "Files: 0\n" in result.stdout
    assert "3 files on disk are not in the index yet" in result.stderr
    assert "not in the index" not in clipd(clips_dir, "report", "--json").stdout


def test_report_in_s3_mode_comes_from_the_bucket_index(clips_dir: Path) -> None:
    # With STORAGE_BACKEND=s3 the local tree holds only .clipd/ (the bucket's index);
    # the report reads it like a local one, with no disk figures (issue 6).
    import shutil

    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    for day in ("2026-01-01", "2026-01-02"):
        shutil.rmtree(clips_dir / day)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CLIPS_DIR": str(clips_dir),
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "clips-bucket",
        "S3_PREFIX": "legacy",
    }

    def report(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "clipd", "report", *extra]
        return subprocess.run(argv, env=env, text=True, capture_output=True, timeout=60)

    as_json = report("--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["directory"] == "s3://clips-bucket/legacy"  # as /api/v1/storage/metrics
    assert (data["files"], data["total_bytes"]) == (2, 2000)
    assert data["disk_usage_percent"] is None
    assert data["age_distribution"]["1-6h"] == 1 and data["age_distribution"]["1-7d"] == 1
    text = report()
    assert text.returncode == 0, text.stderr
    assert "Files: 2\n" in text.stdout and "Disk Usage: n/a (s3)\n" in text.stdout


def test_cleanup_report_is_the_legacy_alias_of_report_and_deletes_nothing(
    clips_dir: Path,
) -> None:
    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    before = (tree_listing(clips_dir), index_rows(clips_dir))
    legacy = clipd(clips_dir, "cleanup", "--report")
    assert legacy.returncode == 0, legacy.stderr
    assert legacy.stdout.startswith("=== STORAGE REPORT ===\n")
    assert "Files: 2\n" in legacy.stdout and "Cleanup completed" not in legacy.stdout
    assert (tree_listing(clips_dir), index_rows(clips_dir)) == before
    as_json = json.loads(clipd(clips_dir, "cleanup", "--report", "--json").stdout)
    assert as_json["files"] == 2 and as_json["total_bytes"] == 2000


def test_cleanup_monitor_is_the_legacy_alias_of_monitor_and_deletes_nothing(
    clips_dir: Path,
) -> None:
    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    before = (tree_listing(clips_dir), index_rows(clips_dir))
    legacy = clipd(clips_dir, "cleanup", "--monitor")
    current = clipd(clips_dir, "monitor")
    assert legacy.returncode == current.returncode
    assert legacy.stdout.startswith("CLIPD ") and "2 clips" in legacy.stdout
    assert legacy.stdout.count("\n") == 1
    assert (tree_listing(clips_dir), index_rows(clips_dir)) == before


def test_cleanup_runs_the_legacy_cron_line_as_written_and_deletes_nothing(
    clips_dir: Path,
) -> None:
    # Issue 5 quotes the legacy cron line; its three read-only flags run in order.
    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    before = (tree_listing(clips_dir), index_rows(clips_dir))
    legacy = clipd(
        clips_dir,
        *("cleanup", "--dry-run", "--max-age", "24", "--size-threshold", "5.0"),
        *("--report", "--monitor"),
    )
    monitor = clipd(clips_dir, "monitor")
    assert legacy.returncode == monitor.returncode, legacy.stderr
    plan, report, *_, status = legacy.stdout.split("\n\n")
    assert plan.startswith("Dry run: would delete 1 files")
    assert "2026-01-01/Clip_old.mp4" in plan
    assert report.startswith("=== STORAGE REPORT ===\nDirectory: ") and "Files: 2\n" in report
    assert status == monitor.stdout
    assert (tree_listing(clips_dir), index_rows(clips_dir)) == before


def test_cleanup_legacy_modes_are_documented_and_one_at_a_time_with_json(
    clips_dir: Path,
) -> None:
    both = clipd(clips_dir, "cleanup", "--report", "--monitor", "--json")
    assert both.returncode == 2 and "--json" in both.stderr
    helptext = " ".join(clipd(clips_dir, "cleanup", "--help").stdout.split())
    assert "--report legacy alias of 'clipd report'" in helptext
    assert "--monitor legacy alias of 'clipd monitor'" in helptext


def test_cleanup_prints_the_legacy_start_and_completed_lines(clips_dir: Path) -> None:
    make_tree(clips_dir, {"old": ("2026-01-01", 30), "new": ("2026-01-02", 1)})
    result = clipd(clips_dir, "cleanup", "--max-age", "24")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Starting cleanup - Current storage: 0.0 GB",
        "Cleanup completed: 1 files deleted, 0.0 MB freed, 1 empty dirs removed",
    ]
