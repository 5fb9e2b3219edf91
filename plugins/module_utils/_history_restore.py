# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a time range of a hypertable from the history archive, into the live database or
another one, without duplicating rows and with every object checked before use.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import datetime
import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _encryption, _pg, _privileges
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import (
    _Stage,
    _Work,
    require_pyarrow,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    HistoryError,
    Place,
    _iso,
    qualified,
    split_table_name,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    host_label as host_label_of,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_manifest import (
    _download_checked,
    _object_ref,
    check_signed,
    folder_of,
    list_place,
    read_owned_manifest,
    unclaimed_legacy,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _col_list,
    _ident,
    _missing_query,
    _pg_type,
    _range_where,
    abort,
    resolve_columns,
    server_type,
    sql,
    use_connection,
)


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
    host_label=None,
    legacy_owner=None,
    identity=None,
):
    """Loads the archived rows of hypertable with start <= time < end into database (the live
    one or another), skipping rows already present (compared as whole rows, with their
    multiplicity), and verifies that every archived row in the range is then present. Each
    object is checked (sha256, rows and content hash against its manifest) before it is used.
    The archive read is host_label's (default this host's FQDN): a manifest that records another
    host, database or hypertable is refused before any row is loaded. ``identity``: the text of an
    age identity file, for encrypted objects (each decrypted in the work directory, checked
    against its manifest, never kept)."""
    require_pyarrow()
    mf.validate_database_name(database)
    source_database = source_database or database
    mf.validate_database_name(source_database)
    start, end = _azure.parse_timestamp(start), _azure.parse_timestamp(end)
    if end <= start:
        raise HistoryError("end (%s) must be after start (%s)" % (_iso(end), _iso(start)), kind="config")
    name = qualified(*split_table_name(hypertable))
    target = qualified(*split_table_name(target_table or name))
    place = Place.of(store.prefix, host_label_of(host_label), source_database, name, legacy_owner)
    result = _new_result(name, target, place, database, start, end)
    store.ensure_container(create=False)
    selected = _select_ranges(store, place, start, end, version)
    if not selected:
        raise _nothing_archived(store, place, start, end)
    _encryption.require_object_identity(
        [m["object"] for _label, _entry, manifests in selected for m in manifests],
        identity,
        "the archive of %s (database %s, host %s)" % (name, place.database, place.host),
    )
    work = _Work(work_dir)
    conn, owned = use_connection(params, database, connection)
    try:
        with _privileges.advising("history-restore", _privileges.login_for(params, conn), table=target):
            first = selected[0][2][0]
            columns, result["warnings"] = resolve_columns(conn, first["columns"])
            info = {"name": name, "time_column": first["time_column"], "time_type": _time_type(conn, first)}
            result["table_created"] = _prepare_target(conn, target, database, columns, info, create_table, check_mode)
            loader = _RangeLoader(conn, store, work, columns, info, target, {"lo": start, "hi": end}, identity)
            for label, entry, manifests in selected:
                item = loader.load(label, entry, manifests, check_mode, result["table_created"])
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


def _time_type(conn, manifest):
    """The time column's type in the server's spelling (server_type); only timestamptz, timestamp
    and date are ever archived."""
    found = server_type(conn, manifest["time_type"])
    base = _pg.scalar(conn, "SELECT to_regtype(%s)::text", (found,)) if found else None
    if base not in ("timestamp with time zone", "timestamp without time zone", "date"):
        raise HistoryError(
            "the archived time column %s has type %r, which is not a timestamp or date type here: the manifest "
            "is not one this collection writes" % (manifest["time_column"], manifest["time_type"]),
            kind="integrity",
        )
    return found


def _nothing_archived(store, place, start, end):
    """The not_found error when no archived range overlaps the window, with a note on legacy
    objects nobody claimed."""
    note = unclaimed_legacy(store, place)
    return HistoryError(
        "no archived range of %s (database %s, host %s) overlaps %s .. %s under %s in container %s%s"
        % (
            place.hypertable,
            place.database,
            place.host,
            _iso(start),
            _iso(end),
            place.folder,
            store.container,
            "; " + note if note else "",
        ),
        kind="not_found",
    )


def _new_result(name, target, place, database, start, end):
    return {
        "changed": False,
        "hypertable": name,
        "target_table": target,
        "source_database": place.database,
        "source_host": place.host,
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


def _select_ranges(store, place, start, end, version):
    """[(label, entry, manifests to load)] of the archived ranges overlapping [start, end), by
    start: the given version, or the newest version of each generation. Every manifest read is
    refused unless it is the place's (ForeignManifest), before any row is loaded."""
    # Months that can hold a range overlapping [start, end): ranges start at most one month-ish
    # before `start` for usual chunk intervals; list from a month earlier to be safe.
    entries = {}
    month = datetime.datetime(start.year, start.month, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(days=1)
    month = month.replace(day=1)
    while month < end:
        entries.update(list_place(store, place, "%04d/%02d/" % (month.year, month.month)))
        month = (month + datetime.timedelta(days=32)).replace(day=1)
    selected = []
    for label, entry in sorted(entries.items(), key=lambda kv: kv[1]["start"]):
        if entry["end"] <= start or entry["start"] >= end or not entry["manifests"]:
            continue
        # Versions superseded by a signed one may predate signing: only the ones loaded must be
        # trusted (a forged or foreign manifest anywhere still stops the restore).
        manifests = [
            read_owned_manifest(store, entry["manifests"][v], place, allow_unsigned=True)
            for v in sorted(entry["manifests"])
        ]
        if version is not None:
            chosen = [m for m in manifests if m["version"] == int(version)]
        else:
            newest = {}
            for m in manifests:
                newest[m["generation"]] = m
            chosen = [newest[g] for g in sorted(newest)]
        for m in chosen:
            check_signed(store, m, place, entry["manifests"][m["version"]]["name"])
        if chosen:
            selected.append((label, entry, chosen))
    return selected


def _prepare_target(conn, target, database, columns, info, create_table, check_mode):
    """Checks that the target table has the archived columns, or creates it (create_table; not in
    check mode). Returns whether the table is (to be) created."""
    t_schema, t_table = split_table_name(target)
    exists = _pg.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (_pg.regclass_text(t_schema, t_table),))
    if not exists:
        if not create_table:
            raise HistoryError(
                "table %s does not exist in database %s: create it (same columns as the hypertable) or set "
                "create_table: true" % (target, database),
                kind="not_found",
            )
        if not check_mode:
            _create_table(conn, t_schema, t_table, columns, info["time_column"])
        return True
    present = {
        r[0]
        for r in _pg.rows(
            conn,
            "SELECT attname::text FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (_pg.regclass_text(t_schema, t_table),),
        )
    }
    lacking = [c["name"] for c in columns if c["name"] not in present]
    if lacking:
        raise HistoryError(
            "table %s in database %s lacks the archived columns %s" % (target, database, ", ".join(lacking)),
            kind="config",
        )
    return False


@dataclasses.dataclass
class _RangeLoader:
    """Restores archived ranges into one target table: each range's versions are checked and
    staged, then the rows of the window the table lacks are inserted and counted again."""

    conn: object
    store: object  # an _azure.BlobStore
    work: _Work
    columns: list
    info: dict
    target: str
    window: dict  # {"lo": start, "hi": end}
    identity: str = None  # for encrypted objects (docs/SECURITY.md)

    @property
    def target_ident(self):
        return _ident(*split_table_name(self.target))

    def load(self, label, entry, manifests, check_mode, table_created):
        """One range; returns its item of the result."""
        stage = _Stage(self.conn, self.columns)
        try:
            item = {
                "range_start": _iso(entry["start"]),
                "range_end": _iso(entry["end"]),
                "versions": [],
                "rows_archived": 0,
            }
            for m in manifests:
                self._stage_version(stage, label, entry, m)
                item["versions"].append({"version": m["version"], "generation": m["generation"], "rows": m["rows"]})
                item["rows_archived"] += m["rows"]
            in_window = _range_where(self.info)
            item["rows_in_window"] = stage.fingerprint(in_window, self.window)[0]
            if table_created and check_mode:
                item["rows_inserted"] = item["rows_in_window"]
            else:
                item["rows_inserted"] = self._insert_missing(stage, label, check_mode)
            item["rows_present"] = item["rows_in_window"] - item["rows_inserted"]
            item["verified"] = not check_mode
        finally:
            stage.drop()
        return item

    def _stage_version(self, stage, label, entry, m):
        """Adds one version's object to the range's stage, once it decodes to what its manifest says."""
        if [c["name"] for c in m["columns"]] != [c["name"] for c in self.columns]:
            raise HistoryError(
                "range %s version %d has other columns than the first range restored" % (label, m["version"]),
                kind="conflict",
            )
        ref = _object_ref(m, folder_of(entry["manifests"][m["version"]]["name"]))
        path = _download_checked(self.store, ref["name"], ref["sha256"], self.work.path)
        what = "range %s version %d (%s)" % (label, m["version"], self.store.url(ref["name"]))
        try:
            path = _encryption.open_object(path, m["object"], self.identity, what)
        except BaseException:
            if os.path.exists(path):
                os.unlink(path)
            raise
        part = _Stage(self.conn, self.columns)
        try:
            part.load(path)
            got = part.fingerprint()
            if got != (m["rows"], m["content_hash"]):
                raise HistoryError(
                    "%s decodes to %d rows (hash %s); its manifest says %d rows (hash %s): not restored"
                    % (self.store.url(ref["name"]), got[0], got[1], m["rows"], m["content_hash"]),
                    kind="integrity",
                )
            with self.conn.cursor() as cur:
                cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage.ident, part.ident))
        finally:
            part.drop()
        os.unlink(path)

    def _insert_missing(self, stage, label, check_mode):
        """Inserts the staged rows of the window the target lacks (with their multiplicity) and
        checks none is missing then, in one transaction; check mode only counts them. Returns
        the rows inserted (or that would be)."""
        columns, target_ident, in_window, window = self.columns, self.target_ident, _range_where(self.info), self.window
        count_missing = sql.SQL("SELECT count(*) FROM ({}) m").format(
            _missing_query(columns, stage.ident, in_window, target_ident, in_window, select=sql.SQL("1"))
        )
        with self.conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                if check_mode:
                    cur.execute(count_missing, window)
                    inserted = int(cur.fetchone()[0])
                else:
                    cur.execute(
                        sql.SQL("INSERT INTO {t} ({cols}) ").format(t=target_ident, cols=_col_list(columns))
                        + _missing_query(columns, stage.ident, in_window, target_ident, in_window),
                        window,
                    )
                    inserted = cur.rowcount
                    cur.execute(count_missing, window)
                    still = int(cur.fetchone()[0])
                    if still:
                        raise HistoryError(
                            "after loading range %s, %d archived rows are still missing from %s; rolled back"
                            % (label, still, self.target),
                            kind="integrity",
                        )
                cur.execute("ROLLBACK" if check_mode else "COMMIT")
            except BaseException:
                abort(self.conn)
                raise
        return inserted


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
