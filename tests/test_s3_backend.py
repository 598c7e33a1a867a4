"""The s3 backend against a real SeaweedFS: put, stat, presign, delete, list, index."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
from collections.abc import Callable
from pathlib import Path

from clipd.async_index import AsyncIndex
from clipd.config import S3Config
from clipd.index import index_path
from clipd.s3index import S3Catalog, plan_sync, sha256_in_head
from clipd.storage.s3 import ObjectInfo, S3Backend, etag_tag, identity_from
from tests.helpers import clip_bytes
from tests.s3server import S3Server

EXT = frozenset({".mp4"})


def backend_for(s3_server: S3Server, bucket: str, prefix: str = "clips") -> S3Backend:
    return S3Backend(
        S3Config(bucket=bucket, prefix=prefix, endpoint_url=s3_server.endpoint_url),
        client=s3_server.client(),
    )


def test_put_stat_presign_delete_round_trip(
    s3_server: S3Server, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    backend = backend_for(s3_server, make_bucket("be"))
    data = clip_bytes(7 * 1024 * 1024, 3)
    source = tmp_path / "upload.tmp"
    source.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    async def scenario() -> None:
        identity = await backend.put(source, "2024-01-01/Clip_p1.mp4", sha)
        assert identity.size_bytes == len(data) and identity.inode != 0  # the ETag's tag
        assert await backend.stat("2024-01-01/Clip_p1.mp4") == identity
        assert backend.local_path("2024-01-01/Clip_p1.mp4") is None
        url = await backend.presign("2024-01-01/Clip_p1.mp4", 60)
        assert url is not None
        assert await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()) == data
        assert await backend.delete("2024-01-01/Clip_p1.mp4") is True
        assert await backend.stat("2024-01-01/Clip_p1.mp4") is None
        assert await backend.delete("2024-01-01/Clip_p1.mp4") is False

    asyncio.run(scenario())
    assert not source.exists()  # put consumes the temp file, like the local backend
    assert backend.base_path == f"s3://{backend.bucket}/clips"


def test_put_stores_full_object_sha256_metadata(
    s3_server: S3Server, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("meta")
    backend = backend_for(s3_server, bucket, prefix="")
    data = clip_bytes(70 * 1024 * 1024, 5)  # above the multipart threshold
    source = tmp_path / "big.tmp"
    source.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    asyncio.run(backend.put(source, "2024-01-01/Big_m1.mp4", sha))
    head = s3_server.client().head_object(Bucket=bucket, Key="2024-01-01/Big_m1.mp4")
    assert head["Metadata"]["sha256"] == sha
    assert head["ETag"].strip('"').endswith("-5")  # multipart: the checksum is composite


def test_plan_sync_indexes_clip_keys_in_any_folder_and_drops_vanished() -> None:
    listed = [
        ObjectInfo("p/2024-01-01/A_j1.mp4", "2024-01-01/A_j1.mp4", 5, 100.0, "e"),
        ObjectInfo("p/other/deep/B b_j2.mp4", "other/deep/B b_j2.mp4", 5, 100.0, "e"),
        ObjectInfo("p/notes.txt", "notes.txt", 5, 100.0, "e"),
        ObjectInfo("p/x/A_j1.mp4", "x/A_j1.mp4", 5, 100.0, "e"),  # same job id again
    ]
    from clipd.record import Identity

    plan = plan_sync(listed, {"gone/C_j3.mp4": ("j3", Identity(1, 1, 1, 0))}, "p/", EXT)
    assert [kp.relpath for _, kp in plan.to_record] == [
        "2024-01-01/A_j1.mp4",
        "other/deep/B b_j2.mp4",
    ]
    assert plan.to_drop == ("j3",)
    assert plan.duplicates == ("p/x/A_j1.mp4",)


def test_catalog_lists_bucket_into_index_with_sha256_from_metadata(
    s3_server: S3Server, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("cat")
    s3 = s3_server.client()
    with_meta = clip_bytes(1000, 1)
    s3.put_object(
        Bucket=bucket,
        Key="clips/2024-02-01/Clip_k1.mp4",
        Body=with_meta,
        Metadata={"sha256": hashlib.sha256(with_meta).hexdigest()},
    )
    s3.put_object(Bucket=bucket, Key="clips/legacy/Old clip_k2.mp4", Body=clip_bytes(900, 2))
    s3.put_object(Bucket=bucket, Key="clips/readme.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="elsewhere/2024-02-01/Clip_k3.mp4", Body=b"x")
    backend = backend_for(s3_server, bucket)
    from clipd.config import Config

    async def scenario() -> dict[str, str]:
        index = AsyncIndex(index_path(tmp_path))
        await index.open()
        try:
            catalog = S3Catalog(Config(), index, backend)
            await catalog.reconcile()
            s3.delete_object(Bucket=bucket, Key="clips/legacy/Old clip_k2.mp4")
            first = {r.job_id: r.sha256 for r in await index.read(lambda ix: list(ix.records()))}
            await catalog.reconcile()
            after = {r.job_id for r in await index.read(lambda ix: list(ix.records()))}
            catalog.close()
            assert after == {"k1"}
            return first
        finally:
            await index.close()

    rows = asyncio.run(scenario())
    assert rows == {"k1": hashlib.sha256(with_meta).hexdigest(), "k2": ""}


def test_an_objects_identity_is_the_same_from_listing_head_and_ranged_get(
    s3_server: S3Server, make_bucket: Callable[..., str]
) -> None:
    bucket = make_bucket("ident")
    backend = backend_for(s3_server, bucket)
    s3_server.client().put_object(
        Bucket=bucket, Key="clips/2024-01-02/Clip_i1.mp4", Body=clip_bytes(3000, 4)
    )
    etag = s3_server.client().head_object(Bucket=bucket, Key="clips/2024-01-02/Clip_i1.mp4")["ETag"]

    async def identities() -> list[object]:
        body = await backend.open_range("2024-01-02/Clip_i1.mp4", 10, 20)
        assert body is not None
        body.close()
        return [await backend.stat("2024-01-02/Clip_i1.mp4"), body.identity]

    (listed,) = backend.list_blocking()
    assert asyncio.run(identities()) == [listed.identity, listed.identity]
    assert listed.identity.inode == etag_tag(etag) != 0


def test_identity_tells_apart_a_same_size_replacement_within_the_same_second() -> None:
    first = identity_from(100, 1700000000.2, '"0cc175b9c0f1b6a831c399e269772661"')
    second = identity_from(100, 1700000000.9, '"92eb5ffee6ae2fec3ad71c777531578f"')
    assert first.mtime_ns == second.mtime_ns and first != second
    assert identity_from(100, 1.0, "").inode == 0
    assert etag_tag('"abc-2"') == etag_tag("abc-2") < 2**56

    replaced = ObjectInfo("2024-01-01/A_j1.mp4", "2024-01-01/A_j1.mp4", 100, 1700000000.9, "x")
    indexed = {"2024-01-01/A_j1.mp4": ("j1", identity_from(100, 1700000000.2, "y"))}
    assert [i for i, _ in plan_sync([replaced], indexed, "", EXT).to_record] == [replaced]
    unchanged = {"2024-01-01/A_j1.mp4": ("j1", replaced.identity)}
    assert plan_sync([replaced], unchanged, "", EXT).to_record == ()


_SHA_OF_ABC = hashlib.sha256(b"abc").hexdigest()
_B64_OF_ABC = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="


def test_sha256_in_head_prefers_metadata_then_a_full_object_checksum_only() -> None:
    table: list[tuple[dict[str, object], str]] = [
        ({"Metadata": {"sha256": "AB" * 32}, "ChecksumSHA256": _B64_OF_ABC}, "ab" * 32),
        ({"Metadata": {"sha256": "nope"}, "ChecksumSHA256": _B64_OF_ABC}, _SHA_OF_ABC),
        ({"ChecksumSHA256": _B64_OF_ABC, "ChecksumType": "FULL_OBJECT"}, _SHA_OF_ABC),
        ({"ChecksumSHA256": _B64_OF_ABC + "-3"}, ""),  # composite multipart checksum
        ({"ChecksumSHA256": _B64_OF_ABC, "ChecksumType": "COMPOSITE"}, ""),
        ({"ChecksumSHA256": "not base64!"}, ""),
        ({"ChecksumSHA256": "YWJj"}, ""),  # base64, but not 32 bytes
        ({}, ""),
    ]
    for head, expected in table:
        assert sha256_in_head(head) == expected, head


def test_catalog_takes_sha256_from_a_full_object_checksum_never_a_composite_one(
    s3_server: S3Server, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("cks")
    s3 = s3_server.client()
    data = clip_bytes(2000, 8)
    s3.put_object(
        Bucket=bucket, Key="clips/2024-02-02/Sum_c1.mp4", Body=data, ChecksumAlgorithm="SHA256"
    )
    key = "clips/2024-02-02/Parts_c2.mp4"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    parts = []
    for number, part in enumerate((clip_bytes(5 * 1024 * 1024, 1), b"tail"), start=1):
        got = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="SHA256",
        )
        parts.append(
            {"PartNumber": number, "ETag": got["ETag"], "ChecksumSHA256": got["ChecksumSHA256"]}
        )
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    from clipd.config import Config

    async def scenario() -> dict[str, str]:
        index = AsyncIndex(index_path(tmp_path))
        await index.open()
        try:
            catalog = S3Catalog(Config(), index, backend_for(s3_server, bucket))
            await catalog.reconcile()
            catalog.close()
            return {r.job_id: r.sha256 for r in await index.read(lambda ix: list(ix.records()))}
        finally:
            await index.close()

    assert asyncio.run(scenario()) == {"c1": hashlib.sha256(data).hexdigest(), "c2": ""}
