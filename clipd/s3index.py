"""s3 mode: keep the local index a faithful list of the bucket.

The local ``CLIPS_DIR`` holds only ``.clipd/`` (the index). At start-up, and every
``s3.relist_interval_seconds``, the bucket is listed (paginated) and every key whose
base name parses as a clip, in any folder, becomes a row: ``relpath`` is the key
without the prefix, ``(size, LastModified, ETag)`` its identity (the ETag as a number in
``inode``: LastModified has one-second resolution, so a same-size replacement within the
second shows only in the ETag). Rows of vanished keys are dropped. Own writes
(``S3Backend.put``) are recorded at once, and :meth:`S3Catalog.lookup` lists today's and
yesterday's day folders on a miss, so a clip PUT through another instance is found
before the next re-list.

SHA-256 of a row: the object's ``x-amz-meta-sha256`` (one HeadObject per new or
changed key, clipd writes it on every upload), else the store's full-object
``ChecksumSHA256`` (an object uploaded by another writer with ``ChecksumAlgorithm=SHA256``
in one part); an object with neither gets an empty ``sha256`` (the web layer then has
no strong ETag from the index; the bytes are never downloaded just to hash them).

Upgrade: rows recorded before the ETag was part of the identity have inode 0, so the
start-up listing (before READY) re-records each of them once, HeadObject included; such
a row keeps its history (ingested_at, verified_at, display title, backed-up flag).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from clipd.async_index import AsyncIndex
from clipd.config import Config
from clipd.errors import StorageError
from clipd.index import Index
from clipd.naming import day_of
from clipd.record import ClipRecord, Identity, new_record
from clipd.storage.s3 import ObjectInfo, S3Backend
from clipd.storage.s3keys import KeyPlan, plan_key

if TYPE_CHECKING:
    from clipd.daemon import Daemon

__all__ = ["S3Catalog", "SyncPlan", "catalog_factory", "plan_sync", "sha256_in_head"]

logger = logging.getLogger(__name__)
_HEAD_WORKERS = 16
_DAY_S = 86400.0
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA256_BYTES = 32


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a re-list changes: objects to (re)record and job ids to drop."""

    to_record: tuple[tuple[ObjectInfo, KeyPlan], ...]
    to_drop: tuple[str, ...]
    duplicates: tuple[str, ...]  # keys ignored because another key holds the job id


def plan_sync(
    listed: Iterable[ObjectInfo],
    indexed: dict[str, tuple[str, Identity]],
    prefix: str,
    extensions: frozenset[str],
    complete: bool = True,
) -> SyncPlan:
    """Compare a listing with the index rows (relpath → job id, identity); pure.

    ``complete`` False (a partial listing, as ``lookup`` does) never drops rows.
    """
    claimed: dict[str, str] = {relpath: job for relpath, (job, _) in indexed.items()}
    job_owner = {job: relpath for relpath, job in claimed.items()}
    seen: set[str] = set()
    record: list[tuple[ObjectInfo, KeyPlan]] = []
    duplicates: list[str] = []
    for info in sorted(listed, key=lambda i: i.key):
        plan = plan_key(info.key, prefix, info.size_bytes, info.last_modified_s, extensions)
        if not isinstance(plan, KeyPlan):
            continue
        job = plan.name.job_id
        owner = job_owner.get(job)
        if owner is not None and owner != info.relpath and owner in seen:
            duplicates.append(info.key)
            continue
        seen.add(info.relpath)
        job_owner[job] = info.relpath
        known = indexed.get(info.relpath)
        if known is None or known[1] != info.identity:
            record.append((info, plan))
    drop = tuple(job for relpath, (job, _) in indexed.items() if complete and relpath not in seen)
    return SyncPlan(tuple(record), drop, tuple(duplicates))


class S3Catalog:
    """Lists the bucket into the index; ``run`` is the periodic re-list service."""

    def __init__(self, config: Config, index: AsyncIndex, backend: S3Backend) -> None:
        self.config = config
        self.index = index
        self.backend = backend
        self._pool = ThreadPoolExecutor(_HEAD_WORKERS, thread_name_prefix="clipd-s3-head")
        self._lock = asyncio.Lock()
        self._listed_at = 0.0  # monotonic start of the latest listing that finished
        backend.on_put(self.record_put)

    @property
    def _extensions(self) -> frozenset[str]:
        return frozenset(self.config.storage.extensions)

    async def reconcile(self) -> str:
        """List the whole bucket and apply the difference; returns a log summary."""
        async with self._lock:
            started = time.time()
            listing_started = time.monotonic()
            listed = await asyncio.to_thread(lambda: list(self.backend.list_blocking()))
            indexed = await self.index.read(_live_identities(started))
            plan = plan_sync(listed, indexed, self.backend.prefix, self._extensions)
            recorded = await self._apply(plan, started)
            self._listed_at = listing_started
            return (
                f"listed s3://{self.backend.bucket}/{self.backend.prefix}: {len(listed)} "
                f"objects, {recorded} recorded, {len(plan.to_drop)} dropped, "
                f"{len(plan.duplicates)} duplicate job ids in {time.time() - started:.2f} s"
            )

    async def run(self) -> None:
        """Re-list every ``s3.relist_interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.s3.relist_interval_seconds)
            try:
                logger.info("%s", await self.reconcile())
            # botocore raises many unrelated types; a failed re-list must not stop serving
            # (CancelledError is not an Exception, so cancellation still propagates).
            except Exception as exc:
                logger.warning("re-list of the bucket failed: %s", exc, exc_info=True)

    async def lookup(self, job_id: str) -> ClipRecord | None:
        """On an index miss: list today's and yesterday's day folders, then look again.

        Misses that arrive together share one listing: a listing that started after this
        miss already covers it, so a burst of unknown job ids costs one listing at a time.
        """
        asked = time.monotonic()
        now = time.time()
        days = {day_of(now), day_of(now - _DAY_S)}
        from botocore.exceptions import BotoCoreError, ClientError

        async with self._lock:
            if self._listed_at > asked:
                return await self.index.get(job_id)
            listing_started = time.monotonic()
            listed: list[ObjectInfo] = []
            try:
                for day in sorted(days):
                    listed += await asyncio.to_thread(self._list_under, f"{day}/")
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(
                    f"looking for job {job_id} in s3://{self.backend.bucket}/"
                    f"{self.backend.prefix}: {exc}"
                ) from exc
            indexed = await self.index.read(lambda ix: ix.identities())
            plan = plan_sync(listed, indexed, self.backend.prefix, self._extensions, False)
            await self._apply(plan, now)
            self._listed_at = listing_started
        return await self.index.get(job_id)

    async def record_put(self, relpath: str, identity: Identity, sha256: str) -> None:
        """Record a clip this instance just uploaded (own writes skip the re-list)."""
        plan = plan_key(
            self.backend.key_of(relpath),
            self.backend.prefix,
            identity.size_bytes,
            identity.mtime_ns / 1e9,
            self._extensions,
        )
        if not isinstance(plan, KeyPlan):
            return
        row = _record(plan, identity, sha256, time.time())
        await self.index.write(lambda ix: ix.upsert(row))

    async def _apply(self, plan: SyncPlan, now: float) -> int:
        for key in plan.duplicates:
            logger.warning(
                "s3://%s/%s: job id already indexed under another key; ignored",
                self.backend.bucket,
                key,
            )
        loop = asyncio.get_running_loop()
        shas = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, self._sha256_of, info.relpath)
                for info, _ in plan.to_record
            )
        )
        rows = [
            _record(kp, info.identity, sha, now)
            for (info, kp), sha in zip(plan.to_record, shas, strict=True)
        ]

        def write(ix: Index) -> None:
            if plan.to_drop:
                ix.delete_many(plan.to_drop)
            if rows:
                ix.upsert_many([_keep_history(row, ix.get_by_relpath(row.relpath)) for row in rows])

        await self.index.write(write)
        return len(rows)

    def _list_under(self, under: str) -> list[ObjectInfo]:
        return list(self.backend.list_blocking(under))

    def _sha256_of(self, relpath: str) -> str:
        return sha256_in_head(self.backend.head_blocking(relpath, checksums=True) or {})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def sha256_in_head(head: dict[str, Any]) -> str:
    """The object's SHA-256 (hex) a HeadObject answer names, or "" when it names none; pure.

    ``x-amz-meta-sha256`` first (clipd writes it on every upload); else the store's own
    ``ChecksumSHA256`` (asked for with ``ChecksumMode=ENABLED``) when it is a full-object
    one. A multipart upload's composite checksum (``<base64>-N``, ChecksumType COMPOSITE)
    hashes the part hashes, not the object, and is ignored.
    """
    meta = head.get("Metadata") or {}
    sha = str(meta.get("sha256", "")).lower()
    if _SHA256_HEX.fullmatch(sha):
        return sha
    checksum = str(head.get("ChecksumSHA256") or "")
    if not checksum or "-" in checksum or head.get("ChecksumType") == "COMPOSITE":
        return ""
    try:
        digest = base64.b64decode(checksum, validate=True)
    except binascii.Error:
        return ""
    return digest.hex() if len(digest) == _SHA256_BYTES else ""


def _live_identities(started: float) -> Callable[[Index], dict[str, tuple[str, Identity]]]:
    """Rows to compare with a listing; rows written after it started are not dropped."""

    def read(ix: Index) -> dict[str, tuple[str, Identity]]:
        return {
            r.relpath: (r.job_id, r.identity)
            for r in ix.records("ingested_at")
            if r.ingested_at < started
        }

    return read


def _record(plan: KeyPlan, identity: Identity, sha256: str, now: float) -> ClipRecord:
    return new_record(plan.name, plan.relpath, plan.day, identity, sha256, now, verified_at=0.0)


def _keep_history(row: ClipRecord, existing: ClipRecord | None) -> ClipRecord:
    """``row`` re-recorded over ``existing``: a row from before the ETag joined the
    identity (inode 0, same job, size and time) is the same object, so it keeps its
    history; any other change is a new object and starts afresh."""
    if (
        existing is None
        or existing.inode != 0
        or existing.job_id != row.job_id
        or (existing.size_bytes, existing.mtime_ns) != (row.size_bytes, row.mtime_ns)
    ):
        return row
    return replace(
        row,
        ingested_at=existing.ingested_at,
        verified_at=existing.verified_at,
        display_title=existing.display_title,
        backed_up=existing.backed_up,
    )


def catalog_factory(daemon: Daemon) -> S3Catalog:
    """The daemon's catalog in s3 mode; also offers ``lookup`` to handlers via extras."""
    backend = daemon.backend
    if not isinstance(backend, S3Backend):
        raise TypeError(f"s3 catalog needs the s3 backend, got {backend.name!r}")
    catalog = S3Catalog(daemon.config, daemon.index, backend)
    daemon.state.extras["lookup"] = catalog.lookup
    return catalog
