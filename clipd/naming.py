"""Clip names and day folders: pure parsing and building, no I/O.

A clip lives at ``<YYYY-MM-DD>/<Title>_<jobid>.<ext>``. The job id is the text after
the last ``_`` of the stem, ``[A-Za-z0-9-]{1,64}``; the title is sanitized to
``[A-Za-z0-9_-]``, at most 100 characters and never empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import PurePosixPath

__all__ = [
    "DEFAULT_TITLE",
    "JOB_ID_RE",
    "MAX_TITLE_CHARS",
    "ClipName",
    "build_name",
    "day_of",
    "is_day_folder",
    "is_ignored",
    "is_job_id",
    "parse_clip_name",
    "parse_relpath",
    "sanitize_title",
]

JOB_ID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_TITLE_CHARS = 100
DEFAULT_TITLE = "Clip"


@dataclass(frozen=True, slots=True)
class ClipName:
    """The parts of a clip's file name; ``ext`` starts with a dot, case as written."""

    title: str
    job_id: str
    ext: str

    @property
    def filename(self) -> str:
        return build_name(self.title, self.job_id, self.ext)


def is_job_id(text: str) -> bool:
    """True when ``text`` is a well-formed job id."""
    return JOB_ID_RE.fullmatch(text) is not None


def is_ignored(name: str) -> bool:
    """Hidden files and folders and writers' ``*.tmp`` files are never clips."""
    return name.startswith(".") or name.endswith(".tmp")


def is_day_folder(name: str) -> bool:
    """True for a real calendar day written ``YYYY-MM-DD``."""
    if _DAY_RE.fullmatch(name) is None:
        return False
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return True


def sanitize_title(title: str) -> str:
    """Map any text to a safe, non-empty title of ``[A-Za-z0-9_-]``, at most 100 chars."""
    cleaned = _UNSAFE_RE.sub("_", title).strip("_")[:MAX_TITLE_CHARS].strip("_")
    return cleaned or DEFAULT_TITLE


def build_name(title: str, job_id: str, ext: str) -> str:
    """``<title>_<job_id><ext>``; raises ValueError for a bad job id or extension."""
    if not is_job_id(job_id):
        raise ValueError(f"job id {job_id!r}: must match [A-Za-z0-9-]{{1,64}}")
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,8}", ext):
        raise ValueError(f"extension {ext!r}: must be a dot and 1-8 letters or digits")
    return f"{sanitize_title(title)}_{job_id}{ext}"


def parse_clip_name(name: str, extensions: frozenset[str] | None = None) -> ClipName | None:
    """Split a file name into title, job id and extension, or None if it is not a clip.

    ``extensions`` (lower-case, with dot) restricts what is accepted when given.
    """
    if is_ignored(name) or "/" in name or "\x00" in name:
        return None
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return None
    ext = "." + ext
    if extensions is not None and ext.lower() not in extensions:
        return None
    title, sep, job_id = stem.rpartition("_")
    if not sep or not title or not is_job_id(job_id):
        return None
    if sanitize_title(title) != title:
        return None
    return ClipName(title=title, job_id=job_id, ext=ext)


def parse_relpath(
    relpath: str, extensions: frozenset[str] | None = None
) -> tuple[str, ClipName] | None:
    """Parse ``<day>/<name>`` relative to the clips tree; None unless it is a clip path."""
    parts = PurePosixPath(relpath).parts
    if len(parts) != 2 or not is_day_folder(parts[0]):
        return None
    parsed = parse_clip_name(parts[1], extensions)
    return None if parsed is None else (parts[0], parsed)


def day_of(ts_s: float) -> str:
    """The UTC day folder name for a POSIX timestamp."""
    return datetime.fromtimestamp(ts_s, UTC).date().isoformat()
