"""``clipd migrate|restore|verify-migration --from s3://BUCKET[/PREFIX]`` and ``s3-lifecycle``.

migrate copies every clip object of a bucket into the local day layout. Per object,
in a pool of ``--concurrency`` threads: a presigned GET (cheap to sign, no botocore
request machinery per object) streamed into ``<day>/.<name>.migrate.tmp`` while
hashing; the bytes are verified against the strongest evidence the store offers
(:mod:`clipd.storage.s3verify`), retried on failure, and only verified files are
renamed in. Durability per batch: all temp files of a batch, one ``syncfs``, the
renames, one fsync per touched folder, then the index rows (SHA-256 from the download,
identity from ``lstat`` after the rename: no second hash).

Idempotent: a clip already present with the object's size and hash is left untouched.
Resumable: a kill -9 leaves at most hidden ``*.migrate.tmp`` files, which the next run
truncates and rewrites (the daemon's stale temp-file cleanup removes any others).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from clipd.checks import BLOCK_BYTES, identity_of, signature_ok
from clipd.config import Config
from clipd.errors import ClipdError, StorageError
from clipd.index import ClipRecord, Index, index_path
from clipd.logs import setup_logging
from clipd.naming import parse_relpath
from clipd.reconcile import walk_tree
from clipd.storage.local import fsync_dir
from clipd.storage.s3 import ObjectInfo, list_objects, make_client
from clipd.storage.s3keys import KeyPlan, NotClip, parse_s3_url, plan_key
from clipd.storage.s3verify import Check, Digester, Expected, Verdict, expected_from_head, verdict

__all__ = ["MigratePlan", "Status", "add_commands", "plan_migration"]

logger = logging.getLogger(__name__)
_ATTEMPTS = 3
_RETRY_BASE_S = 0.5
_BATCH_FILES = 256
_BATCH_BYTES = 512 * 1024 * 1024
_PRESIGN_TTL_S = 3600
_LOG_EVERY_S = 5.0
_TMP_SUFFIX = ".migrate.tmp"
_MB = 1e6


class Status(Enum):
    MOVED = "moved"
    PRESENT = "present"
    FAILED = "failed"
    NOT_CLIP = "not-clip"


@dataclass(frozen=True, slots=True)
class Item:
    """One clip object to fetch."""

    info: ObjectInfo
    plan: KeyPlan


@dataclass(frozen=True, slots=True)
class MigratePlan:
    items: tuple[Item, ...]
    not_clips: tuple[tuple[str, str], ...]  # (key, reason)


@dataclass(frozen=True, slots=True)
class Result:
    item: Item
    status: Status
    reason: str = ""
    sha256: str = ""
    tmp: Path | None = None


@dataclass
class Summary:
    moved: int = 0
    present: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    not_clips: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "moved": self.moved, "skipped": self.present, "failed": self.failed,
            "not_clips": len(self.not_clips), "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_second": round(self.bytes / _MB / self.seconds, 1) if self.seconds else 0.0,
            "not_clip_objects": [{"key": k, "reason": r} for k, r in self.not_clips],
            "failures": [{"key": k, "reason": r} for k, r in self.failures],
        }


def plan_migration(
    listed: list[ObjectInfo], prefix: str, extensions: frozenset[str], max_bytes: int
) -> MigratePlan:
    """Split a listing into clips to fetch and objects that never enter the tree; pure."""
    items: list[Item] = []
    not_clips: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    for info in sorted(listed, key=lambda i: i.key):
        plan = plan_key(info.key, prefix, info.size_bytes, info.last_modified_s, extensions,
                        max_bytes)
        if isinstance(plan, NotClip):
            if plan is not NotClip.FOLDER:
                not_clips.append((info.key, plan.value))
            continue
        owner = owners.setdefault(plan.name.job_id, info.key)
        if owner != info.key:
            not_clips.append((info.key, f"job id {plan.name.job_id} already taken by {owner}"))
            continue
        items.append(Item(info, plan))
    return MigratePlan(tuple(items), tuple(not_clips))


# -- the blocking shell ----------------------------------------------------------------


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (syncfs(2)), else everything (sync(2))."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _head_mapping(headers: Mapping[str, str]) -> dict[str, Any]:
    """A GET response's headers as the boto3 HeadObject fields s3verify reads."""
    head: dict[str, Any] = {"ETag": headers.get("ETag", "")}
    if "Content-Length" in headers:
        head["ContentLength"] = int(headers["Content-Length"])
    if "x-amz-meta-sha256" in headers:
        head["Metadata"] = {"sha256": headers["x-amz-meta-sha256"]}
    for name, key in (("x-amz-checksum-sha256", "ChecksumSHA256"),
                      ("x-amz-checksum-type", "ChecksumType"),
                      ("x-amz-server-side-encryption", "ServerSideEncryption"),
                      ("x-amz-server-side-encryption-customer-algorithm",
                       "SSECustomerAlgorithm")):
        if name in headers:
            head[key] = headers[name]
    return head


class _Sha256Only:
    """The Digester interface when the store offers a SHA-256: no MD5 work wasted."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size_bytes = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.size_bytes += len(chunk)

    def sha256(self) -> bytes:
        return self._sha.digest()


class Fetcher:
    """Downloads and verifies objects of one bucket into one tree; thread-safe."""

    def __init__(self, client: Any, bucket: str, clips_dir: Path,
                 rows: dict[str, ClipRecord], concurrency: int) -> None:
        import urllib3

        self.client = client
        self.bucket = bucket
        self.clips_dir = clips_dir
        self.rows = rows
        self.http = urllib3.PoolManager(maxsize=concurrency, retries=False,
                                        timeout=urllib3.Timeout(connect=10, read=60))

    def fetch(self, item: Item) -> Result:
        """Fetch one object unless a verified copy is present; never raises ClipdError."""
        dest = self.clips_dir / item.plan.local_relpath
        last = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(_RETRY_BASE_S * 2 ** (attempt - 1))
            try:
                if os.path.lexists(dest):
                    return self._check_present(item, dest)
                return self._download(item, dest)
            except (OSError, ClipdError, ValueError) as exc:
                last = str(exc)
            except Exception as exc:  # urllib3/botocore raise many types: retry, then report
                last = f"{type(exc).__name__}: {exc}"
            logger.debug("%s: attempt %d failed: %s", item.info.key, attempt + 1, last)
        return Result(item, Status.FAILED, last)

    def head(self, key: str, part_number: int | None = None) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if part_number is not None:
            kwargs["PartNumber"] = part_number
        try:
            head: dict[str, Any] = self.client.head_object(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"s3://{self.bucket}/{key}: {exc}") from exc
        return head

    def _part_size(self, expected: Expected, key: str) -> int | None:
        if not expected.needs_part_size:
            return None
        return int(self.head(key, part_number=1)["ContentLength"])

    def _download(self, item: Item, dest: Path) -> Result:
        key = item.info.key
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=_PRESIGN_TTL_S
        )
        response = self.http.request("GET", url, preload_content=False)
        consumed = False
        try:
            if response.status != 200:
                raise StorageError(f"s3://{self.bucket}/{key}: GET answered {response.status}")
            expected = expected_from_head(_head_mapping(response.headers))
            if expected.check is Check.NONE:
                return Result(item, Status.FAILED, f"cannot verify: {expected.reason}")
            digest: Digester | _Sha256Only
            if expected.check in (Check.SHA256_METADATA, Check.SHA256_CHECKSUM):
                digest = _Sha256Only()
            else:
                digest = Digester(self._part_size(expected, key))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}{_TMP_SUFFIX}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                bad = self._copy(response, fd, digest, item.plan.name.ext)
            except BaseException:
                tmp.unlink(missing_ok=True)  # a cut body leaves no temp file behind
                raise
            finally:
                os.close(fd)
            consumed = bad is None
        finally:
            if not consumed:
                # An error answer or a body not read to the end leaves bytes on the
                # connection: back in the pool, the next GET would read them as its answer.
                response.close()
            response.release_conn()
        if bad is not None:
            tmp.unlink(missing_ok=True)
            return Result(item, Status.NOT_CLIP, bad.value)
        outcome = verdict(expected, digest)  # type: ignore[arg-type]
        if outcome.verdict is not Verdict.MATCH:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"s3://{self.bucket}/{key}: {outcome.reason}")
        return Result(item, Status.MOVED, sha256=digest.sha256().hex(), tmp=tmp)

    @staticmethod
    def _copy(response: Any, fd: int, digest: Digester | _Sha256Only, ext: str) -> NotClip | None:
        first = True
        for chunk in response.stream(BLOCK_BYTES):
            if first and not signature_ok(ext, chunk[:64]):
                return NotClip.BAD_SIGNATURE
            first = False
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        return None

    def _check_present(self, item: Item, dest: Path) -> Result:
        """A file is already at the target: keep it if it is the object's bytes."""
        st = os.lstat(dest)
        if st.st_size != item.info.size_bytes:
            return Result(item, Status.FAILED,
                          f"{item.plan.local_relpath} exists with {st.st_size} bytes, object has "
                          f"{item.info.size_bytes}; remove it to fetch again")
        expected = expected_from_head(self.head(item.info.key))
        row = self.rows.get(item.plan.local_relpath)
        if (expected.check in (Check.SHA256_METADATA, Check.SHA256_CHECKSUM) and row is not None
                and row.identity == identity_of(st) and row.sha256):
            if bytes.fromhex(row.sha256) == expected.digest:
                return Result(item, Status.PRESENT, sha256=row.sha256)
            return Result(item, Status.FAILED, f"{item.plan.local_relpath} differs from the object")
        outcome, sha = hash_local(dest, expected, self._part_size(expected, item.info.key))
        if outcome.verdict is Verdict.MATCH:
            return Result(item, Status.PRESENT, sha256=sha)
        return Result(item, Status.FAILED,
                      f"{item.plan.local_relpath} differs from the object: {outcome.reason}")


def hash_local(path: Path, expected: Expected, part_size: int | None) -> tuple[Any, str]:
    """Hash a local file as the store would and compare; blocks on the read."""
    digest = Digester(part_size)
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK_BYTES):
            digest.update(chunk)
    return verdict(expected, digest), digest.sha256().hex()


class _Progress:
    def __init__(self, total_files: int, total_bytes: int, stream: Any) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.size = 0
        self.tty = stream.isatty()
        self.stream = stream
        self.started = self.last = time.monotonic()

    def add(self, size: int) -> None:
        self.files += 1
        self.size += size
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else _LOG_EVERY_S) and self.files < self.total_files:
            return
        self.last = now
        rate = self.size / _MB / max(now - self.started, 1e-6)
        line = (f"{self.files}/{self.total_files} objects, {self.size / _MB:.1f}/"
                f"{self.total_bytes / _MB:.1f} MB, {rate:.1f} MB/s")
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        else:
            logger.info("progress: %s", line)

    def close(self) -> None:
        if self.tty and self.files:
            self.stream.write("\n")


def _commit(index: Index, clips_dir: Path, batch: list[Result], backed_up: bool) -> None:
    """Make a batch of verified temp files durable clips, then record them."""
    if not batch:
        return
    _syncfs(clips_dir)
    folders = {clips_dir}
    rows: list[ClipRecord] = []
    now = time.time()
    for result in batch:
        assert result.tmp is not None
        dest = clips_dir / result.item.plan.local_relpath
        os.rename(result.tmp, dest)
        folders.add(dest.parent)
        rows.append(_row(result, dest, now, backed_up))
    for folder in folders:
        fsync_dir(folder)
    index.upsert_many(rows)


def _row(result: Result, dest: Path, now: float, backed_up: bool) -> ClipRecord:
    plan = result.item.plan
    identity = identity_of(os.lstat(dest))
    return ClipRecord(
        job_id=plan.name.job_id, relpath=plan.local_relpath, day=plan.day, title=plan.name.title,
        ext=plan.name.ext, size_bytes=identity.size_bytes, mtime_ns=identity.mtime_ns,
        ctime_ns=identity.ctime_ns, inode=identity.inode, sha256=result.sha256,
        ingested_at=now, verified_at=now, backed_up=backed_up,
    )


def _source(args: argparse.Namespace, config: Config) -> tuple[Any, str, str]:
    try:
        bucket, prefix = parse_s3_url(args.source)
    except ValueError as exc:
        raise ClipdError(f"--from: {exc}") from exc
    return make_client(config.s3, max_pool_connections=args.concurrency + 4), bucket, prefix


def _list(client: Any, bucket: str, prefix: str) -> list[ObjectInfo]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return list(list_objects(client, bucket, prefix))
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"listing s3://{bucket}/{prefix}: {exc}") from exc


def run_migrate(args: argparse.Namespace, config: Config) -> Summary:
    """List, fetch, verify and commit; blocks. The summary says what happened."""
    started = time.monotonic()
    client, bucket, prefix = _source(args, config)
    clips_dir = config.clips_dir
    (clips_dir / ".clipd").mkdir(parents=True, exist_ok=True)
    plan = plan_migration(_list(client, bucket, prefix), prefix,
                          frozenset(config.storage.extensions), config.storage.max_bytes)
    summary = Summary(not_clips=list(plan.not_clips))
    for key, reason in plan.not_clips:
        logger.warning("not a clip, skipped: s3://%s/%s: %s", bucket, key, reason)
    if args.dry_run:
        for item in plan.items:
            present = os.path.lexists(clips_dir / item.plan.local_relpath)
            print(f"{'present' if present else 'would move'}: {item.info.key} -> "
                  f"{item.plan.local_relpath}")
        summary.seconds = time.monotonic() - started
        return summary
    index = Index(index_path(clips_dir))
    try:
        rows = {r.relpath: r for r in index.records()}
        fetcher = Fetcher(client, bucket, clips_dir, rows, args.concurrency)
        progress = _Progress(len(plan.items), sum(i.info.size_bytes for i in plan.items),
                             sys.stderr)
        backed_up = bucket == config.backup.s3_bucket
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="clipd-migrate") as pool:
            # Largest first: a big object started last would run alone at the end.
            ordered = sorted(plan.items, key=lambda i: -i.info.size_bytes)
            futures = [pool.submit(fetcher.fetch, item) for item in ordered]
            _collect(as_completed(futures), summary, progress,
                     lambda batch: _commit(index, clips_dir, batch, backed_up), index, clips_dir)
        progress.close()
    finally:
        index.close()
    summary.seconds = time.monotonic() - started
    return summary


def _collect(done: Iterator[Future[Result]], summary: Summary, progress: _Progress,
             commit: Callable[[list[Result]], None], index: Index, clips_dir: Path) -> None:
    batch: list[Result] = []
    batch_bytes = 0
    for future in done:
        result = future.result()
        key = result.item.info.key
        progress.add(result.item.info.size_bytes)
        if result.status is Status.MOVED:
            batch.append(result)
            batch_bytes += result.item.info.size_bytes
            summary.moved += 1
            summary.bytes += result.item.info.size_bytes
        elif result.status is Status.PRESENT:
            summary.present += 1
            _record_present(index, clips_dir, result)
        elif result.status is Status.NOT_CLIP:
            summary.not_clips.append((key, result.reason))
            logger.warning("not a clip, skipped: %s: %s", key, result.reason)
        else:
            summary.failed += 1
            summary.failures.append((key, result.reason))
            logger.error("failed: %s: %s", key, result.reason)
        if len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
            commit(batch)
            batch, batch_bytes = [], 0
    commit(batch)


def _record_present(index: Index, clips_dir: Path, result: Result) -> None:
    """A verified clip already in the tree: make sure the index has its row."""
    row = index.get(result.item.plan.name.job_id)
    dest = clips_dir / result.item.plan.local_relpath
    if row is not None and row.relpath == result.item.plan.local_relpath and \
            row.identity == identity_of(os.lstat(dest)):
        return
    index.upsert(_row(result, dest, time.time(), row.backed_up if row else False))


# -- commands --------------------------------------------------------------------------


def _print_summary(summary: Summary, as_json: bool, verb: str) -> None:
    data = summary.as_dict()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key, reason in summary.not_clips:
        print(f"not a clip: {key}: {reason}")
    for key, reason in summary.failures:
        print(f"failed: {key}: {reason}")
    print(f"{verb}: {data['moved']} moved, {data['skipped']} skipped (present), "
          f"{data['not_clips']} not clips, {data['failed']} failed, {data['bytes']} bytes in "
          f"{data['seconds']} s ({data['mb_per_second']} MB/s)")


def _cmd_migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.cli import config_from_args

    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    summary = run_migrate(args, config)
    _print_summary(summary, args.json, args.command)
    return 1 if summary.failed or summary.not_clips else 0


def _cmd_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.cli import config_from_args

    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    client, bucket, prefix = _source(args, config)
    plan = plan_migration(_list(client, bucket, prefix), prefix,
                          frozenset(config.storage.extensions), config.storage.max_bytes)
    report = verify_tree(Fetcher(client, bucket, config.clips_dir, {}, args.concurrency),
                         plan, config.clips_dir, args.concurrency)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for kind in ("missing", "extra", "different"):
            for entry in report[kind]:
                print(f"{kind}: {entry['job_id']}: {entry['detail']}")
        print(f"verify-migration: {report['matching']} match, {len(report['missing'])} missing, "
              f"{len(report['extra'])} extra, {len(report['different'])} different")
    return 0 if not (report["missing"] or report["extra"] or report["different"]) else 1


def verify_tree(fetcher: Fetcher, plan: MigratePlan, clips_dir: Path,
                concurrency: int) -> dict[str, Any]:
    """Compare every clip object with the local copy (size and hash); blocks."""
    rows: dict[str, ClipRecord] = {}
    if index_path(clips_dir).exists():
        index = Index(index_path(clips_dir))
        try:
            rows = {r.relpath: r for r in index.records()}
        finally:
            index.close()
    fetcher.rows = rows
    expected_paths = {item.plan.local_relpath for item in plan.items}
    missing: list[dict[str, str]] = []
    different: list[dict[str, str]] = []

    def check(item: Item) -> tuple[str, str]:
        dest = clips_dir / item.plan.local_relpath
        if not os.path.lexists(dest):
            return "missing", f"{item.info.key} -> {item.plan.local_relpath}"
        try:
            result = fetcher._check_present(item, dest)
        except (OSError, ClipdError) as exc:
            return "different", str(exc)
        return ("ok", "") if result.status is Status.PRESENT else ("different", result.reason)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="clipd-verify") as pool:
        outcomes = list(pool.map(check, plan.items))
    for item, (kind, detail) in zip(plan.items, outcomes, strict=True):
        entry = {"job_id": item.plan.name.job_id, "key": item.info.key, "detail": detail}
        if kind == "missing":
            missing.append(entry)
        elif kind == "different":
            different.append(entry)
    extra = []
    for relpath in sorted(walk_tree(clips_dir).files if clips_dir.is_dir() else {}):
        parsed = parse_relpath(relpath)
        if relpath not in expected_paths and parsed is not None:
            extra.append({"job_id": parsed[1].job_id, "key": "", "detail": relpath})
    return {"matching": sum(1 for kind, _ in outcomes if kind == "ok"), "missing": missing,
            "extra": extra, "different": different}


def lifecycle_rule(config: Config) -> dict[str, Any]:
    """The bucket lifecycle that expires clips at ``retention.max_age_hours``; pure.

    S3 expiration counts whole days (objects expire at the next midnight UTC after
    ``Days``), so the age is rounded up: 30 hours becomes 2 days.
    """
    days = max(1, math.ceil(config.retention.max_age_hours / 24))
    prefix = config.s3.prefix.strip("/")
    return {"Rules": [{
        "ID": "clipd-max-age",
        "Status": "Enabled",
        "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }]}


def _cmd_lifecycle(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from clipd.cli import config_from_args

    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    if not config.s3.bucket:
        raise ClipdError("s3.bucket='': s3-lifecycle needs the bucket (S3_BUCKET)")
    rule = lifecycle_rule(config)
    print(json.dumps(rule, indent=2))
    if args.apply:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            make_client(config.s3).put_bucket_lifecycle_configuration(
                Bucket=config.s3.bucket, LifecycleConfiguration=rule
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"s3://{config.s3.bucket}: lifecycle not applied: {exc}") from exc
        print(f"applied to s3://{config.s3.bucket}", file=sys.stderr)
    return 0


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register migrate, restore, verify-migration and s3-lifecycle."""
    for name, help_text in (
        ("migrate", "copy every clip of an S3 bucket into the local tree, verified"),
        ("restore", "restore the tree from a backup bucket (same as migrate)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        add_common(cmd)
        cmd.add_argument("--from", dest="source", required=True, metavar="s3://BUCKET[/PREFIX]",
                         help="bucket (and optional prefix) to copy from")
        cmd.add_argument("--concurrency", type=int, default=16,
                         help="objects fetched at once (default 16)")
        cmd.add_argument("--dry-run", action="store_true",
                         help="list what would be moved; change nothing")
        cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
        cmd.set_defaults(handler=_cmd_migrate)
    verify = sub.add_parser("verify-migration",
                            help="compare the local tree with a bucket, clip by clip")
    add_common(verify)
    verify.add_argument("--from", dest="source", required=True, metavar="s3://BUCKET[/PREFIX]",
                        help="bucket (and optional prefix) to compare with")
    verify.add_argument("--concurrency", type=int, default=16, help="objects checked at once")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_cmd_verify)
    life = sub.add_parser("s3-lifecycle",
                          help="the bucket lifecycle rule matching retention.max_age_hours")
    add_common(life)
    mode = life.add_mutually_exclusive_group(required=True)
    mode.add_argument("--print", action="store_true", help="print the rule only")
    mode.add_argument("--apply", action="store_true", help="write the rule to s3.bucket")
    life.set_defaults(handler=_cmd_lifecycle)
