# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a coverage report reads, from the host and every target: the sets of each target merged
with the host's (their manifests read and checked), and each target's history ranges. The
coverage module and the runner's coverage step (the metric tsdb_backup_coverage_gaps) use it.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage_history, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    AzureTierError,
    merge_catalog,
)


def in_window(entries, days):
    first, last = days[0], days[-1]
    kept = []
    for e in entries:
        try:
            day = mf.backup_id_time(e["backup_id"]).date()
        except ValueError:
            continue
        if first <= day <= last:
            kept.append(e)
    return kept


def listings(targets, host, databases):
    """{target: its sets under the host (only the databases asked: one folder each; else the
    host's whole folder, which says which databases it ever backed up), or why it could not be
    listed}. A target that cannot be opened or listed is reported, not fatal: the others count."""
    out = {}
    for target in targets:
        if target.store is None:
            out[target.name] = target.error
            continue
        try:
            if databases:
                out[target.name] = [r for d in databases for r in target.store.list_remote(host, d)]
            else:
                out[target.name] = target.store.list_remote(host)
        except AzureTierError as e:
            out[target.name] = target.store.redact(e)
    return out


def history(targets, host, databases):
    """{target: _coverage_history.history_ranges, or why its history could not be read}."""
    out = {}
    for target in targets:
        if target.store is None:
            continue
        try:
            out[target.name] = _coverage_history.history_ranges(target.store, host, databases)
        except AzureTierError as e:
            out[target.name] = "the history archive of target %s could not be read: %s" % (
                target.name,
                target.store.redact(e),
            )
    return out


def local_sets(backup_dir, local, databases, days):
    """The host's sets of the databases in the window, each marked verified or not."""
    local = in_window([e for e in local if e["database"] in databases], days)
    for entry in local:
        bset = mf.BackupSet.from_manifest(backup_dir, entry["manifest"]) if entry["manifest"] else None
        entry["verified"] = bool(bset) and _verify.is_verified(bset, entry["manifest"])
    return local


def collect(targets, backup_dir, host, databases, days, with_history=True):
    """What _coverage.coverage reads, for the ``targets`` (_replica.Target, the primary first):
    (catalogs [(name, merged catalog or error)], history or None, databases, {target: error} of
    the targets that could not be listed). ``databases`` empty: every database the host or a
    target has sets of (none: an empty list, and nothing else is read)."""
    listed = listings(targets, host, databases)
    found = [e for sets in listed.values() if not isinstance(sets, str) for e in sets]
    local = mf.list_local(backup_dir) if backup_dir else []
    databases = list(databases or sorted({e["database"] for e in local + found}))
    if not databases:
        return [], None, [], {name: sets for name, sets in listed.items() if isinstance(sets, str)}
    local = local_sets(backup_dir, local, databases, days)
    catalogs = []
    for target in targets:
        sets = listed[target.name]
        if not isinstance(sets, str):
            remote = target.store.with_manifests(in_window([e for e in sets if e["database"] in databases], days))
            sets = merge_catalog(local, remote)
        catalogs.append((target.name, sets))
    hist = history(targets, host, databases) if with_history else None
    return catalogs, hist, databases, {}
