"""The Resource Manager side of lifecycle_policy and container_protection, in-process against the
ARM test double (tests/integration/azure/arm_double.py: no Azurite, no network beyond loopback).
The double checks every body against Azure's documented rules; `rejected` must stay empty unless
a test provokes a refusal."""

import json
import os
import sys
import urllib.error
import urllib.request

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle, _protection
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle_rules as rules_

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "integration", "azure"))
from arm_double import ArmDouble  # noqa: E402

CONTAINER = "tsdb-backups"
WANT = {
    "versioning": True,
    "delete_retention_days": 30,
    "container_delete_retention_days": 30,
    "immutability_days": 3650,
    "immutability_locked": None,
}
FOREIGN = {
    "enabled": True,
    "name": "cleanup",
    "type": "Lifecycle",
    "definition": {
        "actions": {"baseBlob": {"delete": {"daysAfterModificationGreaterThan": 90}}},
        "filters": {"blobTypes": ["blockBlob"], "prefixMatch": [CONTAINER + "/"]},
    },
}


@pytest.fixture
def arm():
    double = ArmDouble(token="unit-arm-token").start()
    yield double
    double.stop()


def manager(arm, cls):
    credential = _lifecycle.StaticTokenCredential(arm.token)
    return cls(credential, "sub-0001", "rg-backups", "insabackups", arm_endpoint=arm.url, max_retries=0)


def raw(arm, method, path, body=None, if_match=None):
    """A request to the double as any client would send it: (status, error code)."""
    url = (
        "%s/subscriptions/sub-0001/resourceGroups/rg-backups/providers/Microsoft.Storage/storageAccounts/insabackups%s"
    )
    request = urllib.request.Request(  # noqa: S310 - the loopback double
        url % (arm.url, path) + "?api-version=2026-09-01",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers=dict({"Authorization": "Bearer " + arm.token}, **({"If-Match": if_match} if if_match else {})),
    )
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback only
            return response.status, None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]["code"]


# ---------------------------------------------------------------------------------------------
# Lifecycle policy: history is never deleted


def test_our_separate_rules_pass_the_double_and_a_foreign_history_delete_is_refused(arm):
    policies = manager(arm, _lifecycle.PolicyManager)
    rules, settings, _w = rules_.prepare_rules(
        [
            {
                "target": "dumps",
                "hosts": ["db%02d" % n for n in range(12)],
                "delete_after_days": 400,
                "previous_versions_delete_after_days": 430,
            },
            {"target": "history", "cool_after_days": 30},
        ],
        CONTAINER,
        "timescaledb",
    )
    options = {"container": CONTAINER, "prefix": "timescaledb", "families": rules_.families(settings)}
    result = _lifecycle.apply_management_policy(policies, rules, **options)
    assert result["changed"] and result["history_violations"] == [] and arm.rejected == []
    assert [r["name"] for r in arm.rules()] == [r["name"] for r in rules] and len(rules) == 3

    # Someone adds a delete rule on the whole container: the next run names it and writes nothing.
    arm.policy["properties"]["policy"]["rules"].append(FOREIGN)
    writes = arm.writes()
    with pytest.raises(rules_.LifecycleError) as info:
        _lifecycle.apply_management_policy(policies, rules, check_mode=True, **options)
    assert "rule cleanup (baseBlob.delete; prefixMatch tsdb-backups/)" in str(info.value)
    assert info.value.kind == "config" and arm.writes() == writes
    # Removing it by name is the way out; the report shows what was there.
    removed = _lifecycle.apply_management_policy(policies, [{"name": "cleanup"}], state="absent", **options)
    assert [v["rule"] for v in removed["history_violations"]] == ["cleanup"]
    assert "cleanup" not in [r["name"] for r in arm.rules()] and arm.rejected == []


def test_the_double_checks_policy_bodies_as_azure_documents():
    from arm_double import policy_problems

    good = {"properties": {"policy": {"rules": [FOREIGN]}}}
    assert policy_problems(good) == []
    version_on_modification = json.loads(json.dumps(good))
    version_on_modification["properties"]["policy"]["rules"][0]["definition"]["actions"] = {
        "version": {"delete": {"daysAfterModificationGreaterThan": 9}}
    }
    assert "needs day conditions" in policy_problems(version_on_modification)[0]
    no_action = json.loads(json.dumps(good))
    no_action["properties"]["policy"]["rules"][0]["definition"]["actions"] = {"baseBlob": {}}
    assert "at least one action" in policy_problems(no_action)[0]


# ---------------------------------------------------------------------------------------------
# Protection: versioning, soft delete, version-level immutability


def test_protection_check_apply_idempotent(arm):
    protection = manager(arm, _lifecycle.ProtectionManager)
    checked = _lifecycle.apply_protection(protection, CONTAINER, WANT, check_mode=True)
    assert checked["changed"] and arm.writes() == [] and checked["diff"]["before"]["versioning"] is False
    assert checked["actions"] == [
        "turn blob versioning on",
        "set blob soft delete to 30 days",
        "set container soft delete to 30 days",
        "set the container's immutability policy to 3650 days (unlocked)",
        "migrate the container to version-level immutability (cannot be undone)",
    ]

    applied = _lifecycle.apply_protection(protection, CONTAINER, WANT)
    assert applied["actions"] == checked["actions"] and applied["pending"] == []
    assert arm.writes() == [("PUT", "service"), ("PUT", "immutability"), ("POST", "migrate")]
    service_put = [r for r in arm.requests if r["route"] == "service" and r["method"] == "PUT"][0]
    assert service_put["body"] == {
        "properties": {
            "isVersioningEnabled": True,
            "deleteRetentionPolicy": {"enabled": True, "days": 30, "allowPermanentDelete": False},
            "containerDeleteRetentionPolicy": {"enabled": True, "days": 30},
        }
    }
    policy_put = [r for r in arm.requests if r["route"] == "immutability"][0]
    assert policy_put["body"] == {"properties": {"immutabilityPeriodSinceCreationInDays": 3650}}
    assert arm.service["cors"] == {"corsRules": []}, "the properties not sent are Azure's to keep"
    assert applied["protection"] == {
        "versioning": True,
        "delete_retention_days": 30,
        "allow_permanent_delete": False,
        "container_delete_retention_days": 30,
        "version_level_immutability": True,
        "migration_state": "Completed",
        "immutability_days": 3650,
        "immutability_state": "Unlocked",
        "legal_hold": False,
    }
    assert any("unlocked" in w for w in applied["warnings"])

    again = _lifecycle.apply_protection(protection, CONTAINER, WANT)
    assert again["changed"] is False and again["actions"] == [] and len(arm.writes()) == 3
    assert again["diff"]["before"] == again["diff"]["after"] and arm.rejected == []


def test_lock_then_only_extend(arm):
    protection = manager(arm, _lifecycle.ProtectionManager)
    _lifecycle.apply_protection(protection, CONTAINER, WANT)
    locked = _lifecycle.apply_protection(protection, CONTAINER, dict(WANT, immutability_locked=True))
    assert locked["actions"] == ["lock the immutability policy (cannot be undone)"]
    lock = [r for r in arm.requests if r["route"] == "lock"][0]
    assert lock["if_match"] and lock["body"] is None and locked["protection"]["immutability_state"] == "Locked"

    longer = _lifecycle.apply_protection(protection, CONTAINER, dict(WANT, immutability_days=4000))
    assert longer["actions"] == ["extend the locked immutability policy to 4000 days"]
    assert arm.writes()[-1] == ("POST", "extend") and longer["protection"]["immutability_days"] == 4000
    writes = arm.writes()
    for want, message in (
        (dict(WANT, immutability_days=365), "can only be extended, not shortened to 365"),
        (dict(WANT, immutability_locked=False), "a lock cannot be undone"),
        (dict(WANT, versioning=False), "needs blob versioning"),
    ):
        with pytest.raises(_protection.ProtectionError, match=message) as info:
            _lifecycle.apply_protection(protection, CONTAINER, want)
        assert info.value.kind == "config"
    assert arm.writes() == writes and arm.rejected == []


def test_legal_hold_missing_container_and_nothing_asked(arm):
    protection = manager(arm, _lifecycle.ProtectionManager)
    arm.add_container("held", legal_hold=True)
    with pytest.raises(_protection.ProtectionError, match="legal hold") as info:
        _lifecycle.apply_protection(protection, "held", WANT)
    assert info.value.kind == "conflict" and arm.writes() == []
    with pytest.raises(rules_.LifecycleError, match="ContainerNotFound") as info:
        _lifecycle.apply_protection(protection, "missing", WANT)
    assert info.value.kind == "not_found"
    arm.rejected.clear()  # the 404 was provoked
    with pytest.raises(_protection.ProtectionError, match="nothing to manage"):
        _lifecycle.apply_protection(protection, CONTAINER, {})
    with pytest.raises(_protection.ProtectionError, match="delete_retention_days must be 0 to 365"):
        _lifecycle.apply_protection(protection, CONTAINER, {"delete_retention_days": 366})


def test_a_slow_migration_is_pending_and_not_started_twice(arm, monkeypatch):
    monkeypatch.setattr(_lifecycle, "MIGRATION_WAIT_SECONDS", 0.5)
    arm.migration_polls = 1000
    protection = manager(arm, _lifecycle.ProtectionManager)
    first = _lifecycle.apply_protection(protection, CONTAINER, dict(WANT, immutability_locked=True))
    assert first["pending"] == [
        "migrate the container to version-level immutability (cannot be undone)",
        "lock the immutability policy (cannot be undone)",
    ]
    assert first["protection"]["migration_state"] == "InProgress"
    arm.migration_polls = 0
    second = _lifecycle.apply_protection(protection, CONTAINER, dict(WANT, immutability_locked=True))
    assert second["actions"] == ["lock the immutability policy (cannot be undone)"]
    assert [w for w in arm.writes() if w[1] == "migrate"] == [("POST", "migrate")] and arm.rejected == []


def test_the_double_refuses_what_azure_refuses(arm):
    container = "/blobServices/default/containers/" + CONTAINER
    policy = container + "/immutabilityPolicies/default"
    cases = [
        ("PUT", "/blobServices/default", {"properties": {"deleteRetentionPolicy": {"enabled": True, "days": 0}}}, None),
        ("PUT", "/blobServices/default", {"properties": {"deleteRetentionPolicy": {"enabled": True}}}, None),
        (
            "PUT",
            "/blobServices/default",
            {
                "properties": {
                    "containerDeleteRetentionPolicy": {"enabled": True, "days": 7, "allowPermanentDelete": True}
                }
            },
            None,
        ),
        ("PUT", "/blobServices/default", {"sku": {"name": "Standard_LRS"}, "properties": {}}, None),
        ("PUT", policy, {"properties": {"immutabilityPeriodSinceCreationInDays": 146001}}, None),
        ("PUT", policy, {"properties": {"immutabilityPeriodSinceCreationInDays": 30, "state": "Locked"}}, None),
        ("POST", container + "/migrate", None, None),  # no versioning, no policy
    ]
    for method, path, body, if_match in cases:
        status, _code = raw(arm, method, path, body, if_match)
        assert status in (400, 409), (path, body, status)
    assert raw(arm, "PUT", policy, {"properties": {"immutabilityPeriodSinceCreationInDays": 30}})[0] == 200
    assert raw(arm, "POST", policy + "/lock")[1] == "MissingRequiredHeader"
    assert raw(arm, "POST", policy + "/lock", if_match='"stale"')[1] == "ConditionNotMet"
    etag = arm.containers[CONTAINER]["policy"]["etag"]
    extend = {"properties": {"immutabilityPeriodSinceCreationInDays": 60}}
    assert raw(arm, "POST", policy + "/extend", extend, if_match=etag)[1] == "ContainerImmutabilityPolicyFailure"
    assert raw(arm, "POST", policy + "/lock", if_match=etag)[0] == 200
    etag = arm.containers[CONTAINER]["policy"]["etag"]
    assert raw(arm, "PUT", policy, {"properties": {"immutabilityPeriodSinceCreationInDays": 90}})[0] == 409
    assert (
        raw(arm, "POST", policy + "/extend", {"properties": {"immutabilityPeriodSinceCreationInDays": 20}}, etag)[0]
        == 400
    )
    for days in range(61, 67):
        status, _code = raw(
            arm, "POST", policy + "/extend", {"properties": {"immutabilityPeriodSinceCreationInDays": days}}, etag
        )
        etag = arm.containers[CONTAINER]["policy"]["etag"]
        assert status == (200 if days <= 65 else 409), days
    assert len(arm.rejected) == len(cases) + 6


# ---------------------------------------------------------------------------------------------
# What the data plane can tell (backup_info)


@pytest.mark.parametrize(
    ("service", "container", "protected", "soft", "worm"),
    [
        ({"delete_retention_policy": {"enabled": True, "days": 14}}, None, "yes", "enabled", "unknown"),
        (
            {"delete_retention_policy": {"enabled": False}},
            {"has_immutability_policy": True},
            "yes",
            "disabled",
            "enabled",
        ),
        (
            {"delete_retention_policy": {"enabled": False}},
            {"has_immutability_policy": False},
            "no",
            "disabled",
            "disabled",
        ),
        (None, {"has_immutability_policy": False}, "unknown", "unknown", "disabled"),
        (None, None, "unknown", "unknown", "unknown"),
    ],
)
def test_data_plane_report(service, container, protected, soft, worm):
    report = _protection.data_plane_report(service, container, {"blob_soft_delete": "403"} if service is None else {})
    assert report["protected"] == protected
    assert report["blob_soft_delete"]["state"] == soft and report["immutability"]["state"] == worm
    assert report["versioning"]["state"] == report["container_soft_delete"]["state"] == "unknown"
    if soft == "enabled":
        assert report["blob_soft_delete"]["days"] == 14
    if service is None:
        assert report["blob_soft_delete"]["reason"] == "403"


def test_account_settings_alone_need_no_container(arm):
    protection = manager(arm, _lifecycle.ProtectionManager)
    want = {"versioning": True, "delete_retention_days": 14}
    result = _lifecycle.apply_protection(protection, "not-created-yet", want)
    assert result["actions"] == ["turn blob versioning on", "set blob soft delete to 14 days"]
    assert "immutability_state" not in result["protection"] and result["warnings"] == []
    assert [r["route"] for r in arm.requests] == ["service", "service", "service"] and arm.rejected == []
    # Turning soft delete off is allowed, and said.
    off = _lifecycle.apply_protection(protection, "not-created-yet", {"delete_retention_days": 0})
    assert off["actions"] == ["turn blob soft delete off"] and arm.service["deleteRetentionPolicy"] == {
        "enabled": False
    }
    assert any("soft delete is off" in w for w in off["warnings"])
