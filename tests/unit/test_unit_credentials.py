"""Least privilege per unit (issue 12): every systemd unit reads only the secrets of its own job.

- tsdb-backup.service (pg_dump, upload): agent.env + credentials.env - the backup login's
  password and the Azure secrets;
- tsdb-history-*.service (chunk archive to Azure, retention's drop_chunks): agent.env +
  history-credentials.env + history.env - the Azure secrets and the history login
  (tsdb_history_login_user), else the backup login's password;
- tsdb-backup-drill.service (a restore of a local set, never Azure): agent.env +
  drill-credentials.env - the restore login (tsdb_restore_login_user), else the backup login's
  password.

The roles' real templates are rendered by ansible-playbook (the template lookup, on the control
node only) with the roles' defaults and vars, per site below; systemd's EnvironmentFile= order
(a later file wins) is applied to what each unit lists. The login recipe's memberships
(roles/backup_logins) are evaluated from its tasks file the same way. molecule/production checks
the same on real hosts."""

import os

import local_play
import pytest
import yaml
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = "/etc/tsdb-backup"
# What a play that applies the roles sees: their defaults and vars (role tsdb first).
ROLE_VARS = [
    "tsdb/defaults",
    "tsdb/vars",
    "backup_agent/defaults",
    "backup_agent/vars",
    "restore_drill/defaults",
    "history_guard/defaults",
    "history_guard/vars",
    "backup_logins/defaults",
]
TEMPLATES = {
    "agent.env": "backup_agent/templates/agent.env.j2",
    "credentials.env": "backup_agent/templates/credentials.env.j2",
    "tsdb-backup.service": "backup_agent/templates/tsdb-backup.service.j2",
    "history-credentials.env": "history_guard/templates/history-credentials.env.j2",
    "history.env": "history_guard/templates/history.env.j2",
    "tsdb-history.service": "history_guard/templates/tsdb-history.service.j2",
    "drill-credentials.env": "restore_drill/templates/drill-credentials.env.j2",
    "tsdb-backup-drill.service": "restore_drill/templates/tsdb-backup-drill.service.j2",
}
UNITS = ["tsdb-backup.service", "tsdb-history.service", "tsdb-backup-drill.service"]

# Secrets that differ from each other and need the env.j2 escaping.
BACKUP_PW = 'backup "pw" $HOME'
HISTORY_PW = "history-pw `id`"
RESTORE_PW = "restore-pw \\ end"
CONNECTION_STRING = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5LW9mLXRoZS1zaXRl;"
CLIENT_SECRET = "client-secret-7c1d"
AZURE = {"AZURE_STORAGE_CONNECTION_STRING": CONNECTION_STRING, "AZURE_CLIENT_SECRET": CLIENT_SECRET}
COMMON = {
    "tsdb_login_user": "tsdb_backup",
    "tsdb_login_password": BACKUP_PW,
    "tsdb_azure_connection_string": CONNECTION_STRING,
    "tsdb_azure_client_secret": CLIENT_SECRET,
    "tsdb_backup_databases": ["iot"],
    "backup_logins_owner_roles": ["iot_owner", "plant_owner"],
}
# Site name -> its settings.
SITES = {
    # One login for the backup and the history guard (the layout before issue 12).
    "one-login": {},
    # A login per job: the production layout (inventories/example).
    "apart": {
        "tsdb_history_login_user": "tsdb_history",
        "tsdb_history_login_password": HISTORY_PW,
        "tsdb_restore_login_user": "tsdb_restore",
        "tsdb_restore_login_password": RESTORE_PW,
    },
    # The history login named as the backup login: the backup login, with its own password.
    "same-name": {"tsdb_history_login_user": "tsdb_backup", "tsdb_history_login_password": HISTORY_PW},
    # A history login without a password (passfile or peer): the backup password is not handed on.
    "history-no-password": {"tsdb_history_login_user": "tsdb_history"},
}
# Sites the login recipe refuses (its check of the history login).
REFUSED = {
    "history-is-restore": {"tsdb_history_login_user": "tsdb_restore", "tsdb_restore_login_user": "tsdb_restore"},
    "history-is-owner": {"tsdb_history_login_user": "iot_owner"},
    "history-is-admin": {"tsdb_history_login_user": "postgres"},
}
# The login recipe's checks and grants, read from its tasks file.
LOGIN_TASKS = "roles/backup_logins/tasks/main.yml"


def load(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def role_defaults():
    merged = {}
    for folder in ROLE_VARS:
        merged.update(load(os.path.join("roles", folder, "main.yml")))
    return merged


def login_tasks():
    """The recipe's membership and login tasks: name -> {module, args, when}."""
    found = {}
    for task in load(LOGIN_TASKS):
        for inner in task.get("block", [task]):
            for module in ("community.postgresql.postgresql_membership", "community.postgresql.postgresql_user"):
                if module in inner:
                    when = inner.get("when", [])
                    found[inner["name"]] = {
                        "module": module.rsplit(".", 1)[1],
                        "args": inner[module],
                        "when": [when] if isinstance(when, str) else when,
                    }
    return found


def history_checks():
    """The `that` conditions of the recipe's check of the history login, and its `when`."""
    (task,) = [t for t in load(LOGIN_TASKS) if t.get("name") == "Check the history login's settings"]
    return task["ansible.builtin.assert"]["that"], task["when"]


def expression(condition):
    return "{{ (%s) | bool }}" % condition


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """site -> {"files": {name: text}, "logins": {task: {...}}, "history_check": bool}."""
    tmp = tmp_path_factory.mktemp("unit-credentials")
    hosts = {}
    for site, settings in dict(SITES, **REFUSED).items():
        hosts[site] = dict(COMMON, **settings)
        hosts[site].update(ansible_connection="local", job={"command": "retention", "what": "retention"})
    inventory = {"all": {"vars": role_defaults(), "hosts": hosts}}
    that, when = history_checks()
    logins = {
        name: {
            "runs": expression(" and ".join("(%s)" % w for w in task["when"]) or "true"),
            "module": task["module"],
            "who": task["args"].get("target_roles", [task["args"].get("name")]),
            "groups": task["args"].get("groups", []),
            "flags": task["args"].get("role_attr_flags", ""),
        }
        for name, task in login_tasks().items()
    }
    play = {
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Render",
                "ansible.builtin.set_fact": {
                    "rendered_files": {
                        name: "{{ lookup('ansible.builtin.template', '%s') }}" % os.path.join(ROOT, "roles", src)
                        for name, src in TEMPLATES.items()
                    },
                    "rendered_logins": logins,
                    "rendered_history_check": {
                        "runs": expression(when),
                        "passes": expression(" and ".join("(%s)" % c for c in that)),
                    },
                },
            }
        ],
    }
    out = {}
    for site, result in local_play.run_one_task(tmp, inventory, play).items():
        facts = result["ansible_facts"]
        out[site] = {
            "files": facts["rendered_files"],
            "logins": facts["rendered_logins"],
            "history_check": facts["rendered_history_check"],
        }
    return out


def env_of(text, tmp_path, name):
    """An environment file as the runner reads it (_runner_config.read_env_file)."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return _runner_config.read_env_file(str(path))


def environment_files(unit_text):
    return [line.split("=", 1)[1] for line in unit_text.splitlines() if line.startswith("EnvironmentFile=")]


def unit_environment(files, unit, tmp_path):
    """What the unit's process gets: its EnvironmentFile= in order, a later one winning."""
    env = {}
    for path in environment_files(files[unit]):
        name = os.path.basename(path)
        env.update(env_of(files[name], tmp_path, name))
    return env


def secrets_seen(files, unit, tmp_path):
    """The secret values in every file the unit reads."""
    seen = set()
    for path in environment_files(files[unit]):
        values = env_of(files[os.path.basename(path)], tmp_path, os.path.basename(path)).values()
        seen |= {v for v in values if v in (BACKUP_PW, HISTORY_PW, RESTORE_PW, CONNECTION_STRING, CLIENT_SECRET)}
    return seen


# --- Which files each unit reads ------------------------------------------------------------------


@pytest.mark.parametrize("site", sorted(SITES))
def test_each_unit_reads_its_own_credentials_file_and_no_other(rendered, site):
    files = rendered[site]["files"]
    assert environment_files(files["tsdb-backup.service"]) == [
        CONFIG_DIR + "/agent.env",
        CONFIG_DIR + "/credentials.env",
    ]
    assert environment_files(files["tsdb-history.service"]) == [
        CONFIG_DIR + "/agent.env",
        CONFIG_DIR + "/history-credentials.env",
        CONFIG_DIR + "/history.env",
    ]
    assert environment_files(files["tsdb-backup-drill.service"]) == [
        CONFIG_DIR + "/agent.env",
        CONFIG_DIR + "/drill-credentials.env",
    ]


@pytest.mark.parametrize("site", sorted(SITES))
def test_agent_env_and_history_env_hold_no_secret(rendered, site, tmp_path):
    for name in ("agent.env", "history.env"):
        values = env_of(rendered[site]["files"][name], tmp_path, name).values()
        assert not {v for v in values if v in (BACKUP_PW, HISTORY_PW, RESTORE_PW, CONNECTION_STRING, CLIENT_SECRET)}


# --- What each unit logs in as, and which secrets it sees -----------------------------------------


def test_one_login_every_unit_logs_in_as_the_backup_login(rendered, tmp_path):
    files = rendered["one-login"]["files"]
    for unit in UNITS:
        env = unit_environment(files, unit, tmp_path)
        assert (env["PGUSER"], env["PGPASSWORD"]) == ("tsdb_backup", BACKUP_PW), unit
    assert secrets_seen(files, "tsdb-backup.service", tmp_path) == {BACKUP_PW, CONNECTION_STRING, CLIENT_SECRET}
    assert secrets_seen(files, "tsdb-history.service", tmp_path) == {BACKUP_PW, CONNECTION_STRING, CLIENT_SECRET}
    # The drill never reaches Azure: no Azure secret.
    assert secrets_seen(files, "tsdb-backup-drill.service", tmp_path) == {BACKUP_PW}


def test_a_login_per_job_each_unit_sees_only_its_own(rendered, tmp_path):
    files = rendered["apart"]["files"]
    expected = {
        "tsdb-backup.service": ("tsdb_backup", BACKUP_PW, {BACKUP_PW, CONNECTION_STRING, CLIENT_SECRET}),
        "tsdb-history.service": ("tsdb_history", HISTORY_PW, {HISTORY_PW, CONNECTION_STRING, CLIENT_SECRET}),
        "tsdb-backup-drill.service": ("tsdb_restore", RESTORE_PW, {RESTORE_PW}),
    }
    for unit, (login, password, secrets) in expected.items():
        env = unit_environment(files, unit, tmp_path)
        assert (env["PGUSER"], env["PGPASSWORD"]) == (login, password), unit
        assert secrets_seen(files, unit, tmp_path) == secrets, unit
    # The nightly backup's file never holds the other logins, not even their names.
    credentials = files["credentials.env"]
    for other in (HISTORY_PW, RESTORE_PW, "tsdb_history", "tsdb_restore"):
        assert other not in credentials


def test_a_history_login_named_as_the_backup_login_is_the_backup_login(rendered, tmp_path):
    files = rendered["same-name"]["files"]
    env = unit_environment(files, "tsdb-history.service", tmp_path)
    assert (env["PGUSER"], env["PGPASSWORD"]) == ("tsdb_backup", BACKUP_PW)
    assert "PGUSER" not in env_of(files["history-credentials.env"], tmp_path, "history-credentials.env")


def test_a_history_login_without_password_gets_no_other_password(rendered, tmp_path):
    files = rendered["history-no-password"]["files"]
    env = unit_environment(files, "tsdb-history.service", tmp_path)
    assert env["PGUSER"] == "tsdb_history"
    assert "PGPASSWORD" not in env
    assert secrets_seen(files, "tsdb-history.service", tmp_path) == {CONNECTION_STRING, CLIENT_SECRET}


@pytest.mark.parametrize("site", sorted(SITES))
def test_the_credential_files_read_back_exactly_through_the_escaping(rendered, site, tmp_path):
    files = rendered[site]["files"]
    for name in ("credentials.env", "history-credentials.env"):
        env = env_of(files[name], tmp_path, name)
        assert {k: env[k] for k in AZURE} == AZURE, name
    assert env_of(files["credentials.env"], tmp_path, "c")["PGPASSWORD"] == BACKUP_PW


# --- The login recipe: who gets the owner roles -------------------------------------------------


def grants(rendered, site):
    """{login: set of roles granted} and {login: flags} of the recipe's tasks that run."""
    granted, flags = {}, {}
    for task in rendered[site]["logins"].values():
        if not task["runs"]:
            continue
        for who in task["who"]:
            if task["module"] == "postgresql_membership":
                granted.setdefault(who, set()).update(task["groups"])
            else:
                flags[who] = task["flags"]
    return granted, flags


def test_without_a_history_login_the_backup_login_keeps_the_owner_roles(rendered):
    for site in ("one-login", "same-name"):
        granted, flags = grants(rendered, site)
        assert granted == {"tsdb_backup": {"pg_read_all_data", "iot_owner", "plant_owner"}}, site
        assert sorted(flags) == ["tsdb_backup"], site


@pytest.mark.parametrize("site", ["apart", "history-no-password"])
def test_with_a_history_login_only_it_gets_the_owner_roles(rendered, site):
    granted, flags = grants(rendered, site)
    assert granted == {
        "tsdb_backup": {"pg_read_all_data"},
        "tsdb_history": {"pg_read_all_data", "iot_owner", "plant_owner"},
    }
    for login in ("tsdb_backup", "tsdb_history"):
        assert flags[login].split(",") == [
            "LOGIN",
            "INHERIT",
            "NOSUPERUSER",
            "NOCREATEDB",
            "NOCREATEROLE",
            "NOREPLICATION",
            "NOBYPASSRLS",
        ], login
    if site == "apart":
        assert flags["tsdb_restore"] == "LOGIN,SUPERUSER"


def test_the_recipe_checks_the_history_login_only_when_there_is_one(rendered):
    assert rendered["apart"]["history_check"] == {"runs": True, "passes": True}
    assert rendered["one-login"]["history_check"]["runs"] is False
    assert rendered["same-name"]["history_check"]["runs"] is False


@pytest.mark.parametrize("site", sorted(REFUSED))
def test_the_recipe_refuses_a_history_login_that_is_not_one_of_its_own(rendered, site):
    assert rendered[site]["history_check"] == {"runs": True, "passes": False}


def test_the_recipe_never_revokes():
    text = open(os.path.join(ROOT, LOGIN_TASKS), encoding="utf-8").read()
    assert "state: absent" not in text
    for task in login_tasks().values():
        assert task["args"].get("state", "present") == "present"
