"""container_protection against the local ARM test double (Azurite has no versioning, soft delete
or immutability, and there is no emulator for Resource Manager): check mode writes nothing, a
run sends exactly the documented bodies in Azure's order, a second run writes nothing, the diff
shows before and after, a lock cannot be undone. backup_info's protection report against Azurite:
what the data plane tells, and unknown for what it cannot read."""

import datetime

import azure_helpers as h
import pytest
from arm_double import ArmDouble
from azure.storage.blob import ContainerSasPermissions, RetentionPolicy, generate_container_sas


@pytest.fixture
def arm():
    double = ArmDouble(token="it-arm-token").start()
    yield double
    double.stop()
    assert double.rejected == [], "the ARM double refused requests: %s" % double.rejected


@pytest.fixture
def arm_args(arm):
    return {
        "arm_endpoint": arm.url,
        "arm_access_token": arm.token,
        "subscription_id": "sub-0001",
        "resource_group": "rg-backups",
        "account_name": "insabackups",
        "container": "tsdb-backups",
        "max_retries": 0,
    }


def test_protection_check_apply_idempotent_lock(arm, arm_args):
    args = dict(
        arm_args,
        versioning=True,
        delete_retention_days=30,
        container_delete_retention_days=30,
        immutability_days=3650,
    )
    checked, applied, again, locked = h.run_tasks(
        [
            ("container_protection", args, {"check": True, "diff": True}),
            ("container_protection", args, {"diff": True}),
            ("container_protection", args),
            ("container_protection", dict(args, immutability_locked=True)),
        ]
    )
    assert checked["changed"] is True and checked["diff"]["before"]["versioning"] is False, checked
    assert checked["diff"]["after"]["immutability_state"] == "Unlocked"
    assert applied["changed"] is True and applied["actions"] == checked["actions"], applied
    assert applied["protection"]["version_level_immutability"] is True and applied["pending"] == []
    assert any("unlocked" in w for w in applied["warnings"])
    assert again["changed"] is False and again["actions"] == [], again
    assert locked["protection"]["immutability_state"] == "Locked", locked
    assert arm.writes() == [
        ("PUT", "service"),
        ("PUT", "immutability"),
        ("POST", "migrate"),
        ("POST", "lock"),
    ], "check mode and the idempotent run wrote nothing"
    assert arm.service["deleteRetentionPolicy"] == {"enabled": True, "days": 30, "allowPermanentDelete": False}


def test_refusals_are_clean_and_write_nothing(arm, arm_args):
    arm.add_container("held", legal_hold=True)
    off, held, sas, nothing = h.run_tasks(
        [
            ("container_protection", dict(arm_args, versioning=False)),
            ("container_protection", dict(arm_args, container="held", versioning=True, immutability_days=30)),
            (
                "container_protection",
                dict(arm_args, arm_access_token=None, auth_mode="sas", sas_token="sv=x", versioning=True),
            ),
            ("container_protection", arm_args),
        ]
    )
    assert off["changed"] is False and off["protection"]["versioning"] is False, off  # off already
    h.assert_clean_failure(held, "legal hold")
    assert held["error_kind"] == "conflict"
    h.assert_clean_failure(sas, "auth_mode: entra or arm_access_token")
    h.assert_clean_failure(nothing, "nothing to manage")
    assert arm.writes() == [], arm.writes()


@pytest.mark.parametrize("soft_delete", [False, True])
def test_backup_info_reports_what_the_data_plane_tells(azure_env, service, container, cs_args, soft_delete):
    service.create_container(container)
    before = service.get_service_properties()["delete_retention_policy"]
    if soft_delete:
        service.set_service_properties(delete_retention_policy=RetentionPolicy(enabled=True, days=7))
    try:
        info = h.run_module("backup_info", dict(cs_args, host_label=h.HOST))
    finally:
        service.set_service_properties(delete_retention_policy=before)
    protection = info["protection"]
    assert protection["immutability"]["state"] == "disabled", protection
    assert protection["versioning"]["state"] == protection["container_soft_delete"]["state"] == "unknown"
    if soft_delete:
        assert protection["protected"] == "yes" and protection["blob_soft_delete"] == {"state": "enabled", "days": 7}
    else:
        assert protection["protected"] == "no" and protection["blob_soft_delete"] == {"state": "disabled"}

    sas = generate_container_sas(
        azure_env["AZURE_STORAGE_ACCOUNT"],
        container,
        account_key=azure_env["AZURE_STORAGE_KEY"],
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    by_sas = h.run_module(
        "backup_info",
        {
            "auth_mode": "sas",
            "sas_token": sas,
            "account_url": azure_env["AZURE_STORAGE_BLOB_ENDPOINT"],
            "container": container,
            "host_label": h.HOST,
            "max_retries": 0,
        },
    )
    assert by_sas.get("failed") is not True, by_sas
    assert by_sas["protection"]["protected"] == "unknown", by_sas["protection"]
    assert by_sas["protection"]["blob_soft_delete"]["state"] == "unknown"
    assert "reason" in by_sas["protection"]["blob_soft_delete"]
