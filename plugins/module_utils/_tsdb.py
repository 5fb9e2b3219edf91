# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a database holds, in PostgreSQL's and TimescaleDB's catalogs: user tables and their row
counts, hypertables with their chunks and time ranges, and the foreign keys that point at
hypertables. Run inside a dump's snapshot these facts are the manifest; run on a restored
database they are what verify and restore compare. Sessions and tools are _pg's.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pg

# Schemas that belong to PostgreSQL or TimescaleDB, not to the user's data.
SYSTEM_SCHEMAS = (
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "_timescaledb_catalog",
    "_timescaledb_config",
    "_timescaledb_internal",
    "_timescaledb_cache",
    "_timescaledb_functions",
    "_timescaledb_debug",
    "timescaledb_information",
    "timescaledb_experimental",
    "toolkit_experimental",
)


# --- what a database holds ---------------------------------------------------------------


def table_facts(conn):
    """Per-table row counts and per-hypertable chunk count and time range.

    Run inside the snapshot a dump reads, the numbers describe exactly what the dump holds;
    run on a restored database, they are what verify and restore compare.
    """
    system = tuple(SYSTEM_SCHEMAS)
    tables = _pg.rows(
        conn,
        "SELECT n.nspname, c.relname, c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND n.nspname NOT IN %s AND n.nspname NOT LIKE 'pg\\_temp%%' AND n.nspname NOT LIKE 'pg\\_toast%%' "
        "ORDER BY 1, 2",
        (system,),
    )
    has_tsdb = bool(_pg.scalar(conn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"))
    hyper = {}
    if has_tsdb:
        for schema, name, col, ctype in _pg.rows(
            conn,
            "SELECT h.hypertable_schema, h.hypertable_name, d.column_name, d.column_type::text "
            "FROM timescaledb_information.hypertables h "
            "LEFT JOIN timescaledb_information.dimensions d ON d.hypertable_schema = h.hypertable_schema "
            "AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1 ORDER BY 1, 2",
        ):
            hyper[_pg.qualified(schema, name)] = {"time_column": col, "time_type": ctype}
    result_tables = {}
    result_hyper = {}
    for schema, name, oid in tables:
        qname = _pg.qualified(schema, name)
        ident = _pg.sql.Identifier(schema, name)
        count = int(_pg.scalar(conn, _pg.sql.SQL("SELECT count(*) FROM {}").format(ident)))
        # The oid matches the table's entry in the archive's table of contents.
        result_tables[qname] = {"rows": count, "oid": oid}
        if qname in hyper:
            info = hyper[qname]
            col = _pg.sql.Identifier(info["time_column"])
            lo, hi = _pg.rows(conn, _pg.sql.SQL("SELECT min({0})::text, max({0})::text FROM {1}").format(col, ident))[0]
            chunks = int(_pg.scalar(conn, "SELECT count(*) FROM show_chunks(%s::regclass)", (oid,)))
            result_hyper[qname] = {
                "rows": count,
                "chunks": chunks,
                "time_column": info["time_column"],
                "time_type": info["time_type"],
                "min_time": lo,
                "max_time": hi,
            }
    references = hypertable_references(conn) if has_tsdb else []
    return {"tables": result_tables, "hypertables": result_hyper, "hypertable_references": references}


def hypertable_references(conn, hypertable_oid=None):
    """Foreign keys that point at a hypertable (TimescaleDB 2.16+), declared on the referencing
    table (the per-chunk copies TimescaleDB makes have a parent and are left out, as pg_dump
    does). Restore leaves them out and adds them after timescaledb_post_restore() (_restore);
    retention cannot drop chunks such a key points at (_history)."""
    query = (
        "SELECT c.oid::int8, n.nspname, r.relname, c.conname, fn.nspname, f.relname, pg_get_constraintdef(c.oid), "
        "obj_description(c.oid, 'pg_constraint') "
        "FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace "
        "JOIN pg_class f ON f.oid = c.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace "
        "JOIN _timescaledb_catalog.hypertable h ON h.schema_name = fn.nspname AND h.table_name = f.relname "
        "WHERE c.contype = 'f' AND c.conparentid = 0 AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch "
        "WHERE ch.schema_name = n.nspname AND ch.table_name = r.relname)"
    )
    args = None
    if hypertable_oid is not None:
        query += " AND c.confrelid = %s"
        args = (hypertable_oid,)
    # With only pg_catalog on the path, pg_get_constraintdef() qualifies every table it names:
    # the definition then means the same under any search_path at restore time.
    saved = _pg.scalar(conn, "SELECT current_setting('search_path')")
    _pg.scalar(conn, "SELECT set_config('search_path', 'pg_catalog', false)")
    try:
        found = _pg.rows(conn, query + " ORDER BY 2, 3, 4", args)
    finally:
        _pg.scalar(conn, "SELECT set_config('search_path', %s, false)", (saved,))
    return [
        {
            "oid": oid,
            "table": _pg.qualified(schema, table),
            "name": name,
            "references": _pg.qualified(fschema, ftable),
            "definition": definition,
            "comment": comment,
            # How pg_restore --list names the key's comment: it is left out with the key.
            "comment_tag": "%s CONSTRAINT %s ON %s" % (schema, _pg.qualify_part(name), _pg.qualify_part(table)),
        }
        for oid, schema, table, name, fschema, ftable, definition, comment in found
    ]
