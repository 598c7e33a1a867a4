"""S3 keys and clips: pure mapping between object keys, relpaths and local paths.

No I/O. A key is ``<prefix><rest>``; ``rest`` is the *relpath* the index keeps in s3
mode (usually ``<YYYY-MM-DD>/<Title>_<jobid>.<ext>``, but any folder is accepted: a
legacy bucket may hold clips at the top or in other folders). For the local tree
(``migrate``) every clip goes to ``<day>/<Title>_<jobid>.<ext>``: the key's day folder
when it has one, else the UTC day of its LastModified, with the title sanitized.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

from clipd.naming import ClipName, day_of, is_day_folder, is_ignored, is_job_id, sanitize_title

__all__ = [
    "KeyPlan",
    "NotClip",
    "join_key",
    "normalize_prefix",
    "parse_s3_url",
    "plan_key",
]


class NotClip(Enum):
    """Why an object is never placed in the tree."""

    NOT_CLIP_NAME = "name is not <Title>_<jobid>.<ext>"
    BAD_EXTENSION = "extension is not an allowed clip extension"
    EMPTY = "object is empty"
    TOO_LARGE = "object is larger than storage.max_bytes"
    BAD_SIGNATURE = "bytes do not start with the container signature of the extension"
    FOLDER = "folder marker"


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """Where one clip object goes: its relpath under the prefix and its tree path."""

    key: str
    relpath: str  # key without the prefix (the index relpath in s3 mode)
    local_relpath: str  # <day>/<Title>_<jobid>.<ext> (migrate target)
    day: str
    name: ClipName


def normalize_prefix(prefix: str) -> str:
    """``clips`` and ``/clips/`` both mean keys under ``clips/``; empty means the root."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def join_key(prefix: str, relpath: str) -> str:
    """The object key of ``relpath`` under an already normalized ``prefix``."""
    return prefix + relpath


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` → (bucket, normalized prefix); ValueError if malformed."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r}: must look like s3://BUCKET[/PREFIX]")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{url!r}: names no bucket; must look like s3://BUCKET[/PREFIX]")
    return bucket, normalize_prefix(prefix)


def _loose_name(name: str, extensions: frozenset[str]) -> ClipName | NotClip:
    """Parse a base name, sanitizing the title instead of refusing it."""
    if is_ignored(name) or "\x00" in name:
        return NotClip.NOT_CLIP_NAME
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return NotClip.NOT_CLIP_NAME
    if "." + ext.lower() not in extensions:
        return NotClip.BAD_EXTENSION
    title, sep, job_id = stem.rpartition("_")
    if not sep or not is_job_id(job_id):
        return NotClip.NOT_CLIP_NAME
    return ClipName(title=sanitize_title(title), job_id=job_id, ext="." + ext)


def plan_key(
    key: str,
    prefix: str,
    size_bytes: int,
    last_modified_s: float,
    extensions: frozenset[str],
    max_bytes: int | None = None,
) -> KeyPlan | NotClip:
    """Decide what an object under ``prefix`` is: a clip (with its paths) or why not."""
    relpath = key.removeprefix(prefix)
    if key.endswith("/"):
        return NotClip.FOLDER
    path = PurePosixPath(relpath)
    parsed = _loose_name(path.name, extensions)
    if isinstance(parsed, NotClip):
        return parsed
    if size_bytes <= 0:
        return NotClip.EMPTY
    if max_bytes is not None and size_bytes > max_bytes:
        return NotClip.TOO_LARGE
    folder = path.parent.name
    day = folder if is_day_folder(folder) else day_of(last_modified_s)
    return KeyPlan(key, relpath, f"{day}/{parsed.filename}", day, parsed)
