"""The local backend: clips are files in the day folders of one tree."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from clipd.checks import identity_of
from clipd.record import Identity

if TYPE_CHECKING:
    from clipd.storage import RemoteBody

__all__ = ["LocalBackend", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """fsync a folder so a rename or unlink in it survives a power cut; blocks."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    name = "local"

    def __init__(self, clips_dir: Path) -> None:
        self.clips_dir = clips_dir

    @property
    def base_path(self) -> str:
        return str(self.clips_dir.resolve())

    def _path(self, relpath: str) -> Path:
        # relpaths come from the index (parsed names), never from a request.
        return self.clips_dir / relpath

    async def stat(self, relpath: str) -> Identity | None:
        try:
            st = await asyncio.to_thread(os.lstat, self._path(relpath))
        except FileNotFoundError:
            return None
        return identity_of(st)

    def local_path(self, relpath: str) -> Path | None:
        return self._path(relpath)

    async def presign(self, relpath: str, ttl_s: int) -> str | None:
        return None

    async def open_range(self, relpath: str, first: int, last: int) -> RemoteBody | None:
        raise NotImplementedError("local clips are sent by path (local_path)")

    async def put(self, source: Path, relpath: str, sha256: str) -> Identity:
        return await asyncio.to_thread(self._put_blocking, source, self._path(relpath))

    @staticmethod
    def _put_blocking(source: Path, target: Path) -> Identity:
        target.parent.mkdir(parents=True, exist_ok=True)
        # link() fails if the name exists: a clip is never overwritten in place.
        os.link(source, target)
        os.unlink(source)
        fsync_dir(target.parent)
        return identity_of(os.lstat(target))

    async def delete(self, relpath: str) -> bool:
        return await asyncio.to_thread(self._delete_blocking, self._path(relpath))

    @staticmethod
    def _delete_blocking(path: Path) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True
