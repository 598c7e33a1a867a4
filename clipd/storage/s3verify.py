"""Decide whether downloaded bytes are the bytes an S3 store says it holds.

Pure: no network, clock or disk. The caller HEADs (or GETs) the object, builds an
`Expected` with `expected_from_head`, feeds every downloaded chunk to a `Digester`, and
asks `verdict`. The strongest evidence the store offers wins, in this order:

1. ``x-amz-meta-sha256`` user metadata (hex), which clipd writes on every upload;
2. a full-object ``ChecksumSHA256`` (base64). A composite value (``<b64>-N``, or
   ``ChecksumType: COMPOSITE``) is a hash of part hashes, not of the object, so it is
   ignored; boto3 only returns checksums when asked with ``ChecksumMode="ENABLED"``;
3. the ETag of a single-part upload, which is the object's MD5 unless the object is
   encrypted with SSE-KMS or SSE-C;
4. a multipart ETag ``<md5 of the part MD5s>-N``, which can be recomputed only with the
   part size (``HeadObject(PartNumber=1)["ContentLength"]``) and only when all parts but
   the last had that size, as boto3, the AWS CLI and the SDKs upload them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

__all__ = [
    "Check",
    "Digester",
    "Expected",
    "Outcome",
    "Verdict",
    "expected_from_head",
    "multipart_etag",
    "verdict",
]

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")
_MULTIPART_ETAG = re.compile(r"([0-9a-fA-F]{32})-([0-9]+)")
_COMPOSITE_SUFFIX = re.compile(r"-[0-9]+\Z")
# With these the ETag is not the MD5 of the plaintext (AWS documents both cases).
_OPAQUE_ETAG_SSE = frozenset({"aws:kms", "aws:kms:dsse"})


class Check(Enum):
    """Which evidence `Expected` carries."""

    SHA256_METADATA = "sha256-metadata"
    SHA256_CHECKSUM = "sha256-checksum"
    MD5_ETAG = "md5-etag"
    MULTIPART_ETAG = "multipart-etag"
    NONE = "none"


class Verdict(Enum):
    """Closed set of answers of `verdict`."""

    MATCH = "match"
    MISMATCH = "mismatch"
    UNVERIFIABLE = "unverifiable"


class Outcome(NamedTuple):
    """A `Verdict` and a one-line reason fit for a log or a report."""

    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class Expected:
    """What the store says the object's bytes hash to.

    `digest` is the raw SHA-256 (32 bytes) or MD5 (16 bytes) to compare with; for
    `Check.MULTIPART_ETAG` it is the MD5 of the concatenated part MD5s and `part_count`
    is the ``-N`` suffix. `size_bytes` is the whole object's length when known.
    """

    check: Check
    digest: bytes = b""
    part_count: int = 0
    size_bytes: int | None = None
    reason: str = ""

    @property
    def needs_part_size(self) -> bool:
        """True when `verdict` can only decide given the multipart part size."""
        return self.check is Check.MULTIPART_ETAG


def expected_from_head(head: Mapping[str, Any]) -> Expected:
    """Pick the strongest check from a boto3 ``head_object``/``get_object`` response.

    Pass a whole-object response (no ``PartNumber``, no ``Range``): a ranged or per-part
    ContentLength is not the object's size and is not used. Never raises on odd values:
    a malformed field is skipped and the next kind of evidence is tried.
    """
    size_bytes = _whole_size(head)
    skipped: list[str] = []

    metadata = head.get("Metadata") or {}
    meta_sha = metadata.get("sha256")
    if isinstance(meta_sha, str) and _SHA256_HEX.fullmatch(meta_sha.strip()):
        return Expected(
            Check.SHA256_METADATA,
            bytes.fromhex(meta_sha.strip()),
            size_bytes=size_bytes,
            reason="x-amz-meta-sha256",
        )
    if meta_sha is not None:
        skipped.append(f"x-amz-meta-sha256={meta_sha!r} is not 64 hex digits")

    checksum = head.get("ChecksumSHA256")
    if isinstance(checksum, str):
        raw = _full_object_sha256(checksum, head.get("ChecksumType"))
        if raw is not None:
            return Expected(
                Check.SHA256_CHECKSUM, raw, size_bytes=size_bytes, reason="ChecksumSHA256"
            )
        skipped.append(f"ChecksumSHA256={checksum!r} is not a full-object SHA-256")

    etag = _unquote_etag(head.get("ETag"))
    if _MD5_ETAG.fullmatch(etag):
        sse = head.get("ServerSideEncryption")
        if sse in _OPAQUE_ETAG_SSE or head.get("SSECustomerAlgorithm"):
            skipped.append(f"ETag of an object encrypted with {sse or 'SSE-C'} is not its MD5")
        else:
            return Expected(
                Check.MD5_ETAG, bytes.fromhex(etag), size_bytes=size_bytes, reason="MD5 ETag"
            )
    multipart = _MULTIPART_ETAG.fullmatch(etag)
    if multipart is not None and int(multipart[2]) > 0:
        return Expected(
            Check.MULTIPART_ETAG,
            bytes.fromhex(multipart[1]),
            part_count=int(multipart[2]),
            size_bytes=size_bytes,
            reason="multipart ETag",
        )
    skipped.append(f"ETag={etag!r} is neither an MD5 nor a multipart ETag")
    return Expected(Check.NONE, size_bytes=size_bytes, reason="; ".join(skipped))


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """Return the S3 multipart ETag (unquoted ``<hex>-N``) for the given part MD5s."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


class Digester:
    """Streaming SHA-256 and MD5 of a download, the MD5 split per part when asked.

    One MD5 pass serves both uses: until a part size is set the running MD5 is the whole
    object's, which is also the first part's so far. `set_part_size` may therefore come
    late, as long as no more than one part's worth of bytes was fed. `update` does not
    copy its argument; hashlib releases the GIL for large buffers, so feeding 1 MiB
    chunks from a worker thread does not stall the event loop.
    """

    __slots__ = ("_done_parts", "_md5", "_part_fill", "_part_size", "_sha256", "_size")

    def __init__(self, part_size_bytes: int | None = None) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()
        self._done_parts: list[bytes] = []
        self._part_size: int | None = None
        self._part_fill = 0
        self._size = 0
        if part_size_bytes is not None:
            self.set_part_size(part_size_bytes)

    @property
    def size_bytes(self) -> int:
        """Bytes fed so far."""
        return self._size

    @property
    def part_size_bytes(self) -> int | None:
        """The part size in use, or None when parts are not tracked."""
        return self._part_size

    def set_part_size(self, part_size_bytes: int) -> None:
        """Start tracking per-part MD5s; raises ValueError if it is too late or invalid."""
        if part_size_bytes <= 0:
            raise ValueError(f"part_size_bytes={part_size_bytes!r}: must be > 0")
        if self._part_size is not None and self._part_size != part_size_bytes:
            raise ValueError(f"part_size_bytes already set to {self._part_size}")
        if self._size > part_size_bytes:
            raise ValueError(
                f"part_size_bytes={part_size_bytes}: {self._size} bytes already fed, "
                "so the first part's MD5 is lost"
            )
        self._part_size = part_size_bytes
        self._part_fill = self._size

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of the object."""
        view = memoryview(chunk).cast("B")
        self._sha256.update(view)
        self._size += len(view)
        if self._part_size is None:
            self._md5.update(view)
            return
        while view:
            if self._part_fill == self._part_size:
                self._done_parts.append(self._md5.digest())
                self._md5 = hashlib.md5()
                self._part_fill = 0
            take = min(len(view), self._part_size - self._part_fill)
            self._md5.update(view[:take])
            self._part_fill += take
            view = view[take:]

    def sha256(self) -> bytes:
        """SHA-256 of everything fed so far."""
        return self._sha256.digest()

    def md5(self) -> bytes | None:
        """MD5 of everything fed so far, or None once the bytes span several parts."""
        return None if self._done_parts else self._md5.digest()

    def part_md5s(self) -> tuple[bytes, ...] | None:
        """MD5 of each part so far (the last one partial), or None without a part size."""
        if self._part_size is None:
            return None
        return (*self._done_parts, self._md5.digest())

    def multipart_etag(self) -> str | None:
        """The multipart ETag these bytes would get with the part size, or None."""
        parts = self.part_md5s()
        return None if parts is None else multipart_etag(parts)


def verdict(expected: Expected, digester: Digester) -> Outcome:
    """Compare a finished download with what the store said; pure and non-blocking."""
    if expected.check is Check.NONE:
        return Outcome(Verdict.UNVERIFIABLE, f"store offers no usable hash: {expected.reason}")
    if expected.size_bytes is not None and expected.size_bytes != digester.size_bytes:
        return Outcome(
            Verdict.MISMATCH,
            f"size {digester.size_bytes} bytes, store says {expected.size_bytes}",
        )
    if expected.check in (Check.SHA256_METADATA, Check.SHA256_CHECKSUM):
        return _compare(expected, digester.sha256(), "SHA-256")
    if expected.check is Check.MD5_ETAG:
        md5 = digester.md5()
        if md5 is None:
            return Outcome(Verdict.UNVERIFIABLE, "single-part ETag but digester split into parts")
        return _compare(expected, md5, "MD5")
    return _verdict_multipart(expected, digester)


def _verdict_multipart(expected: Expected, digester: Digester) -> Outcome:
    parts = digester.part_md5s()
    if parts is None:
        return Outcome(Verdict.UNVERIFIABLE, "multipart ETag but part size unknown")
    if len(parts) != expected.part_count:
        # Parts of unequal size (allowed by S3) cannot be recomputed from one part size;
        # calling that a mismatch would condemn good data.
        return Outcome(
            Verdict.UNVERIFIABLE,
            f"{len(parts)} parts of {digester.part_size_bytes} bytes, "
            f"ETag says {expected.part_count}",
        )
    return _compare(expected, hashlib.md5(b"".join(parts)).digest(), "multipart ETag")


def _compare(expected: Expected, actual: bytes, what: str) -> Outcome:
    if actual == expected.digest:
        return Outcome(Verdict.MATCH, f"{what} matches {expected.reason}")
    return Outcome(
        Verdict.MISMATCH,
        f"{what} {actual.hex()} differs from {expected.reason} {expected.digest.hex()}",
    )


def _whole_size(head: Mapping[str, Any]) -> int | None:
    if "ContentRange" in head or "PartsCount" in head:
        return None
    size = head.get("ContentLength")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _full_object_sha256(value: str, checksum_type: object) -> bytes | None:
    if checksum_type == "COMPOSITE" or _COMPOSITE_SUFFIX.search(value):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    return raw if len(raw) == hashlib.sha256().digest_size else None


def _unquote_etag(value: object) -> str:
    if not isinstance(value, str):
        return ""
    etag = value.strip()
    etag = etag.removeprefix("W/")
    if len(etag) >= 2 and etag[0] == etag[-1] == '"':
        etag = etag[1:-1]
    return etag
