"""One set of settings: every tsdb_* variable the playbooks read has its default in roles/tsdb
(documented and validated there), none in a playbook. The timer's settings (setup.yml) and the
playbooks' module arguments therefore come from the same values for any inventory."""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOKS = ["backup.yml", "restore.yml", "drill.yml", "setup.yml"]
# Chosen before any role is loaded (the hosts line), or derived from another setting.
DERIVED = {"tsdb_backup_target", "tsdb_history_database"}
# Facts and registered results of the playbooks themselves, not settings.
FACTS = {"tsdb_backup_results", "tsdb_backup_run", "tsdb_backup_table", "tsdb_backup_hosts", "tsdb_backup_failed_hosts"}
FACTS |= {"tsdb_drill"}


def text(name):
    with open(os.path.join(ROOT, "playbooks", name), encoding="utf-8") as f:
        return f.read()


def test_no_playbook_carries_its_own_default():
    inline = []
    for name in PLAYBOOKS:
        # hostvars[h].tsdb_... is another host's view, where role defaults are not visible.
        for m in re.finditer(r"(?<!\.)\b(tsdb_\w+) \| default\(([^)]*)\)", text(name)):
            if m.group(1) not in DERIVED | FACTS and m.group(2) != "omit, true":
                inline.append("%s: %s" % (name, m.group(0)))
    assert inline == []


def test_every_setting_the_playbooks_read_is_in_the_settings_role():
    with open(os.path.join(ROOT, "roles", "tsdb", "defaults", "main.yml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    read = set()
    for name in PLAYBOOKS:
        read |= set(re.findall(r"\b(tsdb_(?:login|port|passfile|backup|azure|drill)\w*)\b", text(name)))
    assert sorted(read - FACTS - DERIVED - set(defaults)) == []
    for name in PLAYBOOKS:
        assert "insa.timescaledb_backup.tsdb" in text(name), name
