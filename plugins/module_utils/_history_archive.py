# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Archiving the closed slices of hypertables, one run of archive_history (_history): which
slices need a new version, and writing one - export in a snapshot, upload, read back, manifest
last.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import os
import socket

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _encryption,
    _errors,
    _pg,
    _privileges,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import (
    _Stage,
    export_parquet,
    row_group_count,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    DATA_EXT,
    KIND_DATA,
    MANIFEST_EXT,
    HistoryError,
    Place,
    _iso,
    month_part,
    object_name,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_manifest import (
    HASH_ALGORITHM,
    HISTORY_FORMAT,
    HISTORY_VERSION,
    HISTORY_VERSION_ENCRYPTED,
    _download_checked,
    _metadata,
    _object_ref,
    _service_error,
    _slice_result,
    _State,
    check_metadata,
    folder_of,
    latest_version,
    list_place,
    next_version,
    put_manifest,
    read_owned_manifest,
    resolve_ref,
    unclaimed_legacy,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _col_list,
    _fallback,
    _missing_query,
    _range_where,
    _table,
    _wire_select,
    abort,
    describe_hypertable,
    fingerprint,
    fingerprint_slices,
    list_slices,
    open_connection,
    sql,
)

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
        # The host label (the folder's host) and the host named owner of the legacy layout.
        self.host = None
        self.legacy_owner = None

    def run(self, names, result):
        """Every hypertable of names, until Azure cannot be reached ('stopped'); then the state
        file remembers what the hypertables done were found to be covered by."""
        done = []
        try:
            container = self.store.ensure_container(check_mode=self.check_mode)
            self.container_exists = container["exists"]
            result["container_created"] = container["created"]
            for name in names:
                with _privileges.advising(
                    "history-archive", _privileges.login_for(self.params, self.conn), hypertable=name
                ):
                    self.run_table(name, result)
                done.append(name)
        except _azure.AzureTierError as e:
            if not _service_error(e):
                raise
            result["stopped"] = self.store.redact(e)
        if not self.check_mode:
            self.state.save(done)

    def run_table(self, name, result):
        info = describe_hypertable(self.conn, name)
        place = Place.of(self.store.prefix, self.host, self.database, info["name"], self.legacy_owner)
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
        remote = self._remote_ranges(place, todo)
        if self.container_exists and any(s["label"] not in remote for s in todo):
            note = unclaimed_legacy(self.store, place)
            if note:
                result["warnings"].append(note)
        for s in todo:
            outcome = self._try_slice(info, place, s, remote.get(s["label"]), live[s["label"]])
            _count(outcome, s, summary, result, self.check_mode)
            if outcome["status"] in ("unchanged", "archived"):
                self.state.keep(info["name"], s["label"], (outcome["covers_rows"], outcome["covers_hash"]))

    def _remote_ranges(self, place, todo):
        """What Azure holds of the slices to look at, by range label (nothing without a container)."""
        remote = {}
        by_month = {}
        for s in todo:
            by_month.setdefault(month_part(s["start"]), []).append(s)
        for month, items in sorted(by_month.items()) if self.container_exists else ():
            if len(items) <= SMALL_LISTING:
                for s in items:  # a few ranges: small listings beat one of the whole month
                    remote.update(list_place(self.store, place, "%s/%s." % (month, s["label"])))
            else:
                remote.update(list_place(self.store, place, month + "/"))
        return remote

    def _try_slice(self, info, place, s, entry, fingerprint_now):
        """slice(), with a failure of this slice only as a 'failed' outcome (an unreachable Azure
        stops the run); a connection left unusable is replaced."""
        try:
            return self.slice(info, place, s, entry, fingerprint_now)
        except _azure.AzureTierError as e:
            if _service_error(e):
                raise
            return _slice_result(info, s, status="failed", error=self.store.redact(e), error_kind=e.kind)
        except (HistoryError, _pg.PgError, mf.ManifestError, OSError) as e:
            outcome = _slice_result(info, s, status="failed", error=self.store.redact(e), error_kind=_errors.kind_of(e))
            if not abort(self.conn):
                if self.owned:
                    self.conn.close()
                self.conn, self.owned = open_connection(self.params, self.database), True
            return outcome

    def slice(self, info, place, s, entry, fingerprint_now):
        rows, digest = fingerprint_now
        latest = latest_version(entry)
        reason = "new"
        prior = prior_folder = None
        if latest is not None:
            newest = entry["manifests"][latest]
            check_metadata(self.store, newest, place)
            meta = newest["metadata"]
            if (meta.get("covers_rows"), meta.get("covers_hash")) == ("%d" % rows, digest):
                if self._latest_intact(place, entry, latest, meta):
                    if not self._to_sign(meta):
                        return _slice_result(
                            info, s, status="unchanged", version=latest, covers_rows=rows, covers_hash=digest
                        )
                    reason = "signs_unsigned"
                else:
                    reason = "replaces_damaged"
            else:
                reason = "changed"
            # The lineage may come from a manifest made before signing: the new version is
            # archived from the live rows, and vouches for nothing of it (see _vouch).
            prior = read_owned_manifest(self.store, newest, place, allow_unsigned=True)
            prior_folder = folder_of(newest["name"])
        elif entry and entry["data"]:
            reason = "retry"

        version = next_version(entry)
        depends_on, generation, reason = _lineage(prior, s, prior_folder, reason, entry)
        self._vouch(prior, depends_on, prior_folder)
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
        return self._write(info, place, s, planned, rows, digest, depends_on)

    def _to_sign(self, meta):
        """Whether an archived range is archived again to be signed: it was made before signing
        (its manifest blob has no signed_by) and this run signs and checks signatures. Metadata
        is only a hint here: retention reads and checks the manifest itself."""
        policy = self.store.signing
        return policy.signer is not None and policy.configured and not meta.get("signed_by")

    def _vouch(self, prior, depends_on, prior_folder):
        """Refuses to sign a version that would carry objects of earlier generations on the word
        of an unsigned manifest (anyone who can write to the container may have made it)."""
        if prior is None or not depends_on or "signature" in prior or not self.store.signing.configured:
            return
        raise HistoryError(
            "the newest manifest of this range in %s is unsigned and names objects of earlier generations (%s); "
            "their rows are no longer in the database, so a signed version cannot vouch for them. Nothing was "
            "archived; retention holds the range back and drops nothing. Check the range (history_restore with "
            "allow_unsigned: true into a scratch table) and see docs/SIGNING.md"
            % (self.store.url(prior_folder), ", ".join("v%d" % d["version"] for d in depends_on)),
            kind="integrity",
        )

    def _latest_intact(self, place, entry, latest, meta):
        """Whether the newest version's object is there as its manifest says (with reverify: read
        back, and the objects of earlier generations it relies on too)."""
        data = entry["data"].get(latest)
        intact = (
            data is not None
            and data["sha256"] == meta.get("object_sha256")
            and "%s" % data["size"] == meta.get("object_size")
        )
        if intact and self.reverify:
            intact = self._object_intact(data["name"], meta.get("object_sha256"))
            if intact:
                newest = entry["manifests"][latest]
                checked = read_owned_manifest(self.store, newest, place, allow_unsigned=True)
                for ref in checked.get("depends_on") or []:
                    ref = resolve_ref(entry, ref, folder_of(newest["name"]))
                    if not self._object_intact(ref["name"], ref["sha256"]):
                        raise HistoryError(
                            "%s (version %d, generation %d of this range) is damaged or missing; its rows "
                            "are no longer in the database, so they cannot be archived again. Restore it "
                            "from another copy of the container if there is one"
                            % (self.store.url(ref["name"]), ref["version"], ref["generation"]),
                            kind="integrity",
                        )
        return intact

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

    def _write(self, info, place, s, planned, live_rows, live_digest, depends_on):
        v = _Version.of(place.folder, s, planned["version"], self.work)
        prior_stage = self._stage_prior(info["columns"], depends_on)
        try:
            exported = self._export(info, s, v, prior_stage)
        finally:
            if prior_stage is not None:
                prior_stage.drop()
        if exported != v.rows:
            raise HistoryError(
                "export of %s wrote %d rows, the snapshot holds %d" % (planned["range_start"], exported, v.rows),
                kind="integrity",
            )
        v.sha256, v.size = mf.sha256_file(v.local)
        v.row_groups = row_group_count(v.local)
        verified = None
        to = self.options.get("encryption_recipients")
        if to:
            # No one on this host can read the object back from Azure: its rows are checked here,
            # then it is encrypted; what Azure returns is checked against the stored sha256.
            if self.verify:
                _reload_check(
                    self.conn, v.local, info["columns"], v.rows, v.content_hash, "%s before encryption" % v.data_name
                )
            v.local, stored, v.encryption = _encryption.encrypt_object(v.local, to)
            v.sha256, v.size = stored["sha256"], stored["size"]
        common = {
            "host": self.host,
            "database": self.database,
            "hypertable": info["name"],
            "range_start": planned["range_start"],
            "range_end": planned["range_end"],
            "version": v.version,
            "generation": planned["generation"],
        }
        data_meta = dict(common, kind=KIND_DATA, sha256=v.sha256, rows=v.rows, content_hash=v.content_hash)
        uploaded, warning = self.store.upload_file(
            _upload_item(_azure.KIND_ARCHIVE, v.local, v.data_name, v.sha256, v.size),
            _metadata(data_meta),
            self.options["access_tier"],
            self.options["tags"],
            int(self.options["block_size_mb"]),
            int(self.options["max_concurrency"]),
        )
        os.unlink(v.local)
        sent = uploaded["bytes"] if uploaded["status"] == "uploaded" else 0

        if self.verify and v.encryption:
            verified = verify_stored(self.store, v.data_name, v.sha256, self.work)
        elif self.verify:
            verified = verify_object(
                self.conn, self.store, v.data_name, v.sha256, info["columns"], v.rows, v.content_hash, self.work
            )
        manifest = self._manifest(info, s, planned, v, depends_on, verified)
        if (v.covers_rows, v.covers_hash) != (live_rows, live_digest):
            planned["covers_rows"], planned["covers_hash"] = v.covers_rows, v.covers_hash
        sent += self._upload_manifest(v, manifest, common)
        planned.update(
            rows=v.rows,
            content_hash=v.content_hash,
            bytes=sent,
            object=self.store.url(v.data_name),
            manifest=self.store.url(v.manifest_name),
            sha256=v.sha256,
            verified=bool(verified),
        )
        if warning:
            planned["warning"] = warning
        return planned

    def _stage_prior(self, columns, depends_on):
        """The rows of the earlier generations (a staging table), each object checked as it is
        loaded; None for a first generation."""
        if not depends_on:
            return None
        if any(ref.get("encrypted") for ref in depends_on):
            # Their rows cannot be read on this host: the new generation holds every live row of
            # the range (after a drop, the rows that came back) - a row re-inserted after the drop
            # is then in two generations (docs/SECURITY.md).
            return None
        prior_stage = _Stage(self.conn, columns)
        for ref in depends_on:
            path = _download_checked(self.store, ref["name"], ref["sha256"], self.work.path)
            before = prior_stage.fingerprint()
            prior_stage.load(path)
            after = prior_stage.fingerprint()
            if after[0] - before[0] != ref["rows"]:
                raise HistoryError(
                    "%s holds %d rows, its manifest says %d" % (ref["name"], after[0] - before[0], ref["rows"]),
                    kind="integrity",
                )
        return prior_stage

    def _export(self, info, s, v, prior_stage):
        """In one snapshot: the slice's count and hash (what the version covers) and the export
        of its rows - all of them, or those the earlier generations lack. Returns the rows written."""
        conn = self.conn
        columns = info["columns"]
        bounds = {"lo": s["start"], "hi": s["end"]}
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            v.covers_rows, v.covers_hash = fingerprint(conn, info, s["start"], s["end"])
            if prior_stage is None:
                source = sql.SQL("(SELECT * FROM {t} WHERE {w}) src").format(t=_table(info), w=_range_where(info))
                v.rows, v.content_hash = v.covers_rows, v.covers_hash
            else:
                delta = _Stage(conn, columns)
                with conn.cursor() as cur:
                    cur.execute(
                        sql.SQL("INSERT INTO {d} ({cols}) ").format(d=delta.ident, cols=_col_list(columns))
                        + _missing_query(columns, _table(info), _range_where(info), prior_stage.ident, None),
                        bounds,
                    )
                source = delta.ident
                v.rows, v.content_hash = delta.fingerprint()
            return export_parquet(
                conn,
                _wire_select(columns, source, order=info["time_column"]),
                bounds,
                columns,
                v.local,
                info=info,
                level=self.options["compression_level"],
            )
        finally:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")

    def _manifest(self, info, s, planned, v, depends_on, verified):
        return {
            "format": HISTORY_FORMAT,
            "format_version": HISTORY_VERSION_ENCRYPTED if v.encryption else HISTORY_VERSION,
            "database": self.database,
            "hypertable": info["name"],
            "time_column": info["time_column"],
            "time_type": info["time_type"],
            "range": {"start": planned["range_start"], "end": planned["range_end"], "label": s["label"]},
            "version": v.version,
            "generation": planned["generation"],
            "reason": planned["reason"],
            "chunks": s["chunks"],
            "columns": [
                dict({k: c[k] for k in ("name", "pg_type", "parquet_type")}, **_fallback(c)) for c in info["columns"]
            ],
            "rows": v.rows,
            "content_hash": v.content_hash,
            "hash_algorithm": HASH_ALGORITHM,
            "covers": {"rows": v.covers_rows, "content_hash": v.covers_hash, "chunks": s["chunks"]},
            "depends_on": depends_on,
            "object": {
                "name": v.data_name.rsplit("/", 1)[-1],
                "format": "parquet",
                "compression": "zstd:%d" % self.options["compression_level"],
                "row_groups": v.row_groups,
                "size_bytes": v.size,
                "sha256": v.sha256,
                **({"encryption": v.encryption} if v.encryption else {}),
            },
            "verified": verified,
            "reference_time": _iso(self.now),
            "created_at": _iso(mf.utcnow()),
            "host": self.host,
            "fqdn": socket.getfqdn(),
            "server": self.server,
        }

    def _upload_manifest(self, v, manifest, common):
        """The manifest goes last, once its object is verified. Returns the bytes sent."""
        metadata = dict(
            common,
            rows=v.rows,
            content_hash=v.content_hash,
            covers_rows=v.covers_rows,
            covers_hash=v.covers_hash,
            object_sha256=v.sha256,
            object_size=v.size,
        )
        return put_manifest(self.store, self.work, v.manifest_name, manifest, metadata, self.options["tags"])


@dataclasses.dataclass
class _Version:
    """One version of a slice as _write makes it: its blob names and local file; what the
    snapshot covers (covers_rows, covers_hash: the live slice) and what the object holds (rows,
    content_hash: all of it, or the rows earlier generations lack); then the file's sha256,
    size and row groups."""

    version: int
    data_name: str
    manifest_name: str
    local: str
    covers_rows: int = None
    covers_hash: str = None
    rows: int = None
    content_hash: str = None
    sha256: str = None
    size: int = None
    row_groups: int = None
    encryption: dict = None  # object.encryption of the manifest when the object is encrypted

    @classmethod
    def of(cls, folder, s, version, work):
        data_name = object_name(folder, s["start"], s["end"], version, DATA_EXT)
        manifest_name = object_name(folder, s["start"], s["end"], version, MANIFEST_EXT)
        return cls(version, data_name, manifest_name, work.file(data_name.rsplit("/", 1)[-1]))


def _lineage(prior, s, prior_folder, reason, entry):
    """(depends_on, generation, reason) of a new version after ``prior`` (its newest manifest, in
    prior_folder); the objects relied on are named where the listing ``entry`` finds them."""
    live_chunks = {c["name"] for c in s["chunks"]}
    depends_on = []
    generation = 1
    if prior is not None:
        prior_chunks = {c["name"] for c in prior["covers"].get("chunks", prior.get("chunks", []))}
        depends_on = [resolve_ref(entry, ref, prior_folder) for ref in prior.get("depends_on") or []]
        generation = prior["generation"]
        if reason == "replaces_damaged":
            # The newest object is unusable: the new version takes its place in its
            # generation, with the live rows the earlier generations do not hold.
            pass
        elif not live_chunks & prior_chunks:
            # The chunks archived before are gone: these rows came back after a drop.
            depends_on.append(_object_ref(prior, prior_folder))
            generation += 1
            reason = "new_generation"
    return depends_on, generation, reason


def _count(outcome, s, summary, result, check_mode):
    """Adds a slice's outcome to its hypertable's summary and to the run's result."""
    status = outcome["status"]
    if status == "unchanged":
        summary["unchanged"] += 1
        return
    if status == "failed":
        result["failures"].append(outcome)
    else:
        result["archived"].append(outcome)
        summary["archived"] += 1
        result["bytes"] += outcome.get("bytes") or 0
    if status == "failed" or check_mode:
        if summary["oldest_unarchived"] is None:
            summary["oldest_unarchived"] = _iso(s["start"])


def _upload_item(kind, path, name, sha256, size):
    return {"kind": kind, "part": None, "path": path, "name": name, "sha256": sha256, "size": size}


def verify_object(conn, store, name, sha256, columns, rows, content_hash, work):
    """Reads an uploaded object back: sha256 of what Azure returns, then the rows it decodes
    to, loaded into a temporary table, counted and hashed by PostgreSQL. Raises on mismatch."""
    path = work.file("verify.%s" % DATA_EXT)
    try:
        store.download_file(name, path, sha256)
        got = _reload_check(conn, path, columns, rows, content_hash, store.url(name), uploaded=True)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"method": "download+sha256+reload+pg-hash", "at": _iso(mf.utcnow()), "rows": got[0], "content_hash": got[1]}


def verify_stored(store, name, sha256, work):
    """An encrypted object's verification: its rows were checked before it was encrypted
    (_reload_check); what Azure returns must be the ciphertext sent (sha256)."""
    path = work.file("verify.%s" % DATA_EXT)
    try:
        store.download_file(name, path, sha256)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"method": "reload+pg-hash before encryption, download+sha256", "at": _iso(mf.utcnow())}


def _reload_check(conn, path, columns, rows, content_hash, what, uploaded=False):
    """The rows a Parquet file decodes to, loaded into a temporary table and counted and hashed by
    PostgreSQL, must be (rows, content_hash). Returns them; raises on a mismatch."""
    stage = _Stage(conn, columns)
    try:
        loaded = stage.load(path)
        got = stage.fingerprint()
    finally:
        stage.drop()
    if loaded != rows or got != (rows, content_hash):
        raise HistoryError(
            "verification of %s failed: it decodes to %d rows with content hash %s; expected %d rows with %s. %s; "
            "the next run archives a new version"
            % (
                what,
                got[0],
                got[1],
                rows,
                content_hash,
                "The object is kept but not trusted (no manifest)" if uploaded else "Nothing was uploaded",
            ),
            kind="integrity",
        )
    return got
