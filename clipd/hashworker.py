"""Examining clip files, in the daemon's threads or in helper processes for a big backlog.

:func:`examine_one` validates and hashes one file and returns its record or a verdict;
ingest calls it from its thread pool. The per-file work of a whole-tree pass (name
parse, open, read, SHA-256, record) mostly holds the GIL, so threads use about one core:
a first index of 20,000 small clips is CPU-bound in Python. :class:`HashWorkers` runs the
same function in ``python -m clipd.hashworker`` processes instead, one request (a batch
of files) at a time over stdin/stdout pipes.

A worker is a plain child process, not multiprocessing: it exits when its stdin closes,
so the daemon's death (even SIGKILL) ends it at the end of its current batch, and it
needs nothing beyond fork/exec and pipes (the systemd sandbox allows both). Any failure
of a worker (it died, a broken pipe, a bad answer) raises :class:`WorkerGone`; ingest
then examines that batch in its own threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any

from clipd.checks import Examined, FileChangedError, examine_file, identity_of, open_clip
from clipd.naming import ClipName, parse_clip_name
from clipd.reconcile import StatTuple
from clipd.record import ClipRecord, new_record

__all__ = ["HashWorkers", "Outcome", "Request", "Verdict", "WorkerGone", "examine_one"]

logger = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 5.0
_PICKLE = pickle.HIGHEST_PROTOCOL
# Files of a batch opened ahead of the one being examined, each with POSIX_FADV_WILLNEED:
# a first index of small clips on a cold cache otherwise waits on one read at a time.
_READAHEAD_FILES = 32


class Outcome(Enum):
    RECORDED = "recorded"
    UNCHANGED = "unchanged"
    QUARANTINED = "quarantined"
    GONE = "gone"
    RETRY = "retry"
    # A writer still has the file open: looked at again later, with no limit on tries.
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a file was not recorded (or, from ``process``, that it was)."""

    outcome: Outcome
    reason: str = ""
    record: ClipRecord | None = None


def examine_one(
    path: str,
    relpath: str,
    name: ClipName | None,
    known: StatTuple | None,
    min_bytes: int,
    max_bytes: int,
    settle_ns: int,
    now_ns: int,
    final: bool,
    fd: int = -1,
) -> ClipRecord | Verdict:
    """Validate and hash one file (blocks): its record, or a verdict saying why not.

    Reasons are final only for settled files: ``final`` means the writer is done (a
    close or rename event); otherwise a file modified within the settle time is looked
    at again later, not recorded half-written. (A record rather than a verdict holding
    one: a whole-tree pass makes 20k of them.) ``fd``: ``path`` opened ahead with
    ``open_clip``, for a named file not known to the index; closed here.
    """
    try:
        # Only a known file or a bad name needs the extra lstat; examine_file fstats.
        if known is not None or name is None:
            if fd >= 0:
                os.close(fd)
                fd = -1
            st = os.lstat(path)
            if known is not None and identity_of(st) == known:
                return Verdict(Outcome.UNCHANGED)
        if name is None:
            examined = Examined(
                "name is not <Title>_<jobid>.<ext> with an allowed extension", identity_of(st)
            )
        else:
            examined = examine_file(path, name.ext, min_bytes, max_bytes, fd, writers=not final)
    except FileNotFoundError:
        return Verdict(Outcome.GONE)
    except FileChangedError:
        return Verdict(Outcome.RETRY, "changed while being read")
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        examined = Examined("symlink: only regular files are clips", None)
    # A writer that does not rename atomically may still be filling the file: it is
    # judged once nobody has it open for writing or, where the kernel cannot say, once
    # it was not modified for the settle time.
    if examined.writing:
        return Verdict(Outcome.BUSY, "still being written")
    fresh = examined.identity is not None and now_ns - examined.identity.mtime_ns < settle_ns
    if examined.reason:
        stale = examined.writing is None and fresh
        return Verdict(Outcome.RETRY if stale else Outcome.QUARANTINED, examined.reason)
    assert examined.identity is not None and name is not None
    if not final and examined.writing is None and fresh:
        return Verdict(Outcome.RETRY, "still being written")
    identity = examined.identity
    day = relpath.partition("/")[0]
    return new_record(name, relpath, day, identity, examined.sha256, now_ns / 1e9)


@dataclass(frozen=True, slots=True)
class Request:
    """A batch of a whole-tree pass: files ``<day>/<name>`` not yet known to be unchanged."""

    clips_dir: str
    relpaths: Sequence[str]
    known: dict[str, StatTuple]  # indexed identity of those that have a row
    extensions: frozenset[str]
    min_bytes: int
    max_bytes: int
    settle_ns: int
    now_ns: int


def examine_many(request: Request) -> list[ClipRecord | Verdict]:
    """Examine a batch (blocks); one result per relpath, in order. Raises OSError.

    Keeps the disk busy: while one file is examined, the next ``_READAHEAD_FILES`` new
    clips of the batch are already open with their reads queued (POSIX_FADV_WILLNEED),
    so a cold cache is read many files at a time rather than one.
    """
    results: list[ClipRecord | Verdict] = []
    prefix = request.clips_dir + "/"  # a str: pathlib costs more than a small clip's hash
    known, extensions, relpaths = request.known, request.extensions, request.relpaths
    # Whole-tree passes see <day folder>/<entry> only: the name is all left to parse.
    names = [parse_clip_name(relpath.partition("/")[2], extensions) for relpath in relpaths]
    ahead: dict[int, int] = {}  # position in the batch -> its fd, opened ahead
    window = [_READAHEAD_FILES]  # 0 once out of file descriptors

    def open_ahead(i: int) -> None:
        # Only what examine_file opens anyway; any failure is left for it to meet again.
        if not window[0] or i >= len(relpaths) or names[i] is None or relpaths[i] in known:
            return
        try:
            fd = open_clip(prefix + relpaths[i])
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of fds: no more ahead in this batch, so examine_file gets one back
                # as each file opened ahead is done with.
                window[0] = 0
            return
        ahead[i] = fd
        with contextlib.suppress(OSError):  # not a regular file: examine_file says so
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)

    try:
        for i in range(_READAHEAD_FILES):
            open_ahead(i)
        for i, relpath in enumerate(relpaths):
            open_ahead(i + _READAHEAD_FILES)
            results.append(
                examine_one(
                    prefix + relpath,
                    relpath,
                    names[i],
                    known.get(relpath),
                    request.min_bytes,
                    request.max_bytes,
                    request.settle_ns,
                    request.now_ns,
                    False,
                    ahead.pop(i, -1),
                )
            )
    finally:
        for fd in ahead.values():  # an OSError ended the batch early
            os.close(fd)
    return results


# Over the pipe, results are plain tuples: unpickling a frozen slotted dataclass costs
# ~18 µs (its __setstate__ runs per field in Python), a tuple ~1 µs.
_Wire = tuple[Any, ...]


def _to_wire(result: ClipRecord | Verdict) -> _Wire:
    if isinstance(result, ClipRecord):
        return (
            result.job_id,
            result.relpath,
            result.day,
            result.title,
            result.ext,
            result.size_bytes,
            result.mtime_ns,
            result.ctime_ns,
            result.inode,
            result.sha256,
            result.ingested_at,
            result.verified_at,
        )
    return (result.outcome.value, result.reason)


def _from_wire(item: _Wire) -> ClipRecord | Verdict:
    if len(item) == 2:
        return Verdict(Outcome(item[0]), item[1])
    return ClipRecord(*item)


class WorkerGone(Exception):
    """A helper process could not answer (it died, or its pipe broke)."""


class _Worker:
    def __init__(self) -> None:
        # -m with the daemon's own interpreter and environment (PYTHONPATH included);
        # -P: not the working directory first on sys.path, so no folder there named
        # "clipd" can stand in for the package.
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "clipd.hashworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )

    def ask(self, request: Request) -> list[ClipRecord | Verdict]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            pickle.dump(request, stdin, _PICKLE)
            stdin.flush()
            answer = pickle.load(stdout)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            # ValueError: a pipe closed by stop() (a pass that ended while this ran).
            raise WorkerGone(f"hash worker {self.proc.pid}: {exc or type(exc).__name__}") from exc
        if isinstance(answer, BaseException):
            raise answer  # the worker's OSError, as examine_many in a thread would raise it
        if not isinstance(answer, list) or len(answer) != len(request.relpaths):
            raise WorkerGone(f"hash worker {self.proc.pid}: malformed answer")
        return [_from_wire(item) for item in answer]

    def stop(self) -> None:
        """Close its stdin (it exits at EOF), wait, kill if it does not; blocks."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            # A broken pipe to a dead worker: nothing is left to flush.
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        try:
            self.proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class HashWorkers:
    """A few helper processes examining batches; each :meth:`examine` uses an idle one.

    Every method blocks (run them in threads). Thread-safe.
    """

    def __init__(self, count: int) -> None:
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._broken = ""
        try:
            for _ in range(count):
                worker = _Worker()
                self._all.append(worker)
                self._idle.put(worker)
        except OSError:
            self.close()  # those already started
            raise

    def examine(self, request: Request) -> list[ClipRecord | Verdict]:
        """Examine ``request`` in an idle worker. Raises WorkerGone, or the worker's OSError."""
        if self._broken:
            raise WorkerGone(self._broken)  # one failure ends their use for this pass
        worker = self._idle.get()
        try:
            return worker.ask(request)
        except WorkerGone as exc:
            if not self._broken:
                logger.warning("%s: examining the rest of this pass in threads", exc)
            self._broken = str(exc)
            raise
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker (at most a few seconds each); later requests get WorkerGone."""
        self._broken = self._broken or "hash workers were stopped"
        for worker in self._all:
            worker.stop()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._all]


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    while True:
        try:
            request = pickle.load(stdin)
        except EOFError:
            return  # the daemon closed the pipe, or died
        answer: list[_Wire] | OSError
        try:
            answer = [_to_wire(r) for r in examine_many(request)]
        except OSError as exc:
            answer = exc
        pickle.dump(answer, stdout, _PICKLE)
        stdout.flush()


def main() -> None:
    """Serve requests from stdin until EOF (the daemon's end of the pipe closed)."""
    # Ctrl-C reaches the whole process group: the daemon stops and closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A broken pipe: the daemon is gone, nobody waits for an answer.
    with contextlib.suppress(BrokenPipeError):
        _serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
