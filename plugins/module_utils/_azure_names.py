# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure tier without the SDK: its errors, settings constants, the blob layout (names of
backup sets in blobs and back), redaction of secrets, and the catalog logic (selection, merge
of local and remote sets).

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import datetime
import re
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

AZURE_STORAGE_REQUIREMENT = "azure-storage-blob"
AZURE_IDENTITY_REQUIREMENT = "azure-identity"

AUTH_MODES = ("connection_string", "account_key", "sas", "entra")
# A parameter wins over its environment variable; auth_mode itself is never guessed.
ENV_FALLBACK = {
    "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "account_name": "AZURE_STORAGE_ACCOUNT",
    "account_key": "AZURE_STORAGE_KEY",
    "sas_token": "AZURE_STORAGE_SAS_TOKEN",
    "account_url": "AZURE_STORAGE_BLOB_ENDPOINT",
    "container": "AZURE_STORAGE_CONTAINER",
    "tenant_id": "AZURE_TENANT_ID",
    "client_id": "AZURE_CLIENT_ID",
    "client_secret": "AZURE_CLIENT_SECRET",
}
SECRET_KEYS = ("connection_string", "account_key", "sas_token", "client_secret")
REDACTED = "********"

TIERS = ("Hot", "Cool", "Cold", "Archive")
DEFAULT_PREFIX = "timescaledb"
DEFAULT_BLOCK_SIZE_MB = 8
DEFAULT_CONCURRENCY = 4
MAX_BLOCKS = 50000
MAX_BLOCK_SIZE_MB = 4000
MIB = 1024 * 1024
# Transfers smaller than this finish before a progress line would be due.
PROGRESS_MIN_BYTES = 8 * MIB

KIND_ARCHIVE = "archive"
KIND_ARCHIVE_PART = "archive_part"
KIND_GLOBALS = "globals"
KIND_MANIFEST = "manifest"
CONTENT_TYPES = {
    KIND_ARCHIVE: "application/octet-stream",
    KIND_ARCHIVE_PART: "application/octet-stream",
    KIND_GLOBALS: "application/sql",
    KIND_MANIFEST: "application/json",
}

MAX_BLOB_NAME = 1024
MAX_SEGMENT = 254
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_~][A-Za-z0-9_.=~\-]*$")
METADATA_VALUE_RE = re.compile(r"[^\x20-\x7e]")


class AzureTierError(_errors.OperatorError):
    """Anything the Azure tier refuses or fails at. The message is safe to show."""


class ConfigError(AzureTierError, _errors.ConfigError):
    """Missing or contradictory settings."""


class BlobNameError(AzureTierError, _errors.ConfigError, ValueError):
    """A blob name or one of its parts is not acceptable."""


class ConflictError(AzureTierError, _errors.ConflictError):
    """A blob with the same name but other content exists: never overwritten."""


class IntegrityError(AzureTierError, _errors.IntegrityError):
    """Content does not match its manifest or its sha256 metadata."""


class NotFoundError(AzureTierError, _errors.NotFoundError):
    """No backup matches the selection, or the container is missing."""


class ArchivedError(AzureTierError, _errors.ConflictError):
    """A blob is in the Archive tier and must be rehydrated before it can be read."""


class ServiceError(AzureTierError, _errors.ServiceError):
    """Azure refused or could not be reached (after the retries)."""


# ---------------------------------------------------------------------------------------------
# Secrets and URLs


def url_without_sas(url):
    """The URL with its query string (where a SAS token lives) and fragment removed."""
    if not url:
        return url
    return url.split("?", 1)[0].split("#", 1)[0]


class Redactor:
    """Removes known secret values and anything shaped like a SAS signature or account key."""

    PATTERNS = (
        (re.compile(r"(sig=)[^&\s'\"<]+", re.IGNORECASE), r"\1" + REDACTED),
        (re.compile(r"(AccountKey=)[^;\s'\"]+", re.IGNORECASE), r"\1" + REDACTED),
        (re.compile(r"(SharedAccessSignature=)[^;\s'\"]+", re.IGNORECASE), r"\1" + REDACTED),
        (re.compile(r"(Bearer )[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    )

    def __init__(self, secrets=()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text):
        text = "%s" % (text,)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, repl in self.PATTERNS:
            text = pattern.sub(repl, text)
        return text


# ---------------------------------------------------------------------------------------------
# Blob layout


def validate_segment(segment, what="path segment"):
    """One part of a blob name: a prefix part, host, database or file name."""
    if not isinstance(segment, str) or not segment:
        raise BlobNameError("%s is empty" % what)
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in segment):
        raise BlobNameError("%s %r contains control characters" % (what, segment))
    if ".." in segment:
        raise BlobNameError("%s %r contains '..'" % (what, segment))
    if len(segment) > MAX_SEGMENT:
        raise BlobNameError("%s %r is longer than %d characters" % (what, segment, MAX_SEGMENT))
    if not SEGMENT_RE.match(segment) or segment.endswith("."):
        raise BlobNameError(
            "%s %r is not accepted: use letters, digits, '_', '-', '.', '=' and '~', starting with a letter, "
            "digit, '_' or '~' and not ending with '.'" % (what, segment)
        )
    return segment


def validate_prefix(prefix):
    """'' (no prefix) or segments separated by '/'; a trailing '/' is dropped."""
    if prefix is None:
        return ""
    if not isinstance(prefix, str):
        raise BlobNameError("prefix must be a string")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in prefix):
        raise BlobNameError("prefix %r contains control characters" % (prefix,))
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    if not stripped:
        return ""
    if stripped.startswith("/"):
        raise BlobNameError("prefix %r must not start with '/'" % (prefix,))
    for part in stripped.split("/"):
        validate_segment(part, "prefix part")
    return stripped


def validate_blob_name(name):
    """Azure's limits and ours: 1..1024 characters, no control characters, no '..', no empty,
    '.' or odd segments, no leading '/'."""
    if not isinstance(name, str) or not name:
        raise BlobNameError("blob name is empty")
    if len(name) > MAX_BLOB_NAME:
        raise BlobNameError("blob name is %d characters long; Azure allows %d" % (len(name), MAX_BLOB_NAME))
    if name.startswith("/") or name.endswith("/"):
        raise BlobNameError("blob name %r must not start or end with '/'" % (name,))
    for part in name.split("/"):
        validate_segment(part, "blob name part")
    return name


def join_name(*parts):
    return "/".join(p for p in parts if p)


def blob_folder(prefix, host, database, backup_id):
    t = mf.backup_id_time(backup_id)
    return join_name(
        validate_prefix(prefix),
        validate_segment(host, "host"),
        validate_segment(mf.database_segment(database), "database"),
        "%04d" % t.year,
        "%02d" % t.month,
    )


def blob_name(prefix, host, database, backup_id, suffix, part=None):
    """suffix is one of _manifest's suffixes (.dump, .dir, .globals.sql, .manifest.json);
    part is a file of a directory-format archive."""
    name = join_name(blob_folder(prefix, host, database, backup_id), backup_id + suffix)
    if part is not None:
        name = join_name(name, validate_segment(part, "archive file name"))
    return validate_blob_name(name)


_SUFFIX_KINDS = (
    (mf.MANIFEST_SUFFIX, KIND_MANIFEST),
    (mf.GLOBALS_SUFFIX, KIND_GLOBALS),
    (mf.ARCHIVE_SUFFIX, KIND_ARCHIVE),
)


def parse_blob_name(name, prefix):
    """What a blob of the layout is: dict(host, database, backup_id, kind, part) or None."""
    prefix = validate_prefix(prefix)
    if prefix:
        if not name.startswith(prefix + "/"):
            return None
        name = name[len(prefix) + 1 :]
    parts = name.split("/")
    if len(parts) not in (5, 6):
        return None
    host, database, year, month, leaf = parts[:5]
    database = mf.database_from_segment(database)
    if database is None:
        return None
    part = None
    if len(parts) == 6:
        if not leaf.endswith(mf.DIRECTORY_SUFFIX):
            return None
        backup_id, kind, part = leaf[: -len(mf.DIRECTORY_SUFFIX)], KIND_ARCHIVE_PART, parts[5]
    else:
        known = [(suffix, kind) for suffix, kind in _SUFFIX_KINDS if leaf.endswith(suffix)]
        if not known:
            return None
        suffix, kind = known[0]
        backup_id = leaf[: -len(suffix)]
    if not mf.BACKUP_ID_RE.match(backup_id) or (year, month) != (backup_id[:4], backup_id[4:6]):
        return None
    return {"host": host, "database": database, "backup_id": backup_id, "kind": kind, "part": part}


def validate_container_name(name):
    if not re.match(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", name or ""):
        raise ConfigError(
            "container %r is not a valid container name: 3-63 characters, lowercase letters, digits and "
            "single hyphens, starting and ending with a letter or digit" % (name,)
        )
    return name


# ---------------------------------------------------------------------------------------------
# Small helpers


def _iso(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return mf.isoformat(value)
    return value


def _metadata_value(value):
    return METADATA_VALUE_RE.sub("?", "%s" % (value,))[:256]


def parse_timestamp(value):
    """A datetime from a backup id (20261127T020000Z), ISO 8601 ('2026-11-27T02:00:00Z',
    '2026-11-27 02:00+01:00', '2026-11-27') or a datetime. Without a zone: UTC."""
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        text = ("%s" % (value,)).strip()
        if mf.BACKUP_ID_RE.match(text):
            return mf.backup_id_time(text)
        try:
            dt = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(
                "cannot read %r as a time: use ISO 8601 (2026-11-27T02:00:00Z) or a backup id (20261127T020000Z)"
                % (value,)
            ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def select_backup(entries, backup_id=None, as_of=None, include_safety=False):
    """_manifest.select_backup, with ``as_of`` in any form parse_timestamp reads."""
    limit = None if as_of is None else parse_timestamp(as_of)
    return mf.select_backup(entries, backup_id=backup_id, as_of=limit, include_safety=include_safety)


def merge_catalog(local, remote):
    """One list over local sets (_manifest.list_local, optionally with 'verified') and remote
    entries (list_remote), keyed by (database, backup_id), oldest first. Marks local sets not yet
    uploaded completely."""
    merged = collections.OrderedDict()
    for entry in local:
        manifest = entry.get("manifest") or {}
        merged[(entry["database"], entry["backup_id"])] = {
            "backup_id": entry["backup_id"],
            "database": entry["database"],
            "host": manifest.get("host"),
            "local": {
                "manifest_path": entry["manifest_path"],
                "usable": entry.get("manifest") is not None,
                "verified": entry.get("verified"),
                "error": entry.get("error"),
            },
            "remote": None,
            "uploaded": False,
            "complete": entry.get("manifest") is not None,
            "purpose": manifest.get("purpose"),
        }
    for entry in remote:
        key = (entry["database"], entry["backup_id"])
        item = merged.get(key)
        if item is None:
            item = merged[key] = {
                "backup_id": entry["backup_id"],
                "database": entry["database"],
                "host": entry["host"],
                "local": None,
                "remote": None,
                "uploaded": False,
                "complete": False,
            }
        item["remote"] = entry
        item["purpose"] = item.get("purpose") or entry.get("purpose")
        item["uploaded"] = bool(entry["complete"])
        item["complete"] = item["complete"] or bool(entry["complete"])
    return sorted(merged.values(), key=lambda e: (e["backup_id"], e["database"]))


class _Timer:
    def __init__(self):
        self.start = time.monotonic()

    def seconds(self):
        return round(time.monotonic() - self.start, 3)


def _throughput(size, seconds):
    return round(size / MIB / seconds, 2) if seconds > 0 else None


def block_size_for(name, size, block_size_mb):
    """The block size (bytes) to upload a file of ``size`` bytes as blob ``name``, and a warning
    when ``block_size_mb`` had to be raised to stay within Azure's blocks per blob (or None)."""
    block_size = block_size_mb * MIB
    warning = None
    if size > block_size * MAX_BLOCKS:
        block_size = -(-size // (MAX_BLOCKS * MIB)) * MIB
        warning = "%s: block size raised from %d MiB to %d MiB (Azure allows %d blocks per blob)" % (
            name,
            block_size_mb,
            block_size // MIB,
            MAX_BLOCKS,
        )
    return block_size, warning


# ---------------------------------------------------------------------------------------------
# The store


class _NoProgress:
    """The reporter of a transfer nobody watches."""

    def __call__(self, done_bytes):
        pass

    def finish(self, done_bytes=None, error=None):
        pass


def validate_tags(tags):
    """Blob index tags: at most 10, keys 1..128 and values 0..256 characters of Azure's set."""
    if not tags:
        return tags
    if not isinstance(tags, dict) or len(tags) > 10:
        raise ConfigError("tags must be a dictionary of at most 10 entries")
    allowed = re.compile(r"^[A-Za-z0-9 +\-./:=_]*$")
    for key, value in tags.items():
        if not (1 <= len("%s" % key) <= 128) or not allowed.match("%s" % key):
            raise ConfigError("tag name %r is not accepted by Azure (1-128 of letters, digits, ' +-./:=_')" % (key,))
        if len("%s" % value) > 256 or not allowed.match("%s" % value):
            raise ConfigError("tag %s has a value Azure does not accept (0-256 of letters, digits, ' +-./:=_')" % key)
    return tags
