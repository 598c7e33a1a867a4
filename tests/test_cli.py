"""The ``clipd`` entry point as a user runs it: ``python -m clipd`` in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clipd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-m", "clipd", *args], env=env, text=True, capture_output=True, timeout=60
    )


def test_fatal_config_error_under_journald_carries_error_priority(tmp_path: Path) -> None:
    # Printed before logging is set up: without "<3>" journald stores it at info and
    # `journalctl -p warning` hides why the unit exited 78.
    env = {"CLIPS_DIR": str(tmp_path), "CLIPD_RETENTION_MAX_AGE_HOURS": "-3"}
    result = clipd({**env, "JOURNAL_STREAM": "8:1"}, "run")
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        "<3>clipd: config error: CLIPD_RETENTION_MAX_AGE_HOURS='-3': must be > 0"
    ]


def test_fatal_config_error_off_the_journal_has_no_priority_prefix(tmp_path: Path) -> None:
    result = clipd({"CLIPS_DIR": str(tmp_path), "CLIPD_RETENTION_MAX_AGE_HOURS": "-3"}, "run")
    assert result.returncode == 78
    assert result.stderr.startswith("clipd: config error: CLIPD_RETENTION_MAX_AGE_HOURS='-3'")


def test_unreadable_config_file_names_the_setting_that_gave_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    from_env = clipd({"CLIPD_CONFIG": missing}, "check-config")
    from_flag = clipd({}, "check-config", "--config", missing)
    assert (from_env.returncode, from_flag.returncode) == (78, 78)
    assert f"config error: CLIPD_CONFIG={missing!r}: cannot read it" in from_env.stderr
    assert f"config error: --config={missing!r}: cannot read it" in from_flag.stderr
