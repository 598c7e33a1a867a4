"""Storage backends behind one small protocol: where a clip's bytes live.

The web layer, retention and reports talk only to :class:`Backend`; the difference
between a local tree and an S3 bucket stays behind it. Every method that touches the
disk or the network runs in a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from clipd.config import Config
from clipd.record import Identity

__all__ = ["Backend", "RemoteBody", "make_backend"]


class RemoteBody(Protocol):
    """An open stream of a stored object's bytes; ``read`` and ``close`` block."""

    identity: Identity

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Where clips are stored; ``relpath`` is ``<day>/<Title>_<jobid>.<ext>``."""

    name: str

    @property
    def base_path(self) -> str:
        """What ``/api/v1/storage/metrics`` reports as ``base_path``."""
        ...

    async def stat(self, relpath: str) -> Identity | None:
        """The stored object's identity now, or None when it is gone."""
        ...

    def local_path(self, relpath: str) -> Path | None:
        """A local file to send with sendfile, or None when the bytes are remote."""
        ...

    async def presign(self, relpath: str, ttl_s: int) -> str | None:
        """A time-limited URL for the bytes, or None when the backend has none."""
        ...

    async def open_range(self, relpath: str, first: int, last: int) -> RemoteBody | None:
        """Bytes ``first``..``last`` (inclusive) of a remote clip, with the identity of the
        object they come from; None when it is gone. A local backend has no remote
        bytes (its files are sent by path) and raises NotImplementedError."""
        ...

    async def put(self, source: Path, relpath: str, sha256: str) -> Identity:
        """Move (or upload) the verified temp file ``source`` in as ``relpath``."""
        ...

    async def delete(self, relpath: str) -> bool:
        """Remove the stored clip; False when it was already gone."""
        ...


def make_backend(config: Config) -> Backend:
    """The backend ``storage.backend`` names (the s3 one imports boto3 lazily)."""
    if config.storage.backend == "s3":
        from clipd.storage.s3 import S3Backend

        return S3Backend(config.s3)
    from clipd.storage.local import LocalBackend

    return LocalBackend(config.clips_dir)
