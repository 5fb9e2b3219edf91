# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure Blob tier: where history lives forever. This file is the transport - clients per
auth mode, and BlobStore's blob operations (container, listing, properties, block upload of one
file, server-side copy, checked download, tiers, rehydration): the only one that imports the
SDK. Whole backup sets are BlobStore's too, from the files it inherits: upload and download in
_azure_transfers, the catalog and catch-up in _azure_catalog. The settings are _azure_settings';
errors, the blob layout and selection are _azure_names'. ``__all__`` is the API.

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
import hashlib
import os
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure_catalog,
    _azure_transfers,
    _follow,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    AUTH_MODES,
    AZURE_IDENTITY_REQUIREMENT,
    AZURE_STORAGE_REQUIREMENT,
    CONTENT_TYPES,
    DEFAULT_BLOCK_SIZE_MB,
    DEFAULT_CONCURRENCY,
    ENV_FALLBACK,
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_MANIFEST,
    MAX_BLOCKS,
    MAX_SEGMENT,
    MIB,
    SECRET_KEYS,
    TIERS,
    ArchivedError,
    AzureTierError,
    BlobNameError,
    ConfigError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    Redactor,
    ServiceError,
    _iso,
    _metadata_value,
    _NoProgress,
    _throughput,
    _Timer,
    blob_name,
    block_size_for,
    join_name,
    merge_catalog,
    parse_blob_name,
    parse_timestamp,
    select_backup,
    url_without_sas,
    validate_blob_name,
    validate_container_name,
    validate_prefix,
    validate_segment,
    validate_tags,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_settings import (
    azure_common_argument_spec,
    redactor_for,
    resolve_settings,
)

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


# ---------------------------------------------------------------------------------------------
# Clients


def entra_credential(settings, environment=True):
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
    if not environment:  # a replica's identity: AZURE_CLIENT_SECRET & co. are the primary's
        kwargs["exclude_environment_credential"] = True
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


def _error_code(exc):
    code = getattr(exc, "error_code", None)
    if code is None and getattr(exc, "response", None) is not None:
        code = exc.response.headers.get("x-ms-error-code")
    return "%s" % (code,) if code else None


class BlobStore(_azure_catalog.Catalog, _azure_transfers.Transfers):
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
        # What manifests read from the container must be signed by, and what signs the ones
        # written (_signing.Policy): modules and the runner set it from their signing settings.
        self.signing = _signing.UNCONFIGURED

    # -- naming and urls

    @property
    def account_url(self):
        return url_without_sas(self.client.url).rstrip("/")

    def url(self, name):
        return url_without_sas(self.container_client.get_blob_client(name).url)

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

    def upload_file(self, item, metadata, tier, tags, block_size_mb, concurrency, staged=None):
        """Stages the file as blocks (one pass: read, hash, send), commits only when the content
        matches the expected sha256, and only if the blob does not exist (If-None-Match: *).

        The one way any file reaches Azure (backup sets here, chunk archives in _history).
        ``item``: ``name`` (blob name), ``path``, ``kind`` (KIND_*), ``part``, ``sha256`` and
        ``size`` expected. ``staged``: the result of a FollowingUpload of this file, whose blocks
        are committed instead of staging them again when it staged exactly this content.
        Returns (blob result dict, warning or None)."""
        timer = _Timer()
        name, path = item["name"], item["path"]
        blob = self.container_client.get_blob_client(name)
        warning = None
        use_staged = staged is not None and staged["sha256"] == item["sha256"] and staged["size"] == item["size"]
        if use_staged:
            block_ids, digest, sent = staged["block_ids"], staged["sha256"], staged["size"]
        else:
            block_ids, digest, sent, warning = self._stage_file(blob, path, block_size_mb, concurrency)
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
        same = self._commit(blob, name, block_ids, digest, kwargs)
        if same is not None:
            return self._blob_result(item, "skipped", same), warning
        remote = self.properties(name)
        if remote is None or remote["size"] != sent or remote["sha256"] != digest:
            raise IntegrityError(
                "%s reads back as %s bytes with sha256 %s after upload; expected %d bytes with sha256 %s"
                % (self.url(name), remote and remote["size"], remote and remote["sha256"], sent, digest)
            )
        seconds = timer.seconds()
        # Blocks staged during the dump: this call only committed them, no rate to speak of.
        remote.update({"duration": seconds, "throughput_mib_s": None if use_staged else _throughput(sent, seconds)})
        result = self._blob_result(item, "uploaded", remote)
        if use_staged:
            result["staged_during_dump"] = True
        return result, warning

    def _stage_file(self, blob, path, block_size_mb, concurrency):
        name = blob.blob_name
        size = os.path.getsize(path)
        block_size, warning = block_size_for(name, size, block_size_mb)
        with self._transfer("upload", name, size) as reporter, open(path, "rb") as f:
            try:
                blocks = iter(lambda: f.read(block_size), b"")
                block_ids, digest, sent = _stage_blocks(blob, blocks, concurrency, reporter)
            except AzureError as e:
                raise self.explain(e, "upload %s" % name) from None
        return block_ids, digest, sent, warning

    def following_upload(self, name, growing, size_bound, concurrency=DEFAULT_CONCURRENCY):
        """A FollowingUpload of blob ``name`` from a _follow.GrowingFile (not started), with blocks
        large enough for an archive of up to ``size_bound`` bytes."""
        validate_blob_name(name)
        block_size, _warning = block_size_for(name, size_bound, DEFAULT_BLOCK_SIZE_MB)
        return FollowingUpload(self, name, growing, block_size, concurrency)

    def _commit(self, blob, name, block_ids, digest, kwargs):
        """Commits the staged blocks if the blob does not exist. Returns None, or the properties
        of a blob someone committed meanwhile with the same content (nothing left to do)."""
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
            return remote
        except HttpResponseError as e:
            if e.status_code == 412:
                remote = self.properties(name)
                if remote is not None and remote["sha256"] == digest:
                    return remote
            raise self.explain(e, "commit %s" % name) from None
        except AzureError as e:
            raise self.explain(e, "commit %s" % name) from None
        return None

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

    def copy_blob(self, source, name, metadata, timeout=3600):
        """Server-side copy of a blob of this container to a new name: Azure copies within the
        account (Copy Blob; the destination's credentials authorize a source of the same account,
        a SAS travels in the source URL), nothing passes through this host. Never over an existing
        blob (If-None-Match: *). Waits until the copy is done; returns the copy's properties. A
        copy is only as good as its source: read it back (download_file) before trusting it."""
        blob = self.container_client.get_blob_client(name)
        deadline = time.monotonic() + timeout
        try:
            blob.start_copy_from_url(
                self.container_client.get_blob_client(source).url,
                metadata=metadata,
                match_condition=MatchConditions.IfMissing,
            )
            props = blob.get_blob_properties()
            while props.copy.status == "pending" and time.monotonic() < deadline:
                time.sleep(2)
                props = blob.get_blob_properties()
        except HttpResponseError as e:
            if e.status_code in (409, 412) and _error_code(e) != "BlobArchived":
                raise ConflictError("%s exists already; not overwritten" % self.url(name)) from None
            raise self.explain(e, "copy %s to %s" % (source, name)) from None
        except AzureError as e:
            raise self.explain(e, "copy %s to %s" % (source, name)) from None
        if props.copy.status != "success":
            raise ServiceError(
                "the copy of %s to %s is %s (%s); the next run checks it again"
                % (self.url(source), self.url(name), props.copy.status, props.copy.status_description or "no reason")
            )
        return self.blob_info(props)

    def copy_from(self, source, name, sha256, size, tier=None, concurrency=DEFAULT_CONCURRENCY):
        """Copies blob ``name`` of another store (another account) to the same name here, streamed:
        read in order, hashed, staged as blocks - memory stays at a few blocks whatever the size -,
        committed only when the content has the expected sha256 and size, never over an existing
        blob (If-None-Match: *), then read back. Content type and metadata travel with it. No
        server-side copy: across accounts that needs a SAS of the source, which no target holds.
        Errors reading the source are the source's (source.explain); returns the blob's info."""
        validate_blob_name(name)
        blob = self.container_client.get_blob_client(name)
        try:
            props = source.container_client.get_blob_client(name).get_blob_properties()
        except AzureError as e:
            raise source.explain(e, "read %s" % name) from None
        if getattr(props.blob_tier, "value", props.blob_tier) == "Archive":
            raise ArchivedError("%s is in the Archive tier; rehydrate it before it can be copied" % source.url(name))
        block_size, _warning = block_size_for(name, props.size, DEFAULT_BLOCK_SIZE_MB)
        with self._transfer("copy", name, props.size) as reporter:
            try:
                block_ids, digest, sent = _stage_blocks(
                    blob, _source_blocks(source, name, block_size), concurrency, reporter
                )
            except AzureError as e:
                raise self.explain(e, "copy %s" % name) from None
        if digest != sha256 or (size is not None and sent != size):
            raise IntegrityError(
                "%s reads as %d bytes with sha256 %s, its manifest says %s bytes with sha256 %s: not copied"
                % (source.url(name), sent, digest, size, sha256)
            )
        kwargs = {
            "content_settings": ContentSettings(content_type=props.content_settings.content_type),
            "metadata": dict(props.metadata or {}),
            "match_condition": MatchConditions.IfMissing,
        }
        if tier:
            kwargs["standard_blob_tier"] = StandardBlobTier(tier)
        same = self._commit(blob, name, block_ids, digest, kwargs)
        if same is not None:
            return dict(same, status="skipped")
        remote = self.properties(name)
        if remote is None or remote["size"] != sent:
            raise IntegrityError(
                "%s reads back as %s bytes after the copy; expected %d"
                % (self.url(name), remote and remote["size"], sent)
            )
        return dict(remote, status="copied")

    def _start_rehydration(self, name, tier, priority):
        """Copies an archived blob back to an online tier (Azure takes hours; see _rehydrate)."""
        try:
            self.container_client.get_blob_client(name).set_standard_blob_tier(
                StandardBlobTier(tier), rehydrate_priority=RehydratePriority(priority)
            )
        except AzureError as e:
            raise self.explain(e, "start the rehydration of %s" % name) from None

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


def _stage_blocks(blob, blocks, concurrency, reporter, hashed=False):
    """Stages the iterable's blocks. At most `concurrency` blocks in flight, one more being
    read: memory stays at about (concurrency + 1) x block_size whatever the file size. Block
    ids are the offsets, so a retried run restages the same ids. `reporter` hears the bytes
    the service has taken. Returns (block ids, sha256, bytes); the sha256 is None when the
    blocks are ``hashed`` already (a _follow.Follower's)."""
    digest = None if hashed else hashlib.sha256()
    block_ids = []
    offset = 0
    acked = [0]
    in_flight = collections.deque()

    def wait_oldest():
        future, length = in_flight.popleft()
        future.result()
        acked[0] += length
        reporter(acked[0])

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        try:
            for data in blocks:
                if len(block_ids) >= MAX_BLOCKS:
                    raise IntegrityError("%s: more than %d blocks; not staged" % (blob.blob_name, MAX_BLOCKS))
                if digest is not None:
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
    return block_ids, digest.hexdigest() if digest is not None else None, offset


def _source_blocks(source, name, block_size):
    """The blob's content in blocks of ``block_size`` bytes (the last one shorter), read in order
    from the source store; its errors are the source's."""
    pending = bytearray()
    try:
        for chunk in source.container_client.get_blob_client(name).download_blob().chunks():
            pending += chunk
            while len(pending) >= block_size:
                yield bytes(pending[:block_size])
                del pending[:block_size]
    except AzureError as e:
        raise source.explain(e, "read %s" % name) from None
    if pending:
        yield bytes(pending)


class FollowingUpload(_follow.Follower):
    """Stages a one-file archive's blocks in Azure while pg_dump writes it, reading the file
    behind the dump (never holding it up). It never commits: the upload of the verified set
    commits these blocks (upload_file's ``staged``) when it staged exactly the archive the
    manifest describes, and stages from the file otherwise. Uncommitted blocks are no blob:
    Azure discards them after a week. After join(): ``result`` (block_ids, sha256, size) or
    ``error`` (redacted)."""

    name = "following-upload"

    def __init__(self, store, blob_name, growing, block_size, concurrency):
        super().__init__(growing, block_size)
        self.store, self.blob_name, self.concurrency = store, blob_name, concurrency

    def work(self, blocks):
        blob = self.store.container_client.get_blob_client(self.blob_name)
        try:
            self.store.ensure_container()  # a first run creates it here, as its upload would
            block_ids, _none, sent = _stage_blocks(blob, blocks, self.concurrency, _NoProgress(), hashed=True)
        except AzureError as e:
            raise self.store.explain(e, "upload %s" % self.blob_name) from None
        return {"block_ids": block_ids, "sha256": self.sha256, "size": sent}  # the follower's own sha256


# The Azure tier's API for modules, the runner and the tests, wherever it lives.
__all__ = [
    "AUTH_MODES",
    "AZURE_STORAGE_IMPORT_ERROR",
    "AZURE_STORAGE_REQUIREMENT",
    "ArchivedError",
    "AzureTierError",
    "BlobNameError",
    "BlobStore",
    "ConfigError",
    "ConflictError",
    "DEFAULT_BLOCK_SIZE_MB",
    "DEFAULT_CONCURRENCY",
    "ENV_FALLBACK",
    "FollowingUpload",
    "HAS_AZURE_STORAGE",
    "IntegrityError",
    "KIND_ARCHIVE",
    "KIND_ARCHIVE_PART",
    "KIND_MANIFEST",
    "MAX_SEGMENT",
    "NotFoundError",
    "Redactor",
    "SECRET_KEYS",
    "ServiceError",
    "TIERS",
    "_metadata_value",
    "azure_common_argument_spec",
    "blob_name",
    "entra_credential",
    "join_name",
    "merge_catalog",
    "open_store",
    "parse_blob_name",
    "parse_timestamp",
    "redactor_for",
    "resolve_settings",
    "select_backup",
    "url_without_sas",
    "validate_blob_name",
    "validate_container_name",
    "validate_prefix",
    "validate_segment",
    "validate_tags",
]
