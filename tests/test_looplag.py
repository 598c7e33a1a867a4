"""loop_lag_service: a blocked event loop shows up in clipd_event_loop_lag_seconds."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from clipd.looplag import loop_lag_service
from clipd.metrics import Metrics

BLOCK_S = 0.6
PERIOD_S = 0.25  # the service's timer period


async def _until_observed(metrics: Metrics, count: float) -> None:
    get = metrics.registry.get_sample_value
    deadline = asyncio.get_running_loop().time() + 10
    while (get("clipd_event_loop_lag_seconds_count") or 0.0) < count:
        assert asyncio.get_running_loop().time() < deadline, "no lag observed"
        await asyncio.sleep(0.01)


async def test_a_loop_blocked_past_the_period_is_observed_as_lag() -> None:
    metrics = Metrics()
    daemon: Any = SimpleNamespace(metrics=metrics)
    task = asyncio.create_task(loop_lag_service(daemon))
    await asyncio.sleep(0)  # the service has started its first timer
    # Blocking the loop on purpose: that is what the metric is there to show.
    time.sleep(BLOCK_S)  # noqa: ASYNC251
    try:
        await _until_observed(metrics, 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    get = metrics.registry.get_sample_value
    # The timer was due PERIOD_S after it started and fired at least BLOCK_S after.
    assert (get("clipd_event_loop_lag_seconds_sum") or 0.0) >= BLOCK_S - PERIOD_S
    assert get("clipd_event_loop_lag_seconds_bucket", {"le": "0.25"}) == 0.0


async def test_cancelling_the_service_ends_it_without_an_observation() -> None:
    metrics = Metrics()
    daemon: Any = SimpleNamespace(metrics=metrics)
    task = asyncio.create_task(loop_lag_service(daemon))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.registry.get_sample_value("clipd_event_loop_lag_seconds_count") == 0.0
