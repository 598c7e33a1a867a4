"""A verified clip handed to aiohttp's ``FileResponse`` (sendfile, Range, HEAD).

:class:`ClipFileResponse` keeps clipd's SHA-256 ETag and sends from a request stripped
of the conditionals clipd has already decided. :class:`CheckedPath` lets a download
whose record came from :mod:`clipd.record_cache` check the file's identity inside the
``stat`` that ``FileResponse`` runs in a worker thread right before it opens the file,
instead of in a worker-thread hop of its own: the same check, one hand-off of the
event loop fewer.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PosixPath
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from clipd.checks import identity_of
from clipd.conditional import Decision, Outcome
from clipd.record import Identity

__all__ = ["STRIPPED", "CheckedPath", "ClipFileResponse", "StaleEntry"]

# Conditional and negotiation headers aiohttp's FileResponse would evaluate against its
# own mtime-size ETag (and, for Accept-Encoding, a sibling .gz/.br file it would send
# instead of the verified clip): clipd decides these itself, so they never reach it.
STRIPPED = (
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
    "Accept-Encoding",
)


class StaleEntry(Exception):
    """A cached record no longer describes the file or the index (not an OSError, so
    ``FileResponse`` lets it through before it has sent anything)."""


class CheckedPath(PosixPath):
    """A clip's path whose ``stat()`` is the download's integrity check.

    ``stat()`` lstats the file and returns the result only when its identity (inode,
    size, mtime_ns, ctime_ns) equals ``expected`` and ``is_current()`` still holds (no
    index write since the record was read); otherwise, or when the lstat fails, it
    raises :class:`StaleEntry` and the caller decides from the index. A symlink has its
    own inode, so it never matches. Every aiohttp version clipd admits stats the path it
    was given (in a worker thread) before opening it.
    """

    expected: Identity
    is_current: Callable[[], bool]
    checked: bool  # stat() ran: the response that sent this path did check it

    @classmethod
    def of(cls, path: os.PathLike[str], expected: Identity, is_current: Callable[[], bool]) -> Any:
        checked = cls(path)
        checked.expected, checked.is_current, checked.checked = expected, is_current, False
        return checked

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        try:
            st = os.lstat(self)
        except OSError:
            raise StaleEntry(str(self)) from None
        if identity_of(st) != self.expected or not self.is_current():
            raise StaleEntry(str(self))
        self.checked = True
        return st


class ClipFileResponse(web.FileResponse):
    """FileResponse that keeps the clip's SHA-256 ETag and answers from a stripped request.

    aiohttp (every admitted version) overwrites ``etag`` with ``<mtime>-<size>`` and
    evaluates preconditions against it (and, before aiohttp#13480, ignores an
    entity-tag If-Range). clipd has already decided all of that, so prepare() runs on a
    clone without those headers and with only the Range clipd chose to honour.
    """

    def __init__(
        self,
        path: Path,
        headers: dict[str, str],
        request: web.BaseRequest,
        decision: Decision,
        job_id: str,
        downloading: Counter[str],
    ) -> None:
        super().__init__(path, headers=headers)
        if isinstance(path, CheckedPath):
            # aiohttp >= 3.9 keeps a plain copy (pathlib.Path(path)); 3.8 keeps the
            # object. Both stat and open ``_path``; the caller confirms the check ran.
            self._path = path
        self._job_id = job_id
        self._downloading = downloading
        self._started = False
        self._clean_request = request
        partial = decision.outcome is Outcome.PARTIAL
        if not partial and not any(name in request.headers for name in STRIPPED):
            return  # nothing to hide: skip the clone, a measurable cost per download
        forwarded = CIMultiDict(request.headers)
        for name in STRIPPED:
            forwarded.popall(name, None)
        if partial:
            forwarded["Range"] = f"bytes={decision.start}-{decision.end}"
        self._clean_request = request.clone(headers=forwarded)

    # FileResponse assigns these from its own stat (an mtime-size ETag; a Last-Modified
    # rounded up); clipd's values are already in the headers, so the assignments are
    # ignored.
    @property
    def etag(self) -> Any:
        return web.StreamResponse.etag.fget(self)  # type: ignore[attr-defined]

    @etag.setter
    def etag(self, value: Any) -> None:
        return

    @property
    def last_modified(self) -> Any:
        return web.StreamResponse.last_modified.fget(self)  # type: ignore[attr-defined]

    @last_modified.setter
    def last_modified(self, value: Any) -> None:
        return

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self._started:
            # Prepared (and sent) by the handler itself; aiohttp calls prepare() again
            # (3.8 reports ``prepared`` False once the body is sent).
            return await web.StreamResponse.prepare(self, request)
        self._started = True
        # FileResponse sends the whole body inside prepare(): while it runs, retention
        # leaves this clip alone (state.extras["downloading"]).
        self._downloading[self._job_id] += 1
        try:
            return await super().prepare(self._clean_request)
        except FileNotFoundError:
            # Evicted or deleted between the check and the open. aiohttp >= 3.9 answers
            # 404 itself; 3.8 (Debian 12) raises, which would drop the connection.
            if self.prepared:
                raise
            return await self._answer_gone(request)
        finally:
            self._downloading[self._job_id] -= 1
            if self._downloading[self._job_id] <= 0:
                del self._downloading[self._job_id]

    async def _answer_gone(self, request: web.BaseRequest) -> Any:
        body = json.dumps(
            {"error": "not_found", "detail": f"job {self._job_id} was removed just now"}
        ).encode()
        for name in list(self.headers):
            if name.lower() not in {"date", "server"}:
                del self.headers[name]
        self.set_status(404)
        self.content_type = "application/json"
        self.content_length = len(body)
        writer = await web.StreamResponse.prepare(self, request)
        await web.StreamResponse.write(self, body)
        return writer
