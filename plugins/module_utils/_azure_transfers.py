# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Transfers of whole backup sets, as a part of _azure.BlobStore: upload (one pass over the
archive, manifest last) and download with every file checked, rehydration included. The catalog
and catch-up are _azure_catalog's. Only BlobStore's transport methods talk to Azure; this file
never imports the SDK (tests/unit/test_boundaries.py).

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import shutil
import socket
import tempfile

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _encryption, _lock
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    DEFAULT_BLOCK_SIZE_MB,
    DEFAULT_CONCURRENCY,
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_GLOBALS,
    KIND_MANIFEST,
    MAX_BLOCK_SIZE_MB,
    PROGRESS_MIN_BYTES,
    TIERS,
    ArchivedError,
    ConfigError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    _metadata_value,
    _NoProgress,
    _throughput,
    _Timer,
    blob_folder,
    blob_name,
    join_name,
    select_backup,
    validate_segment,
    validate_tags,
)


class Transfers:
    """What BlobStore does with whole backup sets: upload (one pass, manifest last) and download
    with checks (list_remote is _azure_catalog.Catalog's). Uses only BlobStore's transport
    methods (upload_file, download_file, properties, read_blob, _listing...), never the SDK."""

    @contextlib.contextmanager
    def _transfer(self, action, name, size):
        """The progress reporter of one transfer (a silent one without self.progress or for a
        small blob); ends it with the final line, or with 'failed after' and the redacted reason."""
        if self.progress is None or size < PROGRESS_MIN_BYTES:
            reporter = _NoProgress()
        else:
            reporter = self.progress("%s %s" % (action, name.rsplit("/", 1)[-1]), size)
        try:
            yield reporter
        except BaseException as e:
            reporter.finish(error=self.redact(e) or type(e).__name__)
            raise
        reporter.finish()

    # -- upload

    def _set_items(self, bset, manifest, host):
        """What a set consists of, in upload order (manifest last). Each item: kind, part, path,
        name, expected sha256 and size (size None: not recorded). An encrypted set's archive and
        globals are their stored form (_encryption), under the same blob names."""

        def item(kind, path, suffix, sha256, size, part=None):
            name = blob_name(self.prefix, host, bset.database, bset.backup_id, suffix, part)
            return {"kind": kind, "part": part, "path": path, "name": name, "sha256": sha256, "size": size}

        archive = manifest.get("archive") or {}
        stored = {p[0]: p for p in _encryption.parts(bset, manifest)}
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
        elif "archive" in stored:
            _part, _plain, path, _p, enc = stored["archive"]
            items.append(item(KIND_ARCHIVE, path, mf.ARCHIVE_SUFFIX, enc["sha256"], enc["size"]))
        else:
            if not archive.get("sha256"):
                raise mf.ManifestError("%s lacks archive.sha256" % bset.manifest)
            items.append(
                item(KIND_ARCHIVE, bset.archive, mf.ARCHIVE_SUFFIX, archive["sha256"], archive.get("size_bytes"))
            )
        roles = manifest.get("globals") or {}
        if "globals" in stored:
            _part, _plain, path, _p, enc = stored["globals"]
            items.append(item(KIND_GLOBALS, path, mf.GLOBALS_SUFFIX, enc["sha256"], enc["size"]))
        elif roles or os.path.exists(bset.globals_sql):
            items.append(
                item(KIND_GLOBALS, bset.globals_sql, mf.GLOBALS_SUFFIX, roles.get("sha256"), roles.get("size_bytes"))
            )
        for entry in items:
            if entry["sha256"] is None and os.path.isfile(entry["path"]):
                entry["sha256"] = mf.sha256_file(entry["path"])[0]
        digest, size = mf.sha256_file(bset.manifest)
        items.append(item(KIND_MANIFEST, bset.manifest, mf.MANIFEST_SUFFIX, digest, size))
        return items

    @staticmethod
    def _require_files(items, bset, manifest):
        """Every item that is to be sent is there (an encrypted set's stored form is removed
        once its manifest is in Azure: it cannot be sent again)."""
        for entry in items:
            if entry["remote"] is not None or os.path.isfile(entry["path"]):
                continue
            if _encryption.section(manifest) and entry["path"].endswith(mf.STORED_SUFFIX):
                raise IntegrityError(
                    "%s is missing: the encrypted form of backup %s is removed once the set is in Azure, and its blob "
                    "%s is not there any more. Take a new backup (an encryption is never repeated: it would not "
                    "match the signed manifest)" % (entry["path"], bset.backup_id, entry["name"])
                )
            raise IntegrityError("%s is missing: the backup set %s is incomplete" % (entry["path"], bset.backup_id))

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
            # The stored form is age ciphertext; sha256 is its digest, archive_sha256 the plaintext's.
            "encryption": (_encryption.section(manifest) or {}).get("format") if kind != KIND_MANIFEST else None,
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
        stage=False,
        staged=None,
        encrypt_to=None,
    ):
        """Uploads the set a manifest describes: archive, globals, then the manifest. Blobs that
        exist with the same sha256 are skipped (nothing sent); a blob with other content is a
        ConflictError before anything is sent. access_tier applies to the archive only, so the
        manifest stays readable for the catalog. ``stage``: all but the manifest - a set without
        its manifest is no backup to any reader; the upload that follows sends only the manifest.
        ``staged``: {blob name: FollowingUpload result} for blocks staged during the dump.
        ``encrypt_to``: age recipients - a set in clear is encrypted to them first (its manifest
        rewritten and signed again: _encryption.encrypt_existing), so nothing leaves in clear."""
        timer = _Timer()
        _check_upload_options(access_tier, block_size_mb, max_concurrency, tags)
        manifest, bset = _local_set(manifest_path)
        options = (access_tier, tags, int(block_size_mb), int(max_concurrency), staged or {})
        with _lock.reading_folder(bset.folder):  # no prune removes the set while it is sent
            warning = None
            if encrypt_to and _encryption.section(manifest) is None and not check_mode:
                sent = self._sent_in_clear(bset, manifest, host)
                if sent:
                    # Its bulk left in clear before encryption was on: finished as it was, rather
                    # than never (an encrypted form would conflict with those blobs).
                    warning = (
                        "backup %s was partly uploaded in clear before encryption was on (%s): its upload is "
                        "completed in clear" % (bset.backup_id, ", ".join(sent))
                    )
                else:
                    manifest = _encryption.encrypt_existing(bset, manifest, encrypt_to, self.signing)
            result = self._upload_set(manifest, bset, host, options, check_mode, stage, timer)
            if warning:
                result["warnings"].append(warning)
            return result

    def _sent_in_clear(self, bset, manifest, host):
        """The URLs of blobs of a clear set that are in Azure already (an upload cut short)."""
        host = validate_segment(host or manifest.get("host") or socket.getfqdn(), "host")
        if not self.ensure_container(check_mode=True)["exists"]:
            return []
        folder = blob_folder(self.prefix, host, bset.database, bset.backup_id)
        return sorted(info["url"] for info in self._listing(join_name(folder, bset.backup_id + ".")).values())

    def archive_blob_name(self, host, bset):
        """The blob a one-file set's archive is uploaded as."""
        return blob_name(self.prefix, validate_segment(host, "host"), bset.database, bset.backup_id, mf.ARCHIVE_SUFFIX)

    def _upload_set(self, manifest, bset, host, options, check_mode, stage, timer):
        access_tier, tags, block_size_mb, max_concurrency, staged = options
        host = validate_segment(host or manifest.get("host") or socket.getfqdn(), "host")
        items = [i for i in self._set_items(bset, manifest, host) if not (stage and i["kind"] == KIND_MANIFEST)]
        container = self.ensure_container(check_mode=check_mode)
        self._match_remote(items, host, bset, container["exists"])
        self._require_files(items, bset, manifest)

        warnings = []
        blobs = []
        for item in items:
            if item["remote"] is not None:
                blobs.append(self._blob_result(item, "skipped", item["remote"]))
                continue
            if check_mode:
                size = item["size"] if item["size"] is not None else os.path.getsize(item["path"])
                blobs.append(self._blob_result(item, "would_upload", {"size": size}))
                continue
            tier = access_tier if item["kind"] in (KIND_ARCHIVE, KIND_ARCHIVE_PART) else None
            metadata = self._metadata(manifest, host, item["kind"], item["sha256"], item["part"])
            info, warning = self.upload_file(
                item, metadata, tier, tags, block_size_mb, max_concurrency, staged.get(item["name"])
            )
            if warning:
                warnings.append(warning)
            blobs.append(info)
        if not (stage or check_mode):
            _encryption.remove_stored(bset, manifest)  # the whole set is in Azure
        return _upload_result(bset, host, container, blobs, warnings, timer.seconds())

    def _match_remote(self, items, host, bset, container_exists):
        """Sets each item's 'remote' (the blob of its name, or None) from one listing of the set's
        names, with metadata; raises ConflictError, before anything is sent, when a blob of the
        set exists with other content."""
        existing = {}
        if container_exists:
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
        entry = self._select_remote(host, database, backup_id, before)
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

        manifest_bytes, manifest, result["signature"] = self._checked_manifest(entry, database, host)
        bset = mf.BackupSet.from_manifest(dest_dir, manifest)
        result["manifest_path"] = bset.manifest
        result["archive_path"] = bset.archive
        result["encrypted"] = _encryption.section(manifest) is not None
        with _lock.reading_folder(bset.folder):  # no prune removes a set being written or checked
            return self._download_set(entry, bset, manifest, manifest_bytes, host, result, timer, check_mode)

    def _download_set(self, entry, bset, manifest, manifest_bytes, host, result, timer, check_mode):
        if self._have_locally(bset, manifest, entry):
            result["duration"] = timer.seconds()
            return result
        result["changed"] = True
        if check_mode:
            result["bytes"] = entry["bytes"]
            return result
        result["files"] = self._fetch_set(entry, bset, manifest, host)
        mf.atomic_write_bytes(bset.manifest, manifest_bytes)
        result["files"].append(bset.manifest)
        result["bytes"] = entry["bytes"]
        result["duration"] = timer.seconds()
        result["throughput_mib_s"] = _throughput(entry["bytes"], result["duration"])
        return result

    def _checked_manifest(self, entry, database, host):
        """(bytes, manifest, signature status) of the set download_backup fetches, read before any
        archive byte: a manifest of another set, or one the signing policy refuses for the host it
        lies under, stops the download here (_signing.SignatureError)."""
        url = self.url(entry["manifest_name"])
        manifest_bytes = self.read_blob(entry["manifest_name"])
        manifest = mf.parse_manifest(manifest_bytes, source=url)
        if (manifest["backup_id"], manifest["database"]) != (entry["backup_id"], database):
            raise IntegrityError("%s describes another backup" % url)
        what = "backup %s of %s under host %s (%s)" % (entry["backup_id"], database, host, url)
        return manifest_bytes, manifest, self.signing.check(manifest, host, what)

    def _select_remote(self, host, database, backup_id, before):
        """The complete remote set download_backup is asked for; NotFoundError lists the others."""
        entries = self.list_remote(host, database)
        entry = select_backup(entries, backup_id=backup_id, as_of=before)
        if entry is not None:
            return entry
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

    def _have_locally(self, bset, manifest, entry):
        """True when the very set is already at its local place; raises ConflictError when
        something else is in the way (another manifest, or files without their manifest)."""
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
            return True
        for path in (bset.archive, bset.globals_sql) + tuple(p[2] for p in _encryption.parts(bset, manifest)):
            if os.path.exists(path):
                raise ConflictError(
                    "%s exists without its manifest (an incomplete set or a dump in progress); move it away or "
                    "download into another directory" % path
                )
        return False

    def _fetch_set(self, entry, bset, manifest, host):
        """Downloads the archive and the globals of a set, each checked against the manifest.
        Returns the local paths written (the manifest, written last, is the caller's)."""
        database = bset.database
        if not os.path.isdir(bset.folder):
            os.makedirs(bset.folder, mode=0o700)
        blobs = {(b["kind"], b["part"]): b for b in entry["blobs"]}
        archive = manifest["archive"]
        # An encrypted set arrives in its stored form, checked against its stored digests; it is
        # decrypted by whoever reads it (_encryption.open_set), with an identity given then.
        stored = {p[0]: (p[2], p[4]["sha256"]) for p in _encryption.parts(bset, manifest)}
        files = []
        if bset.directory_format:
            parts = archive.get("files") or {}
            self._download_directory(entry, bset, parts, blobs)
            files.extend(os.path.join(bset.archive, f) for f in sorted(parts))
        else:
            name = blob_name(self.prefix, host, database, bset.backup_id, mf.ARCHIVE_SUFFIX)
            self._require_blob(blobs, KIND_ARCHIVE, None, name)
            path, digest = stored.get("archive", (bset.archive, archive["sha256"]))
            self.download_file(name, path, digest)
            files.append(path)
        globals_info = manifest.get("globals")
        if globals_info:
            name = blob_name(self.prefix, host, database, bset.backup_id, mf.GLOBALS_SUFFIX)
            self._require_blob(blobs, KIND_GLOBALS, None, name)
            path, digest = stored.get("globals", (bset.globals_sql, globals_info["sha256"]))
            self.download_file(name, path, digest)
            files.append(path)
        return files

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


def _check_upload_options(access_tier, block_size_mb, max_concurrency, tags):
    if access_tier is not None and access_tier not in TIERS:
        raise ConfigError("access_tier must be one of %s" % ", ".join(TIERS))
    if not 1 <= int(block_size_mb) <= MAX_BLOCK_SIZE_MB:
        raise ConfigError("block_size_mb must be between 1 and %d" % MAX_BLOCK_SIZE_MB)
    if int(max_concurrency) < 1:
        raise ConfigError("max_concurrency must be at least 1")
    validate_tags(tags)


def _local_set(manifest_path):
    """The manifest at manifest_path and the backup set it describes, which must be its own."""
    manifest = mf.read_manifest(manifest_path)
    bset = mf.BackupSet.from_manifest(os.path.dirname(os.path.dirname(os.path.abspath(manifest_path))), manifest)
    if os.path.abspath(bset.manifest) != os.path.abspath(manifest_path):
        raise mf.ManifestError(
            "%s describes backup %s of %s, which belongs at %s"
            % (manifest_path, bset.backup_id, bset.database, bset.manifest)
        )
    return manifest, bset


def _upload_result(bset, host, container, blobs, warnings, seconds):
    uploaded = [b for b in blobs if b["status"] in ("uploaded", "would_upload")]
    archive = blobs[0]
    sent = sum(b["bytes"] for b in blobs if b["status"] == "uploaded")
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
