"""clipd.storage.s3verify: picking the evidence, digesting streams, and the verdicts."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from hypothesis import given
from hypothesis import strategies as st

from clipd.storage.s3verify import (
    Check,
    Digester,
    Expected,
    Verdict,
    expected_from_head,
    multipart_etag,
    verdict,
)
from tests.s3server import S3Server

MiB = 1024 * 1024
_PART_BYTES = 5 * MiB  # S3's minimum part size
_BODY = b"clip bytes " * 100
_SHA = hashlib.sha256(_BODY).digest()
_MD5 = hashlib.md5(_BODY).digest()
_SHA_B64 = base64.b64encode(_SHA).decode()


def _naive_multipart_etag(data: bytes, part_size: int) -> str:
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def _digest(data: bytes, part_size: int | None = None, chunk: int = 7) -> Digester:
    digester = Digester(part_size)
    for i in range(0, len(data), chunk):
        digester.update(data[i : i + chunk])
    return digester


@pytest.mark.parametrize(
    ("head", "check", "digest", "part_count"),
    [
        pytest.param(
            {"Metadata": {"sha256": _SHA.hex()}, "ChecksumSHA256": _SHA_B64, "ETag": '"x-2"'},
            Check.SHA256_METADATA,
            _SHA,
            0,
            id="metadata-beats-all",
        ),
        pytest.param(
            {"Metadata": {"sha256": "nothex"}, "ChecksumSHA256": _SHA_B64},
            Check.SHA256_CHECKSUM,
            _SHA,
            0,
            id="bad-metadata-falls-through",
        ),
        pytest.param(
            {"ChecksumSHA256": _SHA_B64, "ETag": f'"{_MD5.hex()}"'},
            Check.SHA256_CHECKSUM,
            _SHA,
            0,
            id="checksum-beats-etag",
        ),
        pytest.param(
            {"ChecksumSHA256": _SHA_B64 + "-3", "ETag": f'"{_MD5.hex()}-3"'},
            Check.MULTIPART_ETAG,
            _MD5,
            3,
            id="composite-checksum-ignored",
        ),
        pytest.param(
            {"ChecksumSHA256": _SHA_B64, "ChecksumType": "COMPOSITE", "ETag": f'"{_MD5.hex()}"'},
            Check.MD5_ETAG,
            _MD5,
            0,
            id="composite-type-ignored",
        ),
        pytest.param(
            {"ChecksumSHA256": "not base64!", "ETag": f'"{_MD5.hex()}"'},
            Check.MD5_ETAG,
            _MD5,
            0,
            id="bad-base64-ignored",
        ),
        pytest.param(
            {"ETag": f'W/"{_MD5.hex().upper()}"'}, Check.MD5_ETAG, _MD5, 0, id="weak-upper-etag"
        ),
        pytest.param(
            {"ETag": f'"{_MD5.hex()}"', "ServerSideEncryption": "aws:kms"},
            Check.NONE,
            b"",
            0,
            id="kms-etag-is-not-md5",
        ),
        pytest.param(
            {"ETag": f'"{_MD5.hex()}"', "SSECustomerAlgorithm": "AES256"},
            Check.NONE,
            b"",
            0,
            id="sse-c-etag-is-not-md5",
        ),
        pytest.param(
            {"ETag": f'"{_MD5.hex()}"', "ServerSideEncryption": "AES256"},
            Check.MD5_ETAG,
            _MD5,
            0,
            id="sse-s3-etag-is-md5",
        ),
        pytest.param({"ETag": '"abc-2"'}, Check.NONE, b"", 0, id="garbage-etag"),
        pytest.param({"ETag": f'"{_MD5.hex()}-0"'}, Check.NONE, b"", 0, id="zero-parts"),
        pytest.param({}, Check.NONE, b"", 0, id="nothing"),
    ],
)
def test_expected_from_head_picks_strongest_evidence(
    head: Mapping[str, Any], check: Check, digest: bytes, part_count: int
) -> None:
    expected = expected_from_head(head)
    assert (expected.check, expected.digest, expected.part_count) == (check, digest, part_count)
    assert expected.needs_part_size is (check is Check.MULTIPART_ETAG)


@pytest.mark.parametrize(
    ("head", "size_bytes"),
    [
        ({"ContentLength": 10}, 10),
        ({"ContentLength": 10, "ContentRange": "bytes 0-9/20"}, None),
        ({"ContentLength": 10, "PartsCount": 2}, None),
        ({}, None),
    ],
)
def test_expected_from_head_trusts_only_whole_object_length(
    head: Mapping[str, Any], size_bytes: int | None
) -> None:
    assert expected_from_head(head).size_bytes == size_bytes


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


@pytest.mark.parametrize(
    ("expected", "data", "part_size", "result"),
    [
        (Expected(Check.SHA256_METADATA, _SHA, reason="m"), _BODY, None, Verdict.MATCH),
        (Expected(Check.SHA256_METADATA, _SHA, reason="m"), _flip(_BODY), None, Verdict.MISMATCH),
        (Expected(Check.SHA256_CHECKSUM, _SHA, reason="c"), _BODY, 300, Verdict.MATCH),
        (Expected(Check.MD5_ETAG, _MD5, reason="e"), _BODY, None, Verdict.MATCH),
        (Expected(Check.MD5_ETAG, _MD5, reason="e"), _flip(_BODY), None, Verdict.MISMATCH),
        (Expected(Check.MD5_ETAG, _MD5, reason="e"), _BODY, 300, Verdict.UNVERIFIABLE),
        (Expected(Check.MD5_ETAG, _MD5, reason="e"), _BODY, 5000, Verdict.MATCH),
        (Expected(Check.SHA256_METADATA, _SHA, size_bytes=1), _BODY, None, Verdict.MISMATCH),
        (Expected(Check.NONE, reason="nothing"), _BODY, None, Verdict.UNVERIFIABLE),
    ],
)
def test_verdict_table(
    expected: Expected, data: bytes, part_size: int | None, result: Verdict
) -> None:
    assert verdict(expected, _digest(data, part_size)).verdict is result


def _multipart_expected(data: bytes, part_size: int) -> Expected:
    return expected_from_head({"ETag": f'"{_naive_multipart_etag(data, part_size)}"'})


def test_verdict_multipart_match_and_mismatch() -> None:
    expected = _multipart_expected(_BODY, 300)
    assert verdict(expected, _digest(_BODY, 300)).verdict is Verdict.MATCH
    outcome = verdict(expected, _digest(_flip(_BODY), 300))
    assert outcome.verdict is Verdict.MISMATCH
    assert "multipart ETag" in outcome.reason


def test_verdict_multipart_without_part_size_is_unverifiable() -> None:
    outcome = verdict(_multipart_expected(_BODY, 300), _digest(_BODY))
    assert outcome == (Verdict.UNVERIFIABLE, "multipart ETag but part size unknown")


def test_verdict_multipart_with_other_part_count_is_unverifiable() -> None:
    # Unequal parts (or a wrong part size) must never be reported as corruption.
    assert verdict(_multipart_expected(_BODY, 300), _digest(_BODY, 100)).verdict is (
        Verdict.UNVERIFIABLE
    )


def test_digester_accepts_part_size_until_first_part_is_passed() -> None:
    digester = Digester()
    digester.update(_BODY[:300])
    digester.set_part_size(300)
    digester.update(memoryview(_BODY)[300:])
    assert digester.multipart_etag() == _naive_multipart_etag(_BODY, 300)
    assert digester.md5() is None
    assert digester.sha256() == _SHA


def test_digester_refuses_part_size_after_first_part() -> None:
    digester = Digester()
    digester.update(_BODY[:301])
    with pytest.raises(ValueError, match="301 bytes already fed"):
        digester.set_part_size(300)


@pytest.mark.parametrize("bad", [0, -1])
def test_digester_refuses_non_positive_part_size(bad: int) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        Digester(bad)


def test_multipart_etag_of_known_parts() -> None:
    # Two parts "a" and "b": md5(md5("a") + md5("b")), as AWS documents the format.
    md5s = [hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()]
    assert multipart_etag(md5s) == hashlib.md5(b"".join(md5s)).hexdigest() + "-2"


@given(
    data=st.binary(max_size=3000),
    part_size=st.integers(min_value=1, max_value=700),
    chunks=st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=20),
)
def test_digester_multipart_etag_equals_naive_split(
    data: bytes, part_size: int, chunks: list[int]
) -> None:
    digester = Digester(part_size)
    offset, i = 0, 0
    while offset < len(data):
        step = chunks[i % len(chunks)]
        digester.update(bytearray(data[offset : offset + step]))
        offset, i = offset + step, i + 1
    assert digester.multipart_etag() == _naive_multipart_etag(data, part_size)
    assert digester.sha256() == hashlib.sha256(data).digest()
    assert digester.size_bytes == len(data)


# Against the real SeaweedFS server.


def _payload(size_bytes: int) -> bytes:
    block = hashlib.sha256(b"s3verify").digest()
    return (block * (size_bytes // len(block) + 1))[:size_bytes]


def _stream(s3: Any, bucket: str, key: str, mangle: bool) -> Iterator[bytes]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    first = True
    for chunk in body.iter_chunks(chunk_size=MiB):
        yield _flip(chunk) if mangle and first else chunk
        first = False


def _check_download(s3: Any, bucket: str, key: str, head: Mapping[str, Any], mangle: bool) -> Any:
    expected = expected_from_head(head)
    part_size = None
    if expected.needs_part_size:
        part_size = s3.head_object(Bucket=bucket, Key=key, PartNumber=1)["ContentLength"]
    digester = Digester(part_size)
    for chunk in _stream(s3, bucket, key, mangle):
        digester.update(chunk)
    return expected.check, verdict(expected, digester).verdict


@pytest.mark.s3
@pytest.mark.parametrize(
    ("metadata", "checksum_mode", "check"),
    [
        (True, "DISABLED", Check.SHA256_METADATA),
        (False, "ENABLED", Check.SHA256_CHECKSUM),
        (False, "DISABLED", Check.MD5_ETAG),
    ],
)
@pytest.mark.parametrize("mangle", [False, True], ids=["intact", "flipped"])
def test_single_part_object_verifies(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    metadata: bool,
    checksum_mode: str,
    check: Check,
    mangle: bool,
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    body = _payload(3 * MiB + 5)
    meta = {"sha256": hashlib.sha256(body).hexdigest()} if metadata else {}
    s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm="SHA256", Metadata=meta)
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode=checksum_mode)
    result = Verdict.MISMATCH if mangle else Verdict.MATCH
    assert _check_download(s3, bucket, "k", head, mangle) == (check, result)


@pytest.mark.s3
@pytest.mark.parametrize("mangle", [False, True], ids=["intact", "flipped"])
def test_multipart_object_verifies_by_etag(
    s3_server: S3Server, make_bucket: Callable[..., str], mangle: bool
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    body = _payload(2 * _PART_BYTES + 4321)
    config = TransferConfig(multipart_threshold=_PART_BYTES, multipart_chunksize=_PART_BYTES)
    s3.upload_fileobj(
        io.BytesIO(body), bucket, "mp", Config=config, ExtraArgs={"ChecksumAlgorithm": "SHA256"}
    )
    # ChecksumMode on: the composite ChecksumSHA256 is offered and must be passed over.
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')
    result = Verdict.MISMATCH if mangle else Verdict.MATCH
    assert _check_download(s3, bucket, "mp", head, mangle) == (Check.MULTIPART_ETAG, result)
