"""Retention planning: which clips to evict, and why (pure: no clock, disk or log).

:func:`plan` takes the index rows, the filesystem usage, the policy and ``now`` and
returns a frozen :class:`Plan`; :mod:`clipd.cleanup` applies it and ``clipd cleanup
--dry-run`` prints it. Order: stale temp files, then clips past the maximum age (oldest
first), then the oldest remaining clips until the size and disk targets hold. A clip
younger than the protection window, or one being downloaded, is never planned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter
from typing import Protocol

from clipd.config import RetentionConfig
from clipd.naming import day_of, is_day_folder

__all__ = [
    "GB",
    "Clip",
    "Deletion",
    "Plan",
    "Policy",
    "Reason",
    "TmpFile",
    "Usage",
    "over_high_mark",
    "plan",
]

GB = 10**9  # decimal gigabytes everywhere (config docs say so)
_NS = 10**9


class Clip(Protocol):
    """What the planner reads of an index row: a ``ClipRecord`` or the lighter
    ``ClipSummary`` the cleanup shell reads (``Index.summaries``)."""

    @property
    def job_id(self) -> str: ...

    @property
    def relpath(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def mtime_ns(self) -> int: ...

    @property
    def state(self) -> str: ...


class Reason(Enum):
    """Why a file is planned for deletion."""

    STALE_TMP = "stale_tmp"
    EXPIRED = "expired"
    SIZE = "size"
    DISK = "disk"
    MIN_FREE = "min_free"


@dataclass(frozen=True, slots=True)
class Policy:
    """Retention limits in base units; 0 disables a limit."""

    max_age_s: float = 0.0
    max_size_bytes: int = 0
    high_watermark_percent: float = 100.0
    low_watermark_percent: float = 100.0
    min_free_bytes: int = 0
    protect_recent_s: float = 0.0
    stale_tmp_s: float = 3600.0

    @classmethod
    def from_config(cls, config: RetentionConfig) -> Policy:
        return cls(
            max_age_s=config.max_age_hours * 3600,
            max_size_bytes=int(config.max_size_gb * GB),
            high_watermark_percent=config.high_watermark_disk_percent,
            low_watermark_percent=config.low_watermark_disk_percent,
            min_free_bytes=int(config.min_free_gb * GB),
            protect_recent_s=config.protect_recent_minutes * 60,
            stale_tmp_s=config.stale_tmp_minutes * 60,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """The clips filesystem as ``df`` sees it (``used + free`` excludes root's reserve)."""

    total_bytes: int
    used_bytes: int
    free_bytes: int

    @property
    def percent(self) -> float:
        size = self.used_bytes + self.free_bytes
        return 100.0 * self.used_bytes / size if size > 0 else 0.0


@dataclass(frozen=True, slots=True)
class TmpFile:
    """A writer's ``<day>/<name>.tmp`` seen on disk."""

    relpath: str
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Deletion:
    """One planned removal; ``job_id`` is empty for a temp file (it has no row)."""

    relpath: str
    job_id: str
    size_bytes: int
    mtime_ns: int
    reason: Reason

    @property
    def day(self) -> str:
        return self.relpath.partition("/")[0]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to delete, the targets it aims at, and where usage ends up if applied."""

    deletions: tuple[Deletion, ...]
    empty_days: tuple[str, ...]  # day folders left empty once the plan is applied
    max_clip_bytes: int | None  # the size target, None when there is none
    max_disk_used_bytes: int | None  # the disk target (watermark / min free), None if none
    clip_bytes_before: int
    clip_bytes_after: int
    disk_used_before: int | None
    disk_used_after: int | None
    unmet: tuple[Reason, ...]  # targets that still fail after the plan (all else protected)

    @property
    def files(self) -> int:
        return len(self.deletions)

    @property
    def bytes(self) -> int:
        return sum(d.size_bytes for d in self.deletions)

    def count(self, reason: Reason) -> int:
        return sum(1 for d in self.deletions if d.reason is reason)


def _is_safe_relpath(relpath: str, day_ok: dict[str, bool] | None = None) -> bool:
    """``<day>/<name>`` with a real day folder and no hidden part (never the index folder).

    ``day_ok`` remembers each day's verdict across calls (10,000 clips share 30 days)."""
    day, sep, name = relpath.partition("/")
    if not sep or not name or "/" in name or name.startswith("."):
        return False
    if day_ok is None:
        return is_day_folder(day)
    ok = day_ok.get(day)
    if ok is None:
        ok = day_ok[day] = is_day_folder(day)
    return ok


_age_order = attrgetter("mtime_ns", "job_id")  # oldest first, ties by job id


def over_high_mark(usage: Usage | None, policy: Policy, draining: bool = False) -> bool:
    """Whether the watermark rule bites: usage crossed the high mark, or a drain that
    began there has not yet brought usage down to the low mark."""
    if usage is None or usage.used_bytes + usage.free_bytes <= 0:
        return False
    if usage.percent >= policy.high_watermark_percent:
        return True
    return draining and usage.percent > policy.low_watermark_percent


def _disk_target(usage: Usage | None, policy: Policy, draining: bool) -> int | None:
    """The most the filesystem may hold after the plan, or None when no disk rule bites."""
    if usage is None:
        return None
    size = usage.used_bytes + usage.free_bytes
    targets: list[int] = []
    # Hysteresis: cross the high mark, then evict down to the low mark.
    if over_high_mark(usage, policy, draining):
        targets.append(int(size * policy.low_watermark_percent / 100))
    if policy.min_free_bytes > 0 and usage.free_bytes < policy.min_free_bytes:
        targets.append(usage.used_bytes - (policy.min_free_bytes - usage.free_bytes))
    return min(targets) if targets else None


def plan(
    records: Iterable[Clip],
    usage: Usage | None,
    policy: Policy,
    now: float,
    *,
    tmp_files: Iterable[TmpFile] = (),
    busy: frozenset[str] = frozenset(),
    day_entries: Mapping[str, int] | None = None,
    draining: bool = False,
) -> Plan:
    """Plan evictions (pure).

    ``usage`` is None when the clips do not live on the local filesystem (no disk rule).
    ``busy`` holds job ids being downloaded; ``day_entries`` the number of entries in
    each day folder (to know which folders the plan empties; the day of ``now`` is
    never listed, a writer may be about to use it). ``draining`` says an earlier pass
    began evicting at the high mark and usage, as measured since, is still above the
    low mark (the filesystem freed less than the sizes planned: metadata, the index's
    own journal): the watermark rule keeps biting until the low mark is reached.
    """
    now_ns = int(now * _NS)
    protect_ns = int(policy.protect_recent_s * _NS)
    day_ok: dict[str, bool] = {}
    rows = sorted((r for r in records if _is_safe_relpath(r.relpath, day_ok)), key=_age_order)
    clip_bytes = sum(r.size_bytes for r in rows)
    deletions: list[Deletion] = []
    freed_disk = 0

    for tmp in sorted(tmp_files, key=lambda t: (t.mtime_ns, t.relpath)):
        if not _is_safe_relpath(tmp.relpath) or not tmp.relpath.endswith(".tmp"):
            continue
        if now_ns - tmp.mtime_ns > policy.stale_tmp_s * _NS:
            deletions.append(
                Deletion(tmp.relpath, "", tmp.size_bytes, tmp.mtime_ns, Reason.STALE_TMP)
            )
            freed_disk += tmp.size_bytes

    eligible = [
        r
        for r in rows
        if r.state == "ok" and r.job_id not in busy and now_ns - r.mtime_ns >= protect_ns
    ]
    max_clip = policy.max_size_bytes or None
    max_disk = _disk_target(usage, policy, draining)
    disk_used = None if usage is None else usage.used_bytes
    remaining = clip_bytes
    # ``eligible`` is oldest first, so the clips past the maximum age are a prefix of it.
    expired = _count_expired(eligible, policy, now_ns)
    for record in eligible[:expired]:
        deletions.append(_deletion(record, Reason.EXPIRED))
        remaining -= record.size_bytes
    freed_disk += clip_bytes - remaining
    rest = eligible[expired:]

    def unmet() -> tuple[Reason, ...]:
        out: list[Reason] = []
        if max_clip is not None and remaining > max_clip:
            out.append(Reason.SIZE)
        if max_disk is not None and disk_used is not None and disk_used - freed_disk > max_disk:
            over_high = over_high_mark(usage, policy, draining)
            out.append(Reason.DISK if over_high else Reason.MIN_FREE)
        return tuple(out)

    for record in rest:
        missing = unmet()
        if not missing:
            break
        deletions.append(_deletion(record, missing[0]))
        remaining -= record.size_bytes
        freed_disk += record.size_bytes

    return Plan(
        deletions=tuple(deletions),
        empty_days=_emptied_days(deletions, day_entries, day_of(now)),
        max_clip_bytes=max_clip,
        max_disk_used_bytes=max_disk,
        clip_bytes_before=clip_bytes,
        clip_bytes_after=remaining,
        disk_used_before=disk_used,
        disk_used_after=None if disk_used is None else disk_used - freed_disk,
        unmet=unmet(),
    )


def _count_expired(oldest_first: list[Clip], policy: Policy, now_ns: int) -> int:
    """How many of the clips, oldest first, are past the maximum age."""
    if policy.max_age_s <= 0:
        return 0
    max_age_ns = policy.max_age_s * _NS
    for n, record in enumerate(oldest_first):
        if now_ns - record.mtime_ns <= max_age_ns:
            return n
    return len(oldest_first)


def _deletion(record: Clip, reason: Reason) -> Deletion:
    return Deletion(record.relpath, record.job_id, record.size_bytes, record.mtime_ns, reason)


def _emptied_days(
    deletions: list[Deletion], day_entries: Mapping[str, int] | None, today: str
) -> tuple[str, ...]:
    if day_entries is None:
        return ()
    planned = Counter(d.day for d in deletions)
    return tuple(
        sorted(
            day
            for day, entries in day_entries.items()
            if day != today and is_day_folder(day) and planned[day] >= entries
        )
    )
