"""Fetch one S3 object into a hidden temp file, verified, for ``clipd migrate``.

Per object, in the calling worker thread: a presigned GET (botocore's SigV4 query signer,
without the client's request pipeline per object: :class:`clipd.storage.s3.Presigner`) sent
over this thread's keep-alive ``http.client`` connection; the body is read with
``readinto`` into the thread's 1 MiB buffer, hashed and written from that buffer, so
every byte is copied once from the socket and written once (O_DIRECT where possible).
Reading, hashing (hashlib drops the GIL for large buffers) and ``os.write`` all release
the GIL, so a few threads keep both the network and every core busy without hand-offs
between threads. The bytes are then checked against the strongest evidence the store
offers (:mod:`clipd.storage.s3verify`); MD5 is computed only when that evidence is an ETag.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from enum import Enum
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clipd.checks import BLOCK_BYTES, identity_of, signature_ok
from clipd.errors import ClipdError, StorageError
from clipd.record import ClipRecord
from clipd.storage.s3 import ObjectInfo, Presigner
from clipd.storage.s3keys import KeyPlan, NotClip
from clipd.storage.s3verify import (
    Check,
    Digester,
    Expected,
    Outcome,
    Verdict,
    expected_from_head,
    verdict,
)

__all__ = ["TMP_SUFFIX", "Fetcher", "Item", "Result", "Status", "hash_local"]

_ATTEMPTS = 3
_RETRY_BASE_S = 0.5
_PRESIGN_TTL_S = 3600
_TIMEOUT_S = 60.0
_ERROR_BODY_BYTES = 4096
_SNIFF_BYTES = 64
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_SHA256_CHECKS = (Check.SHA256_METADATA, Check.SHA256_CHECKSUM)
# O_DIRECT wants offsets, lengths and memory aligned to the logical block size.
_DIRECT_ALIGN_BYTES = 4096
TMP_SUFFIX = ".migrate.tmp"


class Status(Enum):
    MOVED = "moved"
    PRESENT = "present"
    FAILED = "failed"
    NOT_CLIP = "not-clip"


@dataclass(frozen=True, slots=True)
class Item:
    """One clip object to fetch."""

    info: ObjectInfo
    plan: KeyPlan


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one item; ``tmp`` is the verified temp file of a MOVED item."""

    item: Item
    status: Status
    reason: str = ""
    sha256: str = ""
    tmp: Path | None = None


class _Sha256Only:
    """The Digester interface when the store offers a SHA-256: no MD5 work wasted."""

    __slots__ = ("_sha", "size_bytes")

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size_bytes = 0

    def update(self, chunk: memoryview) -> None:
        self._sha.update(chunk)
        self.size_bytes += len(chunk)

    def sha256(self) -> bytes:
        return self._sha.digest()


class _ThreadState(threading.local):
    """Each worker thread's connections (by scheme and host) and read buffer."""

    def __init__(self) -> None:
        self.connections: dict[tuple[str, str], HTTPConnection] = {}
        # An anonymous mapping is page-aligned, as O_DIRECT writes need.
        self.buffer = memoryview(mmap.mmap(-1, BLOCK_BYTES))


def _head_mapping(response: HTTPResponse) -> dict[str, Any]:
    """A GET response's headers as the boto3 HeadObject fields s3verify reads."""
    # One pass over the header list: each HTTPMessage.get scans (and lower-cases) it all.
    headers: dict[str, str] = {}
    for name, value in response.getheaders():
        headers.setdefault(name.lower(), value)  # the first of repeated ones, as get() does
    head: dict[str, Any] = {"ETag": headers.get("etag", "")}
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        head["ContentLength"] = int(length)
    if "x-amz-meta-sha256" in headers:
        head["Metadata"] = {"sha256": headers["x-amz-meta-sha256"]}
    for name, key in (
        ("x-amz-checksum-sha256", "ChecksumSHA256"),
        ("x-amz-checksum-type", "ChecksumType"),
        ("x-amz-server-side-encryption", "ServerSideEncryption"),
        ("x-amz-server-side-encryption-customer-algorithm", "SSECustomerAlgorithm"),
    ):
        if name in headers:
            head[key] = headers[name]
    return head


class Fetcher:
    """Downloads and verifies objects of one bucket into one tree; thread-safe.

    ``client`` is a boto3 S3 client: it presigns, HEADs and lists; the bodies go over
    plain ``http.client``. ``rows`` maps relpath to the index row of present clips.
    """

    def __init__(
        self, client: Any, bucket: str, clips_dir: Path, rows: dict[str, ClipRecord]
    ) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.client = client
        self.bucket = bucket
        self.clips_dir = clips_dir
        self.rows = rows
        self._state = _ThreadState()
        # Every open connection of every thread, so that close() can reach them all.
        self._open: set[HTTPConnection] = set()
        self._open_lock = threading.Lock()
        self._retryable = (
            OSError,
            HTTPException,
            ClipdError,
            ValueError,
            BotoCoreError,
            ClientError,
        )
        # Written with O_DIRECT where the filesystem allows it (cleared at the first
        # refusal): the bytes go from our buffer to the disk without a page-cache copy
        # (a sixth of the CPU time) or write-back work; syncfs then only commits metadata.
        self.direct = True
        # Built at the first https connection: loading the CA bundle costs ~50 ms of CPU
        # before the first GET, for nothing with an http:// endpoint.
        self._tls: ssl.SSLContext | None = None
        self._presigner: Presigner | None = None
        self._presigner_lock = threading.Lock()

    def presign(self, key: str) -> str:
        """A presigned GET URL of ``key`` (one boto3 presign first, then signed here)."""
        if self._presigner is None:
            with self._presigner_lock:
                if self._presigner is None:
                    self._presigner = Presigner(self.client, self.bucket, _PRESIGN_TTL_S)
        return self._presigner.url(key)

    def close(self) -> None:
        """Close the connections of all threads; call once the pool has finished."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()

    def fetch(self, item: Item, present: bool) -> Result:
        """Fetch one object unless a verified copy is present; never raises for one object.

        ``present``: a file was at the target when the caller listed the folder (one
        listing per folder instead of a lookup per object, which contends on the folder's
        lock). The target's folder must exist. Blocks on the network and the disk;
        retries with backoff, then reports FAILED.
        """
        dest = self.clips_dir / item.plan.local_relpath
        last = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(_RETRY_BASE_S * 2 ** (attempt - 1))
            try:
                if present:
                    return self.check_present(item, dest)
                return self._download(item, dest)
            except self._retryable as exc:
                last = str(exc) or type(exc).__name__
        return Result(item, Status.FAILED, last)

    def head(self, key: str, part_number: int | None = None) -> dict[str, Any]:
        """HeadObject with checksums; StorageError when the store refuses. Blocks."""
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if part_number is not None:
            kwargs["PartNumber"] = part_number
        try:
            head: dict[str, Any] = self.client.head_object(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"s3://{self.bucket}/{key}: {exc}") from exc
        return head

    def starts_like_a_clip(self, item: Item) -> bool:
        """Do the object's first bytes carry its extension's container signature? A ranged
        GET; True when the store cannot tell (the object then counts as missing). Blocks."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=item.info.key, Range=f"bytes=0-{_SNIFF_BYTES - 1}"
            )
            with contextlib.closing(answer["Body"]) as body:
                head = body.read()
        except (BotoCoreError, ClientError, OSError):
            return True
        return signature_ok(item.plan.name.ext, head)

    def check_present(self, item: Item, dest: Path) -> Result:
        """A file is already at the target: PRESENT if it is the object's bytes. Blocks."""
        st = os.lstat(dest)
        if st.st_size != item.info.size_bytes:
            return Result(
                item,
                Status.FAILED,
                f"{item.plan.local_relpath} exists with {st.st_size} bytes, object has "
                f"{item.info.size_bytes}; remove it to fetch again",
            )
        expected = expected_from_head(self.head(item.info.key))
        row = self.rows.get(item.plan.local_relpath)
        if (
            expected.check in _SHA256_CHECKS
            and row is not None
            and row.identity == identity_of(st)
            and row.sha256
        ):
            if bytes.fromhex(row.sha256) == expected.digest:
                return Result(item, Status.PRESENT, sha256=row.sha256)
            return Result(item, Status.FAILED, f"{item.plan.local_relpath} differs from the object")
        outcome, sha = hash_local(dest, expected, self._part_size(expected, item.info.key))
        if outcome.verdict is Verdict.MATCH:
            return Result(item, Status.PRESENT, sha256=sha)
        return Result(
            item,
            Status.FAILED,
            f"{item.plan.local_relpath} differs from the object: {outcome.reason}",
        )

    def _part_size(self, expected: Expected, key: str) -> int | None:
        if not expected.needs_part_size:
            return None
        return int(self.head(key, part_number=1)["ContentLength"])

    def _get(self, url: str) -> tuple[tuple[str, str], HTTPResponse]:
        """Send a GET on this thread's connection to the URL's host; the response."""
        parts = urlsplit(url)
        slot = (parts.scheme, parts.netloc)
        connections = self._state.connections
        reused = slot in connections
        if not reused:
            connections[slot] = (
                HTTPSConnection(parts.netloc, timeout=_TIMEOUT_S, context=self._tls_context())
                if parts.scheme == "https"
                else HTTPConnection(parts.netloc, timeout=_TIMEOUT_S)
            )
            with self._open_lock:
                self._open.add(connections[slot])
        try:
            connections[slot].request("GET", f"{parts.path}?{parts.query}")
            return slot, connections[slot].getresponse()
        except (OSError, HTTPException):
            self._drop(slot)
            if not reused:
                raise
        # The server closed the idle keep-alive connection: once more on a new one.
        return self._get(url)

    def _tls_context(self) -> ssl.SSLContext:
        with self._open_lock:
            if self._tls is None:
                # botocore honours AWS_CA_BUNDLE for its own calls; the GETs trust the same.
                self._tls = ssl.create_default_context(
                    cafile=os.environ.get("AWS_CA_BUNDLE") or None
                )
            return self._tls

    def _drop(self, slot: tuple[str, str]) -> None:
        connection = self._state.connections.pop(slot, None)
        if connection is not None:
            connection.close()
            with self._open_lock:
                self._open.discard(connection)

    def _download(self, item: Item, dest: Path) -> Result:
        key = item.info.key
        slot, response = self._get(self.presign(key))
        # An error answer or a body not read to the end leaves bytes on the connection:
        # reused, the next GET would read them as its answer. Only a drained one is kept.
        drained = False
        try:
            if response.status != 200:
                code = _ERROR_CODE.search(response.read(_ERROR_BODY_BYTES))
                raise StorageError(
                    f"s3://{self.bucket}/{key}: GET answered {response.status}"
                    + (f" {code[1].decode(errors='replace')}" if code else "")
                )
            expected = expected_from_head(_head_mapping(response))
            if expected.check is Check.NONE:
                return Result(item, Status.FAILED, f"cannot verify: {expected.reason}")
            digest: Digester | _Sha256Only = (
                _Sha256Only()
                if expected.check in _SHA256_CHECKS
                else Digester(self._part_size(expected, key))
            )
            tmp = dest.parent / f".{dest.name}{TMP_SUFFIX}"
            bad = self._copy_to(tmp, response, digest, item.plan.name.ext)
            drained = bad is None
        finally:
            if not drained:
                self._drop(slot)
        if bad is not None:
            tmp.unlink(missing_ok=True)
            return Result(item, Status.NOT_CLIP, bad.value)
        outcome = verdict(expected, digest)  # type: ignore[arg-type]
        if outcome.verdict is not Verdict.MATCH:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"s3://{self.bucket}/{key}: {outcome.reason}")
        return Result(item, Status.MOVED, sha256=digest.sha256().hex(), tmp=tmp)

    def _copy_to(
        self, tmp: Path, response: HTTPResponse, digest: Digester | _Sha256Only, ext: str
    ) -> NotClip | None:
        """Stream the body into ``tmp`` through the digest; a cut body leaves no file."""
        buffer = self._state.buffer
        fd, direct = _open_tmp(tmp, self.direct)
        try:
            first = True
            size = 0
            # readinto fills the whole buffer (or up to Content-Length) and raises
            # IncompleteRead when the server cuts the body short.
            while count := response.readinto(buffer):
                chunk = buffer[:count]
                if first and not signature_ok(ext, bytes(chunk[:_SNIFF_BYTES])):
                    return NotClip.BAD_SIGNATURE
                first = False
                digest.update(chunk)
                size += count
                if direct and count % _DIRECT_ALIGN_BYTES:
                    # Only the last chunk is short: pad it, the truncate below cuts it.
                    chunk = buffer[: -(-count // _DIRECT_ALIGN_BYTES) * _DIRECT_ALIGN_BYTES]
                _write_all(fd, chunk)
            if direct and size % _DIRECT_ALIGN_BYTES:
                os.ftruncate(fd, size)  # cut the padding of the last block
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if direct and exc.errno == errno.EINVAL:
                self.direct = False  # the filesystem takes O_DIRECT but not our alignment
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return None


def _open_tmp(tmp: Path, direct: bool) -> tuple[int, bool]:
    """Open (truncate) the temp file, with O_DIRECT if asked and possible."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    if direct:
        try:
            return os.open(tmp, flags | os.O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no O_DIRECT here (tmpfs, some FUSE)
                raise
    return os.open(tmp, flags, 0o644), False


def _write_all(fd: int, chunk: memoryview) -> None:
    while chunk:
        chunk = chunk[os.write(fd, chunk) :]


def hash_local(path: Path, expected: Expected, part_size: int | None) -> tuple[Outcome, str]:
    """Hash a local file as the store would and compare; blocks on the read."""
    digest = Digester(part_size)
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK_BYTES):
            digest.update(chunk)
    return verdict(expected, digest), digest.sha256().hex()
