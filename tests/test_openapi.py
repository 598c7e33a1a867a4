"""The OpenAPI document against the real server: schemathesis finds no 5xx, no drift."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clipd.openapi import document
from tests.helpers import DaemonProcess, clip_bytes, write_clip

TOKEN = "schema-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = 40  # per operation; 9 operations → ~360 requests in a few seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir = tmp_path_factory.mktemp("openapi")
    clips = workdir / "clips"
    for i in range(3):
        write_clip(clips, "2026-11-24", f"Clip_job{i}.mp4", clip_bytes(2000 + i, i))
    daemon = DaemonProcess(clips, workdir, env={"CLIPD_API_TOKEN": TOKEN})
    try:
        yield daemon.start()
    finally:
        daemon.close()


def _fuzz(
    server: DaemonProcess,
    mode: GenerationMode,
    examples: int,
    path_parameters: dict[str, str] | None = None,
) -> int:
    """Run every operation of the served document for ``examples`` cases; returns calls."""
    # Driven through hypothesis directly: schemathesis' pytest plugin does not run on
    # the pytest this project pins (pytest 9).
    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]  # may skip its own URL
    calls = 0
    for operation in operations:
        has_job = "{job_id}" in operation.path
        if mode is GenerationMode.NEGATIVE and not has_job:
            continue  # nothing to make invalid in a request without parameters
        strategy = operation.as_strategy(
            mode, path_parameters=path_parameters if has_job and path_parameters else None
        )

        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        run()
    return calls


def test_every_operation_conforms_and_never_5xx(server: DaemonProcess) -> None:
    calls = _fuzz(server, GenerationMode.POSITIVE, EXAMPLES)
    # Known ids too, so that downloads (ranges, conditionals) and deletes really happen.
    calls += _fuzz(server, GenerationMode.POSITIVE, EXAMPLES // 2, {"job_id": "job1"})
    calls += _fuzz(server, GenerationMode.NEGATIVE, EXAMPLES // 2)
    assert calls >= 300


@pytest.mark.slow
def test_every_operation_conforms_over_many_examples(server: DaemonProcess) -> None:
    assert _fuzz(server, GenerationMode.POSITIVE, 150) >= 600
    _fuzz(server, GenerationMode.POSITIVE, 100, {"job_id": "job2"})
    _fuzz(server, GenerationMode.NEGATIVE, 100)


def test_served_document_is_the_module_document(server: DaemonProcess) -> None:
    status, headers, body = server.get("/api/v1/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == document()


def test_document_lists_every_route_and_error_schema(tmp_path: Path) -> None:
    from unittest.mock import Mock

    from clipd.jobs import routes
    from clipd.web import make_app

    app = make_app(Mock(), routes())
    # add_get registers an implicit HEAD; only the download documents its HEAD.
    served = {
        (r.resource.canonical, r.method.lower())
        for r in app.router.routes()
        if r.resource is not None
        and (r.method != "HEAD" or r.resource.canonical.endswith("/download"))
    }
    documented = {(path, method) for path, ops in document()["paths"].items() for method in ops}
    assert served == documented
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            errors = {int(c) for c in operation["responses"] if int(c) >= 400}
            if path.startswith("/api/v1/jobs"):
                assert 400 in errors, (path, method)
            for code in errors - {503}:  # /health's 503 carries the Health body
                name = "BadRequest" if code == 400 else "Error"
                ref = f"#/components/responses/{name}"
                assert operation["responses"][str(code)] == {"$ref": ref}
    bad_request = document()["components"]["responses"]["BadRequest"]["content"]
    assert set(bad_request) == {"application/json", "text/plain"}


def test_unknown_route_and_method_are_json_errors(server: DaemonProcess) -> None:
    status, headers, body = server.get("/api/v1/nope")
    assert status == 404 and set(json.loads(body)) == {"error", "detail"}
    del headers


def test_clips_dir_exists(server: DaemonProcess) -> None:
    assert Path(server.clips_dir).is_dir()
