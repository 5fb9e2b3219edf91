# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection does the same way: check Python dependencies,
turn the core's exceptions into ``fail_json(msg=...)``, never a traceback.

Private to the collection. Imports Ansible: used by modules only, never by the runner.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import logging

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure_names, _errors, _pg


def require_psycopg2(module):
    if not _pg.HAS_PSYCOPG2:
        module.fail_json(
            msg=missing_required_lib(
                "psycopg2", reason="to talk to PostgreSQL (Debian: apt-get install python3-psycopg2)"
            ),
            exception=str(_pg.PSYCOPG2_IMPORT_ERROR),
        )


def require_azure_storage(module):
    """Fails with missing_required_lib when the Azure SDK is not importable on the target."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

    if not _azure.HAS_AZURE_STORAGE:
        module.fail_json(
            msg=missing_required_lib(_azure.AZURE_STORAGE_REQUIREMENT), exception=_azure.AZURE_STORAGE_IMPORT_ERROR
        )


def connection_params(module):
    return _pg.ConnectionParams.from_params(module.params)


def run_module(module, redact, fn, *args, **kwargs):
    """Runs a core function for a module: every error an operator can act on - the collection's
    (_errors.OperatorError), bad values, OS errors, PostgreSQL's and the Azure SDK's own -
    becomes fail_json(msg=..., error_kind=...) with secrets redacted (``redact``: a callable,
    or None), never a traceback. Anything else is a bug and keeps its traceback."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - sorted below; what is not understood is raised again
        known = operator_error(e)
        if known is None:
            raise
        message, kind = known
        # Without a redactor of the module's own secrets, the pattern-based one (keys, SAS, passwords).
        module.fail_json(msg=(redact or _azure_names.Redactor())(message), error_kind=kind)


def operator_error(exc):
    """(message, kind) an operator reads for an exception, or None when it is not one of theirs."""
    if isinstance(exc, (_errors.OperatorError, ValueError)):
        return "%s" % (exc,), _errors.kind_of(exc)
    if isinstance(exc, OSError):
        return "%s: %s" % (exc.filename or "I/O error", exc.strerror or exc), "service"
    lines = [ln.strip() for ln in ("%s" % (exc,)).strip().splitlines() if ln.strip()] or [exc.__class__.__name__]
    first_line = lines[0]
    if _pg.HAS_PSYCOPG2 and isinstance(exc, _pg.psycopg2.Error):
        # A missing privilege is fixed by a GRANT (configuration); the rest is the server's.
        # DETAIL and HINT lines say which object and what to do: they stay.
        denied = isinstance(exc, _pg.psycopg2.errors.InsufficientPrivilege)
        return "PostgreSQL: %s" % " ".join(lines), "config" if denied else "service"
    if type(exc).__module__.startswith("azure."):
        # The SDK raises more than it documents; say it plainly.
        return "Azure request failed: %s" % first_line, "service"
    return None


class _ModuleLogHandler(logging.Handler):
    """Sends log records to the target's journal (or syslog) through module.log."""

    def __init__(self, module):
        super(_ModuleLogHandler, self).__init__()
        self.module = module

    def emit(self, record):
        try:
            self.module.log(record.getMessage())
        except Exception:  # noqa: BLE001 - a progress line must never fail the module
            self.handleError(record)


def progress_factory(module, interval_seconds=30.0):
    """progress(label, total_bytes) for the core's long transfers (uploads, downloads, restores):
    a module's result reaches the operator only when it ends, so while it runs it writes
    'restore iot__restore_...: 1.2 GiB done of 3.4 GiB (35%), 40.0 MiB/s, ETA 56 s' to the
    target's journal (journalctl -f -t ansible-insa.timescaledb_backup.<module>)."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _log

    logger = module_logger(module)
    return lambda label, total=None: _log.Progress(logger, label, total_bytes=total, interval_seconds=interval_seconds)


def module_logger(module):
    """A logger of this module object's own (not one from the global registry) whose lines go
    to the target's journal: what the scheduled runner logs, a module run logs the same way."""
    logger = logging.Logger("insa.timescaledb_backup.%s" % module._name, logging.INFO)
    logger.propagate = False
    logger.addHandler(_ModuleLogHandler(module))
    return logger
