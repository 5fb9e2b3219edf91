"""Role azure_lifecycle against the local ARM test double (there is no emulator for Azure
Resource Manager): three hosts, one policy write with a rule for their dump sets and one for the
history archive; the defaults are the current system's (Cool 30 days, Archive 365, never delete)
plus versioning and soft delete; a second run writes nothing; the rule on the whole prefix that
dump sets and history shared is retired."""

import json
import os
import subprocess
import sys

import pytest
from arm_double import ArmDouble

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


@pytest.fixture
def arm():
    double = ArmDouble(token="it-arm-token").start()
    yield double
    double.stop()
    assert double.rejected == [], "the ARM double refused requests: %s" % double.rejected


def run_role(arm, tmp_path, fails=False, **extra):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {h: {"ansible_connection": "local"} for h in ("db01", "db02", "db03")},
                    "vars": {"ansible_python_interpreter": sys.executable},
                }
            }
        )
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Lifecycle",
                    "hosts": "all",
                    "gather_facts": False,
                    "roles": [
                        {
                            "role": "insa.timescaledb_backup.azure_lifecycle",
                            "vars": dict(
                                {
                                    "azure_lifecycle_subscription_id": "sub-0001",
                                    "azure_lifecycle_resource_group": "rg-backups",
                                    "azure_lifecycle_account_name": "insabackups",
                                    "azure_lifecycle_arm_endpoint": arm.url,
                                    "azure_lifecycle_arm_access_token": arm.token,
                                },
                                **extra,
                            ),
                        }
                    ],
                }
            ]
        )
    )
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(rig.REPO, "ansible.cfg"))
    proc = subprocess.run(
        [os.path.join(rig.REPO, ".venv/bin/ansible-playbook"), "-i", str(inventory), str(playbook)],
        cwd=rig.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (proc.returncode != 0) == fails, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def test_one_policy_for_three_hosts_with_the_current_schedule(arm, tmp_path):
    out = run_role(arm, tmp_path)
    assert arm.writes() == [("PUT", "policy"), ("PUT", "service")], arm.writes()
    assert "arm_access_token" not in out and arm.token not in out
    dumps, history = arm.rules()
    for rule in (dumps, history):
        actions = rule["definition"]["actions"]["baseBlob"]
        assert actions["tierToCool"]["daysAfterModificationGreaterThan"] == 30
        assert actions["tierToArchive"]["daysAfterModificationGreaterThan"] == 365
        assert "delete" not in actions and "version" not in rule["definition"]["actions"], "kept forever by default"
    assert dumps["definition"]["filters"]["prefixMatch"] == [
        "tsdb-backups/backups/db01/",
        "tsdb-backups/backups/db02/",
        "tsdb-backups/backups/db03/",
    ]
    assert history["definition"]["filters"]["prefixMatch"] == ["tsdb-backups/backups/history/"]
    assert arm.service["isVersioningEnabled"] is True
    assert arm.service["deleteRetentionPolicy"] == {"enabled": True, "days": 30, "allowPermanentDelete": False}
    assert arm.service["containerDeleteRetentionPolicy"] == {"enabled": True, "days": 30}

    run_role(arm, tmp_path)
    assert len(arm.writes()) == 2, "a second run must not write the policy or the protection again"


def test_deleting_dump_sets_retires_the_shared_rule_and_locks_history(arm, tmp_path):
    shared = {
        "enabled": True,
        "name": "tsdbbackuptsdbbackupsbackups",
        "type": "Lifecycle",
        "definition": {
            "actions": {"baseBlob": {"delete": {"daysAfterModificationGreaterThan": 400}}},
            "filters": {"blobTypes": ["blockBlob"], "prefixMatch": ["tsdb-backups/backups/"]},
        },
    }
    arm.policy = {"properties": {"policy": {"rules": [shared]}}}
    run_role(
        arm,
        tmp_path,
        azure_lifecycle_hosts=["db01.example.com"],
        azure_lifecycle_delete_after_days=400,
        azure_lifecycle_immutability_days=400,
        azure_lifecycle_immutability_locked=True,
    )
    names = [r["name"] for r in arm.rules()]
    assert names == ["tsdbbackuptsdbbackupsbackupsdumps", "tsdbbackuptsdbbackupsbackupshistory"]
    dumps, history = arm.rules()
    assert dumps["definition"]["filters"]["prefixMatch"] == ["tsdb-backups/backups/db01.example.com/"]
    assert dumps["definition"]["actions"]["baseBlob"]["delete"] == {"daysAfterModificationGreaterThan": 400}
    assert dumps["definition"]["actions"]["version"] == {"delete": {"daysAfterCreationGreaterThan": 400}}
    assert "delete" not in history["definition"]["actions"]["baseBlob"]
    container = arm.container_properties("tsdb-backups")
    assert container["immutableStorageWithVersioning"]["enabled"] is True
    assert container["immutabilityPolicy"]["properties"]["state"] == "Locked"
    assert container["immutabilityPolicy"]["properties"]["immutabilityPeriodSinceCreationInDays"] == 400


def test_each_replica_account_gets_the_rules_with_its_own_container_credentials_and_days(arm, tmp_path):
    """A replica target's account (another subscription, resource group, account and token: a
    second double) gets the dumps and history rules under its own container, the primary's days
    where its entry gives none, versioning and soft delete - and no immutability, which the
    primary has but a replica gets only from its own entry. A second run writes nothing."""
    replica = ArmDouble(
        token="it-arm-token-dr",
        subscription="sub-0002",
        resource_group="rg-backups-dr",
        account="insabackupsdr",
        containers=("dr-backups",),
    ).start()
    try:
        entry = {
            "name": "dr",
            "account_name": "insabackupsdr",
            "container": "dr-backups",
            "subscription_id": "sub-0002",
            "resource_group": "rg-backups-dr",
            "arm_endpoint": replica.url,
            "arm_access_token": replica.token,
            "cool_after_days": 0,
            "history_archive_after_days": 730,
        }
        extra = {"azure_lifecycle_replicas": [entry], "azure_lifecycle_immutability_days": 400}
        out = run_role(arm, tmp_path, **extra)
        assert replica.rejected == [], replica.rejected
        assert replica.token not in out and arm.token not in out
        assert replica.writes() == [("PUT", "policy"), ("PUT", "service")], replica.writes()
        dumps, history = replica.rules()
        assert dumps["definition"]["filters"]["prefixMatch"] == [
            "dr-backups/backups/db01/",
            "dr-backups/backups/db02/",
            "dr-backups/backups/db03/",
        ]
        actions = dumps["definition"]["actions"]["baseBlob"]
        assert "tierToCool" not in actions, "the replica's own cool_after_days=0"
        assert actions["tierToArchive"]["daysAfterModificationGreaterThan"] == 365, "the primary's"
        assert "delete" not in actions
        history_actions = history["definition"]["actions"]["baseBlob"]
        assert history["definition"]["filters"]["prefixMatch"] == ["dr-backups/backups/history/"]
        assert history_actions["tierToArchive"]["daysAfterModificationGreaterThan"] == 730
        assert history_actions["tierToCool"]["daysAfterModificationGreaterThan"] == 30
        assert replica.service["isVersioningEnabled"] is True
        assert replica.service["deleteRetentionPolicy"]["days"] == 30
        assert replica.container_properties("dr-backups").get("immutableStorageWithVersioning") is None
        # The primary's account: its own rules and its immutability, under its own container.
        assert arm.rules()[0]["definition"]["filters"]["prefixMatch"][0] == "tsdb-backups/backups/db01/"
        assert arm.container_properties("tsdb-backups")["immutableStorageWithVersioning"]["enabled"] is True
        assert "dr (insabackupsdr/dr-backups)" in out and "primary (insabackups/tsdb-backups)" in out

        primary_writes, replica_writes = len(arm.writes()), len(replica.writes())
        run_role(arm, tmp_path, **extra)
        assert (len(arm.writes()), len(replica.writes())) == (primary_writes, replica_writes), "a second run writes"
    finally:
        replica.stop()


def test_a_replica_entry_that_is_the_primary_or_borrows_its_secret_is_refused_before_any_write(arm, tmp_path):
    """A replica entry with the primary's account and container would overwrite the primary's
    rules with its own days; in data_plane mode, one without a connection string of its own would
    re-tier the primary's blobs (the primary's string names the primary's account). Both are
    refused before anything is written."""
    same = {"name": "dr", "account_name": "insabackups", "container": "tsdb-backups", "cool_after_days": 1}
    out = run_role(arm, tmp_path, fails=True, azure_lifecycle_replicas=[same])
    assert "needs an account and container of its own" in out and "insabackups/tsdb-backups" in out, out[-3000:]
    borrowing = {"name": "dr", "account_name": "insabackupsdr", "container": "tsdb-backups"}
    out = run_role(
        arm,
        tmp_path,
        fails=True,
        azure_lifecycle_mode="data_plane",
        azure_lifecycle_auth_mode="connection_string",
        azure_lifecycle_connection_string="DefaultEndpointsProtocol=http;AccountName=insabackups;AccountKey=a2V5;",
        azure_lifecycle_replicas=[borrowing],
    )
    assert "its own connection_string or sas_token" in out and "(dr)" in out, out[-3000:]
    assert "a2V5" not in out
    assert arm.writes() == [], "nothing is written when an entry is refused"
