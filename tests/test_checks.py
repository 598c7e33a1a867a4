"""Container signatures, examine_file verdicts and sha256_file on real files.

Ingest, scrub and download tests use these through the daemon; here each verdict,
bound and error is pinned down on its own.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from clipd import checks as checks_mod
from clipd.checks import (
    BLOCK_BYTES,
    Examined,
    FileChangedError,
    NotRegularFileError,
    examine_file,
    identity_of,
    open_clip,
    sha256_file,
    signature_ok,
)
from clipd.record import Identity
from tests.helpers import clip_bytes

FTYP = b"\x00\x00\x00\x18ftypisom"
EBML = b"\x1a\x45\xdf\xa3\x01\x00"


@pytest.mark.parametrize(
    ("ext", "head", "ok"),
    [
        (".mp4", FTYP, True),
        (".MP4", FTYP, True),  # the extension's case does not matter
        (".m4v", FTYP, True),
        (".mov", FTYP, True),
        (".mov", b"\x00\x00\x00\x08moov", True),
        (".mov", b"\x00\x00\x00\x08mdat", True),
        (".mov", b"\x00\x00\x00\x08wide", True),
        (".mov", b"\x00\x00\x00\x08free", True),
        (".mov", b"\x00\x00\x00\x08skip", True),
        (".mp4", b"\x00\x00\x00\x08moov", False),  # only QuickTime may start without ftyp
        (".m4v", b"\x00\x00\x00\x08mdat", False),
        (".mp4", b"ftyp\x00\x00\x00\x18", False),  # ftyp must follow the 4-byte size
        (".mp4", b"", False),
        (".webm", EBML, True),
        (".mkv", EBML, True),
        (".webm", FTYP, False),
        (".mkv", b"\x1a\x45\xdf", False),  # truncated magic
        (".gif", b"GIF87a..", True),
        (".gif", b"GIF89a..", True),
        (".gif", b"GIF88a..", False),
        (".avi", b"RIFF....AVI ", False),  # not an allowed container
        ("", FTYP, False),
    ],
)
def test_signature_ok(ext: str, head: bytes, ok: bool) -> None:
    assert signature_ok(ext, head) is ok


def test_identity_of_takes_size_mtime_ctime_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    st = os.stat(path)
    assert identity_of(st) == Identity(5, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "size", [40, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 2 * BLOCK_BYTES + 12345]
)
def test_examine_file_hashes_whole_files_of_any_size(tmp_path: Path, size: int) -> None:
    data = clip_bytes(size, seed=size)
    path = _write(tmp_path / "C_a.mp4", data)
    assert examine_file(path, ".mp4", 1, 10**12) == Examined(
        "", identity_of(os.lstat(path)), hashlib.sha256(data).hexdigest()
    )


def test_examine_file_size_bounds_are_inclusive(tmp_path: Path) -> None:
    path = _write(tmp_path / "C_a.mp4", clip_bytes(100))
    identity = identity_of(os.lstat(path))
    assert examine_file(path, ".mp4", 100, 100).reason == ""
    assert examine_file(path, ".mp4", 101, 1000) == Examined(
        "size 100 bytes is below min_bytes 101", identity
    )
    assert examine_file(path, ".mp4", 1, 99) == Examined(
        "size 100 bytes is above max_bytes 99", identity
    )


def test_examine_file_names_the_lowercased_extension_on_a_bad_signature(tmp_path: Path) -> None:
    path = _write(tmp_path / "C_a.MP4", b"\x1a\x45\xdf\xa3" + bytes(100))
    result = examine_file(path, ".MP4", 1, 1000)
    assert result == Examined(
        "container signature does not match .mp4", identity_of(os.lstat(path))
    )


def test_examine_file_refuses_an_empty_file_by_its_signature(tmp_path: Path) -> None:
    path = _write(tmp_path / "C_a.mp4", b"")
    assert examine_file(path, ".mp4", 0, 1000).reason == "container signature does not match .mp4"


def test_examine_file_says_a_folder_is_not_a_clip(tmp_path: Path) -> None:
    folder = tmp_path / "C_a.mp4"
    folder.mkdir()
    assert examine_file(folder, ".mp4", 0, 1000) == Examined(
        "not a regular file: only regular files are clips", None
    )


def test_examine_file_on_a_fifo_answers_at_once_without_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "C_a.mp4"
    os.mkfifo(fifo)
    assert examine_file(fifo, ".mp4", 0, 1000).reason.startswith("not a regular file")


def test_examine_file_never_follows_a_symlink(tmp_path: Path) -> None:
    target = _write(tmp_path / "real.mp4", clip_bytes(100))
    link = tmp_path / "C_a.mp4"
    link.symlink_to(target)
    with pytest.raises(OSError) as raised:
        examine_file(link, ".mp4", 1, 1000)
    assert raised.value.errno == errno.ELOOP


def test_examine_file_raises_file_not_found_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        examine_file(tmp_path / "gone.mp4", ".mp4", 1, 1000)


@pytest.mark.parametrize("verdict", ["good", "too small"])
def test_examine_file_closes_the_fd_it_was_given(tmp_path: Path, verdict: str) -> None:
    path = _write(tmp_path / "C_a.mp4", clip_bytes(100))
    fd = open_clip(path)
    examine_file(path, ".mp4", 1 if verdict == "good" else 1000, 1000, fd=fd)
    with pytest.raises(OSError) as raised:
        os.fstat(fd)
    assert raised.value.errno == errno.EBADF


def test_examine_file_uses_the_given_fd_not_the_path(tmp_path: Path) -> None:
    data = clip_bytes(100, seed=1)
    path = _write(tmp_path / "C_a.mp4", data)
    fd = open_clip(path)
    os.unlink(path)  # the fd still reads the file it opened
    result = examine_file(path, ".mp4", 1, 1000, fd=fd)
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def _grow_during_first_read(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """A writer appends while the file is being read (after the first block)."""
    real = os.readv
    calls = [0]

    def readv(fd: int, buffers: list[memoryview]) -> int:
        n = real(fd, buffers)
        calls[0] += 1
        if calls[0] == 1:
            with open(path, "ab") as f:
                f.write(b"more")
        return n

    monkeypatch.setattr(checks_mod.os, "readv", readv)


def test_examine_file_raises_file_changed_when_written_during_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "C_a.mp4", clip_bytes(BLOCK_BYTES + 10))
    _grow_during_first_read(monkeypatch, path)
    with pytest.raises(FileChangedError, match="changed while being read"):
        examine_file(path, ".mp4", 1, 10**9)


def test_sha256_file_returns_digest_and_identity_before_the_read(tmp_path: Path) -> None:
    data = clip_bytes(2 * BLOCK_BYTES + 7, seed=9)
    path = _write(tmp_path / "C_a.mp4", data)
    assert sha256_file(path) == (hashlib.sha256(data).hexdigest(), identity_of(os.lstat(path)))


def test_sha256_file_hashes_an_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty", b"")
    assert sha256_file(path)[0] == hashlib.sha256(b"").hexdigest()


def test_sha256_file_raises_file_changed_when_written_during_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "C_a.mp4", clip_bytes(100))
    _grow_during_first_read(monkeypatch, path)
    with pytest.raises(FileChangedError):
        sha256_file(path)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_sha256_file_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "C_a.mp4"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(NotRegularFileError) as raised:
        sha256_file(path)
    assert raised.value.errno == errno.EINVAL and raised.value.filename == str(path)


def test_sha256_file_never_follows_a_symlink(tmp_path: Path) -> None:
    link = tmp_path / "C_a.mp4"
    link.symlink_to(_write(tmp_path / "real", b"x"))
    with pytest.raises(OSError) as raised:
        sha256_file(link)
    assert raised.value.errno == errno.ELOOP


def test_check_errors_are_oserrors_so_io_handlers_catch_them() -> None:
    assert issubclass(FileChangedError, OSError)
    assert issubclass(NotRegularFileError, OSError)
