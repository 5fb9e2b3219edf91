"""One set of settings: every tsdb_* variable the playbooks and the roles read has its default in
roles/tsdb (documented and validated there), none in a playbook or another role. The timer's
settings (the roles) and the playbooks' module arguments therefore come from the same values for
any inventory, and a setting under its old name fails instead of being ignored."""

import glob
import os
import re

import yaml
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOKS = ["backup.yml", "restore.yml", "drill.yml", "setup.yml", "report.yml"]
TIMER_ROLES = ["backup_agent", "restore_drill", "history_guard"]
# Every role that reads the site's settings: the timers' and the login recipe.
READERS = TIMER_ROLES + ["backup_logins"]
# Chosen before any role is loaded (the hosts line).
DERIVED = {"tsdb_backup_target"}
# Facts and registered results of the playbooks themselves, not settings.
FACTS = {"tsdb_backup_results", "tsdb_backup_run", "tsdb_backup_table", "tsdb_backup_hosts", "tsdb_backup_failed_hosts"}
FACTS |= {"tsdb_drill", "tsdb_report"}
# A variable name, not a file name such as tsdb_backup_run.py or tsdb_backup_status.prom.
SETTING = re.compile(
    r"\b(tsdb_(?:login|port|passfile|sslmode|backup|azure|drill|restore|history|report)\w*)\b(?!\.[a-z])"
)


def text(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def load(path):
    return yaml.safe_load(text(path)) or {}


def role_files(role):
    return sorted(
        p
        for p in glob.glob(os.path.join(ROOT, "roles", role, "**", "*"), recursive=True)
        # The README documents the role (tests/unit/test_operator_docs.py checks its names).
        if os.path.isfile(p) and not p.endswith(("argument_specs.yml", os.path.join("meta", "main.yml"), "README.md"))
    )


def tsdb_defaults():
    return load("roles/tsdb/defaults/main.yml")


def renamed():
    return load("roles/tsdb/vars/main.yml")["__tsdb_renamed"]


def removed():
    return load("roles/tsdb/vars/main.yml")["__tsdb_removed"]


def test_no_playbook_carries_its_own_default():
    inline = []
    for name in PLAYBOOKS:
        # hostvars[h].tsdb_... is another host's view, where role defaults are not visible.
        for m in re.finditer(r"(?<!\.)\b(tsdb_\w+) \| default\(([^)]*)\)", text("playbooks/" + name)):
            if m.group(1) not in DERIVED | FACTS and m.group(2) != "omit, true":
                inline.append("%s: %s" % (name, m.group(0)))
    assert inline == []


def test_every_setting_the_playbooks_read_is_in_the_settings_role():
    read = set()
    for name in PLAYBOOKS:
        read |= set(SETTING.findall(text("playbooks/" + name)))
    assert sorted(read - FACTS - DERIVED - set(tsdb_defaults())) == []
    for name in PLAYBOOKS:
        assert "insa.timescaledb_backup.tsdb" in text("playbooks/" + name), name


def test_every_setting_the_roles_read_is_in_the_settings_role():
    unknown = set()
    for role in READERS:
        for path in role_files(role):
            unknown |= {"%s: %s" % (os.path.relpath(path, ROOT), v) for v in SETTING.findall(text(path))}
    assert sorted(u for u in unknown if u.split(": ")[1] not in tsdb_defaults()) == []


def test_setup_maps_nothing():
    (play,) = load("playbooks/setup.yml")
    for entry in play["roles"]:
        assert set(entry) <= {"role", "when"}, entry


def test_the_timer_roles_depend_on_the_settings_role():
    for role in READERS:
        deps = load("roles/%s/meta/main.yml" % role)["dependencies"]
        assert {"role": "insa.timescaledb_backup.tsdb"} in deps, role


def test_no_role_declares_a_shared_setting_of_its_own():
    """The roles' own options are only what is theirs alone: no default of a role duplicates a site
    setting (e.g. backup_agent_db_host next to tsdb_login_host)."""
    old = set(renamed()) | set(removed())
    for role in READERS + ["tsdb"]:
        defaults = set(load("roles/%s/defaults/main.yml" % role))
        options = set(load("roles/%s/meta/argument_specs.yml" % role)["argument_specs"]["main"]["options"])
        assert sorted((defaults | options) & old) == [], role


def test_every_old_name_has_a_new_name_that_exists():
    declared = set()
    for role in TIMER_ROLES + ["tsdb"]:
        declared |= set(load("roles/%s/defaults/main.yml" % role))
    assert sorted(new for new in renamed().values() if new not in declared) == []
    assert len(set(renamed().values())) == len(renamed()), "two old names for one new name"


def test_a_removed_name_says_what_to_do_instead():
    assert not set(removed()) & set(renamed())
    for name, advice in removed().items():
        assert len(advice.split()) >= 5, name
    tasks = text("roles/tsdb/tasks/main.yml")
    assert "__tsdb_removed" in tasks and "__tsdb_renamed" in tasks


def test_nothing_reads_an_old_name():
    old = re.compile(r"\b(%s)\b" % "|".join(list(renamed()) + list(removed())))
    paths = [os.path.join(ROOT, "playbooks", p) for p in PLAYBOOKS]
    for role in TIMER_ROLES + ["tsdb"]:
        paths += [p for p in role_files(role) if not p.endswith(os.path.join("tsdb", "vars", "main.yml"))]
    paths += glob.glob(os.path.join(ROOT, "inventories", "**", "*.yml"), recursive=True)
    paths += glob.glob(os.path.join(ROOT, "molecule", "**", "*.yml"), recursive=True)
    found = ["%s: %s" % (os.path.relpath(p, ROOT), m) for p in paths for m in old.findall(text(p))]
    assert found == []


def test_the_metrics_files_the_role_links_are_the_ones_the_runner_writes():
    files = load("roles/backup_agent/vars/main.yml")["__backup_agent_metrics_files"]
    expected = [os.path.basename(_metrics.run_file("/", t)) for t in _metrics.RUN_TYPES] + [_metrics.STATUS_FILE]
    assert sorted(files) == sorted(expected)
