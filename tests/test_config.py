"""Configuration: precedence, legacy names, one-line errors, docs matching code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from clipd import config
from clipd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_equal_the_documented_file() -> None:
    text = (ROOT / "config" / "clipd.toml").read_text()
    assert config.load({}, {}, text) == config.load({}, {}, None)


def test_every_key_is_documented_in_the_config_file() -> None:
    text = (ROOT / "config" / "clipd.toml").read_text()
    sections = re.findall(r"^\[(\w+)\]", text, re.M)
    for f in dataclasses.fields(config.Config):
        if f.name == "source":
            continue
        assert f.name in sections, f"[{f.name}] missing from config/clipd.toml"
        for key in dataclasses.fields(getattr(config.load({}, {}, None), f.name)):
            assert re.search(rf"^{key.name} = ", text, re.M), f"{f.name}.{key.name} undocumented"


def test_precedence_flag_over_env_over_file() -> None:
    text = "[retention]\nmax_age_hours = 10\n"
    assert config.load({}, {}, text).retention.max_age_hours == 10
    env = {"CLIPD_RETENTION_MAX_AGE_HOURS": "20"}
    assert config.load({}, env, text).retention.max_age_hours == 20
    flags = {"retention.max_age_hours": ("--max-age", 30.0)}
    assert config.load(flags, env, text).retention.max_age_hours == 30


def test_legacy_names_work_and_namespaced_names_win() -> None:
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "b",
        "CLIPS_DIR": "/x",
        "BASE_URL": "http://h",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "CLIPD_LISTEN": "0.0.0.0:1",
        "CLIPD_API_TOKEN": "t",
    }
    c = config.load({}, env, None)
    assert (c.storage.backend, c.s3.bucket, c.storage.clips_dir) == ("s3", "b", "/x")
    assert (c.web.base_url, c.web.listen, c.web.api_token) == ("http://h", "0.0.0.0:1", "t")
    assert c.s3.endpoint_url == "http://127.0.0.1:1"
    assert config.load({}, {**env, "CLIPD_STORAGE_CLIPS_DIR": "/y"}, None).storage.clips_dir == "/y"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CLIPD_RETENTION_MAX_AGE_HOURS": "-3"},
            "CLIPD_RETENTION_MAX_AGE_HOURS='-3': must be > 0",
        ),
        ({"CLIPD_RETENTION_MAX_AGE_HOURS": "soon"}, "'soon': must be a number"),
        ({"CLIPD_LISTEN": "localhost"}, "CLIPD_LISTEN='localhost': must be host:port"),
        ({"CLIPD_LISTEN": "h:99999"}, "port 0-65535"),
        ({"STORAGE_BACKEND": "ftp"}, "STORAGE_BACKEND='ftp': must be one of local, s3"),
        ({"STORAGE_BACKEND": "s3"}, "s3.bucket='': must name a bucket"),
        ({"CLIPD_RETENTION_MAX_AGE_HOUR": "1"}, "CLIPD_RETENTION_MAX_AGE_HOUR: unknown key"),
        ({"CLIPD_NOPE_X": "1"}, "CLIPD_NOPE_X: unknown environment variable"),
        ({"CLIPD_SCRUB_ENABLED": "maybe"}, "must be true or false"),
        ({"CLIPD_RETENTION_LOW_WATERMARK_DISK_PERCENT": "95"}, "must be <= retention.high"),
        ({"CLIPD_STORAGE_EXTENSIONS": "mp4"}, "leading dot"),
    ],
)
def test_bad_values_name_the_key_value_and_what_is_allowed(env, message) -> None:
    with pytest.raises(ConfigError) as info:
        config.load({}, env, None)
    assert message in info.value.detail
    assert "\n" not in info.value.detail
    assert info.value.exit_code == 78


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\nx = 1\n", "nope: unknown section"),
        ("[web]\nlisten = 8000\n", "web.listen=8000: must be a string"),
        ("[retention]\nenabled = 'yes'\n", "retention.enabled='yes': must be true or false"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_file_values_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load({}, {}, text)


def test_env_text_is_coerced_to_the_key_type() -> None:
    env = {
        "CLIPD_SCRUB_ENABLED": "off",
        "CLIPD_INGEST_HASH_WORKERS": "3",
        "CLIPD_STORAGE_EXTENSIONS": ".mp4, .gif",
    }
    c = config.load({}, env, None)
    assert c.scrub.enabled is False and c.ingest.hash_workers == 3
    assert c.storage.extensions == (".mp4", ".gif")


def test_redacted_masks_secrets_only_when_set() -> None:
    c = config.load({}, {"CLIPD_API_TOKEN": "abc"}, None)
    shown = config.redacted(c)
    assert shown["web"]["api_token"] == "***" and shown["web"]["signing_key"] == ""
