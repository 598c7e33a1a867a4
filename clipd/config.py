"""Configuration: one frozen tree, merged purely from flags, environment, file and defaults.

Precedence is flag > environment > file > default. Environment names are
``CLIPD_<SECTION>_<KEY>`` plus the legacy names kept for existing deployments
(``STORAGE_BACKEND``, ``CLIPS_DIR``, ``BASE_URL``, ``S3_BUCKET``, ``S3_PREFIX``,
``AWS_ENDPOINT_URL``, ``CLIPD_LISTEN``, ``CLIPD_API_TOKEN``). Every bad value raises
:class:`ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipd.errors import ConfigError

__all__ = [
    "BackupConfig",
    "Config",
    "IngestConfig",
    "LogConfig",
    "RetentionConfig",
    "S3Config",
    "ScrubConfig",
    "StorageConfig",
    "WebConfig",
    "load",
    "parse_listen",
    "redacted",
]

_SECRET_KEYS = frozenset({"api_token", "signing_key", "secret_access_key"})


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _percent(value: float) -> str | None:
    return None if 0 < value <= 100 else "must be a percent in (0, 100]"


def _one_of(*allowed: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in allowed else "must be one of " + ", ".join(allowed)

    return check


def _listen(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def _extensions(value: tuple[str, ...]) -> str | None:
    for ext in value:
        if not (ext.startswith(".") and ext[1:].isalnum() and ext == ext.lower()):
            return "must be lower-case extensions with a leading dot, like '.mp4'"
    return None if value else "must list at least one extension"


def _f(default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    """A config key with its default and the check its value must pass."""
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = _f("local", _one_of("local", "s3"))
    clips_dir: str = _f("./clips")
    extensions: tuple[str, ...] = _f((".mp4", ".webm", ".mov", ".mkv", ".gif"), _extensions)
    min_bytes: int = _f(1, _non_negative)
    max_bytes: int = _f(10 * 1024**3, _positive)


@dataclass(frozen=True, slots=True)
class IngestConfig:
    hash_workers: int = _f(2, _positive)
    hash_processes: int = _f(2, _non_negative)
    settle_seconds: float = _f(2.0, _non_negative)
    rescan_interval_seconds: float = _f(300.0, _positive)


@dataclass(frozen=True, slots=True)
class WebConfig:
    listen: str = _f("127.0.0.1:8000", _listen)
    base_url: str = _f("http://localhost:8000")
    api_token: str = _f("")
    cache_control: str = _f("private, max-age=3600")
    accel_redirect: str = _f("")
    max_upload_bytes: int = _f(2 * 1024**3, _positive)
    signing_key: str = _f("")
    require_signed_downloads: bool = _f(False)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    enabled: bool = _f(True)
    max_age_hours: float = _f(24.0, _positive)
    max_size_gb: float = _f(0.0, _non_negative)
    high_watermark_disk_percent: float = _f(90.0, _percent)
    low_watermark_disk_percent: float = _f(80.0, _percent)
    min_free_gb: float = _f(0.0, _non_negative)
    interval_seconds: float = _f(300.0, _positive)
    stale_tmp_minutes: float = _f(60.0, _positive)
    protect_recent_minutes: float = _f(5.0, _non_negative)


@dataclass(frozen=True, slots=True)
class ScrubConfig:
    enabled: bool = _f(True)
    mb_per_second: float = _f(5.0, _positive)
    min_interval_hours: float = _f(24.0, _non_negative)


@dataclass(frozen=True, slots=True)
class S3Config:
    bucket: str = _f("")
    prefix: str = _f("")
    endpoint_url: str = _f("")
    region: str = _f("us-east-1")
    download_mode: str = _f("redirect", _one_of("redirect", "proxy"))
    presign_ttl_seconds: int = _f(900, _positive)
    relist_interval_seconds: float = _f(300.0, _positive)
    retention_leader: bool = _f(True)


@dataclass(frozen=True, slots=True)
class BackupConfig:
    s3_bucket: str = _f("")
    prefix: str = _f("")
    concurrency: int = _f(4, _positive)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = _f("info", _one_of("debug", "info", "warning", "error"))


@dataclass(frozen=True, slots=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    web: WebConfig = field(default_factory=WebConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    scrub: ScrubConfig = field(default_factory=ScrubConfig)
    s3: S3Config = field(default_factory=S3Config)
    backup: BackupConfig = field(default_factory=BackupConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = ""

    @property
    def clips_dir(self) -> Path:
        return Path(self.storage.clips_dir)


_SECTIONS: dict[str, type[Any]] = {
    f.name: f.type if isinstance(f.type, type) else globals()[str(f.type)]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}

# Legacy environment names and the key each one sets.
_LEGACY_ENV: dict[str, tuple[str, str]] = {
    "STORAGE_BACKEND": ("storage", "backend"),
    "CLIPS_DIR": ("storage", "clips_dir"),
    "BASE_URL": ("web", "base_url"),
    "S3_BUCKET": ("s3", "bucket"),
    "S3_PREFIX": ("s3", "prefix"),
    "AWS_ENDPOINT_URL": ("s3", "endpoint_url"),
    "AWS_DEFAULT_REGION": ("s3", "region"),
    "CLIPD_LISTEN": ("web", "listen"),
    "CLIPD_API_TOKEN": ("web", "api_token"),
}
_NON_KEY_ENV = frozenset({"CLIPD_CONFIG"})


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); raises ValueError saying what is allowed."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("must be host:port with a port 0-65535, like 127.0.0.1:8000")
    return host, int(port_text)


def _fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(_SECTIONS[section])}


def _coerce(where: str, raw: Any, default: Any, from_text: bool) -> Any:
    """Turn ``raw`` (TOML value or environment text) into the type of ``default``."""
    bad = ConfigError(f"{where}={raw!r}: must be {_type_name(default)}")
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if from_text and str(raw).lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return str(raw).lower() in {"1", "true", "yes", "on"}
        raise bad
    if isinstance(default, int | float):
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, str) and from_text:
            try:
                raw = int(raw) if isinstance(default, int) else float(raw)
            except ValueError:
                raise bad from None
        if isinstance(default, int) and isinstance(raw, int):
            return raw
        if isinstance(default, float) and isinstance(raw, int | float):
            return float(raw)
        raise bad
    if isinstance(default, tuple):
        if from_text and isinstance(raw, str):
            raw = [item.strip() for item in raw.split(",") if item.strip()]
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise bad
    if isinstance(raw, str):
        return raw
    raise bad


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, tuple):
        return "a list of strings"
    return "a string"


_Merged = dict[str, dict[str, tuple[Any, str, Any]]]  # section -> key -> (value, where, raw)


def _apply(merged: _Merged, section: str, key: str, raw: Any, where: str, text: bool) -> None:
    fields = _fields(section)
    if key not in fields:
        raise ConfigError(
            f"{where}: unknown key; allowed in [{section}]: " + ", ".join(sorted(fields))
        )
    default = fields[key].default
    merged[section][key] = (_coerce(where, raw, default, text), where, raw)


def _from_file(text: str, source: str, merged: _Merged) -> None:
    import tomllib  # here: most runs (every CLI command without --config) have no file

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    for section, table in data.items():
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ConfigError(
                f"{section}: unknown section; allowed: " + ", ".join(sorted(_SECTIONS))
            )
        for key, raw in table.items():
            _apply(merged, section, key, raw, f"{section}.{key}", text=False)


def _from_env(environ: Mapping[str, str], merged: _Merged) -> None:
    # Legacy names first so that the namespaced CLIPD_<SECTION>_<KEY> wins over them.
    for name, (section, key) in _LEGACY_ENV.items():
        if name in environ:
            _apply(merged, section, key, environ[name], name, text=True)
    for name, raw in sorted(environ.items()):
        if not name.startswith("CLIPD_") or name in _LEGACY_ENV or name in _NON_KEY_ENV:
            continue
        section, _, key = name.removeprefix("CLIPD_").lower().partition("_")
        if section not in _SECTIONS:
            raise ConfigError(
                f"{name}: unknown environment variable; clipd reads CLIPD_<SECTION>_<KEY> with "
                "a section of: " + ", ".join(sorted(_SECTIONS))
            )
        _apply(merged, section, key, raw, name, text=True)


def _validate(section: str, given: dict[str, tuple[Any, str, Any]]) -> Any:
    for key, (value, where, raw) in given.items():
        check = _fields(section)[key].metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            raise ConfigError(f"{where}={raw!r}: {problem}")
    return _SECTIONS[section](**{key: value for key, (value, _, _) in given.items()})


def load(
    overrides: Mapping[str, tuple[str, Any]],
    environ: Mapping[str, str],
    text: str | None,
    source: str = "<defaults>",
) -> Config:
    """Build the effective Config (pure: no disk, no clock).

    ``overrides`` maps ``section.key`` to ``(flag, value)`` from the command line (a None
    value means not given); ``text`` is the config file's content or None.
    Raises ConfigError with one line naming the key (or variable, or flag) and the value.
    """
    merged: _Merged = {s: {} for s in _SECTIONS}
    if text is not None:
        _from_file(text, source, merged)
    _from_env(environ, merged)
    for dotted, (flag, raw) in overrides.items():
        if raw is None:
            continue
        section, _, key = dotted.partition(".")
        _apply(merged, section, key, raw, flag, text=isinstance(raw, str))
    sections = {s: _validate(s, merged[s]) for s in _SECTIONS}
    config = Config(**sections, source=source)
    retention = config.retention
    if retention.low_watermark_disk_percent > retention.high_watermark_disk_percent:
        raise ConfigError(
            f"retention.low_watermark_disk_percent={retention.low_watermark_disk_percent!r}: "
            f"must be <= retention.high_watermark_disk_percent "
            f"({retention.high_watermark_disk_percent!r})"
        )
    if config.storage.backend == "s3" and not config.s3.bucket:
        raise ConfigError("s3.bucket='': must name a bucket when storage.backend is 's3'")
    if config.storage.min_bytes > config.storage.max_bytes:
        raise ConfigError(
            f"storage.min_bytes={config.storage.min_bytes!r}: must be <= storage.max_bytes"
        )
    return config


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with secrets masked, for ``check-config`` and logs."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        section = dataclasses.asdict(getattr(config, name))
        for key in section:
            if key in _SECRET_KEYS and section[key]:
                section[key] = "***"
            if isinstance(section[key], tuple):
                section[key] = list(section[key])
        out[name] = section
    return out
