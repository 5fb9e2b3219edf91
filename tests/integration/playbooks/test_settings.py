"""One set of settings, tested on the local inventory: what the timer reads (the agent's
settings files that setup.yml renders) equals what backup.yml passes to the agent's pipeline
(auth mode, account, container, prefix, compression, verify level, rotation, databases,
connection) and what the history timers read equals the inventory's retention."""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402

# agent.env key -> agent_run option
SAME = {
    "TSDB_BACKUP_AZURE_AUTH_MODE": "auth_mode",
    "AZURE_STORAGE_CONTAINER": "container",
    "TSDB_BACKUP_AZURE_PREFIX": "prefix",
    "TSDB_BACKUP_COMPRESSION": "compression",
    "TSDB_BACKUP_VERIFY_LEVEL": "verify_level",
    "TSDB_BACKUP_KEEP_DAYS": "keep_days",
    "TSDB_BACKUP_KEEP_LAST": "keep_last",
    "TSDB_BACKUP_DIR": "backup_dir",
    "TSDB_BACKUP_HOST_LABEL": "host_label",
    "PGHOST": "login_host",
    "PGPORT": "port",
    "PGUSER": "login_user",
}


def env_file(c, path):
    values = {}
    for line in rig.sh(c, "cat %s" % path).splitlines():
        m = re.match(r'^([A-Z_]+)="(.*)"$', line)
        if m:
            values[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
    return values


def module_args(out, task_prefix):
    for play in json.loads(out)["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].startswith(task_prefix):
                return task["hosts"]["tsdb-local"]["invocation"]["module_args"]
    raise AssertionError("no task %r in the run" % task_prefix)


def test_the_timer_and_the_playbook_read_the_same_settings(agent_host):
    c = agent_host
    rc, out = rig.playbook("setup.yml", {})
    assert rc == 0, out[-3000:]
    agent = env_file(c, "/etc/tsdb-backup/agent.env")
    json_out = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
    rc, out = rig.playbook("backup.yml", {}, options=["--check"], environ=json_out)
    args = module_args(out[: out.rindex("}") + 1], "Back up ")
    for key, option in SAME.items():
        assert str(args[option]).lower() == agent[key].lower(), (key, agent[key], option, args[option])
    assert args["databases"] == json.loads(agent["TSDB_BACKUP_DATABASES"])
    assert str(args["upload"]).lower() == agent["TSDB_BACKUP_UPLOAD"]
    assert str(args["create_container"]).lower() == agent["TSDB_BACKUP_AZURE_CREATE_CONTAINER"]
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
    assert json.loads(history["TSDB_HISTORY_RETENTION"]) == inventory["tsdb_history_retention"]
    assert history["TSDB_HISTORY_DATABASE"] == inventory["tsdb_history_database"]
