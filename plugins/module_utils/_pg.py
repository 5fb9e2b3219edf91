# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL access for the collection: connections, server facts and client tools.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
This is the only place that opens connections or runs pg_dump / pg_restore / psql (with
_pg_cluster, which starts and stops this host's clusters for the physical paths).

Secrets: the password reaches libpq through ``PGPASSWORD`` in the child's environment (or
through a 0600 passfile, ``PGPASSFILE``), never through argv, and never appears in messages.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

try:
    import psycopg2
    import psycopg2.errors
    import psycopg2.extensions
    from psycopg2 import sql

    errors = psycopg2.errors  # for other files: they catch PostgreSQL's errors through _pg

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the host
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = e
    # Other files compose queries with _pg.sql and catch _pg.errors: only this one imports psycopg2.
    errors = sql = None


class PgError(_errors.ServiceError):
    """A PostgreSQL problem explained for an operator: what is wrong and what to do."""


def postgres_common_argument_spec():
    """Connection options shared by every module that talks to PostgreSQL.

    Do not add connection options to individual modules: extend this and the
    ``insa.timescaledb_backup.postgres`` doc fragment together.
    """
    return dict(
        login_host=dict(type="str", default="127.0.0.1", aliases=["host"]),
        port=dict(type="int", default=5432, aliases=["login_port"]),
        login_user=dict(type="str", default="postgres", aliases=["user"]),
        login_password=dict(type="str", no_log=True, aliases=["password"]),
        passfile=dict(type="path"),
        sslmode=dict(
            type="str",
            default="prefer",
            choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
        ),
        maintenance_db=dict(type="str", default="postgres"),
        pg_bin_dir=dict(type="path"),
    )


CONNECTION_KEYS = tuple(postgres_common_argument_spec())


class ConnectionParams:
    """Where and how to connect. Built from module params or the runner's config."""

    def __init__(
        self,
        login_host="127.0.0.1",
        port=5432,
        login_user="postgres",
        login_password=None,
        passfile=None,
        sslmode="prefer",
        maintenance_db="postgres",
        pg_bin_dir=None,
    ):
        self.host = login_host
        self.port = int(port)
        self.user = login_user
        self.password = login_password
        self.passfile = passfile
        self.sslmode = sslmode
        self.maintenance_db = maintenance_db
        self.pg_bin_dir = pg_bin_dir

    @classmethod
    def from_params(cls, params):
        return cls(**{k: params.get(k) for k in CONNECTION_KEYS if params.get(k) is not None})

    def describe(self):
        return "%s@%s:%s" % (self.user, self.host, self.port)

    def libpq_env(self, dbname=None):
        """Environment for a client tool: the caller's environment plus libpq settings.
        The password goes here (PGPASSWORD), never into argv."""
        env = dict(os.environ)
        for key in ("PGSERVICE", "PGSERVICEFILE", "PGOPTIONS"):
            env.pop(key, None)
        env.update(
            PGHOST=str(self.host),
            PGPORT=str(self.port),
            PGUSER=str(self.user),
            PGSSLMODE=self.sslmode,
            PGAPPNAME="insa.timescaledb_backup",
            PGCONNECT_TIMEOUT="10",
            LC_ALL="C",
            LANG="C",
            PGTZ="UTC",
        )
        env.pop("PGPASSWORD", None)
        if self.password:
            env["PGPASSWORD"] = self.password
        if self.passfile:
            env["PGPASSFILE"] = self.passfile
        if dbname:
            env["PGDATABASE"] = dbname
        return env


def require_psycopg2():
    if not HAS_PSYCOPG2:
        raise PgError(
            "psycopg2 is required on the database host: apt-get install python3-psycopg2 "
            "(or pip install psycopg2-binary in the interpreter Ansible uses)"
        )


def explain_connect_error(exc, params, dbname):
    """Turns a libpq connection error into a message that says what to do."""
    text = str(exc).strip()
    where = "%s (database %s)" % (params.describe(), dbname)
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return (
            "authentication failed for %s: check login_user/login_password (or the passfile) "
            "and the server's pg_hba.conf" % where
        )
    if "does not exist" in low and "database" in low:
        return "database %r does not exist on %s:%s: check the name (psql -l lists them)" % (
            dbname,
            params.host,
            params.port,
        )
    if "permission denied for database" in low:
        return (
            "login %s may not connect to database %s on %s:%s: as a superuser or the database's owner, run "
            "GRANT CONNECT ON DATABASE %s TO %s;"
            % (
                qualify_part(params.user),
                qualify_part(dbname),
                params.host,
                params.port,
                qualify_part(dbname),
                qualify_part(params.user),
            )
        )
    if "could not connect" in low or "connection refused" in low or "timeout" in low or "could not translate" in low:
        return "cannot reach PostgreSQL at %s:%s: is the server running and listening there? (%s)" % (
            params.host,
            params.port,
            text.splitlines()[0],
        )
    return "cannot connect to %s: %s" % (where, text.splitlines()[0] if text else exc.__class__.__name__)


def connect_error_kind(exc):
    """The kind of a libpq connection error: wrong credentials or a missing CONNECT grant are
    settings (config), a database that does not exist is not_found, the rest the service's."""
    low = str(exc).lower()
    if "password authentication failed" in low or "no password supplied" in low or "permission denied" in low:
        return "config"
    if "does not exist" in low and "database" in low:
        return "not_found"
    return "service"


def connect(params, dbname=None, autocommit=True):
    require_psycopg2()
    dbname = dbname or params.maintenance_db
    kwargs = dict(
        host=params.host,
        port=params.port,
        user=params.user,
        dbname=dbname,
        sslmode=params.sslmode,
        connect_timeout=10,
        application_name="insa.timescaledb_backup",
        options="-c TimeZone=UTC -c statement_timeout=0",
    )
    if params.password:
        kwargs["password"] = params.password
    if params.passfile:
        kwargs["passfile"] = params.passfile
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.OperationalError as e:
        raise PgError(explain_connect_error(e, params, dbname), kind=connect_error_kind(e)) from None
    conn.autocommit = autocommit
    return conn


def login_of(conn):
    """The role a connection logged in as (for messages that say what it lacks)."""
    return conn.info.user


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


# --- qualified names -----------------------------------------------------------------------
# Tables are keyed "schema.table" in manifests and results. A part is written bare when it is
# a plain lower-case identifier and double-quoted otherwise, so "a.b"."c" and "a"."b.c" stay
# two names; split_qualified() reads such keys (and what operators type) the way PostgreSQL
# reads identifiers. Keys are never run as SQL: they are split and passed as identifiers.

_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
# PostgreSQL 17's keywords that are not unreserved (pg_get_keywords() catcode <> 'U'): bare,
# they would not read as names.
_KEYWORDS = frozenset(
    (
        "all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean "
        "both case cast char character check coalesce collate collation column concurrently constraint create "
        "cross current_catalog current_date current_role current_schema current_time current_timestamp "
        "current_user dec decimal default deferrable desc distinct do else end except exists extract false "
        "fetch float for foreign freeze from full grant greatest group grouping having ilike in initially "
        "inner inout int integer intersect interval into is isnull join json json_array json_arrayagg "
        "json_exists json_object json_objectagg json_query json_scalar json_serialize json_table json_value "
        "lateral leading least left like limit localtime localtimestamp merge_action national natural nchar "
        "none normalize not notnull null nullif numeric offset on only or order out outer overlaps overlay "
        "placing position precision primary real references returning right row select session_user setof "
        "similar smallint some substring symmetric system_user table tablesample then time timestamp to "
        "trailing treat trim true union unique user using values varchar variadic verbose when where window "
        "with xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot "
        "xmlserialize xmltable"
    ).split()
)

# What PostgreSQL reads as an unquoted identifier (letters include any non-ASCII character).
_BARE_IDENT = re.compile(r"^[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*$")


_QUOTED_IDENT = re.compile(r'"(?:[^"]|"")*"')


def without_quoted_identifiers(text):
    """text with each double-quoted identifier replaced by x: what remains of a type name or a
    constraint definition from a manifest can then be checked against a strict pattern."""
    return _QUOTED_IDENT.sub("x", text)


def qualify_part(part):
    return part if _PLAIN_IDENT.match(part) and part not in _KEYWORDS else quote_ident(part)


def qualified(schema, name):
    return "%s.%s" % (qualify_part(schema), qualify_part(name))


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _read_ident(text, pos):
    """One identifier of text at pos: (name, next position). Quoted: exact, with "" for ".
    Bare: up to the next '.', folded to lower case as PostgreSQL does."""
    if text.startswith('"', pos):
        out, pos = [], pos + 1
        while True:
            end = text.find('"', pos)
            if end < 0:
                raise ValueError("unterminated quoted identifier in %r" % (text,))
            out.append(text[pos:end])
            if text.startswith('"', end + 1):
                out.append('"')
                pos = end + 2
                continue
            return "".join(out), end + 1
    end = text.find(".", pos)
    end = len(text) if end < 0 else end
    part = text[pos:end]
    if not _BARE_IDENT.match(part):
        raise ValueError("%r is not a valid name: quote parts with spaces or special characters" % (text,))
    # PostgreSQL folds only ASCII letters of bare names (in a UTF-8 database).
    return part.translate(_ASCII_LOWER), end


def split_qualified(text, default_schema="public"):
    """'t', 'public.t', 'public."My t"', '"a.b"."c"' -> (schema, table)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a table name is empty")
    parts, pos = [], 0
    while True:
        name, pos = _read_ident(text, pos)
        if not name or len(name.encode("utf-8")) > mf.MAX_NAME_BYTES:
            raise ValueError("%r: each part of a name has 1 to 63 bytes" % (text,))
        parts.append(name)
        if pos == len(text):
            break
        if text[pos] != "." or len(parts) == 2:
            raise ValueError("%r is not a table name of the form schema.table" % (text,))
        pos += 1
    return (default_schema, parts[0]) if len(parts) == 1 else tuple(parts)


def regclass_text(schema, name):
    """A relation's name as ::regclass reads it, whatever the names hold."""
    return quote_ident(schema) + "." + quote_ident(name)


def quote_literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def scalar(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row[0] if row else None


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def database_exists(conn, dbname):
    return bool(scalar(conn, "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)))


def server_facts(conn):
    """Version facts of the server and the database the connection is on."""
    num = int(scalar(conn, "SHOW server_version_num"))
    exts = rows(
        conn,
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY e.extname",
    )
    extensions = [{"name": n, "version": v, "schema": s} for n, v, s in exts]
    tsdb = next((e["version"] for e in extensions if e["name"] == "timescaledb"), None)
    return {
        "server_version_num": num,
        "server_major": num // 10000,
        "postgresql_version": scalar(conn, "SHOW server_version").split()[0],
        "timescaledb_version": tsdb,
        "extensions": extensions,
        "database_size_bytes": int(scalar(conn, "SELECT pg_database_size(current_database())")),
        "database_owner": scalar(
            conn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "database_properties": database_properties(conn),
    }


def database_properties(conn):
    """The database's own grants, comment and settings. pg_restore brings them back only with
    --create, which a restore into a new name cannot use; _restore applies them from here.
    acl None means the default privileges."""
    acl = rows(
        conn,
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
        "a.is_grantable "
        "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() AND d.datacl IS NOT NULL "
        "ORDER BY 1 NULLS FIRST, 2",
    )
    has_acl = scalar(conn, "SELECT datacl IS NOT NULL FROM pg_database WHERE datname = current_database()")
    settings = {
        role: list(config or [])
        for role, config in rows(
            conn,
            "SELECT CASE WHEN s.setrole = 0 THEN '' ELSE pg_get_userbyid(s.setrole) END, s.setconfig "
            "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database()",
        )
    }
    return {
        "acl": [{"grantee": g, "privilege": p, "grantable": bool(w)} for g, p, w in acl] if has_acl else None,
        "comment": scalar(
            conn, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
        ),
        "settings": settings.pop("", []),
        # ALTER ROLE ... IN DATABASE ... SET: part of the database, not of the roles file.
        "role_settings": settings,
    }


# --- client tools ----------------------------------------------------------------------

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def tool_version(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    m = _VERSION_RE.search(out or "")
    if not m:
        return None
    return int(m.group(1)), out.strip().split()[-1]


def find_tool(name, server_major, bin_dir=None):
    """Path of a client tool whose major version is >= the server's.

    Looks only in bin_dir when given; otherwise in /usr/lib/postgresql/<server major>/bin,
    then the other installed majors, then PATH. Raises PgError naming the package to install.
    """
    if bin_dir:
        # An explicit directory is the operator's choice: no silent fallback elsewhere.
        candidates = [os.path.join(bin_dir, name)]
    else:
        candidates = ["/usr/lib/postgresql/%d/bin/%s" % (server_major, name)]
        for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
            candidates.append(os.path.join(d, name))
        on_path = shutil.which(name)
        if on_path:
            candidates.append(on_path)
    seen = []
    for path in candidates:
        if path in seen or not os.access(path, os.X_OK):
            continue
        seen.append(path)
        v = tool_version(path)
        if v and v[0] >= server_major:
            return path, v[1]
    found = ", ".join("%s (%s)" % (p, (tool_version(p) or ("?",))[0]) for p in seen) or "none"
    raise PgError(
        "%s for PostgreSQL %d or newer is needed (a server of major %d refuses older dump tools); found: %s. "
        "Install postgresql-client-%d on this host or point pg_bin_dir at its bin directory."
        % (name, server_major, server_major, found, server_major)
    )


class ToolError(PgError):
    """A client tool exited non-zero; ``stderr`` holds all it wrote (the message only its end)."""

    def __init__(self, *args, stderr=None, kind=None):
        super(ToolError, self).__init__(*args, kind=kind)
        self.stderr = stderr


def stderr_tail(text, limit=12):
    """The useful end of a tool's stderr, without pg_dump's harmless TimescaleDB catalog warnings."""
    lines = [
        ln
        for ln in (text or "").splitlines()
        if ln.strip()
        and "circular foreign-key constraints" not in ln
        and "consider using a full dump" not in ln
        and "consider using the --disable-triggers" not in ln
        and not ln.lstrip().startswith(("pg_dump: detail:", "pg_dump: hint:"))
    ]
    return "\n".join(lines[-limit:])


def spawn_tool(argv, params, dbname, stderr, stdout_pipe=True, stdin_pipe=False):
    """Starts a client tool whose output (pg_dump) or input (pg_restore reading an archive as it
    is written) the caller streams: a list argv, the libpq environment, stdout a pipe (or
    discarded), stdin a pipe or nothing, stderr into the caller's file."""
    return subprocess.Popen(
        argv,
        env=params.libpq_env(dbname),
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_pipe else subprocess.DEVNULL,
        stderr=stderr,
    )


def run_tool(argv, params, dbname=None, stdin=None, timeout=None):
    """Runs a client tool with a list argv (never a shell). Returns stdout; raises ToolError."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                argv,
                env=params.libpq_env(dbname),
                input=stdin,
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout,
                check=False,
            )
        except OSError as e:
            raise ToolError("cannot run %s: %s" % (argv[0], e.strerror)) from None
        err.seek(0)
        errtext = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise tool_error(argv, proc.returncode, errtext)
    return proc.stdout, errtext


def tool_error(argv, returncode, errtext):
    """The ToolError of a client tool that exited with ``returncode``: its useful stderr."""
    return ToolError(
        "%s exited with status %d: %s" % (os.path.basename(argv[0]), returncode, stderr_tail(errtext)), stderr=errtext
    )


def drop_database(conn, dbname):
    """Drops a database, first ending its sessions (TimescaleDB's scheduler holds one)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


# Who is on a database: what an operator needs to end the sessions that block a rename.
_SESSIONS_QUERY = (
    "SELECT pid, usename, application_name, client_addr::text, state, coalesce(state_change, backend_start) "
    "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY backend_start LIMIT 21"
)
_SESSION_KEYS = ("pid", "user", "application_name", "client_addr", "state", "since")


def describe_sessions(sessions, limit=20):
    """'pid 4242 (user grafana, application "Grafana", from 10.0.0.7, idle since 2026-11-27 01:58:00 UTC); ...'.
    What PostgreSQL hides from a login without pg_read_all_stats is said to be hidden."""
    parts = []
    for s in sessions[:limit]:
        since = s.get("since")
        fields = [
            "user %s" % qualify_part(s["user"]) if s.get("user") else None,
            'application "%s"' % s["application_name"] if s.get("application_name") else None,
            "from %s" % s["client_addr"] if s.get("client_addr") else None,
            (s.get("state") or "state hidden")
            + (since.strftime(" since %Y-%m-%d %H:%M:%S UTC") if hasattr(since, "strftime") else ""),
        ]
        parts.append("pid %s (%s)" % (s["pid"], ", ".join(f for f in fields if f)))
    more = len(sessions) - limit
    return "; ".join(parts) + (" and %d more" % more if more > 0 else "")


def _in_use(conn, dbname, what):
    """PgError (conflict) for what cannot be done to dbname, naming the sessions on it."""
    found = [dict(zip(_SESSION_KEYS, row)) for row in rows(conn, _SESSIONS_QUERY, (dbname,))]
    return PgError(
        "%s. On it: %s. End them (SELECT pg_terminate_backend(<pid>)) or stop their clients, then run it again"
        % (what, describe_sessions(found) if found else "no session any more"),
        kind="conflict",
    )


def allows_connections(conn, dbname):
    """pg_database.datallowconn of dbname (None when it does not exist)."""
    return scalar(conn, "SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname,))


def set_allow_connections(conn, dbname, allow):
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allow else "false")
            )
        )


def close_database(conn, dbname):
    """Refuses new connections to dbname and ends the existing ones (before a rename). When they
    do not end (or anything else stops it), dbname gets its datallowconn of before back and the
    error names who holds it. Returns that datallowconn."""
    original = allows_connections(conn, dbname)
    set_allow_connections(conn, dbname, False)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
        for _attempt in range(50):
            if not scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)):
                return original
            time.sleep(0.1)
        raise _in_use(conn, dbname, "sessions on %s did not end; cannot rename it" % dbname)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            set_allow_connections(conn, dbname, original is not False)
        raise


def comment_database(conn, dbname, text):
    """COMMENT ON DATABASE (None removes it): a note stored in the cluster's shared catalog."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(dbname), sql.SQL("NULL") if text is None else sql.Literal(text)
            )
        )


def database_comments(conn, prefix):
    """(oid, name, comment) of the databases whose comment starts with ``prefix``."""
    return rows(
        conn,
        "SELECT d.oid, d.datname::text, c.description FROM pg_database d "
        "JOIN pg_shdescription c ON c.objoid = d.oid AND c.classoid = 'pg_database'::regclass "
        "WHERE starts_with(c.description, %s) ORDER BY d.oid",
        (prefix,),
    )


def open_database(conn, dbname):
    set_allow_connections(conn, dbname, True)


def rename_database(conn, old, new):
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
    except errors.ObjectInUse:
        raise _in_use(conn, old, "cannot rename %s to %s: it is in use" % (old, new)) from None


def create_database(conn, dbname, owner=None):
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname))
    if owner and scalar(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)):
        query = query + sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    with conn.cursor() as cur:
        cur.execute(query)
