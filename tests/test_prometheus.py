"""/metrics against the real Prometheus tools: promtool's linter and a real scrape."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import clip_bytes, free_port, wait_for, write_clip

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus")
def test_metrics_pass_promtool_check_metrics(make_daemon, clips_dir: Path) -> None:
    write_clip(clips_dir, "2026-11-24", "Lint_lint1.mp4", clip_bytes(1000))
    daemon = make_daemon().start()
    daemon.get("/api/v1/jobs/lint1/download")
    status, _, body = daemon.get("/metrics")
    assert status == 200
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", result


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus missing: apt-get install prometheus")
def test_real_prometheus_scrapes_clipd_series(make_daemon, clips_dir: Path, tmp_path: Path):
    write_clip(clips_dir, "2026-11-24", "Scraped_scr1.mp4", clip_bytes(4321))
    daemon = make_daemon().start()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: clipd\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{daemon.port}']\n"
    )
    assert PROMETHEUS is not None
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    try:

        def query() -> list[dict[str, object]] | None:
            url = f"http://127.0.0.1:{port}/api/v1/query?query=clipd_clip_bytes"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    result = json.load(response)["data"]["result"]
            except OSError:
                return None
            return result or None

        result = wait_for(query, timeout=60, what="clipd_clip_bytes in Prometheus")
        assert result[0]["metric"]["job"] == "clipd"
        assert float(result[0]["value"][1]) == 4321
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
