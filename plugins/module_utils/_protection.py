# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Protection of the backup container against deletes and overwrites, as data: blob versioning,
blob soft delete and container soft delete (the account's blob service properties) and a
version-level WORM immutability policy on the container (docs/AZURE.md, "Protection").

What is wanted is compared with what Resource Manager returns (REST shape, camelCase keys) and
becomes a list of steps in the order Azure needs them: versioning before immutability, a
container policy before the migration to version-level immutability, the lock last. _lifecycle
carries the steps out; this file also reads what the data plane can tell (backup_info).

Private to the collection. No Ansible imports, no SDK.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors

# Azure's limits: soft delete keeps 1 to 365 days; a time-based retention 1 to 146,000 days.
MAX_SOFT_DELETE_DAYS = 365
MAX_IMMUTABILITY_DAYS = 146000
LOCKED, UNLOCKED = "Locked", "Unlocked"
ARM_ONLY = "not visible from the data plane; container_protection reads it through Resource Manager"


class ProtectionError(_errors.OperatorError):
    """A protection setting is invalid or cannot be reached from the current state."""


def protection_argument_spec():
    return dict(
        versioning=dict(type="bool"),
        delete_retention_days=dict(type="int"),
        container_delete_retention_days=dict(type="int"),
        immutability_days=dict(type="int"),
        immutability_locked=dict(type="bool"),
    )


def _days(params, key, maximum, minimum=0):
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProtectionError("%s must be %d to %d" % (key, minimum, maximum), kind="config")
    return value


def wanted(params):
    """The settings asked for ({} when none), validated; None means 'leave as it is'."""
    out = {
        "versioning": params.get("versioning"),
        "delete_retention_days": _days(params, "delete_retention_days", MAX_SOFT_DELETE_DAYS),
        "container_delete_retention_days": _days(params, "container_delete_retention_days", MAX_SOFT_DELETE_DAYS),
        "immutability_days": _days(params, "immutability_days", MAX_IMMUTABILITY_DAYS, minimum=1),
        "immutability_locked": params.get("immutability_locked"),
    }
    if all(v is None for v in out.values()):
        raise ProtectionError(
            "nothing to manage: set versioning, delete_retention_days, container_delete_retention_days, "
            "immutability_days or immutability_locked",
            kind="config",
        )
    return out


def manages_container(want):
    """Whether the container's settings are asked for (or versioning off, which they may forbid)."""
    return (
        want["immutability_days"] is not None or want["immutability_locked"] is not None or want["versioning"] is False
    )


# ---------------------------------------------------------------------------------------------
# What Resource Manager returns, as a view


def _retention(policy):
    policy = policy or {}
    if not policy.get("enabled"):
        return 0
    return policy.get("days")


def service_view(properties):
    """The managed part of the blob service properties (the 'properties' of the resource)."""
    properties = properties or {}
    return {
        "versioning": bool(properties.get("isVersioningEnabled")),
        "delete_retention_days": _retention(properties.get("deleteRetentionPolicy")),
        "allow_permanent_delete": bool((properties.get("deleteRetentionPolicy") or {}).get("allowPermanentDelete")),
        "container_delete_retention_days": _retention(properties.get("containerDeleteRetentionPolicy")),
    }


def container_view(properties):
    """The immutability of a container (the 'properties' of the container resource)."""
    properties = properties or {}
    worm = properties.get("immutableStorageWithVersioning") or {}
    policy = properties.get("immutabilityPolicy") or {}
    state = (policy.get("properties") or {}).get("state")
    exists = state in (LOCKED, UNLOCKED)
    return {
        "version_level_immutability": bool(worm.get("enabled")),
        "migration_state": worm.get("migrationState"),
        "immutability_days": (policy.get("properties") or {}).get("immutabilityPeriodSinceCreationInDays")
        if exists
        else None,
        "immutability_state": state if exists else None,
        "legal_hold": bool(properties.get("hasLegalHold")),
        "etag": policy.get("etag"),
    }


# ---------------------------------------------------------------------------------------------
# From current to wanted


def service_body(want, current):
    """The blob service properties to send (only the managed ones; Azure keeps the others), or {}."""
    body = {}
    if want["versioning"] is not None and want["versioning"] != current["versioning"]:
        body["isVersioningEnabled"] = want["versioning"]
    days = want["delete_retention_days"]
    if days is not None and (days != current["delete_retention_days"] or (days and current["allow_permanent_delete"])):
        body["deleteRetentionPolicy"] = (
            {"enabled": True, "days": days, "allowPermanentDelete": False} if days else {"enabled": False}
        )
    days = want["container_delete_retention_days"]
    if days is not None and days != current["container_delete_retention_days"]:
        body["containerDeleteRetentionPolicy"] = {"enabled": True, "days": days} if days else {"enabled": False}
    return body


def _policy_steps(want, container, name):
    days = want["immutability_days"]
    current = container["immutability_days"]
    if days is None or days == current:
        return []
    if container["immutability_state"] == LOCKED:
        if days < current:
            raise ProtectionError(
                "container %s: its immutability policy is locked at %d days; a locked policy can only be extended, "
                "not shortened to %d" % (name, current, days),
                kind="config",
            )
        return [("extend_immutability", days)]
    return [("put_immutability", days)]


def container_steps(want, service_after, container, name):
    """The steps ('put_immutability', days) | ('extend_immutability', days) | ('migrate',) |
    ('lock',) that bring the container to what is wanted, in Azure's order."""
    immutable = want["immutability_days"] is not None or want["immutability_locked"]
    has_policy = container["immutability_state"] is not None
    if want["immutability_locked"] is False and container["immutability_state"] == LOCKED:
        raise ProtectionError(
            "container %s: its immutability policy is locked, and a lock cannot be undone" % name, kind="config"
        )
    if want["immutability_locked"] and want["immutability_days"] is None and not has_policy:
        raise ProtectionError(
            "container %s has no immutability policy to lock: set immutability_days" % name, kind="config"
        )
    if not service_after["versioning"] and (immutable or container["version_level_immutability"]):
        raise ProtectionError(
            "container %s: version-level immutability needs blob versioning on the account; set versioning: true"
            % name,
            kind="config",
        )
    steps = _policy_steps(want, container, name)
    if immutable and not container["version_level_immutability"] and container["migration_state"] != "InProgress":
        if container["legal_hold"]:
            raise ProtectionError(
                "container %s has a legal hold: Azure migrates a container to version-level immutability only "
                "without one; clear the hold first" % name,
                kind="conflict",
            )
        steps.append(("migrate",))
    if want["immutability_locked"] and container["immutability_state"] != LOCKED:
        steps.append(("lock",))
    return steps


def view_after(service, container, body, steps):
    """What service and container will be once body is sent and steps are done."""
    service = dict(service)
    if "isVersioningEnabled" in body:
        service["versioning"] = body["isVersioningEnabled"]
    for key, field in (
        ("delete_retention_days", "deleteRetentionPolicy"),
        ("container_delete_retention_days", "containerDeleteRetentionPolicy"),
    ):
        if field in body:
            service[key] = _retention(body[field])
    if "deleteRetentionPolicy" in body:
        service["allow_permanent_delete"] = False
    container = dict(container)
    for step in steps:
        if step[0] in ("put_immutability", "extend_immutability"):
            container["immutability_days"] = step[1]
            container["immutability_state"] = container["immutability_state"] or UNLOCKED
        elif step[0] == "migrate":
            container["version_level_immutability"] = True
            container["migration_state"] = "Completed"
        elif step[0] == "lock":
            container["immutability_state"] = LOCKED
    return service, container


def public_view(service, container):
    """service and container merged for the result and the diff (no etag)."""
    out = dict(service)
    out.update((k, v) for k, v in container.items() if k != "etag")
    return out


def describe_service(body):
    """What sending body changes, in words."""
    out = []
    if "isVersioningEnabled" in body:
        out.append("turn blob versioning %s" % ("on" if body["isVersioningEnabled"] else "off"))
    for field, what in (("deleteRetentionPolicy", "blob"), ("containerDeleteRetentionPolicy", "container")):
        if field in body:
            days = _retention(body[field])
            out.append("set %s soft delete to %d days" % (what, days) if days else "turn %s soft delete off" % what)
    return out


def describe_step(step):
    return {
        "put_immutability": lambda: "set the container's immutability policy to %d days (unlocked)" % step[1],
        "extend_immutability": lambda: "extend the locked immutability policy to %d days" % step[1],
        "migrate": lambda: "migrate the container to version-level immutability (cannot be undone)",
        "lock": lambda: "lock the immutability policy (cannot be undone)",
    }[step[0]]()


def warnings_for(after):
    warnings = []
    if after.get("immutability_state") == UNLOCKED:
        warnings.append(
            "the immutability policy is unlocked: it protects against deletes and overwrites, but whoever may "
            "write it can shorten or delete it; lock it (immutability_locked: true) once tested - a lock cannot "
            "be undone and the period can then only be extended, five times at most"
        )
    if not after["delete_retention_days"]:
        warnings.append("blob soft delete is off: a deleted blob is gone at once unless a policy protects it")
    return warnings


# ---------------------------------------------------------------------------------------------
# What the data plane can tell (backup_info)


def _state(value):
    return "unknown" if value is None else ("enabled" if value else "disabled")


def data_plane_report(service_props, container_props, reasons):
    """The protection backup_info reports. service_props: the data plane's service properties
    ({'delete_retention_policy': {'enabled', 'days'}}) or None; container_props: {'has_immutability_policy',
    'immutable_storage_with_versioning_enabled', 'has_legal_hold'} or None; reasons: why one is None.
    'protected' is yes when an immutability policy or blob soft delete stops a delete, no when the data
    plane shows neither, unknown when it cannot tell."""
    retention = (service_props or {}).get("delete_retention_policy") if service_props is not None else None
    soft = None if service_props is None else bool(retention and retention.get("enabled"))
    worm = None if container_props is None else container_props.get("has_immutability_policy")
    report = {
        "blob_soft_delete": {"state": _state(soft)},
        "immutability": {
            "state": _state(worm),
            "version_level": None
            if container_props is None
            else container_props.get("immutable_storage_with_versioning_enabled"),
            "legal_hold": None if container_props is None else container_props.get("has_legal_hold"),
        },
        "versioning": {"state": "unknown", "reason": ARM_ONLY},
        "container_soft_delete": {"state": "unknown", "reason": ARM_ONLY},
    }
    if soft:
        report["blob_soft_delete"]["days"] = retention.get("days")
    for key, reason in (reasons or {}).items():
        report[key]["reason"] = reason
    if worm or soft:
        report["protected"] = "yes"
    elif worm is False and soft is False:
        report["protected"] = "no"
    else:
        report["protected"] = "unknown"
    return report
