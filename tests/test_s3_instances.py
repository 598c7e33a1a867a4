"""s3 mode daemons: READY after listing, several instances over one bucket, one leader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clipd.config import load
from clipd.services import services_for
from tests.helpers import DaemonProcess, clip_bytes, wait_for
from tests.s3server import S3Server


def _env(s3_server: S3Server, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "CLIPD_S3_RELIST_INTERVAL_SECONDS": "0.5",
        **extra,
    }


def test_s3_daemon_indexes_the_bucket_before_ready_and_keeps_no_tree(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
) -> None:
    bucket = make_bucket("ready")
    s3 = s3_server.client()
    for n in range(3):
        s3.put_object(Bucket=bucket, Key=f"2024-03-0{n + 1}/Clip_r{n}.mp4", Body=clip_bytes(500, n))
    s3.put_object(Bucket=bucket, Key="misc/Loose_r9.mp4", Body=clip_bytes(500, 9))
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"not a clip")

    daemon = make_daemon(env=_env(s3_server, bucket)).start()

    health = daemon.get_json("/health")
    assert health["file_count"] == 4 and health["storage_backend"] == "s3"
    assert daemon.get_json("/api/v1/storage/metrics")["base_path"] == f"s3://{bucket}"
    assert sorted(p.name for p in clips_dir.iterdir()) == [".clipd"]


def test_two_instances_over_one_bucket_both_see_a_new_clip(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    bucket = make_bucket("two")
    first = make_daemon(env=_env(s3_server, bucket), clips=tmp_path / "a").start()
    second = make_daemon(
        env=_env(s3_server, bucket, CLIPD_S3_RETENTION_LEADER="false"), clips=tmp_path / "b"
    ).start()
    assert first.get_json("/health")["file_count"] == 0

    s3_server.client().put_object(
        Bucket=bucket, Key="2024-04-01/New_n1.mp4", Body=clip_bytes(800, 1)
    )

    for daemon in (first, second):
        wait_for(
            lambda d=daemon: d.get_json("/health")["file_count"] == 1,
            15,
            "the re-list finding the new clip",
        )
    s3_server.client().delete_object(Bucket=bucket, Key="2024-04-01/New_n1.mp4")
    for daemon in (first, second):
        wait_for(
            lambda d=daemon: d.get_json("/health")["file_count"] == 0,
            15,
            "the re-list dropping the deleted clip",
        )


@pytest.mark.parametrize(("leader", "runs_retention"), [("true", True), ("false", False)])
def test_only_the_retention_leader_runs_retention_in_s3_mode(
    leader: str, runs_retention: bool
) -> None:
    config = load(
        {}, {"STORAGE_BACKEND": "s3", "S3_BUCKET": "b", "CLIPD_S3_RETENTION_LEADER": leader}, None
    )
    names = {getattr(s, "__name__", "") for s in services_for(config)}
    assert ("retention_service" in names) is runs_retention


def test_s3_download_redirects_to_a_presigned_url_serving_the_bytes(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    import hashlib
    import urllib.error
    import urllib.request

    bucket = make_bucket("dl")
    data = clip_bytes(4000, 3)
    s3_server.client().put_object(
        Bucket=bucket,
        Key="2024-05-01/Clip_d1.mp4",
        Body=data,
        Metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    daemon = make_daemon(env=_env(s3_server, bucket)).start()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"{daemon.url}/api/v1/jobs/d1/download")
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 302
        location = exc.headers["Location"]
    assert location.startswith(s3_server.endpoint_url)
    with urllib.request.urlopen(location) as response:
        assert response.read() == data


def _no_redirect_get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_a_clip_put_through_one_instance_is_served_by_the_other_before_any_relist(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    import hashlib
    import json
    import urllib.request

    bucket = make_bucket("miss")
    slow = {"CLIPD_S3_RELIST_INTERVAL_SECONDS": "3600", "CLIPD_API_TOKEN": "tok"}
    first = make_daemon(env=_env(s3_server, bucket, **slow), clips=tmp_path / "a").start()
    second = make_daemon(env=_env(s3_server, bucket, **slow), clips=tmp_path / "b").start()
    data = clip_bytes(50_000, 7)
    put = urllib.request.Request(
        f"{first.url}/api/v1/jobs/m1?title=Shared",
        data=data,
        method="PUT",
        headers={"Authorization": "Bearer tok", "Content-Type": "video/mp4"},
    )
    with urllib.request.urlopen(put, timeout=10) as response:
        assert response.status in {200, 201}
    sha = hashlib.sha256(data).hexdigest()

    status, _, body = second.get("/api/v1/jobs/m1")
    assert status == 200, body
    assert json.loads(body)["sha256"] == sha
    status, headers, _ = _no_redirect_get(f"{second.url}/api/v1/jobs/m1/download")
    assert status == 302 and headers["ETag"] == f'"{sha}"'
    with urllib.request.urlopen(headers["Location"], timeout=10) as response:
        assert response.read() == data
    assert second.get("/api/v1/jobs/nosuch1")[0] == 404


def test_a_clip_without_stored_sha256_is_served_without_etag_or_digest_and_never_refused(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    import json
    import urllib.request

    bucket = make_bucket("nosha")
    data = clip_bytes(9_000, 5)
    s3_server.client().put_object(Bucket=bucket, Key="2024-05-02/Bare_n1.mp4", Body=data)
    # Scrub on and due at once (never verified): it must not judge remote bytes.
    daemon = make_daemon(env=_env(s3_server, bucket, CLIPD_SCRUB_MIN_INTERVAL_HOURS="0")).start()

    status, _, body = daemon.get("/api/v1/jobs/n1")
    assert status == 200 and json.loads(body)["sha256"] == ""
    for extra in ({}, {"If-None-Match": '""'}, {"If-None-Match": 'W/""'}):
        status, headers, _ = _no_redirect_get(f"{daemon.url}/api/v1/jobs/n1/download", extra)
        assert status == 302, (extra, status)
        assert "ETag" not in headers and "Repr-Digest" not in headers
    status, _, _ = _no_redirect_get(f"{daemon.url}/api/v1/jobs/n1/download", {"If-Match": '""'})
    assert status == 412
    status, headers, _ = _no_redirect_get(
        f"{daemon.url}/api/v1/jobs/n1/download", {"If-None-Match": "*"}
    )
    assert status == 304 and "ETag" not in headers
    wait_for(lambda: "scrub stops" in daemon.log(), 15, "scrub standing down in s3 mode")
    assert daemon.metric("clipd_scrub_mismatches_total") == 0
    assert daemon.metric("clipd_integrity_mismatches_total") == 0
    with urllib.request.urlopen(
        _no_redirect_get(f"{daemon.url}/api/v1/jobs/n1/download")[1]["Location"], timeout=10
    ) as response:
        assert response.read() == data


def test_clipd_verify_refuses_s3_mode_instead_of_reporting_remote_clips_as_missing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from clipd.cli import main

    code = main(["verify"], {"STORAGE_BACKEND": "s3", "S3_BUCKET": "b", "CLIPS_DIR": str(tmp_path)})

    assert code == 78
    assert "local tree" in capsys.readouterr().err


def test_s3_proxy_mode_streams_the_object_with_local_semantics(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    import hashlib
    import urllib.request

    bucket = make_bucket("proxy")
    data = clip_bytes(3 * 1024 * 1024 + 17, 5)  # several reads from the store
    sha = hashlib.sha256(data).hexdigest()
    s3_server.client().put_object(
        Bucket=bucket, Key="2024-05-02/Clip_p1.mp4", Body=data, Metadata={"sha256": sha}
    )
    env = _env(s3_server, bucket, CLIPD_S3_DOWNLOAD_MODE="proxy")
    daemon = make_daemon(env=env).start()
    url = "/api/v1/jobs/p1/download"
    status, headers, body = _no_redirect_get(daemon.url + url)
    assert (status, body) == (200, data)
    assert headers["ETag"] == f'"{sha}"' and headers["Content-Length"] == str(len(data))
    assert headers["Content-Disposition"].startswith('attachment; filename="Clip_p1.mp4"')
    status, headers, body = _no_redirect_get(daemon.url + url, {"Range": "bytes=1048570-1048580"})
    assert (status, body) == (206, data[1048570:1048581])
    assert headers["Content-Range"] == f"bytes 1048570-1048580/{len(data)}"
    status, _, body = _no_redirect_get(daemon.url + url, {"If-None-Match": f'"{sha}"'})
    assert (status, body) == (304, b"")
    head = urllib.request.Request(daemon.url + url, method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert response.status == 200 and response.read() == b""
        assert response.headers["Content-Length"] == str(len(data))
    assert daemon.metric('clipd_downloads_total{code="200"}') >= 1


def test_s3_proxy_mode_never_streams_an_object_replaced_behind_clipds_back(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    import hashlib

    bucket = make_bucket("proxyswap")
    s3 = s3_server.client()
    data = clip_bytes(5000, 6)
    s3.put_object(
        Bucket=bucket,
        Key="2024-05-03/Clip_s1.mp4",
        Body=data,
        Metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    env = _env(
        s3_server,
        bucket,
        CLIPD_S3_DOWNLOAD_MODE="proxy",
        CLIPD_S3_RELIST_INTERVAL_SECONDS="3600",  # only the download's own check sees it
    )
    daemon = make_daemon(env=env).start()
    assert _no_redirect_get(f"{daemon.url}/api/v1/jobs/s1/download")[2] == data
    other = clip_bytes(6000, 7)
    s3.put_object(Bucket=bucket, Key="2024-05-03/Clip_s1.mp4", Body=other)
    status, headers, body = _no_redirect_get(f"{daemon.url}/api/v1/jobs/s1/download")
    assert status == 409 and headers["Content-Type"].startswith("application/json")
    assert b"integrity_mismatch" in body and other[:100] not in body


def _put_through(daemon: DaemonProcess, job: str, data: bytes) -> str:
    """PUT a clip through ``daemon`` (token "tok"); returns its relpath."""
    import json
    import urllib.request

    put = urllib.request.Request(
        f"{daemon.url}/api/v1/jobs/{job}?title=Same",
        data=data,
        method="PUT",
        headers={"Authorization": "Bearer tok", "Content-Type": "video/mp4"},
    )
    with urllib.request.urlopen(put, timeout=10) as response:
        created = json.loads(response.read())
    return f"{created['day']}/{created['filename']}"


@pytest.mark.parametrize("mode", ["proxy", "redirect"])
def test_a_same_size_replacement_within_the_same_second_is_refused_not_served(
    mode: str,
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    bucket = make_bucket("samesec")
    s3 = s3_server.client()
    slow = {"CLIPD_S3_RELIST_INTERVAL_SECONDS": "3600", "CLIPD_API_TOKEN": "tok"}
    env = _env(s3_server, bucket, CLIPD_S3_DOWNLOAD_MODE=mode, **slow)
    daemon = make_daemon(env=env).start()
    # LastModified has one-second resolution: retry (new job) until the replacement lands
    # in the same second as the original, the case only the ETag can tell apart.
    for attempt in range(10):
        job = f"same{attempt}"
        relpath = _put_through(daemon, job, clip_bytes(20_000, attempt))
        before = s3.head_object(Bucket=bucket, Key=relpath)
        other = clip_bytes(20_000, 100 + attempt)
        s3.put_object(Bucket=bucket, Key=relpath, Body=other)
        after = s3.head_object(Bucket=bucket, Key=relpath)
        if before["LastModified"] == after["LastModified"]:
            break
    else:
        raise AssertionError("no replacement landed within the original's second")
    assert before["ContentLength"] == after["ContentLength"]

    status, headers, body = _no_redirect_get(f"{daemon.url}/api/v1/jobs/{job}/download")

    assert status == 409 and b"integrity_mismatch" in body, (status, headers)
    assert other[:100] not in body and "Location" not in headers


@pytest.mark.parametrize("mode", ["proxy", "redirect"])
def test_index_rows_from_before_the_etag_identity_are_re_recorded_before_ready(
    mode: str,
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
    clips_dir: Path,
) -> None:
    import hashlib
    import sqlite3

    bucket = make_bucket("upgrade")
    s3 = s3_server.client()
    data = {job: clip_bytes(7_000 + n, n) for n, job in enumerate(("u1", "u2"))}
    for job, body in data.items():
        s3.put_object(
            Bucket=bucket,
            Key=f"2024-06-01/Clip_{job}.mp4",
            Body=body,
            Metadata={"sha256": hashlib.sha256(body).hexdigest()},
        )
    env = _env(s3_server, bucket, CLIPD_S3_DOWNLOAD_MODE=mode)
    env["CLIPD_S3_RELIST_INTERVAL_SECONDS"] = "3600"  # only the start-up listing re-records
    first = make_daemon(env=env).start()
    assert first.stop() == 0
    # The index as the previous release left it: no ETag in the identity (inode 0).
    conn = sqlite3.connect(clips_dir / ".clipd" / "index.sqlite3")
    with conn:
        conn.execute("UPDATE clips SET inode = 0, ingested_at = 1000.0, display_title = 'Kept'")
    conn.close()

    daemon = make_daemon(env=env).start()

    for job, body in data.items():
        status, headers, got = _no_redirect_get(f"{daemon.url}/api/v1/jobs/{job}/download")
        assert status == (200 if mode == "proxy" else 302), (status, got)
        assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
        assert mode != "proxy" or got == body
    assert daemon.metric("clipd_integrity_mismatches_total") == 0
    assert "ERROR" not in daemon.log()
    conn = sqlite3.connect(clips_dir / ".clipd" / "index.sqlite3")
    rows = conn.execute("SELECT inode, ingested_at, display_title FROM clips").fetchall()
    conn.close()
    assert len(rows) == 2 and all(r[0] != 0 and r[1:] == (1000.0, "Kept") for r in rows), rows


def test_an_object_put_with_a_sha256_checksum_by_another_writer_gets_its_etag(
    s3_server: S3Server,
    make_bucket: Callable[..., str],
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    import hashlib
    import json

    bucket = make_bucket("cksum")
    data = clip_bytes(6_000, 9)
    sha = hashlib.sha256(data).hexdigest()
    s3_server.client().put_object(
        Bucket=bucket, Key="2024-06-02/Ext_e1.mp4", Body=data, ChecksumAlgorithm="SHA256"
    )
    daemon = make_daemon(env=_env(s3_server, bucket, CLIPD_S3_DOWNLOAD_MODE="proxy")).start()

    status, _, body = daemon.get("/api/v1/jobs/e1")
    assert status == 200 and json.loads(body)["sha256"] == sha
    status, headers, body = _no_redirect_get(f"{daemon.url}/api/v1/jobs/e1/download")
    assert (status, body) == (200, data) and headers["ETag"] == f'"{sha}"'
    assert "Repr-Digest" in headers
