# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What Azure holds of the backup sets, as a part of _azure.BlobStore: the catalog (one listing,
manifests read on demand) and the catch-up of local sets it lacks. Uses only BlobStore's
transport methods and _azure_transfers' upload; this file never imports the SDK
(tests/unit/test_boundaries.py).

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import socket

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _encryption, _prune, _signing, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_MANIFEST,
    AzureTierError,
    BlobNameError,
    ConflictError,
    IntegrityError,
    _throughput,
    _Timer,
    join_name,
    parse_blob_name,
    validate_segment,
)


class Catalog:
    """What BlobStore knows of the sets in Azure: list_remote (oldest first, from one listing),
    their manifests, the local sets not yet uploaded and their catch-up (with upload_backup_set
    of _azure_transfers.Transfers). Uses only BlobStore's methods, never the SDK."""

    # -- catalog

    def folder(self, host=None, database=None):
        """<prefix>/[<host>/[<database>/]] of the backup sets' layout."""
        parts = [self.prefix]
        if host:
            parts.append(validate_segment(host, "host"))
            if database:
                parts.append(validate_segment(mf.database_segment(database), "database"))
        return join_name(*parts) + "/" if any(parts) else ""

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

    def read_manifest(self, entry, allow_unsigned=False, data=None):
        """The parsed manifest of a complete remote entry (the blob must not be archived), checked
        against the store's signing policy for the host it lies under: the entry gets its
        'signature' status; a refused one raises _signing.SignatureError (``allow_unsigned``:
        not for being unsigned; ``data``: its bytes, read already)."""
        data = self.read_blob(entry["manifest_name"]) if data is None else data
        url = self.url(entry["manifest_name"])
        manifest = mf.parse_manifest(data, source=url)
        if (manifest["backup_id"], manifest["database"]) != (entry["backup_id"], entry["database"]):
            raise IntegrityError(
                "%s describes backup %s of %s, not the set it is stored with"
                % (url, manifest["backup_id"], manifest["database"])
            )
        try:
            entry["signature"] = self.signing.check(
                manifest, entry["host"], _set_name(entry, url), allow_unsigned=allow_unsigned
            )
        except _signing.SignatureError as e:
            entry["signature"] = e.status
            raise
        return manifest

    def with_manifests(self, entries):
        """Adds 'manifest' (or 'manifest_error') and 'signature' to each complete entry, reading
        readable blobs. A manifest the signing policy refuses is not returned: its error says why."""
        for entry in entries:
            entry.setdefault("manifest", None)
            if not entry["complete"]:
                continue
            if any(b["kind"] == KIND_MANIFEST and b["tier"] == "Archive" for b in entry["blobs"]):
                entry["manifest_error"] = "the manifest blob is in the Archive tier"
                continue
            try:
                entry["manifest"] = self.read_manifest(entry)
            except (AzureTierError, mf.ManifestError, _signing.SignatureError) as e:
                entry["manifest_error"] = self.redact(e)
        return entries

    def uploaded_copies(self, backup_dir, host, database):
        """The ids of the local sets of ``database`` that Azure holds a copy of, proven as prune
        needs it (_prune.proven_uploads): the remote manifest is the local one, byte for byte of
        its seal, and the policy does not refuse it. One small read per local set."""
        local = [e for e in mf.list_local(backup_dir, database) if e["manifest"]]
        remote = self.list_remote(host, database) if local else []
        return _prune.proven_uploads(local, remote, self._manifest_or_none)

    def _manifest_or_none(self, entry):
        """The remote manifest, or None (with the reason in the entry) when it is not usable. An
        unsigned one is read: a set made before signing was enabled is proven by its seal being
        the local manifest's (a forged one is not that)."""
        try:
            return self.read_manifest(entry, allow_unsigned=True)
        except (AzureTierError, mf.ManifestError, _signing.SignatureError) as e:
            entry["manifest_error"] = self.redact(e)
            return None

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
            except (AzureTierError, mf.ManifestError, _encryption.NotEncryptable) as e:
                failures.append(
                    {
                        "backup_id": entry["backup_id"],
                        "database": entry["database"],
                        "error": self.redact(e),
                        "error_kind": e.kind,
                    }
                )
                if isinstance(
                    e, (ConflictError, IntegrityError, BlobNameError, mf.ManifestError, _encryption.NotEncryptable)
                ):
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


def _set_name(entry, url):
    """How a refusal names a remote set: 'backup <id> of <database> under host <host> (<url>)'."""
    return "backup %s of %s under host %s (%s)" % (entry["backup_id"], entry["database"], entry["host"], url)
