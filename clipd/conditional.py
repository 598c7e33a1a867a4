"""Conditional and range requests, decided purely against the clip's SHA-256 and mtime.

RFC 9110 §13.2.2 fixes the order: If-Match, else If-Unmodified-Since (→ 412); then
If-None-Match, else If-Modified-Since (→ 304 for GET/HEAD); then If-Range decides
whether a Range is honoured (§13.1.5) and the Range itself is parsed (§14.2). The
result is a frozen :class:`Decision`; the web layer only carries it out, so aiohttp's
own (mtime-based, version-dependent) conditional logic never gets a say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum

__all__ = ["Decision", "Outcome", "decide", "entity_tags", "parse_http_date"]

_NS = 1_000_000_000
# An entity-tag per RFC 9110 §8.8.3: optional weak prefix, then a quoted opaque value.
_ETAG_RE = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


class Outcome(Enum):
    """What to answer."""

    FULL = "full"  # 200 with the whole clip
    PARTIAL = "partial"  # 206 with ``start``..``end``
    NOT_MODIFIED = "not_modified"  # 304
    PRECONDITION_FAILED = "precondition_failed"  # 412
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"  # 416


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict; ``start``/``end`` (inclusive) only for PARTIAL.

    ``range_ignored`` is true when the client sent a Range that must not be honoured
    (a stale If-Range, several ranges, or a HEAD): a proxy in front must then ignore it
    as well.
    """

    outcome: Outcome
    start: int = 0
    end: int = 0
    range_ignored: bool = False
    reason: str = ""


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch of an HTTP-date, or None when it is not one."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def entity_tags(value: str) -> tuple[tuple[bool, str], ...] | None:
    """``(is_weak, opaque)`` pairs of an entity-tag list; ``()`` for ``*``; None if invalid."""
    if value.strip() == "*":
        return ()
    tags: list[tuple[bool, str]] = []
    pos = 0
    while pos < len(value):
        match = _ETAG_RE.match(value, pos)
        if match is None or match.end() == pos:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
        pos = match.end()
    return tuple(tags) or None


def _matches(header: str, etag: str, weak: bool) -> bool:
    tags = entity_tags(header)
    if tags is None:
        return False
    if tags == ():
        return True  # "*" matches any current representation
    return any(opaque == etag and (weak or not is_weak) for is_weak, opaque in tags)


def _parse_range(value: str, size: int) -> Decision:
    """A single byte range (RFC 9110 §14.1.2); anything else is ignored (full 200)."""
    if "," in value:
        return Decision(Outcome.FULL, range_ignored=True, reason="several ranges: sent whole")
    match = _RANGE_RE.fullmatch(value)
    if match is None:
        return Decision(Outcome.FULL, range_ignored=True, reason="unparsable Range ignored")
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return Decision(Outcome.FULL, range_ignored=True, reason="unparsable Range ignored")
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return Decision(Outcome.RANGE_NOT_SATISFIABLE, reason="empty suffix range")
        return Decision(Outcome.PARTIAL, max(size - suffix, 0), size - 1)
    start = int(first)
    if last and int(last) < start:
        return Decision(Outcome.FULL, range_ignored=True, reason="last-pos before first-pos")
    if start >= size:
        return Decision(Outcome.RANGE_NOT_SATISFIABLE, reason=f"first byte {start} >= {size}")
    return Decision(Outcome.PARTIAL, start, min(int(last) if last else size - 1, size - 1))


_FULL = Decision(Outcome.FULL)  # the common answer; a frozen value, shared


def decide(
    method: str, headers: Mapping[str, str], etag: str, mtime_ns: int, size_bytes: int
) -> Decision:
    """Evaluate the request's preconditions and Range against the clip (pure).

    ``etag`` is the strong validator without quotes (the SHA-256 hex); ``headers`` is
    any case-insensitive mapping (aiohttp's CIMultiDictProxy).
    """
    modified_s = mtime_ns // _NS  # Last-Modified has one-second resolution
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _matches(if_match, etag, weak=False):
            return Decision(Outcome.PRECONDITION_FAILED, reason="If-Match does not match")
    elif (since := _date(headers, "If-Unmodified-Since")) is not None and modified_s > since:
        return Decision(Outcome.PRECONDITION_FAILED, reason="modified after If-Unmodified-Since")
    safe = method in {"GET", "HEAD"}
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _matches(if_none_match, etag, weak=True):
            if safe:
                return Decision(Outcome.NOT_MODIFIED, reason="If-None-Match matches")
            return Decision(Outcome.PRECONDITION_FAILED, reason="If-None-Match matches")
    elif (
        safe
        and (since := _date(headers, "If-Modified-Since")) is not None
        and (modified_s <= since)
    ):
        return Decision(Outcome.NOT_MODIFIED, reason="not modified since If-Modified-Since")
    range_header = headers.get("Range")
    if range_header is None:
        return _FULL
    if method != "GET":
        # RFC 9110 §14.2: range handling is defined for GET only.
        return Decision(Outcome.FULL, range_ignored=True, reason="Range is for GET only")
    if_range = headers.get("If-Range")
    if if_range is not None and not _if_range_holds(if_range, etag, modified_s):
        return Decision(Outcome.FULL, range_ignored=True, reason="If-Range is stale")
    return _parse_range(range_header, size_bytes)


def _if_range_holds(value: str, etag: str, modified_s: int) -> bool:
    # RFC 9110 §13.1.5: a strong comparison for entity-tags (a weak one never
    # matches); a date must equal Last-Modified exactly.
    stripped = value.strip()
    if stripped.startswith(('"', "W/")):
        tags = entity_tags(stripped)
        return tags is not None and len(tags) == 1 and tags[0] == (False, etag)
    date = parse_http_date(stripped)
    return date is not None and date == modified_s


def _date(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return None if value is None else parse_http_date(value)
