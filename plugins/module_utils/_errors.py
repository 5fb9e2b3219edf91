# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors an operator reads, by kind. Every error class of the collection derives from
OperatorError and from one kind; modules report the kind (``error_kind``) beside the message,
and the scheduled runner maps it to its exit code and to the results it reports.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

config     the settings or the input are wrong: fix them and run again
integrity  what is stored is not what it claims to be (manifest, checksum, roles file)
conflict   something is in the way: a lock held, a name taken, an archived blob
service    PostgreSQL, Azure or a tool failed or is unreachable: it may work on the next run
not_found  what was asked for does not exist
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 75


class OperatorError(Exception):
    """A problem explained for an operator: the message says what is wrong and what to do."""

    kind = "error"


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


KINDS = ("config", "integrity", "conflict", "service", "not_found", "error")


def kind_of(exc):
    """The kind of any exception: bad values are config errors, OS errors service errors."""
    if isinstance(exc, OperatorError):
        return exc.kind
    if isinstance(exc, ValueError):
        return "config"
    if isinstance(exc, OSError):
        return "service"
    return "error"


def exit_code(exc):
    """The runner's exit status for an error that ended a whole run."""
    return {"config": EXIT_CONFIG, "conflict": EXIT_LOCKED}.get(kind_of(exc), EXIT_FAILED)
