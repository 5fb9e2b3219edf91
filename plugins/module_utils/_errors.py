# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors an operator reads, by kind. Every error class of the collection derives from
OperatorError and has a kind, from its class or given where it is raised (``kind=``); modules
report the kind (``error_kind``) beside the message, and the scheduled runner maps it to its
exit code and to the results it reports. ``kind_of`` and ``describe`` sort the exceptions of
PostgreSQL's driver and of the Azure SDK the same way, without importing either.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

config     the settings or the input are wrong: fix them and run again
integrity  what is stored is not what it claims to be (manifest, checksum, roles file)
conflict   something is in the way: a lock held, a name taken, an archived blob
service    PostgreSQL, Azure or a tool failed or is unreachable: it may work on the next run
not_found  what was asked for does not exist
clock      this host's clock and the database server's disagree: fix the clock, then run again
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 75


class OperatorError(Exception):
    """A problem explained for an operator: the message says what is wrong and what to do.

    The kind comes from the class (ConfigError, ...) or, for the families that span several
    kinds (BackupError, RestoreError, HistoryError, ...), from the raise site: ``kind=``."""

    kind = "error"

    def __init__(self, *args, kind=None):
        super(OperatorError, self).__init__(*args)
        if kind is not None:
            if kind not in OPERATOR_KINDS:
                raise ValueError("kind must be one of %s, not %r" % (", ".join(OPERATOR_KINDS), kind))
            self.kind = kind


class ConfigError(OperatorError):
    kind = "config"


class IntegrityError(OperatorError):
    kind = "integrity"


class ConflictError(OperatorError):
    kind = "conflict"


class ServiceError(OperatorError):
    kind = "service"


class NotFoundError(OperatorError):
    kind = "not_found"


# The kinds an operator can act on; "error" is what nothing explains (a bug).
OPERATOR_KINDS = ("config", "integrity", "conflict", "service", "not_found", "clock")
KINDS = OPERATOR_KINDS + ("error",)

SQLSTATE_INSUFFICIENT_PRIVILEGE = "42501"


def _class_names(exc):
    return [(c.__module__ or "", c.__name__) for c in type(exc).__mro__]


def is_postgres_error(exc):
    """An exception of the PostgreSQL driver (psycopg2), told by its classes' module: this file
    does not import psycopg2 (only _pg does)."""
    return any(module == "psycopg2" or module.startswith("psycopg2.") for module, _name in _class_names(exc))


def is_azure_error(exc):
    """An exception of the Azure SDK (azure.core, azure.storage, azure.mgmt, azure.identity)."""
    return any(module.startswith("azure.") for module, _name in _class_names(exc))


def is_insufficient_privilege(exc):
    """PostgreSQL's SQLSTATE 42501: a GRANT (or ownership) is missing."""
    return getattr(exc, "pgcode", None) == SQLSTATE_INSUFFICIENT_PRIVILEGE or any(
        name == "InsufficientPrivilege" for _module, name in _class_names(exc)
    )


# Azure SDK classes (azure.core.exceptions) whose meaning is not "the service failed".
_AZURE_KINDS = (
    ("ResourceNotFoundError", "not_found"),
    ("ClientAuthenticationError", "config"),
    ("ResourceExistsError", "conflict"),
)


def kind_of(exc):
    """The kind of any exception: bad values are config errors, OS errors service errors; a
    missing PostgreSQL privilege is config (a GRANT fixes it), the rest of PostgreSQL's errors
    and the Azure SDK's are service errors, but for a missing resource (not_found), refused
    credentials (config) and a resource that exists (conflict). Anything else: "error"."""
    if isinstance(exc, OperatorError):
        return exc.kind
    if isinstance(exc, ValueError):
        return "config"
    if isinstance(exc, OSError):
        return "service"
    if is_postgres_error(exc):
        return "config" if is_insufficient_privilege(exc) else "service"
    if is_azure_error(exc):
        names = {name for _module, name in _class_names(exc)}
        return next((kind for name, kind in _AZURE_KINDS if name in names), "service")
    return "error"


def describe(exc):
    """(message, kind) an operator reads for an exception, or None when it is not one of theirs
    (a bug, which keeps its traceback). PostgreSQL's DETAIL and HINT lines say which object and
    what to do: they stay, joined into one line."""
    if isinstance(exc, (OperatorError, ValueError)):
        return "%s" % (exc,), kind_of(exc)
    if isinstance(exc, OSError):
        return "%s: %s" % (exc.filename or "I/O error", exc.strerror or exc), "service"
    lines = [ln.strip() for ln in ("%s" % (exc,)).strip().splitlines() if ln.strip()] or [exc.__class__.__name__]
    if is_postgres_error(exc):
        return "PostgreSQL: %s" % " ".join(lines), kind_of(exc)
    if is_azure_error(exc):
        # The SDK raises more than it documents; say it plainly.
        return "Azure request failed: %s" % lines[0], kind_of(exc)
    return None


def exit_code(exc):
    """The runner's exit status for an error that ended a whole run."""
    return {"config": EXIT_CONFIG, "conflict": EXIT_LOCKED}.get(kind_of(exc), EXIT_FAILED)
