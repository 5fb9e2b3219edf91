"""lifecycle_policy: the management policy against the local ARM test double (there is no
emulator for Azure Resource Manager), the data-plane fallback against Azurite."""

import datetime

import azure_helpers as h
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle as lc
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle_rules as lr
from arm_double import ArmDouble

FOREIGN = {
    "enabled": True,
    "name": "otherteamlogs",
    "type": "Lifecycle",
    "definition": {
        "actions": {"baseBlob": {"delete": {"daysAfterModificationGreaterThan": 30}}},
        "filters": {"blobTypes": ["blockBlob"], "prefixMatch": ["logs/"]},
    },
}
OURS = {
    "enabled": True,
    "name": "tsdbbackuptsdbbackupstimescaledb",
    "type": "Lifecycle",
    "definition": {
        "actions": {
            "baseBlob": {
                "tierToCool": {"daysAfterModificationGreaterThan": 30},
                "tierToArchive": {"daysAfterModificationGreaterThan": 365, "daysAfterLastTierChangeGreaterThan": 7},
            }
        },
        "filters": {"blobTypes": ["blockBlob"], "prefixMatch": ["tsdb-backups/timescaledb/"]},
    },
}


@pytest.fixture
def arm():
    double = ArmDouble(token="it-arm-token").start()
    yield double
    double.stop()
    assert double.rejected == [], "the ARM double refused requests: %s" % double.rejected


@pytest.fixture
def arm_args(arm):
    return {
        "mode": "management_policy",
        "arm_endpoint": arm.url,
        "arm_access_token": arm.token,
        "subscription_id": "sub-0001",
        "resource_group": "rg-backups",
        "account_name": "insabackups",
        "container": "tsdb-backups",
        "max_retries": 0,
    }


def test_management_policy_check_apply_idempotent_change_remove(arm, arm_args):
    arm.policy = {"properties": {"policy": {"rules": [FOREIGN]}}}

    checked = h.run_module("lifecycle_policy", arm_args, check=True, diff=True)
    assert checked["changed"] is True, checked
    assert checked["diff"]["before"]["rules"] == [FOREIGN]
    assert [r["name"] for r in checked["diff"]["after"]["rules"]] == ["otherteamlogs", OURS["name"]]
    assert arm.methods() == ["GET"] and arm.rules() == [FOREIGN], "check mode wrote the policy"

    applied = h.run_module("lifecycle_policy", arm_args)
    assert applied["changed"] is True, applied
    assert arm.methods() == ["GET", "GET", "PUT"]
    put = arm.requests[-1]
    assert put["query"]["api-version"] and put["body"] == {"properties": {"policy": {"rules": [FOREIGN, OURS]}}}
    assert applied["rules"] == [FOREIGN, OURS]

    again = h.run_module("lifecycle_policy", arm_args)
    assert again["changed"] is False and arm.methods()[-1] == "GET" and arm.methods().count("PUT") == 1

    colder = dict(
        arm_args,
        rules=[{"prefix": "timescaledb", "cool_after_days": 30, "cold_after_days": 90, "archive_after_days": 100}],
    )
    changed = h.run_module("lifecycle_policy", colder, diff=True)
    assert changed["changed"] is True, changed
    ours = [r for r in arm.rules() if r["name"] == OURS["name"]][0]
    assert ours["definition"]["actions"]["baseBlob"] == {
        "tierToCool": {"daysAfterModificationGreaterThan": 30},
        "tierToCold": {"daysAfterModificationGreaterThan": 90},
        "tierToArchive": {"daysAfterModificationGreaterThan": 100, "daysAfterLastTierChangeGreaterThan": 7},
    }
    assert any("in Cold" in w and "at least 90 days" in w for w in changed["warnings"]), changed.get("warnings")

    removed = h.run_module("lifecycle_policy", dict(arm_args, state="absent"))
    assert removed["changed"] is True and arm.rules() == [FOREIGN]
    # The last rule gone: the policy is deleted (through the core, to save a module run).
    manager = lc.PolicyManager(
        lc.StaticTokenCredential(arm.token),
        "sub-0001",
        "rg-backups",
        "insabackups",
        arm_endpoint=arm.url,
        max_retries=0,
    )
    removed = lc.apply_management_policy(manager, [{"name": "otherteamlogs"}], state="absent")
    assert removed["changed"] is True and arm.policy is None and arm.methods()[-1] == "DELETE"


def test_invalid_rules_fail_before_any_request(arm, arm_args):
    bad_order, no_entra = h.run_tasks(
        [
            ("lifecycle_policy", dict(arm_args, rules=[{"cool_after_days": 400, "archive_after_days": 365}])),
            ("lifecycle_policy", dict(arm_args, arm_access_token=None, auth_mode="sas", sas_token="sv=x")),
        ]
    )
    h.assert_clean_failure(bad_order, "archive_after_days (365) must be greater than cool_after_days (400)")
    h.assert_clean_failure(no_entra, "auth_mode: entra or arm_access_token", "mode: data_plane")
    assert arm.requests == []


def test_wrong_token_is_reported_clearly(arm):
    manager = lc.PolicyManager(
        lc.StaticTokenCredential("not-the-token"),
        "sub-0001",
        "rg-backups",
        "insabackups",
        arm_endpoint=arm.url,
        max_retries=0,
    )
    with pytest.raises(lc.LifecycleError) as info:
        manager.get_rules()
    assert "failed to read the lifecycle policy of storage account insabackups" in str(info.value)
    assert "InvalidAuthenticationToken" in str(info.value) and "not-the-token" not in str(info.value)
    assert [r["code"] for r in arm.rejected] == ["InvalidAuthenticationToken"]
    arm.rejected.clear()  # refused on purpose


def test_data_plane_tiers_by_age_and_never_warms_up(azure_env, service, container, cs_args, tmp_path):
    store = h.store_for(azure_env, container)
    for backup_id in ("20261125T020000Z", "20261126T020000Z"):
        store.upload_backup_set(h.make_backup_set(str(tmp_path), "iot", backup_id).manifest)
    service.get_blob_client(container, "elsewhere/keep-hot.txt").upload_blob(b"not a backup")
    backups = [n for n in h.blob_names(service, container) if n.startswith("timescaledb/")]
    args = dict(cs_args, mode="data_plane", rules=[{"cool_after_days": 0}])

    def tiers():
        return {
            n: service.get_blob_client(container, n).get_blob_properties().blob_tier
            for n in h.blob_names(service, container)
        }

    checked = h.run_module("lifecycle_policy", args, check=True)
    assert checked["changed"] is True and sorted(c["name"] for c in checked["changes"]) == backups
    assert {c["from"] + ">" + c["to"] for c in checked["changes"]} == {"Hot>Cool"}
    assert set(tiers().values()) == {"Hot"}, "check mode changed a tier"

    applied = h.run_module("lifecycle_policy", args)
    assert applied["changed"] is True and applied["examined"] == 6
    assert {n: t for n, t in tiers().items() if n in backups} == {n: "Cool" for n in backups}
    assert tiers()["elsewhere/keep-hot.txt"] == "Hot"
    assert h.run_module("lifecycle_policy", args)["changed"] is False

    # A year later (the core takes the clock as an argument): Archive, except what went Cool lately.
    _rules, settings, _warnings = lr.prepare_rules([{"archive_after_tier_change_days": 0}], container, "timescaledb")
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
    result = lc.apply_data_plane(store, settings, now=later)
    assert len(result["changes"]) == 6 and {c["to"] for c in result["changes"]} == {"Archive"}
    assert {n: t for n, t in tiers().items() if n in backups} == {n: "Archive" for n in backups}
    # Never back to a warmer tier, never a delete from the data plane.
    assert lc.apply_data_plane(store, settings, now=later)["changes"] == []
    with pytest.raises(lc.LifecycleError, match="not applied in data_plane mode"):
        lc.apply_data_plane(
            store,
            lr.prepare_rules(
                [{"delete_after_days": 4000, "target": "dumps", "hosts": ["db1"]}], container, "timescaledb"
            )[1],
        )


def test_dumps_and_history_apart_and_no_delete_reaches_history(arm, arm_args):
    separate = dict(
        arm_args,
        rules=[
            {
                "name": "dumps",
                "target": "dumps",
                "hosts": ["db01", "db02"],
                "delete_after_days": 400,
                "previous_versions_delete_after_days": 400,
            },
            {"name": "history", "target": "history", "cool_after_days": 30, "archive_after_days": 400},
        ],
    )
    whole_prefix_delete = dict(arm_args, rules=[{"name": "wipe", "delete_after_days": 400}])
    history_delete = dict(arm_args, rules=[{"name": "wipe", "target": "history", "delete_after_days": 4000}])
    applied, refused, refused_history = h.run_tasks(
        [
            ("lifecycle_policy", separate),
            ("lifecycle_policy", whole_prefix_delete),
            ("lifecycle_policy", history_delete),
        ]
    )
    assert applied["changed"] is True and applied["history_violations"] == [], applied
    assert [r["definition"]["filters"]["prefixMatch"] for r in arm.rules()] == [
        ["tsdb-backups/timescaledb/db01/", "tsdb-backups/timescaledb/db02/"],
        ["tsdb-backups/timescaledb/history/"],
    ]
    assert arm.rules()[0]["definition"]["actions"]["version"] == {"delete": {"daysAfterCreationGreaterThan": 400}}
    assert any("history_restore fails on them until they are rehydrated" in w for w in applied["warnings"])
    for result in (refused, refused_history):
        h.assert_clean_failure(
            result, "rule wipe (baseBlob.delete", "would delete history objects under tsdb-backups/timescaledb/history/"
        )
        assert result["error_kind"] == "config"
    assert arm.methods().count("PUT") == 1, "a refused rule is refused before any request"

    # Someone else's rule on the whole container: named, nothing written, until it is removed by name.
    arm.policy["properties"]["policy"]["rules"].append(
        dict(
            FOREIGN,
            name="cleanup",
            definition=dict(
                FOREIGN["definition"], filters={"blobTypes": ["blockBlob"], "prefixMatch": ["tsdb-backups/"]}
            ),
        )
    )
    blocked, removed = h.run_tasks(
        [
            ("lifecycle_policy", separate, {"check": True}),
            ("lifecycle_policy", dict(arm_args, state="absent", rules=[{"name": "cleanup"}])),
        ]
    )
    h.assert_clean_failure(
        blocked, "rule cleanup (baseBlob.delete; prefixMatch tsdb-backups/)", "state: absent with its name"
    )
    assert removed["changed"] is True and [v["rule"] for v in removed["history_violations"]] == ["cleanup"]
    assert [r["name"] for r in arm.rules()] == ["dumps", "history"]
