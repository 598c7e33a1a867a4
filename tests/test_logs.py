"""setup_logging: journald priorities per line, timestamps off the journal, levels, filters.

The daemon-level check (a real process under JOURNAL_STREAM) is in tests/test_daemon.py.
Each test restores the root logger and the loggers setup_logging touches.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator

import pytest
from aiohttp import http_exceptions

from clipd.logs import setup_logging

_TOUCHED = ("watchdog", "asyncio", "botocore", "aiohttp.access", "aiohttp.server")
JOURNAL = {"JOURNAL_STREAM": "8:1234"}


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in _TOUCHED}
    server_filters = list(logging.getLogger("aiohttp.server").filters)
    yield
    logging.captureWarnings(False)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)
    logging.getLogger("aiohttp.server").filters[:] = server_filters


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (25, 5),  # a custom level between INFO and WARNING: notice
        (logging.INFO, 6),
        (15, 7),  # between DEBUG and INFO: debug
        (logging.DEBUG, 7),
    ],
)
def test_journal_lines_carry_the_syslog_priority_and_no_timestamp(
    capsys: pytest.CaptureFixture[str], level: int, priority: int
) -> None:
    setup_logging("debug", JOURNAL)
    logging.getLogger("clipd.test").log(level, "hello %s", "world")
    assert _lines(capsys) == [f"<{priority}>clipd.test: hello world"]


def test_every_line_of_a_traceback_gets_the_priority_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", JOURNAL)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("clipd.test").error("two\nlines", exc_info=True)
    lines = _lines(capsys)
    assert lines[:2] == ["<3>clipd.test: two", "<3>lines"]
    assert lines[-1] == "<3>ValueError: boom"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)


def test_without_the_journal_lines_have_time_and_level_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", {})
    logging.getLogger("clipd.test").warning("careful")
    (line,) = _lines(capsys)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING clipd\.test: careful", line
    ), line


def test_an_empty_journal_stream_counts_as_no_journal(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", {"JOURNAL_STREAM": ""})
    logging.getLogger("clipd.test").info("x")
    assert not _lines(capsys)[0].startswith("<")


def test_setting_up_twice_leaves_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", JOURNAL)
    setup_logging("info", JOURNAL)
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("clipd.test").info("once")
    assert _lines(capsys) == ["<6>clipd.test: once"]


def test_level_is_case_insensitive_and_filters_lower_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("Warning", JOURNAL)
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger("clipd.test").info("hidden")
    logging.getLogger("clipd.test").warning("shown")
    assert _lines(capsys) == ["<4>clipd.test: shown"]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (
            "debug",
            {
                "watchdog": "INFO",
                "asyncio": "INFO",
                "botocore": "WARNING",
                "aiohttp.access": "WARNING",
            },
        ),
        (
            "error",
            {
                "watchdog": "ERROR",
                "asyncio": "ERROR",
                "botocore": "ERROR",
                "aiohttp.access": "ERROR",
            },
        ),
    ],
)
def test_library_loggers_are_quieter_than_clipd_at_debug(
    level: str, expected: dict[str, str]
) -> None:
    setup_logging(level, {})
    got = {name: logging.getLevelName(logging.getLogger(name).level) for name in expected}
    assert got == expected


def _server_error(exc: BaseException | None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "bad", None, info)


def test_aiohttp_client_protocol_errors_are_dropped_others_kept() -> None:
    setup_logging("info", {})
    server = logging.getLogger("aiohttp.server")
    assert not server.filter(_server_error(http_exceptions.BadStatusLine("x")))
    assert not server.filter(_server_error(http_exceptions.BadHttpMessage("x")))
    assert server.filter(_server_error(ValueError("a real bug")))
    assert server.filter(_server_error(None))


def test_the_client_error_filter_is_added_once() -> None:
    setup_logging("info", {})
    setup_logging("info", {})
    server = logging.getLogger("aiohttp.server")
    assert [type(f).__name__ for f in server.filters].count("_DropClientErrors") == 1


def test_library_warnings_reach_the_journal_with_a_priority(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", JOURNAL)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("library says so", UserWarning, stacklevel=1)
    lines = _lines(capsys)
    assert lines[0].startswith("<4>py.warnings: ") and "library says so" in lines[0], lines
    assert all(line.startswith("<4>") for line in lines)
