"""The errors clipd raises, each carrying the HTTP status and exit code a caller needs.

::

    ClipdError                      500 / exit 1
    ├── ConfigError                 exit 78 (EX_CONFIG)
    ├── InvalidRequest              400
    │   ├── InvalidJobId            400
    │   └── ChecksumMismatch        400
    ├── Unauthorized                401
    ├── Forbidden                   403
    ├── NotFound                    404
    ├── Conflict                    409
    │   └── IntegrityMismatch       409
    ├── PreconditionFailed          412
    ├── PayloadTooLarge             413
    ├── RangeNotSatisfiable         416
    ├── InvalidClip                 422
    ├── InsufficientStorage         507
    └── StorageError                502
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatch",
    "ClipdError",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "IntegrityMismatch",
    "InvalidClip",
    "InvalidJobId",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RangeNotSatisfiable",
    "StorageError",
    "Unauthorized",
]


class ClipdError(Exception):
    """Root of clipd's errors; ``status`` is the HTTP answer, ``exit_code`` the CLI's."""

    status: int = 500
    exit_code: int = 1
    error: str = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(ClipdError):
    status = 500
    exit_code = 78
    error = "config_error"


class InvalidRequest(ClipdError):
    status = 400
    exit_code = 2
    error = "bad_request"


class InvalidJobId(InvalidRequest):
    error = "invalid_job_id"


class ChecksumMismatch(InvalidRequest):
    error = "checksum_mismatch"


class Unauthorized(ClipdError):
    status = 401
    error = "unauthorized"


class Forbidden(ClipdError):
    status = 403
    error = "forbidden"


class NotFound(ClipdError):
    status = 404
    error = "not_found"


class Conflict(ClipdError):
    status = 409
    error = "conflict"


class IntegrityMismatch(Conflict):
    error = "integrity_mismatch"


class PreconditionFailed(ClipdError):
    status = 412
    error = "precondition_failed"


class PayloadTooLarge(ClipdError):
    status = 413
    error = "payload_too_large"


class RangeNotSatisfiable(ClipdError):
    status = 416
    error = "range_not_satisfiable"


class InvalidClip(ClipdError):
    status = 422
    error = "invalid_clip"


class InsufficientStorage(ClipdError):
    status = 507
    error = "insufficient_storage"


class StorageError(ClipdError):
    status = 502
    error = "storage_error"
