# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection does the same way: check Python dependencies,
turn the core's exceptions into ``fail_json(msg=...)``, never a traceback.

Private to the collection. Imports Ansible: used by modules only, never by the runner.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import logging
import os

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure_names, _errors, _pg, _signing


def require_lib(module, available, requirement, import_error, reason=None):
    """Fails with missing_required_lib when a library the module needs is not importable on the target."""
    if not available:
        module.fail_json(msg=missing_required_lib(requirement, reason=reason), exception=import_error)


def require_psycopg2(module):
    require_lib(
        module,
        _pg.HAS_PSYCOPG2,
        "psycopg2",
        str(_pg.PSYCOPG2_IMPORT_ERROR),
        reason="to talk to PostgreSQL (Debian: apt-get install python3-psycopg2)",
    )


def require_azure_storage(module):
    """Fails with missing_required_lib when the Azure SDK is not importable on the target."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

    require_lib(module, _azure.HAS_AZURE_STORAGE, _azure.AZURE_STORAGE_REQUIREMENT, _azure.AZURE_STORAGE_IMPORT_ERROR)


def require_pyarrow(module, reason):
    """Fails with missing_required_lib when pyarrow (the Parquet archive of the history modules) is not importable."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history

    require_lib(
        module, _history.HAS_PYARROW, _history.PYARROW_REQUIREMENT, _history.PYARROW_IMPORT_ERROR, reason=reason
    )


def signing_policy(module):
    """The _signing.Policy of the module's signing options (signing_key_file, trusted_signers_file,
    trusted_signers, require_signatures, allow_unsigned - those it has): fails with
    missing_required_lib when one is set and cryptography is not importable, and with the reason
    when a key or the trust store cannot be used."""
    p = module.params
    if any(p.get(k) for k in ("signing_key_file", "trusted_signers_file", "trusted_signers")):
        require_lib(
            module,
            _signing.HAS_CRYPTOGRAPHY,
            _signing.CRYPTOGRAPHY_REQUIREMENT,
            _signing.CRYPTOGRAPHY_IMPORT_ERROR,
            reason="to sign and check manifests",
        )
    return run_module(module, None, _signing.policy_from, p)


def connection_params(module):
    return _pg.ConnectionParams.from_params(module.params)


def check_minimum(module, name, minimum):
    """Fails unless the module's option ``name`` is ``minimum`` or more."""
    if module.params[name] < minimum:
        module.fail_json(msg="%s must be %d or more" % (name, minimum))


def options(params, *names, **renamed):
    """Keyword arguments of a core function from the module's options: each option of ``names``
    under its own name, and each ``keyword="option"`` of ``renamed`` under that keyword."""
    kwargs = dict((name, params[name]) for name in names)
    kwargs.update((keyword, params[option]) for keyword, option in renamed.items())
    return kwargs


def open_store(module, redact=None, progress=False, check_container=False):
    """The blob store of the module's Azure options; errors are redacted by ``redact`` (default: the
    redactor of those options' secrets). ``progress``: long transfers report to the target's journal;
    ``check_container``: fails unless the container exists (it is never created here)."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

    p = module.params
    store = run_module(module, _azure.redactor_for(p) if redact is None else redact, _azure.open_store, p)
    if progress:
        store.progress = progress_factory(module)
    store.signing = signing_policy(module)
    if check_container:
        run_module(module, store.redact, store.ensure_container, create=False)
    return store


def require_azure_mgmt_storage(module):
    """Fails with missing_required_lib when azure-mgmt-storage (Resource Manager) is not importable."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle

    require_lib(
        module,
        _lifecycle.HAS_AZURE_MGMT_STORAGE,
        _lifecycle.AZURE_MGMT_STORAGE_REQUIREMENT,
        _lifecycle.AZURE_MGMT_STORAGE_IMPORT_ERROR,
    )


def arm_manager(module, redact, manager_class, hint=""):
    """A Resource Manager client (a _lifecycle.ArmClient class) for the module's storage account:
    authenticated by arm_access_token, or else by the auth_mode=entra credential - Resource
    Manager accepts Entra tokens only; ``hint`` completes the message for other modes."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _lifecycle

    p = module.params
    config = dict(p)
    if p["arm_access_token"]:
        config["auth_mode"] = "entra"
    elif p["auth_mode"] != "entra":
        module.fail_json(
            msg="Azure Resource Manager needs auth_mode: entra or arm_access_token (it accepts Entra tokens only)%s"
            % hint,
            error_kind="config",
        )
    settings = run_module(module, redact, _azure.resolve_settings, config)
    if p["arm_access_token"]:
        credential = _lifecycle.StaticTokenCredential(p["arm_access_token"])
    else:
        credential = run_module(module, redact, _azure.entra_credential, settings)
    return run_module(
        module,
        redact,
        manager_class,
        credential,
        p["subscription_id"] or os.environ.get("AZURE_SUBSCRIPTION_ID"),
        p["resource_group"],
        settings["account_name"],
        arm_endpoint=p["arm_endpoint"],
        max_retries=p["max_retries"],
        timeout=p["timeout"],
        redactor=redact,
    )


def run_history(module, fn, *args, **kwargs):
    """Runs a core function of the history modules, fn(connection, database, store, *args, **kwargs),
    with the module's PostgreSQL options, its database option and the blob store of its Azure
    options; errors are redacted with the store's secrets."""
    store = open_store(module)
    return run_module(
        module, store.redact, fn, connection_params(module), module.params["database"], store, *args, **kwargs
    )


def warn(module, warnings):
    """Each warning of a core function as a warning of the module."""
    for warning in warnings:
        module.warn(warning)


def fail_on_failures(module, result, what, describe, most=None):
    """Fails with '<count> <what>: <the first ``most`` failures, each as describe(failure)>' and the
    whole result when the core function reported failures."""
    failures = result.get("failures")
    if failures:
        described = "; ".join(describe(f) for f in failures[:most])
        module.fail_json(msg="%d %s: %s" % (len(failures), what, described), **result)


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
    """(message, kind) an operator reads for an exception, or None when it is not one of theirs:
    the one classification the runner uses too (_errors.describe)."""
    return _errors.describe(exc)


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
