"""Crash-safe removal of a clip: mark the row, delete the bytes, drop the row.

A crash between the steps leaves a row marked ``deleting``; :func:`finish_pending`
completes those at start-up, so the index never keeps a phantom row nor loses track
of a file it still holds.
"""

from __future__ import annotations

import logging

from clipd.async_index import AsyncIndex
from clipd.record import ClipRecord
from clipd.storage import Backend

__all__ = ["finish_pending", "remove_clip"]

logger = logging.getLogger(__name__)


async def remove_clip(index: AsyncIndex, backend: Backend, record: ClipRecord) -> bool:
    """Delete ``record``'s bytes and row; False if the bytes were already gone."""
    await index.write(lambda ix: ix.set_state(record.job_id, "deleting"))
    existed = await backend.delete(record.relpath)
    await index.write(lambda ix: ix.delete(record.job_id))
    return existed


async def finish_pending(index: AsyncIndex, backend: Backend) -> int:
    """Complete removals a crash interrupted; returns how many were finished."""
    pending = await index.read(lambda ix: ix.pending_deletes())
    for record in pending:
        logger.warning(
            "finishing interrupted removal of %s (job %s)", record.relpath, record.job_id
        )
        await remove_clip(index, backend, record)
    return len(pending)
