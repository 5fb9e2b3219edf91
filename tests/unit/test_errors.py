"""One error hierarchy: every error class of the collection has a kind; run_module turns each
into fail_json(msg, error_kind) without a traceback; the runner maps kinds to exit codes."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _dump,
    _errors,
    _globals,
    _history,
    _lifecycle,
    _metrics,
    _module_glue,
    _notify,
    _pg,
    _restore,
    _runner,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


class Failed(Exception):
    pass


class FakeModule:
    def fail_json(self, **kwargs):
        raise Failed(kwargs)


def failure(exc, redact=None):
    def boom():
        raise exc

    with pytest.raises(Failed) as e:
        _module_glue.run_module(FakeModule(), redact, boom)
    return e.value.args[0]


@pytest.mark.parametrize(
    "cls, kind",
    [
        (_azure.ConfigError, "config"),
        (_azure.BlobNameError, "config"),
        (_azure.ConflictError, "conflict"),
        (_azure.ArchivedError, "conflict"),
        (_azure.IntegrityError, "integrity"),
        (_azure.NotFoundError, "not_found"),
        (_azure.ServiceError, "service"),
        (_lifecycle.LifecycleError, "error"),
        (_pg.PgError, "service"),
        (_pg.ToolError, "service"),
        (mf.ManifestError, "integrity"),
        (_globals.GlobalsError, "integrity"),
        (_dump.BackupError, "error"),
        (_restore.RestoreError, "error"),
        (_history.HistoryError, "error"),
        (_metrics.MetricsError, "error"),
        (_notify.NotifyConfigError, "config"),
        (_runner.ConfigError, "config"),
    ],
)
def test_every_error_class_has_a_kind_and_reaches_the_operator(cls, kind):
    assert issubclass(cls, _errors.OperatorError) and kind in _errors.KINDS
    assert failure(cls("what is wrong; what to do")) == {"msg": "what is wrong; what to do", "error_kind": kind}


def test_library_errors_become_messages_and_secrets_are_redacted():
    import psycopg2

    got = failure(psycopg2.errors.InsufficientPrivilege("permission denied for table x\nDETAIL: more"))
    assert got == {"msg": "PostgreSQL: permission denied for table x DETAIL: more", "error_kind": "config"}
    assert failure(psycopg2.OperationalError("server closed the connection"))["error_kind"] == "service"
    azure_error = type("HttpResponseError", (Exception,), {"__module__": "azure.core.exceptions"})
    got = failure(azure_error("sig=SECRET refused"), redact=lambda e: ("%s" % e).replace("SECRET", "***"))
    assert got == {"msg": "Azure request failed: sig=*** refused", "error_kind": "service"}
    assert failure(OSError(13, "Permission denied", "/var/backups/tsdb")) == {
        "msg": "/var/backups/tsdb: Permission denied",
        "error_kind": "service",
    }
    assert failure(ValueError("invalid backup id"))["error_kind"] == "config"


def test_a_bug_keeps_its_traceback():
    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        _module_glue.run_module(FakeModule(), None, bug)


def test_exit_codes_by_kind():
    assert _errors.exit_code(_runner.ConfigError("x")) == _runner.EXIT_CONFIG == 2
    assert _errors.exit_code(_azure.ConflictError("x")) == _runner.EXIT_LOCKED == 75
    assert _errors.exit_code(_pg.PgError("x")) == _errors.exit_code(RuntimeError("x")) == _runner.EXIT_FAILED == 1
