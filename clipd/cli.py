"""Command line: ``clipd run`` and the operator commands, one sub-command each.

Exit codes: 0 success, 1 a failure the command reports, 2 bad usage, 78 bad config.
``monitor`` follows the monitoring plugins instead: 0 OK, 1 WARNING, 2 CRITICAL and 3
UNKNOWN, for bad usage too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipd import __version__
from clipd import config as config_mod
from clipd.config import Config, redacted
from clipd.errors import ClipdError, ConfigError
from clipd.logs import journal_reads_stderr, setup_logging, with_priority

__all__ = ["config_from_args", "ensure_clips_dir", "main", "read_config"]

logger = logging.getLogger("clipd")

# Sub-commands provided by other modules: each registers itself with (subparsers).
_COMMAND_MODULES: tuple[str, ...] = (
    "clipd.migrate_cli",
    "clipd.signing",
    "clipd.ops",
    "clipd.verify",
)
# Commands defined here. When one of them is asked for, the modules above are not
# imported at all: `clipd run` starts faster, and each command imports only what it
# uses (the daemon, and with it aiohttp, only for `run`).
_CORE_COMMANDS = frozenset({"run", "check-config"})
_BAD_USAGE = 2  # what argparse exits with
# For a monitoring plugin 2 means CRITICAL: its bad usage is UNKNOWN, like a bad config.
_BAD_USAGE_EXIT = {"monitor": 3}


def read_config(
    path: str | None, overrides: Mapping[str, tuple[str, Any]], environ: Mapping[str, str]
) -> Config:
    """Read the config file (``--config``, ``CLIPD_CONFIG`` or none) and merge it."""
    setting = "--config"
    if not path:
        setting, path = "CLIPD_CONFIG", environ.get("CLIPD_CONFIG") or None
    text = None
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{setting}={path!r}: cannot read it ({exc.strerror})") from exc
    return config_mod.load(overrides, environ, text, source=path or "<defaults>")


def ensure_clips_dir(config: Config) -> Path:
    """Create the clips tree if missing; ConfigError naming the key if that fails."""
    clips_dir = config.clips_dir
    try:
        (clips_dir / ".clipd").mkdir(parents=True, exist_ok=True)
        probe = clips_dir / ".clipd" / ".write-probe"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"storage.clips_dir={str(clips_dir)!r}: must be a writable directory ({exc.strerror})"
        ) from exc
    return clips_dir


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: $CLIPD_CONFIG, else built-in)")
    parser.add_argument("--clips-dir", help="clips tree (storage.clips_dir, env CLIPS_DIR)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str], extra: Mapping[str, Any] = {}
) -> Config:
    """Merge flags given on the command line over env, file and defaults."""
    overrides: dict[str, tuple[str, Any]] = {
        "storage.clips_dir": ("--clips-dir", getattr(args, "clips_dir", None)),
        "log.level": ("--log-level", getattr(args, "log_level", None)),
        "web.listen": ("--listen", getattr(args, "listen", None)),
        "storage.backend": ("--backend", getattr(args, "backend", None)),
    }
    overrides.update(extra)
    return read_config(getattr(args, "config", None), overrides, environ)


def _cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = config_from_args(args, environ)
    setup_logging(config.log.level, environ)
    ensure_clips_dir(config)
    import asyncio

    from clipd.daemon import Daemon
    from clipd.services import catalog_for, routes_for, services_for
    from clipd.storage import make_backend

    daemon = Daemon(
        config,
        reload=lambda: config_from_args(args, environ),
        environ=environ,
        services=services_for(config),
        extra_routes=routes_for(config),
        backend=make_backend(config),
        catalog=catalog_for(config),
    )
    return asyncio.run(daemon.run())


def _cmd_check_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = config_from_args(args, environ)
    print(json.dumps(redacted(config), indent=2))
    return 0


def build_parser(core_only: bool = False) -> argparse.ArgumentParser:
    """The argument parser; ``core_only`` leaves out the other modules' commands."""
    parser = argparse.ArgumentParser(
        prog="clipd", description="Storage daemon for video clips: watch, index, retain, serve."
    )
    parser.add_argument("--version", action="version", version=f"clipd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the daemon (what systemd starts)")
    _add_common(run)
    run.add_argument("--listen", help="host:port to bind (web.listen, env CLIPD_LISTEN)")
    run.add_argument("--backend", choices=["local", "s3"], help="storage backend")
    run.set_defaults(handler=_cmd_run)

    check = sub.add_parser("check-config", help="validate and print the effective config")
    _add_common(check)
    check.add_argument("--listen", help="host:port to bind")
    check.add_argument("--backend", choices=["local", "s3"], help="storage backend")
    check.set_defaults(handler=_cmd_check_config)

    for module_name in () if core_only else _COMMAND_MODULES:
        module = __import__(module_name, fromlist=["add_commands"])
        module.add_commands(sub, _add_common)
    return parser


def _print_fatal(message: str, environ: Mapping[str, str]) -> None:
    # Printed, not logged: logging may not be set up yet. Under systemd the line still
    # needs its priority, or journald files the reason for the exit at info.
    if journal_reads_stderr(environ):
        message = with_priority(message, logging.ERROR)
    print(message, file=sys.stderr)


Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``clipd`` console script; returns the exit code."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    # Top-level options come before the command (only -h and --version exist).
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(core_only=command in _CORE_COMMANDS).parse_args(argv)
    except SystemExit as exc:
        if exc.code == _BAD_USAGE and command in _BAD_USAGE_EXIT:
            return _BAD_USAGE_EXIT[command]
        raise
    handler: Handler = args.handler
    try:
        return handler(args, environ)
    except ConfigError as exc:
        _print_fatal(f"clipd: config error: {exc.detail}", environ)
        return exc.exit_code
    except ClipdError as exc:
        _print_fatal(f"clipd: {exc.detail}", environ)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
