# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lifecycle of the backup blobs: tier to Cool / Cold / Archive after N days since the last
modification, optionally delete (default: never - history is kept forever).

Two ways to apply the same rules:
- the storage account's lifecycle management policy, through Azure Resource Manager
  (azure-mgmt-storage, ``management_policies``; needs an Entra identity with a role on the
  account such as Storage Account Contributor);
- the data plane, for accounts where only a SAS token or data-plane roles are available:
  list the blobs under the prefix and set each blob's tier by its age.

Rules are handled in the REST shape of Azure's management policy (camelCase keys), which is
what the SDK sends, what the diff shows and what the ARM test double checks.

Private to the collection. No Ansible imports: the scheduled runner may use this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import re
import time
import traceback

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _errors

try:
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.mgmt.storage import StorageManagementClient
except ImportError:
    HAS_AZURE_MGMT_STORAGE = False
    AZURE_MGMT_STORAGE_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_AZURE_MGMT_STORAGE = True
    AZURE_MGMT_STORAGE_IMPORT_ERROR = None

AZURE_MGMT_STORAGE_REQUIREMENT = "azure-mgmt-storage"

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
POLICY_NAME = "default"
# The order blobs go through; each later step needs more days than the one before.
STEPS = (
    ("cool_after_days", "tierToCool", "Cool"),
    ("cold_after_days", "tierToCold", "Cold"),
    ("archive_after_days", "tierToArchive", "Archive"),
    ("delete_after_days", "delete", None),
)
# Days a blob is billed in a tier at least (moving or deleting it earlier costs the rest).
EARLY_DELETION_DAYS = {"Cool": 30, "Cold": 90, "Archive": 180}
TIER_RANK = {"Hot": 0, "Cool": 1, "Cold": 2, "Archive": 3}
# The steps of a rule that names none: history is kept forever.
DEFAULT_STEPS = {"cool_after_days": 30, "archive_after_days": 365}
# A blob rehydrated for a restore is not archived again before this many days.
DEFAULT_ARCHIVE_AFTER_TIER_CHANGE_DAYS = 7
MAX_DAYS = 99999
RULE_NAME_RE = re.compile(r"^[A-Za-z0-9]{1,256}$")


class LifecycleError(_azure.AzureTierError):
    """A rule is invalid, or Azure Resource Manager refused or failed."""


def rule_argument_spec():
    """Suboptions of a module's 'rules' list (a plain dict)."""
    return dict(
        name=dict(type="str"),
        prefix=dict(type="str"),
        cool_after_days=dict(type="int"),
        cold_after_days=dict(type="int"),
        archive_after_days=dict(type="int"),
        delete_after_days=dict(type="int"),
        archive_after_tier_change_days=dict(type="int", default=DEFAULT_ARCHIVE_AFTER_TIER_CHANGE_DAYS),
        enabled=dict(type="bool", default=True),
    )


def default_rule_name(container, prefix):
    return ("tsdbbackup" + re.sub(r"[^A-Za-z0-9]", "", "%s%s" % (container, prefix)))[:256]


def normalize_rule(rule, container, default_prefix):
    """A rule as plain settings. A rule that names no step gets DEFAULT_STEPS (Cool after 30
    days, Archive after 365, never delete); the prefix defaults to default_prefix, the name to
    one derived from container and prefix."""
    out = {key: rule.get(key) for key, _action, _tier in STEPS}
    if all(value is None for value in out.values()):
        out.update(DEFAULT_STEPS)
    out["archive_after_tier_change_days"] = rule.get(
        "archive_after_tier_change_days", DEFAULT_ARCHIVE_AFTER_TIER_CHANGE_DAYS
    )
    out["enabled"] = rule.get("enabled", True) is not False
    prefix = rule.get("prefix")
    out["prefix"] = _azure.validate_prefix(default_prefix if prefix is None else prefix)
    out["container"] = _azure.validate_container_name(container)
    out["name"] = rule.get("name") or default_rule_name(container, out["prefix"])
    return out


def validate_rule(rule):
    """Raises LifecycleError for what Azure would refuse or what is certainly wrong; returns
    warnings for what costs money (early deletion)."""
    name = rule["name"]
    if not RULE_NAME_RE.match(name or ""):
        raise LifecycleError("rule name %r: Azure accepts 1-256 letters and digits only" % (name,), kind="config")
    days = []
    for key, _action, tier in STEPS:
        value = rule.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
            raise LifecycleError(
                "rule %s: %s must be a whole number of days from 0 to %d" % (name, key, MAX_DAYS), kind="config"
            )
        days.append((key, value, tier))
    if not days:
        raise LifecycleError(
            "rule %s has no action: set at least one of %s" % (name, ", ".join(k for k, _a, _t in STEPS)), kind="config"
        )
    for (key_a, day_a, _ta), (key_b, day_b, _tb) in zip(days, days[1:]):
        if day_b <= day_a:
            raise LifecycleError(
                "rule %s: %s (%d) must be greater than %s (%d); the order is cool < cold < archive < delete"
                % (name, key_b, day_b, key_a, day_a),
                kind="config",
            )
    if rule.get("archive_after_tier_change_days") is not None:
        value = rule["archive_after_tier_change_days"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
            raise LifecycleError(
                "rule %s: archive_after_tier_change_days must be 0 to %d" % (name, MAX_DAYS), kind="config"
            )
    warnings = []
    for (key_a, day_a, tier_a), (key_b, day_b, _tb) in zip(days, days[1:]):
        minimum = EARLY_DELETION_DAYS.get(tier_a)
        if minimum and day_b - day_a < minimum:
            warnings.append(
                "rule %s: blobs stay %d days in %s (%s=%d, %s=%d) but %s is billed for at least %d days: "
                "an early deletion charge applies"
                % (name, day_b - day_a, tier_a, key_a, day_a, key_b, day_b, tier_a, minimum)
            )
    return warnings


def build_rule(rule):
    """The management policy rule (REST shape) for normalized settings."""
    base_blob = {}
    for key, action, tier in STEPS:
        if rule.get(key) is None:
            continue
        condition = {"daysAfterModificationGreaterThan": rule[key]}
        if tier == "Archive" and rule.get("archive_after_tier_change_days"):
            condition["daysAfterLastTierChangeGreaterThan"] = rule["archive_after_tier_change_days"]
        base_blob[action] = condition
    prefix_match = rule["container"] + "/" + (rule["prefix"] + "/" if rule["prefix"] else "")
    return {
        "enabled": bool(rule.get("enabled", True)),
        "name": rule["name"],
        "type": "Lifecycle",
        "definition": {
            "actions": {"baseBlob": base_blob},
            "filters": {"blobTypes": ["blockBlob"], "prefixMatch": [prefix_match]},
        },
    }


def prepare_rules(rules, container, default_prefix):
    """Normalizes, validates and builds a list of rules. Returns (rest rules, settings, warnings)."""
    settings = [normalize_rule(r, container, default_prefix) for r in (rules or [{}])]
    names = [s["name"] for s in settings]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LifecycleError("rule names must be unique; repeated: %s" % ", ".join(duplicates), kind="config")
    warnings = []
    for s in settings:
        warnings.extend(validate_rule(s))
    return [build_rule(s) for s in settings], settings, warnings


def canonical_rule(rule):
    """A rule reduced to what decides its effect, for comparison: no nulls, no empty parts,
    lists sorted, enabled explicit."""

    def clean(value):
        if isinstance(value, dict):
            out = {k: clean(v) for k, v in value.items() if v is not None}
            return {k: v for k, v in out.items() if v not in ({}, [])}
        if isinstance(value, list):
            items = [clean(v) for v in value]
            return sorted(items, key=repr)
        return value

    out = clean(copy.deepcopy(rule))
    out["enabled"] = bool(rule.get("enabled", True))
    out.setdefault("type", "Lifecycle")
    return out


def canonical_rules(rules):
    return sorted((canonical_rule(r) for r in rules or []), key=lambda r: r.get("name", ""))


def merge_rules(current, wanted, state="present", purge=False):
    """The rules the policy should hold: ours (by name) replaced or removed, other rules kept
    unless purge."""
    names = {r["name"] for r in wanted}
    kept = [] if purge else [r for r in current if r.get("name") not in names]
    return kept + (list(wanted) if state == "present" else [])


def compare(current, desired):
    """(changed, diff) between two rule lists."""
    before = {"rules": canonical_rules(current)}
    after = {"rules": canonical_rules(desired)}
    return before != after, {
        "before": before,
        "after": after,
        "before_header": "management policy (current)",
        "after_header": "management policy (desired)",
    }


# ---------------------------------------------------------------------------------------------
# Azure Resource Manager


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
    (config); a missing account or group is not_found; the rest is the service's."""
    if getattr(exc, "status_code", None) in (401, 403):
        return "config"
    if getattr(exc, "status_code", None) == 404:
        return "not_found"
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


class PolicyManager:
    """Reads and writes the account's management policy ('default')."""

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
                raise LifecycleError("%s is required to manage the lifecycle management policy" % key, kind="config")
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
            hint = (
                "; the identity needs a role with Microsoft.Storage/storageAccounts/managementPolicies/* "
                "(e.g. Storage Account Contributor) on the account"
            )
        return LifecycleError(
            self.redact(
                "Azure Resource Manager failed to %s the lifecycle policy of storage account %s (resource group %s): "
                "%s%s%s"
                % (action, self.account_name, self.resource_group, "%s: " % code if code else "", message, hint)
            ),
            kind=_arm_kind(exc),
        )

    def get_rules(self):
        """The current rules (REST shape); [] when the account has no policy."""
        try:
            policy = self.client.management_policies.get(
                self.resource_group, self.account_name, POLICY_NAME, **self.options
            )
        except ResourceNotFoundError:
            return []
        except AzureError as e:
            raise self._explain(e, "read") from None
        body = policy.as_dict() if hasattr(policy, "as_dict") else dict(policy)
        return list(((body.get("properties") or {}).get("policy") or {}).get("rules") or [])

    def put_rules(self, rules):
        body = {"properties": {"policy": {"rules": rules}}}
        try:
            self.client.management_policies.create_or_update(
                self.resource_group, self.account_name, POLICY_NAME, body, **self.options
            )
        except AzureError as e:
            raise self._explain(e, "write") from None

    def delete(self):
        try:
            self.client.management_policies.delete(self.resource_group, self.account_name, POLICY_NAME, **self.options)
        except ResourceNotFoundError:
            pass
        except AzureError as e:
            raise self._explain(e, "delete") from None


def apply_management_policy(manager, rules, state="present", purge=False, check_mode=False):
    """Brings the policy to the desired rules. Returns changed, diff, policy (desired rules)."""
    current = manager.get_rules()
    desired = merge_rules(current, rules, state=state, purge=purge)
    changed, diff = compare(current, desired)
    if changed and not check_mode:
        if desired:
            manager.put_rules(desired)
        else:
            manager.delete()
    return {"changed": changed, "diff": diff, "rules": canonical_rules(desired)}


# ---------------------------------------------------------------------------------------------
# Data plane


def target_tier(rule, age_days, tier_change_age_days=None):
    """The coldest tier a blob of this age should be in under the rule, or None (stay)."""
    tier = None
    for key, _action, step_tier in STEPS:
        days = rule.get(key)
        if step_tier is None or days is None or age_days <= days:
            continue
        if step_tier == "Archive" and tier_change_age_days is not None:
            minimum = rule.get("archive_after_tier_change_days")
            if minimum is not None and tier_change_age_days <= minimum:
                continue
        tier = step_tier
    return tier


def _age_days(now, then):
    if then is None:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.timezone.utc)
    return (now - then).total_seconds() / 86400.0


def apply_data_plane(store, settings_list, now=None, check_mode=False):
    """Sets each blob under each rule's prefix to the tier its age calls for; only ever colder
    (Hot -> Cool -> Cold -> Archive), never deletes, skips blobs being rehydrated."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    changes, errors = [], []
    examined = 0
    for rule in settings_list:
        if rule.get("delete_after_days") is not None:
            raise LifecycleError(
                "rule %s: delete_after_days is not applied in data_plane mode (nothing deletes backups from the "
                "data plane); use mode: management_policy or remove delete_after_days" % rule["name"],
                kind="config",
            )
        if rule["container"] != store.container:
            raise LifecycleError(
                "rule %s is for container %s; this store is %s" % (rule["name"], rule["container"], store.container),
                kind="config",
            )
        if not rule.get("enabled", True):
            continue
        start = rule["prefix"] + "/" if rule["prefix"] else None
        try:
            blobs = list(store.container_client.list_blobs(name_starts_with=start))
        except AzureError as e:
            raise store.explain(e, "list %s" % (start or "the container")) from None
        for props in blobs:
            examined += 1
            current = getattr(props.blob_tier, "value", props.blob_tier) or "Hot"
            if getattr(props, "archive_status", None):
                continue
            tier = target_tier(
                rule, _age_days(now, props.last_modified), _age_days(now, getattr(props, "blob_tier_change_time", None))
            )
            if tier is None or TIER_RANK.get(tier, 0) <= TIER_RANK.get(current, 0):
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
