"""The SeaweedFS fixture works, and SeaweedFS behaves as tests/s3server.py documents."""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.s3server import S3Server, delete_bucket_recursively

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
_PART_BYTES = 5 * MiB  # S3's minimum part size
_MULTIPART = TransferConfig(multipart_threshold=_PART_BYTES, multipart_chunksize=_PART_BYTES)


def _payload(size_bytes: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size_bytes // len(block) + 1))[:size_bytes]


def _listening_sockets(pid: int) -> list[Any]:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    # psutil < 6 (Debian 12 has 5.9.4) names it connections().
    conns = [c for p in procs for c in getattr(p, "net_connections", p.connections)(kind="inet")]
    # TCP listeners have status LISTEN; UDP sockets have no status and always count.
    return [c for c in conns if c.status in (psutil.CONN_LISTEN, psutil.CONN_NONE)]


def test_server_round_trips_object(s3_server: S3Server, make_bucket: Callable[..., str]) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="a/b.mp4", Body=b"hello clip")
    assert s3.get_object(Bucket=bucket, Key="a/b.mp4")["Body"].read() == b"hello clip"


def test_server_listens_only_on_loopback(s3_server: S3Server) -> None:
    sockets = _listening_sockets(s3_server.pid)
    ports = {c.laddr.port for c in sockets}
    assert int(s3_server.endpoint_url.rsplit(":", 1)[1]) in ports
    assert {c.laddr.ip for c in sockets} == {"127.0.0.1"}, sockets


def test_server_rejects_wrong_secret(s3_server: S3Server) -> None:
    bad = S3Server(
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        region=s3_server.region,
        log_path=s3_server.log_path,
        _weed=s3_server._weed,
    )
    with pytest.raises(ClientError) as info:
        bad.client().list_buckets()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_delete_bucket_recursively_removes_objects_and_uploads(s3_server: S3Server) -> None:
    s3 = s3_server.client()
    bucket = f"gone-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    s3.create_multipart_upload(Bucket=bucket, Key="unfinished")
    delete_bucket_recursively(s3, bucket)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_restart_keeps_objects_and_ports(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"durable")
    old_pid = s3_server.pid
    s3_server.restart()
    assert s3_server.pid != old_pid
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"durable"


def test_sha256_checksum_and_metadata_round_trip(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    body = _payload(100_000)
    digest = hashlib.sha256(body).digest()
    put = s3.put_object(
        Bucket=bucket,
        Key="c",
        Body=body,
        ChecksumAlgorithm="SHA256",
        Metadata={"sha256": digest.hex()},
    )
    assert put["ChecksumSHA256"] == base64.b64encode(digest).decode()
    head = s3.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    assert head["Metadata"] == {"sha256": digest.hex()}
    assert head["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert "ChecksumSHA256" not in s3.head_object(Bucket=bucket, Key="c")


def test_wrong_sha256_checksum_is_refused(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="c", Body=b"data", ChecksumSHA256=wrong)
    assert info.value.response["Error"]["Code"] == "BadDigest"


def test_multipart_etag_checksum_and_part_heads(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    body = _payload(2 * _PART_BYTES + 12345)
    s3.upload_fileobj(
        io.BytesIO(body), bucket, "mp", Config=_MULTIPART, ExtraArgs={"ChecksumAlgorithm": "SHA256"}
    )
    parts = [body[i : i + _PART_BYTES] for i in range(0, len(body), _PART_BYTES)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()

    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ETag"] == f'"{etag}-3"'
    assert head["ChecksumSHA256"].endswith("-3")
    # botocore before 1.36 does not model ChecksumType; where it does, it must say so.
    assert head.get("ChecksumType", "COMPOSITE") == "COMPOSITE"
    for number, part in enumerate(parts, start=1):
        part_head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert (part_head["ContentLength"], part_head["PartsCount"]) == (len(part), 3)


def test_part_head_of_single_part_object_is_whole(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="one", Body=b"12345")
    head = s3.head_object(Bucket=bucket, Key="one", PartNumber=1)
    assert (head["ContentLength"], head["PartsCount"]) == (5, 1)


def test_presigned_get_works_path_style(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="dir/clip.mp4", Body=b"presigned")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "dir/clip.mp4"}, ExpiresIn=60
    )
    assert url.startswith(f"{s3_server.endpoint_url}/{bucket}/dir/clip.mp4?")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"presigned"


def test_list_objects_v2_paginates(s3_server: S3Server, make_bucket: Callable[..., str]) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    keys = [f"p/{i:02d}" for i in range(7)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="p/", PaginationConfig={"PageSize": 3}
        )
    )
    assert [len(p["Contents"]) for p in pages] == [3, 3, 1]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys


def test_lifecycle_configuration_round_trips(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    s3 = s3_server.client()
    bucket = make_bucket()
    rule = {"ID": "age", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [rule]
