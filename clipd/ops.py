"""Operator commands: ``cleanup``, ``report`` and ``monitor``.

They open the index directly (blocking is fine here) and work with or without a
running daemon, safely alongside one: SQLite WAL with a busy timeout, and deletions go
through the same mark → unlink → drop steps as the daemon's retention.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from clipd.cleanup import gather_blocking, start_line, summary_line, usage_of
from clipd.cli import config_from_args
from clipd.config import Config
from clipd.errors import ClipdError, ConfigError
from clipd.eviction import Applied, apply_blocking
from clipd.index import Index, index_path
from clipd.logs import setup_logging
from clipd.retention import GB, Plan, Policy, plan

# report imports what only it uses inside its handler, so that each
# command (a cron job's ``clipd cleanup`` above all) pays only for its own imports.

__all__ = ["add_commands", "local_tree"]

logger = logging.getLogger(__name__)
_MB = 10**6
_OK, _WARNING, _CRITICAL, _UNKNOWN = 0, 1, 2, 3
_STATUS = {_OK: "OK", _WARNING: "WARNING", _CRITICAL: "CRITICAL", _UNKNOWN: "UNKNOWN"}
_SINCE_DAYS = 7
_WARNING_PERCENT = 80.0
_CRITICAL_PERCENT = 90.0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register the operator commands on the ``clipd`` parser."""
    cleanup = sub.add_parser("cleanup", help="apply the retention policy once (or --dry-run)")
    add_common(cleanup)
    cleanup.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    # The legacy cleanup_old_files.py flags: the cron lines of existing installs keep working,
    # alone or together (``--dry-run --report --monitor``: plan, report, status, in that order).
    cleanup.add_argument(
        "--report",
        action="store_true",
        help="legacy alias of 'clipd report': print the storage report, delete nothing",
    )
    cleanup.add_argument(
        "--monitor",
        action="store_true",
        help="legacy alias of 'clipd monitor' (default thresholds): one status line, "
        "delete nothing",
    )
    cleanup.add_argument("--max-age", metavar="HOURS", help="retention.max_age_hours")
    cleanup.add_argument(
        "--size-threshold",
        metavar="GB",
        help="retention.max_size_gb: evict oldest first above this many decimal GB (10^9 bytes)",
    )
    cleanup.add_argument("--json", action="store_true", help="machine-readable output")
    # What the report and monitor handlers read, for the legacy aliases.
    cleanup.set_defaults(
        handler=_cmd_cleanup,
        since=_SINCE_DAYS,
        warning=_WARNING_PERCENT,
        critical=_CRITICAL_PERCENT,
    )

    report = sub.add_parser("report", help="files, sizes, ages, downloads and growth")
    add_common(report)
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument(
        "--since",
        metavar="DAYS",
        type=int,
        default=_SINCE_DAYS,
        help=f"download statistics over the last DAYS days (default {_SINCE_DAYS})",
    )
    report.set_defaults(handler=_cmd_report)

    monitor = sub.add_parser(
        "monitor", help="one status line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN"
    )
    add_common(monitor)
    monitor.add_argument(
        "--warning",
        metavar="PERCENT",
        type=float,
        default=_WARNING_PERCENT,
        help=f"disk use that is a WARNING (default {_WARNING_PERCENT:g})",
    )
    monitor.add_argument(
        "--critical",
        metavar="PERCENT",
        type=float,
        default=_CRITICAL_PERCENT,
        help=f"disk use that is CRITICAL (default {_CRITICAL_PERCENT:g})",
    )
    monitor.set_defaults(handler=_cmd_monitor)


def local_tree(config: Config) -> Path:
    """The local clips tree of ``config``; raises ConfigError in s3 mode or if it is missing."""
    if config.storage.backend != "local":
        raise ConfigError(
            f"storage.backend={config.storage.backend!r}: this command works on a local tree; "
            "with s3 the retention leader daemon applies the policy"
        )
    clips_dir = config.clips_dir
    if not clips_dir.is_dir():
        raise ConfigError(f"storage.clips_dir={str(clips_dir)!r}: is not a directory")
    return clips_dir


def _mb(size: int) -> str:
    return f"{size / _MB:.1f} MB"


def _gb(size: int) -> str:
    return f"{size / GB:.1f} GB"


# -- cleanup -------------------------------------------------------------------------------


def _cmd_cleanup(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    steps = [
        step
        for wanted, step in (
            (args.dry_run, _run_cleanup),
            (args.report, _cmd_report),
            (args.monitor, _cmd_monitor),
        )
        if wanted
    ]
    if len(steps) <= 1:
        return (steps[0] if steps else _run_cleanup)(args, environ)
    # The legacy cron line (``--dry-run --max-age 24 --size-threshold 5.0 --report
    # --monitor``): each flag is read-only, so all run, in order; the worst exit code wins.
    if args.json:
        print(
            "clipd cleanup: error: --json takes one of --dry-run, --report, --monitor",
            file=sys.stderr,
        )
        return 2
    codes = []
    for i, step in enumerate(steps):
        if i:
            print(flush=True)
        codes.append(step(args, environ))
        sys.stdout.flush()
    return max(codes)


def _run_cleanup(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = config_from_args(
        args,
        environ,
        extra={
            "retention.max_age_hours": ("--max-age", args.max_age),
            "retention.max_size_gb": ("--size-threshold", args.size_threshold),
        },
    )
    setup_logging(config.log.level, environ)
    clips_dir = local_tree(config)
    ix = Index(index_path(clips_dir))
    try:
        snapshot = gather_blocking(ix, clips_dir, local=True)
        if not (args.dry_run or args.json):
            # Flushed: under cron stdout and stderr often share one log file.
            print(start_line(sum(r.size_bytes for r in snapshot.records)), flush=True)
        now = time.time()
        the_plan = plan(
            snapshot.records,
            snapshot.usage,
            Policy.from_config(config.retention),
            now,
            tmp_files=snapshot.tmp_files,
            day_entries=snapshot.day_entries,
        )
        if snapshot.unindexed:
            logger.warning(
                "%d files on disk are not in the index yet and are left alone "
                "(the daemon indexes them)",
                len(snapshot.unindexed),
            )
        applied = None if args.dry_run else apply_blocking(ix, clips_dir, the_plan, now)
    finally:
        ix.close()
    if args.json:
        print(json.dumps(_cleanup_json(the_plan, applied, now, snapshot.unindexed), indent=2))
    elif applied is None:
        _print_plan(the_plan, now, sys.stdout)
    else:
        print(summary_line(applied))
        for d in applied.skipped:
            print(f"skipped (locked by another process): {d.relpath}")
    return 1 if applied is not None and applied.failed else 0


def _print_plan(the_plan: Plan, now: float, out: TextIO) -> None:
    print(
        f"Dry run: would delete {the_plan.files} files, {_mb(the_plan.bytes)}, "
        f"and remove {len(the_plan.empty_days)} empty dirs",
        file=out,
    )
    for d in the_plan.deletions:
        age_h = (now - d.mtime_ns / 1e9) / 3600
        print(
            f"  {d.reason.value:<9} {d.relpath}  {_mb(d.size_bytes)}  {age_h:.1f} h old", file=out
        )
    for day in the_plan.empty_days:
        print(f"  {'rmdir':<9} {day}/", file=out)
    if the_plan.unmet:
        print(
            "Targets still unmet (the rest is protected): "
            + ", ".join(r.value for r in the_plan.unmet),
            file=out,
        )


def _cleanup_json(
    the_plan: Plan, applied: Applied | None, now: float, unindexed: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dry_run": applied is None,
        "planned_files": the_plan.files,
        "planned_bytes": the_plan.bytes,
        "deletions": [
            {
                "relpath": d.relpath,
                "job_id": d.job_id,
                "reason": d.reason.value,
                "size_bytes": d.size_bytes,
                "age_hours": round((now - d.mtime_ns / 1e9) / 3600, 3),
            }
            for d in the_plan.deletions
        ],
        "empty_dirs": list(the_plan.empty_days),
        "unmet": [r.value for r in the_plan.unmet],
        "unindexed_files": len(unindexed),
    }
    if applied is not None:
        out.update(
            deleted_files=len(applied.deleted),
            freed_bytes=applied.freed_bytes,
            empty_dirs_removed=len(applied.dirs_removed),
            skipped_locked=[d.relpath for d in applied.skipped],
            already_gone=[d.relpath for d in applied.gone],
            failed=[d.relpath for d in applied.failed],
        )
    return out


# -- report --------------------------------------------------------------------------------


def _cmd_report(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.report import gather_blocking as gather_report

    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    if config.storage.backend == "s3":
        return _report_s3(args, config)
    clips_dir = local_tree(config)
    ix = Index(index_path(clips_dir))
    try:
        data = gather_report(ix, clips_dir, usage_of(clips_dir), time.time(), args.since)
        unindexed = gather_blocking(ix, clips_dir, local=True).unindexed
    finally:
        ix.close()
    if unindexed:
        logger.warning(
            "%d files on disk are not in the index yet and are not counted "
            "(the daemon indexes them)",
            len(unindexed),
        )
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_report(data, sys.stdout)
    return 0


def _report_s3(args: argparse.Namespace, config: Config) -> int:
    """The report of an s3-mode instance: the bucket's index under ``clips_dir/.clipd``
    (kept by the daemon's listing), with no disk figures."""
    from clipd.report import gather_blocking as gather_report
    from clipd.storage.s3keys import normalize_prefix

    path = index_path(config.clips_dir)
    if not path.is_file():
        raise ConfigError(f"storage.clips_dir: no index at {path} (has 'clipd run' started?)")
    ix = Index(path)
    try:
        data = gather_report(ix, config.clips_dir, None, time.time(), args.since)
    finally:
        ix.close()
    # As /api/v1/storage/metrics names it (the s3 backend's base_path).
    data["directory"] = f"s3://{config.s3.bucket}/{normalize_prefix(config.s3.prefix)}".rstrip("/")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_report(data, sys.stdout)
    return 0


def _print_report(data: dict[str, Any], out: TextIO) -> None:
    disk = data["disk_usage_percent"]
    lines = [
        "=== STORAGE REPORT ===",
        f"Directory: {data['directory']}",
        f"Files: {data['files']}",
        f"Total Size: {_gb(data['total_bytes'])}",
        "Disk Usage: n/a (s3)" if disk is None else f"Disk Usage: {disk}%",
        f"File Types: {data['file_types']}",
        f"Age Distribution: {data['age_distribution']}",
        "",
        f"=== DOWNLOADS (last {data['downloads']['since_days']} days) ===",
        f"{'day':<12}{'downloads':>10}{'bytes':>16}",
    ]
    downloads = data["downloads"]
    lines += [f"{r['day']:<12}{r['count']:>10}{r['bytes']:>16}" for r in downloads["per_day"]]
    lines += ["", f"{'most downloaded':<40}{'downloads':>10}{'bytes':>16}"]
    lines += [f"{r['job_id']:<40}{r['count']:>10}{r['bytes']:>16}" for r in downloads["top"]]
    growth = data["growth"]
    until = growth["days_until_full"]
    lines += [
        "",
        f"=== GROWTH (last {growth['window_days']} days) ===",
        *(f"{day:<12}{size:>16}" for day, size in growth["bytes_added"].items()),
        f"Added per day: {_mb(int(growth['bytes_per_day']))}",
        "Days until the disk is full: " + ("never at this rate" if until is None else f"{until}"),
    ]
    print("\n".join(lines), file=out)


# -- monitor -------------------------------------------------------------------------------


def _cmd_monitor(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    code, line = _monitor(args, environ)
    print(f"CLIPD {_STATUS[code]} - {line}")
    return code


def _monitor(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[int, str]:
    warning, critical = args.warning, args.critical
    if not 0 <= warning <= critical <= 100:
        return _UNKNOWN, (
            f"--warning={warning:g} --critical={critical:g}: need 0 <= warning <= critical <= 100"
        )
    try:
        config = config_from_args(args, environ)
        clips_dir = local_tree(config)
        path = index_path(clips_dir)
        if not path.is_file():
            return _UNKNOWN, f"no index at {path} (has 'clipd run' started on this tree?)"
        ix = Index(path)
        try:
            totals = ix.totals()
        finally:
            ix.close()
        usage = usage_of(clips_dir)
    except ClipdError as exc:
        return _UNKNOWN, exc.detail
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        return _UNKNOWN, f"cannot read the tree or its index: {exc}"
    pct = usage.percent
    code = _CRITICAL if pct >= critical else _WARNING if pct >= warning else _OK
    perf = (
        f"disk_used_percent={pct:.1f}%;{warning:g};{critical:g};0;100 "
        f"clips={totals.files};;;0 clip_bytes={totals.bytes}B;;;0"
    )
    return code, f"disk {pct:.1f}% used, {totals.files} clips, {_gb(totals.bytes)} | {perf}"
