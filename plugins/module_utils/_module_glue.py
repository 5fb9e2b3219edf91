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
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest, _pg

# Exceptions the core raises with a message written for the operator.
try:
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils._dump import BackupError
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils._restore import RestoreError
except ImportError:  # pragma: no cover
    BackupError = RestoreError = _pg.PgError

OPERATOR_ERRORS = (_pg.PgError, _manifest.ManifestError, BackupError, RestoreError, ValueError)


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


def call(module, fn, *args, **kwargs):
    """Runs a core function; an operator-facing error becomes fail_json with its message."""
    try:
        return fn(*args, **kwargs)
    except OPERATOR_ERRORS as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg="%s: %s" % (e.filename or "I/O error", e.strerror or e))


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

    # A logger of this module object's own, not one from the global registry.
    logger = logging.Logger("insa.timescaledb_backup.%s" % module._name, logging.INFO)
    logger.propagate = False
    logger.addHandler(_ModuleLogHandler(module))
    return lambda label, total=None: _log.Progress(logger, label, total_bytes=total, interval_seconds=interval_seconds)
