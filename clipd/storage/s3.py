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
import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from clipd.config import S3Config
from clipd.errors import StorageError
from clipd.index import Identity
from clipd.storage.s3keys import join_key, normalize_prefix

__all__ = ["ObjectInfo", "Presigner", "S3Backend", "list_objects", "list_pages", "make_client"]

logger = logging.getLogger(__name__)
_MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
_MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024
_NS_PER_S = 1_000_000_000

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
        return identity_from(self.size_bytes, self.last_modified_s)


def identity_from(size_bytes: int, last_modified_s: float) -> Identity:
    """An object's Identity: LastModified stands in for mtime and ctime; no inode."""
    mtime_ns = int(last_modified_s) * _NS_PER_S  # S3 times have one-second resolution
    return Identity(size_bytes, mtime_ns, mtime_ns, 0)


def make_client(s3: S3Config, max_pool_connections: int = 32) -> Any:
    """A boto3 S3 client for ``s3`` (SigV4; path style with a custom endpoint).

    Imports boto3 (slow, so only when S3 is used). Thread-safe once built.
    """
    import boto3
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
    return boto3.session.Session(botocore_session=core).client(
        "s3",
        endpoint_url=s3.endpoint_url or None,
        region_name=s3.region or None,
        config=BotoConfig(**settings),
    )


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


def list_pages(
    client: Any, bucket: str, prefix: str, first_page: int | None = None
) -> Iterator[list[ObjectInfo]]:
    """The objects under ``prefix`` one listing page at a time; blocks per page.

    ``first_page`` asks for a short first page (then the store's default, 1,000) so a
    caller can start working on the first objects while the rest is listed.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if first_page is not None:
        kwargs["MaxKeys"] = first_page
    while True:
        page = client.list_objects_v2(**kwargs)
        yield [
            ObjectInfo(
                key=item["Key"],
                relpath=item["Key"].removeprefix(prefix),
                size_bytes=int(item["Size"]),
                last_modified_s=item["LastModified"].timestamp(),
                etag=str(item.get("ETag", "")).strip('"'),
            )
            for item in page.get("Contents", [])
        ]
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        kwargs.pop("MaxKeys", None)
        kwargs["ContinuationToken"] = token


_SIGNED_QUERY = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-Security-Token",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_PROBE_KEY = "clipd-presign-probe/x.mp4"


def _q(value: str) -> str:
    return quote(value, safe="-_.~")


class Presigner:
    """Presigned GET URLs for many keys of one bucket at a few microseconds each.

    boto3's ``generate_presigned_url`` runs its whole request pipeline per call (about
    0.6 ms of CPU: as much as 0.6 s for a thousand objects). This signs the URL itself
    (SigV4 query signing: one HMAC of a short string, the day's signing key cached),
    having learnt from one boto3 presign what cannot be derived safely here: the
    endpoint, the addressing style, the region and the credentials. That boto3 URL is
    also the self-test: when our signature for the same key and time differs from
    boto3's, every URL comes from boto3 (``fallback``). Thread-safe.
    """

    def __init__(self, client: Any, bucket: str, ttl_s: int) -> None:
        self._client = client
        self._bucket = bucket
        self._ttl_s = ttl_s
        self._keys: dict[str, bytes] = {}  # "YYYYMMDD" -> signing key
        self._lock = threading.Lock()
        self.fallback = True
        probe = self._boto(_PROBE_KEY)
        parts = urlsplit(probe)
        encoded = quote(_PROBE_KEY, safe="/~")
        credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        params = dict(pair.partition("=")[::2] for pair in parts.query.split("&"))
        scope = params.get("X-Amz-Credential", "").split("%2F")
        if credentials is None or not parts.path.endswith(encoded) or len(scope) != 5:
            logger.info("presigning with boto3 for every object: unexpected presigned URL")
            return
        self._credentials = credentials
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._base_path = parts.path[: -len(encoded)]
        self._region, self._service = scope[2], scope[3]
        # Parameters of the operation (not of the signature) go into every URL as they are.
        self._operation = sorted((k, v) for k, v in params.items() if k not in _SIGNED_QUERY)
        mine = urlsplit(self.sign(_PROBE_KEY, params.get("X-Amz-Date", "")))
        if mine.path == parts.path and mine.query.endswith(
            f"&X-Amz-Signature={params.get('X-Amz-Signature')}"
        ):
            self.fallback = False
        else:
            logger.warning("presigning with boto3 for every object: own signature differs")

    def _boto(self, key: str) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=self._ttl_s
        )
        return url

    def _operation_query(self) -> str:
        return "".join(f"{k}={v}&" for k, v in self._operation)

    def url(self, key: str) -> str:
        """A presigned GET URL of ``key``, valid ``ttl_s`` seconds from now."""
        if self.fallback:
            return self._boto(key)
        return self.sign(key, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))

    def _signing_key(self, day: str, secret: str) -> bytes:
        cache = f"{day}/{secret}"
        with self._lock:
            found = self._keys.get(cache)
        if found is not None:
            return found
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        with self._lock:
            self._keys = {cache: key}  # one day (and one secret) at a time
        return key

    def sign(self, key: str, stamp: str) -> str:
        """The presigned GET URL of ``key`` as signed at ``stamp`` (``YYYYMMDDTHHMMSSZ``)."""
        frozen = self._credentials.get_frozen_credentials()
        day = stamp[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        auth = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", _q(f"{frozen.access_key}/{scope}")),
            ("X-Amz-Date", stamp),
            ("X-Amz-Expires", str(self._ttl_s)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if frozen.token is not None:
            auth.append(("X-Amz-Security-Token", _q(frozen.token)))
        path = self._base_path + quote(key, safe="/~")
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted([*self._operation, *auth]))
        canonical = f"GET\n{path}\n{canonical_query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
        )
        signature = hmac.new(
            self._signing_key(day, frozen.secret_key), to_sign.encode(), "sha256"
        ).hexdigest()
        query = self._operation_query() + "&".join(f"{k}={v}" for k, v in auth)
        return f"{self._origin}{path}?{query}&X-Amz-Signature={signature}"


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
        return identity_from(int(head["ContentLength"]), head["LastModified"].timestamp())

    def head_blocking(self, relpath: str) -> dict[str, Any] | None:
        """HeadObject of ``relpath`` or None when missing; StorageError otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.key_of(relpath)
            )
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"s3://{self.bucket}/{self.key_of(relpath)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3://{self.bucket}/{self.key_of(relpath)}: {exc}") from exc
        return head

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
        return identity_from(int(head["ContentLength"]), head["LastModified"].timestamp())

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
