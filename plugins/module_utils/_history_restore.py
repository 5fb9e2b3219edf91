# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a time range of a hypertable from the history archive, into the live database or
another one, without duplicating rows and with every object checked before use.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _pg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import (
    _Stage,
    _Work,
    require_pyarrow,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    HistoryError,
    _iso,
    history_folder,
    month_folder,
    qualified,
    split_table_name,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_manifest import (
    _download_checked,
    _object_ref,
    list_ranges,
    read_manifest_blob,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _col_list,
    _ident,
    _missing_query,
    _pg_type,
    _range_where,
    abort,
    resolve_columns,
    sql,
    use_connection,
)

# ---------------------------------------------------------------------------------------------
# Restore


def restore_range(
    params,
    database,
    store,
    hypertable,
    start,
    end,
    source_database=None,
    target_table=None,
    version=None,
    create_table=False,
    check_mode=False,
    work_dir=None,
    connection=None,
):
    """Loads the archived rows of hypertable with start <= time < end into database (the live
    one or another), skipping rows already present (compared as whole rows, with their
    multiplicity), and verifies that every archived row in the range is then present. Each
    object is checked (sha256, rows and content hash against its manifest) before it is used."""
    require_pyarrow()
    mf.validate_database_name(database)
    source_database = source_database or database
    mf.validate_database_name(source_database)
    start, end = _azure.parse_timestamp(start), _azure.parse_timestamp(end)
    if end <= start:
        raise HistoryError("end (%s) must be after start (%s)" % (_iso(end), _iso(start)))
    name = qualified(*split_table_name(hypertable))
    target = qualified(*split_table_name(target_table or name))
    folder = history_folder(store.prefix, source_database, name)
    result = {
        "changed": False,
        "hypertable": name,
        "target_table": target,
        "source_database": source_database,
        "database": database,
        "start": _iso(start),
        "end": _iso(end),
        "ranges": [],
        "rows_archived": 0,
        "rows_inserted": 0,
        "rows_present": 0,
        "table_created": False,
        "warnings": [],
    }
    store.ensure_container(create=False)
    # Months that can hold a range overlapping [start, end): ranges start at most one month-ish
    # before `start` for usual chunk intervals; list from a month earlier to be safe.
    entries = {}
    month = datetime.datetime(start.year, start.month, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(days=1)
    month = month.replace(day=1)
    while month < end:
        entries.update(list_ranges(store, "%s/%04d/%02d/" % (folder, month.year, month.month)))
        month = (month + datetime.timedelta(days=32)).replace(day=1)
    selected = []
    for label, entry in sorted(entries.items(), key=lambda kv: kv[1]["start"]):
        if entry["end"] <= start or entry["start"] >= end or not entry["manifests"]:
            continue
        manifests = [read_manifest_blob(store, entry["manifests"][v]["name"]) for v in sorted(entry["manifests"])]
        if version is not None:
            chosen = [m for m in manifests if m["version"] == int(version)]
        else:
            newest = {}
            for m in manifests:
                newest[m["generation"]] = m
            chosen = [newest[g] for g in sorted(newest)]
        if chosen:
            selected.append((label, entry, chosen))
    if not selected:
        raise HistoryError(
            "no archived range of %s (database %s) overlaps %s .. %s under %s in container %s"
            % (name, source_database, _iso(start), _iso(end), folder, store.container)
        )
    work = _Work(work_dir)
    conn, owned = use_connection(params, database, connection)
    try:
        columns, result["warnings"] = resolve_columns(conn, selected[0][2][0]["columns"])
        info = {
            "name": name,
            "time_column": selected[0][2][0]["time_column"],
            "time_type": selected[0][2][0]["time_type"],
        }
        t_schema, t_table = split_table_name(target)
        target_ident = _ident(t_schema, t_table)
        exists = _pg.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (_pg.regclass_text(t_schema, t_table),))
        if not exists:
            if not create_table:
                raise HistoryError(
                    "table %s does not exist in database %s: create it (same columns as the hypertable) or set "
                    "create_table: true" % (target, database)
                )
            result["table_created"] = True
            if not check_mode:
                _create_table(conn, t_schema, t_table, columns, info["time_column"])
        else:
            present = {
                r[0]
                for r in _pg.rows(
                    conn,
                    "SELECT attname::text FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    (_pg.regclass_text(t_schema, t_table),),
                )
            }
            lacking = [c["name"] for c in columns if c["name"] not in present]
            if lacking:
                raise HistoryError(
                    "table %s in database %s lacks the archived columns %s" % (target, database, ", ".join(lacking))
                )
        window = {"lo": start, "hi": end}
        for label, entry, manifests in selected:
            stage = _Stage(conn, columns)
            try:
                item = {
                    "range_start": _iso(entry["start"]),
                    "range_end": _iso(entry["end"]),
                    "versions": [],
                    "rows_archived": 0,
                }
                for m in manifests:
                    if [c["name"] for c in m["columns"]] != [c["name"] for c in columns]:
                        raise HistoryError(
                            "range %s version %d has other columns than the first range restored"
                            % (label, m["version"])
                        )
                    ref = _object_ref(m, month_folder(folder, entry["start"]))
                    path = _download_checked(store, ref["name"], ref["sha256"], work.path)
                    part = _Stage(conn, columns)
                    try:
                        part.load(path)
                        got = part.fingerprint()
                        if got != (m["rows"], m["content_hash"]):
                            raise HistoryError(
                                "%s decodes to %d rows (hash %s); its manifest says %d rows (hash %s): not restored"
                                % (store.url(ref["name"]), got[0], got[1], m["rows"], m["content_hash"])
                            )
                        with conn.cursor() as cur:
                            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage.ident, part.ident))
                    finally:
                        part.drop()
                    os.unlink(path)
                    item["versions"].append({"version": m["version"], "generation": m["generation"], "rows": m["rows"]})
                    item["rows_archived"] += m["rows"]
                in_window = _range_where(info)
                item["rows_in_window"] = stage.fingerprint(in_window, window)[0]
                if result["table_created"] and check_mode:
                    item["rows_inserted"] = item["rows_in_window"]
                else:
                    count_missing = sql.SQL("SELECT count(*) FROM ({}) m").format(
                        _missing_query(columns, stage.ident, in_window, target_ident, in_window, select=sql.SQL("1"))
                    )
                    with conn.cursor() as cur:
                        cur.execute("BEGIN")
                        try:
                            if check_mode:
                                cur.execute(count_missing, window)
                                item["rows_inserted"] = int(cur.fetchone()[0])
                            else:
                                cur.execute(
                                    sql.SQL("INSERT INTO {t} ({cols}) ").format(t=target_ident, cols=_col_list(columns))
                                    + _missing_query(columns, stage.ident, in_window, target_ident, in_window),
                                    window,
                                )
                                item["rows_inserted"] = cur.rowcount
                                cur.execute(count_missing, window)
                                still = int(cur.fetchone()[0])
                                if still:
                                    raise HistoryError(
                                        "after loading range %s, %d archived rows are still missing from %s; "
                                        "rolled back" % (label, still, target)
                                    )
                            cur.execute("ROLLBACK" if check_mode else "COMMIT")
                        except BaseException:
                            abort(conn)
                            raise
                item["rows_present"] = item["rows_in_window"] - item["rows_inserted"]
                item["verified"] = not check_mode
            finally:
                stage.drop()
            result["ranges"].append(item)
            result["rows_archived"] += item["rows_in_window"]
            result["rows_inserted"] += item["rows_inserted"]
            result["rows_present"] += item["rows_present"]
    finally:
        if owned:
            conn.close()
        work.close()
    result["changed"] = bool(result["rows_inserted"]) or result["table_created"]
    return result


def _create_table(conn, schema, table, columns, time_column):
    defs = sql.SQL(", ").join(sql.SQL("{} {}").format(_ident(c["name"]), sql.SQL(_pg_type(c))) for c in columns)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(schema)))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(_ident(schema, table), defs))
        if _pg.scalar(conn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
            cur.execute(
                "SELECT create_hypertable(%s::regclass, by_range(%s))",
                (_pg.regclass_text(schema, table), time_column),
            )
