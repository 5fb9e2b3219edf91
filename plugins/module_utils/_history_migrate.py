# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration of the history layout of earlier releases, without host
(``<prefix>/history/<database>/<schema>.<table>/...``), into the folder of the one host the
operator names its owner (``<prefix>/history/<host>/<database>/<schema>.<table>/...``).

Nothing is uploaded again: each object is copied by Azure within the account (server-side copy),
read back and checked against the sha256 its manifest records; the manifest is written last,
recording the host, and only then is the version visible in the host's folder. The legacy
objects stay where they are (removing them is the operator's choice, docs/HISTORY.md). A second
run copies nothing: a version whose manifest is in the host's folder, for the same object, is
done. Failed attempts (objects without a manifest) are not copied: they were never trusted.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import _Work

# Below <prefix>/history/<database>/: <schema>.<table>/<YYYY>/<MM>/<leaf>. A table segment always
# holds a '.'; the host layout of a host named like the database has one more level.
LEGACY_REL_RE = re.compile(r"^([^/]*\.[^/]*)/(\d{4})/(\d{2})/([^/]+)$")


def legacy_root(prefix, database):
    """<prefix>/history/<database>: where the layout without host kept a database's history."""
    segment = _azure.validate_segment(mf.database_segment(database), "database")
    return _azure.join_name(_azure.validate_prefix(prefix), hl.HISTORY_DIR, segment)


def legacy_ranges(listing, root):
    """The legacy history blobs of a listing (name -> info with size, sha256, metadata) under root,
    by (table segment, range label), in list_ranges' form. Other names are left out."""
    ranges = {}
    for name, info in listing.items():
        m = LEGACY_REL_RE.match(name[len(root) + 1 :]) if name.startswith(root + "/") else None
        parsed = hl.parse_leaf(name) if m else None
        if parsed is None or (m.group(2), m.group(3)) != tuple(hl.month_part(parsed[0]).split("/")):
            continue
        start, end, version, kind = parsed
        label = hl.range_label(start, end)
        entry = ranges.setdefault((m.group(1), label), {"start": start, "end": end, "data": {}, "manifests": {}})
        entry["data" if kind == hl.KIND_DATA else "manifests"][version] = {
            "name": name,
            "size": info["size"],
            "sha256": info.get("sha256"),
            "metadata": dict(info.get("metadata") or {}),
        }
    return ranges


def plan_range(legacy, present, host):
    """What the migration does with the versions of one legacy range, given what the host's folder
    holds of it (list_ranges' entry, or None): [(version, step)] in version order, step 'done'
    (the host's folder has this version's manifest, marked as this host's, for the same object),
    'conflict' (it has this version with another object, or marked as another host's) or 'copy'
    (an object already copied, with the same sha256, is checked and kept); and the versions
    that are failed attempts (an object without a manifest), which are not copied."""
    present = present or {"data": {}, "manifests": {}}
    steps = []
    for version in sorted(legacy["manifests"]):
        wanted = legacy["manifests"][version]["metadata"].get("object_sha256")
        mine, data = present["manifests"].get(version), present["data"].get(version)
        if mine is not None:
            same = (mine["metadata"].get("host"), mine["metadata"].get("object_sha256")) == (host, wanted)
            steps.append((version, "done" if same else "conflict"))
        elif data is not None and data["sha256"] != wanted:
            steps.append((version, "conflict"))
        else:
            steps.append((version, "copy"))
    return steps, sorted(set(legacy["data"]) - set(legacy["manifests"]))


def migrated_manifest(manifest, host, source_name, objects, now):
    """The manifest of a migrated version: the legacy one with this host, the objects it relies on
    named in the host's folder (objects: version -> name), and where it came from. Sealed anew
    when it is written, never signed: where a legacy manifest came from cannot be proven, so the
    range stays unsigned until chunk_archive archives it again from the live rows."""
    new = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "signature")}
    new["host"] = host
    new["depends_on"] = [dict(ref, name=objects[ref["version"]]) for ref in manifest.get("depends_on") or []]
    new["migrated_from"] = {
        "manifest": source_name,
        "manifest_sha256": manifest.get("manifest_sha256"),
        "host": manifest.get("host"),
        "at": hl._iso(now),
    }
    return new


def _new_result(database, host, root):
    return {
        "changed": False,
        "database": database,
        "host": host,
        "legacy_folder": root,
        "migrated": [],
        "already": 0,
        "conflicts": [],
        "refused": [],
        "failures": [],
        "attempts_left": 0,
        "bytes_copied": 0,
        "complete": False,
    }


def migrate_legacy(database, store, host_label=None, legacy_owner=None, check_mode=False, work_dir=None, now=None):
    """Copies the legacy history of `database` into host_label's folder (default the FQDN), which
    must be the legacy owner the operator named: any host of a fleet may have written it, so no
    host takes it unasked. Returns what was migrated, already there, refused (a manifest of
    another database or table in this folder), in conflict (the host's folder has the same
    version with other content: the legacy one is kept and not used) or failed."""
    mf.validate_database_name(database)
    host = hl.host_label(host_label)
    _azure.validate_segment(host, "host")
    if not legacy_owner:
        raise hl.HistoryError(
            "no legacy owner given: name the host whose history the layout without host holds (legacy_owner, "
            "TSDB_HISTORY_LEGACY_OWNER) and run the migration on that host",
            kind="config",
        )
    if legacy_owner != host:
        raise hl.HistoryError(
            "the legacy history of %s belongs to %s (legacy_owner); this is %s: run the migration on %s"
            % (database, legacy_owner, host, legacy_owner),
            kind="config",
        )
    root = legacy_root(store.prefix, database)
    result = _new_result(database, host, store.url(root))
    store.ensure_container(create=False)
    work = _Work(work_dir)
    try:
        run = _Migration(store, database, host, work, check_mode, mf.utcnow() if now is None else now, result)
        for (segment, label), entry in sorted(legacy_ranges(store._listing(root + "/"), root).items()):
            run.range(segment, label, entry)
    finally:
        work.close()
    result["changed"] = bool(result["migrated"]) and not check_mode
    result["complete"] = not (result["conflicts"] or result["refused"] or result["failures"] or check_mode)
    return result


class _Migration:
    """One migrate_legacy run: its store, host and options, and the result it fills in."""

    def __init__(self, store, database, host, work, check_mode, now, result):
        self.store, self.database, self.host, self.work = store, database, host, work
        self.check_mode, self.now, self.result = check_mode, now, result
        self.checked = set()  # copies read back and found right in this run

    def range(self, segment, label, entry):
        """The versions of one legacy range, oldest first."""
        host_month = _azure.join_name(
            _azure.validate_prefix(self.store.prefix),
            hl.HISTORY_DIR,
            self.host,
            mf.database_segment(self.database),
            segment,
            hl.month_part(entry["start"]),
        )
        present = hm.list_ranges(self.store, "%s/%s." % (host_month, label)).get(label)
        steps, attempts = plan_range(entry, present, self.host)
        self.result["attempts_left"] += len(attempts)
        for version, step in steps:
            item = {"table_folder": segment, "range": label, "version": version}
            if step == "done":
                self.result["already"] += 1
            elif step == "conflict":
                item["reason"] = (
                    "%s/%s.v%d exists in this host's folder with other content (archived there before the legacy "
                    "owner was set?); the legacy version is kept and not used" % (host_month, label, version)
                )
                self.result["conflicts"].append(item)
            else:
                self._try_version(item, entry, version, host_month)

    def _try_version(self, item, entry, version, host_month):
        try:
            item.update(self.version(entry, version, host_month))
            self.result["migrated"].append(item)
        except hl.HistoryError as e:
            item.update(error=self.store.redact(e), error_kind=e.kind)
            self.result["refused" if isinstance(e, hm.ForeignManifest) else "failures"].append(item)
        except _azure.AzureTierError as e:
            if hm._service_error(e):
                raise
            item.update(error=self.store.redact(e), error_kind=e.kind)
            self.result["failures"].append(item)

    def version(self, entry, version, host_month):
        """Copies one legacy version (its object and those it relies on), checks the copies, then
        writes its manifest. Returns what the result records of it."""
        info = entry["manifests"][version]
        manifest = hm.read_manifest_blob(self.store, info["name"])
        place = hl.Place.of(self.store.prefix, self.host, self.database, manifest["hypertable"], self.host)
        if place.legacy != hm.folder_of(hm.folder_of(hm.folder_of(info["name"]))):
            raise hm.ForeignManifest(
                "%s records hypertable %s, whose legacy folder is %s: refused, not migrated"
                % (self.store.url(info["name"]), place.hypertable, place.legacy),
                kind="integrity",
            )
        hm.check_owner(manifest, place, info["name"], legacy=True)
        legacy_month = hm.folder_of(info["name"])
        refs = [hm._object_ref(manifest, legacy_month)]
        refs += [hm.resolve_ref(entry, r, legacy_month) for r in manifest.get("depends_on") or []]
        objects = {ref["version"]: "%s/%s" % (host_month, ref["name"].rsplit("/", 1)[-1]) for ref in refs}
        copied = sum(self._copy_checked(ref, objects[ref["version"]], entry) for ref in refs)
        name = "%s/%s" % (host_month, info["name"].rsplit("/", 1)[-1])
        if not self.check_mode:
            new = migrated_manifest(manifest, self.host, info["name"], objects, self.now)
            hm.put_manifest(self.store, self.work, name, new, dict(info["metadata"], host=self.host), sign=False)
        self.result["bytes_copied"] += copied
        return {
            "hypertable": manifest["hypertable"],
            "range_start": manifest["range"]["start"],
            "status": "would_migrate" if self.check_mode else "migrated",
            "objects": len(objects),
            "bytes": copied,
            "manifest": self.store.url(name),
        }

    def _copy_checked(self, ref, target, entry):
        """Copies one object into the host's folder (unless a copy is there) and reads the copy back:
        its sha256 must be what the manifest records. Returns the bytes Azure copied."""
        if self.check_mode or target in self.checked:
            return 0
        there = self.store.properties(target)
        copied = 0
        if there is None:
            source = entry["data"].get(ref["version"])
            metadata = dict(source["metadata"] if source else {}, host=self.host)
            there = self.store.copy_blob(ref["name"], target, hm._metadata(metadata))
            copied = there["size"]
        path = self.work.file("migrate.%s" % hl.DATA_EXT)
        try:
            self.store.download_file(target, path, ref["sha256"])
        except _azure.IntegrityError as e:
            raise hl.HistoryError(
                "%s; the copy is kept without a manifest (never trusted): delete it and run the migration again"
                % self.store.redact(e),
                kind="integrity",
            ) from None
        finally:
            if os.path.exists(path):
                os.unlink(path)
        self.checked.add(target)
        return copied
