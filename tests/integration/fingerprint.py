"""A deterministic fingerprint of one database, to compare a source with its restored copy.

Both databases must be on the same cluster: roles are compared by name, and no OID appears
except large objects' (pg_dump keeps those). Every object is keyed by its quoted, qualified
name (format('%I.%I', ...)), so "c"."a.b" and "c.a"."b" stay apart. Plain module: psycopg2
only, read-only (it creates nothing in the database).

    fp = fingerprint(conn)          # a JSON-serialisable dict
    diff(fp_source, fp_restored)    # [] when equal, else lines such as "tables.public.x.rows: 10 != 9"
"""

import json

# Fixed output formats, so that text forms of values do not depend on the connection. With
# only pg_catalog on the search_path, every regclass, type name and expression prints
# schema-qualified, the same way on both sides. SET LOCAL: the caller's session is left as it was.
SESSION = """
SET LOCAL TimeZone = 'UTC';
SET LOCAL DateStyle = 'ISO, YMD';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL extra_float_digits = 1;
SET LOCAL bytea_output = 'hex';
SET LOCAL standard_conforming_strings = on;
SET LOCAL search_path = pg_catalog;
"""

# Not the user's: system schemas and TimescaleDB's own (its chunks are fingerprinted under
# "timescaledb"), and any schema an extension created.
USER_NAMESPACES = r"""
SELECT n.oid FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND n.nspname NOT LIKE '\_timescaledb%' AND n.nspname NOT LIKE 'timescaledb\_%'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
"""


def fingerprint(conn):
    """Everything a dump/restore should keep, as a dict of sections keyed by qualified names.
    conn: an open psycopg2 connection in autocommit mode (the fingerprint opens and rolls back
    its own transaction: one read-only snapshot, so a busy database still gives one state)."""
    with conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            cur.execute(SESSION)
            fp = _collect(cur)
        finally:
            cur.execute("ROLLBACK")
    # Round-trip through JSON: what is compared is exactly what a test would store.
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def _collect(cur):
    scope = _scope(cur)
    return {
        "database": _database(cur),
        "schemas": _schemas(cur, scope),
        "extensions": _extensions(cur),
        "relations": _relations(cur, scope),
        "columns": _columns(cur, scope),
        "constraints": _constraints(cur, scope),
        "triggers": _triggers(cur, scope),
        "rules": _rules(cur, scope),
        "policies": _policies(cur, scope),
        "functions": _functions(cur, scope),
        "types": _types(cur, scope),
        "collations": _collations(cur, scope),
        "statistics": _statistics(cur, scope),
        "sequences": _sequences(cur, scope),
        "default_privileges": _default_privileges(cur),
        "large_objects": _large_objects(cur),
        "foreign": _foreign(cur, scope),
        "publications": _publications(cur),
        "event_triggers": _event_triggers(cur),
        "tables": _tables(cur, scope),
        "timescaledb": _timescaledb(cur, scope) if scope["tsdb"] else None,
    }


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _rows(cur, sql):
    """Runs sql (no parameters, so '%' is literal) and returns a list of dicts."""
    cur.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _keyed(rows, key="name"):
    """{row[key]: rest of the row}."""
    return {r.pop(key): r for r in rows}


def _grouped(rows, group, key="name"):
    """{row[group]: {row[key]: rest of the row}}."""
    out = {}
    for r in rows:
        out.setdefault(r.pop(group), {})[r.pop(key)] = r
    return out


def _oids(values):
    """A SQL oid[] literal; built from integers only, so it is safe to inline."""
    return "'{%s}'::oid[]" % ",".join(str(int(v)) for v in values)


def _acl(col, kind, owner):
    """SQL: an ACL as a sorted text array. NULL (the built-in defaults) is expanded with
    acldefault(), so that explicitly granted defaults compare equal to never granted."""
    expanded = "coalesce(%s, acldefault('%s', %s))" % (col, kind, owner)
    return _sorted(expanded)


def _sorted(col):
    """SQL: any array (ACL without defaults, options, names) as a sorted text array, NULL when empty."""
    return '(SELECT array_agg(x::text ORDER BY x::text COLLATE "C") FROM unnest(%s) x)' % col


def _not_extension_member(catalog, oid_col):
    """SQL: the object was not created by an extension (e.g. TimescaleDB's functions in public)."""
    return (
        "NOT EXISTS (SELECT FROM pg_depend xd WHERE xd.classid = '%s'::regclass AND xd.objid = %s AND xd.deptype = 'e')"
        % (catalog, oid_col)
    )


def _scope(cur):
    """The user namespaces, TimescaleDB's chunk tables (kept out of the user's relations) and
    whether TimescaleDB is installed."""
    ns = [r["oid"] for r in _rows(cur, USER_NAMESPACES)]
    tsdb = bool(_rows(cur, "SELECT FROM pg_extension WHERE extname = 'timescaledb'"))
    chunks = []
    if tsdb:
        chunks = [
            r["oid"]
            for r in _rows(
                cur,
                "SELECT to_regclass(format('%I.%I', schema_name, table_name))::oid AS oid "
                "FROM _timescaledb_catalog.chunk WHERE NOT dropped",
            )
            if r["oid"] is not None
        ]
    return {"ns": _oids(ns), "chunks": _oids(chunks), "tsdb": tsdb}


def _user_class(scope, alias="c"):
    """SQL: the pg_class row `alias` is in a user namespace, is no chunk, not an extension's."""
    return "{a}.relnamespace = ANY({ns}) AND {a}.oid <> ALL({chunks}) AND {member}".format(
        a=alias, ns=scope["ns"], chunks=scope["chunks"], member=_not_extension_member("pg_class", alias + ".oid")
    )


# ---------------------------------------------------------------------------------------------
# Database, schemas, extensions
# ---------------------------------------------------------------------------------------------


def _database(cur):
    """The database's own properties. Its name is left out: a restored copy has another one."""
    props = _rows(
        cur,
        """
        SELECT to_jsonb(d) - ARRAY['oid', 'datname', 'datdba', 'datacl', 'dattablespace', 'datfrozenxid',
                                   'datminmxid', 'datlastsysoid', 'datcollversion'] AS props,
               pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding_name,
               (SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace) AS tablespace,
               {acl} AS acl, shobj_description(d.oid, 'pg_database') AS comment
        FROM pg_database d WHERE d.datname = current_database()
        """.format(acl=_acl("d.datacl", "d", "d.datdba")),
    )[0]
    settings = _rows(
        cur,
        """
        SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '') AS role, {cfg} AS config
        FROM pg_db_role_setting s
        WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
        """.format(cfg=_sorted("s.setconfig")),
    )
    props["settings"] = next((r["config"] for r in settings if r["role"] == ""), None)
    props["role_settings"] = {r["role"]: r["config"] for r in settings if r["role"]}
    return props


def _schemas(cur, scope):
    return _keyed(
        _rows(
            cur,
            """
            SELECT quote_ident(n.nspname) AS name, pg_get_userbyid(n.nspowner) AS owner, {acl} AS acl,
                   obj_description(n.oid, 'pg_namespace') AS comment
            FROM pg_namespace n WHERE n.oid = ANY({ns})
            """.format(acl=_acl("n.nspacl", "n", "n.nspowner"), ns=scope["ns"]),
        )
    )


def _extensions(cur):
    return _keyed(
        _rows(
            cur,
            "SELECT e.extname AS name, e.extversion AS version, quote_ident(n.nspname) AS schema "
            "FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace",
        )
    )


# ---------------------------------------------------------------------------------------------
# Relations, columns, constraints, triggers, rules, policies
# ---------------------------------------------------------------------------------------------

RELATIONS = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind AS kind,
       pg_get_userbyid(c.relowner) AS owner, {acl} AS acl, c.relpersistence AS persistence,
       c.relrowsecurity AS row_security, c.relforcerowsecurity AS force_row_security,
       c.relreplident AS replica_identity, {options} AS options, am.amname AS access_method,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       pg_get_expr(c.relpartbound, c.oid) AS partition_bound,
       (SELECT array_agg(format('%I.%I', pn.nspname, p.relname) ORDER BY i.inhseqno)
        FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE i.inhrelid = c.oid) AS parents,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS view_definition,
       CASE WHEN c.relkind = 'm' THEN c.relispopulated END AS populated,
       CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END AS index_definition,
       x.indisclustered AS clustered, x.indisreplident AS replica_identity_index,
       obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_index x ON x.indexrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I') AND {user}
  AND coalesce(x.indrelid, 0) <> ALL({chunks})
"""


def _relations(cur, scope):
    """Tables, partitioned tables, views, matviews, sequences, foreign tables and indexes."""
    sql = RELATIONS.format(
        acl=_acl("c.relacl", "r", "c.relowner"),
        options=_sorted("c.reloptions"),
        user=_user_class(scope),
        chunks=scope["chunks"],
    )
    return _keyed(_rows(cur, sql))


COLUMNS = r"""
SELECT format('%I.%I', n.nspname, c.relname) AS rel, a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity AS identity, a.attgenerated AS generated,
       (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
        JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) AS collation,
       {acl} AS acl, col_description(c.oid, a.attnum) AS comment, a.attstattarget::int AS statistics,
       a.attstorage AS storage, a.attcompression AS compression,
       (SELECT array_agg(o ORDER BY o COLLATE "C") FROM unnest(a.attoptions) o
        WHERE o NOT LIKE 'pg\_attver=%') AS options,
       {fdw_options} AS fdw_options, a.attislocal AS local, a.attinhcount AS inherited_count
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {user}
ORDER BY c.oid, a.attnum
"""


def _columns(cur, scope):
    """Per relation, the list of columns in attnum order (the order is part of the fidelity).
    This server stamps every new column with an attoption pg_attver=<n> that differs per table
    and per creation, so that one option is left out."""
    sql = COLUMNS.format(
        acl=_sorted("a.attacl"),
        fdw_options=_sorted("a.attfdwoptions"),
        user=_user_class(scope),
    )
    out = {}
    for r in _rows(cur, sql):
        out.setdefault(r.pop("rel"), []).append(r)
    return out


def _constraints(cur, scope):
    """Table constraints of user relations (chunks' own are under timescaledb.chunks). `parent`
    names the constraint this one was cloned from (partitions, FKs into hypertable chunks).
    NO INHERIT only means something for CHECK (and NOT NULL) constraints; for a partition's
    primary key it flips to true when pg_dump recreates it with ALTER TABLE ONLY."""
    sql = """
        SELECT format('%I.%I', n.nspname, c.relname) AS rel, k.conname AS name, k.contype AS type,
               pg_get_constraintdef(k.oid) AS definition, k.convalidated AS validated,
               k.condeferrable AS deferrable, k.condeferred AS deferred, k.conislocal AS local,
               k.coninhcount AS inherited_count,
               CASE WHEN k.contype IN ('c', 'n') THEN k.connoinherit END AS no_inherit,
               (SELECT p.conname FROM pg_constraint p WHERE p.oid = k.conparentid) AS parent,
               obj_description(k.oid, 'pg_constraint') AS comment
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {user}
    """.format(user=_user_class(scope))
    return _grouped(_rows(cur, sql), "rel")


def _triggers(cur, scope):
    """User triggers (not the internal ones behind FKs); tgenabled is O/D/R/A."""
    sql = """
        SELECT format('%I.%I', n.nspname, c.relname) AS rel, t.tgname AS name,
               pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled,
               obj_description(t.oid, 'pg_trigger') AS comment
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {user}
    """.format(user=_user_class(scope))
    return _grouped(_rows(cur, sql), "rel")


def _rules(cur, scope):
    """Rules other than the _RETURN rule behind every view."""
    sql = """
        SELECT format('%I.%I', n.nspname, c.relname) AS rel, r.rulename AS name,
               pg_get_ruledef(r.oid) AS definition, r.ev_enabled AS enabled,
               obj_description(r.oid, 'pg_rewrite') AS comment
        FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE r.rulename <> '_RETURN' AND {user}
    """.format(user=_user_class(scope))
    return _grouped(_rows(cur, sql), "rel")


def _policies(cur, scope):
    sql = """
        SELECT format('%I.%I', n.nspname, c.relname) AS rel, p.polname AS name,
               p.polpermissive AS permissive, p.polcmd AS command,
               (SELECT array_agg(r ORDER BY r COLLATE "C") FROM
                  (SELECT CASE WHEN o = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(o)::text END AS r
                   FROM unnest(p.polroles) o) s) AS roles,
               pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
               obj_description(p.oid, 'pg_policy') AS comment
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {user}
    """.format(user=_user_class(scope))
    return _grouped(_rows(cur, sql), "rel")


# ---------------------------------------------------------------------------------------------
# Functions, types, collations, statistics, sequences
# ---------------------------------------------------------------------------------------------

FUNCTIONS = """
SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS name,
       p.prokind AS kind, CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END AS definition,
       pg_get_userbyid(p.proowner) AS owner, {acl} AS acl, obj_description(p.oid, 'pg_proc') AS comment,
       (SELECT jsonb_build_object('kind', g.aggkind, 'transfn', g.aggtransfn::regprocedure::text,
                                  'finalfn', g.aggfinalfn::regproc::text, 'combinefn', g.aggcombinefn::regproc::text,
                                  'transtype', format_type(g.aggtranstype, NULL), 'initval', g.agginitval,
                                  'sortop', g.aggsortop::regoperator::text)
        FROM pg_aggregate g WHERE g.aggfnoid = p.oid) AS aggregate
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.oid = ANY({ns}) AND {member}
  AND NOT EXISTS (SELECT FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass AND i.objid = p.oid AND i.deptype = 'i')
"""


def _functions(cur, scope):
    """Functions, procedures and aggregates, keyed by name(identity arguments): overloads differ.
    Not the constructors a range type makes for itself (an internal dependency on the type)."""
    sql = FUNCTIONS.format(
        acl=_acl("p.proacl", "f", "p.proowner"), ns=scope["ns"], member=_not_extension_member("pg_proc", "p.oid")
    )
    return _keyed(_rows(cur, sql))


TYPES = """
SELECT format('%I.%I', n.nspname, t.typname) AS name, t.typtype AS kind, pg_get_userbyid(t.typowner) AS owner,
       {acl} AS acl, obj_description(t.oid, 'pg_type') AS comment,
       (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
        FROM pg_enum e WHERE e.enumtypid = t.oid) AS labels,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
       t.typnotnull AS not_null, t.typdefault AS default,
       (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
        JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = t.typcollation) AS collation,
       (SELECT jsonb_object_agg(k.conname, jsonb_build_array(pg_get_constraintdef(k.oid), k.convalidated))
        FROM pg_constraint k WHERE k.contypid = t.oid) AS constraints,
       (SELECT jsonb_agg(jsonb_build_array(a.attname, format_type(a.atttypid, a.atttypmod), a.attcollation <> 0,
                                           col_description(a.attrelid, a.attnum)) ORDER BY a.attnum)
        FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) AS attributes,
       (SELECT jsonb_build_object('subtype', format_type(r.rngsubtype, NULL),
                                  'multirange', format_type(r.rngmultitypid, NULL),
                                  'subdiff', r.rngsubdiff::regproc::text, 'canonical', r.rngcanonical::regproc::text)
        FROM pg_range r WHERE r.rngtypid = t.oid) AS range
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.oid = ANY({ns}) AND {member}
  AND t.typtype IN ('b', 'c', 'd', 'e', 'r')
  AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  AND NOT EXISTS (SELECT FROM pg_type el WHERE el.typarray = t.oid)
"""


def _types(cur, scope):
    """Enums (labels in sort order), domains, composites, ranges; not the row and array types
    every table and type gets implicitly."""
    sql = TYPES.format(
        acl=_acl("t.typacl", "T", "t.typowner"), ns=scope["ns"], member=_not_extension_member("pg_type", "t.oid")
    )
    return _keyed(_rows(cur, sql))


def _collations(cur, scope):
    """User collations; to_jsonb keeps this independent of the server version's column names."""
    sql = """
        SELECT format('%I.%I', n.nspname, co.collname) AS name, pg_get_userbyid(co.collowner) AS owner,
               to_jsonb(co) - ARRAY['oid', 'collname', 'collnamespace', 'collowner', 'collversion'] AS props,
               obj_description(co.oid, 'pg_collation') AS comment
        FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace
        WHERE n.oid = ANY({ns}) AND {member}
    """.format(ns=scope["ns"], member=_not_extension_member("pg_collation", "co.oid"))
    return _keyed(_rows(cur, sql))


def _statistics(cur, scope):
    sql = """
        SELECT format('%I.%I', n.nspname, s.stxname) AS name, pg_get_statisticsobjdef(s.oid) AS definition,
               pg_get_userbyid(s.stxowner) AS owner, s.stxstattarget::int AS target,
               obj_description(s.oid, 'pg_statistic_ext') AS comment
        FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
        WHERE n.oid = ANY({ns}) AND s.stxrelid <> ALL({chunks})
    """.format(ns=scope["ns"], chunks=scope["chunks"])
    return _keyed(_rows(cur, sql))


SEQUENCES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, format_type(s.seqtypid, NULL) AS type,
       s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max,
       s.seqcache AS cache, s.seqcycle AS cycle,
       (SELECT format('%I.%I.%I', tn.nspname, tc.relname, a.attname) || ' (' || d.deptype::text || ')'
        FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i')) AS owned_by
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {user}
"""


def _sequences(cur, scope):
    """Definition, owning column (a = OWNED BY, i = identity) and current state of each sequence."""
    seqs = _keyed(_rows(cur, SEQUENCES.format(user=_user_class(scope))))
    for name, facts in seqs.items():
        # name is format('%I.%I') output, a safe identifier
        state = _rows(cur, "SELECT last_value, is_called FROM %s" % name)[0]
        facts.update(state)
    return seqs


# ---------------------------------------------------------------------------------------------
# Privileges, large objects, foreign data, publications, event triggers
# ---------------------------------------------------------------------------------------------


def _default_privileges(cur):
    """ALTER DEFAULT PRIVILEGES entries: 'role in schema|* on objtype' -> ACL (not expanded:
    these ACLs are deltas, NULL has no meaning here)."""
    sql = """
        SELECT format('%I in %s on %s', pg_get_userbyid(d.defaclrole), coalesce(quote_ident(n.nspname), '*'),
                      d.defaclobjtype) AS name, {acl} AS acl
        FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
    """.format(acl=_sorted("d.defaclacl"))
    return {r["name"]: r["acl"] for r in _rows(cur, sql)}


def _large_objects(cur):
    """Keyed by OID: pg_dump restores large objects with their OIDs. lo_get reads one object
    whole; fine for test-sized objects."""
    sql = """
        SELECT m.oid::text AS name, pg_get_userbyid(m.lomowner) AS owner, {acl} AS acl,
               obj_description(m.oid, 'pg_largeobject') AS comment, length(b) AS size, md5(b) AS md5
        FROM pg_largeobject_metadata m, LATERAL lo_get(m.oid) b
    """.format(acl=_acl("m.lomacl", "L", "m.lomowner"))
    return _keyed(_rows(cur, sql))


def _foreign(cur, scope):
    """Foreign-data wrappers, servers, user mappings and foreign tables' server and options."""
    wrappers = """
        SELECT w.fdwname AS name, pg_get_userbyid(w.fdwowner) AS owner, w.fdwhandler::regproc::text AS handler,
               w.fdwvalidator::regproc::text AS validator, {options} AS options, {acl} AS acl,
               obj_description(w.oid, 'pg_foreign_data_wrapper') AS comment
        FROM pg_foreign_data_wrapper w WHERE {member}
    """.format(
        options=_sorted("w.fdwoptions"),
        acl=_acl("w.fdwacl", "F", "w.fdwowner"),
        member=_not_extension_member("pg_foreign_data_wrapper", "w.oid"),
    )
    servers = """
        SELECT s.srvname AS name, w.fdwname AS wrapper, pg_get_userbyid(s.srvowner) AS owner, s.srvtype AS type,
               s.srvversion AS version, {options} AS options, {acl} AS acl,
               obj_description(s.oid, 'pg_foreign_server') AS comment
        FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE {member}
    """.format(
        options=_sorted("s.srvoptions"),
        acl=_acl("s.srvacl", "S", "s.srvowner"),
        member=_not_extension_member("pg_foreign_server", "s.oid"),
    )
    mappings = "SELECT format('%I for %I', srvname, usename) AS name, {o} AS options FROM pg_user_mappings".format(
        o=_sorted("umoptions")
    )
    tables = """
        SELECT format('%I.%I', n.nspname, c.relname) AS name, s.srvname AS server, {options} AS options
        FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_foreign_server s ON s.oid = f.ftserver WHERE {user}
    """.format(options=_sorted("f.ftoptions"), user=_user_class(scope))
    return {
        "wrappers": _keyed(_rows(cur, wrappers)),
        "servers": _keyed(_rows(cur, servers)),
        "user_mappings": {r["name"]: r["options"] for r in _rows(cur, mappings)},
        "tables": _keyed(_rows(cur, tables)),
    }


def _publications(cur):
    sql = """
        SELECT p.pubname AS name, pg_get_userbyid(p.pubowner) AS owner, p.puballtables AS all_tables,
               p.pubinsert AS insert, p.pubupdate AS update, p.pubdelete AS delete, p.pubtruncate AS truncate,
               p.pubviaroot AS via_root, obj_description(p.oid, 'pg_publication') AS comment,
               (SELECT array_agg(x ORDER BY x COLLATE "C") FROM
                  (SELECT format('%I.%I', t.schemaname, t.tablename) || coalesce(' ' || t.attnames::text, '')
                          || coalesce(' WHERE ' || t.rowfilter, '') AS x
                   FROM pg_publication_tables t WHERE t.pubname = p.pubname) s) AS tables
        FROM pg_publication p
    """
    return _keyed(_rows(cur, sql))


def _event_triggers(cur):
    sql = """
        SELECT e.evtname AS name, e.evtevent AS event, pg_get_userbyid(e.evtowner) AS owner,
               e.evtfoid::regproc::text AS function, e.evtenabled AS enabled, {tags} AS tags,
               obj_description(e.oid, 'pg_event_trigger') AS comment
        FROM pg_event_trigger e WHERE {member}
    """.format(tags=_sorted("e.evttags"), member=_not_extension_member("pg_event_trigger", "e.oid"))
    return _keyed(_rows(cur, sql))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _digest(cur, rel, only=True):
    """Row count and an order-independent digest of a relation's rows: md5 over the sorted md5s
    of each row's text form. Hashing rows one by one keeps memory near one row (an 8 MB value
    is fine), and rows containing newlines cannot run together. ROW(t.*) rather than t: a
    column named t would shadow the whole-row reference."""
    cur.execute(
        "SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), '')) "
        "FROM (SELECT md5(ROW(t.*)::text) AS h FROM %s%s t) s" % ("ONLY " if only else "", rel)
    )
    rows, digest = cur.fetchone()
    return {"rows": rows, "digest": digest}


def _hypertable_names(cur, scope):
    if not scope["tsdb"]:
        return set()
    rows = _rows(cur, "SELECT format('%I.%I', schema_name, table_name) AS name FROM _timescaledb_catalog.hypertable")
    return {r["name"] for r in rows}


def _tables(cur, scope):
    """Data of every table with rows of its own: plain and unlogged tables, leaf partitions,
    inheritance parents (ONLY), populated matviews, and each hypertable as a whole (ONLY would
    see nothing: rows live in the chunks) plus its root's own rows, which should be none."""
    hypertables = _hypertable_names(cur, scope)
    rels = _rows(
        cur,
        """
        SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind AS kind, c.relispopulated AS populated
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm') AND {user}
        """.format(user=_user_class(scope)),
    )
    out = {}
    for r in rels:
        name = r["name"]
        if name in hypertables:
            out[name] = dict(_digest(cur, name, only=False), root_rows=_digest(cur, name)["rows"])
        elif r["kind"] == "r" or r["populated"]:
            out[name] = _digest(cur, name)
    return out


# ---------------------------------------------------------------------------------------------
# TimescaleDB
# ---------------------------------------------------------------------------------------------

HYPERTABLES = """
SELECT format('%I.%I', i.hypertable_schema, i.hypertable_name) AS name, i.owner::text AS owner,
       i.num_dimensions, i.num_chunks, i.compression_enabled, i.tablespaces::text[] AS tablespaces,
       format('%I', h.associated_schema_name) AS chunk_schema, h.associated_table_prefix AS chunk_prefix,
       h.chunk_target_size, h.status
FROM timescaledb_information.hypertables i
JOIN _timescaledb_catalog.hypertable h ON h.schema_name = i.hypertable_schema AND h.table_name = i.hypertable_name
"""

DIMENSIONS = """
SELECT format('%I.%I', hypertable_schema, hypertable_name) AS ht, dimension_number, column_name::text,
       column_type::text, dimension_type, time_interval::text, integer_interval, integer_now_func::text,
       num_partitions
FROM timescaledb_information.dimensions ORDER BY 1, dimension_number
"""

CHUNKS = """
SELECT format('%I.%I', i.hypertable_schema, i.hypertable_name) AS ht,
       format('%I.%I', i.chunk_schema, i.chunk_name) AS chunk,
       i.range_start::text, i.range_end::text, i.range_start_integer, i.range_end_integer,
       i.is_compressed, i.chunk_creation_time::text AS created,
       (SELECT array_agg(format('%s [%s, %s)', d.column_name, s.range_start, s.range_end) ORDER BY d.id)
        FROM _timescaledb_catalog.chunk_constraint cc
        JOIN _timescaledb_catalog.dimension_slice s ON s.id = cc.dimension_slice_id
        JOIN _timescaledb_catalog.dimension d ON d.id = s.dimension_id
        WHERE cc.chunk_id = k.id) AS slices,
       pg_get_userbyid(c.relowner) AS owner, {acl} AS acl,
       (SELECT jsonb_object_agg(x.conname, pg_get_constraintdef(x.oid)) FROM pg_constraint x WHERE x.conrelid = c.oid)
         AS constraints,
       (SELECT array_agg(d ORDER BY d COLLATE "C") FROM (SELECT pg_get_indexdef(x.indexrelid) AS d FROM pg_index x
         WHERE x.indrelid = c.oid) s) AS indexes,
       (SELECT jsonb_object_agg(t.tgname, t.tgenabled) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
         AS triggers
FROM timescaledb_information.chunks i
JOIN _timescaledb_catalog.chunk k ON k.schema_name = i.chunk_schema AND k.table_name = i.chunk_name
JOIN pg_class c ON c.oid = format('%I.%I', i.chunk_schema, i.chunk_name)::regclass
ORDER BY 1, 2
"""


def _timescaledb(cur, scope):
    """Hypertables, their dimensions, and per hypertable its chunks (sorted by name) with their
    ranges, dimension slices, owner, ACL, constraints, indexes, triggers, row count and digest."""
    dims, chunks = {}, {}
    for r in _rows(cur, DIMENSIONS):
        dims.setdefault(r.pop("ht"), []).append(r)
    for r in _rows(cur, CHUNKS.format(acl=_acl("c.relacl", "r", "c.relowner"))):
        r.update(_digest(cur, r["chunk"]))
        chunks.setdefault(r.pop("ht"), []).append(r)
    return {"hypertables": _keyed(_rows(cur, HYPERTABLES)), "dimensions": dims, "chunks": chunks}


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------


def diff(a, b, limit=40):
    """Human-readable differences between two fingerprints, [] when equal. At most `limit`
    lines, then one line saying that more were left out."""
    out = []
    _walk(a, b, "", out, limit + 1)
    if len(out) > limit:
        out = out[:limit] + ["... more differences not shown"]
    return out


def _short(value, width=160):
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _walk(a, b, path, out, limit):
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = "%s.%s" % (path, key) if path else str(key)
            if key not in b:
                out.append("%s: only in a" % sub)
            elif key not in a:
                out.append("%s: only in b" % sub)
            else:
                _walk(a[key], b[key], sub, out, limit)
            if len(out) >= limit:
                return
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, "%s[%s]" % (path, _label(x, i)), out, limit)
    elif isinstance(a, list) and isinstance(b, list):
        _list_diff(a, b, path, out)
    elif a != b:
        out.append("%s: %s != %s" % (path, _short(a), _short(b)))


def _label(item, index):
    """How a list item is named in a path: chunks and columns by name, anything else by index."""
    if isinstance(item, dict):
        return item.get("chunk") or item.get("name") or index
    return index


def _list_diff(a, b, path, out):
    """Lists of different lengths: say which items are only on one side."""
    sa = {json.dumps(x, sort_keys=True) for x in a}
    sb = {json.dumps(x, sort_keys=True) for x in b}
    out.append("%s: %d items != %d items" % (path, len(a), len(b)))
    for side, items, other in (("a", a, sb), ("b", b, sa)):
        for i, x in enumerate(items):
            if json.dumps(x, sort_keys=True) not in other:
                shown = _short(x) if _label(x, None) is None else _label(x, i)
                out.append("%s: only in %s: %s" % (path, side, shown))
