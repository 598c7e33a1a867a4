"""Checks on clip files: container signatures, validation verdicts and SHA-256 hashing.

Everything here blocks on the disk; callers run it in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from clipd.record import Identity

__all__ = [
    "BLOCK_BYTES",
    "Examined",
    "FileChangedError",
    "NotRegularFileError",
    "examine_file",
    "identity_of",
    "open_clip",
    "open_for_writing",
    "sha256_file",
    "signature_ok",
]

BLOCK_BYTES = 1024 * 1024  # hashlib releases the GIL on buffers this size
_SNIFF_BYTES = 64
_buffers = threading.local()


def _buffer() -> memoryview:
    """This thread's read buffer, allocated once: a fresh 1 MiB bytearray per file
    costs more (zero-fill, page faults, munmap) than hashing a small clip."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(BLOCK_BYTES))
    return view


def signature_ok(ext: str, head: bytes) -> bool:
    """Does ``head`` (the first bytes) look like the container its extension promises?"""
    ext = ext.lower()
    if ext in {".mp4", ".mov", ".m4v"}:
        # ISO BMFF: a box size then 'ftyp'; QuickTime files may start with other atoms.
        if head[4:8] == b"ftyp":
            return True
        return ext == ".mov" and head[4:8] in {b"moov", b"mdat", b"wide", b"free", b"skip"}
    if ext in {".webm", ".mkv"}:
        return head[:4] == b"\x1a\x45\xdf\xa3"
    if ext == ".gif":
        return head[:6] in {b"GIF87a", b"GIF89a"}
    return False


class FileChangedError(OSError):
    """The file changed (size, mtime, ctime or inode) while it was being read."""


class NotRegularFileError(OSError):
    """The path is a folder, FIFO, socket or device where a clip file was expected."""


@dataclass(frozen=True, slots=True)
class Examined:
    """The outcome of :func:`examine_file`: ``reason`` is empty when the file is a good clip."""

    reason: str
    identity: Identity | None
    sha256: str = ""
    # Whether another process had the file open for writing (asked for only; None: not
    # asked, or the kernel could not tell).
    writing: bool | None = None


def identity_of(st: os.stat_result) -> Identity:
    return Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def open_clip(path: str | os.PathLike[str]) -> int:
    """Open a clip file to read (blocks): never through a symlink (ELOOP), and without
    waiting for a writer if a FIFO stands in its place. The caller closes the fd."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)


def open_for_writing(fd: int) -> bool | None:
    """Whether any process has the file on ``fd`` (opened read-only) open for writing;
    None when the kernel cannot tell (not the file's owner and no CAP_LEASE, a
    filesystem without leases). Does not block.

    The kernel grants a read lease only on a file nobody has open for writing (EAGAIN
    otherwise); the lease is dropped at once.
    """
    try:
        # A writer opening the file while the lease is held makes the kernel signal this
        # process, SIGIO by default, which kills it; SIGURG is ignored unless handled.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def examine_file(
    path: str | os.PathLike[str],
    ext: str,
    min_bytes: int,
    max_bytes: int,
    fd: int = -1,
    *,
    writers: bool = False,
) -> Examined:
    """Validate and hash ``path`` in one read; blocks on the disk.

    Checks that it is a regular file (never following a symlink), its size bounds and
    its container signature, then hashes it. Raises FileNotFoundError if it is gone and
    FileChangedError if it changed while being read (a writer still at work).
    ``fd``: ``path`` already opened with :func:`open_clip` (examine_file closes it);
    every check is made on it as on a fresh one. ``writers``: also say whether another
    process has the file open for writing (:func:`open_for_writing`).
    """
    if fd < 0:
        fd = open_clip(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Examined("not a regular file: only regular files are clips", None)
        identity = Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        writing = open_for_writing(fd) if writers else None
        left = st.st_size
        if left < min_bytes:
            reason = f"size {left} bytes is below min_bytes {min_bytes}"
            return Examined(reason, identity, writing=writing)
        if left > max_bytes:
            reason = f"size {left} bytes is above max_bytes {max_bytes}"
            return Examined(reason, identity, writing=writing)
        view = _buffer()
        n = os.readv(fd, [view])
        if not signature_ok(ext, bytes(view[:_SNIFF_BYTES])):
            reason = f"container signature does not match {ext.lower()}"
            return Examined(reason, identity, writing=writing)
        digest = hashlib.sha256(view[:n])
        left -= n
        # No read just to see EOF (growth shows in the identity below); a small clip
        # is one read.
        while n and left > 0:
            n = os.readv(fd, [view])
            digest.update(view[:n])
            left -= n
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != identity:
            raise FileChangedError(f"{path}: changed while being read")
    finally:
        os.close(fd)
    return Examined("", identity, digest.hexdigest(), writing)


def sha256_file(path: Path) -> tuple[str, Identity]:
    """Hash ``path`` in 1 MiB blocks; returns the hex digest and the file's identity.

    Blocks on the disk. Raises OSError (FileNotFoundError if the file went away,
    FileChangedError if it changed while it was read, NotRegularFileError if it is not
    a regular file).
    """
    digest = hashlib.sha256()
    view = _buffer()
    # O_NONBLOCK: opening a FIFO put in a clip's place must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        before = identity_of(st)
        # Larger readahead for a cold read. Measured on 1 GiB (bench/README.md): 1 MiB
        # reads cost the same CPU as openssl and as 256 KiB or 4 MiB reads; mmap is a
        # little cheaper but a writer truncating the file would SIGBUS the daemon.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := os.readv(fd, [view]):
            digest.update(view[:n])
        if identity_of(os.fstat(fd)) != before:
            raise FileChangedError(f"{path}: changed while being read")
    finally:
        os.close(fd)
    return digest.hexdigest(), before
