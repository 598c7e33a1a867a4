"""Quarantine: move a bad file out of the served tree, with a JSON note of why.

Nothing is ever silently deleted: a file that fails validation or integrity goes to
``<clips_dir>/.clipd/quarantine/<day>/<name>`` beside ``<name>.json``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import threading
import time
from pathlib import Path

from clipd.index import INDEX_DIRNAME

__all__ = ["QUARANTINE_DIRNAME", "integrity_reason", "quarantine_dir", "quarantine_file"]

logger = logging.getLogger(__name__)
QUARANTINE_DIRNAME = "quarantine"
_ONE_AT_A_TIME = threading.Lock()


def quarantine_dir(clips_dir: Path) -> Path:
    return clips_dir / INDEX_DIRNAME / QUARANTINE_DIRNAME


def _day_dir(clips_dir: Path, relpath: str) -> Path:
    """The quarantine folder for ``relpath``: its day folder, or ``unknown`` without one."""
    folder, slash, _ = relpath.partition("/")
    return quarantine_dir(clips_dir) / (folder if slash and folder else "unknown")


def quarantine_file(clips_dir: Path, relpath: str, reason: str, job_id: str = "") -> Path | None:
    """Move ``relpath`` into quarantine with a JSON sidecar; blocks on the disk.

    Returns the new path, or None when the file was already gone. The rename stays on
    one filesystem (the quarantine is inside the tree), so it is atomic.
    """
    # The download check and ingest may quarantine the same file at once: one at a time,
    # so neither picks the other's target name nor removes the other's note.
    with _ONE_AT_A_TIME:
        return _quarantine_locked(clips_dir, relpath, reason, job_id)


def _quarantine_locked(clips_dir: Path, relpath: str, reason: str, job_id: str) -> Path | None:
    source = clips_dir / relpath
    if not os.path.lexists(source):
        return None
    target_dir = _day_dir(clips_dir, relpath)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    n = 0
    while target.exists() or target.with_name(target.name + ".json").exists():
        n += 1
        target = target_dir / f"{source.name}.{n}"
    note = {
        "original_path": relpath,
        "job_id": job_id,
        "reason": reason,
        "quarantined_at": time.time(),
    }
    note_path = target.with_name(target.name + ".json")
    # Written aside and renamed: whoever reads the note never sees half of it.
    partial = note_path.with_name(f"{note_path.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(note, indent=2) + "\n")
    os.replace(partial, note_path)
    try:
        os.rename(source, target)
    except FileNotFoundError:
        note_path.unlink(missing_ok=True)
        return None
    logger.warning("quarantined %s (job %s): %s -> %s", relpath, job_id or "-", reason, target)
    return target


def integrity_reason(clips_dir: Path, relpath: str, job_id: str) -> str | None:
    """The reason ``relpath`` of ``job_id`` was quarantined for its bytes, if it was; blocks.

    Lets a download that finds its file gone tell "deleted" from "moved away because its
    bytes changed" (the watcher's ingest may quarantine it first).
    """
    name = relpath.rpartition("/")[2]
    for note_path in _day_dir(clips_dir, relpath).glob(f"{glob.escape(name)}*.json"):
        try:
            note = json.loads(note_path.read_text())
        except (OSError, ValueError):
            continue
        reason = note.get("reason") if isinstance(note, dict) else None
        if (
            isinstance(reason, str)
            and reason.startswith("integrity")
            and note.get("original_path") == relpath
            and note.get("job_id") == job_id
        ):
            return reason
    return None
