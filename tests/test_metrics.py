"""Metrics and IndexCollector on their own registries: exact samples, no shared state.

The HTTP exposition and the promtool / real Prometheus checks are in tests/test_web.py
and tests/test_prometheus.py; the list of exported names in tests/test_packaging.py.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from clipd import __version__
from clipd.metrics import IndexCollector, Metrics, TreeGauges, render

GAUGES = TreeGauges(
    ready=True,
    files=3,
    size_bytes=3000,
    disk_total_bytes=1000,
    disk_free_bytes=250,
    disk_used_bytes=600,
    backlog_files=2,
)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a render, parsed back by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(render(registry).decode())
        for s in family.samples
    }


def test_two_daemons_metrics_never_share_a_registry() -> None:
    first, second = Metrics(), Metrics()  # a shared registry would raise "Duplicated"
    first.ingested_files.inc(2)
    assert first.registry.get_sample_value("clipd_ingested_files_total") == 2.0
    assert second.registry.get_sample_value("clipd_ingested_files_total") == 0.0


def test_every_exported_family_is_prefixed_clipd_besides_the_standard_process_ones() -> None:
    metrics = Metrics()
    metrics.registry.register(IndexCollector(lambda: GAUGES))
    names = [f.name for f in text_string_to_metric_families(render(metrics.registry).decode())]
    ours = [name for name in names if not name.startswith("process_")]
    assert ours and all(name.startswith("clipd_") for name in ours), names
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds"} <= set(
        names
    )


def test_build_info_carries_the_package_version() -> None:
    registry = Metrics().registry
    assert registry.get_sample_value("clipd_build_info", {"version": __version__}) == 1.0


def test_downloads_answered_reuses_one_child_per_status_code() -> None:
    metrics = Metrics()
    ok = metrics.downloads_answered(200)
    assert metrics.downloads_answered(200) is ok
    assert metrics.downloads_answered(404) is not ok
    ok.inc()
    ok.inc()
    metrics.downloads_answered(404).inc()
    get = metrics.registry.get_sample_value
    assert get("clipd_downloads_total", {"code": "200"}) == 2.0
    assert get("clipd_downloads_total", {"code": "404"}) == 1.0
    assert get("clipd_downloads_total", {"code": "206"}) is None


def test_quarantine_counter_is_labelled_by_reason() -> None:
    metrics = Metrics()
    metrics.quarantined_files.labels("signature").inc()
    assert (
        metrics.registry.get_sample_value("clipd_quarantined_files_total", {"reason": "signature"})
        == 1.0
    )


def test_collector_reports_the_snapshot_values_exactly() -> None:
    registry = CollectorRegistry()
    registry.register(IndexCollector(lambda: GAUGES))
    assert _samples(registry) == {
        ("clipd_ready", ()): 1.0,
        ("clipd_clip_files", ()): 3.0,
        ("clipd_clip_bytes", ()): 3000.0,
        ("clipd_disk_total_bytes", ()): 1000.0,
        ("clipd_disk_free_bytes", ()): 250.0,
        # used / (used + free), as df and `clipd monitor` count it
        ("clipd_disk_used_ratio", ()): 600 / 850,
        ("clipd_backup_backlog_files", ()): 2.0,
    }


def test_collector_reads_a_fresh_snapshot_at_each_scrape() -> None:
    calls: list[int] = []
    current = [GAUGES]

    def gauges() -> TreeGauges:
        calls.append(1)
        return current[0]

    registry = CollectorRegistry()
    registry.register(IndexCollector(gauges))
    calls.clear()  # registering may describe the collector once
    assert _samples(registry)[("clipd_clip_files", ())] == 3.0
    assert len(calls) == 1
    current[0] = GAUGES._replace(files=7, ready=False)
    samples = _samples(registry)
    assert samples[("clipd_clip_files", ())] == 7.0
    assert samples[("clipd_ready", ())] == 0.0
    assert len(calls) == 2


def test_disk_used_ratio_leaves_roots_reserve_out_like_df_and_clipd_monitor() -> None:
    # ext4 keeps 5 % for root: at df's 90 % used / total is only 0.855, so an alert on
    # used / total > 0.90 fired long after `clipd monitor` went CRITICAL (or never, on a
    # filesystem with a large reserve). The ratio counts what writers can use, like df.
    registry = CollectorRegistry()
    gauges = GAUGES._replace(disk_total_bytes=1000, disk_used_bytes=855, disk_free_bytes=95)
    registry.register(IndexCollector(lambda: gauges))
    assert registry.get_sample_value("clipd_disk_used_ratio") == 0.9


def test_disk_used_ratio_is_zero_when_the_disk_size_is_unknown() -> None:
    registry = CollectorRegistry()
    registry.register(IndexCollector(lambda: GAUGES._replace(disk_total_bytes=0)))
    assert registry.get_sample_value("clipd_disk_used_ratio") == 0.0


def test_event_loop_lag_histogram_counts_into_its_buckets() -> None:
    metrics = Metrics()
    metrics.event_loop_lag.observe(0.003)
    get = metrics.registry.get_sample_value
    assert get("clipd_event_loop_lag_seconds_bucket", {"le": "0.0025"}) == 0.0
    assert get("clipd_event_loop_lag_seconds_bucket", {"le": "0.005"}) == 1.0
    assert get("clipd_event_loop_lag_seconds_count") == 1.0
