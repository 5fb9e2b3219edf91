# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What pg_restore alone does not bring back, given back by the restore (docs/ARCHITECTURE.md,
"What a restore reproduces"): the roles of the backup's cluster (from its globals file), the
foreign keys that point at hypertables, added once timescaledb_post_restore() has made their
rows visible, and the database's own grants, comment and settings. Everything here comes from
the backup set, so it is data, never SQL to run as it is: the globals file is parsed, names
are quoted again and definitions checked against strict patterns.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import threading

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _globals, _pg

sql = _pg.sql  # query composition through _pg (None without psycopg2)


class RestoreError(_errors.OperatorError):
    """A restore cannot go on; the message says why, and what state the databases are in."""


_ROLES_QUERY = (
    "SELECT rolname, rolsuper, rolsuper OR rolreplication OR rolbypassrls "
    "OR (rolcreaterole AND current_setting('server_version_num')::int < 160000) FROM pg_roles"
)


def restore_roles(params, globals_path):
    """Creates the roles of the backup's cluster that are missing here (no passwords, no
    SUPERUSER/REPLICATION/BYPASSRLS); roles that exist are left exactly as they are. The file
    is parsed, never run: one statement this collection does not understand refuses all of it
    before anything changed. Returns what was left alone, for the operator to read."""
    if not globals_path or not os.path.exists(globals_path):
        return ["no globals file; roles were not restored"]
    try:
        with open(globals_path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise RestoreError("%s is not UTF-8 (%s); nothing was changed" % (globals_path, e), kind="integrity") from None
    try:
        statements = _globals.parse(text)
    except _globals.GlobalsError as e:
        raise RestoreError("%s: %s. Nothing was changed." % (globals_path, e), kind="integrity") from None
    conn = _pg.connect(params)
    try:
        planned = _globals.plan(
            statements,
            {
                name: {"superuser": sup, "privileged": privileged}
                for name, sup, privileged in _pg.rows(conn, _ROLES_QUERY)
            },
            {r[0] for r in _pg.rows(conn, "SELECT name FROM pg_settings WHERE context = 'user'")},
            databases=[r[0] for r in _pg.rows(conn, "SELECT datname FROM pg_database")],
            current_user=_pg.scalar(conn, "SELECT current_user"),
            server_major=int(_pg.scalar(conn, "SHOW server_version_num")) // 10000,
        )
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                for statement in planned["sql"]:
                    cur.execute(statement)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
    finally:
        conn.close()
    created = ["created role %s" % _pg.qualify_part(r) for r in planned["created"]]
    return created + planned["skipped"]


_PRIVILEGES = ("CREATE", "CONNECT", "TEMPORARY")


def apply_database_properties(conn, target, manifest):
    """Gives the restored database the grants, comment and settings of the backed-up one
    (recorded in the manifest, see _pg.database_properties). Grants to roles missing here and
    settings an ordinary user could not set are left out, and said so. Returns warnings."""
    props = manifest.get("database_properties") or {}
    db = sql.Identifier(target)
    warnings = []
    roles = dict(_pg.rows(conn, "SELECT rolname, rolsuper FROM pg_roles"))
    user_settings = {r[0] for r in _pg.rows(conn, "SELECT name FROM pg_settings WHERE context = 'user'")}
    with conn.cursor() as cur:
        if props.get("acl") is not None:
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
            for item in props["acl"]:
                if item["privilege"] not in _PRIVILEGES:
                    warnings.append(
                        "database grant %(privilege)s to %(grantee)s left out: not a database privilege" % item
                    )
                    continue
                if item["grantee"] and item["grantee"] not in roles:
                    warnings.append("database grant %(privilege)s to %(grantee)s left out: no such role here" % item)
                    continue
                grantee = sql.Identifier(item["grantee"]) if item["grantee"] else sql.SQL("PUBLIC")
                option = sql.SQL(" WITH GRANT OPTION" if item["grantable"] else "")
                cur.execute(
                    sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(sql.SQL(item["privilege"]), db, grantee, option)
                )
        if props.get("comment") is not None:
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(db), (props["comment"],))
        owners = [(None, props.get("settings") or [])] + sorted((props.get("role_settings") or {}).items())
        for role, settings in owners:
            if role is not None and role not in roles:
                warnings.append("settings of role %s in this database left out: no such role here" % role)
                continue
            if role is not None and roles[role]:
                # A superuser's search_path in this database is a way into its sessions.
                warnings.append(
                    "settings of role %s in this database left out: it is a superuser here; set them by hand: %s"
                    % (role, ", ".join(settings))
                )
                continue
            head = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), db) if role else None
            for setting in settings:
                name, _eq, value = setting.partition("=")
                if name not in user_settings:
                    warnings.append("database setting %s left out: only settings any user may set are restored" % name)
                    continue
                values = sql.SQL(", ").join(sql.Literal(v) for v in _setting_values(name, value))
                prefix = head or sql.SQL("ALTER DATABASE {}").format(db)
                cur.execute(prefix + sql.SQL(" SET {} TO {}").format(sql.Identifier(name), values))
    return warnings


# User-settable settings that take a list: stored as '"$user", public', given back element by element.
_LIST_SETTINGS = ("search_path", "datestyle", "temp_tablespaces", "local_preload_libraries")
_LIST_ITEM = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^,]*?))\s*(?:,|$)')


def _setting_values(name, value):
    if name.lower() not in _LIST_SETTINGS:
        return [value]
    items = []
    for m in _LIST_ITEM.finditer(value):
        if m.end() == m.start():
            break
        items.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
    return items


def deferred(entry, skip_oids, skip_comments):
    """A foreign key that add_references adds later, or its comment (which names it)."""
    if entry["kind"] == "FK CONSTRAINT":
        return entry["oid"] in skip_oids
    return entry["kind"] == "COMMENT" and any(entry["rest"].startswith(tag + " ") for tag in skip_comments)


# What pg_get_constraintdef() writes for a foreign key, once quoted identifiers are set aside.
_FK_DEFINITION_RE = re.compile(r"^FOREIGN KEY \([\w ,]+\) REFERENCES [\w .]+\([\w ,]+\)[\w ()\s,]*$")


def reference_statement(ref):
    """The ALTER TABLE that re-creates a foreign key recorded in a manifest. The manifest is
    data, not code: the table and constraint names are re-quoted, and the definition must be a
    plain FOREIGN KEY clause."""
    definition = ref.get("definition") or ""
    if not _FK_DEFINITION_RE.match(_pg.without_quoted_identifiers(definition)):
        raise RestoreError(
            "the manifest's foreign key %r on %s is not a plain FOREIGN KEY clause (%r); refusing to run it"
            % (ref.get("name"), ref.get("table"), definition[:200]),
            kind="integrity",
        )
    table = sql.Identifier(*_pg.split_qualified(ref["table"]))
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(table, sql.Identifier(ref["name"])) + sql.SQL(definition)


def add_references(conn, manifest):
    """Adds (and so validates) the foreign keys that point at hypertables, once the hypertables'
    rows are visible again (after timescaledb_post_restore())."""
    for ref in manifest.get("hypertable_references") or []:
        statement = reference_statement(ref)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                if ref.get("comment") is not None:
                    cur.execute(
                        sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS %s").format(
                            sql.Identifier(ref["name"]), sql.Identifier(*_pg.split_qualified(ref["table"]))
                        ),
                        (ref["comment"],),
                    )
        except _pg.psycopg2.Error as e:
            if _errors.is_insufficient_privilege(e):
                raise  # the job says what to grant (_privileges)
            raise RestoreError(
                "the foreign key %s on %s (%s) could not be re-created after the restore: %s"
                % (_pg.qualify_part(ref["name"]), ref["table"], ref["definition"], ("%s" % e).strip().splitlines()[0]),
                kind="integrity",
            ) from None


# Every relation ANALYZE (database-wide) would process, parents of inheritance trees (hypertables)
# last, as it does: their inherited statistics sample the children.
_ANALYZE_TARGETS = """
SELECT n.nspname, c.relname, c.relhassubclass
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY c.relhassubclass, c.relpages DESC, 1, 2
"""


def analyze(params, target, jobs=1):
    """ANALYZE of database ``target`` on ``jobs`` connections at once: the statistics a
    database-wide ANALYZE gathers (every table, chunk and materialized view; the hypertables'
    inherited statistics after their chunks), in a fraction of its time on a host with cores to
    spare. Run it in restore mode (before timescaledb_post_restore()): there a hypertable's
    ANALYZE samples its chunks once instead of analyzing each of them again. Raises the first
    error any connection met."""
    conn = _pg.connect(params, target)
    try:
        rels = _pg.rows(conn, _ANALYZE_TARGETS)
    finally:
        conn.close()
    jobs = max(1, min(int(jobs or 1), len(rels) or 1))
    if jobs == 1:
        conn = _pg.connect(params, target)
        try:
            with conn.cursor() as cur:
                cur.execute("ANALYZE")
        finally:
            conn.close()
        return
    leaves = [r for r in rels if not r[2]]
    parents = [r for r in rels if r[2]]
    _analyze_in_parallel(params, target, leaves, jobs)
    _analyze_in_parallel(params, target, parents, jobs)


def _analyze_in_parallel(params, target, rels, jobs):
    queue = list(rels)
    lock = threading.Lock()
    errors = []

    def worker():
        conn = _pg.connect(params, target)
        try:
            with conn.cursor() as cur:
                while not errors:
                    with lock:
                        if not queue:
                            return
                        schema, name, _parent = queue.pop(0)
                    cur.execute(_pg.sql.SQL("ANALYZE {}").format(_pg.sql.Identifier(schema, name)))
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, name="analyze-%d" % i) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
