"""LocalBackend and fsync_dir on a real temp tree (the s3 backend has tests/test_s3_backend.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from clipd.checks import identity_of
from clipd.storage.local import LocalBackend, fsync_dir

DAY = "2026-11-24"
RELPATH = f"{DAY}/Clip_a.mp4"


def _file(path: Path, data: bytes = b"clip bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_name_and_base_path_is_the_resolved_tree(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    backend = LocalBackend(tmp_path / "link")
    assert backend.name == "local"
    assert backend.base_path == str(real.resolve())


def test_local_path_is_inside_the_tree_even_before_the_file_exists(clips_dir: Path) -> None:
    assert LocalBackend(clips_dir).local_path(RELPATH) == clips_dir / DAY / "Clip_a.mp4"


async def test_presign_is_none_and_open_range_is_not_for_local_files(clips_dir: Path) -> None:
    backend = LocalBackend(clips_dir)
    _file(clips_dir / RELPATH)
    assert await backend.presign(RELPATH, 900) is None
    with pytest.raises(NotImplementedError):
        await backend.open_range(RELPATH, 0, 1)


async def test_stat_is_the_identity_of_the_file(clips_dir: Path) -> None:
    path = _file(clips_dir / RELPATH, b"12345")
    identity = await LocalBackend(clips_dir).stat(RELPATH)
    assert identity == identity_of(os.lstat(path))
    assert identity is not None and identity.size_bytes == 5


async def test_stat_of_a_missing_file_or_folder_is_none(clips_dir: Path) -> None:
    backend = LocalBackend(clips_dir)
    assert await backend.stat(RELPATH) is None
    assert await backend.stat("1999-01-01/Clip_b.mp4") is None


async def test_stat_describes_a_symlink_itself_not_its_target(
    clips_dir: Path, tmp_path: Path
) -> None:
    target = _file(tmp_path / "elsewhere.mp4", b"x" * 1000)
    link = clips_dir / RELPATH
    link.parent.mkdir()
    link.symlink_to(target)
    identity = await LocalBackend(clips_dir).stat(RELPATH)
    assert identity == identity_of(os.lstat(link))
    assert identity is not None and identity.inode != target.stat().st_ino


async def test_put_moves_the_file_in_and_makes_the_day_folder(
    clips_dir: Path, tmp_path: Path
) -> None:
    data = b"uploaded clip"
    source = _file(tmp_path / "upload.tmp", data)
    inode = source.stat().st_ino
    identity = await LocalBackend(clips_dir).put(source, RELPATH, hashlib.sha256(data).hexdigest())
    target = clips_dir / RELPATH
    assert not source.exists()
    assert target.read_bytes() == data
    assert identity == identity_of(os.lstat(target))
    assert identity.inode == inode  # linked in, not copied
    assert target.stat().st_nlink == 1


async def test_put_never_overwrites_an_existing_clip(clips_dir: Path, tmp_path: Path) -> None:
    existing = _file(clips_dir / RELPATH, b"first")
    source = _file(tmp_path / "upload.tmp", b"second")
    with pytest.raises(FileExistsError):
        await LocalBackend(clips_dir).put(source, RELPATH, "00" * 32)
    assert existing.read_bytes() == b"first"
    assert source.read_bytes() == b"second"  # the caller still owns its temp file


async def test_delete_removes_the_file_then_reports_it_gone(clips_dir: Path) -> None:
    backend = LocalBackend(clips_dir)
    path = _file(clips_dir / RELPATH)
    assert await backend.delete(RELPATH) is True
    assert not path.exists()
    assert path.parent.is_dir()  # the day folder is retention's to remove
    assert await backend.delete(RELPATH) is False
    assert await backend.delete("1999-01-01/Clip_b.mp4") is False


async def test_delete_removes_a_symlink_and_leaves_its_target(
    clips_dir: Path, tmp_path: Path
) -> None:
    target = _file(tmp_path / "elsewhere.mp4")
    link = clips_dir / RELPATH
    link.parent.mkdir()
    link.symlink_to(target)
    assert await LocalBackend(clips_dir).delete(RELPATH) is True
    assert not link.is_symlink() and not link.exists() and target.exists()


def test_fsync_dir_accepts_a_folder_and_refuses_anything_else(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsync_dir(_file(tmp_path / "file"))
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
