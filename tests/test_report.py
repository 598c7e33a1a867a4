"""Report figures: pure summaries over rows."""

from __future__ import annotations

from clipd.record import Totals
from clipd.report import age_distribution, build_report, downloads_summary, growth_trend
from clipd.retention import Usage
from tests.test_retention import NOW, H, rec


def test_age_distribution_puts_each_clip_in_its_bucket() -> None:
    ages = [0, 59 * 60, 1 * H, 5 * H, 6 * H, 23 * H, 24 * H, 6 * 24 * H, 7 * 24 * H, 90 * 24 * H]
    records = [rec(f"j{i}", age) for i, age in enumerate(ages)]
    assert age_distribution(records, NOW) == {
        "0-1h": 2,
        "1-6h": 2,
        "6-24h": 2,
        "1-7d": 2,
        "7d+": 2,
    }


def test_downloads_summary_totals_days_and_ranks_clips() -> None:
    rows = [
        ("2027-01-14", "a", 2, 200),
        ("2027-01-14", "b", 5, 50),
        ("2027-01-15", "a", 4, 400),
        ("2027-01-15", "c", 1, 10),
    ]
    summary = downloads_summary(rows, top=2)
    assert summary["per_day"] == [
        {"day": "2027-01-14", "count": 7, "bytes": 250},
        {"day": "2027-01-15", "count": 5, "bytes": 410},
    ]
    assert summary["top"] == [
        {"job_id": "a", "count": 6, "bytes": 600},
        {"job_id": "b", "count": 5, "bytes": 50},
    ]


def test_growth_trend_averages_seven_days_and_projects_days_until_full() -> None:
    added = {
        "2027-01-09": Totals(1, 10_000),
        "2027-01-10": Totals(1, 7000),
        "2027-01-15": Totals(2, 7000),
    }
    growth = growth_trend(added, "2027-01-15", free_bytes=14_000)
    assert list(growth.bytes_added) == [f"2027-01-{d:02d}" for d in range(9, 16)]
    assert growth.bytes_per_day == 24_000 / 7
    assert growth.days_until_full == 14_000 / (24_000 / 7)


def test_growth_trend_without_growth_never_fills() -> None:
    assert growth_trend({}, "2027-01-15", free_bytes=10).days_until_full is None


def test_build_report_keeps_the_legacy_keys() -> None:
    records = [rec("a", 30 * 60, 1000), rec("b", 2 * H, 500)]
    report = build_report("/clips", records, Usage(1000, 250, 750), NOW, [], {}, 7)
    assert {
        k: report[k]
        for k in ("directory", "files", "total_bytes", "disk_usage_percent", "file_types")
    } == {
        "directory": "/clips",
        "files": 2,
        "total_bytes": 1500,
        "disk_usage_percent": 25.0,
        "file_types": {".mp4": 2},
    }
    assert report["age_distribution"]["0-1h"] == 1 and report["age_distribution"]["1-6h"] == 1
