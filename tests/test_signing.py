"""Signed download links: the pure HMAC scheme and the `clipd sign` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from clipd.signing import Verdict, download_path, parse_ttl, sign, signed_url, verify

NOW = 1_900_000_000.0


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_signed_link_verifies_until_it_expires() -> None:
    url = signed_url("https://clips.example/", "key", "job-1", 3600, NOW)
    assert url.startswith("https://clips.example/api/v1/jobs/job-1/download?expires=")
    query = _query(url)
    path = download_path("job-1")
    assert verify("key", "GET", path, query, NOW) is Verdict.OK
    assert verify("key", "HEAD", path, query, NOW + 3600) is Verdict.OK
    assert verify("key", "GET", path, query, NOW + 3601) is Verdict.EXPIRED


@pytest.mark.parametrize(
    ("key", "method", "path", "change", "verdict"),
    [
        ("other", "GET", "/api/v1/jobs/job-1/download", {}, Verdict.BAD_SIGNATURE),
        ("key", "DELETE", "/api/v1/jobs/job-1/download", {}, Verdict.BAD_SIGNATURE),
        ("key", "GET", "/api/v1/jobs/job-2/download", {}, Verdict.BAD_SIGNATURE),
        (
            "key",
            "GET",
            "/api/v1/jobs/job-1/download",
            {"expires": "9999999999"},
            Verdict.BAD_SIGNATURE,
        ),
        ("key", "GET", "/api/v1/jobs/job-1/download", {"expires": "-1"}, Verdict.MALFORMED),
        ("key", "GET", "/api/v1/jobs/job-1/download", {"expires": "1" * 40}, Verdict.MALFORMED),
        ("key", "GET", "/api/v1/jobs/job-1/download", {"sig": "zz\u00e9"}, Verdict.BAD_SIGNATURE),
    ],
)
def test_tampered_links_fail(
    key: str, method: str, path: str, change: dict[str, str], verdict: Verdict
) -> None:
    query = {**_query(signed_url("http://x", "key", "job-1", 60, NOW)), **change}
    assert verify(key, method, path, query, NOW) is verdict


def test_missing_parameters() -> None:
    assert verify("key", "GET", "/p", {}, NOW) is Verdict.MISSING
    assert verify("key", "GET", "/p", {"expires": "1"}, NOW) is Verdict.MISSING


def test_signature_is_hmac_sha256_over_method_path_expiry() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"GET\n/p\n123", hashlib.sha256).hexdigest()
    assert sign("k", "GET", "/p", 123) == expected == sign("k", "HEAD", "/p", 123)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)]
)
def test_ttl_forms(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1w", "-1h", "h"])
def test_bad_ttls_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--ttl"):
        parse_ttl(text)


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipd", "sign", *args],
        env={"PATH": os.environ["PATH"], "CLIPS_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_sign_command_prints_a_link_that_verifies(tmp_path: Path) -> None:
    result = _run(
        ["job-9", "--ttl", "1h"],
        {"CLIPD_WEB_SIGNING_KEY": "sekrit", "BASE_URL": "https://dl.example"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith("https://dl.example/api/v1/jobs/job-9/download?")
    query = _query(url)
    expires = int(query["expires"])
    assert verify("sekrit", "GET", download_path("job-9"), query, expires - 1) is Verdict.OK


def test_sign_command_without_a_key_says_how_to_set_one(tmp_path: Path) -> None:
    result = _run(["job-9"], {}, tmp_path)
    assert result.returncode == 78
    assert "CLIPD_WEB_SIGNING_KEY" in result.stderr


def test_sign_command_refuses_a_bad_job_id(tmp_path: Path) -> None:
    result = _run(["../etc"], {"CLIPD_WEB_SIGNING_KEY": "k"}, tmp_path)
    assert result.returncode != 0 and "job id" in result.stderr
