"""The ``verify`` command: re-hash every indexed clip and compare with the index.

It opens the index directly (blocking is fine here), works with or without a running
daemon, and changes nothing: it lists missing, changed and unindexed clips.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from clipd.cli import config_from_args
from clipd.index import Index, index_path
from clipd.logs import setup_logging
from clipd.ops import local_tree
from clipd.record import ClipRecord

__all__ = ["add_commands"]

_MB = 10**6
_VERIFY_WORKERS = 4


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register the ``verify`` command on the ``clipd`` parser."""
    verify = sub.add_parser("verify", help="re-hash every clip against the index")
    add_common(verify)
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(handler=_cmd_verify)


class _Progress:
    """A bar on a terminal, a plain line every 10 % otherwise."""

    def __init__(self, total_bytes: int, files: int, out: TextIO) -> None:
        self.total = max(total_bytes, 1)
        self.files = files
        self.out = out
        self.tty = out.isatty()
        self.done_bytes = 0
        self.done_files = 0
        self._last_tenth = -1

    def step(self, size: int) -> None:
        self.done_bytes += size
        self.done_files += 1
        frac = min(self.done_bytes / self.total, 1.0)
        if self.tty:
            bar = "#" * int(frac * 30)
            self.out.write(f"\rverify [{bar:<30}] {frac:6.1%} {self.done_files}/{self.files} clips")
            self.out.flush()
            return
        tenth = int(frac * 10)
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            print(
                f"verify: {self.done_files}/{self.files} clips, {self.done_bytes / _MB:.1f} MB "
                f"({frac:.0%})",
                file=self.out,
                flush=True,
            )

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _hash_one(clips_dir: Path, record: ClipRecord) -> tuple[ClipRecord, str | None]:
    from clipd.checks import sha256_file

    try:
        digest, _ = sha256_file(clips_dir / record.relpath)
    except FileNotFoundError:
        return record, None
    return record, digest


def _cmd_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.reconcile import walk_tree

    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    clips_dir = local_tree(config)
    ix = Index(index_path(clips_dir))
    try:
        records = [r for r in ix.records() if r.state == "ok"]
    finally:
        ix.close()
    on_disk = set(walk_tree(clips_dir).files)
    unindexed = sorted(on_disk - {r.relpath for r in records})
    missing: list[str] = []
    changed: list[dict[str, str]] = []
    progress = _Progress(sum(r.size_bytes for r in records), len(records), sys.stderr)
    with ThreadPoolExecutor(min(_VERIFY_WORKERS, os.cpu_count() or 1)) as pool:
        for record, digest in pool.map(lambda r: _hash_one(clips_dir, r), records):
            progress.step(record.size_bytes)
            if digest is None:
                missing.append(record.relpath)
            elif digest != record.sha256:
                changed.append(
                    {
                        "relpath": record.relpath,
                        "job_id": record.job_id,
                        "expected": record.sha256,
                        "actual": digest,
                    }
                )
    progress.close()
    ok = len(records) - len(missing) - len(changed)
    if args.json:
        print(
            json.dumps(
                {
                    "checked": len(records),
                    "ok": ok,
                    "missing": missing,
                    "changed": changed,
                    "unindexed": unindexed,
                },
                indent=2,
            )
        )
    else:
        for relpath in missing:
            print(f"MISSING   {relpath}")
        for item in changed:
            print(f"CHANGED   {item['relpath']} (index {item['expected']}, now {item['actual']})")
        for relpath in unindexed:
            print(f"UNINDEXED {relpath}")
        print(
            f"verify: {len(records)} clips checked, {ok} ok, {len(missing)} missing, "
            f"{len(changed)} changed, {len(unindexed)} unindexed"
        )
    return 0 if not (missing or changed or unindexed) else 1
