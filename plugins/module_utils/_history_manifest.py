# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""History manifests: sealing and reading them, and finding the versions of each range in Azure.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    DATA_EXT,
    KIND_DATA,
    HistoryError,
    _iso,
    parse_leaf,
    range_label,
)

HISTORY_FORMAT = "insa.timescaledb_backup/history-manifest"
HISTORY_VERSION = 1
HASH_ALGORITHM = "pg-sum-hashtextextended-row-text-v1"
REQUIRED_KEYS = (
    "database",
    "hypertable",
    "range",
    "version",
    "generation",
    "columns",
    "rows",
    "content_hash",
    "object",
    "covers",
)


# ---------------------------------------------------------------------------------------------
# Manifests


def encode_manifest(manifest):
    return mf.dumps(manifest)


def _unusable(message):
    """What load_document and require_keys raise for a history manifest that is not one."""
    return HistoryError(message, kind="integrity")


def parse_history_manifest(data, source="history manifest"):
    manifest = mf.load_document(data, source, HISTORY_FORMAT, HISTORY_VERSION, "history manifest", _unusable)
    if mf.seal(manifest)["manifest_sha256"] != manifest.get("manifest_sha256"):
        raise HistoryError(
            "%s was altered after it was written (manifest_sha256 does not match)" % source, kind="integrity"
        )
    mf.require_keys(manifest, REQUIRED_KEYS, source, _unusable)
    return manifest


# ---------------------------------------------------------------------------------------------
# The remote side


def _service_error(exc):
    return isinstance(exc, _azure.ServiceError) or isinstance(exc, _azure.NotFoundError)


def list_ranges(store, prefix_name):
    """History blobs under a name prefix, by range label: {label: {start, end, data: {v: info},
    manifests: {v: info}}}. One listing with metadata; no blob is read."""
    ranges = {}
    try:
        for props in store.container_client.list_blobs(name_starts_with=prefix_name, include=["metadata"]):
            parsed = parse_leaf(props.name)
            if parsed is None:
                continue
            start, end, version, kind = parsed
            entry = ranges.setdefault(
                range_label(start, end), {"start": start, "end": end, "data": {}, "manifests": {}}
            )
            metadata = dict(props.metadata or {})
            entry["data" if kind == KIND_DATA else "manifests"][version] = {
                "name": props.name,
                "size": props.size,
                "sha256": metadata.get("sha256"),
                "metadata": metadata,
            }
    except _azure.AzureError as e:
        if isinstance(e, _azure.ResourceNotFoundError):
            return {}
        raise store.explain(e, "list %s" % prefix_name) from None
    return ranges


def latest_version(entry):
    """Highest version with a manifest (a verified archive), or None."""
    return max(entry["manifests"]) if entry and entry["manifests"] else None


def next_version(entry):
    seen = list(entry["data"]) + list(entry["manifests"]) if entry else []
    return max(seen) + 1 if seen else 1


def read_manifest_blob(store, name):
    return parse_history_manifest(store.read_blob(name), source=store.url(name))


def _download_checked(store, name, sha256, folder):
    path = os.path.join(folder, "%s.%s" % (sha256[:16], DATA_EXT))
    if not os.path.exists(path):
        store.download_file(name, path, sha256)
    return path


def _slice_result(info, s, **extra):
    result = {
        "hypertable": info["name"],
        "range_start": _iso(s["start"]),
        "range_end": _iso(s["end"]),
        "chunks": [c["name"] for c in s["chunks"]],
    }
    result.update(extra)
    return result


def _object_ref(manifest, folder):
    obj = manifest["object"]
    return {
        "version": manifest["version"],
        "generation": manifest["generation"],
        "name": "%s/%s" % (folder, obj["name"]) if "/" not in obj["name"] else obj["name"],
        "sha256": obj["sha256"],
        "size_bytes": obj["size_bytes"],
        "rows": manifest["rows"],
        "content_hash": manifest["content_hash"],
    }


def _metadata(values):
    return {k: _azure._metadata_value(v) for k, v in values.items() if v not in (None, "")}


# ---------------------------------------------------------------------------------------------
# Retention


def _audit(path, record):
    if not path:
        return
    line = (json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class _State:
    """What the last runs found archived: {hypertable: {range label: [rows, content_hash]}} of
    the closed live slices covered by a verified archive. A hint, never a proof: with it a run
    that finds a slice's live count and hash unchanged asks Azure nothing. Retention never uses
    it (it reads the archive itself), and reverify ignores it. Written atomically at the end of
    a run; an unreadable file is ignored."""

    FORMAT = "insa.timescaledb_backup/history-state"

    def __init__(self, path, database):
        self.path = path
        self.database = database
        self.known = {}
        self.fresh = {}
        self.warning = None
        if path and os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read().decode("utf-8"))
                if data.get("format") == self.FORMAT and data.get("database") == database:
                    self.known = data.get("hypertables") or {}
            except (OSError, ValueError, AttributeError) as e:
                self.warning = "ignored the history state file %s: %s" % (path, e)

    def get(self, hypertable, label):
        value = (self.known.get(hypertable) or {}).get(label)
        return (int(value[0]), "%s" % value[1]) if isinstance(value, list) and len(value) == 2 else None

    def keep(self, hypertable, label, fingerprint_value):
        self.fresh.setdefault(hypertable, {})[label] = [int(fingerprint_value[0]), "%s" % fingerprint_value[1]]

    def save(self, hypertables_done):
        if not self.path:
            return
        merged = {k: v for k, v in self.known.items() if k not in hypertables_done}
        merged.update(self.fresh)
        body = {"format": self.FORMAT, "version": 1, "database": self.database, "hypertables": merged}
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)
        mf.atomic_write_bytes(self.path, (json.dumps(body, sort_keys=True) + "\n").encode("utf-8"))
