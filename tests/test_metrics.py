"""The /metrics text: same series as prometheus_client's, reused only while unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from clipd.metrics import IndexCollector, Metrics, TreeGauges, render


def _series(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def _busy_metrics() -> tuple[Metrics, list[TreeGauges]]:
    metrics = Metrics()
    gauges = [TreeGauges(True, 20_000, 327_680_000, 10**11, 4 * 10**10, 6 * 10**10, 3)]
    metrics.registry.register(IndexCollector(lambda: gauges[0]))
    metrics.ingested_files.inc(20_000)
    metrics.ingested_bytes.inc(123_456_789_012)
    metrics.quarantined_files.labels('odd "reason"\\ with\nnewline').inc()
    metrics.downloads.labels("200").inc(7)
    metrics.retention_last_run.set(1_796_000_000.5)
    for lag in (0.0005, 0.003, 0.2, 7.0):
        metrics.event_loop_lag.observe(lag)
    return metrics, gauges


def test_render_has_the_series_of_generate_latest_except_created() -> None:
    metrics, _ = _busy_metrics()
    ours = _series(render(metrics.registry))
    theirs = {
        key: value
        for key, value in _series(generate_latest(metrics.registry)).items()
        if not key[0].endswith("_created")
    }
    assert ours == theirs
    assert ours[("clipd_clip_bytes", ())] == 327_680_000
    assert ours[("clipd_quarantined_files_total", (("reason", 'odd "reason"\\ with\nnewline'),))]
    assert not any(name.endswith("_created") for name, _ in ours)


def test_render_reuses_the_text_until_a_metric_changes() -> None:
    metrics, gauges = _busy_metrics()
    first = render(metrics.registry)
    assert render(metrics.registry) is first
    metrics.ingested_files.inc()
    second = render(metrics.registry)
    assert _series(second)[("clipd_ingested_files_total", ())] == 20_001
    metrics.downloads.labels("404")
    assert _series(render(metrics.registry))[("clipd_downloads_total", (("code", "404"),))] == 0
    gauges[0] = gauges[0]._replace(files=20_002)
    assert _series(render(metrics.registry))[("clipd_clip_files", ())] == 20_002
    metrics.event_loop_lag.observe(0.01)
    assert _series(render(metrics.registry))[("clipd_event_loop_lag_seconds_count", ())] == 5


def test_changes_from_other_threads_show_in_the_next_scrape() -> None:
    metrics, _ = _busy_metrics()
    stop = threading.Event()

    def bump() -> None:
        while not stop.is_set():
            metrics.scrub_verified_bytes.inc(1)

    worker = threading.Thread(target=bump)
    worker.start()
    try:
        for _ in range(200):
            render(metrics.registry)
    finally:
        stop.set()
        worker.join()
    # Nothing changes any more: the next text is the final value, not a stale copy.
    final = _series(render(metrics.registry))[("clipd_scrub_verified_bytes_total", ())]
    direct = metrics.registry.get_sample_value("clipd_scrub_verified_bytes_total")
    assert final == direct


class _Opaque:
    def __init__(self) -> None:
        self.value = 1.0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("clipd_opaque", "A collector without a fingerprint.", self.value)


def test_a_collector_without_fingerprint_is_collected_on_every_scrape() -> None:
    metrics, _ = _busy_metrics()
    opaque = _Opaque()
    metrics.registry.register(opaque)
    assert _series(render(metrics.registry))[("clipd_opaque", ())] == 1
    opaque.value = 2.0
    assert _series(render(metrics.registry))[("clipd_opaque", ())] == 2


def test_a_plain_registry_is_rendered_afresh_each_time() -> None:
    metrics = Metrics(registry=CollectorRegistry())
    assert b"clipd_ingested_files_total 0.0\n" in render(metrics.registry)
    metrics.ingested_files.inc(3)
    assert b"clipd_ingested_files_total 3.0\n" in render(metrics.registry)


def test_gauges_refuse_a_function_the_cache_could_not_see() -> None:
    metrics = Metrics()
    with pytest.raises(TypeError):
        metrics.retention_last_run.set_function(lambda: 1.0)
