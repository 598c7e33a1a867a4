"""The s3 backend: clips are objects ``<prefix><relpath>`` in one bucket.

Any S3-compatible store works: ``s3.endpoint_url`` (env ``AWS_ENDPOINT_URL``) selects a
non-AWS endpoint and then path-style addressing, which every such store accepts.
Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``, profile, instance role). boto3 is imported on first use so
local mode starts without it, and every boto3 call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from clipd.config import S3Config
from clipd.errors import StorageError
from clipd.record import Identity
from clipd.storage.s3keys import join_key, normalize_prefix

__all__ = [
    "ObjectInfo",
    "Presigner",
    "S3Backend",
    "etag_tag",
    "identity_from",
    "list_objects",
    "list_pages",
    "make_client",
]

logger = logging.getLogger(__name__)
_MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
_MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024
_NS_PER_S = 1_000_000_000
_ETAG_TAG_BYTES = 7  # 56 bits: fits SQLite's signed 64-bit INTEGER with room to spare

PutListener = Callable[[str, Identity, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key, the key without the prefix, size, time and ETag."""

    key: str
    relpath: str
    size_bytes: int
    last_modified_s: float
    etag: str

    @property
    def identity(self) -> Identity:
        return identity_from(self.size_bytes, self.last_modified_s, self.etag)


def identity_from(size_bytes: int, last_modified_s: float, etag: str) -> Identity:
    """An object's Identity: LastModified stands in for mtime and ctime, the ETag's
    :func:`etag_tag` for the inode.

    LastModified has one-second resolution, so an object replaced by bytes of the same
    size within the same second keeps size and time: only its ETag tells it apart.
    """
    mtime_ns = int(last_modified_s) * _NS_PER_S  # S3 times have one-second resolution
    return Identity(size_bytes, mtime_ns, mtime_ns, etag_tag(etag))


def etag_tag(etag: str) -> int:
    """A stable 56-bit number naming ``etag`` (quoted or not); 0 when there is none.

    The same object's ETag is the same string in ListObjectsV2, HeadObject and (ranged)
    GetObject answers, so every source of an identity gives the same number.
    """
    text = etag.strip().strip('"')
    if not text:
        return 0
    digest = hashlib.blake2b(text.encode(), digest_size=_ETAG_TAG_BYTES).digest()
    return int.from_bytes(digest, "big")


def _head_identity(head: dict[str, Any]) -> Identity:
    """The Identity a HeadObject answer names."""
    return identity_from(
        int(head["ContentLength"]), head["LastModified"].timestamp(), str(head.get("ETag", ""))
    )


def make_client(s3: S3Config, max_pool_connections: int = 32, *, transfers: bool = True) -> Any:
    """A boto3 S3 client for ``s3`` (SigV4; path style with a custom endpoint).

    Imports boto3 (slow, so only when S3 is used). Thread-safe once built. Without
    ``transfers`` it is botocore's own client, the same object without the transfer
    manager's methods (``upload_file`` …) boto3 adds: a caller that only lists, heads
    and presigns (``clipd migrate``) skips importing boto3 and s3transfer (~70 ms).
    """
    import botocore.session
    from botocore.config import Config as BotoConfig

    settings: dict[str, Any] = {
        "signature_version": "s3v4",
        "max_pool_connections": max_pool_connections,
        "retries": {"max_attempts": 5, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if s3.endpoint_url:
        settings["s3"] = {"addressing_style": "path"}
    # A private session: the default one is shared module state.
    core = botocore.session.Session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    arguments: dict[str, Any] = {
        "endpoint_url": s3.endpoint_url or None,
        "region_name": s3.region or None,
        "config": BotoConfig(**settings),
    }
    if not transfers:
        return core.create_client("s3", **arguments)
    import boto3

    return boto3.session.Session(botocore_session=core).client("s3", **arguments)


def _parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, with the ISO 8601 of listings parsed by the stdlib.

    botocore's default goes through dateutil: about 0.2 ms per value, most of the CPU of
    parsing a listing page. A value that is not a zoned ISO 8601 (HTTP dates of headers,
    epoch numbers) still goes to botocore's parser."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    from botocore.utils import parse_timestamp

    result: datetime = parse_timestamp(value)
    return result


def list_objects(client: Any, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, page by page (list_objects_v2); blocks."""
    for page in list_pages(client, bucket, prefix):
        yield from page


def _infos(page: dict[str, Any], prefix: str) -> list[ObjectInfo]:
    return [
        ObjectInfo(
            key=item["Key"],
            relpath=item["Key"].removeprefix(prefix),
            size_bytes=int(item["Size"]),
            last_modified_s=item["LastModified"].timestamp(),
            etag=str(item.get("ETag", "")).strip('"'),
        )
        for item in page.get("Contents", [])
    ]


def list_pages(
    client: Any, bucket: str, prefix: str, first_page: int | None = None
) -> Iterator[list[ObjectInfo]]:
    """The objects under ``prefix`` one listing page at a time (boto3's paginator);
    blocks per page.

    ``first_page`` asks for a short first page (then the store's default, 1,000) so a
    caller can start working on the first objects while the rest is listed.
    """
    paginator = client.get_paginator("list_objects_v2")
    config: dict[str, Any] = {}
    if first_page is not None:
        first = paginator.paginate(
            Bucket=bucket,
            Prefix=prefix,
            PaginationConfig={"MaxItems": first_page, "PageSize": first_page},
        )
        for page in first:
            yield _infos(page, prefix)
        if not first.resume_token:
            return
        config = {"StartingToken": first.resume_token}
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig=config):
        yield _infos(page, prefix)


_SIGNATURE_PARAMS = ("X-Amz-Date", "X-Amz-Signature")
_PROBE_KEY = "clipd-presign-probe/x.mp4"


def _unsigned(url: str) -> tuple[str, list[str]]:
    """A presigned URL's path and its query without the time-dependent parameters."""
    parts = urlsplit(url)
    query = [p for p in parts.query.split("&") if p.partition("=")[0] not in _SIGNATURE_PARAMS]
    return parts.path, sorted(query)


class Presigner:
    """Presigned GET URLs for many keys of one bucket, cheaply.

    boto3's ``generate_presigned_url`` runs its whole request pipeline per call (endpoint
    rules, parameter validation, serialisation, events: about 0.4-0.6 ms of CPU, 0.5 s for
    a thousand objects). This learns the object URL's shape (endpoint, addressing style,
    region) from one boto3 presign and then signs each key's URL with botocore's own
    SigV4 query signer (``S3SigV4QueryAuth``), about a third of the cost. The boto3 URL is
    also the self-test: when ours for the same key differs in anything but the time and
    signature, or the client's credentials are not reachable, every URL comes from boto3
    (``fallback``). Thread-safe.
    """

    def __init__(self, client: Any, bucket: str, ttl_s: int) -> None:
        self._client = client
        self._bucket = bucket
        self._ttl_s = ttl_s
        self.fallback = True
        probe = self._boto(_PROBE_KEY)
        parts = urlsplit(probe)
        encoded = quote(_PROBE_KEY, safe="/~")
        # botocore keeps the client's credentials (refreshing ones included) on its signer.
        credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        if credentials is None or not parts.path.endswith(encoded):
            logger.info("presigning with boto3 for every object: unexpected presigned URL")
            return
        self._credentials = credentials
        self._region = client.meta.region_name
        self._base = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(encoded)]}"
        if _unsigned(self.url_signed_here(_PROBE_KEY)) == _unsigned(probe):
            self.fallback = False
        else:
            logger.warning("presigning with boto3 for every object: own URL differs")

    def _boto(self, key: str) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=self._ttl_s
        )
        return url

    def url(self, key: str) -> str:
        """A presigned GET URL of ``key``, valid ``ttl_s`` seconds from now."""
        if self.fallback:
            return self._boto(key)
        return self.url_signed_here(key)

    def url_signed_here(self, key: str) -> str:
        """The presigned GET URL of ``key`` as botocore's SigV4 query signer makes it."""
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="GET", url=self._base + quote(key, safe="/~"))
        S3SigV4QueryAuth(self._credentials, "s3", self._region, expires=self._ttl_s).add_auth(
            request
        )
        return str(request.url)


class _ObjectBody:
    """A GetObject's streaming body (:class:`clipd.storage.RemoteBody`)."""

    def __init__(self, identity: Identity, body: Any) -> None:
        self.identity = identity
        self._body = body

    def read(self, size: int) -> bytes:
        data: bytes = self._body.read(size)
        return data

    def close(self) -> None:
        self._body.close()


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class S3Backend:
    """Clips in ``bucket`` under ``prefix``; ``relpath`` is the key without the prefix."""

    name = "s3"

    def __init__(self, s3: S3Config, client: Any = None) -> None:
        self.config = s3
        self.bucket = s3.bucket
        self.prefix = normalize_prefix(s3.prefix)
        self._client = client
        self._listeners: list[PutListener] = []

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (blocks on the import)."""
        if self._client is None:
            self._client = make_client(self.config)
        return self._client

    @property
    def base_path(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key_of(self, relpath: str) -> str:
        return join_key(self.prefix, relpath)

    def on_put(self, listener: PutListener) -> None:
        """Call ``listener(relpath, identity, sha256)`` after each successful put."""
        self._listeners.append(listener)

    async def stat(self, relpath: str) -> Identity | None:
        head = await asyncio.to_thread(self.head_blocking, relpath)
        if head is None:
            return None
        return _head_identity(head)

    def head_blocking(self, relpath: str, *, checksums: bool = False) -> dict[str, Any] | None:
        """HeadObject of ``relpath`` or None when missing; StorageError otherwise.

        ``checksums`` asks for the stored checksums too (``ChecksumMode=ENABLED``).
        """
        if checksums:
            return self._call_on_object(self.client.head_object, relpath, ChecksumMode="ENABLED")
        return self._call_on_object(self.client.head_object, relpath)

    def _call_on_object(
        self, call: Callable[..., dict[str, Any]], relpath: str, **params: Any
    ) -> dict[str, Any] | None:
        """``call`` (a client method) on ``relpath``'s key: its answer, None when the
        object is missing, StorageError for any other failure. Blocks."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key_of(relpath)
        try:
            return call(Bucket=self.bucket, Key=key, **params)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"s3://{self.bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3://{self.bucket}/{key}: {exc}") from exc

    def local_path(self, relpath: str) -> Path | None:
        return None

    async def presign(self, relpath: str, ttl_s: int) -> str | None:
        return await asyncio.to_thread(self.presign_blocking, relpath, ttl_s)

    def presign_blocking(self, relpath: str, ttl_s: int) -> str:
        """A presigned GET URL (pure computation once the client exists)."""
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key_of(relpath)},
            ExpiresIn=ttl_s,
        )
        return url

    async def open_range(self, relpath: str, first: int, last: int) -> _ObjectBody | None:
        return await asyncio.to_thread(self.open_range_blocking, relpath, first, last)

    def open_range_blocking(self, relpath: str, first: int, last: int) -> _ObjectBody | None:
        """GetObject of bytes ``first``..``last`` (a ranged GET, so the answer names the
        object's whole size); None when missing; StorageError otherwise."""
        got = self._call_on_object(self.client.get_object, relpath, Range=f"bytes={first}-{last}")
        if got is None:
            return None
        whole = str(got.get("ContentRange", "")).rpartition("/")[2]
        size = int(whole) if whole.isdigit() else int(got["ContentLength"])
        # A ranged GET answers with the whole object's ETag, as HeadObject does.
        identity = identity_from(size, got["LastModified"].timestamp(), str(got.get("ETag", "")))
        return _ObjectBody(identity, got["Body"])

    async def put(self, source: Path, relpath: str, sha256: str) -> Identity:
        identity = await asyncio.to_thread(self._put_blocking, source, relpath, sha256)
        for listener in self._listeners:
            await listener(relpath, identity, sha256)
        return identity

    def _put_blocking(self, source: Path, relpath: str, sha256: str) -> Identity:
        upload_file(self.client, source, self.bucket, self.key_of(relpath), sha256)
        head = self.head_blocking(relpath)
        if head is None:
            raise StorageError(f"s3://{self.bucket}/{self.key_of(relpath)}: gone after upload")
        # Like the local backend, put consumes the verified temp file.
        os.unlink(source)
        return _head_identity(head)

    async def delete(self, relpath: str) -> bool:
        return await asyncio.to_thread(self._delete_blocking, relpath)

    def _delete_blocking(self, relpath: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        existed = self.head_blocking(relpath) is not None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key_of(relpath))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{self.bucket}/{self.key_of(relpath)}: {exc}") from exc
        return existed

    def list_blocking(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix + under`` (paginated); blocks per page.

        ``relpath`` is the key without ``prefix`` only: ``under`` stays in it.
        """
        for info in list_objects(self.client, self.bucket, self.prefix + under):
            yield replace(info, relpath=info.key.removeprefix(self.prefix))


def upload_file(client: Any, source: Path, bucket: str, key: str, sha256: str) -> None:
    """Upload with the transfer manager, a SHA-256 checksum and ``x-amz-meta-sha256``.

    The metadata is the full-object hash even when the upload is multipart (whose
    ChecksumSHA256 is a composite of part hashes). Blocks; raises StorageError.
    """
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    transfer = TransferConfig(
        multipart_threshold=_MULTIPART_THRESHOLD_BYTES, multipart_chunksize=_MULTIPART_CHUNK_BYTES
    )
    extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}}
    try:
        client.upload_file(str(source), bucket, key, ExtraArgs=extra, Config=transfer)
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        raise StorageError(f"upload to s3://{bucket}/{key}: {exc}") from exc
