# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Second copies: replica targets - other accounts, regions, credentials - that hold every
backup set and every history object of the primary target, copied once they are proven there.

Every target has the primary's blob layout under the same prefix, so a blob has one name in all
of them. A copy is streamed (BlobStore.copy_from: read from the primary, hashed, staged,
committed only when its sha256 is the manifest's), data first and the manifest last, so a
manifest visible in a replica means a complete set there too, exactly as in the primary. A set
or object is copied only when the primary's manifest is accepted by the signing policy and
names every blob it lies with; nothing read from a container is trusted before that.

A replica that is down or refuses fails its own copies only: the primary, the local backup and
the other replicas go on, and the next run copies what is missing, oldest first.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_GLOBALS,
    ArchivedError,
    AzureTierError,
    ConfigError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    ServiceError,
    join_name,
    validate_segment,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_settings import (
    azure_common_argument_spec,
)

PRIMARY = "primary"
REPLICA_TIERS = ("Hot", "Cool", "Cold")
# A problem with one set or object: it is reported and the copy goes on with the next one.
# Anything else (the service down, credentials refused) stops the copies to that target.
_SET_ERRORS = (
    ConflictError,
    IntegrityError,
    NotFoundError,
    ArchivedError,
    mf.ManifestError,
    _signing.SignatureError,
    hl.HistoryError,
)


def replica_options():
    """The sub-options of one replica: a name, the Azure connection options (no environment
    fallback: AZURE_STORAGE_* are the primary's) without prefix - a replica has the primary's -,
    and the access tier of its data blobs."""
    options = azure_common_argument_spec()
    options.pop("prefix")
    options["auth_mode"]["required"] = True
    options["container"]["required"] = True
    options.update(
        name=dict(type="str", required=True),
        access_tier=dict(type="str", choices=list(REPLICA_TIERS)),
    )
    return options


def replicas_argument_spec():
    """The ``replicas`` option (doc fragment insa.timescaledb_backup.azure.REPLICAS)."""
    return {"replicas": dict(type="list", elements="dict", default=[], options=replica_options())}


class Target:
    """One target of the history: the primary or a replica. ``store`` is None when it could not
    be opened; ``error`` then says why (redacted)."""

    def __init__(self, name, store=None, error=None, access_tier=None):
        self.name, self.store, self.error, self.access_tier = name, store, error, access_tier
        self.down = None  # why copies to it stopped in this run: the next databases do not wait again

    @property
    def primary(self):
        return self.name == PRIMARY

    def __repr__(self):
        return "Target(%s)" % self.name


def check_replicas(replicas):
    """The replicas as plain dicts, their names checked (unique, a path segment, not 'primary').
    Raises ConfigError."""
    seen = set()
    out = []
    for i, replica in enumerate(replicas or ()):
        if not isinstance(replica, dict):
            raise ConfigError("replica %d must be a mapping with name, auth_mode, container and credentials" % (i + 1))
        name = replica.get("name")
        if not name or not isinstance(name, str):
            raise ConfigError("replica %d has no name: give each replica a short name (e.g. dr-westeurope)" % (i + 1))
        try:
            validate_segment(name, "replica name")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if name == PRIMARY or name in seen:
            raise ConfigError("replica name %s is used twice or is the primary's: give each a name of its own" % name)
        if replica.get("access_tier") not in (None,) + REPLICA_TIERS:
            raise ConfigError(
                "replica %s: access_tier must be one of %s (Archive is for lifecycle rules)"
                % (name, ", ".join(REPLICA_TIERS))
            )
        seen.add(name)
        out.append(dict(replica))
    return out


def open_targets(primary, replicas, progress=None, credential=None):
    """[Target(primary), Target(replica), ...]: each replica's store with the primary's prefix,
    signing policy and progress. One that cannot be opened is a Target with its error; one that
    is the primary's own container and prefix is refused (it would be no second copy)."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

    targets = [Target(PRIMARY, primary)]
    for replica in check_replicas(replicas):
        config = {k: v for k, v in replica.items() if k not in ("name", "access_tier") and v is not None}
        config["prefix"] = primary.prefix
        target = Target(replica["name"], access_tier=replica.get("access_tier"))
        try:
            store = _azure.open_store(config, environ={}, credential=credential or _entra_without_environment(config))
        except AzureTierError as e:
            target.error = "%s" % e
        else:
            if (store.account_url, store.container) == (primary.account_url, primary.container):
                target.error = (
                    "replica %s is the primary's own container (%s at %s): a second copy needs another "
                    "account or container; it is not used" % (replica["name"], store.container, store.account_url)
                )
            else:
                store.progress, store.signing, target.store = progress, primary.signing, store
        targets.append(target)
    return targets


def _entra_without_environment(config):
    """For auth_mode=entra without client_secret: DefaultAzureCredential without its environment
    credential (AZURE_CLIENT_SECRET and friends are the primary's), else None."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

    if config.get("auth_mode") != "entra" or config.get("client_secret"):
        return None
    return _azure.entra_credential(config, environment=False)


def _why(primary, target, e):
    """A failure's text, redacted with both stores' secrets; the type named when it is not one of
    the collection's explained errors (a planted blob the parsers did not expect)."""
    text = (
        "%s" % e
        if isinstance(e, (AzureTierError, mf.ManifestError, _signing.SignatureError, hl.HistoryError))
        else ("unreadable (%s: %s)" % (type(e).__name__, e))
    )
    return target.store.redact(primary.redact(text))


def _stopped(target, result, e, primary):
    result["error"] = _why(primary, target, e)
    target.down = result["error"]  # the rest of the run does not wait for it again


# ---------------------------------------------------------------------------------------------
# Backup sets


def set_blobs(entry, manifest):
    """[(blob info, sha256, size)] of the data blobs a set's manifest lists (an encrypted set's
    are its stored form), found in the listing ``entry``; raises IntegrityError naming the blobs
    the listing lacks or holds with another sha256."""
    have = {(b["kind"], b.get("part")): b for b in entry.get("blobs") or ()}
    archive = manifest.get("archive") or {}
    stored = manifest.get("encryption") or {}
    wanted = [
        ((KIND_ARCHIVE_PART, part), digest, None) for part, digest in sorted((archive.get("files") or {}).items())
    ]
    if not wanted:
        one = stored.get("archive") or archive
        wanted = [((KIND_ARCHIVE, None), one.get("sha256"), one.get("size_bytes"))]
    if manifest.get("globals"):
        one = stored.get("globals") or manifest["globals"]
        wanted.append(((KIND_GLOBALS, None), one.get("sha256"), one.get("size_bytes")))
    out, wrong = [], []
    for (kind, part), digest, size in wanted:
        info = have.get((kind, part))
        if info is None or info.get("sha256") != digest:
            wrong.append("%s%s" % (kind, " " + part if part else ""))
        else:
            out.append((info, digest, size))
    if wrong:
        raise IntegrityError(
            "its manifest lists blobs the primary lacks or holds with another sha256 (%s): not copied; verify "
            "the set in the primary" % ", ".join(wrong)
        )
    return out


def _same_blob(there, info):
    """Whether a blob already in the target is the one to copy (same size and recorded sha256)."""
    return there is not None and there.get("size") == info.get("size") and there.get("sha256") == info.get("sha256")


def _copy(target, primary, name, sha256, size, there, tier):
    """Copies one blob unless the target has it; returns the bytes sent."""
    if there is not None:
        if there.get("sha256") == sha256 and (size is None or there.get("size") == size):
            return 0
        raise ConflictError(
            "%s holds another blob under this name (sha256 %s, expected %s): not overwritten; find out who wrote "
            "it" % (target.store.url(name), there.get("sha256"), sha256)
        )
    info = target.store.copy_from(primary, name, sha256, size, tier=tier)
    return info["size"] if info["status"] == "copied" else 0


def _manifest_bytes(primary, entry):
    """The primary's manifest of a complete entry, read once: (bytes, parsed manifest), checked
    as the catalog checks one (the set it lies with, the signing policy)."""
    data = primary.read_blob(entry["manifest_name"])
    return data, primary.read_manifest(entry, data=data)


def copy_set(primary, target, entry, there_blobs):
    """Copies one complete set of the primary: data blobs, then the manifest. Returns the bytes
    sent. ``there_blobs``: name -> info of the target's blobs of that set."""
    data, manifest = _manifest_bytes(primary, entry)
    sent = 0
    for info, digest, size in set_blobs(entry, manifest):
        sent += _copy(target, primary, info["name"], digest, size, there_blobs.get(info["name"]), target.access_tier)
    name = entry["manifest_name"]
    sent += _copy(target, primary, name, hashlib.sha256(data).hexdigest(), len(data), there_blobs.get(name), None)
    return sent


def _same_set(entry, there):
    """Whether the target holds the set as the primary does: complete, and every blob of it with
    the primary's size and recorded sha256 (a copy that lost a blob is copied again)."""
    if not there or not there.get("complete"):
        return False
    theirs = {b["name"]: b for b in there["blobs"]}
    return all(_same_blob(theirs.get(b["name"]), b) for b in entry["blobs"])


def new_result(target, what):
    return {"target": target.name, "what": what, "copied": [], "bytes": 0, "pending": 0, "failures": [], "error": None}


def replicate_sets(primary, target, host, database):
    """Copies every complete set of ``database`` under ``host`` that the primary holds and the
    target lacks, oldest first. Result: copied ids, bytes, pending (still missing there), the
    sets that failed alone (with their reason) and the error that stopped the copies (or None)."""
    result = new_result(target, database)
    if target.store is None or target.down:
        result["error"], result["pending"] = target.error or target.down, None
        return result
    try:
        target.store.ensure_container()  # created when its create_container says so
        source = [e for e in primary.list_remote(host, database) if e["complete"]]
        there = {e["backup_id"]: e for e in target.store.list_remote(host, database)}
    except AzureTierError as e:
        _stopped(target, result, e, primary)
        result["pending"] = None
        return result
    todo = [e for e in source if not _same_set(e, there.get(e["backup_id"]))]
    result["pending"] = len(todo)
    for entry in todo:
        blobs = {b["name"]: b for b in (there.get(entry["backup_id"]) or {}).get("blobs", ())}
        try:
            result["bytes"] += copy_set(primary, target, entry, blobs)
        except ServiceError as e:
            _stopped(target, result, e, primary)
            break
        except Exception as e:  # noqa: BLE001 - whatever a blob holds fails its own set only
            result["failures"].append({"backup_id": entry["backup_id"], "error": _why(primary, target, e)})
            continue
        result["copied"].append(entry["backup_id"])
        result["pending"] -= 1
    return result


# ---------------------------------------------------------------------------------------------
# History objects


def _history_manifests(listing):
    """The manifest blobs of a listing (name -> info), oldest range first."""
    found = []
    for name in listing:
        parsed = hl.parse_leaf(name)
        if parsed is not None and parsed[3] == hl.KIND_MANIFEST:
            found.append((parsed[0], name))
    return [name for _start, name in sorted(found)]


def _checked_history_manifest(primary, host, name):
    """(bytes, object blob name, object sha256, object size) of a history manifest of ``host`` in
    the primary, refused unless it is that host's, lies in its own folder and is trusted."""
    data = primary.read_blob(name)
    manifest = hm.parse_history_manifest(data, source=primary.url(name))
    place = hl.Place.of(primary.prefix, host, manifest["database"], manifest["hypertable"])
    if not name.startswith(place.folder + "/"):
        raise hm.ForeignManifest(
            "%s describes %s of %s, which lies elsewhere: not copied"
            % (primary.url(name), place.hypertable, place.database),
            kind="integrity",
        )
    hm.check_owner(manifest, place, name)
    hm.check_signed(primary, manifest, place, name)
    obj = manifest["object"]
    obj_name = obj["name"] if "/" in obj["name"] else "%s/%s" % (hm.folder_of(name), obj["name"])
    if not obj_name.startswith(place.folder + "/"):
        raise hm.ForeignManifest(
            "%s names an object outside its folder: not copied" % primary.url(name), kind="integrity"
        )
    return data, obj_name, obj["sha256"], obj["size_bytes"]


def _same_history(source, there, name):
    """Whether the target holds a manifest and its version's object as the primary does."""
    data = name[: -len(hl.MANIFEST_EXT)] + hl.DATA_EXT
    return _same_blob(there.get(name), source[name]) and (
        data not in source or _same_blob(there.get(data), source[data])
    )


def replicate_history(primary, target, host):
    """Copies every verified history object of ``host`` (its object, then its manifest) that the
    target lacks, oldest range first. The layout without host of earlier releases is not copied."""
    result = new_result(target, "history")
    if target.store is None or target.down:
        result["error"], result["pending"] = target.error or target.down, None
        return result
    folder = join_name(primary.prefix, hl.HISTORY_DIR, validate_segment(host, "host")) + "/"
    try:
        target.store.ensure_container()
        source = primary._listing(folder)
        there = target.store._listing(folder)
    except AzureTierError as e:
        _stopped(target, result, e, primary)
        result["pending"] = None
        return result
    todo = [n for n in _history_manifests(source) if not _same_history(source, there, n)]
    result["pending"] = len(todo)
    for name in todo:
        try:
            data, obj_name, obj_sha, obj_size = _checked_history_manifest(primary, host, name)
            if obj_name not in source:
                raise NotFoundError("%s lacks the object %s its manifest names" % (primary.account_url, obj_name))
            sent = _copy(target, primary, obj_name, obj_sha, obj_size, there.get(obj_name), target.access_tier)
            sent += _copy(target, primary, name, hashlib.sha256(data).hexdigest(), len(data), there.get(name), None)
        except ServiceError as e:
            _stopped(target, result, e, primary)
            break
        except Exception as e:  # noqa: BLE001 - whatever a blob holds fails its own object only
            result["failures"].append({"name": name, "error": _why(primary, target, e)})
            continue
        result["bytes"] += sent
        result["copied"].append(name)
        result["pending"] -= 1
    return result
