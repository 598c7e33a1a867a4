"""Blocking calls queued by many coroutines in one event-loop iteration, run in one hop.

Each worker-thread hop costs the event loop far more than a small blocking call such as
``lstat``: the hand-off of the GIL to the worker and back, the future, the wake-up of
the loop. Under load many downloads need such a call in the same loop iteration (behind
nginx with 16 connections: 6-8 on average), so :class:`Batcher` collects them and makes
one hop for all; a lone call still makes exactly one hop, as it would without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

_T = TypeVar("_T")
_R = TypeVar("_R")


class Batcher(Generic[_T, _R]):
    """``await batcher(item)`` runs ``fn(item)`` in the loop's default executor, together
    with every other item queued before the loop gets back to its callbacks.

    ``fn`` runs once per item, in queue order; an exception it raises reaches that
    item's caller only. A caller cancelled meanwhile is skipped when results arrive.
    Loop-only: no locking.
    """

    def __init__(self, fn: Callable[[_T], _R]) -> None:
        self._fn = fn
        self._pending: list[tuple[_T, asyncio.Future[_R]]] = []

    def __call__(self, item: _T) -> asyncio.Future[_R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush, loop)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        items = [item for item, _ in batch]
        try:
            hop = loop.run_in_executor(None, self._run_all, items)
        except RuntimeError as exc:  # the executor is shut down: the loop is closing
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        hop.add_done_callback(lambda done: self._settle(batch, done))

    def _run_all(self, items: list[_T]) -> list[tuple[bool, _R | BaseException]]:
        results: list[tuple[bool, _R | BaseException]] = []
        for item in items:
            try:
                results.append((True, self._fn(item)))
            except Exception as exc:  # handed to that item's caller
                results.append((False, exc))
        return results

    @staticmethod
    def _settle(
        batch: list[tuple[_T, asyncio.Future[_R]]],
        done: asyncio.Future[list[tuple[bool, _R | BaseException]]],
    ) -> None:
        if done.cancelled():
            for _, future in batch:
                future.cancel()
            return
        error = done.exception()
        if error is not None:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), (ok, value) in zip(batch, done.result(), strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)  # type: ignore[arg-type]
            else:
                future.set_exception(value)  # type: ignore[arg-type]
