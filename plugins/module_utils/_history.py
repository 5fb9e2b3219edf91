# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The history guarantee: chunk-level archive to Azure, retention gated by that archive, and
restore of a time range from it.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

The unit is a *time slice* of a hypertable: the chunks that share one range of the time
dimension (one chunk, or one per space partition). Blob layout::

    <prefix>/history/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.parquet
    <prefix>/history/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.manifest.json

``<YYYY>/<MM>`` is the month of the range start, ``<start>``/``<end>`` are UTC
(``20260105T000000Z``). A manifest is uploaded only after its object was read back and
verified, so a visible manifest means a verified archive; an object without a manifest is a
failed attempt and is never trusted.

Versions: when a closed slice's live count or content hash differs from its newest archive
(late-arriving rows), a new version is written and the older one kept. A *generation* starts
when the slice comes back after its chunks were dropped (rows arriving months late, or a
history restore into the live database): such a version holds only the rows that are not in
the earlier generations. The archived content of a range is the union of the newest version of
each generation (what ``restore_range`` loads).

The content hash is computed by PostgreSQL, ``sum(hashtextextended(ROW(<columns>)::text, 0))``
over the rows, with the session settings that fix the text form (UTC, ISO dates,
extra_float_digits = 1): independent of row order, recomputed cheaply on a live chunk, and
recomputed on rows loaded back from an object (which checks the object end to end).

Entry points (plain arguments and dicts, no Ansible): ``archive_history`` (this file),
``enforce_retention`` (_history_retention), ``restore_range`` (_history_restore); names, times
and the blob layout are in _history_layout, the PostgreSQL side in _history_sql, the Parquet
codec in _history_codec, history manifests in _history_manifest. ``__all__`` below is what the
modules and the runner use. Azure comes in as a ``_azure.BlobStore``
(``_azure.open_store(config)``), PostgreSQL as a ``_pg.ConnectionParams``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import socket

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _pg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import (
    DEFAULT_ZSTD_LEVEL,
    HAS_PYARROW,
    PYARROW_IMPORT_ERROR,
    PYARROW_REQUIREMENT,
    _Stage,
    _Work,
    export_parquet,
    require_pyarrow,
    row_group_count,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    DATA_EXT,
    KIND_DATA,
    KIND_MANIFEST,
    MANIFEST_EXT,
    HistoryError,
    _iso,
    history_folder,
    month_folder,
    object_name,
    parse_time_label,
    qualified,
    range_label,
    reference_time,
    split_table_name,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_manifest import (
    HASH_ALGORITHM,
    HISTORY_FORMAT,
    HISTORY_VERSION,
    _download_checked,
    _metadata,
    _object_ref,
    _service_error,
    _slice_result,
    _State,
    encode_manifest,
    latest_version,
    list_ranges,
    next_version,
    read_manifest_blob,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_restore import (
    restore_range,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_retention import (
    HELD_DAMAGED,
    HELD_UNREACHABLE,
    LOCK_TIMEOUT_SECONDS,
    enforce_retention,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _col_list,
    _fallback,
    _missing_query,
    _range_where,
    _server,
    _table,
    _wire_select,
    abort,
    describe_hypertable,
    fingerprint,
    fingerprint_slices,
    list_hypertables,
    list_slices,
    open_connection,
    sql,
    use_connection,
)

DEFAULT_GRACE = datetime.timedelta(hours=2)
# Up to this many slices to look up in one month: one listing per range, else one per month.
SMALL_LISTING = 3


class _Archiver:
    def __init__(self, params, database, store, now, grace, check_mode, verify, reverify, work, options):
        self.params = params
        self.database = database
        self.store = store
        self.now = now
        self.grace = grace
        self.check_mode = check_mode
        self.verify = verify
        self.reverify = reverify
        self.work = work
        self.options = options
        self.conn = None
        self.server = None
        self.container_exists = True
        self.state = _State(None, database)
        self.owned = True

    def run_table(self, name, result):
        info = describe_hypertable(self.conn, name)
        folder = history_folder(self.store.prefix, self.database, info["name"])
        slices = list_slices(self.conn, info)
        closed = [s for s in slices if s["end"] + self.grace <= self.now]
        summary = {
            "slices": len(slices),
            "closed": len(closed),
            "open": len(slices) - len(closed),
            "archived": 0,
            "unchanged": 0,
            "oldest_unarchived": None,
        }
        result["hypertables"][info["name"]] = summary
        live = fingerprint_slices(self.conn, info, closed)
        todo = []
        for s in closed:
            known = self.state.get(info["name"], s["label"])
            if known is not None and not self.reverify and known == live[s["label"]]:
                summary["unchanged"] += 1
                self.state.keep(info["name"], s["label"], known)
            else:
                todo.append(s)
        remote = {}
        by_month = {}
        for s in todo:
            by_month.setdefault(month_folder(folder, s["start"]), []).append(s)
        for month, items in sorted(by_month.items()) if self.container_exists else ():
            if len(items) <= SMALL_LISTING:
                for s in items:  # a few ranges: small listings beat one of the whole month
                    remote.update(list_ranges(self.store, "%s/%s." % (month, s["label"])))
            else:
                remote.update(list_ranges(self.store, month + "/"))
        for s in todo:
            try:
                outcome = self.slice(info, folder, s, remote.get(s["label"]), live[s["label"]])
            except _azure.AzureTierError as e:
                if _service_error(e):
                    raise
                outcome = _slice_result(info, s, status="failed", error=self.store.redact(e))
            except (HistoryError, _pg.PgError, mf.ManifestError, OSError) as e:
                outcome = _slice_result(info, s, status="failed", error=self.store.redact(e))
                if not abort(self.conn):
                    if self.owned:
                        self.conn.close()
                    self.conn, self.owned = open_connection(self.params, self.database), True
            status = outcome["status"]
            if status in ("unchanged", "archived"):
                self.state.keep(info["name"], s["label"], (outcome["covers_rows"], outcome["covers_hash"]))
            if status == "unchanged":
                summary["unchanged"] += 1
                continue
            if status == "failed":
                result["failures"].append(outcome)
            else:
                result["archived"].append(outcome)
                summary["archived"] += 1
                result["bytes"] += outcome.get("bytes") or 0
            if status == "failed" or self.check_mode:
                if summary["oldest_unarchived"] is None:
                    summary["oldest_unarchived"] = _iso(s["start"])

    def slice(self, info, folder, s, entry, fingerprint_now):
        rows, digest = fingerprint_now
        latest = latest_version(entry)
        reason = "new"
        prior = None
        if latest is not None:
            meta = entry["manifests"][latest]["metadata"]
            if (meta.get("covers_rows"), meta.get("covers_hash")) == ("%d" % rows, digest):
                data = entry["data"].get(latest)
                intact = (
                    data is not None
                    and data["sha256"] == meta.get("object_sha256")
                    and "%s" % data["size"] == meta.get("object_size")
                )
                if intact and self.reverify:
                    intact = self._object_intact(data["name"], meta.get("object_sha256"))
                    if intact:
                        checked = read_manifest_blob(self.store, entry["manifests"][latest]["name"])
                        for ref in checked.get("depends_on") or []:
                            if not self._object_intact(ref["name"], ref["sha256"]):
                                raise HistoryError(
                                    "%s (version %d, generation %d of this range) is damaged or missing; its rows "
                                    "are no longer in the database, so they cannot be archived again. Restore it "
                                    "from another copy of the container if there is one"
                                    % (self.store.url(ref["name"]), ref["version"], ref["generation"])
                                )
                if intact:
                    return _slice_result(
                        info, s, status="unchanged", version=latest, covers_rows=rows, covers_hash=digest
                    )
                reason = "replaces_damaged"
            else:
                reason = "changed"
            prior = read_manifest_blob(self.store, entry["manifests"][latest]["name"])
        elif entry and entry["data"]:
            reason = "retry"

        version = next_version(entry)
        live_chunks = {c["name"] for c in s["chunks"]}
        depends_on = []
        generation = 1
        if prior is not None:
            prior_chunks = {c["name"] for c in prior["covers"].get("chunks", prior.get("chunks", []))}
            depends_on = list(prior.get("depends_on") or [])
            generation = prior["generation"]
            if reason == "replaces_damaged":
                # The newest object is unusable: the new version takes its place in its
                # generation, with the live rows the earlier generations do not hold.
                pass
            elif not live_chunks & prior_chunks:
                # The chunks archived before are gone: these rows came back after a drop.
                depends_on.append(_object_ref(prior, month_folder(folder, s["start"])))
                generation += 1
                reason = "new_generation"
        planned = _slice_result(
            info,
            s,
            status="would_archive" if self.check_mode else "archived",
            reason=reason,
            version=version,
            generation=generation,
            covers_rows=rows,
            covers_hash=digest,
        )
        if self.check_mode:
            return planned
        return self._write(info, folder, s, planned, rows, digest, depends_on)

    def _object_intact(self, name, sha256):
        path = self.work.file("reverify.%s" % DATA_EXT)
        try:
            self.store.download_file(name, path, sha256)
            return True
        except _azure.IntegrityError:
            return False
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def _write(self, info, folder, s, planned, live_rows, live_digest, depends_on):
        conn = self.conn
        columns = info["columns"]
        version = planned["version"]
        data_name = object_name(folder, s["start"], s["end"], version, DATA_EXT)
        manifest_name = object_name(folder, s["start"], s["end"], version, MANIFEST_EXT)
        local = self.work.file(data_name.rsplit("/", 1)[-1])
        bounds = {"lo": s["start"], "hi": s["end"]}
        prior_stage = None
        if depends_on:
            prior_stage = _Stage(conn, columns)
            for ref in depends_on:
                path = _download_checked(self.store, ref["name"], ref["sha256"], self.work.path)
                before = prior_stage.fingerprint()
                prior_stage.load(path)
                after = prior_stage.fingerprint()
                if after[0] - before[0] != ref["rows"]:
                    raise HistoryError(
                        "%s holds %d rows, its manifest says %d" % (ref["name"], after[0] - before[0], ref["rows"])
                    )
        try:
            with conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try:
                rows, digest = fingerprint(conn, info, s["start"], s["end"])
                if prior_stage is None:
                    source = sql.SQL("(SELECT * FROM {t} WHERE {w}) src").format(t=_table(info), w=_range_where(info))
                    obj_rows, obj_digest = rows, digest
                else:
                    delta = _Stage(conn, columns)
                    with conn.cursor() as cur:
                        cur.execute(
                            sql.SQL("INSERT INTO {d} ({cols}) ").format(d=delta.ident, cols=_col_list(columns))
                            + _missing_query(columns, _table(info), _range_where(info), prior_stage.ident, None),
                            bounds,
                        )
                    source = delta.ident
                    obj_rows, obj_digest = delta.fingerprint()
                exported = export_parquet(
                    conn,
                    _wire_select(columns, source, order=info["time_column"]),
                    bounds,
                    columns,
                    local,
                    info=info,
                    level=self.options["compression_level"],
                )
            finally:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
        finally:
            if prior_stage is not None:
                prior_stage.drop()
        if exported != obj_rows:
            raise HistoryError(
                "export of %s wrote %d rows, the snapshot holds %d" % (planned["range_start"], exported, obj_rows)
            )
        sha256, size = mf.sha256_file(local)
        row_groups = row_group_count(local)
        common = {
            "database": self.database,
            "hypertable": info["name"],
            "range_start": planned["range_start"],
            "range_end": planned["range_end"],
            "version": version,
            "generation": planned["generation"],
        }
        data_meta = dict(common, kind=KIND_DATA, sha256=sha256, rows=obj_rows, content_hash=obj_digest)
        item = {
            "kind": _azure.KIND_ARCHIVE,
            "part": None,
            "path": local,
            "name": data_name,
            "sha256": sha256,
            "size": size,
        }
        uploaded, warning = self.store.upload_file(
            item,
            _metadata(data_meta),
            self.options["access_tier"],
            self.options["tags"],
            int(self.options["block_size_mb"]),
            int(self.options["max_concurrency"]),
        )
        os.unlink(local)
        sent = uploaded["bytes"] if uploaded["status"] == "uploaded" else 0

        verified = None
        if self.verify:
            verified = verify_object(conn, self.store, data_name, sha256, columns, obj_rows, obj_digest, self.work)
        manifest = {
            "format": HISTORY_FORMAT,
            "format_version": HISTORY_VERSION,
            "database": self.database,
            "hypertable": info["name"],
            "time_column": info["time_column"],
            "time_type": info["time_type"],
            "range": {"start": planned["range_start"], "end": planned["range_end"], "label": s["label"]},
            "version": version,
            "generation": planned["generation"],
            "reason": planned["reason"],
            "chunks": s["chunks"],
            "columns": [dict({k: c[k] for k in ("name", "pg_type", "parquet_type")}, **_fallback(c)) for c in columns],
            "rows": obj_rows,
            "content_hash": obj_digest,
            "hash_algorithm": HASH_ALGORITHM,
            "covers": {"rows": rows, "content_hash": digest, "chunks": s["chunks"]},
            "depends_on": depends_on,
            "object": {
                "name": data_name.rsplit("/", 1)[-1],
                "format": "parquet",
                "compression": "zstd:%d" % self.options["compression_level"],
                "row_groups": row_groups,
                "size_bytes": size,
                "sha256": sha256,
            },
            "verified": verified,
            "reference_time": _iso(self.now),
            "created_at": _iso(mf.utcnow()),
            "host": socket.getfqdn(),
            "server": self.server,
        }
        if (rows, digest) != (live_rows, live_digest):
            planned["covers_rows"], planned["covers_hash"] = rows, digest
        body = encode_manifest(manifest)
        manifest_path = self.work.file(manifest_name.rsplit("/", 1)[-1])
        mf.atomic_write_bytes(manifest_path, body)
        manifest_sha, manifest_size = mf.sha256_file(manifest_path)
        manifest_meta = dict(
            common,
            kind=KIND_MANIFEST,
            sha256=manifest_sha,
            rows=obj_rows,
            content_hash=obj_digest,
            covers_rows=rows,
            covers_hash=digest,
            object_sha256=sha256,
            object_size=size,
        )
        item = {
            "kind": _azure.KIND_MANIFEST,
            "part": None,
            "path": manifest_path,
            "name": manifest_name,
            "sha256": manifest_sha,
            "size": manifest_size,
        }
        up_manifest, _w = self.store.upload_file(item, _metadata(manifest_meta), None, self.options["tags"], 4, 1)
        os.unlink(manifest_path)
        sent += up_manifest["bytes"] if up_manifest["status"] == "uploaded" else 0
        planned.update(
            rows=obj_rows,
            content_hash=obj_digest,
            bytes=sent,
            object=self.store.url(data_name),
            manifest=self.store.url(manifest_name),
            sha256=sha256,
            verified=bool(verified),
        )
        if warning:
            planned["warning"] = warning
        return planned


def verify_object(conn, store, name, sha256, columns, rows, content_hash, work):
    """Reads an uploaded object back: sha256 of what Azure returns, then the rows it decodes
    to, loaded into a temporary table, counted and hashed by PostgreSQL. Raises on mismatch."""
    path = work.file("verify.%s" % DATA_EXT)
    stage = None
    try:
        store.download_file(name, path, sha256)
        stage = _Stage(conn, columns)
        loaded = stage.load(path)
        got = stage.fingerprint()
    finally:
        if stage is not None:
            stage.drop()
        if os.path.exists(path):
            os.unlink(path)
    if loaded != rows or got != (rows, content_hash):
        raise HistoryError(
            "verification of %s failed: it decodes to %d rows with content hash %s; expected %d rows with %s. "
            "The object is kept but not trusted (no manifest); the next run archives a new version"
            % (store.url(name), got[0], got[1], rows, content_hash)
        )
    return {"method": "download+sha256+reload+pg-hash", "at": _iso(mf.utcnow()), "rows": got[0], "content_hash": got[1]}


def _new_result():
    return {
        "changed": False,
        "archived": [],
        "failures": [],
        "stopped": None,
        "bytes": 0,
        "hypertables": {},
        "warnings": [],
    }


def archive_history(
    params,
    database,
    store,
    hypertables=None,
    now=None,
    grace=DEFAULT_GRACE,
    check_mode=False,
    verify=True,
    reverify=False,
    work_dir=None,
    access_tier=None,
    tags=None,
    block_size_mb=_azure.DEFAULT_BLOCK_SIZE_MB,
    max_concurrency=_azure.DEFAULT_CONCURRENCY,
    compression_level=DEFAULT_ZSTD_LEVEL,
    state_file=None,
    connection=None,
):
    """Archives every closed slice of the hypertables (default: all of the database) that has
    no verified archive matching its live count and hash. An unreachable Azure stops the run
    ('stopped'); a slice that fails is reported in 'failures' and the others go on.

    state_file (optional) remembers which live slices were found covered, so that a run in
    which nothing changed asks Azure nothing (see _State). connection (optional) is an open
    connection to `database` from open_connection, reused and left open (the runner's)."""
    mf.validate_database_name(database)
    now = reference_time(now)
    if not check_mode:
        require_pyarrow()
    if access_tier is not None and access_tier not in _azure.TIERS:
        raise _azure.ConfigError("access_tier must be one of %s" % ", ".join(_azure.TIERS))
    _azure.validate_tags(tags)
    if not 1 <= int(compression_level) <= 22:
        raise HistoryError("compression_level must be between 1 and 22 (zstd)")
    result = _new_result()
    result["reference_time"] = _iso(now)
    work = _Work(work_dir)
    archiver = _Archiver(
        params,
        database,
        store,
        now,
        grace,
        check_mode,
        verify,
        reverify,
        work,
        {
            "access_tier": access_tier,
            "tags": tags,
            "block_size_mb": block_size_mb,
            "max_concurrency": max_concurrency,
            "compression_level": int(compression_level),
        },
    )
    archiver.state = _State(state_file, database)
    if archiver.state.warning:
        result["warnings"].append(archiver.state.warning)
    done = []
    try:
        archiver.conn, archiver.owned = use_connection(params, database, connection)
        archiver.server = _server(archiver.conn)
        names = (
            [qualified(*split_table_name(n)) for n in hypertables] if hypertables else list_hypertables(archiver.conn)
        )
        try:
            container = store.ensure_container(check_mode=check_mode)
            archiver.container_exists = container["exists"]
            result["container_created"] = container["created"]
            for name in names:
                archiver.run_table(name, result)
                done.append(name)
        except _azure.AzureTierError as e:
            if not _service_error(e):
                raise
            result["stopped"] = store.redact(e)
        if not check_mode:
            archiver.state.save(done)
    finally:
        if archiver.conn is not None and archiver.owned:
            archiver.conn.close()
        work.close()
    oldest = [h["oldest_unarchived"] for h in result["hypertables"].values() if h["oldest_unarchived"]]
    result["oldest_unarchived"] = min(oldest) if oldest else None
    result["changed"] = bool(result["archived"]) or bool(result.get("container_created"))
    return result


# What modules, the runner and the tests use, wherever in the history files it lives.
__all__ = [
    "HistoryError",
    "HAS_PYARROW",
    "PYARROW_IMPORT_ERROR",
    "PYARROW_REQUIREMENT",
    "DEFAULT_ZSTD_LEVEL",
    "KIND_DATA",
    "LOCK_TIMEOUT_SECONDS",
    "HELD_DAMAGED",
    "HELD_UNREACHABLE",
    "archive_history",
    "enforce_retention",
    "restore_range",
    "history_folder",
    "month_folder",
    "parse_time_label",
    "range_label",
    "list_ranges",
    "latest_version",
    "read_manifest_blob",
    "open_connection",
]
