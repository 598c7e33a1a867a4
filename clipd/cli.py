"""Command line: ``clipd run`` and the operator commands, one sub-command each.

Exit codes: 0 success, 1 a failure the command reports, 2 bad usage, 78 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clipd import __version__
from clipd.config import Config, redacted
from clipd.daemon import Daemon, ensure_clips_dir, read_config
from clipd.errors import ClipdError, ConfigError
from clipd.logs import setup_logging

__all__ = ["config_from_args", "main"]

logger = logging.getLogger("clipd")

# Sub-commands provided by other modules: each registers itself with (subparsers).
_COMMAND_MODULES: tuple[str, ...] = ("clipd.migrate", "clipd.signing", "clipd.ops")


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


def build_parser() -> argparse.ArgumentParser:
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

    for module_name in _COMMAND_MODULES:
        module = __import__(module_name, fromlist=["add_commands"])
        module.add_commands(sub, _add_common)
    return parser


Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``clipd`` console script; returns the exit code."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args, environ)
    except ConfigError as exc:
        print(f"clipd: config error: {exc.detail}", file=sys.stderr)
        return exc.exit_code
    except ClipdError as exc:
        print(f"clipd: {exc.detail}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
