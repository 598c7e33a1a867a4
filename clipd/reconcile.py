"""Compare the clips tree with the index: a blocking walk and a pure plan.

The start-up reconcile and the periodic safety rescan share this code; only files
that are new or whose ``(size, mtime_ns, ctime_ns, inode)`` changed are re-hashed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clipd.naming import is_day_folder, is_ignored

__all__ = ["IdentityKey", "ReconcilePlan", "StatTuple", "Walk", "plan_reconcile", "walk_tree"]

# (size_bytes, mtime_ns, ctime_ns, inode): the fields of ``Identity`` as a plain tuple.
# A warm restart builds one per file on each side; a NamedTuple costs several times more.
StatTuple = tuple[int, int, int, int]
# (relpath, size_bytes, mtime_ns, ctime_ns, inode): an index row as reconcile compares it.
IdentityKey = tuple[str, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Walk:
    """What one pass over the tree saw (relative paths ``<day>/<name>``)."""

    files: dict[str, StatTuple]
    tmp_mtimes_ns: dict[str, int]
    days: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    to_examine: tuple[str, ...]
    to_drop: tuple[str, ...]  # job ids whose files are gone
    stale_tmp: tuple[str, ...]
    known: dict[str, StatTuple]  # indexed identity of each file to examine that has a row


def walk_tree(clips_dir: Path, progress: Callable[[int], None] | None = None) -> Walk:
    """Stat every entry of every day folder (no hashing); blocks on the disk.

    Only ``YYYY-MM-DD`` folders directly under the tree are looked into; hidden
    entries (the index folder among them) are skipped. Entries that are not regular
    files (symlinks, FIFOs) are reported too, so that ingest can quarantine them.
    ``progress(files seen so far)`` is called after each day folder.
    """
    files: dict[str, StatTuple] = {}
    tmp: dict[str, int] = {}
    days: list[str] = []
    with os.scandir(clips_dir) as top:
        day_entries = [e for e in top if is_day_folder(e.name) and e.is_dir(follow_symlinks=False)]
    for day in sorted(day_entries, key=lambda e: e.name):
        days.append(day.name)
        prefix = day.name + "/"
        try:
            entries = os.scandir(day.path)
        except FileNotFoundError:
            continue  # removed while we walked
        with entries:
            for entry in entries:
                name = entry.name
                # Hidden names are never clips, but a hidden *.tmp is an upload's temp
                # file (upload.py) that a crash left: it must age out like any other.
                hidden_tmp = name.startswith(".") and name.endswith(".tmp")
                if (name.startswith(".") and not hidden_tmp) or entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if name.endswith(".tmp"):
                    tmp[prefix + name] = st.st_mtime_ns
                elif not is_ignored(name):
                    files[prefix + name] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if progress is not None:
            progress(len(files))
    return Walk(files, tmp, tuple(days))


def plan_reconcile(
    walk: Walk, indexed: Mapping[IdentityKey, str], now_ns: int, stale_tmp_ns: int
) -> ReconcilePlan:
    """Decide what to hash, which rows to drop and which temp files are stale (pure).

    ``indexed`` maps each index row's ``(relpath, size, mtime_ns, ctime_ns, inode)`` to
    its job id: a file whose key is there is unchanged, and nothing else is looked at.
    """
    to_examine = tuple(
        relpath for relpath, st in walk.files.items() if (relpath, *st) not in indexed
    )
    # Rows that match no file as it is now: changed (examined, with the old identity)
    # or gone (dropped). Relpaths are unique on both sides, so when every row matched a
    # file there is nothing to look for (the usual warm restart).
    unmatched: list[tuple[IdentityKey, str]] = []
    if len(walk.files) - len(to_examine) != len(indexed):
        unmatched = [
            (key, job_id) for key, job_id in indexed.items() if walk.files.get(key[0]) != key[1:]
        ]
    to_drop = tuple(job_id for key, job_id in unmatched if key[0] not in walk.files)
    known: dict[str, StatTuple] = {
        key[0]: (key[1], key[2], key[3], key[4]) for key, _ in unmatched if key[0] in walk.files
    }
    stale = tuple(
        p for p, mtime_ns in walk.tmp_mtimes_ns.items() if now_ns - mtime_ns > stale_tmp_ns
    )
    return ReconcilePlan(to_examine, to_drop, stale, known)
