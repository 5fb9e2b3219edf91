# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a login lacks when PostgreSQL refuses a job for a missing privilege (SQLSTATE 42501),
and the statement that gives it, for that job.

PostgreSQL's message names the object ("permission denied for table job_errors", "must be
owner of hypertable esp_telemetry"); the login is the connection's user; what it needs depends
on the job that was refused, so the jobs (_dump, _verify, _restore, the history archive) wrap
their work in ``advising(job, login, ...)``, which turns such a refusal into a PrivilegeError
(kind config) that says all three.

Private to the collection. No Ansible imports, no psycopg2 import: errors are recognised by
their SQLSTATE (``_errors.is_insufficient_privilege``) or by PostgreSQL's words in a client
tool's stderr.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pg


class PrivilegeError(_errors.ConfigError):
    """A login lacks a privilege a job needs; the message names the statement that gives it."""


# PostgreSQL's words for a missing privilege, as a client tool prints them ("ERROR:  ...").
_DENIAL_RE = re.compile(
    r"(?:ERROR|FATAL):\s+((?:permission denied|must be owner of|must be (?:a )?member of|must be able to SET ROLE"
    r"|must have privileges of|query would be affected by row-level security)[^\n]*)"
)
# The statement pg_dump ("Query was:") or pg_restore ("Command was:") was refused.
_STATEMENT_RE = re.compile(r"(?:Query was|Command was):\s*([^\n]+)")

_READ_ALL = (
    "read access to every table",
    "GRANT pg_read_all_data TO {login};",
    "pg_dump reads every table, TimescaleDB's catalog and chunks included, and TimescaleDB's job history "
    "table is not readable by PUBLIC; pg_read_all_data (PostgreSQL 14 or newer) covers them all",
)
_RESTORE = (
    "CREATEDB and the roles that own the restored objects",
    "ALTER ROLE {login} CREATEDB;{owner_grant}",
    "a restore creates a database and gives every object back to its owner, and TimescaleDB lets only the "
    "database's owner call timescaledb_pre_restore(); a superuser may do all of it",
)

# job: (what it was, what the login lacks, the statements that give it, why)
JOBS = {
    "dump": ("the backup of {database}",) + _READ_ALL,
    # The drill is a verification at level restore.
    "verify-restore": ("the restore test of {database}",) + _RESTORE,
    "restore": ("the restore of {database}",) + _RESTORE,
    "retention": (
        "chunk retention on {hypertable}",
        "ownership of {hypertable}",
        "ALTER TABLE {hypertable} OWNER TO {login};",
        "drop_chunks() drops the chunks of a hypertable only for its owner: run retention as that owner, or "
        "make the login the owner",
    ),
    "history-archive": (
        "the chunk archive of {hypertable}",
        "SELECT on {hypertable}",
        "GRANT SELECT ON {hypertable} TO {login};",
        "the archive reads the hypertable, whose grants TimescaleDB gives to its chunks, and reads back what it "
        "wrote through a temporary table: TEMPORARY on the database, which PUBLIC has unless it was revoked",
    ),
    "history-restore": (
        "the range restore into {table}",
        "SELECT and INSERT on {table}",
        "GRANT SELECT, INSERT ON {table} TO {login};",
        "with create_table: true the login also needs CREATE on the table's schema",
    ),
}

# Refusals that say exactly what is missing, whatever the job: (pattern, what it lacks, statement).
_SPECIFIC = (
    (re.compile(r"permission denied to create database"), "CREATEDB", "ALTER ROLE {login} CREATEDB;"),
    (
        re.compile(
            r'(?:must be (?:a )?member of role|must be able to SET ROLE|must have privileges of role) "([^"]+)"'
        ),
        "membership in role {0}",
        "GRANT {0} TO {login};",
    ),
    (
        re.compile(r"permission denied to terminate process"),
        "the right to end other sessions",
        "GRANT pg_signal_backend TO {login};",
    ),
    (
        re.compile(r"row-level security"),
        "BYPASSRLS (pg_dump reads every row of a table or none)",
        "ALTER ROLE {login} BYPASSRLS;",
    ),
    (
        re.compile(r'permission denied for database (?:"([^"]+)"|(\S+))'),
        "CONNECT on database {0}",
        "GRANT CONNECT ON DATABASE {0} TO {login};",
    ),
)


def denial_in_text(text):
    """PostgreSQL's refusal in a client tool's stderr, with the statement it refused, or None."""
    m = _DENIAL_RE.search(text or "")
    if not m:
        return None
    found = m.group(1).strip()
    statement = _STATEMENT_RE.search(text, m.end())
    if statement:
        found += "; %s" % statement.group(1).strip().rstrip(";")[:200]
    return found


def denial(exc):
    """PostgreSQL's message when exc is a refusal for a missing privilege (a driver error of
    SQLSTATE 42501, or a client tool's error whose stderr says so); None for anything else."""
    if _errors.is_insufficient_privilege(exc):
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)
        lines = [ln.strip() for ln in ("%s" % (exc,)).splitlines() if ln.strip()]
        return (primary or (lines[0] if lines else "permission denied")).strip()
    return denial_in_text(getattr(exc, "stderr", None))


def login_for(params, conn=None):
    """The login of a job: its connection settings' user, or the user of the connection it was given."""
    return params.user if params is not None else _pg.login_of(conn)


def _ident(name):
    return _pg.qualify_part(name) if name else None


def advice(job, login, refused, database=None, hypertable=None, table=None, owner=None):
    """The message for a job that PostgreSQL refused (``refused``: its message, see denial):
    which login lacks what, on which object, and the statement that gives it."""
    what, lacks, statement, why = JOBS[job]
    names = {
        "login": _ident(login) or "<login>",
        "database": _ident(database) or "the database",
        "hypertable": hypertable or "<hypertable>",
        "table": table or "<table>",
    }
    # The owner of the backed-up database: the restore gives the new one to it, if it exists here.
    names["owner_grant"] = "" if owner == login else " GRANT %s TO %s;" % (_ident(owner) or "<owner>", names["login"])
    for pattern, specific_lacks, specific_statement in _SPECIFIC:
        m = pattern.search(refused)
        if m:
            found = [_ident(g) for g in m.groups() if g is not None]
            lacks, statement, why = specific_lacks.format(*found), specific_statement.format(*found, **names), None
            break
    return "%s was refused: login %s lacks %s (PostgreSQL: %s). As a superuser, run: %s then run it again%s." % (
        what.format(**names),
        names["login"],
        lacks.format(**names),
        refused,
        statement.format(**names),
        " (%s)" % why if why else "",
    )


@contextlib.contextmanager
def advising(job, login, **context):
    """Runs a job's work; a refusal for a missing privilege becomes a PrivilegeError saying what
    to grant (see advice). A PrivilegeError of an inner job (a safety backup in a restore) stays."""
    if job not in JOBS:
        raise ValueError("unknown job %r" % (job,))
    try:
        yield
    except PrivilegeError:
        raise
    except Exception as e:  # noqa: BLE001 - only refusals are translated; everything else is raised as it is
        refused = denial(e)
        if refused is None:
            raise
        raise PrivilegeError(advice(job, login, refused, **context)) from e
