"""Prometheus metrics: event counters, and one collector over the index aggregates.

Gauges that describe the tree (clips, bytes, disk use, backup backlog) come from an
in-memory snapshot of the index aggregates at scrape time, so a scrape is O(1) whatever
the tree size and touches neither SQLite nor the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clipd import __version__

__all__ = ["IndexCollector", "Metrics", "TreeGauges", "render", "used_ratio"]


@dataclass
class Metrics:
    """The counters clipd's parts increment, registered in one registry per daemon."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    _download_codes: dict[int, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"clipd_{name}", doc, labels, registry=r)

        self.ingested_files = counter("ingested_files", "Clips recorded in the index.")
        self.ingested_bytes = counter("ingested_bytes", "Bytes of clips recorded in the index.")
        self.quarantined_files = counter(
            "quarantined_files", "Files moved to quarantine, by reason.", ("reason",)
        )
        self.downloads = counter("downloads", "Download responses, by status code.", ("code",))
        self.download_bytes = counter("download_bytes", "Bytes sent in download bodies.")
        self.integrity_mismatches = counter(
            "integrity_mismatches", "Clips refused at download because their bytes changed."
        )
        self.scrub_mismatches = counter("scrub_mismatches", "Clips the scrub found changed.")
        self.scrub_verified_bytes = counter("scrub_verified_bytes", "Bytes re-hashed by scrub.")
        self.retention_deleted_files = counter("retention_deleted_files", "Clips evicted.")
        self.retention_freed_bytes = counter("retention_freed_bytes", "Bytes freed by retention.")
        self.backup_failures = counter("backup_failures", "Failed backup uploads.")
        self.backup_uploaded_files = counter("backup_uploaded_files", "Clips backed up.")
        self.watcher_rescans = counter("watcher_rescans", "Full rescans of the tree, by cause.")
        self.watcher_overflows = counter(
            "watcher_overflows", "inotify queue overflows or lost watches detected."
        )
        self.retention_last_run = Gauge(
            "clipd_retention_last_run_timestamp_seconds",
            "When retention last finished (Unix time).",
            registry=r,
        )
        self.retention_enabled = Gauge(
            "clipd_retention_enabled",
            "1 when this instance runs retention (0: disabled, or an s3 follower).",
            registry=r,
        )
        self.retention_last_duration = Gauge(
            "clipd_retention_last_run_duration_seconds",
            "How long the last retention run took.",
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "clipd_event_loop_lag_seconds",
            "How late the event loop woke a timer (blocking work on the loop shows here).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        info = Gauge("clipd_build_info", "clipd version.", ("version",), registry=r)
        info.labels(__version__).set(1)
        # The standard process_* families (resident memory, CPU seconds, open fds, start
        # time) every Prometheus client exports: what alerts on the daemon itself use.
        ProcessCollector(registry=r)

    def downloads_answered(self, status: int) -> Any:
        """``downloads``' child for ``status``: ``labels()`` takes a lock and builds a
        key on every call, a measurable part of a download; each code is looked up once."""
        child = self._download_codes.get(status)
        if child is None:
            child = self._download_codes[status] = self.downloads.labels(str(status))
        return child


class TreeGauges(NamedTuple):
    """What the collector reports about the tree, from an in-memory snapshot."""

    ready: bool
    files: int
    size_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    disk_used_bytes: int
    backlog_files: int


class IndexCollector(Collector):
    """Gauges over the index aggregates and disk usage, from ``gauges()`` at scrape time.

    ``gauges`` must not block: the web layer keeps the snapshot current (the index
    writer publishes its totals after each write; disk usage is refreshed every second).
    """

    def __init__(self, gauges: Callable[[], TreeGauges]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        g = self._gauges()
        for name, doc, value in (
            (
                "clipd_ready",
                "1 once the index is reconciled and the server is serving.",
                1.0 if g.ready else 0.0,
            ),
            ("clipd_clip_files", "Clips in the index.", g.files),
            ("clipd_clip_bytes", "Bytes of clips in the index.", g.size_bytes),
            ("clipd_disk_total_bytes", "Size of the clips filesystem.", g.disk_total_bytes),
            ("clipd_disk_free_bytes", "Free bytes on the clips filesystem.", g.disk_free_bytes),
            (
                "clipd_disk_used_ratio",
                "Used fraction (0-1) of the clips filesystem, as df counts it.",
                used_ratio(g.disk_total_bytes, g.disk_used_bytes, g.disk_free_bytes),
            ),
            (
                "clipd_backup_backlog_files",
                "Clips not yet copied to the backup bucket.",
                g.backlog_files,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))


def used_ratio(total_bytes: int, used_bytes: int, free_bytes: int) -> float:
    """Used fraction of a filesystem as ``df``, ``clipd monitor`` and the retention
    watermarks count it: used over what writers may use (root's reserve left out)."""
    usable = used_bytes + free_bytes
    return used_bytes / usable if total_bytes and usable else 0.0


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry`` (runs its collectors; clipd's read memory)."""
    return generate_latest(registry)
