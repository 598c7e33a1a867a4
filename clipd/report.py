"""Storage report: pure summaries over index rows, plus one thin blocking gatherer.

The JSON keys keep the legacy report's names (``directory``, ``files``, ``total_bytes``,
``disk_usage_percent``, ``file_types``, ``age_distribution``) and add usage analytics:
downloads per day and the most downloaded clips, and the growth trend.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipd.index import Index
from clipd.record import ClipRecord, Totals
from clipd.retention import Usage

__all__ = [
    "AGE_BUCKETS",
    "Growth",
    "age_distribution",
    "downloads_summary",
    "file_types",
    "gather_blocking",
    "growth_trend",
]

# (label, upper bound in seconds, exclusive); the last bucket is open-ended.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("0-1h", 3600.0),
    ("1-6h", 6 * 3600.0),
    ("6-24h", 24 * 3600.0),
    ("1-7d", 7 * 86400.0),
    ("7d+", float("inf")),
)
GROWTH_WINDOW_DAYS = 7
TOP_CLIPS = 10


def age_bucket(age_s: float) -> str:
    """The age bucket label of a clip ``age_s`` seconds old."""
    for label, upper in AGE_BUCKETS:
        if age_s < upper:
            return label
    return AGE_BUCKETS[-1][0]


def age_distribution(records: Iterable[ClipRecord], now: float) -> dict[str, int]:
    """Clips per age bucket (from mtime), every bucket present."""
    out = {label: 0 for label, _ in AGE_BUCKETS}
    for r in records:
        out[age_bucket(now - r.mtime_ns / 1e9)] += 1
    return out


def file_types(records: Iterable[ClipRecord]) -> dict[str, int]:
    """Lower-case extension (with its dot) → number of clips, most common first."""
    counts: dict[str, int] = {}
    for r in records:
        ext = r.ext.lower()
        counts[ext] = counts.get(ext, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def downloads_summary(
    rows: Iterable[tuple[str, str, int, int]], top: int = TOP_CLIPS
) -> dict[str, Any]:
    """Per-day totals and the most downloaded clips from ``(day, job, count, bytes)`` rows."""
    per_day: dict[str, list[int]] = {}
    per_clip: dict[str, list[int]] = {}
    for day, job_id, count, size in rows:
        d = per_day.setdefault(day, [0, 0])
        d[0] += count
        d[1] += size
        c = per_clip.setdefault(job_id, [0, 0])
        c[0] += count
        c[1] += size
    ranked = sorted(per_clip.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:top]
    return {
        "per_day": [{"day": d, "count": v[0], "bytes": v[1]} for d, v in sorted(per_day.items())],
        "top": [{"job_id": j, "count": v[0], "bytes": v[1]} for j, v in ranked],
    }


@dataclass(frozen=True, slots=True)
class Growth:
    """Bytes added per day over the window and how long the free space lasts at that rate."""

    window_days: int
    bytes_added: dict[str, int]
    bytes_per_day: float
    days_until_full: float | None


def growth_trend(
    added: Mapping[str, Totals],
    today: str,
    free_bytes: int | None,
    window_days: int = GROWTH_WINDOW_DAYS,
) -> Growth:
    """Average bytes added per UTC day over the ``window_days`` ending ``today`` (pure)."""
    end = dt.date.fromisoformat(today)
    days = [(end - dt.timedelta(days=n)).isoformat() for n in range(window_days - 1, -1, -1)]
    per_day = {d: added[d].bytes if d in added else 0 for d in days}
    rate = sum(per_day.values()) / window_days
    until = None if free_bytes is None or rate <= 0 else free_bytes / rate
    return Growth(window_days, per_day, rate, until)


def window_start(today: str, days: int) -> str:
    """The first day of a ``days``-long window ending ``today``."""
    return (dt.date.fromisoformat(today) - dt.timedelta(days=max(days, 1) - 1)).isoformat()


def build_report(
    directory: str,
    records: list[ClipRecord],
    usage: Usage | None,
    now: float,
    downloads: list[tuple[str, str, int, int]],
    added: Mapping[str, Totals],
    since_days: int,
) -> dict[str, Any]:
    """The whole report as plain data (pure)."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    growth = growth_trend(added, today, None if usage is None else usage.free_bytes)
    return {
        "directory": directory,
        "files": len(records),
        "total_bytes": sum(r.size_bytes for r in records),
        "disk_usage_percent": None if usage is None else round(usage.percent, 1),
        "file_types": file_types(records),
        "age_distribution": age_distribution(records, now),
        "downloads": {"since_days": since_days, **downloads_summary(downloads)},
        "growth": {
            "window_days": growth.window_days,
            "bytes_added": growth.bytes_added,
            "bytes_per_day": round(growth.bytes_per_day, 1),
            "days_until_full": None
            if growth.days_until_full is None
            else round(growth.days_until_full, 1),
        },
    }


def gather_blocking(
    ix: Index, clips_dir: Path, usage: Usage | None, now: float, since_days: int
) -> dict[str, Any]:
    """Read the index and build the report; blocks on SQLite."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    records = [r for r in ix.records() if r.state == "ok"]
    downloads = ix.downloads(window_start(today, since_days))
    added = ix.added_daily(window_start(today, GROWTH_WINDOW_DAYS))
    return build_report(str(clips_dir), records, usage, now, downloads, added, since_days)
