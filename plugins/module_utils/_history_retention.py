# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention gated by the history archive: a slice older than its retention is dropped only when a
verified archive covers it, re-checked under lock; every other due slice is held back with a
reason an operator acts on.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import datetime
import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _clock, _pg, _privileges, _tsdb
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import (
    _Work,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    DATA_EXT,
    HistoryError,
    Place,
    _iso,
    month_part,
    qualified,
    reference_time,
    split_table_name,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    host_label as host_label_of,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_manifest import (
    ForeignManifest,
    _audit,
    _object_ref,
    _service_error,
    _slice_result,
    folder_of,
    latest_version,
    list_place,
    read_owned_manifest,
    resolve_ref,
    unclaimed_legacy,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _ident,
    _pg_type,
    abort,
    describe_hypertable,
    fingerprint,
    list_slices,
    pg_errors,
    retention_policy_jobs,
    sql,
    use_connection,
)

LOCK_TIMEOUT_SECONDS = 30

# Why a slice older than its retention is kept.
HELD_NOT_ARCHIVED = "not_archived"
HELD_CHANGED = "changed_since_archive"
HELD_DAMAGED = "archive_damaged"
HELD_REFUSED = "archive_refused"  # a manifest of another host, database or hypertable in this folder
HELD_UNREACHABLE = "archive_unreachable"
HELD_LOCKED = "lock_timeout"
HELD_UNEXPECTED = "unexpected_chunks"
HELD_REFERENCED = "referenced_by_foreign_key"
HELD_ERROR = "error"


def normalize_policies(policies):
    """[{'hypertable'|'name': str, 'retention_days': int}] -> [(name, timedelta)]."""
    out = []
    for p in policies or []:
        name = p.get("hypertable") or p.get("name")
        days = p.get("retention_days")
        if not name or days is None:
            raise HistoryError("each retention entry needs a hypertable name and retention_days", kind="config")
        if int(days) < 1:
            raise HistoryError("retention_days of %s must be 1 or more" % name, kind="config")
        out.append((qualified(*split_table_name(name)), datetime.timedelta(days=int(days))))
    if not out:
        raise HistoryError(
            "no hypertable given: retention is per hypertable (e.g. esp_telemetry: 30 days)", kind="config"
        )
    return out


def _referenced_reason(conn, info):
    """Why no chunk of a hypertable that a foreign key points at can be dropped, or None.
    TimescaleDB refuses such a drop (the key depends on each chunk's unique index) even when no
    row refers to the chunk; said before trying, in words an operator can act on."""
    oid = _pg.scalar(
        conn,
        "SELECT %s::regclass::oid::int8",
        (_pg.regclass_text(info["schema"], info["table"]),),
    )
    refs = _tsdb.hypertable_references(conn, oid)
    if not refs:
        return None
    keys = ", ".join("%s on %s" % (_pg.qualify_part(r["name"]), r["table"]) for r in refs)
    return (
        "TimescaleDB cannot drop chunks of %s while a foreign key points at it (%s), even when no row refers to "
        "them. Drop the key (ALTER TABLE %s DROP CONSTRAINT %s) if the reference need not be enforced by the "
        "database, or take %s out of the retention policies; its archive is kept either way"
        % (info["name"], keys, refs[0]["table"], _pg.qualify_part(refs[0]["name"]), info["name"])
    )


def _held(info, s, code, reason, **extra):
    return _slice_result(info, s, reason_code=code, reason=reason, **extra)


def _check_archive(store, place, s, verify_objects, work):
    """The sealed manifest of the newest verified version of a slice in this host's history (never
    one that names another host, database or hypertable) and the objects it relies on, checked.
    Returns ((manifest, object name), None) or (None, (code, reason))."""
    rel = "%s/%s." % (month_part(s["start"]), s["label"])
    entry = list_place(store, place, rel).get(s["label"])
    latest = latest_version(entry)
    if latest is None:
        attempts = len(entry["data"]) if entry else 0
        note = unclaimed_legacy(store, place, rel)
        return None, (
            HELD_NOT_ARCHIVED,
            "no verified archive of this range yet%s; chunk_archive must archive it first%s"
            % (" (%d unverified attempt(s))" % attempts if attempts else "", "; " + note if note else ""),
        )
    newest = entry["manifests"][latest]
    try:
        # Chunks are dropped on the word of this manifest: with a trust store, only a signed one.
        manifest = read_owned_manifest(store, newest, place, strict=True)
    except ForeignManifest as e:
        return None, (HELD_REFUSED, "%s" % e)
    except HistoryError as e:
        return None, (HELD_DAMAGED, "%s" % e)
    folder = folder_of(newest["name"])
    refs = [_object_ref(manifest, folder)] + [resolve_ref(entry, r, folder) for r in manifest.get("depends_on") or []]
    for ref in refs:
        try:
            if verify_objects:
                path = work.file("check.%s" % DATA_EXT)
                try:
                    store.download_file(ref["name"], path, ref["sha256"])
                finally:
                    if os.path.exists(path):
                        os.unlink(path)
            else:
                props = store.properties(ref["name"])
                if props is None or props["sha256"] != ref["sha256"] or props["size"] != ref["size_bytes"]:
                    raise _azure.IntegrityError("%s is missing or differs from its manifest" % store.url(ref["name"]))
        except _azure.IntegrityError as e:
            return None, (HELD_DAMAGED, "%s; run chunk_archive with reverify to archive it again" % store.redact(e))
        except _azure.ArchivedError as e:
            return None, (HELD_DAMAGED, "%s" % store.redact(e))
    return (manifest, refs[0]["name"]), None


def _refusal(conn, info, exc):
    """Why a drop failed; for a missing privilege, what to grant (drop_chunks needs ownership)."""
    refused = _privileges.denial(exc)
    if refused is None:
        return "%s" % exc
    return _privileges.advice("retention", _pg.login_of(conn), refused, hypertable=info["name"])


def _drop_slice(conn, info, s, manifest, check_mode, lock_timeout):
    """Locks the slice's chunks, recomputes count and hash, compares them with the archive and
    drops exactly these chunks, all in one transaction. Returns (dropped, held)."""
    chunk_idents = [_ident(c["schema"], c["name"]) for c in s["chunks"]]
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            cur.execute("SET LOCAL lock_timeout = %s", ("%ds" % lock_timeout,))
            try:
                # EXCLUSIVE blocks writers (late rows) until the drop commits; readers go on.
                # Check mode takes no lock.
                if not check_mode:
                    cur.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(chunk_idents)))
            except pg_errors.LockNotAvailable:
                cur.execute("ROLLBACK")
                return None, (
                    HELD_LOCKED,
                    "could not lock the chunks within %ds (busy); next run tries again" % lock_timeout,
                )
            rows, digest = fingerprint(conn, info, s["start"], s["end"])
            covers = manifest["covers"]
            if (rows, digest) != (covers["rows"], covers["content_hash"]):
                cur.execute("ROLLBACK")
                return None, (
                    HELD_CHANGED,
                    "live rows differ from the archive (live %d rows, hash %s; archive v%d covers %d rows, hash %s): "
                    "rows arrived or changed after archiving; chunk_archive will archive a new version"
                    % (rows, digest, manifest["version"], covers["rows"], covers["content_hash"]),
                )
            if check_mode:
                cur.execute("ROLLBACK")
                return {"rows": rows, "content_hash": digest}, None
            time_type = sql.SQL(_pg_type({"name": info["time_column"], "pg_type": info["time_type"]}))
            cur.execute(
                sql.SQL(
                    "SELECT drop_chunks(%(ht)s::regclass, older_than => (%(hi)s)::{t}, "
                    "newer_than => (%(lo)s)::{t})::text"
                ).format(t=time_type),
                {
                    "ht": _pg.regclass_text(info["schema"], info["table"]),
                    "hi": s["end"],
                    "lo": s["start"],
                },
            )
            dropped = sorted(r[0] for r in cur.fetchall())
            # drop_chunks() names the chunks as quote_identifier() writes them.
            expected = sorted(_pg.qualified(c["schema"], c["name"]) for c in s["chunks"])
            if dropped != expected:
                cur.execute("ROLLBACK")
                return None, (
                    HELD_UNEXPECTED,
                    "drop_chunks would have dropped %s, the verified set is %s; nothing dropped" % (dropped, expected),
                )
            cur.execute("COMMIT")
            return {"rows": rows, "content_hash": digest}, None
        except BaseException:
            abort(conn)
            raise


def enforce_retention(
    params,
    database,
    store,
    policies,
    now=None,
    check_mode=False,
    verify_objects=True,
    lock_timeout=LOCK_TIMEOUT_SECONDS,
    audit_log=None,
    work_dir=None,
    connection=None,
    host_label=None,
    legacy_owner=None,
    max_clock_skew=_clock.DEFAULT_MAX_SKEW_SECONDS,
):
    """Drops the slices older than each hypertable's retention that a verified archive covers
    (newest version's count and hash equal the live rows, re-checked under lock; its objects
    read back with the right sha256). Every other due slice is kept and reported in
    'held_back' with a reason code. Never raises for Azure being unreachable: it holds back.
    Only this host's history counts (host_label, default the FQDN): see Place and check_owner."""
    mf.validate_database_name(database)
    from_server = now is None  # then the server's clock, checked against this host's (_clock)
    now = reference_time(now)
    policies = normalize_policies(policies)
    result = {
        "changed": False,
        "reference_time": _iso(now),
        "dropped": [],
        "held_back": [],
        "hypertables": {},
        "warnings": [],
    }
    work = _Work(work_dir)
    conn, owned = use_connection(params, database, connection)
    try:
        if from_server:
            now = _clock.server_now(conn, max_clock_skew)
            result["reference_time"] = _iso(now)
        run = _Retention(conn, store, database, now, work, result, check_mode, verify_objects, lock_timeout, audit_log)
        run.host, run.legacy_owner = host_label_of(host_label), legacy_owner
        for name, retention in policies:
            with _privileges.advising("retention", _privileges.login_for(params, conn), hypertable=name):
                run.table(name, retention)
    finally:
        if owned:
            conn.close()
        work.close()
    result["changed"] = bool(result["dropped"])
    return result


@dataclasses.dataclass
class _Retention:
    """One enforce_retention run: its connection, store and options, and the result it fills in."""

    conn: object
    store: object  # an _azure.BlobStore
    database: str
    now: datetime.datetime
    work: _Work
    result: dict
    check_mode: bool
    verify_objects: bool
    lock_timeout: int
    audit_log: object  # None, or the path of the audit log
    # Set when Azure cannot be reached: the hypertable's other slices are held back unasked.
    unreachable: object = None
    host: str = None
    legacy_owner: str = None

    def table(self, name, retention):
        conn, result = self.conn, self.result
        info = describe_hypertable(conn, name)
        cutoff = self.now - retention
        jobs = retention_policy_jobs(conn, info)
        if jobs:
            result["warnings"].append(
                "%s has a TimescaleDB retention policy (job %s): it drops chunks without checking the archive. "
                "Remove it (SELECT remove_retention_policy('%s')) and let chunk_retention do this"
                % (info["name"], ", ".join("%d" % j for j in jobs), info["name"])
            )
        slices = list_slices(conn, info)
        due = [s for s in slices if s["end"] <= cutoff]
        summary = {
            "retention_days": retention.days,
            "cutoff": _iso(cutoff),
            "slices": len(slices),
            "due": len(due),
            "dropped": 0,
            "held_back": 0,
            "retention_policy_jobs": jobs,
        }
        result["hypertables"][info["name"]] = summary
        place = Place.of(self.store.prefix, self.host, self.database, info["name"], self.legacy_owner)
        self.unreachable = None
        referenced = _referenced_reason(conn, info)
        for s in due:
            checked, held = self._check(place, s, referenced)
            if held is None:
                try:
                    dropped, held = _drop_slice(conn, info, s, checked[0], self.check_mode, self.lock_timeout)
                except _pg.psycopg2.Error as e:
                    dropped, held = None, (HELD_ERROR, _refusal(conn, info, e))
            if held is not None:
                summary["held_back"] += 1
                result["held_back"].append(_held(info, s, held[0], held[1]))
                continue
            summary["dropped"] += 1
            self._dropped(info, s, checked, dropped)

    def _check(self, place, s, referenced):
        """(manifest, None) when a verified archive covers the slice, else (None, (code, reason))."""
        if referenced is not None:
            return None, (HELD_REFERENCED, referenced)
        if self.unreachable is not None:
            return None, (HELD_UNREACHABLE, self.unreachable)
        try:
            return _check_archive(self.store, place, s, self.verify_objects, self.work)
        except _azure.AzureTierError as e:
            held = (HELD_UNREACHABLE if _service_error(e) else HELD_ERROR, self.store.redact(e))
            if _service_error(e):
                self.unreachable = "the archive cannot be checked: %s" % self.store.redact(e)
                held = (HELD_UNREACHABLE, self.unreachable)
            return None, held

    def _dropped(self, info, s, checked, dropped):
        manifest, object_name = checked
        record = _slice_result(
            info,
            s,
            rows=dropped["rows"],
            content_hash=dropped["content_hash"],
            archive_version=manifest["version"],
            archive_generation=manifest["generation"],
            archive_object=self.store.url(object_name),
        )
        self.result["dropped"].append(record)
        if not self.check_mode:
            _audit(
                self.audit_log,
                dict(
                    record,
                    event="chunks_dropped",
                    database=self.database,
                    at=_iso(mf.utcnow()),
                    reference_time=_iso(self.now),
                ),
            )
