"""One set of settings, tested on both inventories: what the timers read (the agent's settings
files that setup.yml renders) equals what backup.yml and drill.yml pass to the agent's pipeline,
for every shared setting - the connection (host, port, login, maintenance database, sslmode,
passfile, password), Azure (auth mode, account, endpoint, container, prefix, tenant and client
id, every secret), what and where (databases, directory, host label, compression, verification,
rotation, upload, drill workers), the backup user and the venv's interpreter.

inventories/local runs as it is. inventories/example (the production template: db01-db03, Entra
ID, ansible_user deploy) runs against the same rig container, with only db01's connection
overridden (by a second inventory source), the database check, the login recipe and the
lifecycle policy off (its login and owner role do not exist on the rig, nor does Azure Resource
Manager; molecule/production runs those), plus a service
principal and a non-default sslmode and maintenance database, so that every setting has a value
a wrong path would miss. Afterwards setup.yml on the local inventory puts the container back
into the state the other tests expect."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402

AGENT_ENV = "/etc/tsdb-backup/agent.env"
CREDENTIALS = "/etc/tsdb-backup/credentials.env"
# Read by the drill unit after agent.env, instead of credentials.env: the restore login
# (tsdb_restore_login_user), else the backup login's password.
DRILL_CREDENTIALS = "/etc/tsdb-backup/drill-credentials.env"
# Read by the history units after agent.env, instead of credentials.env: the Azure secrets and the
# history login (tsdb_history_login_user), else the backup login's password.
HISTORY_CREDENTIALS = "/etc/tsdb-backup/history-credentials.env"
# agent.env key -> agent_run option of backup.yml. A key that is absent in the file must be an
# option the playbook leaves unset (None), and the other way round.
SAME = {
    "PGHOST": "login_host",
    "PGPORT": "port",
    "PGUSER": "login_user",
    "PGDATABASE": "maintenance_db",
    "PGSSLMODE": "sslmode",
    "PGPASSFILE": "passfile",
    "TSDB_BACKUP_AZURE_AUTH_MODE": "auth_mode",
    "AZURE_STORAGE_ACCOUNT": "account_name",
    "AZURE_STORAGE_BLOB_ENDPOINT": "account_url",
    "AZURE_STORAGE_CONTAINER": "container",
    "TSDB_BACKUP_AZURE_PREFIX": "prefix",
    "AZURE_TENANT_ID": "tenant_id",
    "AZURE_CLIENT_ID": "client_id",
    "TSDB_BACKUP_DIR": "backup_dir",
    "TSDB_BACKUP_HOST_LABEL": "host_label",
    "TSDB_BACKUP_COMPRESSION": "compression",
    "TSDB_BACKUP_DUMP_JOBS": "dump_jobs",
    "TSDB_BACKUP_VERIFY_LEVEL": "verify_level",
    "TSDB_BACKUP_KEEP_DAYS": "keep_days",
    "TSDB_BACKUP_KEEP_LAST": "keep_last",
    "TSDB_BACKUP_UPLOAD": "upload",
    "TSDB_BACKUP_AZURE_CREATE_CONTAINER": "create_container",
    "TSDB_BACKUP_SIGNING_KEY_FILE": "signing_key_file",
    "TSDB_BACKUP_TRUSTED_SIGNERS_FILE": "trusted_signers_file",
    "TSDB_BACKUP_LOCK_WAIT_MINUTES": "lock_wait_minutes",
}
# credentials.env key -> option: the module shows a secret only as no_log's mask, so both sides
# must agree on whether it is set.
SECRETS = {
    "PGPASSWORD": "login_password",
    "AZURE_STORAGE_CONNECTION_STRING": "connection_string",
    "AZURE_STORAGE_KEY": "account_key",
    "AZURE_STORAGE_SAS_TOKEN": "sas_token",
    "AZURE_CLIENT_SECRET": "client_secret",
}
# agent.env key (overridden by drill-credentials.env) -> agent_run option of drill.yml (job drill).
SAME_DRILL = {
    "PGHOST": "login_host",
    "PGPORT": "port",
    "PGUSER": "login_user",
    "PGDATABASE": "maintenance_db",
    "PGSSLMODE": "sslmode",
    "TSDB_BACKUP_DIR": "backup_dir",
    "TSDB_BACKUP_HOST_LABEL": "host_label",
    "TSDB_BACKUP_DRILL_JOBS": "jobs",
    "TSDB_BACKUP_SIGNING_KEY_FILE": "signing_key_file",
    "TSDB_BACKUP_TRUSTED_SIGNERS_FILE": "trusted_signers_file",
}
DEFAULTS = yaml.safe_load(open(os.path.join(rig.REPO, "roles", "tsdb", "defaults", "main.yml"), encoding="utf-8"))
JSON_OUT = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}

EXAMPLE_HOST = "db01.iot.example.com"
# A public key only (its identity was thrown away): what the local test encrypts to.
RECIPIENT = "age10ur2f7fjpvxdewy438445jvvgpsz2x2cgqvzuwph5vtyc6gcjatsqt7kv0"
# A service principal (placeholders: nothing reaches Azure in --check), and values other than the
# modules' defaults and the inventory name, so that a playbook or a role that does not pass a
# setting on (and falls back to a default) fails the comparison.
EXAMPLE_SITE = {
    "tsdb_azure_tenant_id": "11111111-2222-3333-4444-555555555555",
    "tsdb_azure_client_id": "66666666-7777-8888-9999-000000000000",
    "tsdb_azure_client_secret": "it-settings-client-secret-5e1f",
    "tsdb_azure_account_url": "https://insaiotbackups.blob.core.windows.net",
    "tsdb_azure_prefix": "it-example",
    "tsdb_azure_create_container": True,
    "tsdb_sslmode": "require",
    "tsdb_login_db": "iot",
    "tsdb_login_host": "localhost",
    "tsdb_passfile": "/etc/tsdb-backup/pgpass",
    "tsdb_backup_host_label": "db01",
    "tsdb_backup_compression": "lz4",
    "tsdb_backup_dump_jobs": 2,
    "tsdb_backup_verify_level": "checksum",
    "tsdb_backup_keep_days": 5,
    "tsdb_backup_keep_last": 2,
    "tsdb_drill_jobs": 2,
    "tsdb_backup_lock_wait_minutes": 45,
}


def example_inventory(container, tmp_path):
    """The example inventory, with db01 reached as the rig container: a second inventory source
    gives db01 the connection (host vars, so they beat the example's group_vars and leave
    localhost, where the role packs the engine, alone)."""
    overlay = tmp_path / "rig-connection.yml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        EXAMPLE_HOST: {
                            "ansible_connection": "community.docker.docker",
                            "ansible_host": container,
                            "ansible_user": "root",
                        }
                    }
                }
            }
        )
    )
    return ("inventories/example", str(overlay))


# Not site settings: the example's login and its owner role do not exist on the rig (no database
# check, no login recipe), nor does Azure Resource Manager (no lifecycle policy), and pip installs
# from the rig's wheelhouse.
EXAMPLE_RIG = {
    "backup_agent_db_check": False,
    "backup_logins_enabled": False,
    "azure_lifecycle_account_name": "",
    "backup_agent_pip_extra_args": ["--no-index", "--find-links", "/opt/tsdb-wheelhouse"],
}


def env_file(c, path):
    values = {}
    for line in rig.sh(c, "cat %s" % path).splitlines():
        m = re.match(r'^([A-Z_]+)="(.*)"$', line)
        if m:
            values[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
    return values


def module_args(out, task_prefix, host):
    record = json.loads(out[: out.rindex("}") + 1])
    for play in record["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].startswith(task_prefix) and host in task["hosts"]:
                return task["hosts"][host]["invocation"]["module_args"]
    raise AssertionError("no task %r on %s in the run:\n%s" % (task_prefix, host, out[-3000:]))


def normal(value):
    """One spelling for both sides: None for unset, lower-case text otherwise."""
    return None if value is None else str(value).lower()


def differences(agent, credentials, backup, drill, drill_credentials):
    bad = []
    for key, option in SAME.items():
        if normal(agent.get(key)) != normal(backup[option]):
            bad.append("%s=%r but backup.yml %s=%r" % (key, agent.get(key), option, backup[option]))
    if json.loads(agent["TSDB_BACKUP_DATABASES"]) != backup["databases"]:
        bad.append("TSDB_BACKUP_DATABASES=%s but databases=%s" % (agent["TSDB_BACKUP_DATABASES"], backup["databases"]))
    # no_log: the module shows each recipient only as the mask; both sides must name as many.
    recipients = json.loads(agent.get("TSDB_BACKUP_ENCRYPTION_RECIPIENTS") or "null")
    if recipients is None or len(recipients) != len(backup["encryption_recipients"]):
        bad.append(
            "TSDB_BACKUP_ENCRYPTION_RECIPIENTS=%s but encryption_recipients=%s"
            % (recipients, backup["encryption_recipients"])
        )
    for key, option in SECRETS.items():
        if (key in credentials) != (backup[option] is not None):
            bad.append(
                "%s %s credentials.env but backup.yml %s is %s"
                % (key, "in" if key in credentials else "not in", option, "set" if backup[option] else "unset")
            )
    drill_env = dict(agent, **drill_credentials)
    for key, option in SAME_DRILL.items():
        if normal(drill_env.get(key)) != normal(drill[option]):
            bad.append("%s=%r but drill.yml %s=%r" % (key, drill_env.get(key), option, drill[option]))
    if ("PGPASSWORD" in drill_credentials) != (drill["login_password"] is not None):
        bad.append("the drill unit's password and drill.yml's login_password disagree on being set")
    if json.loads(agent["TSDB_BACKUP_DATABASES"]) != drill["databases"]:
        bad.append(
            "TSDB_BACKUP_DATABASES=%s but drill.yml databases=%s" % (agent["TSDB_BACKUP_DATABASES"], drill["databases"])
        )
    return bad


def timer_and_playbooks(c, inventory, host, extra):
    """setup.yml, then backup.yml and drill.yml in --check: the timer's files and the modules' arguments."""
    options = ["--limit", host]
    rc, out = rig.playbook("setup.yml", extra, options=options, inventory=inventory)
    assert rc == 0, out[-3000:]
    agent, credentials = env_file(c, AGENT_ENV), env_file(c, CREDENTIALS)
    drill_credentials = env_file(c, DRILL_CREDENTIALS)
    unit = rig.sh(c, "cat /etc/systemd/system/tsdb-backup.service")
    _rc, out = rig.playbook("backup.yml", extra, options=options + ["--check"], environ=JSON_OUT, inventory=inventory)
    backup = module_args(out, "Back up ", host)
    _rc, out = rig.playbook("drill.yml", extra, options=options + ["--check"], environ=JSON_OUT, inventory=inventory)
    drill = module_args(out, "Restore the newest", host)
    return agent, credentials, drill_credentials, unit, backup, drill


def check_user_and_interpreter(unit, user):
    """The timer runs as the playbooks' become_user, with the playbooks' interpreter."""
    assert "\nUser=%s\n" % user in unit, unit
    assert "\nExecStart=%s " % DEFAULTS["tsdb_backup_python"] in unit, unit


@pytest.fixture
def local_host(agent_host):
    """The rig container with the local inventory and an encryption recipient; afterwards the local
    inventory's settings again (setup.yml), whatever the test did."""
    yield agent_host
    rc, out = rig.playbook("setup.yml", {})
    assert rc == 0, "restoring the local inventory's settings failed:\n" + out[-3000:]
    assert env_file(agent_host, AGENT_ENV)["TSDB_BACKUP_ENCRYPTION_RECIPIENTS"] == "[]"


def test_the_timer_and_the_playbooks_read_the_same_settings_local(local_host):
    c = local_host
    agent, credentials, drill_credentials, unit, backup, drill = timer_and_playbooks(
        c, ("inventories/local",), "tsdb-local", {"tsdb_backup_encryption_recipients": [RECIPIENT]}
    )
    assert differences(agent, credentials, backup, drill, drill_credentials) == []
    assert json.loads(agent["TSDB_BACKUP_ENCRYPTION_RECIPIENTS"]) == [RECIPIENT]
    assert backup["encryption_recipients"] == ["VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"]  # never shown
    # inventories/local sets no restore login and no history login: the drill's file holds the
    # backup login's password alone, the history units' the same secrets as the nightly unit's.
    assert drill_credentials == {"PGPASSWORD": credentials["PGPASSWORD"]}
    assert env_file(c, HISTORY_CREDENTIALS) == credentials
    # And they are the inventory's values.
    assert (agent["PGUSER"], agent["TSDB_BACKUP_HOST_LABEL"], agent["TSDB_BACKUP_AZURE_AUTH_MODE"]) == (
        "postgres",
        "tsdb-local",
        "connection_string",
    )
    assert "PGPASSWORD" in credentials and "AZURE_STORAGE_CONNECTION_STRING" in credentials
    check_user_and_interpreter(unit, DEFAULTS["tsdb_backup_user"])
    inventory = json.loads(
        subprocess.run(
            [
                os.path.join(rig.REPO, ".venv", "bin", "ansible-inventory"),
                "-i",
                "inventories/local",
                "--host",
                "tsdb-local",
            ],
            cwd=rig.REPO,
            env=dict(os.environ, **rig.load_env()),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    history = env_file(c, "/etc/tsdb-backup/history.env")
    assert json.loads(history["TSDB_HISTORY_RETENTION"]) == inventory["history_guard_retention"]
    assert history["TSDB_HISTORY_DATABASE"] == inventory["history_guard_database"]
    assert history["TSDB_HISTORY_LEGACY_OWNER"] == inventory.get("history_guard_legacy_owner", "")


@pytest.fixture
def example_host(agent_host):
    """The rig container as db01 of the example inventory; afterwards the local inventory's
    settings again (setup.yml), whatever the test did."""
    yield agent_host
    rc, out = rig.playbook("setup.yml", {})
    assert rc == 0, "restoring the local inventory's settings failed:\n" + out[-3000:]
    assert env_file(agent_host, AGENT_ENV)["TSDB_BACKUP_HOST_LABEL"] == "tsdb-local"


def test_the_timer_and_the_playbooks_read_the_same_settings_example(example_host, tmp_path):
    c = example_host
    extra = dict(EXAMPLE_RIG, **EXAMPLE_SITE)
    agent, credentials, drill_credentials, unit, backup, drill = timer_and_playbooks(
        c, example_inventory(c, tmp_path), EXAMPLE_HOST, extra
    )
    assert differences(agent, credentials, backup, drill, drill_credentials) == []
    # The drill logs in as the example's restore login, the backups as its least-privilege one.
    assert (drill_credentials["PGUSER"], drill["login_user"], backup["login_user"]) == (
        "tsdb_restore",
        "tsdb_restore",
        "tsdb_backup",
    )
    assert drill_credentials["PGPASSWORD"] == "change-me-too"  # vault.yml's placeholder
    # The history units log in as the example's history login; no unit sees another's login.
    history_credentials = env_file(c, HISTORY_CREDENTIALS)
    assert (history_credentials["PGUSER"], history_credentials["PGPASSWORD"]) == ("tsdb_history", "change-me-three")
    assert history_credentials["AZURE_CLIENT_SECRET"] == EXAMPLE_SITE["tsdb_azure_client_secret"]
    assert "PGUSER" not in credentials and "change-me-three" not in credentials.values()
    assert "change-me-too" not in credentials.values() and "AZURE_CLIENT_SECRET" not in drill_credentials
    # And they are the example inventory's values (and the service principal given above).
    assert {k: agent.get(k) for k in ("PGUSER", "PGPORT", "PGDATABASE", "PGSSLMODE", "TSDB_BACKUP_HOST_LABEL")} == {
        "PGUSER": "tsdb_backup",
        "PGPORT": "5432",
        "PGDATABASE": "iot",
        "PGSSLMODE": "require",
        "TSDB_BACKUP_HOST_LABEL": "db01",
    }
    assert {k: agent.get(k) for k in ("TSDB_BACKUP_AZURE_AUTH_MODE", "AZURE_STORAGE_ACCOUNT", "AZURE_TENANT_ID")} == {
        "TSDB_BACKUP_AZURE_AUTH_MODE": "entra",
        "AZURE_STORAGE_ACCOUNT": "insaiotbackups",
        "AZURE_TENANT_ID": EXAMPLE_SITE["tsdb_azure_tenant_id"],
    }
    assert agent["AZURE_CLIENT_ID"] == backup["client_id"] == EXAMPLE_SITE["tsdb_azure_client_id"]
    assert credentials["AZURE_CLIENT_SECRET"] == EXAMPLE_SITE["tsdb_azure_client_secret"]
    assert credentials["PGPASSWORD"] == "change-me"  # vault.yml's placeholder
    check_user_and_interpreter(unit, "tsdb-backup")
