"""Compare the clips tree with the index: a blocking walk and a pure plan.

The start-up reconcile and the periodic safety rescan share this code; only files
that are new or whose ``(size, mtime_ns, ctime_ns, inode)`` changed are re-hashed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipd.index import Identity
from clipd.naming import is_day_folder, is_ignored

__all__ = ["ReconcilePlan", "Walk", "plan_reconcile", "walk_tree"]


@dataclass(frozen=True, slots=True)
class Walk:
    """What one pass over the tree saw (relative paths ``<day>/<name>``)."""

    files: dict[str, Identity]
    tmp_mtimes_ns: dict[str, int]
    days: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    to_examine: tuple[str, ...]
    to_drop: tuple[str, ...]  # job ids whose files are gone
    stale_tmp: tuple[str, ...]


def walk_tree(clips_dir: Path) -> Walk:
    """Stat every entry of every day folder (no hashing); blocks on the disk.

    Only ``YYYY-MM-DD`` folders directly under the tree are looked into; hidden
    entries (the index folder among them) are skipped. Entries that are not regular
    files (symlinks, FIFOs) are reported too, so that ingest can quarantine them.
    """
    files: dict[str, Identity] = {}
    tmp: dict[str, int] = {}
    days: list[str] = []
    with os.scandir(clips_dir) as top:
        day_entries = [e for e in top if is_day_folder(e.name) and e.is_dir(follow_symlinks=False)]
    for day in sorted(day_entries, key=lambda e: e.name):
        days.append(day.name)
        try:
            entries = os.scandir(day.path)
        except FileNotFoundError:
            continue  # removed while we walked
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    continue
                relpath = f"{day.name}/{entry.name}"
                if entry.name.endswith(".tmp"):
                    tmp[relpath] = st.st_mtime_ns
                elif not is_ignored(entry.name):
                    files[relpath] = Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return Walk(files, tmp, tuple(days))


def plan_reconcile(
    walk: Walk, indexed: dict[str, tuple[str, Identity]], now_ns: int, stale_tmp_ns: int
) -> ReconcilePlan:
    """Decide what to hash, which rows to drop and which temp files are stale (pure)."""
    to_examine = tuple(
        relpath
        for relpath, identity in walk.files.items()
        if relpath not in indexed or indexed[relpath][1] != identity
    )
    to_drop = tuple(job_id for relpath, (job_id, _) in indexed.items() if relpath not in walk.files)
    stale = tuple(p for p, mtime_ns in walk.tmp_mtimes_ns.items() if now_ns - mtime_ns > stale_tmp_ns)
    return ReconcilePlan(to_examine, to_drop, stale)
