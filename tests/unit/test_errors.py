"""One error hierarchy: every error class of the collection has a kind; run_module turns each
into fail_json(msg, error_kind) without a traceback; the runner maps kinds to exit codes."""

import ast
import copy
import glob
import os

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
    _privileges,
    _protection,
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
        (_pg.PgError, "service"),
        (_pg.ToolError, "service"),
        (mf.ManifestError, "integrity"),
        (_globals.GlobalsError, "integrity"),
        (_notify.NotifyConfigError, "config"),
        (_runner.ConfigError, "config"),
        (_runner.RunLocked, "conflict"),
        (_privileges.PrivilegeError, "config"),
    ],
)
def test_every_error_class_has_a_kind_and_reaches_the_operator(cls, kind):
    assert issubclass(cls, _errors.OperatorError) and kind in _errors.OPERATOR_KINDS
    assert failure(cls("what is wrong; what to do")) == {"msg": "what is wrong; what to do", "error_kind": kind}


# The families whose errors span several kinds: each raise site gives its kind (kind=...).
FAMILIES = [_dump.BackupError, _restore.RestoreError, _history.HistoryError, _metrics.MetricsError]
FAMILIES += [_lifecycle.LifecycleError, _protection.ProtectionError, _azure.AzureTierError, _errors.OperatorError]


@pytest.mark.parametrize("cls", FAMILIES)
@pytest.mark.parametrize("kind", _errors.OPERATOR_KINDS)
def test_a_family_error_carries_the_kind_of_its_raise_site(cls, kind):
    exc = cls("what is wrong; what to do", kind=kind)
    assert isinstance(exc, cls) and _errors.kind_of(exc) == kind
    assert failure(exc) == {"msg": "what is wrong; what to do", "error_kind": kind}
    assert copy.deepcopy(exc).kind == kind  # through __reduce__, as pickle
    with pytest.raises(ValueError, match="kind must be one of"):
        cls("x", kind="error")


def test_a_kind_given_where_it_is_raised_overrides_the_class():
    assert _pg.PgError("login refused", kind="config").kind == "config" and _pg.PgError("x").kind == "service"
    assert _pg.ToolError("pg_restore exited", stderr="ERROR:  boom").stderr == "ERROR:  boom"


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


def test_exit_codes_by_the_kind_given_where_raised():
    assert _errors.exit_code(_dump.BackupError("backup_dir missing", kind="config")) == _runner.EXIT_CONFIG
    assert _errors.exit_code(_dump.BackupError("folder locked", kind="conflict")) == _runner.EXIT_LOCKED
    assert _errors.exit_code(_history.HistoryError("no range", kind="not_found")) == _runner.EXIT_FAILED


def _fake(module, name, bases=(Exception,), **attrs):
    return type(name, bases, dict(attrs, __module__=module))


def test_library_errors_are_sorted_by_duck_typing_without_importing_the_libraries():
    import psycopg2
    from azure.core import exceptions as az

    denied = psycopg2.errors.InsufficientPrivilege("permission denied for table job_errors")
    assert _errors.kind_of(denied) == "config"
    assert _errors.kind_of(psycopg2.OperationalError("server closed the connection")) == "service"
    assert _errors.kind_of(psycopg2.errors.UniqueViolation("duplicate key")) == "service"
    # What a server sends carries its SQLSTATE; classes are matched along the MRO by module.
    server_side = _fake("psycopg2.errors", "ProgrammingErrorLike", pgcode="42501")
    assert _errors.kind_of(server_side()) == "config"
    assert _errors.kind_of(_fake("psycopg2", "Error")()) == "service"
    assert _errors.kind_of(az.ResourceNotFoundError("gone")) == "not_found"
    assert _errors.kind_of(az.ClientAuthenticationError("refused")) == "config"
    assert _errors.kind_of(az.ResourceExistsError("there")) == "conflict"
    assert _errors.kind_of(az.HttpResponseError("500")) == "service"
    assert _errors.kind_of(az.ServiceRequestError("unreachable")) == "service"
    subclass = _fake("my.code", "Wrapped", (az.ResourceNotFoundError,))
    assert _errors.kind_of(subclass("gone")) == "not_found"
    assert _errors.kind_of(RuntimeError("a bug")) == _errors.kind_of(KeyError("x")) == "error"


def test_describe_is_what_modules_report():
    import psycopg2

    got = _errors.describe(psycopg2.errors.InsufficientPrivilege("permission denied for table x\nDETAIL: more"))
    assert got == ("PostgreSQL: permission denied for table x DETAIL: more", "config")
    hint = psycopg2.errors.UndefinedTable('relation "t" does not exist\nLINE 1: x\nHINT:  Check the name.')
    assert _errors.describe(hint) == (
        'PostgreSQL: relation "t" does not exist LINE 1: x HINT:  Check the name.',
        "service",
    )
    azure_error = _fake("azure.core.exceptions", "ClientAuthenticationError")
    assert _errors.describe(azure_error("AuthenticationFailed\nmore")) == (
        "Azure request failed: AuthenticationFailed",
        "config",
    )
    assert _errors.describe(OSError(28, "No space left on device", "/var/backups")) == (
        "/var/backups: No space left on device",
        "service",
    )
    assert _errors.describe(_dump.BackupError("x", kind="conflict")) == ("x", "conflict")
    assert _errors.describe(ValueError("bad id")) == ("bad id", "config")
    assert _errors.describe(KeyError("bug")) is None


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("v"),
        OSError(13, "Permission denied", "/x"),
        _dump.BackupError("b", kind="integrity"),
        _pg.PgError("p"),
        KeyError("bug"),
    ],
)
def test_describe_agrees_with_the_module_glue(exc):
    assert _errors.describe(exc) == _module_glue.operator_error(exc)


# --- every raise site of the collection has a kind -----------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILY_NAMES = {cls.__name__ for cls in FAMILIES}
SOURCES = sorted(glob.glob(os.path.join(ROOT, "plugins", "**", "*.py"), recursive=True))


# Built-in exceptions kind_of cannot sort (ValueError is config, OSError service).
KINDLESS_BUILTINS = {"Exception", "RuntimeError", "KeyError", "TypeError", "LookupError", "AssertionError"}


def _name(node):
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _unkinded_uses(path):
    """Where a family class is made without a kind, or handed on (as a factory) to code that
    would make it without one. Catching, isinstance, subclassing and aliasing are fine."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    bad = []
    for node in ast.walk(tree):
        raised = node.exc.func if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) else None
        if isinstance(raised, ast.Name) and raised.id in KINDLESS_BUILTINS:
            bad.append("%s:%d raises %s (kind error)" % (os.path.relpath(path, ROOT), node.lineno, raised.id))
        if not isinstance(node, (ast.Name, ast.Attribute)) or _name(node) not in FAMILY_NAMES:
            continue
        if not isinstance(getattr(node, "ctx", None), ast.Load) or isinstance(parents.get(node), ast.Attribute):
            continue
        parent = parents.get(node)
        while isinstance(parent, ast.Tuple):
            parent = parents.get(parent)
        if isinstance(parent, ast.Call) and parent.func is node:
            kind = next((k.value for k in parent.keywords if k.arg == "kind"), None)
            if kind is None or (isinstance(kind, ast.Constant) and kind.value not in _errors.OPERATOR_KINDS):
                bad.append("%s:%d %s(...) without a kind" % (os.path.relpath(path, ROOT), node.lineno, _name(node)))
            continue
        caught = isinstance(parent, ast.ExceptHandler)
        checked = isinstance(parent, ast.Call) and _name(parent.func) in ("isinstance", "issubclass", "super")
        aliased = isinstance(parent, ast.Assign)
        if not (caught or checked or aliased or isinstance(parent, ast.ClassDef)):
            bad.append("%s:%d %s handed on" % (os.path.relpath(path, ROOT), node.lineno, _name(node)))
    return sorted(bad, key=lambda b: int(b.split(":")[1].split(" ")[0]))


def test_no_raise_site_leaves_its_error_without_a_kind():
    bad = [b for path in SOURCES for b in _unkinded_uses(path)]
    assert not bad, "; ".join(bad)


def test_the_scan_finds_what_it_checks(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "raise BackupError('x')\n"
        "raise _dump.BackupError('x', kind='config')\n"
        "load_document(data, HistoryError)\n"
        "raise RestoreError('x', kind='bogus')\n"
        "raise RuntimeError('x')\n"
        "try:\n    pass\nexcept (HistoryError, KeyError):\n    pass\n"
    )
    assert [b.split(" ", 1)[1] for b in _unkinded_uses(str(sample))] == [
        "BackupError(...) without a kind",
        "HistoryError handed on",
        "RestoreError(...) without a kind",
        "raises RuntimeError (kind error)",
    ]
    assert len(SOURCES) > 40
