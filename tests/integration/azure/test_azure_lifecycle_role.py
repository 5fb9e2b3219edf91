"""Role azure_lifecycle against the local ARM test double (there is no emulator for Azure
Resource Manager): three hosts, one policy write; the defaults are the current system's
(Cool 30 days, Archive 365, never delete); a second run writes nothing."""

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


def run_role(arm, tmp_path):
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
                            "vars": {
                                "azure_lifecycle_subscription_id": "sub-0001",
                                "azure_lifecycle_resource_group": "rg-backups",
                                "azure_lifecycle_account_name": "insabackups",
                                "azure_lifecycle_arm_endpoint": arm.url,
                                "azure_lifecycle_arm_access_token": arm.token,
                            },
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
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def test_one_policy_for_three_hosts_with_the_current_schedule(arm, tmp_path):
    out = run_role(arm, tmp_path)
    assert arm.methods().count("PUT") == 1, arm.methods()
    assert "arm_access_token" not in out and arm.token not in out
    rules = arm.policy["properties"]["policy"]["rules"]
    assert len(rules) == 1
    actions = rules[0]["definition"]["actions"]["baseBlob"]
    assert actions["tierToCool"]["daysAfterModificationGreaterThan"] == 30
    assert actions["tierToArchive"]["daysAfterModificationGreaterThan"] == 365
    assert "delete" not in actions, "history must be kept forever by default"
    assert rules[0]["definition"]["filters"]["prefixMatch"] == ["tsdb-backups/backups/"]

    run_role(arm, tmp_path)
    assert arm.methods().count("PUT") == 1, "a second run must not write the policy again"
