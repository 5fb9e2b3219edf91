"""The metrics directory is not writable by the backup user beyond its own files (issue 12).

roles/backup_agent/tasks/metrics.yml, by default: the runner writes into a directory of its own
(backup_agent_metrics_write_dir, the backup user's, holding only its files), and node_exporter's
textfile directory keeps its package's owner and mode (root, 0755) with a root-owned symlink per
file. With backup_agent_metrics_write_dir equal to node_exporter's directory, that directory is
root's, group-writable for the backup group and sticky (1775): the backup user creates and
replaces its own files, and can neither delete nor replace node_exporter's others.

The role's owner and mode are evaluated from its tasks file by ansible-playbook; the kernel's
answer to each layout is asked by running the runner's own atomic write (_metrics.atomic_write)
as an unprivileged user (nobody) - as root only, skipped otherwise. molecule/production checks
the default layout on real hosts."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import local_play
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = "Create the directory the runner writes its metrics to"
NOBODY = 65534


def write_dir_task():
    with open(os.path.join(ROOT, "roles", "backup_agent", "tasks", "metrics.yml"), encoding="utf-8") as f:
        tasks = yaml.safe_load(f)
    (publish,) = [t for t in tasks if "block" in t]
    (task,) = [t for t in publish["block"] if t["name"] == TASK]
    return task


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """{"apart": {owner, group, mode}, "shared": {...}} as the role's task computes them."""
    tmp = tmp_path_factory.mktemp("metrics-dir")
    task = write_dir_task()
    common = {"ansible_connection": "local", "tsdb_backup_user": "tsdb-backup", "backup_agent_group": "tsdb-backup"}
    hosts = {
        "apart": dict(
            common,
            __backup_agent_textfile_dir="/var/lib/prometheus/node-exporter",
            __backup_agent_write_dir="/var/lib/tsdb-backup-metrics",
        ),
        "shared": dict(
            common,
            __backup_agent_textfile_dir="/var/lib/prometheus/node-exporter",
            __backup_agent_write_dir="/var/lib/prometheus/node-exporter",
        ),
    }
    args = task["ansible.builtin.file"]
    play = {
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Evaluate",
                "vars": task.get("vars", {}),
                "ansible.builtin.set_fact": {"layout": {k: args[k] for k in ("owner", "group", "mode")}},
            }
        ],
    }
    results = local_play.run_one_task(tmp, {"all": {"hosts": hosts}}, play)
    return {h: r["ansible_facts"]["layout"] for h, r in results.items()}


def test_its_own_directory_is_the_backup_users(layouts):
    assert layouts["apart"] == {"owner": "tsdb-backup", "group": "tsdb-backup", "mode": "0755"}


def test_node_exporters_directory_stays_roots_and_becomes_sticky(layouts):
    assert layouts["shared"] == {"owner": "root", "group": "tsdb-backup", "mode": "1775"}


# --- What the kernel lets the backup user do in each layout -------------------------------------

# Run as nobody: the runner's atomic write of its own file (twice: create, then replace), then
# what it must not be able to do to node_exporter's file. Prints one JSON object.
PROBE = r"""
import json, os, sys
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _metrics
folder, foreign = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, action):
    try:
        action()
        out[name] = "ok"
    except OSError as e:
        out[name] = e.__class__.__name__
own = os.path.join(folder, "tsdb_backup_status.prom")
attempt("write own", lambda: _metrics.atomic_write(own, b"a 1\n"))
attempt("replace own", lambda: _metrics.atomic_write(own, b"a 2\n"))
attempt("replace foreign", lambda: _metrics.atomic_write(foreign, b"x 1\n"))
attempt("delete foreign", lambda: os.unlink(foreign))
attempt("truncate foreign", lambda: open(foreign, "wb").close())
attempt("rename foreign", lambda: os.rename(foreign, foreign + ".old"))
out["own"] = open(own).read() if os.path.exists(own) else None
print(json.dumps(out))
"""


def as_nobody(argv, **kwargs):
    return subprocess.run(
        argv,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def interpreter():
    """A Python that nobody may run (this one may live under root's home)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            if as_nobody([candidate, "-c", "pass"]).returncode == 0:
                return candidate
        except OSError:
            continue
    pytest.skip("no Python interpreter that nobody may run")


def probe(folder, foreign):
    proc = as_nobody(
        [interpreter(), "-c", PROBE, folder, foreign],
        env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "collections")),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def scratch():
    if os.geteuid() != 0:
        pytest.skip("needs root: the probe runs as nobody")
    top = tempfile.mkdtemp(prefix="metrics-dir-")
    os.chmod(top, 0o755)  # noqa: S103 - nobody must reach the directories inside
    try:
        yield top
    finally:
        shutil.rmtree(top)


def directory(top, name, uid, gid, mode):
    path = os.path.join(top, name)
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    foreign = os.path.join(path, "node_other.prom")  # another collector's file, root's
    with open(foreign, "w") as f:
        f.write("node_other 1\n")
    os.chmod(foreign, 0o644)
    return path, foreign


REFUSED = {
    "replace foreign": "PermissionError",
    "delete foreign": "PermissionError",
    "truncate foreign": "PermissionError",
    "rename foreign": "PermissionError",
}


def test_the_shared_layout_lets_the_backup_user_replace_only_its_own_files(scratch, layouts):
    mode = int(layouts["shared"]["mode"], 8)
    path, foreign = directory(scratch, "node-exporter", 0, NOBODY, mode)  # root:<backup group> 1775
    got = probe(path, foreign)
    assert got == dict(REFUSED, **{"write own": "ok", "replace own": "ok", "own": "a 2\n"})
    assert open(foreign).read() == "node_other 1\n"


def test_node_exporters_directory_as_its_package_leaves_it_is_closed_to_the_backup_user(scratch):
    path, foreign = directory(scratch, "node-exporter", 0, 0, 0o755)  # root:root 0755, the default layout
    got = probe(path, foreign)
    assert got == dict(REFUSED, **{"write own": "PermissionError", "replace own": "PermissionError", "own": None})
    assert open(foreign).read() == "node_other 1\n"


def test_without_the_sticky_bit_the_shared_layout_would_not_hold(scratch):
    """Why 1775 and not 0775: group write alone lets the backup user delete another's file."""
    path, foreign = directory(scratch, "node-exporter", 0, NOBODY, 0o775)
    assert probe(path, foreign)["delete foreign"] == "ok"
