"""Backup: copy every ingested clip to ``backup.s3_bucket`` in the background.

The index is the queue: rows with ``backed_up = 0`` are uploaded (transfer manager,
``ChecksumAlgorithm=SHA256`` and the full-object SHA-256 in ``x-amz-meta-sha256``, under
``backup.prefix`` + the clip's relpath) and flagged on success, so a restart resumes
where it stopped. Failures count in ``clipd_backup_failures_total`` and back off
exponentially (``_BACKOFF_MAX_S`` at most) while the backlog gauge
(``clipd_backup_backlog_files``) shows what waits. ``clipd restore --from
s3://<backup bucket>/<prefix>`` brings the tree back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from clipd.errors import StorageError
from clipd.record import ClipRecord
from clipd.storage.s3 import make_client, upload_file
from clipd.storage.s3keys import join_key, normalize_prefix

if TYPE_CHECKING:
    from clipd.daemon import Daemon

__all__ = ["backoff_s", "backup_service"]

logger = logging.getLogger(__name__)
_IDLE_POLL_S = 2.0
_BACKOFF_BASE_S = 1.0
_BACKOFF_MAX_S = 300.0


def backoff_s(failures: int) -> float:
    """Delay after ``failures`` failed rounds in a row: 1, 2, 4 … 300 s; pure."""
    if failures <= 0:
        return 0.0
    return float(min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** (failures - 1)))


async def backup_service(daemon: Daemon) -> None:
    """Drain the backup backlog until cancelled (a daemon Service)."""
    config = daemon.config.backup
    if daemon.backend.local_path("") is None:
        logger.warning("backup.s3_bucket is set but clips already live in a bucket; not backing up")
        return
    s3 = dataclasses.replace(daemon.config.s3, bucket=config.s3_bucket)
    client = await asyncio.to_thread(make_client, s3, config.concurrency + 2)
    prefix = normalize_prefix(config.prefix)
    failures = 0
    semaphore = asyncio.Semaphore(config.concurrency)

    async def one(record: ClipRecord) -> bool:
        async with semaphore:
            return await _upload(daemon, client, config.s3_bucket, prefix, record)

    logger.info("backup to s3://%s/%s started", config.s3_bucket, prefix)
    while True:
        batch = await daemon.index.read(lambda ix: ix.not_backed_up(config.concurrency * 4))
        if not batch:
            await asyncio.sleep(_IDLE_POLL_S)
            continue
        results = await asyncio.gather(*(one(r) for r in batch))
        if all(results):
            failures = 0
            continue
        failures += 1
        delay = backoff_s(failures)
        logger.warning(
            "backup: %d of %d uploads failed; retrying in %.0f s",
            results.count(False),
            len(results),
            delay,
        )
        await asyncio.sleep(delay)


async def _upload(
    daemon: Daemon, client: Any, bucket: str, prefix: str, record: ClipRecord
) -> bool:
    path = daemon.backend.local_path(record.relpath)
    assert path is not None
    key = join_key(prefix, record.relpath)
    try:
        await asyncio.to_thread(upload_file, client, path, bucket, key, record.sha256)
    except FileNotFoundError:
        # Removed (retention) since the row was read; the rescan drops its row. Backing
        # off meanwhile keeps the loop from spinning on it.
        logger.debug("backup: %s vanished before upload", record.relpath)
        return False
    except (StorageError, OSError) as exc:
        daemon.metrics.backup_failures.inc()
        logger.warning("backup of %s (job %s) failed: %s", record.relpath, record.job_id, exc)
        return False
    await daemon.index.write(lambda ix: ix.set_backed_up(record.job_id))
    daemon.metrics.backup_uploaded_files.inc()
    logger.debug("backed up %s to s3://%s/%s", record.relpath, bucket, key)
    return True
