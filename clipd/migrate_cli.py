"""Commands ``migrate``, ``restore``, ``verify-migration`` and ``s3-lifecycle``.

``migrate``/``restore`` run :func:`clipd.migrate.run_migrate`; ``verify-migration``
compares the local tree with a bucket clip by clip, with the same evidence rules;
``s3-lifecycle`` prints or applies the bucket rule matching ``retention.max_age_hours``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from clipd.errors import ClipdError, InvalidRequest, StorageError
from clipd.logs import setup_logging

if TYPE_CHECKING:
    from clipd.config import Config
    from clipd.migrate import MigratePlan, Summary
    from clipd.migrate_fetch import Fetcher, Item

# The S3 stack (clipd.migrate, botocore) is imported by the commands that use it, not
# here: `clipd` imports this module to build its parser for every other command too.

__all__ = ["add_commands", "lifecycle_rule", "verify_tree"]

# 4, 8, 16 and 32 threads cost the same CPU (bench/README.md); more objects in flight hide
# the network's and the disk's latency (writes are O_DIRECT, so each one waits for the disk).
_DEFAULT_CONCURRENCY = 16


def _config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    from clipd.cli import config_from_args

    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    return config


def _print_summary(summary: Summary, as_json: bool, verb: str) -> None:
    data = summary.as_dict()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key, reason in summary.not_clips:
        print(f"not a clip: {key}: {reason}")
    for key, reason in summary.failures:
        print(f"failed: {key}: {reason}")
    print(
        f"{verb}: {data['moved']} moved, {data['skipped']} skipped (present), "
        f"{data['not_clips']} not clips, {data['failed']} failed, {data['bytes']} bytes in "
        f"{data['seconds']} s ({data['mb_per_second']} MB/s)"
    )


def _source(args: argparse.Namespace, config: Config) -> str:
    """``--from``, else the legacy ``S3_BUCKET`` / ``S3_PREFIX`` (``[s3] bucket``/``prefix``),
    which the legacy migrate_s3_to_local.py and verify_migration.py read."""
    if args.source:
        return str(args.source)
    if args.command == "restore":
        bucket, prefix, where = config.backup.s3_bucket, config.backup.prefix, "[backup] s3_bucket"
    else:
        bucket, prefix, where = config.s3.bucket, config.s3.prefix, "S3_BUCKET, [s3] bucket"
    if bucket:
        return f"s3://{bucket}/{prefix}"
    raise InvalidRequest(f"{args.command}: give --from s3://BUCKET[/PREFIX] (or set {where})")


def _cmd_migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.migrate import run_migrate

    config = _config(args, environ)
    args.source = _source(args, config)
    summary = run_migrate(args, config)
    _print_summary(summary, args.json, args.command)
    left_behind = _clips_left_behind(summary, frozenset(config.storage.extensions))
    return 1 if summary.failed or left_behind else 0


def _clips_left_behind(summary: Summary, extensions: frozenset[str]) -> list[str]:
    """Objects named with a clip extension that were not placed (junk bytes, empty, a job
    id already taken, no job id): data an operator expects moved, so the run fails. A
    readme or a folder marker is listed but does not fail every run of a legacy bucket."""
    return [
        key
        for key, _ in summary.not_clips
        if not key.endswith("/") and PurePosixPath(key).suffix.lower() in extensions
    ]


def _cmd_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.migrate import list_source, source_of
    from clipd.migrate_fetch import Fetcher

    config = _config(args, environ)
    client, bucket, prefix = source_of(_source(args, config), config, args.concurrency + 4)
    plan = list_source(client, bucket, prefix, config)
    report = verify_tree(
        Fetcher(client, bucket, config.clips_dir, {}), plan, config.clips_dir, args.concurrency
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for entry in report["not_clips"]:
            print(f"not a clip: {entry['key']}: {entry['detail']}")
        for kind in ("missing", "extra", "different"):
            for entry in report[kind]:
                print(f"{kind}: {entry['job_id']}: {entry['detail']}")
        print(
            f"verify-migration: {report['matching']} match, {len(report['missing'])} missing, "
            f"{len(report['extra'])} extra, {len(report['different'])} different"
        )
    return 0 if not (report["missing"] or report["extra"] or report["different"]) else 1


def verify_tree(
    fetcher: Fetcher, plan: MigratePlan, clips_dir: Path, concurrency: int
) -> dict[str, Any]:
    """Compare every clip object with the local copy (size and hash); blocks."""
    from concurrent.futures import ThreadPoolExecutor

    from clipd.index import Index, index_path
    from clipd.migrate_fetch import Status
    from clipd.naming import parse_relpath
    from clipd.reconcile import walk_tree
    from clipd.record import ClipRecord
    from clipd.storage.s3keys import NotClip

    rows: dict[str, ClipRecord] = {}
    if index_path(clips_dir).exists():
        index = Index(index_path(clips_dir))
        try:
            rows = {r.relpath: r for r in index.records()}
        finally:
            index.close()
    fetcher.rows = rows
    expected_paths = {item.plan.local_relpath for item in plan.items}

    def check(item: Item) -> tuple[str, str]:
        dest = clips_dir / item.plan.local_relpath
        if not os.path.lexists(dest):
            if not fetcher.starts_like_a_clip(item):
                return "not_clips", NotClip.BAD_SIGNATURE.value  # migrate never places it
            return "missing", f"{item.info.key} -> {item.plan.local_relpath}"
        try:
            result = fetcher.check_present(item, dest)
        except (OSError, ClipdError) as exc:
            return "different", str(exc)
        return ("ok", "") if result.status is Status.PRESENT else ("different", result.reason)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="clipd-verify") as pool:
        outcomes = list(pool.map(check, plan.items))
    report: dict[str, Any] = {
        "matching": sum(1 for kind, _ in outcomes if kind == "ok"),
        "missing": [],
        "extra": [],
        "different": [],
        "not_clips": [],
    }
    for item, (kind, detail) in zip(plan.items, outcomes, strict=True):
        if kind != "ok":
            report[kind].append(
                {"job_id": item.plan.name.job_id, "key": item.info.key, "detail": detail}
            )
    for relpath in sorted(walk_tree(clips_dir).files if clips_dir.is_dir() else {}):
        parsed = parse_relpath(relpath)
        if relpath not in expected_paths and parsed is not None:
            report["extra"].append({"job_id": parsed[1].job_id, "key": "", "detail": relpath})
    return report


def lifecycle_rule(config: Config) -> dict[str, Any]:
    """The bucket lifecycle that expires clips at ``retention.max_age_hours``; pure.

    S3 expiration counts whole days (objects expire at the next midnight UTC after
    ``Days``), so the age is rounded up: 30 hours becomes 2 days.
    """
    days = max(1, math.ceil(config.retention.max_age_hours / 24))
    prefix = config.s3.prefix.strip("/")
    return {
        "Rules": [
            {
                "ID": "clipd-max-age",
                "Status": "Enabled",
                "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
                "Expiration": {"Days": days},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        ]
    }


def _cmd_lifecycle(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = _config(args, environ)
    if not config.s3.bucket:
        raise ClipdError("s3.bucket='': s3-lifecycle needs the bucket (S3_BUCKET)")
    rule = lifecycle_rule(config)
    print(json.dumps(rule, indent=2))
    if args.apply:
        from botocore.exceptions import BotoCoreError, ClientError

        from clipd.storage.s3 import make_client

        try:
            make_client(config.s3).put_bucket_lifecycle_configuration(
                Bucket=config.s3.bucket, LifecycleConfiguration=rule
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"s3://{config.s3.bucket}: lifecycle not applied: {exc}") from exc
        print(f"applied to s3://{config.s3.bucket}", file=sys.stderr)
    return 0


_LEGACY_SOURCE = (
    "s3://$S3_BUCKET/$S3_PREFIX ([s3] bucket and prefix), as the legacy scripts read it"
)
_BACKUP_SOURCE = "the [backup] s3_bucket and prefix"


def _add_source(cmd: argparse.ArgumentParser, what: str, default: str = _LEGACY_SOURCE) -> None:
    cmd.add_argument(
        "--from",
        dest="source",
        metavar="s3://BUCKET[/PREFIX]",
        help=f"bucket (and optional prefix) to {what}; default {default}",
    )
    cmd.add_argument(
        "--concurrency",
        type=int,
        default=_DEFAULT_CONCURRENCY,
        help=f"objects handled at once (default {_DEFAULT_CONCURRENCY})",
    )
    cmd.add_argument("--json", action="store_true", help="print the result as JSON")


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register migrate, restore, verify-migration and s3-lifecycle."""
    for name, help_text in (
        ("migrate", "copy every clip of an S3 bucket into the local tree, verified"),
        ("restore", "restore the tree from a backup bucket (same as migrate)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        add_common(cmd)
        _add_source(cmd, "copy from", _BACKUP_SOURCE if name == "restore" else _LEGACY_SOURCE)
        cmd.add_argument(
            "--dry-run", action="store_true", help="list what would be moved; change nothing"
        )
        cmd.set_defaults(handler=_cmd_migrate)
    verify = sub.add_parser(
        "verify-migration", help="compare the local tree with a bucket, clip by clip"
    )
    add_common(verify)
    _add_source(verify, "compare with")
    verify.set_defaults(handler=_cmd_verify)
    life = sub.add_parser(
        "s3-lifecycle", help="the bucket lifecycle rule matching retention.max_age_hours"
    )
    add_common(life)
    mode = life.add_mutually_exclusive_group(required=True)
    mode.add_argument("--print", action="store_true", help="print the rule only")
    mode.add_argument("--apply", action="store_true", help="write the rule to s3.bucket")
    life.set_defaults(handler=_cmd_lifecycle)
