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
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _signing
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    DATA_EXT,
    KIND_DATA,
    KIND_MANIFEST,
    HistoryError,
    _iso,
    parse_leaf,
    range_label,
)

# In a legacy folder (a listing's info has "legacy": True), manifests of earlier releases record
# the FQDN as host, not the label: there the operator's word (legacy_owner) stands for the host.

HISTORY_FORMAT = "insa.timescaledb_backup/history-manifest"
HISTORY_VERSION = 1
# A manifest whose object is encrypted (object.encryption): earlier collections refuse it rather
# than read ciphertext as Parquet.
HISTORY_VERSION_ENCRYPTED = 2
HASH_ALGORITHM = "pg-sum-hashtextextended-row-text-v1"
REQUIRED_KEYS = (
    "host",
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


def encode_manifest(manifest, signing=None):
    """Signed (when ``signing``, a _signing.Policy, has a key), then sealed: _manifest.dumps."""
    return mf.dumps(manifest, signing)


def _unusable(message):
    """What load_document and require_keys raise for a history manifest that is not one."""
    return HistoryError(message, kind="integrity")


def parse_history_manifest(data, source="history manifest"):
    manifest = mf.load_document(
        data, source, HISTORY_FORMAT, (HISTORY_VERSION, HISTORY_VERSION_ENCRYPTED), "history manifest", _unusable
    )
    if mf.seal(manifest)["manifest_sha256"] != manifest.get("manifest_sha256"):
        raise HistoryError(
            "%s was altered after it was written (manifest_sha256 does not match)" % source, kind="integrity"
        )
    mf.require_keys(manifest, REQUIRED_KEYS, source, _unusable)
    enc = (manifest.get("object") or {}).get("encryption")
    if (manifest["format_version"] == HISTORY_VERSION_ENCRYPTED) != bool(enc):
        raise _unusable(
            "%s has format_version %s %s an encrypted object"
            % (source, manifest["format_version"], "without" if not enc else "with")
        )
    if enc:
        mf.check_encryption(enc, (None,), source, _unusable, digests=("plaintext_sha256", "plaintext_size_bytes"))
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


class ForeignManifest(HistoryError):
    """A manifest that records another host, database, hypertable, range or version than the place
    it was found in: refused wherever it is read (integrity)."""


def check_owner(manifest, place, source, legacy=False):
    """Refuses (integrity) a manifest that is not this host's, database's and hypertable's, or
    that names another range or version than its blob: one copied or planted into this folder."""
    parsed = parse_leaf(source)
    found = (manifest.get("host"), manifest.get("database"), manifest.get("hypertable"))
    wanted = (found[0] if legacy else place.host, place.database, place.hypertable)
    where = (manifest["range"].get("label"), manifest.get("version"))
    if found != wanted or (parsed and where != (range_label(parsed[0], parsed[1]), parsed[2])):
        raise ForeignManifest(
            "%s records host %s, database %s, hypertable %s, range %s v%s, but it lies in the history of host %s, "
            "database %s, hypertable %s%s: refused, a manifest is trusted only in its own host's folder (copied or "
            "planted there?)"
            % (
                source,
                found[0],
                found[1],
                found[2],
                where[0],
                where[1],
                wanted[0],
                wanted[1],
                wanted[2],
                ", range %s v%d" % (range_label(parsed[0], parsed[1]), parsed[2]) if parsed else "",
            ),
            kind="integrity",
        )
    return manifest


class UntrustedManifest(ForeignManifest):
    """A manifest the signing policy refuses: forged, unsigned, or signed by a key that is not
    trusted for the host whose folder it lies in. Never trusted: retention holds its range back."""


def read_owned_manifest(store, info, place, allow_unsigned=False, strict=False):
    """The sealed manifest of a listing's info, refused unless it is the place's (check_owner) and
    its signature is trusted for the place's host (store.signing; ``allow_unsigned``: the caller
    accepts one made before signing, e.g. the lineage of a range archived again; ``strict``: with
    a trust store, unsigned is refused whatever the settings say - retention)."""
    manifest = check_owner(read_manifest_blob(store, info["name"]), place, info["name"], info.get("legacy", False))
    return check_signed(store, manifest, place, info["name"], allow_unsigned, strict)


def check_signed(store, manifest, place, name, allow_unsigned=False, strict=False):
    """The manifest (blob ``name``), refused (UntrustedManifest) unless store.signing trusts its
    signature for the place's host; allow_unsigned and strict as read_owned_manifest's."""
    policy = getattr(store, "signing", None) or _signing.UNCONFIGURED
    if strict and policy.configured:
        policy = _signing.Policy(trust=policy.trust, require=True)
    try:
        policy.check(manifest, place.host, "history manifest %s" % store.url(name), allow_unsigned=allow_unsigned)
    except _signing.SignatureError as e:
        raise UntrustedManifest("%s" % e, kind="integrity") from None
    return manifest


def check_metadata(store, info, place):
    """The same refusal from a manifest blob's metadata, for decisions taken without reading it
    (metadata holds ASCII only: names are compared as they were written there)."""
    meta = info["metadata"]
    host = meta.get("host") if not info.get("legacy") else _metadata_value(place.host)
    wanted = tuple(_metadata_value(x) for x in (place.host, place.database, place.hypertable))
    if (host, meta.get("database"), meta.get("hypertable")) != wanted:
        raise ForeignManifest(
            "%s is marked as host %s, database %s, hypertable %s; this is the history of host %s, database %s, "
            "hypertable %s: refused (copied or planted into this folder?)"
            % (
                store.url(info["name"]),
                host,
                meta.get("database"),
                meta.get("hypertable"),
                place.host,
                place.database,
                place.hypertable,
            ),
            kind="integrity",
        )


def list_place(store, place, rel):
    """list_ranges of place.folder + '/' + rel (a month folder 'YYYY/MM/', or 'YYYY/MM/<label>.');
    when this host owns the legacy folder, the versions only it has are added, marked legacy. A
    version in the host's folder hides the legacy one of the same number."""
    ranges = list_ranges(store, "%s/%s" % (place.folder, rel))
    if not place.legacy_trusted:
        return ranges
    for label, old in list_ranges(store, "%s/%s" % (place.legacy, rel)).items():
        entry = ranges.setdefault(label, {"start": old["start"], "end": old["end"], "data": {}, "manifests": {}})
        taken = set(entry["data"]) | set(entry["manifests"])
        for kind in ("data", "manifests"):
            entry[kind].update((v, dict(info, legacy=True)) for v, info in old[kind].items() if v not in taken)
    return ranges


def unclaimed_legacy(store, place, rel=""):
    """A note when the legacy folder holds history under rel and nobody claimed it, else None."""
    if not place.legacy_unclaimed:
        return None
    start = "%s/%s" % (place.legacy, rel)
    try:
        for props in store.container_client.list_blobs(name_starts_with=start):
            if re.match(r"^\d{4}/\d{2}/[^/]+$", props.name[len(place.legacy) + 1 :]) and parse_leaf(props.name):
                return (
                    "%s holds history of the layout without host (an earlier release); it is ignored: it may be any "
                    "host's. If it is this host's, set legacy_owner (TSDB_HISTORY_LEGACY_OWNER) to %s and migrate it "
                    "(docs/HISTORY.md)" % (store.url(start), place.host)
                )
    except _azure.AzureError as e:
        if not isinstance(e, _azure.ResourceNotFoundError):
            raise store.explain(e, "list %s" % start) from None
    return None


def resolve_ref(entry, ref, folder):
    """Where an object a manifest relies on is now: the version's object in the listing (the host's
    folder before a legacy one), else the leaf it names in the manifest's own folder - never a name
    outside this place. The sha256 the manifest records is checked wherever it is read."""
    data = (entry or {}).get("data", {}).get(ref["version"])
    name = data["name"] if data else "%s/%s" % (folder, ref["name"].rsplit("/", 1)[-1])
    return dict(ref, name=name)


def folder_of(name):
    return name.rsplit("/", 1)[0]


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
        # The object is age ciphertext (sha256 is the stored object's): only an identity reads it.
        "encrypted": bool(obj.get("encryption")),
    }


def put_manifest(store, work, name, manifest, metadata, tags=None, sign=True):
    """Signs (with store.signing's key, unless not ``sign``), seals and uploads a history manifest
    (never over another one: _azure's upload_file), with ``metadata`` plus its kind, sha256 and
    the signing key's id (signed_by: a hint for chunk_archive, never a proof). Returns the bytes
    sent (0 when it was there already)."""
    policy = (getattr(store, "signing", None) or _signing.UNCONFIGURED) if sign else None
    body = encode_manifest(manifest, policy)
    if policy is not None and policy.signer is not None:
        metadata = dict(metadata, signed_by=policy.signer.key_id)
    path = work.file(name.rsplit("/", 1)[-1])
    mf.atomic_write_bytes(path, body)
    sha256, size = mf.sha256_file(path)
    item = {"kind": _azure.KIND_MANIFEST, "part": None, "path": path, "name": name, "sha256": sha256, "size": size}
    metadata = _metadata(dict(metadata, kind=KIND_MANIFEST, sha256=sha256))
    try:
        sent, _w = store.upload_file(item, metadata, None, tags, 4, 1)
    finally:
        os.unlink(path)
    return sent["bytes"] if sent["status"] == "uploaded" else 0


def _metadata_value(value):
    return _azure._metadata_value(value)


def _metadata(values):
    return {k: _metadata_value(v) for k, v in values.items() if v not in (None, "")}


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

    def __init__(self, path, database, host=None):
        self.path = path
        self.database = database
        self.host = host
        self.known = {}
        self.fresh = {}
        self.warning = None
        if path and os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read().decode("utf-8"))
                # A file of another host's folder (or of the layout without host) says nothing here.
                if data.get("format") == self.FORMAT and (data.get("database"), data.get("host")) == (database, host):
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
        body = {"format": self.FORMAT, "version": 2, "database": self.database, "host": self.host}
        body["hypertables"] = merged
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)
        mf.atomic_write_bytes(self.path, (json.dumps(body, sort_keys=True) + "\n").encode("utf-8"))
