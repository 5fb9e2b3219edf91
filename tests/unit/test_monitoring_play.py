"""The alert rules go to the Prometheus server (playbooks/monitoring.yml), never to the database
hosts: the play targets group prometheus, copies the collection's own rules file, checks it with
promtool and reloads Prometheus from a handler; no role copies rules any more."""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return yaml.safe_load(f)


def play():
    (p,) = load("playbooks/monitoring.yml")
    return p


def test_the_play_targets_the_prometheus_group():
    assert play()["hosts"] == "{{ prometheus_target | default('prometheus') }}"
    hosts = load("inventories/example/hosts.yml")["all"]["children"]
    assert "prometheus" in hosts and not (hosts["prometheus"] or {}).get("hosts")


def test_the_play_installs_the_collections_rules_file_checked_and_reloads():
    p = play()
    (copy,) = [t for t in p["tasks"] if "ansible.builtin.copy" in t]
    src = copy["ansible.builtin.copy"]["src"].replace("{{ playbook_dir }}", os.path.join(ROOT, "playbooks"))
    assert os.path.isfile(os.path.normpath(src))
    assert os.path.normpath(src) == os.path.join(ROOT, "extensions", "prometheus", "tsdb_backup.rules.yml")
    assert "check rules %s" in copy["ansible.builtin.copy"]["validate"]
    assert copy["ansible.builtin.copy"]["mode"] == "0644"
    (handler,) = p["handlers"]
    assert copy["notify"] == handler["name"]
    assert handler["ansible.builtin.systemd_service"]["state"] == "reloaded"
    assert "/etc/prometheus/rules.d" in p["vars"]["__monitoring_rules_dir"]


def test_no_role_puts_rules_on_the_database_hosts():
    found = []
    for base, _dirs, files in os.walk(os.path.join(ROOT, "roles")):
        if os.path.basename(base) not in ("tasks", "defaults", "templates", "handlers", "vars"):
            continue
        for name in files:
            path = os.path.join(base, name)
            with open(path, encoding="utf-8") as f:
                content = f.read()
            if path.endswith(os.path.join("tsdb", "vars", "main.yml")):
                continue  # the removed name and what to do instead
            if re.search(r"extensions/prometheus|rules\.yml|prometheus_rules", content):
                found.append(os.path.relpath(path, ROOT))
    assert found == []
