"""molecule/production deploys inventories/example: its group vars are the example's
(group_vars/tsdb_hosts/*.yml and hosts.yml's group vars), value for value, except for a short
allow-list of what the rig cannot provide - so the scenario and the template cannot drift."""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "inventories", "example")

# Keys whose values may differ (or exist on one side only), and why.
ALLOWED = {
    "tsdb_azure_auth_mode": "entra needs Azure's identity endpoints; the scenario uses a connection string",
    "tsdb_azure_connection_string": "the private Azurite's (the example's entra needs none)",
    "azure_lifecycle_arm_endpoint": "the ARM test double instead of management.azure.com",
    "azure_lifecycle_arm_access_token": "the ARM double's bearer token (the example's control node uses entra)",
    "backup_agent_pip_extra_args": "the rig's wheelhouse, offline (the example's is a commented mirror)",
}
# Secrets: test values in the scenario, placeholders in the example's vault.yml.
SECRET = re.compile(r"^vault_")


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def example_vars():
    merged = dict(load(os.path.join(EXAMPLE, "hosts.yml"))["all"]["children"]["tsdb_hosts"].get("vars") or {})
    folder = os.path.join(EXAMPLE, "group_vars", "tsdb_hosts")
    for name in sorted(os.listdir(folder)):
        merged.update(load(os.path.join(folder, name)))
    return merged


def scenario():
    return load(os.path.join(ROOT, "molecule", "production", "molecule.yml"))


def scenario_vars():
    return scenario()["provisioner"]["inventory"]["group_vars"]["tsdb_hosts"]


def test_the_scenario_has_the_examples_values_outside_the_allow_list():
    example, ours = example_vars(), scenario_vars()
    differ = sorted(
        k
        for k in set(example) | set(ours)
        if example.get(k, "<absent>") != ours.get(k, "<absent>") and k not in ALLOWED and not SECRET.match(k)
    )
    assert differ == [], "molecule/production differs from inventories/example in %s" % differ


def test_the_allow_list_is_needed():
    """An entry that no longer differs goes: the allow-list stays the list of real differences."""
    example, ours = example_vars(), scenario_vars()
    assert sorted(k for k in ALLOWED if example.get(k, "<absent>") == ours.get(k, "<absent>")) == []


def test_every_secret_the_example_reads_is_given_a_test_value():
    example, ours = example_vars(), scenario_vars()
    text = yaml.safe_dump({k: v for k, v in example.items() if not SECRET.match(k)})
    read = set(re.findall(r"\b(vault_\w+)\b", text))
    assert sorted(read - set(example)) == [], "the example's vault.yml lacks a placeholder"
    assert sorted(read - set(ours)) == [], "the scenario lacks a test value"


def test_the_scenario_is_shaped_like_the_example():
    """Three hosts, one group, a non-root login, and no ansible_become (it would override the
    playbooks' become)."""
    hosts = load(os.path.join(EXAMPLE, "hosts.yml"))["all"]["children"]["tsdb_hosts"]
    platforms = scenario()["platforms"]
    assert len(platforms) == len(hosts["hosts"]) == 3
    assert all(p["groups"] == ["tsdb_hosts"] for p in platforms)
    for values in (example_vars(), scenario_vars()):
        assert values["ansible_user"] not in ("root", "", None)
        assert not [k for k in values if k.startswith("ansible_become")]
    assert sorted(scenario()["provisioner"]["inventory"]["host_vars"]) == sorted(p["name"] for p in platforms)
    for host_vars in scenario()["provisioner"]["inventory"]["host_vars"].values():
        assert set(host_vars) == {"tsdb_port"}, host_vars


def test_the_backup_jobs_never_log_in_as_a_superuser():
    for values in (example_vars(), scenario_vars()):
        assert values["tsdb_login_user"] not in ("postgres", values["backup_logins_owner_roles"][0])
        assert values["backup_logins_enabled"] is True
