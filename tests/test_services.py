"""services_for / catalog_for / routes_for: which parts ``clipd run`` adds, per config.

The retention-leader rule in s3 mode is in tests/test_s3_instances.py.
"""

from __future__ import annotations

import pytest

from clipd.config import load
from clipd.services import catalog_for, routes_for, services_for


def _names(environ: dict[str, str]) -> list[str]:
    return [getattr(s, "__name__", repr(s)) for s in services_for(load({}, environ, None))]


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, ["download_flusher", "loop_lag_service", "retention_service", "scrub_service"]),
        (
            {"CLIPD_RETENTION_ENABLED": "false"},
            ["download_flusher", "loop_lag_service", "scrub_service"],
        ),
        (
            {"CLIPD_SCRUB_ENABLED": "false"},
            ["download_flusher", "loop_lag_service", "retention_service"],
        ),
        (
            {"CLIPD_BACKUP_S3_BUCKET": "backups"},
            [
                "download_flusher",
                "loop_lag_service",
                "retention_service",
                "scrub_service",
                "backup_service",
            ],
        ),
        (
            {"CLIPD_RETENTION_ENABLED": "false", "CLIPD_SCRUB_ENABLED": "false"},
            ["download_flusher", "loop_lag_service"],
        ),
    ],
)
def test_services_follow_the_config_in_a_fixed_order(
    environ: dict[str, str], names: list[str]
) -> None:
    assert _names(environ) == names


def test_download_counters_and_loop_lag_always_run() -> None:
    off = {
        "CLIPD_RETENTION_ENABLED": "false",
        "CLIPD_SCRUB_ENABLED": "false",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "b",
    }
    assert _names(off) == ["download_flusher", "loop_lag_service"]


def test_catalog_is_only_for_s3_mode() -> None:
    assert catalog_for(load({}, {}, None)) is None
    factory = catalog_for(load({}, {"STORAGE_BACKEND": "s3", "S3_BUCKET": "b"}, None))
    assert factory is not None and factory.__name__ == "catalog_factory"


def test_routes_are_the_jobs_api_and_its_openapi_document() -> None:
    routes = routes_for(load({}, {}, None))
    assert [(r.method, r.path) for r in routes] == [  # type: ignore[attr-defined]
        ("GET", "/api/v1/jobs/{job_id}/download"),
        ("GET", "/api/v1/jobs/{job_id}"),
        ("PUT", "/api/v1/jobs/{job_id}"),
        ("DELETE", "/api/v1/jobs/{job_id}"),
        ("GET", "/api/v1/openapi.json"),
    ]
