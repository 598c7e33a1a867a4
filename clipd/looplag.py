"""Event-loop lag: how late a timer fires shows any blocking call on the loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipd.daemon import Daemon

__all__ = ["loop_lag_service"]

_PERIOD_S = 0.25


async def loop_lag_service(daemon: Daemon) -> None:
    """Observe timer lateness into ``clipd_event_loop_lag_seconds`` until cancelled."""
    loop = asyncio.get_running_loop()
    histogram = daemon.metrics.event_loop_lag
    while True:
        started = loop.time()
        await asyncio.sleep(_PERIOD_S)
        histogram.observe(max(0.0, loop.time() - started - _PERIOD_S))
