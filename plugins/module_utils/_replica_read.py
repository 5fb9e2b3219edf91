# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading from any target: the primary or a replica first, then the others when a blob is
missing, damaged, refused, archived or unreachable (the targets come from
_replica.open_targets). Every download is checked by sha256, wherever it comes from; a set is
chosen once, by the first target that can list it, so a fallback brings that very set.

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    ArchivedError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    ServiceError,
    validate_segment,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._replica import PRIMARY

# What makes a read try the next target: the blob is missing, damaged, refused, archived, or the
# target cannot be reached. A wrong setting of the request itself fails at once.
FALLBACK_ERRORS = (
    NotFoundError,
    IntegrityError,
    ArchivedError,
    ServiceError,
    mf.ManifestError,
    _signing.SignatureError,
    hl.HistoryError,
)
SECONDARY = "secondary"  # the first replica, unless one is named so


def read_order(targets, first=PRIMARY, fallback=True):
    """The targets to read from: ``first`` (a target's name; 'secondary' is the first replica),
    then, with ``fallback``, the others in their order. Raises ConfigError for an unknown name."""
    names = [t.name for t in targets]
    if first == SECONDARY and SECONDARY not in names:
        if len(targets) < 2:
            raise ConfigError("read_from=secondary: no replica is configured (replicas is empty)")
        first = targets[1].name
    if first not in names:
        raise ConfigError("read_from=%s: no such target; the targets are %s" % (first, ", ".join(names)))
    chosen = [t for t in targets if t.name == first]
    return chosen + ([t for t in targets if t.name != first] if fallback else [])


def _failed(target, error):
    return {"target": target.name, "error": target.store.redact(error) if target.store else "%s" % error}


def read_with_fallback(order, fn):
    """fn(store) on the first target of ``order`` that succeeds: (its result, the target's name,
    [{target, error}] of the targets that failed before it). When every target fails, the error
    names each target and its reason (the last target's kind)."""
    tried, last = [], None
    for target in order:
        if target.store is None:
            tried.append({"target": target.name, "error": target.error})
            continue
        try:
            return fn(target.store), target.name, tried
        except FALLBACK_ERRORS as e:
            tried.append(_failed(target, e))
            last = e
    message = "; ".join("%s: %s" % (t["target"], t["error"]) for t in tried)
    if len(order) == 1 and last is not None:
        raise last
    raise NotFoundError("no target could provide it (%s)" % message)


class FallbackReader:
    """A read-only stand-in for the first target's store whose downloads fall back to the next
    targets when a blob is missing, damaged or unreachable there (the sha256 is checked on every
    download). Listings and manifests are the first target's. ``fallbacks`` records each one."""

    def __init__(self, order):
        usable = [t for t in order if t.store is not None]
        if not usable or usable[0] is not order[0]:
            raise NotFoundError("%s cannot be read: %s" % (order[0].name, order[0].error))
        self._order, self._first = usable, usable[0].store
        self.fallbacks = []

    _WRITES = frozenset(
        ["upload_file", "upload_backup_set", "catch_up", "copy_blob", "copy_from", "following_upload", "_commit"]
    )

    def __getattr__(self, name):
        if name in self._WRITES:
            raise AttributeError("a FallbackReader only reads (%s)" % name)
        return getattr(self._first, name)

    def download_file(self, name, path, expected_sha256):
        for i, target in enumerate(self._order):
            try:
                size = target.store.download_file(name, path, expected_sha256)
            except FALLBACK_ERRORS as e:
                if i == len(self._order) - 1:
                    raise
                self.fallbacks.append(dict(_failed(target, e), blob=name, read_from=self._order[i + 1].name))
                continue
            return size
        raise NotFoundError("no target holds %s" % name)  # not reached: the last error is raised above


def download_set(order, dest_dir, database, host, backup_id=None, before=None, check_mode=False, **options):
    """BlobStore.download_backup from the targets of ``order``, falling back to the next one. The
    set is chosen once, by the first target that can list it (``backup_id``, 'latest', ``before``):
    a fallback brings that very set, never another. An attempt that fails leaves none of the files
    it wrote. Returns the download's result with ``target`` and ``fallbacks``."""
    host = validate_segment(host, "host")
    mf.validate_database_name(database)

    def select(store):
        store.ensure_container(create=False)
        return store._select_remote(host, database, backup_id, before)["backup_id"]

    pinned, _first, _tried = read_with_fallback(order, select)
    folder = mf.BackupSet(dest_dir, database, pinned).folder

    def attempt(store):
        had = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        try:
            return store.download_backup(
                dest_dir, database, host=host, backup_id=pinned, check_mode=check_mode, **options
            )
        except FALLBACK_ERRORS:
            _remove_new(folder, had, pinned)
            raise

    result, result_target, tried = read_with_fallback(order, attempt)
    result.update(target=result_target, fallbacks=tried)
    return result


def _remove_new(folder, had, backup_id):
    """Removes what a failed download attempt wrote into ``folder`` (names of ``backup_id`` that
    were not there before it, no manifest among them yet): the next target starts afresh."""
    for name in sorted(set(os.listdir(folder)) - had) if os.path.isdir(folder) else ():
        if name.startswith(backup_id):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
