"""The minimal HTTP surface on a real aiohttp server: health, metrics, JSON errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from aiohttp import web

from clipd import config as config_mod
from clipd.async_index import AsyncIndex
from clipd.errors import NotFound, StorageError
from clipd.index import index_path
from clipd.metrics import IndexCollector, Metrics
from clipd.record import ClipRecord
from clipd.storage.local import LocalBackend
from clipd.web import State, make_app


@pytest.fixture
async def state(tmp_path: Path):
    cfg = config_mod.load({}, {"CLIPS_DIR": str(tmp_path)}, None)
    index = AsyncIndex(index_path(tmp_path))
    await index.open()
    metrics = Metrics()
    st = State(config=cfg, index=index, metrics=metrics, backend=LocalBackend(tmp_path))
    metrics.registry.register(IndexCollector(st.gauges))
    yield st
    await index.close()


async def test_health_is_503_until_ready(aiohttp_client, state: State) -> None:
    client = await aiohttp_client(make_app(state))
    response = await client.get("/health")
    assert response.status == 503
    assert (await response.json())["ready"] is False
    state.ready = True
    response = await client.get("/health")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"
    state.stopping = True
    assert (await client.get("/health")).status == 503


async def test_storage_metrics_have_the_legacy_fields(aiohttp_client, state: State) -> None:
    await state.index.write(
        lambda ix: ix.upsert(
            ClipRecord(
                job_id="a",
                relpath="2026-11-24/T_a.mp4",
                day="2026-11-24",
                title="T",
                ext=".mp4",
                size_bytes=3 * 1024 * 1024,
                mtime_ns=1,
                ctime_ns=1,
                inode=1,
                sha256="0" * 64,
                ingested_at=1.0,
                verified_at=1.0,
            )
        )
    )
    client = await aiohttp_client(make_app(state))
    body = await (await client.get("/api/v1/storage/metrics")).json()
    assert body["storage_backend"] == "local"
    assert body["clips_disk_used_bytes"] == 3 * 1024 * 1024
    assert body["clips_disk_used_mb"] == 3.0
    assert body["file_count"] == 1
    assert body["base_path"] == str(state.clips_dir.resolve())
    assert 0 < body["disk_used_ratio"] < 1


async def test_storage_metrics_disk_ratio_is_dfs_percent(aiohttp_client, state: State) -> None:
    # The same figure as df, `clipd monitor` and the retention watermarks: used over
    # what writers may use (root's reserve left out), not over the raw size.
    client = await aiohttp_client(make_app(state))
    body = await (await client.get("/api/v1/storage/metrics")).json()
    st = os.statvfs(state.clips_dir)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    df_ratio = used / (used + st.f_bavail * st.f_frsize)
    assert body["disk_used_ratio"] == pytest.approx(df_ratio, abs=0.005)


async def test_metrics_are_prometheus_text_in_base_units(aiohttp_client, state: State) -> None:
    client = await aiohttp_client(make_app(state))
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    for name in (
        "clipd_clip_files 0.0",
        "clipd_clip_bytes 0.0",
        "clipd_disk_used_ratio",
        "clipd_ready 0.0",
        "clipd_ingested_files_total 0.0",
    ):
        assert name in text
    assert "percent" not in text


async def test_unknown_path_and_method_answer_json(aiohttp_client, state: State) -> None:
    client = await aiohttp_client(make_app(state))
    response = await client.get("/nope")
    assert response.status == 404
    assert set(await response.json()) == {"error", "detail"}
    response = await client.post("/health")
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"
    assert "Allow" in response.headers


async def test_a_5xx_answer_is_logged_for_the_operator(
    aiohttp_client, state: State, caplog: pytest.LogCaptureFixture
) -> None:
    # A store outage answers 502 to every download; `journalctl -p warning` must show it.
    async def store_down(request: web.Request) -> web.Response:
        raise StorageError("s3://b/k: Could not connect to the endpoint URL")

    async def unknown(request: web.Request) -> web.Response:
        raise NotFound("no clip with job id x")

    state.ready = True
    routes = [web.get("/down", store_down), web.get("/unknown", unknown)]
    client = await aiohttp_client(make_app(state, routes))
    with caplog.at_level(logging.INFO, logger="clipd.web"):
        assert (await client.get("/down")).status == 502
        assert (await client.get("/unknown")).status == 404
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "GET /down answered 502 storage_error: s3://b/k: Could not connect to the endpoint URL"
    ]
