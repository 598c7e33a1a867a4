"""Logging set-up: journald priorities under systemd, timestamps elsewhere."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

__all__ = ["journal_reads_stderr", "setup_logging", "with_priority"]

# syslog priorities for the "<N>" prefix that journald reads (sd-daemon(3)).
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def journal_reads_stderr(environ: Mapping[str, str]) -> bool:
    """Whether stderr goes to journald (systemd sets ``JOURNAL_STREAM`` for the unit)."""
    return bool(environ.get("JOURNAL_STREAM"))


def with_priority(text: str, levelno: int) -> str:
    """``text`` with the ``<N>`` syslog priority of ``levelno`` on every line; pure."""
    priority = _PRIORITY.get(levelno, 5 if levelno > logging.INFO else 7)
    # journald reads the prefix per line: repeat it on continuation lines.
    return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return with_priority(super().format(record), record.levelno)


class _DropClientErrors(logging.Filter):
    """aiohttp logs a malformed request as an error with a traceback; it is the client's
    mistake (answered with a 4xx), and a hostile client must not flood the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not type(exc).__module__.startswith("aiohttp.http_exceptions")


def setup_logging(level: str, environ: Mapping[str, str] = os.environ) -> None:
    """Log to stderr; without timestamps but with ``<N>`` when journald reads stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if journal_reads_stderr(environ):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries' warnings.warn() (watchdog has some) would otherwise bypass the
    # formatter and reach the journal without a priority.
    logging.captureWarnings(True)
    root.setLevel(level.upper())
    # Third-party chatter stays out of clipd's debug log.
    logging.getLogger("watchdog").setLevel(max(root.level, logging.INFO))
    logging.getLogger("asyncio").setLevel(max(root.level, logging.INFO))
    logging.getLogger("botocore").setLevel(max(root.level, logging.WARNING))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _DropClientErrors) for f in server_log.filters):
        server_log.addFilter(_DropClientErrors())
    logging.getLogger("aiohttp.access").setLevel(max(root.level, logging.WARNING))
