# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Transfers of whole backup sets, as a part of _azure.BlobStore: upload (one pass over the
archive, manifest last), the catalog of what Azure holds, catch-up of local sets, and download
with every file checked. Only BlobStore's transport methods talk to Azure; this file never
imports the SDK (tests/unit/test_boundaries.py).

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os
import shutil
import socket
import tempfile

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    DEFAULT_BLOCK_SIZE_MB,
    DEFAULT_CONCURRENCY,
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_GLOBALS,
    KIND_MANIFEST,
    MAX_BLOCK_SIZE_MB,
    TIERS,
    ArchivedError,
    AzureTierError,
    BlobNameError,
    ConfigError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    _metadata_value,
    _throughput,
    _Timer,
    blob_folder,
    blob_name,
    join_name,
    parse_blob_name,
    select_backup,
    validate_segment,
    validate_tags,
)


class Transfers:
    """What BlobStore does with whole backup sets: upload (one pass, manifest last), the catalog of
    what Azure holds, catch-up of local sets, download with checks. Uses only BlobStore's transport
    methods (upload_file, download_file, properties, read_blob, _listing...), never the SDK."""

    # -- upload

    def _set_items(self, bset, manifest, host):
        """What a set consists of, in upload order (manifest last). Each item: kind, part, path,
        name, expected sha256 and size (size None: not recorded)."""

        def item(kind, path, suffix, sha256, size, part=None):
            name = blob_name(self.prefix, host, bset.database, bset.backup_id, suffix, part)
            return {"kind": kind, "part": part, "path": path, "name": name, "sha256": sha256, "size": size}

        archive = manifest.get("archive") or {}
        items = []
        if bset.directory_format:
            files = archive.get("files") or {}
            if not files:
                raise mf.ManifestError("%s lists no files for its directory-format archive" % bset.manifest)
            extra = sorted(set(os.listdir(bset.archive)) - set(files)) if os.path.isdir(bset.archive) else []
            if extra:
                raise IntegrityError(
                    "%s holds files the manifest does not list: %s" % (bset.archive, ", ".join(extra[:5]))
                )
            for part in sorted(files):
                path = os.path.join(bset.archive, part)
                items.append(item(KIND_ARCHIVE_PART, path, mf.DIRECTORY_SUFFIX, files[part], None, part))
        else:
            if not archive.get("sha256"):
                raise mf.ManifestError("%s lacks archive.sha256" % bset.manifest)
            items.append(
                item(KIND_ARCHIVE, bset.archive, mf.ARCHIVE_SUFFIX, archive["sha256"], archive.get("size_bytes"))
            )
        roles = manifest.get("globals") or {}
        if roles or os.path.exists(bset.globals_sql):
            items.append(
                item(KIND_GLOBALS, bset.globals_sql, mf.GLOBALS_SUFFIX, roles.get("sha256"), roles.get("size_bytes"))
            )
        for entry in items:
            if not os.path.isfile(entry["path"]):
                raise IntegrityError("%s is missing: the backup set %s is incomplete" % (entry["path"], bset.backup_id))
            if entry["sha256"] is None:
                entry["sha256"] = mf.sha256_file(entry["path"])[0]
        digest, size = mf.sha256_file(bset.manifest)
        items.append(item(KIND_MANIFEST, bset.manifest, mf.MANIFEST_SUFFIX, digest, size))
        return items

    @staticmethod
    def _metadata(manifest, host, kind, sha256, part=None):
        server = manifest.get("server") or {}
        metadata = {
            "sha256": sha256,
            "backup_id": manifest["backup_id"],
            "database": manifest["database"],
            "host": host,
            "kind": kind,
            "manifest_format_version": "%s" % manifest.get("format_version"),
            "pg_version": server.get("postgresql_version"),
            "tsdb_version": server.get("timescaledb_version"),
            "archive_sha256": (manifest.get("archive") or {}).get("sha256"),
            "part": part,
            "purpose": manifest.get("purpose"),
        }
        return {k: _metadata_value(v) for k, v in metadata.items() if v not in (None, "")}

    def upload_backup_set(
        self,
        manifest_path,
        host=None,
        access_tier=None,
        tags=None,
        block_size_mb=DEFAULT_BLOCK_SIZE_MB,
        max_concurrency=DEFAULT_CONCURRENCY,
        check_mode=False,
    ):
        """Uploads the set a manifest describes: archive, globals, then the manifest. Blobs that
        exist with the same sha256 are skipped (nothing sent); a blob with other content is a
        ConflictError before anything is sent. access_tier applies to the archive only, so the
        manifest stays readable for the catalog."""
        timer = _Timer()
        if access_tier is not None and access_tier not in TIERS:
            raise ConfigError("access_tier must be one of %s" % ", ".join(TIERS))
        if not 1 <= int(block_size_mb) <= MAX_BLOCK_SIZE_MB:
            raise ConfigError("block_size_mb must be between 1 and %d" % MAX_BLOCK_SIZE_MB)
        if int(max_concurrency) < 1:
            raise ConfigError("max_concurrency must be at least 1")
        validate_tags(tags)
        manifest = mf.read_manifest(manifest_path)
        bset = mf.BackupSet.from_manifest(os.path.dirname(os.path.dirname(os.path.abspath(manifest_path))), manifest)
        if os.path.abspath(bset.manifest) != os.path.abspath(manifest_path):
            raise mf.ManifestError(
                "%s describes backup %s of %s, which belongs at %s"
                % (manifest_path, bset.backup_id, bset.database, bset.manifest)
            )
        host = validate_segment(host or manifest.get("host") or socket.getfqdn(), "host")
        items = self._set_items(bset, manifest, host)
        container = self.ensure_container(check_mode=check_mode)

        # Plan: look at every blob first (one listing of the set's names, with metadata), so a
        # conflict fails before anything is sent.
        existing = {}
        if container["exists"]:
            folder = blob_folder(self.prefix, host, bset.database, bset.backup_id)
            existing = self._listing(join_name(folder, bset.backup_id + "."))
        conflicts = []
        for item in items:
            item["remote"] = existing.get(item["name"])
            remote = item["remote"]
            if remote is not None and remote["sha256"] != item["sha256"]:
                conflicts.append(
                    "%s exists with sha256 %s, the local file %s has %s"
                    % (remote["url"], remote["sha256"] or "(none)", item["path"], item["sha256"])
                )
        if conflicts:
            raise ConflictError(
                "refusing to overwrite: %s. Blobs are never overwritten; find out why two backups share a name "
                "(same host label on two servers?) and upload under another prefix or host" % "; ".join(conflicts)
            )

        warnings = []
        blobs = []
        for item in items:
            if item["remote"] is not None:
                blobs.append(self._blob_result(item, "skipped", item["remote"]))
                continue
            if check_mode:
                size = os.path.getsize(item["path"])
                blobs.append(self._blob_result(item, "would_upload", {"size": size}))
                continue
            tier = access_tier if item["kind"] in (KIND_ARCHIVE, KIND_ARCHIVE_PART) else None
            metadata = self._metadata(manifest, host, item["kind"], item["sha256"], item["part"])
            info, warning = self.upload_file(item, metadata, tier, tags, int(block_size_mb), int(max_concurrency))
            if warning:
                warnings.append(warning)
            blobs.append(info)
        uploaded = [b for b in blobs if b["status"] in ("uploaded", "would_upload")]
        archive = blobs[0]
        sent = sum(b["bytes"] for b in blobs if b["status"] == "uploaded")
        seconds = timer.seconds()
        return {
            "changed": bool(uploaded) or container["created"],
            "backup_id": bset.backup_id,
            "database": bset.database,
            "host": host,
            "container_created": container["created"],
            # A directory-format archive: the URL of its folder.
            "url": archive["url"].rsplit("/", 1)[0] if bset.directory_format else archive["url"],
            "manifest_url": blobs[-1]["url"],
            "etag": archive.get("etag"),
            "bytes": sent,
            "duration": seconds,
            "throughput_mib_s": _throughput(sent, seconds) if sent else None,
            "blobs": blobs,
            "warnings": warnings,
        }

    def _blob_result(self, item, status, info):
        return {
            "name": item["name"],
            "url": self.url(item["name"]),
            "kind": item["kind"],
            "status": status,
            "bytes": info.get("size"),
            "sha256": item["sha256"],
            "etag": info.get("etag"),
            "tier": info.get("tier"),
            "duration": info.get("duration"),
            "throughput_mib_s": info.get("throughput_mib_s"),
        }

    # -- catalog

    def list_remote(self, host=None, database=None):
        """Backup sets under <prefix>/[<host>/[<database>/]], oldest first, from one listing
        with metadata (no blob is read). An entry is complete when its manifest blob exists."""
        sets = collections.OrderedDict()
        for name, info in self._listing(self.folder(host, database if host else None)).items():
            parsed = parse_blob_name(name, self.prefix)
            if parsed is None or (database and parsed["database"] != database):
                continue
            key = (parsed["host"], parsed["database"], parsed["backup_id"])
            entry = sets.get(key)
            if entry is None:
                entry = sets[key] = {
                    "host": parsed["host"],
                    "database": parsed["database"],
                    "backup_id": parsed["backup_id"],
                    "time": mf.isoformat(mf.backup_id_time(parsed["backup_id"])),
                    "complete": False,
                    "directory_format": False,
                    "archived": False,
                    "bytes": 0,
                    "blobs": [],
                    "manifest_name": None,
                    "url": None,
                }
            purpose = info.pop("metadata").get("purpose")
            if purpose:
                # Recorded at upload: a safety backup is known as one without reading its manifest.
                entry["purpose"] = purpose
            info.update({"kind": parsed["kind"], "part": parsed["part"]})
            entry["blobs"].append(info)
            entry["bytes"] += info["size"] or 0
            entry["archived"] = entry["archived"] or info["tier"] == "Archive"
            if parsed["kind"] == KIND_MANIFEST:
                entry["complete"] = True
                entry["manifest_name"] = name
            elif parsed["kind"] == KIND_ARCHIVE:
                entry["url"] = info["url"]
            elif parsed["kind"] == KIND_ARCHIVE_PART:
                entry["directory_format"] = True
                entry["url"] = info["url"].rsplit("/", 1)[0]
        return sorted(sets.values(), key=lambda e: (e["backup_id"], e["host"], e["database"]))

    def read_manifest(self, entry):
        """The parsed manifest of a complete remote entry (the blob must not be archived)."""
        data = self.read_blob(entry["manifest_name"])
        manifest = mf.parse_manifest(data, source=self.url(entry["manifest_name"]))
        if (manifest["backup_id"], manifest["database"]) != (entry["backup_id"], entry["database"]):
            raise IntegrityError(
                "%s describes backup %s of %s, not the set it is stored with"
                % (self.url(entry["manifest_name"]), manifest["backup_id"], manifest["database"])
            )
        return manifest

    def with_manifests(self, entries):
        """Adds 'manifest' (or 'manifest_error') to each complete entry, reading readable blobs."""
        for entry in entries:
            entry.setdefault("manifest", None)
            if not entry["complete"]:
                continue
            if any(b["kind"] == KIND_MANIFEST and b["tier"] == "Archive" for b in entry["blobs"]):
                entry["manifest_error"] = "the manifest blob is in the Archive tier"
                continue
            try:
                entry["manifest"] = self.read_manifest(entry)
            except (AzureTierError, mf.ManifestError) as e:
                entry["manifest_error"] = self.redact(e)
        return entries

    # -- catch-up

    def pending_uploads(self, backup_dir, database=None, host=None, look_remote=True, verified_only=True):
        """Local sets whose manifest blob is not in Azure, oldest first, and the local sets that
        are not uploaded with the reason: an unreadable manifest, or (verified_only) no passing
        verification of this very archive (_verify's <id>.verify.json)."""
        usable, unusable = [], []
        for e in mf.list_local(backup_dir, database):
            error = (e["error"] or "unreadable manifest") if e["manifest"] is None else None
            if error is None and verified_only:
                if not _verify.is_verified(mf.BackupSet.from_manifest(backup_dir, e["manifest"]), e["manifest"]):
                    error = "not verified: no passing verification of this archive (run verify)"
            if error is None:
                usable.append(e)
            else:
                unusable.append({"backup_id": e["backup_id"], "database": e["database"], "error": error})

        def key(entry):
            return (host or entry["manifest"].get("host") or socket.getfqdn(), entry["database"], entry["backup_id"])

        done = set()
        for h in sorted({key(e)[0] for e in usable}) if look_remote else []:
            done.update(
                (r["host"], r["database"], r["backup_id"]) for r in self.list_remote(h, database) if r["complete"]
            )
        return [e for e in usable if key(e) not in done], unusable

    def catch_up(self, backup_dir, database=None, host=None, check_mode=False, verified_only=True, **upload_options):
        """Uploads every verified local set not yet in Azure, oldest first. A set that is damaged
        or conflicts is reported and skipped; an unreachable or refusing service stops the run.
        Unverified sets (verified_only) and unreadable ones are listed in 'unusable', not sent.
        Returns a result with 'failures' (non-empty means the run should fail)."""
        timer = _Timer()
        container = self.ensure_container(check_mode=check_mode)
        pending, unusable = self.pending_uploads(
            backup_dir, database, host, look_remote=container["exists"], verified_only=verified_only
        )
        sets, failures, warnings = [], [], []
        stopped = None
        for entry in pending:
            try:
                result = self.upload_backup_set(
                    entry["manifest_path"], host=host, check_mode=check_mode, **upload_options
                )
            except (AzureTierError, mf.ManifestError) as e:
                failures.append(
                    {"backup_id": entry["backup_id"], "database": entry["database"], "error": self.redact(e)}
                )
                if isinstance(e, (ConflictError, IntegrityError, BlobNameError, mf.ManifestError)):
                    continue  # this set only
                stopped = self.redact(e)
                break
            warnings.extend(result.pop("warnings", []))
            sets.append(result)
        sent = sum(s["bytes"] for s in sets)
        seconds = timer.seconds()
        return {
            "changed": any(s["changed"] for s in sets) or container["created"],
            "container_created": container["created"],
            "uploaded": [s["backup_id"] for s in sets if s["changed"]],
            "sets": sets,
            "failures": failures,
            "unusable": unusable,
            "stopped": stopped,
            "bytes": sent,
            "duration": seconds,
            "throughput_mib_s": _throughput(sent, seconds) if sent else None,
            "warnings": warnings,
        }

    # -- download

    def download_backup(
        self,
        dest_dir,
        database,
        host=None,
        backup_id=None,
        before=None,
        rehydrate=False,
        rehydrate_priority="Standard",
        rehydrate_tier="Hot",
        check_mode=False,
    ):
        """Fetches a complete set into <dest_dir>/<database>/ (the local layout), verifying every
        file against the manifest and writing each atomically, the manifest last. A set with a
        blob in the Archive tier raises ArchivedError, or with rehydrate starts rehydration and
        returns 'rehydration': 'pending'."""
        timer = _Timer()
        host = validate_segment(host or socket.getfqdn(), "host")
        mf.validate_database_name(database)
        self.ensure_container(create=False)
        entries = self.list_remote(host, database)
        entry = select_backup(entries, backup_id=backup_id, as_of=before)
        if entry is None:
            complete = [e["backup_id"] for e in entries if e["complete"]]
            raise NotFoundError(
                "no complete backup of %s from host %s matches %s under %s in container %s; %s"
                % (
                    database,
                    host,
                    "backup_id %s" % backup_id
                    if backup_id and backup_id != "latest"
                    else ("'at or before %s'" % before if before else "'latest'"),
                    self.folder(host, database),
                    self.container,
                    "available: %s" % ", ".join(complete[-5:]) if complete else "there are none",
                )
            )
        result = {
            "backup_id": entry["backup_id"],
            "database": database,
            "host": host,
            "url": entry["url"],
            "rehydration": None,
            "changed": False,
            "files": [],
            "bytes": 0,
        }
        archived = [b for b in entry["blobs"] if b["tier"] == "Archive"]
        if archived:
            return self._rehydrate(entry, archived, result, rehydrate, rehydrate_priority, rehydrate_tier, check_mode)

        manifest_bytes = self.read_blob(entry["manifest_name"])
        manifest = mf.parse_manifest(manifest_bytes, source=self.url(entry["manifest_name"]))
        if (manifest["backup_id"], manifest["database"]) != (entry["backup_id"], database):
            raise IntegrityError("%s describes another backup" % self.url(entry["manifest_name"]))
        bset = mf.BackupSet.from_manifest(dest_dir, manifest)
        result["manifest_path"] = bset.manifest
        result["archive_path"] = bset.archive
        if os.path.exists(bset.manifest):
            try:
                local = mf.read_manifest(bset.manifest)
            except mf.ManifestError as e:
                raise IntegrityError("%s exists but cannot be read (%s); move it away" % (bset.manifest, e)) from None
            if local["manifest_sha256"] != manifest["manifest_sha256"]:
                raise ConflictError(
                    "%s exists with another manifest than %s; not overwritten"
                    % (bset.manifest, self.url(entry["manifest_name"]))
                )
            result["duration"] = timer.seconds()
            return result
        for path in (bset.archive, bset.globals_sql):
            if os.path.exists(path):
                raise ConflictError(
                    "%s exists without its manifest (an incomplete set or a dump in progress); move it away or "
                    "download into another directory" % path
                )
        result["changed"] = True
        if check_mode:
            result["bytes"] = entry["bytes"]
            return result
        if not os.path.isdir(bset.folder):
            os.makedirs(bset.folder, mode=0o700)
        blobs = {(b["kind"], b["part"]): b for b in entry["blobs"]}
        archive = manifest["archive"]
        if bset.directory_format:
            files = archive.get("files") or {}
            self._download_directory(entry, bset, files, blobs)
            result["files"].extend(os.path.join(bset.archive, f) for f in sorted(files))
        else:
            name = blob_name(self.prefix, host, database, bset.backup_id, mf.ARCHIVE_SUFFIX)
            self._require_blob(blobs, KIND_ARCHIVE, None, name)
            self.download_file(name, bset.archive, archive["sha256"])
            result["files"].append(bset.archive)
        globals_info = manifest.get("globals")
        if globals_info:
            name = blob_name(self.prefix, host, database, bset.backup_id, mf.GLOBALS_SUFFIX)
            self._require_blob(blobs, KIND_GLOBALS, None, name)
            self.download_file(name, bset.globals_sql, globals_info["sha256"])
            result["files"].append(bset.globals_sql)
        mf.atomic_write_bytes(bset.manifest, manifest_bytes)
        result["files"].append(bset.manifest)
        result["bytes"] = entry["bytes"]
        result["duration"] = timer.seconds()
        result["throughput_mib_s"] = _throughput(entry["bytes"], result["duration"])
        return result

    def _rehydrate(self, entry, archived, result, rehydrate, priority, tier, check_mode):
        pending = [b for b in archived if (b.get("archive_status") or "").startswith("rehydrate-pending")]
        result["archived_blobs"] = [b["url"] for b in archived]
        if len(pending) == len(archived):
            result["rehydration"] = "pending"
            result["msg"] = "rehydration of %d blob(s) of backup %s is in progress; download again when it is done" % (
                len(pending),
                entry["backup_id"],
            )
            return result
        if not rehydrate:
            raise ArchivedError(
                "backup %s of %s is in the Archive tier (%s) and cannot be read. Re-run with rehydrate: true "
                "(rehydrate_priority: Standard takes up to 15 hours, High under an hour for blobs under 10 GB) "
                "and download it once rehydration has finished"
                % (entry["backup_id"], entry["database"], ", ".join(b["url"] for b in archived[:3]))
            )
        if tier not in ("Hot", "Cool", "Cold"):
            raise ConfigError("rehydrate_tier must be Hot, Cool or Cold")
        result.update(
            {"changed": True, "rehydration": "pending", "rehydrate_priority": priority, "rehydrate_tier": tier}
        )
        result["msg"] = (
            "rehydration of %d blob(s) of backup %s started (%s priority); download again when it is done"
            % (len(archived) - len(pending), entry["backup_id"], priority)
        )
        if check_mode:
            return result
        for info in archived:
            if info not in pending:
                self._start_rehydration(info["name"], tier, priority)
        return result

    def _require_blob(self, blobs, kind, part, name):
        if (kind, part) not in blobs:
            raise IntegrityError("%s is missing although the manifest lists it" % self.url(name))

    def _download_directory(self, entry, bset, files, blobs):
        folder = bset.folder
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(bset.archive) + ".", suffix=mf.PARTIAL_SUFFIX, dir=folder)
        try:
            for part in sorted(files):
                name = blob_name(self.prefix, entry["host"], bset.database, bset.backup_id, mf.DIRECTORY_SUFFIX, part)
                self._require_blob(blobs, KIND_ARCHIVE_PART, part, name)
                self.download_file(name, os.path.join(tmp, validate_segment(part, "archive file name")), files[part])
            os.rename(tmp, bset.archive)
            mf.fsync_dir(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
