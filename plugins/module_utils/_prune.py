# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Local rotation of backup sets.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

A set is kept when any rule keeps it: it is among the newest ``keep_last``, or younger than
``keep_days``; the newest verified set is always kept; when upload is configured, a set not
yet in Azure is kept unless ``force``; a set whose manifest cannot be read is never touched
(it is reported). A removed set goes whole: manifest first (so nothing half-removed ever
looks complete), then archive, globals, legacy checksum and verification record.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import shutil

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _dump, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def plan(entries, keep_days=None, keep_last=None, uploaded_ids=None, force=False, now=None, verified=None):
    """Decides, without touching anything. ``entries`` as from ``_manifest.list_local`` for
    one database; ``verified(entry) -> bool``; ``uploaded_ids`` None when upload is not
    configured. Returns (delete, keep): lists of dicts backup_id + reason."""
    if keep_days is None and keep_last is None:
        raise ValueError("give keep_days and/or keep_last: prune never guesses how much to keep")
    if (keep_days is not None and keep_days < 0) or (keep_last is not None and keep_last < 1):
        raise ValueError("keep_days must be 0 or more and keep_last 1 or more")
    now = now or mf.utcnow()
    usable = [e for e in entries if e["manifest"]]
    newest_verified = None
    for e in reversed(usable):
        if verified is None or verified(e):
            newest_verified = e["backup_id"]
            break
    newest = [e["backup_id"] for e in usable[-keep_last:]] if keep_last else []
    delete, keep = [], []
    for e in entries:
        bid = e["backup_id"]
        if not e["manifest"]:
            keep.append({"backup_id": bid, "reason": "manifest unreadable, left for a human: %s" % e["error"]})
            continue
        age = now - mf.backup_id_time(bid)
        if bid == newest_verified:
            keep.append({"backup_id": bid, "reason": "newest verified backup"})
        elif bid in newest:
            keep.append({"backup_id": bid, "reason": "among the newest %d" % keep_last})
        elif keep_days is not None and age <= datetime.timedelta(days=keep_days):
            keep.append({"backup_id": bid, "reason": "younger than %d days" % keep_days})
        elif uploaded_ids is not None and bid not in uploaded_ids and not force:
            keep.append({"backup_id": bid, "reason": "not yet uploaded to Azure"})
        else:
            delete.append({"backup_id": bid, "reason": "older than the retention rules", "age_days": age.days})
    return delete, keep


def proven_uploads(local_entries, remote_entries, read_remote):
    """The ids of the local sets (list_local entries) that Azure holds a copy of. A listing alone
    proves nothing - anyone who can write to the container can put a manifest blob under this
    host's prefix - so a copy counts only when its archive is there and its manifest, read with
    ``read_remote(entry)`` (None: unreadable, or refused by the signing policy), has the seal of
    the local one: the very set, signature included. Otherwise the local set is kept."""
    remote = {(e["database"], e["backup_id"]): e for e in remote_entries if e["complete"] and e.get("url")}
    proven = set()
    for entry in local_entries:
        copy = remote.get((entry["database"], entry["backup_id"]))
        if copy is None or not entry["manifest"]:
            continue
        manifest = read_remote(copy)
        if manifest is not None and manifest.get("manifest_sha256") == entry["manifest"].get("manifest_sha256"):
            proven.add(entry["backup_id"])
    return proven


def remove_set(backup_dir, manifest):
    bset = mf.BackupSet.from_manifest(backup_dir, manifest)
    removed = []
    for path in bset.all_paths() + [_verify.record_path(bset)]:
        if os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(path)
        elif os.path.exists(path):
            os.unlink(path)
            removed.append(path)
    return removed


def prune(
    backup_dir,
    database,
    keep_days=None,
    keep_last=None,
    uploaded_ids=None,
    force=False,
    dry_run=False,
    now=None,
    audit=None,
):
    """Applies ``plan`` to one database's folder under its lock. Returns what went and what stayed."""
    _dump.check_backup_dir(backup_dir)
    folder = os.path.join(backup_dir, mf.database_segment(database))
    if not os.path.isdir(folder):
        return {"deleted": [], "kept": [], "removed_paths": []}

    def verified(entry):
        return _verify.is_verified(mf.BackupSet.from_manifest(backup_dir, entry["manifest"]), entry["manifest"])

    with _dump.FolderLock(folder):
        entries = mf.list_local(backup_dir, database)
        delete, keep = plan(entries, keep_days, keep_last, uploaded_ids, force, now, verified)
        if dry_run or not delete:
            return {"deleted": delete, "kept": keep, "removed_paths": []}
        readers = _dump.FolderReaders(folder)
        if not readers.try_acquire():
            return _busy(folder, delete, keep)
        try:
            removed = []
            by_id = {e["backup_id"]: e for e in entries}
            for d in delete:
                removed += remove_set(backup_dir, by_id[d["backup_id"]]["manifest"])
                if audit:
                    audit("prune", database=database, backup_id=d["backup_id"], reason=d["reason"])
        finally:
            readers.release()
    return {"deleted": delete, "kept": keep, "removed_paths": removed}


def _busy(folder, delete, keep):
    """Nothing removed while a restore, a verification, an upload or a download reads the folder:
    the sets it would have removed are kept, and the next prune removes them."""
    waiting = [dict(d, reason="%s; kept for now: the folder is being read" % d["reason"]) for d in delete]
    return {
        "deleted": [],
        "kept": keep + waiting,
        "removed_paths": [],
        "busy": "%s is being read by a restore, verification, upload or download (lock %s): %d set(s) due for removal "
        "are kept until the next prune" % (folder, os.path.join(folder, ".readers.lock"), len(delete)),
    }
