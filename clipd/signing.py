"""Signed download links: HMAC-SHA256 over method, path and expiry.

A link is ``<base_url><path>?expires=<unix s>&sig=<hex>``. The signature covers the
method (HEAD counts as GET), the path and the expiry, keyed by ``web.signing_key``;
links survive restarts and rotating the key invalidates every one of them. Also
provides ``clipd sign JOB_ID --ttl 1h``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import urlencode

from clipd.errors import ConfigError, InvalidRequest
from clipd.naming import is_job_id

__all__ = [
    "Verdict",
    "add_commands",
    "download_path",
    "parse_ttl",
    "sign",
    "signed_url",
    "verify",
]

_TTL_RE = re.compile(r"(\d+)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_EXPIRES_DIGITS = 12


class Verdict(Enum):
    OK = "ok"
    MISSING = "missing"
    MALFORMED = "malformed"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"


def download_path(job_id: str) -> str:
    """The API path of a clip's download."""
    return f"/api/v1/jobs/{job_id}/download"


def sign(key: str, method: str, path: str, expires: int) -> str:
    """Hex HMAC-SHA256 of ``method``, ``path`` and ``expires`` (pure)."""
    method = "GET" if method == "HEAD" else method
    message = f"{method}\n{path}\n{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def verify(key: str, method: str, path: str, query: Mapping[str, str], now_s: float) -> Verdict:
    """Check ``expires`` and ``sig`` from ``query`` at time ``now_s`` (pure)."""
    expires_text = query.get("expires")
    sig = query.get("sig")
    if expires_text is None or sig is None:
        return Verdict.MISSING
    if not expires_text.isdigit() or len(expires_text) > _MAX_EXPIRES_DIGITS:
        return Verdict.MALFORMED
    expires = int(expires_text)
    expected = sign(key, method, path, expires)
    # Compare before looking at the clock so that timing says nothing about the key.
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        return Verdict.BAD_SIGNATURE
    if expires < now_s:
        return Verdict.EXPIRED
    return Verdict.OK


def signed_url(base_url: str, key: str, job_id: str, ttl_s: int, now_s: float) -> str:
    """A download link for ``job_id`` valid for ``ttl_s`` seconds from ``now_s``."""
    if not is_job_id(job_id):
        raise InvalidRequest(f"job id {job_id!r}: must match [A-Za-z0-9-]{{1,64}}")
    path = download_path(job_id)
    expires = int(now_s) + ttl_s
    query = urlencode({"expires": expires, "sig": sign(key, "GET", path, expires)})
    return f"{base_url.rstrip('/')}{path}?{query}"


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` → seconds; ValueError otherwise."""
    match = _TTL_RE.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"--ttl={text!r}: must be a positive number with s, m, h or d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _cmd_sign(
    args: argparse.Namespace, environ: Mapping[str, str], clock: Callable[[], float] = time.time
) -> int:
    from clipd.cli import config_from_args

    config = config_from_args(args, environ)
    if not config.web.signing_key:
        raise ConfigError(
            "web.signing_key='': must be set to sign links (CLIPD_WEB_SIGNING_KEY or [web] "
            "signing_key in the config file)"
        )
    try:
        ttl_s = parse_ttl(args.ttl)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    print(signed_url(config.web.base_url, config.web.signing_key, args.job_id, ttl_s, clock()))
    return 0


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``clipd sign``."""
    parser = sub.add_parser("sign", help="print a signed, expiring download link for a clip")
    add_common(parser)
    parser.add_argument("job_id", metavar="JOB_ID", help="the clip's job id")
    parser.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 2d (default 1h)")
    parser.set_defaults(handler=_cmd_sign)
