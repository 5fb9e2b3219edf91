# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure Blob tier: where history lives forever. Clients per auth mode, the blob layout,
upload of one backup set (never overwriting), catch-up, download, the remote catalog.

Private to the collection. No Ansible imports: the scheduled runner uses this too. Every
message this module raises is safe to show: secrets are redacted and URLs carry no SAS token.

Blob layout (prefix-friendly, so lifecycle rules can filter by prefix)::

    <prefix>/<host>/<database>/<YYYY>/<MM>/<backup_id>.dump
    <prefix>/<host>/<database>/<YYYY>/<MM>/<backup_id>.dir/<file>      directory-format archive
    <prefix>/<host>/<database>/<YYYY>/<MM>/<backup_id>.globals.sql
    <prefix>/<host>/<database>/<YYYY>/<MM>/<backup_id>.manifest.json  uploaded last: a visible
                                                                       manifest means a complete set
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import contextlib
import datetime
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

try:
    from azure.core import MatchConditions
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.storage.blob import (
        BlobBlock,
        BlobServiceClient,
        ContentSettings,
        ExponentialRetry,
        RehydratePriority,
        StandardBlobTier,
    )
except ImportError:
    HAS_AZURE_STORAGE = False
    AZURE_STORAGE_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_AZURE_STORAGE = True
    AZURE_STORAGE_IMPORT_ERROR = None

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


def azure_common_argument_spec():
    """Options every Azure module takes; documented by the insa.timescaledb_backup.azure doc
    fragment. A plain dict: modules pass it to AnsibleModule, the runner uses its defaults."""
    return dict(
        auth_mode=dict(type="str", choices=list(AUTH_MODES)),
        account_name=dict(type="str"),
        account_url=dict(type="str"),
        account_key=dict(type="str", no_log=True),
        sas_token=dict(type="str", no_log=True),
        connection_string=dict(type="str", no_log=True),
        tenant_id=dict(type="str"),
        client_id=dict(type="str"),
        client_secret=dict(type="str", no_log=True),
        authority_host=dict(type="str"),
        container=dict(type="str"),
        prefix=dict(type="str", default=DEFAULT_PREFIX),
        create_container=dict(type="bool", default=False),
        max_retries=dict(type="int", default=5),
        retry_backoff=dict(type="int", default=4),
        timeout=dict(type="int", default=60),
    )


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


# ---------------------------------------------------------------------------------------------
# Settings and clients


def resolve_settings(config, environ=None):
    """Settings from module params or a runner's plain dict: spec defaults for missing keys,
    environment variables for missing values, checks per auth_mode. Raises ConfigError."""
    spec = azure_common_argument_spec()
    env = os.environ if environ is None else environ
    settings = {}
    for key, option in spec.items():
        value = config.get(key)
        settings[key] = option.get("default") if value is None else value
    for key, var in ENV_FALLBACK.items():
        if settings.get(key) in (None, "") and env.get(var):
            settings[key] = env[var]
    mode = settings["auth_mode"]
    if mode not in AUTH_MODES:
        raise ConfigError("auth_mode is required and must be one of: %s" % ", ".join(AUTH_MODES))
    if not settings["container"]:
        raise ConfigError("container is required (or set AZURE_STORAGE_CONTAINER)")
    validate_container_name(settings["container"])
    settings["prefix"] = validate_prefix(settings["prefix"])
    if mode == "connection_string":
        if not settings["connection_string"]:
            raise ConfigError(
                "auth_mode=connection_string needs connection_string (or AZURE_STORAGE_CONNECTION_STRING)"
            )
        if config.get("account_url"):
            raise ConfigError(
                "account_url cannot be combined with auth_mode=connection_string: the connection string "
                "carries its own endpoint (BlobEndpoint=...)"
            )
        settings["account_url"] = None
    else:
        if mode == "account_key" and not (settings["account_name"] and settings["account_key"]):
            raise ConfigError(
                "auth_mode=account_key needs account_name and account_key "
                "(or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY)"
            )
        if mode == "sas" and not settings["sas_token"]:
            raise ConfigError("auth_mode=sas needs sas_token (or AZURE_STORAGE_SAS_TOKEN)")
        if mode == "entra" and settings["client_secret"] and not (settings["tenant_id"] and settings["client_id"]):
            raise ConfigError("auth_mode=entra with client_secret also needs tenant_id and client_id")
        if not settings["account_url"]:
            if not settings["account_name"]:
                raise ConfigError(
                    "auth_mode=%s needs account_url or account_name (or AZURE_STORAGE_BLOB_ENDPOINT / "
                    "AZURE_STORAGE_ACCOUNT) to know the endpoint" % mode
                )
            settings["account_url"] = "https://%s.blob.core.windows.net" % settings["account_name"]
        if "?" in settings["account_url"]:
            raise ConfigError("account_url must not contain a query string; give a SAS token as sas_token")
        settings["account_url"] = settings["account_url"].rstrip("/")
    for key in ("max_retries", "retry_backoff", "timeout"):
        if int(settings[key]) < 0 or (key == "timeout" and int(settings[key]) == 0):
            raise ConfigError("%s must be a positive number" % key)
    return settings


def validate_container_name(name):
    if not re.match(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", name or ""):
        raise ConfigError(
            "container %r is not a valid container name: 3-63 characters, lowercase letters, digits and "
            "single hyphens, starting and ending with a letter or digit" % (name,)
        )
    return name


def redactor_for(settings):
    secrets = [settings.get(k) for k in SECRET_KEYS]
    if settings.get("sas_token"):
        secrets.append(settings["sas_token"].lstrip("?"))
    return Redactor(secrets)


def entra_credential(settings):
    """A service principal when client_secret is given, otherwise DefaultAzureCredential
    (environment, workload identity, managed identity - client_id selects a user-assigned one -,
    Azure CLI...). azure-identity is imported here: the other modes do not pay for it."""
    try:
        from azure.identity import ClientSecretCredential, DefaultAzureCredential
    except ImportError:
        raise ConfigError(
            "auth_mode=entra needs the Python library %s (pip install %s)"
            % (AZURE_IDENTITY_REQUIREMENT, AZURE_IDENTITY_REQUIREMENT)
        ) from None
    kwargs = {}
    if settings.get("authority_host"):
        kwargs["authority"] = settings["authority_host"]
    if settings.get("client_secret"):
        return ClientSecretCredential(settings["tenant_id"], settings["client_id"], settings["client_secret"], **kwargs)
    if settings.get("client_id"):
        kwargs["managed_identity_client_id"] = settings["client_id"]
    return DefaultAzureCredential(**kwargs)


def _client_kwargs(settings):
    backoff = int(settings["retry_backoff"])
    return {
        # The storage SDK's exponential retry: backoff, backoff + 2, backoff + 4, backoff + 8, ...
        "retry_policy": ExponentialRetry(
            initial_backoff=backoff,
            increment_base=2,
            retry_total=int(settings["max_retries"]),
            random_jitter_range=min(backoff, 1),
        ),
        "connection_timeout": int(settings["timeout"]),
        "read_timeout": int(settings["timeout"]),
    }


def service_client(settings, credential=None):
    """A BlobServiceClient for resolved settings. credential overrides the auth mode's (the
    runner and tests may pass any azure-core TokenCredential)."""
    if not HAS_AZURE_STORAGE:
        raise ConfigError("the Python library %s is not installed" % AZURE_STORAGE_REQUIREMENT)
    kwargs = _client_kwargs(settings)
    mode = settings["auth_mode"]
    try:
        if mode == "connection_string" and credential is None:
            return BlobServiceClient.from_connection_string(settings["connection_string"], **kwargs)
        if credential is None:
            if mode == "account_key":
                credential = {"account_name": settings["account_name"], "account_key": settings["account_key"]}
            elif mode == "sas":
                credential = settings["sas_token"].lstrip("?")
            else:
                credential = entra_credential(settings)
        return BlobServiceClient(settings["account_url"], credential=credential, **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            "cannot build an Azure client for auth_mode=%s: %s" % (mode, redactor_for(settings)(e))
        ) from None


def open_store(config, environ=None, credential=None):
    """The entry point for modules (module.params) and the runner (a plain dict with the keys
    of azure_common_argument_spec(); missing keys take the defaults, then the environment)."""
    settings = resolve_settings(config, environ)
    return BlobStore(service_client(settings, credential), settings)


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


def _error_code(exc):
    code = getattr(exc, "error_code", None)
    if code is None and getattr(exc, "response", None) is not None:
        code = exc.response.headers.get("x-ms-error-code")
    return "%s" % (code,) if code else None


class _Timer:
    def __init__(self):
        self.start = time.monotonic()

    def seconds(self):
        return round(time.monotonic() - self.start, 3)


def _throughput(size, seconds):
    return round(size / MIB / seconds, 2) if seconds > 0 else None


# ---------------------------------------------------------------------------------------------
# The store


class _NoProgress:
    """The reporter of a transfer nobody watches."""

    def __call__(self, done_bytes):
        pass

    def finish(self, done_bytes=None, error=None):
        pass


class BlobStore:
    """One container and prefix of one account. Methods raise AzureTierError subclasses with
    messages that are safe to show (no secrets, no SAS)."""

    def __init__(self, client, settings):
        self.client = client
        self.settings = settings
        self.container = settings["container"]
        self.prefix = settings["prefix"]
        self.redact = redactor_for(settings)
        self.container_client = client.get_container_client(self.container)
        self._container_checked = False
        # Optional: progress(label, total_bytes) -> reporter with __call__(done_bytes) and
        # finish(done_bytes=None, error=None), e.g. _log.Progress. Large uploads and downloads
        # report through it; small blobs (manifests, globals) do not.
        self.progress = None

    # -- naming and urls

    @property
    def account_url(self):
        return url_without_sas(self.client.url).rstrip("/")

    def url(self, name):
        return url_without_sas(self.container_client.get_blob_client(name).url)

    def folder(self, host=None, database=None):
        parts = [self.prefix]
        if host:
            parts.append(validate_segment(host, "host"))
            if database:
                parts.append(validate_segment(mf.database_segment(database), "database"))
        return join_name(*parts) + "/" if any(parts) else ""

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

    # -- errors

    def explain(self, exc, action):
        """An AzureTierError saying what went wrong and what to do, from an SDK exception."""
        if isinstance(exc, AzureTierError):
            return exc
        code = _error_code(exc)
        status = getattr(exc, "status_code", None)
        where = "%s (container %s at %s)" % (action, self.container, self.account_url)
        if isinstance(exc, ClientAuthenticationError) and status is None and self.settings["auth_mode"] == "entra":
            # No HTTP status: the credential itself could not get a token.
            lines = [line.strip() for line in ("%s" % (exc,)).splitlines() if line.strip()]
            return ServiceError(
                "could not get a Microsoft Entra token to %s: %s. Check the managed or workload identity, the "
                "AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET variables or tenant_id, client_id and "
                "client_secret" % (where, self.redact(" ".join(lines[:4]) or type(exc).__name__))
            )
        if (
            isinstance(exc, ClientAuthenticationError)
            or status in (401, 403)
            or (code and code.startswith(("Authentication", "Authorization", "InvalidAuthenticationInfo")))
        ):
            hint = {
                "connection_string": "check the AccountKey or SharedAccessSignature in the connection string",
                "account_key": "check account_name and account_key (a rotated key?)",
                "sas": "check the SAS token: not expired, signed for this account/container, with permissions "
                "r, a, c, w, l (and t for tags)",
                "entra": "check the identity has 'Storage Blob Data Contributor' on the account or container",
            }[self.settings["auth_mode"]]
            return ServiceError(
                "Azure refused the credentials of auth_mode=%s while trying to %s: %s; %s"
                % (self.settings["auth_mode"], where, code or self._first_line(exc), hint)
            )
        if code == "ContainerNotFound":
            return self._missing_container()
        if code == "BlobArchived":
            return ArchivedError("%s: the blob is in the Archive tier; rehydrate it first" % where)
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return ServiceError(
                "cannot reach Azure Blob Storage to %s after %s retries: %s. Check the network, the firewall "
                "and account_url; the local backup is kept and the next run tries again"
                % (where, self.settings["max_retries"], self._first_line(exc))
            )
        return ServiceError("Azure failed to %s: %s" % (where, code or self._first_line(exc)))

    def _missing_container(self):
        return NotFoundError(
            "container %s does not exist at %s; create it or set create_container: true"
            % (self.container, self.account_url)
        )

    def _first_line(self, exc):
        text = getattr(exc, "message", None) or "%s" % (exc,) or type(exc).__name__
        return self.redact(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)

    # -- container

    def ensure_container(self, create=None, check_mode=False):
        """{'exists': ..., 'created': ...}; creates the container when it is missing and create
        (default: the create_container setting) is true - in check mode only says it would -,
        else raises NotFoundError."""
        if self._container_checked:
            return {"exists": True, "created": False}
        create = self.settings["create_container"] if create is None else create
        try:
            # Listing (permission l) works with a container SAS; Get Container Properties does not.
            next(iter(self.container_client.list_blobs(results_per_page=1).by_page()), None)
            exists = True
        except ResourceNotFoundError:
            exists = False
        except AzureError as e:
            raise self.explain(e, "check the container") from None
        if exists:
            self._container_checked = True
            return {"exists": True, "created": False}
        if not create:
            raise self._missing_container()
        if check_mode:
            return {"exists": False, "created": True}
        try:
            self.container_client.create_container()
        except ResourceExistsError:
            pass
        except AzureError as e:
            raise self.explain(e, "create the container") from None
        self._container_checked = True
        return {"exists": True, "created": True}

    # -- properties

    def properties(self, name):
        """Blob properties as a plain dict, or None when the blob does not exist."""
        try:
            props = self.container_client.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as e:
            if _error_code(e) == "ContainerNotFound":
                raise self.explain(e, "read %s" % name) from None
            return None
        except AzureError as e:
            raise self.explain(e, "read the properties of %s" % name) from None
        return self.blob_info(props)

    def _listing(self, start):
        """name -> blob info (as properties() gives it) of the blobs whose names start with start."""
        try:
            return {
                props.name: self.blob_info(props)
                for props in self.container_client.list_blobs(name_starts_with=start or None, include=["metadata"])
            }
        except AzureError as e:
            raise self.explain(e, "list %s" % (start or "the container")) from None

    def blob_info(self, props):
        """The dict this store reports for a blob (name, url, size, sha256 metadata, tier...)."""
        metadata = dict(props.metadata or {})
        return {
            "name": props.name,
            "url": self.url(props.name),
            "size": props.size,
            "etag": (props.etag or "").strip('"') or None,
            "last_modified": _iso(props.last_modified),
            "tier": getattr(props.blob_tier, "value", props.blob_tier) or None,
            "tier_change_time": _iso(getattr(props, "blob_tier_change_time", None)),
            "archive_status": getattr(props, "archive_status", None),
            "sha256": metadata.get("sha256"),
            "metadata": metadata,
        }

    # -- upload

    def _set_items(self, bset, manifest, host):
        """What a set consists of, in upload order (manifest last). Each item: kind, part, path,
        name, expected sha256 and size (size None: not recorded)."""

        def item(kind, path, suffix, sha256, size, part=None):
            name = blob_name(self.prefix, host, bset.database, bset.backup_id, suffix, part)
            return {"kind": kind, "part": part, "path": path, "name": name, "sha256": sha256, "size": size}

        archive = manifest.get("archive") or {}
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
        else:
            if not archive.get("sha256"):
                raise mf.ManifestError("%s lacks archive.sha256" % bset.manifest)
            items.append(
                item(KIND_ARCHIVE, bset.archive, mf.ARCHIVE_SUFFIX, archive["sha256"], archive.get("size_bytes"))
            )
        roles = manifest.get("globals") or {}
        if roles or os.path.exists(bset.globals_sql):
            items.append(
                item(KIND_GLOBALS, bset.globals_sql, mf.GLOBALS_SUFFIX, roles.get("sha256"), roles.get("size_bytes"))
            )
        for entry in items:
            if not os.path.isfile(entry["path"]):
                raise IntegrityError("%s is missing: the backup set %s is incomplete" % (entry["path"], bset.backup_id))
            if entry["sha256"] is None:
                entry["sha256"] = mf.sha256_file(entry["path"])[0]
        digest, size = mf.sha256_file(bset.manifest)
        items.append(item(KIND_MANIFEST, bset.manifest, mf.MANIFEST_SUFFIX, digest, size))
        return items

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
    ):
        """Uploads the set a manifest describes: archive, globals, then the manifest. Blobs that
        exist with the same sha256 are skipped (nothing sent); a blob with other content is a
        ConflictError before anything is sent. access_tier applies to the archive only, so the
        manifest stays readable for the catalog."""
        timer = _Timer()
        if access_tier is not None and access_tier not in TIERS:
            raise ConfigError("access_tier must be one of %s" % ", ".join(TIERS))
        if not 1 <= int(block_size_mb) <= MAX_BLOCK_SIZE_MB:
            raise ConfigError("block_size_mb must be between 1 and %d" % MAX_BLOCK_SIZE_MB)
        if int(max_concurrency) < 1:
            raise ConfigError("max_concurrency must be at least 1")
        validate_tags(tags)
        manifest = mf.read_manifest(manifest_path)
        bset = mf.BackupSet.from_manifest(os.path.dirname(os.path.dirname(os.path.abspath(manifest_path))), manifest)
        if os.path.abspath(bset.manifest) != os.path.abspath(manifest_path):
            raise mf.ManifestError(
                "%s describes backup %s of %s, which belongs at %s"
                % (manifest_path, bset.backup_id, bset.database, bset.manifest)
            )
        host = validate_segment(host or manifest.get("host") or socket.getfqdn(), "host")
        items = self._set_items(bset, manifest, host)
        container = self.ensure_container(check_mode=check_mode)

        # Plan: look at every blob first (one listing of the set's names, with metadata), so a
        # conflict fails before anything is sent.
        existing = {}
        if container["exists"]:
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

        warnings = []
        blobs = []
        for item in items:
            if item["remote"] is not None:
                blobs.append(self._blob_result(item, "skipped", item["remote"]))
                continue
            if check_mode:
                size = os.path.getsize(item["path"])
                blobs.append(self._blob_result(item, "would_upload", {"size": size}))
                continue
            tier = access_tier if item["kind"] in (KIND_ARCHIVE, KIND_ARCHIVE_PART) else None
            metadata = self._metadata(manifest, host, item["kind"], item["sha256"], item["part"])
            info, warning = self.upload_file(item, metadata, tier, tags, int(block_size_mb), int(max_concurrency))
            if warning:
                warnings.append(warning)
            blobs.append(info)
        uploaded = [b for b in blobs if b["status"] in ("uploaded", "would_upload")]
        archive = blobs[0]
        sent = sum(b["bytes"] for b in blobs if b["status"] == "uploaded")
        seconds = timer.seconds()
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

    def upload_file(self, item, metadata, tier, tags, block_size_mb, concurrency):
        """Stages the file as blocks (one pass: read, hash, send), commits only when the content
        matches the expected sha256, and only if the blob does not exist (If-None-Match: *).

        The one way any file reaches Azure (backup sets here, chunk archives in _history).
        ``item``: ``name`` (blob name), ``path``, ``kind`` (KIND_*), ``part``, ``sha256`` and
        ``size`` expected. Returns (blob result dict, warning or None)."""
        timer = _Timer()
        name, path = item["name"], item["path"]
        blob = self.container_client.get_blob_client(name)
        size = os.path.getsize(path)
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
        with self._transfer("upload", name, size) as reporter:
            try:
                block_ids, digest, sent = self._stage_blocks(blob, path, block_size, concurrency, reporter)
            except AzureError as e:
                raise self.explain(e, "upload %s" % name) from None
        if digest != item["sha256"] or (item["size"] is not None and sent != item["size"]):
            raise IntegrityError(
                "%s does not match its manifest (sha256 %s, %d bytes; expected %s, %s bytes): not uploaded. "
                "Verify the backup set; it may be damaged" % (path, digest, sent, item["sha256"], item["size"])
            )
        kwargs = {
            "content_settings": ContentSettings(content_type=CONTENT_TYPES[item["kind"]]),
            "metadata": metadata,
            "match_condition": MatchConditions.IfMissing,
        }
        if tier:
            kwargs["standard_blob_tier"] = StandardBlobTier(tier)
        if tags:
            kwargs["tags"] = dict(tags)
        try:
            blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids], **kwargs)
        except ResourceExistsError:
            # Someone committed the same name meanwhile: fine if it is the same content.
            remote = self.properties(name)
            if remote is None or remote["sha256"] != digest:
                raise ConflictError(
                    "%s appeared while uploading, with other content (sha256 %s); not overwritten"
                    % (self.url(name), remote and remote["sha256"])
                ) from None
            return self._blob_result(item, "skipped", remote), warning
        except HttpResponseError as e:
            if e.status_code == 412:
                remote = self.properties(name)
                if remote is not None and remote["sha256"] == digest:
                    return self._blob_result(item, "skipped", remote), warning
            raise self.explain(e, "commit %s" % name) from None
        except AzureError as e:
            raise self.explain(e, "commit %s" % name) from None
        remote = self.properties(name)
        if remote is None or remote["size"] != sent or remote["sha256"] != digest:
            raise IntegrityError(
                "%s reads back as %s bytes with sha256 %s after upload; expected %d bytes with sha256 %s"
                % (self.url(name), remote and remote["size"], remote and remote["sha256"], sent, digest)
            )
        seconds = timer.seconds()
        remote.update({"duration": seconds, "throughput_mib_s": _throughput(sent, seconds)})
        return self._blob_result(item, "uploaded", remote), warning

    @staticmethod
    def _stage_blocks(blob, path, block_size, concurrency, reporter):
        """At most `concurrency` blocks in flight, one more being read: memory stays at about
        (concurrency + 1) x block_size whatever the file size. Block ids are the offsets, so a
        retried run restages the same ids. `reporter` hears the bytes the service has taken."""
        digest = hashlib.sha256()
        block_ids = []
        offset = 0
        acked = [0]
        in_flight = collections.deque()

        def wait_oldest():
            future, length = in_flight.popleft()
            future.result()
            acked[0] += length
            reporter(acked[0])

        with open(path, "rb") as f, ThreadPoolExecutor(max_workers=concurrency) as pool:
            try:
                while True:
                    data = f.read(block_size)
                    if not data:
                        break
                    digest.update(data)
                    block_id = "%032d" % offset
                    block_ids.append(block_id)
                    in_flight.append(
                        (
                            pool.submit(blob.stage_block, block_id, data, length=len(data), validate_content=True),
                            len(data),
                        )
                    )
                    offset += len(data)
                    data = None
                    while len(in_flight) >= concurrency:
                        wait_oldest()
                while in_flight:
                    wait_oldest()
            except BaseException:
                for future, _length in in_flight:
                    future.cancel()
                raise
        return block_ids, digest.hexdigest(), offset

    # -- catalog

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

    def read_blob(self, name, max_bytes=64 * MIB):
        """A small blob's content (manifests)."""
        try:
            downloader = self.container_client.get_blob_client(name).download_blob(validate_content=True)
            if downloader.size > max_bytes:
                raise IntegrityError(
                    "%s is %d bytes; a manifest is never that large" % (self.url(name), downloader.size)
                )
            return downloader.readall()
        except AzureError as e:
            raise self.explain(e, "read %s" % name) from None

    def read_manifest(self, entry):
        """The parsed manifest of a complete remote entry (the blob must not be archived)."""
        data = self.read_blob(entry["manifest_name"])
        manifest = mf.parse_manifest(data, source=self.url(entry["manifest_name"]))
        if (manifest["backup_id"], manifest["database"]) != (entry["backup_id"], entry["database"]):
            raise IntegrityError(
                "%s describes backup %s of %s, not the set it is stored with"
                % (self.url(entry["manifest_name"]), manifest["backup_id"], manifest["database"])
            )
        return manifest

    def with_manifests(self, entries):
        """Adds 'manifest' (or 'manifest_error') to each complete entry, reading readable blobs."""
        for entry in entries:
            entry.setdefault("manifest", None)
            if not entry["complete"]:
                continue
            if any(b["kind"] == KIND_MANIFEST and b["tier"] == "Archive" for b in entry["blobs"]):
                entry["manifest_error"] = "the manifest blob is in the Archive tier"
                continue
            try:
                entry["manifest"] = self.read_manifest(entry)
            except (AzureTierError, mf.ManifestError) as e:
                entry["manifest_error"] = self.redact(e)
        return entries

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
            except (AzureTierError, mf.ManifestError) as e:
                failures.append(
                    {"backup_id": entry["backup_id"], "database": entry["database"], "error": self.redact(e)}
                )
                if isinstance(e, (ConflictError, IntegrityError, BlobNameError, mf.ManifestError)):
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
        entries = self.list_remote(host, database)
        entry = select_backup(entries, backup_id=backup_id, as_of=before)
        if entry is None:
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

        manifest_bytes = self.read_blob(entry["manifest_name"])
        manifest = mf.parse_manifest(manifest_bytes, source=self.url(entry["manifest_name"]))
        if (manifest["backup_id"], manifest["database"]) != (entry["backup_id"], database):
            raise IntegrityError("%s describes another backup" % self.url(entry["manifest_name"]))
        bset = mf.BackupSet.from_manifest(dest_dir, manifest)
        result["manifest_path"] = bset.manifest
        result["archive_path"] = bset.archive
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
            result["duration"] = timer.seconds()
            return result
        for path in (bset.archive, bset.globals_sql):
            if os.path.exists(path):
                raise ConflictError(
                    "%s exists without its manifest (an incomplete set or a dump in progress); move it away or "
                    "download into another directory" % path
                )
        result["changed"] = True
        if check_mode:
            result["bytes"] = entry["bytes"]
            return result
        if not os.path.isdir(bset.folder):
            os.makedirs(bset.folder, mode=0o700)
        blobs = {(b["kind"], b["part"]): b for b in entry["blobs"]}
        archive = manifest["archive"]
        if bset.directory_format:
            files = archive.get("files") or {}
            self._download_directory(entry, bset, files, blobs)
            result["files"].extend(os.path.join(bset.archive, f) for f in sorted(files))
        else:
            name = blob_name(self.prefix, host, database, bset.backup_id, mf.ARCHIVE_SUFFIX)
            self._require_blob(blobs, KIND_ARCHIVE, None, name)
            self.download_file(name, bset.archive, archive["sha256"])
            result["files"].append(bset.archive)
        globals_info = manifest.get("globals")
        if globals_info:
            name = blob_name(self.prefix, host, database, bset.backup_id, mf.GLOBALS_SUFFIX)
            self._require_blob(blobs, KIND_GLOBALS, None, name)
            self.download_file(name, bset.globals_sql, globals_info["sha256"])
            result["files"].append(bset.globals_sql)
        mf.atomic_write_bytes(bset.manifest, manifest_bytes)
        result["files"].append(bset.manifest)
        result["bytes"] = entry["bytes"]
        result["duration"] = timer.seconds()
        result["throughput_mib_s"] = _throughput(entry["bytes"], result["duration"])
        return result

    def _require_blob(self, blobs, kind, part, name):
        if (kind, part) not in blobs:
            raise IntegrityError("%s is missing although the manifest lists it" % self.url(name))

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
            if info in pending:
                continue
            try:
                self.container_client.get_blob_client(info["name"]).set_standard_blob_tier(
                    StandardBlobTier(tier), rehydrate_priority=RehydratePriority(priority)
                )
            except AzureError as e:
                raise self.explain(e, "start the rehydration of %s" % info["name"]) from None
        return result

    def download_file(self, name, path, expected_sha256):
        """Streams a blob into a temp file beside path (hashing on the way), fsyncs it, checks the
        sha256 and renames it into place. The temp file is removed on any failure."""
        folder = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=mf.PARTIAL_SUFFIX, dir=folder)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                writer = mf.HashingWriter(f)
                try:
                    # In order, one pass: the sha256 against the manifest checks the content end to end.
                    downloader = self.container_client.get_blob_client(name).download_blob()
                    with self._transfer("download", name, downloader.size or 0) as reporter:
                        for chunk in downloader.chunks():
                            writer.write(chunk)
                            reporter(writer.size)
                except HttpResponseError as e:
                    if _error_code(e) == "BlobArchived":
                        raise ArchivedError(
                            "%s is in the Archive tier; download with rehydrate: true first" % self.url(name)
                        ) from None
                    raise self.explain(e, "download %s" % name) from None
                except AzureError as e:
                    raise self.explain(e, "download %s" % name) from None
                f.flush()
                os.fsync(f.fileno())
            digest = writer.sha256.hexdigest()
            if digest != expected_sha256:
                raise IntegrityError(
                    "%s downloaded with sha256 %s but its manifest says %s; not kept"
                    % (self.url(name), digest, expected_sha256)
                )
            os.rename(tmp, path)
            mf.fsync_dir(folder)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return writer.size

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
