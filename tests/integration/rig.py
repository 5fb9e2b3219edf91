"""Helpers for integration tests against the rig (make env-up): run the collection's
modules through Ansible on the TimescaleDB container, look at the container's files, and
query PostgreSQL directly to assert real state."""

import json
import os
import shlex
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# RIG_ENV_FILE: another rig instance's env.sh (the fault suite runs its own, tests/rig/faults-rig.sh).
ENV_FILE = os.environ.get("RIG_ENV_FILE") or os.path.join(REPO, ".local", "env.sh")
# Tests keep their sets in a container of their own: the demo's (tsdb-backups, what `make demo`
# lists) shows only the demo's data however many test runs came before.
TEST_CONTAINER = "it-tests"
DOCKER = "/usr/bin/docker"


def load_env():
    """The variables .local/env.sh exports (tests do not depend on a sourced shell)."""
    if not os.path.exists(ENV_FILE):
        raise RuntimeError("%s is missing: run `make env-up` first" % ENV_FILE)
    env = {}
    with open(ENV_FILE) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export ") :].split("=", 1)
                env[key] = shlex.split(value)[0] if value else ""
    env["AZURE_STORAGE_CONTAINER"] = TEST_CONTAINER
    return env


def ansible_module(module, args, check=False, host="tsdb-local", extra_env=None, python=None):
    """Runs insa.timescaledb_backup.<module> once on host; returns the module's result dict.
    ``python``: the interpreter on the host (the agent's venv; an extra var beats the inventory's)."""
    env = dict(os.environ)
    env.update(load_env())
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
    )
    env.update(extra_env or {})
    argv = [
        os.path.join(REPO, ".venv", "bin", "ansible"),
        host,
        "-i",
        os.path.join(REPO, "inventories", "local"),
        "-m",
        module if "." in module else "insa.timescaledb_backup." + module,
        "-a",
        json.dumps(args),
    ]
    if python:
        argv += ["-e", "ansible_python_interpreter=%s" % python]
    if check:
        argv.append("--check")
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    try:
        out = json.loads(proc.stdout)
        return out["plays"][0]["tasks"][0]["hosts"][host]
    except (ValueError, KeyError, IndexError):
        msg = "ansible produced no result (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)
        raise AssertionError(msg) from None


def playbook(name, extra, timeout=900, options=(), environ=None, inventory=("inventories/local",)):
    """Runs playbooks/<name> with extra vars on the local inventory, or on the inventory sources
    given (later ones add to earlier ones); returns (rc, output)."""
    env = dict(os.environ)
    env.update(load_env())
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env.update(environ or {})
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook")]
    for source in inventory:
        argv += ["-i", source]
    argv.append("playbooks/" + name)
    argv += list(options)
    proc = subprocess.run(
        argv + ["-e", json.dumps(extra)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def sh(container, script, check=True):
    """Runs a shell snippet in a container; returns stdout."""
    proc = subprocess.run(
        [DOCKER, "exec", container, "bash", "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError("in %s: %s\n%s" % (container, script, proc.stderr))
    return proc.stdout


def connect(dbname):
    import psycopg2

    env = load_env()
    conn = psycopg2.connect(
        host=env["PGHOST"], port=int(env["PGPORT"]), user=env["PGUSER"], password=env["PGPASSWORD"], dbname=dbname
    )
    conn.autocommit = True
    return conn


def query(dbname, sql, args=None):
    conn = connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def databases():
    return {r[0] for r in query("postgres", "SELECT datname FROM pg_database")}


def table_digest(dbname):
    """Row count and md5 of the ordered content of every user table (the real data, not a count)."""
    tables = query(
        dbname,
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT LIKE '\\_timescaledb%%' AND schemaname NOT IN ('pg_catalog', 'information_schema', "
        "'timescaledb_information', 'timescaledb_experimental') ORDER BY 1",
    )
    out = {}
    for (t,) in tables:
        count, digest = query(
            dbname, "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM %s x" % t
        )[0]
        out[t] = (count, digest)
    return out


def seed(dbname, devices=4, days=10, interval=300):
    import sys

    sys.path.insert(0, os.path.join(REPO, "tests", "rig"))
    import seed_iot

    env = load_env()
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
    try:
        seed_iot.main(["--dbname", dbname, "--devices", str(devices), "--days", str(days), "--interval", str(interval)])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def drop_database(dbname):
    query("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % dbname.replace('"', '""'))


def copy_database(source, dest, attempts=10):
    """CREATE DATABASE dest TEMPLATE source. PostgreSQL refuses a template that another session
    is connected to: a backend of an earlier test that is still closing, or autovacuum. Those
    sessions are ended, and the copy is tried again for a few seconds."""
    import psycopg2

    for attempt in range(attempts):
        query(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (source,),
        )
        try:
            query(
                "postgres", 'CREATE DATABASE "%s" TEMPLATE "%s"' % (dest.replace('"', '""'), source.replace('"', '""'))
            )
            return
        except psycopg2.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def unit_journal(container, unit, since=None, lines=None):
    """What a systemd unit logged (``journalctl -o cat``), since ``since`` or its last ``lines``.
    Besides the unit's own entries (``-u``), those of its main process by PID: in the rig's
    containers systemd sometimes fails to attach a new process to the unit's cgroup ("Failed to
    attach ... to compat systemd cgroup"), and journald then files what it prints under no unit.
    ``unit`` is the full name (``tsdb-backup.service``): the matches add no suffix, as -u does."""
    window = "--since '%s'" % since if since else "-n %d" % (lines or 30)
    return sh(
        container,
        "pid=$(systemctl show -p ExecMainPID --value %(u)s); journalctl %(w)s --no-pager -o cat "
        'UNIT=%(u)s + _SYSTEMD_UNIT=%(u)s + OBJECT_SYSTEMD_UNIT=%(u)s $([ "${pid:-0}" != 0 ] && echo + _PID=$pid)'
        % {"u": shlex.quote(unit), "w": window},
        check=False,
    )


def write_file(container, path, content, mode="0644"):
    subprocess.run(
        [DOCKER, "exec", "-i", container, "bash", "-c", "cat > %s && chmod %s %s" % (path, mode, path)],
        input=content,
        text=True,
        check=True,
        timeout=60,
    )


def copy_engine(container, dest):
    """This checkout's module_utils into the container at ``dest`` (an importable collection
    tree; not under /tmp, a tmpfs docker cp does not see). Returns the tree."""
    tree = os.path.join(dest, "ansible_collections", "insa", "timescaledb_backup")
    sh(container, "mkdir -p %s/plugins" % tree)
    subprocess.run(
        [DOCKER, "cp", os.path.join(REPO, "plugins", "module_utils"), "%s:%s/plugins/" % (container, tree)],
        check=True,
        timeout=120,
    )
    return tree
