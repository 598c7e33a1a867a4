"""The clip record value types: what the index stores and hands out for one clip.

:class:`ClipRecord` is one indexed clip, :class:`Identity` what a cheap ``stat`` must
still show for it, :class:`Totals` and :class:`ClipSummary` the aggregate and the
retention columns; :func:`new_record` builds the record of a clip just hashed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from clipd.naming import ClipName

__all__ = [
    "ClipRecord",
    "ClipSummary",
    "Identity",
    "Totals",
    "new_record",
]


@dataclass(frozen=True, slots=True)
class ClipRecord:
    """One indexed clip. ``relpath`` is ``<day>/<file>`` (or the S3 key in s3 mode)."""

    job_id: str
    relpath: str
    day: str
    title: str
    ext: str
    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    sha256: str
    ingested_at: float
    verified_at: float
    display_title: str = ""
    state: str = "ok"
    backed_up: bool = False

    @property
    def identity(self) -> Identity:
        return Identity(self.size_bytes, self.mtime_ns, self.ctime_ns, self.inode)

    def __hash__(self) -> int:
        # Records key the download header cache: hashing the fields that tell two
        # records apart costs a fraction of hashing all of them (equality still
        # compares every field).
        return hash((self.job_id, self.sha256, self.mtime_ns, self.ctime_ns, self.inode))


def new_record(
    name: ClipName,
    relpath: str,
    day: str,
    identity: Identity,
    sha256: str,
    now: float,
    *,
    verified_at: float | None = None,
    display_title: str = "",
    backed_up: bool = False,
) -> ClipRecord:
    """The record of a clip just hashed: its name's parts, identity and SHA-256, ingested
    (and, unless ``verified_at`` says otherwise, verified) at ``now``. Positional: ingest
    makes 20k of these in a first index."""
    return ClipRecord(
        name.job_id,
        relpath,
        day,
        name.title,
        name.ext,
        *identity,
        sha256,
        now,
        now if verified_at is None else verified_at,
        display_title,
        "ok",
        backed_up,
    )


class Identity(NamedTuple):
    """What a cheap ``stat`` must still show for a file to be trusted unchanged."""

    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    inode: int


class Totals(NamedTuple):
    files: int
    bytes: int


class ClipSummary(NamedTuple):
    """The columns of a row that retention plans with (a fifth of the cost of ClipRecords)."""

    job_id: str
    relpath: str
    size_bytes: int
    mtime_ns: int
    state: str
