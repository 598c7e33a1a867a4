"""Batcher: calls queued in one loop iteration share one worker-thread hop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from clipd.batch import Batcher


class _CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(2)
        self.submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.fixture
async def executor() -> AsyncIterator[_CountingExecutor]:
    made = _CountingExecutor()
    asyncio.get_running_loop().set_default_executor(made)
    yield made
    made.shutdown(wait=True)


async def test_calls_of_one_iteration_share_one_hop(executor: _CountingExecutor) -> None:
    threads: list[int] = []

    def square(n: int) -> int:
        threads.append(threading.get_ident())
        return n * n

    batcher = Batcher(square)
    assert await asyncio.gather(*(batcher(n) for n in range(10))) == [n * n for n in range(10)]
    assert executor.submitted == 1
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
    assert await batcher(7) == 49  # a lone call: one hop of its own
    assert executor.submitted == 2


async def test_an_error_reaches_only_its_caller(executor: _CountingExecutor) -> None:
    def check(n: int) -> int:
        if n == 3:
            raise FileNotFoundError(n)
        return n

    batcher = Batcher(check)
    results = await asyncio.gather(*(batcher(n) for n in range(5)), return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4] == 4
    assert isinstance(results[3], FileNotFoundError)
    assert executor.submitted == 1


async def test_a_cancelled_caller_leaves_the_others_their_results(
    executor: _CountingExecutor,
) -> None:
    release = threading.Event()

    def wait_then_echo(n: int) -> int:
        release.wait(10)
        return n

    batcher = Batcher(wait_then_echo)
    first, second = batcher(1), batcher(2)
    await asyncio.sleep(0)  # the flush runs; the hop is now blocked in the worker
    first.cancel()
    release.set()
    assert await second == 2
    assert first.cancelled()
