"""Every error class carries an HTTP status and an exit code, and the tree has one root."""

from __future__ import annotations

import inspect

from clipd import errors


def test_every_error_class_has_a_status_and_a_slug() -> None:
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.ClipdError)
    ]
    assert len(classes) >= 10
    for cls in classes:
        assert 400 <= cls.status <= 599, cls
        assert cls.error and cls.error.islower(), cls
        assert isinstance(cls.exit_code, int)
    assert errors.ConfigError.exit_code == 78
    assert errors.InvalidJobId.status == 400 and errors.NotFound.status == 404
    assert errors.IntegrityMismatch.status == 409 and errors.InsufficientStorage.status == 507


def test_every_error_is_in_the_module_docstring_tree() -> None:
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), name
