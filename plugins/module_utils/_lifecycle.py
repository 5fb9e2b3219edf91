# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure's side of the lifecycle and the protection of the backup blobs (the rules and settings
as data are in _lifecycle_rules and _protection).

- The storage account's lifecycle management policy, through Azure Resource Manager
  (azure-mgmt-storage, ``management_policies``; needs an Entra identity with a role on the
  account such as Storage Account Contributor).
- The account's blob service properties (versioning, blob and container soft delete) and the
  container's immutability policy, through Resource Manager too (``blob_services``,
  ``blob_containers``).
- The data plane, for accounts where only a SAS token or data-plane roles are available: list
  the blobs under a rule's prefixes and set each blob's tier by its age; and read what the data
  plane can tell of the container's protection.

Private to the collection. No Ansible imports: the scheduled runner may use this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import time
import traceback

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _errors, _protection
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle_rules as rules_
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._lifecycle_rules import LifecycleError

try:
    from azure.core import MatchConditions
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import AzureError, ResourceNotFoundError
except ImportError:  # comes with azure-storage-blob and azure-mgmt-storage: without it neither works
    pass
try:
    from azure.mgmt.storage import StorageManagementClient
except ImportError:
    HAS_AZURE_MGMT_STORAGE = False
    AZURE_MGMT_STORAGE_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_AZURE_MGMT_STORAGE = True
    AZURE_MGMT_STORAGE_IMPORT_ERROR = None

AZURE_MGMT_STORAGE_REQUIREMENT = "azure-mgmt-storage"

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
# How long a run waits for Azure to migrate a container to version-level immutability before it
# reports the migration as pending (the next run picks it up).
MIGRATION_WAIT_SECONDS = 300


def arm_argument_spec():
    """The options of the modules that talk to Resource Manager (doc fragment azure.ARM)."""
    return dict(
        subscription_id=dict(type="str"),
        resource_group=dict(type="str"),
        arm_endpoint=dict(type="str", default=DEFAULT_ARM_ENDPOINT),
        arm_access_token=dict(type="str", no_log=True),
    )


class StaticTokenCredential:
    """A bearer token obtained elsewhere (e.g. `az account get-access-token`); also what the
    integration tests hand to the ARM test double."""

    def __init__(self, token, expires_in=3600):
        self._token = token
        self._expires_on = int(time.time()) + int(expires_in)

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, self._expires_on)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass


def _arm_kind(exc):
    """The kind of a Resource Manager failure: a refused identity or role is fixed in the settings
    (config); a missing account or group is not_found; a refused state change is a conflict; the
    rest is the service's."""
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return "config"
    if status == 404:
        return "not_found"
    if status in (409, 412):
        return "conflict"
    kind = _errors.kind_of(exc)
    return kind if kind in _errors.OPERATOR_KINDS else "service"


def arm_call_options(arm_endpoint):
    """Per-call options: bearer tokens over plain http only to a loopback test double."""
    if arm_endpoint.startswith("https://"):
        return {}
    match = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/.*)?$", arm_endpoint)
    if not match:
        raise LifecycleError(
            "arm_endpoint %s: Azure Resource Manager is reached over https; plain http is accepted for "
            "a loopback test double only" % arm_endpoint,
            kind="config",
        )
    return {"enforce_https": False}


def _as_dict(model):
    return model.as_dict() if hasattr(model, "as_dict") else dict(model or {})


class ArmClient:
    """One storage account through Resource Manager; errors become LifecycleError with the
    permission a refused identity lacks (``PERMISSION``)."""

    PERMISSION = "Microsoft.Storage/storageAccounts/*"

    def __init__(
        self,
        credential,
        subscription_id,
        resource_group,
        account_name,
        arm_endpoint=None,
        max_retries=5,
        timeout=60,
        redactor=None,
    ):
        if not HAS_AZURE_MGMT_STORAGE:
            raise LifecycleError(
                "the Python library %s is not installed" % AZURE_MGMT_STORAGE_REQUIREMENT, kind="config"
            )
        for key, value in (
            ("subscription_id", subscription_id),
            ("resource_group", resource_group),
            ("account_name", account_name),
        ):
            if not value:
                raise LifecycleError("%s is required to manage the storage account" % key, kind="config")
        self.arm_endpoint = (arm_endpoint or DEFAULT_ARM_ENDPOINT).rstrip("/")
        self.options = arm_call_options(self.arm_endpoint)
        self.resource_group = resource_group
        self.account_name = account_name
        self.redact = redactor or _azure.Redactor()
        self.client = StorageManagementClient(
            credential,
            subscription_id,
            base_url=self.arm_endpoint,
            credential_scopes=[self.arm_endpoint + "/.default"],
            retry_total=max_retries,
            connection_timeout=timeout,
            read_timeout=timeout,
        )

    def _explain(self, exc, action):
        code = getattr(getattr(exc, "error", None), "code", None) or getattr(exc, "status_code", None)
        message = "%s" % (getattr(exc, "message", None) or exc,)
        message = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        hint = ""
        if getattr(exc, "status_code", None) in (401, 403):
            hint = "; the identity needs a role with %s (e.g. Storage Account Contributor) on the account" % (
                self.PERMISSION
            )
        return LifecycleError(
            self.redact(
                "Azure Resource Manager failed to %s of storage account %s (resource group %s): %s%s%s"
                % (action, self.account_name, self.resource_group, "%s: " % code if code else "", message, hint)
            ),
            kind=_arm_kind(exc),
        )

    def _call(self, action, operation, *args, **kwargs):
        try:
            return operation(self.resource_group, self.account_name, *args, **dict(self.options, **kwargs))
        except AzureError as e:
            raise self._explain(e, action) from None


class PolicyManager(ArmClient):
    """Reads and writes the account's management policy ('default')."""

    PERMISSION = "Microsoft.Storage/storageAccounts/managementPolicies/*"

    def get_rules(self):
        """The current rules (REST shape); [] when the account has no policy."""
        try:
            policy = self.client.management_policies.get(
                self.resource_group, self.account_name, rules_.POLICY_NAME, **self.options
            )
        except ResourceNotFoundError:
            return []
        except AzureError as e:
            raise self._explain(e, "read the lifecycle policy") from None
        body = _as_dict(policy)
        return list(((body.get("properties") or {}).get("policy") or {}).get("rules") or [])

    def put_rules(self, rules):
        body = {"properties": {"policy": {"rules": rules}}}
        self._call("write the lifecycle policy", self.client.management_policies.create_or_update, "default", body)

    def delete(self):
        try:
            self.client.management_policies.delete(
                self.resource_group, self.account_name, rules_.POLICY_NAME, **self.options
            )
        except ResourceNotFoundError:
            pass
        except AzureError as e:
            raise self._explain(e, "delete the lifecycle policy") from None


def apply_management_policy(
    manager, rules, state="present", purge=False, check_mode=False, container=None, prefix=None, families=()
):
    """Brings the policy to the desired rules. With container (and prefix, where history lives),
    reports the current rules that would delete history objects and refuses a desired policy that
    still holds one. Returns changed, diff, rules (desired), history_violations (current)."""
    current = manager.get_rules()
    desired = rules_.merge_rules(current, rules, state=state, purge=purge, families=families)
    violations = []
    if container is not None:
        violations = rules_.history_violations(current, container, prefix)
        rules_.refuse_history_deletes(desired, container, prefix, existing=True)
    changed, diff = rules_.compare(current, desired)
    if changed and not check_mode:
        if desired:
            manager.put_rules(desired)
        else:
            manager.delete()
    return {
        "changed": changed,
        "diff": diff,
        "rules": rules_.canonical_rules(desired),
        "history_violations": violations,
    }


class ProtectionManager(ArmClient):
    """Reads and writes the blob service properties and a container's immutability policy."""

    PERMISSION = "Microsoft.Storage/storageAccounts/blobServices/* and .../blobServices/containers/*"

    def get_service(self):
        props = self._call("read the blob service properties", self.client.blob_services.get_service_properties)
        return _as_dict(props).get("properties") or {}

    def set_service(self, properties):
        self._call(
            "write the blob service properties",
            self.client.blob_services.set_service_properties,
            {"properties": properties},
        )

    def get_container(self, container):
        action = "read container %s" % container
        return _as_dict(self._call(action, self.client.blob_containers.get, container)).get("properties") or {}

    def put_immutability(self, container, days, etag=None):
        match = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        body = {"properties": {"immutabilityPeriodSinceCreationInDays": days}}
        operation = self.client.blob_containers.create_or_update_immutability_policy
        self._call("set the immutability policy of container %s" % container, operation, container, body, **match)

    def extend_immutability(self, container, days, etag):
        body = {"properties": {"immutabilityPeriodSinceCreationInDays": days}}
        operation = self.client.blob_containers.extend_immutability_policy
        self._call(
            "extend the immutability policy of container %s" % container,
            operation,
            container,
            body,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    def lock_immutability(self, container, etag):
        operation = self.client.blob_containers.lock_immutability_policy
        self._call(
            "lock the immutability policy of container %s" % container,
            operation,
            container,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    def migrate(self, container, wait=None):
        """Starts the migration to version-level immutability and waits up to wait seconds (default
        MIGRATION_WAIT_SECONDS); True once Azure says it is done."""
        wait = MIGRATION_WAIT_SECONDS if wait is None else wait
        action = "migrate container %s to version-level immutability" % container
        poller = self._call(action, self.client.blob_containers.begin_object_level_worm, container)
        try:
            poller.result(timeout=wait)
        except AzureError as e:
            raise self._explain(e, action) from None
        return poller.done()


def _run_steps(manager, container, steps):
    """Carries out container steps; returns the steps left pending (a migration Azure has not
    finished yet, and what comes after it)."""
    for number, step in enumerate(steps):
        etag = None
        if step[0] != "migrate":
            etag = _protection.container_view(manager.get_container(container))["etag"]
        if step[0] == "put_immutability":
            manager.put_immutability(container, step[1], etag=etag)
        elif step[0] == "extend_immutability":
            manager.extend_immutability(container, step[1], etag)
        elif step[0] == "lock":
            manager.lock_immutability(container, etag)
        elif step[0] == "migrate" and not manager.migrate(container):
            return steps[number:]
    return []


def apply_protection(manager, container, params, check_mode=False):
    """Brings versioning, soft delete and the container's immutability to params (the options of
    _protection.protection_argument_spec; None: leave as it is). Returns changed, actions, diff,
    protection (as it is after the run, or would be in check mode), pending, warnings."""
    want = _protection.wanted(params)
    service = _protection.service_view(manager.get_service())
    # The container is read only when its settings are managed, or versioning is to be turned off
    # (refused with version-level immutability): the account's settings need no container.
    reads_container = _protection.manages_container(want)
    current = _protection.container_view(manager.get_container(container) if reads_container else None)
    body = _protection.service_body(want, service)
    service_after, _unused = _protection.view_after(service, current, body, [])
    steps = _protection.container_steps(want, service_after, current, container)
    service_after, container_after = _protection.view_after(service, current, body, steps)
    actions = _protection.describe_service(body) + [_protection.describe_step(s) for s in steps]
    pending = []
    if actions and not check_mode:
        if body:
            manager.set_service(body)
        pending = [_protection.describe_step(s) for s in _run_steps(manager, container, steps)]
        # What Azure says now, not what was asked for (a migration may still run).
        service_after = _protection.service_view(manager.get_service())
        container_after = _protection.container_view(manager.get_container(container) if reads_container else None)
    before = _protection.public_view(service, current if reads_container else {})
    after = _protection.public_view(service_after, container_after if reads_container else {})
    return {
        "changed": bool(actions),
        "actions": actions,
        "pending": pending,
        "protection": after,
        "warnings": _protection.warnings_for(after),
        "diff": {
            "before": before,
            "after": after,
            "before_header": "protection of container %s (current)" % container,
            "after_header": "protection of container %s (desired)" % container,
        },
    }


# ---------------------------------------------------------------------------------------------
# Data plane


def _age_days(now, then):
    if then is None:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.timezone.utc)
    return (now - then).total_seconds() / 86400.0


def _listing(store, rule):
    """The blobs under a rule's prefixes (without the container part of prefixMatch)."""
    blobs = []
    for match in rules_.prefix_matches(rule):
        start = match[len(rule["container"]) + 1 :] or None
        try:
            blobs.extend(store.container_client.list_blobs(name_starts_with=start))
        except AzureError as e:
            raise store.explain(e, "list %s" % (start or "the container")) from None
    return blobs


def apply_data_plane(store, settings_list, now=None, check_mode=False):
    """Sets each blob under each rule's prefix to the tier its age calls for; only ever colder
    (Hot -> Cool -> Cold -> Archive), never deletes, skips blobs being rehydrated."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    changes, errors = [], []
    examined = 0
    for rule in settings_list:
        deletes = [k for k in ("delete_after_days", "previous_versions_delete_after_days") if rule.get(k) is not None]
        if deletes:
            raise LifecycleError(
                "rule %s: %s is not applied in data_plane mode (nothing deletes backups from the data plane); "
                "use mode: management_policy or remove it" % (rule["name"], " and ".join(deletes)),
                kind="config",
            )
        if rule["container"] != store.container:
            raise LifecycleError(
                "rule %s is for container %s; this store is %s" % (rule["name"], rule["container"], store.container),
                kind="config",
            )
        if not rule.get("enabled", True):
            continue
        for props in _listing(store, rule):
            examined += 1
            current = getattr(props.blob_tier, "value", props.blob_tier) or "Hot"
            if getattr(props, "archive_status", None):
                continue
            tier = rules_.target_tier(
                rule, _age_days(now, props.last_modified), _age_days(now, getattr(props, "blob_tier_change_time", None))
            )
            if tier is None or rules_.TIER_RANK.get(tier, 0) <= rules_.TIER_RANK.get(current, 0):
                continue
            change = {
                "name": props.name,
                "url": store.url(props.name),
                "from": current,
                "to": tier,
                "rule": rule["name"],
            }
            if not check_mode:
                try:
                    store.container_client.get_blob_client(props.name).set_standard_blob_tier(tier)
                except AzureError as e:
                    change["error"] = "%s" % store.explain(e, "set the tier of %s" % props.name)
                    errors.append(change)
                    continue
            changes.append(change)
    return {"changed": bool(changes), "changes": changes, "errors": errors, "examined": examined}


def data_plane_protection(store):
    """What the data plane tells of the container's protection (backup_info): blob soft delete from
    the account's service properties, the immutability policy and legal hold from the container's
    properties; what it cannot read (a container SAS reads neither) is reported as unknown."""
    reasons = {}
    try:
        service = store.client.get_service_properties()
    except AzureError as e:
        service = None
        reasons["blob_soft_delete"] = "%s" % store.explain(e, "read the service properties")
    try:
        props = store.container_client.get_container_properties()
        container = {
            "has_immutability_policy": props.has_immutability_policy,
            "immutable_storage_with_versioning_enabled": props.immutable_storage_with_versioning_enabled,
            "has_legal_hold": props.has_legal_hold,
        }
    except AzureError as e:
        container = None
        reasons["immutability"] = "%s" % store.explain(e, "read the container properties")
    if service is not None:
        policy = service.get("delete_retention_policy")
        service = {
            "delete_retention_policy": {
                "enabled": getattr(policy, "enabled", False),
                "days": getattr(policy, "days", None),
            }
        }
    return _protection.data_plane_report(service, container, reasons)
