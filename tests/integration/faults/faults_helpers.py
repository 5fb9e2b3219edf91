"""Helpers of the fault suite: the agent's units driven under systemd in the suite's own
container, processes found and killed by PID inside it, Azure's real listing checked blob by
blob, and the rows compared by digest."""

import hashlib
import json
import os
import sys
import time
import uuid

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rig  # noqa: E402

sys.path.insert(0, os.path.join(rig.REPO, "collections"))
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure_names  # noqa: E402

OVERRIDE = "/etc/tsdb-backup/faults.env"
PREFIX = "backups"
SMALL = "/var/backups/small"  # the container's small tmpfs (tests/rig/faults-rig.sh)
HOST = "tsdb-local"  # the role's host label: the trust store knows this host's key under it


def azurite_port(env):
    return int(env["AZURE_STORAGE_BLOB_ENDPOINT"].rsplit(":", 1)[1].split("/")[0])


def connection_string(env, port):
    """The rig's Azurite account, reached through 127.0.0.1:port (Azurite itself or the proxy)."""
    return "DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%d/%s;" % (
        env["AZURE_STORAGE_ACCOUNT"],
        env["AZURE_STORAGE_KEY"],
        port,
        env["AZURE_STORAGE_ACCOUNT"],
    )


class Unit:
    """One of the agent's units (tsdb-backup.service, tsdb-history-*.service) run for real under
    the container's systemd, with the test's settings in a drop-in (EnvironmentFile= after the
    role's, so they win)."""

    def __init__(self, c, name, settings, rw_paths=()):
        self.c, self.name, self.settings, self.rw_paths = c, name, settings, rw_paths
        self.dropin = "/etc/systemd/system/%s.d/faults.conf" % name
        self.since = "-1h"

    def configure(self):
        body = "\n".join('%s="%s"' % kv for kv in sorted(self.settings.items())) + "\n"
        rig.write_file(self.c, OVERRIDE, body, mode="0600")
        rig.sh(self.c, "chown tsdb-backup: %s && mkdir -p %s" % (OVERRIDE, os.path.dirname(self.dropin)))
        rw = "ReadWritePaths=%s\n" % " ".join(self.rw_paths) if self.rw_paths else ""
        rig.write_file(self.c, self.dropin, "[Service]\nEnvironmentFile=%s\n%s" % (OVERRIDE, rw))
        rig.sh(self.c, "systemctl daemon-reload")
        return self

    def start(self):
        """Starts a run without waiting for it: the test then waits for the point to inject its
        fault at (a process, a held request), which proves the run began, and then for wait()."""
        self.since = rig.sh(self.c, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
        rig.sh(self.c, "systemctl reset-failed %s 2>/dev/null; systemctl start --no-block %s" % (self.name, self.name))
        return self

    def state(self):
        return rig.sh(self.c, "systemctl show -p ActiveState --value %s" % self.name).strip()

    def main_pid(self):
        return int(rig.sh(self.c, "systemctl show -p MainPID --value %s" % self.name).strip() or 0)

    def result(self):
        return rig.sh(self.c, "systemctl show -p Result --value %s" % self.name).strip()

    def wait(self, timeout=180):
        """The state the run (known to have begun) ended in: failed or inactive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state in ("failed", "inactive"):
                return state
            time.sleep(0.3)
        raise AssertionError("%s did not finish in %d s:\n%s" % (self.name, timeout, self.journal()))

    def run(self, timeout=180):
        """One whole run: `systemctl start` of a oneshot unit returns when it has ended."""
        self.since = rig.sh(self.c, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
        rig.sh(
            self.c,
            "systemctl reset-failed %s 2>/dev/null; timeout %d systemctl start %s; true"
            % (self.name, timeout, self.name),
        )
        return self.state()

    def journal(self):
        return rig.unit_journal(self.c, self.name, self.since)

    def cleanup(self):
        rig.sh(
            self.c,
            "systemctl stop %s; rm -f %s %s; systemctl daemon-reload; systemctl reset-failed"
            % (self.name, self.dropin, OVERRIDE),
            check=False,
        )


def wait_pid(c, pattern, timeout=60, exact=True):
    """The PID of a process in the container (pgrep -x NAME, or -f PATTERN), polled inside the
    container every 20 ms so that a short-lived process is caught. A -f pattern must be anchored
    (^...): the polling shell's own command line holds the pattern too."""
    assert exact or pattern.startswith("^"), pattern
    flag = "-x" if exact else "-f"
    script = (
        "end=$((SECONDS+%d)); until p=$(pgrep -o %s %s); do [ $SECONDS -lt $end ] || exit 1; sleep 0.02; done; "
        "echo $p" % (timeout, flag, json.dumps(pattern))
    )
    out = rig.sh(c, script, check=False).strip()
    assert out, "no process %s appeared in %s in %d s:\n%s" % (pattern, c, timeout, rig.sh(c, "ps -eo pid,args"))
    return int(out)


def wait_file_bytes(c, glob, min_bytes=1, timeout=60):
    """Waits inside the container until a file matching glob holds at least min_bytes."""
    script = (
        'end=$((SECONDS+%d)); while :; do for f in %s; do [ -f "$f" ] && [ $(stat -c %%s "$f") -ge %d ] '
        '&& { echo "$f"; exit 0; }; done; [ $SECONDS -lt $end ] || exit 1; sleep 0.02; done'
        % (timeout, glob, min_bytes)
    )
    out = rig.sh(c, script, check=False).strip()
    assert out, "no file %s of %d bytes in %s within %d s" % (glob, min_bytes, c, timeout)
    return out


def kill9_once_written(c, glob, min_bytes, process):
    """kill -9 of ``process`` the moment a file matching glob holds min_bytes, in one shell inside
    the container (separate docker execs left a small dump time to finish first). Returns the
    file; fails when the file never grew that far or the process was gone by then."""
    script = (
        'end=$((SECONDS+60)); while :; do for f in %s; do if [ -f "$f" ] && [ $(stat -c %%s "$f") -ge %d ]; then '
        'pid=$(pgrep -x %s) && kill -9 $pid && { echo "$f"; exit 0; }; exit 2; fi; done; '
        "[ $SECONDS -lt $end ] || exit 1; sleep 0.005; done" % (glob, min_bytes, process)
    )
    out = rig.sh(c, script, check=False).strip()
    assert out, "%s was not killed while %s grew past %d bytes in %s" % (process, glob, min_bytes, c)
    return out


def kill9(c, pid):
    rig.sh(c, "kill -9 %d" % pid)


def local_sets(c, folder):
    """What a database folder of the backup directory holds: file name -> size."""
    out = rig.sh(c, "cd %s 2>/dev/null && find . -mindepth 1 -maxdepth 1 -printf '%%P %%s\\n' || true" % folder)
    return dict((ln.split()[0], int(ln.split()[1])) for ln in out.splitlines() if ln.strip())


def assert_local_sets_whole(c, folder):
    """No manifest without its archive and globals; returns the backup ids with a manifest."""
    names = local_sets(c, folder)
    ids = sorted(n[: -len(".manifest.json")] for n in names if n.endswith(".manifest.json"))
    for bid in ids:
        assert bid + ".dump" in names or bid + ".dir" in names, "manifest %s without its archive: %s" % (bid, names)
        m = json.loads(rig.sh(c, "cat %s/%s.manifest.json" % (folder, bid)))
        if bid + ".dump" in names:
            assert names[bid + ".dump"] == m["archive"]["size_bytes"], (bid, names, m["archive"])
    return ids


def container_client(env, container):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(connection_string(env, azurite_port(env))).get_container_client(
        container
    )


def azure_sets(env, container, host, database):
    """Azure's real listing of a host's sets of a database, straight from Azurite (not through the
    code under test): backup_id -> {kind: blob properties}."""
    cc = container_client(env, container)
    if not cc.exists():
        return {}
    out = {}
    for p in cc.list_blobs(name_starts_with="%s/%s/" % (PREFIX, host), include=["metadata"]):
        parsed = _azure_names.parse_blob_name(p.name, PREFIX)
        assert parsed is not None, "a blob outside the layout: %s" % p.name
        if parsed["database"] == database:
            out.setdefault(parsed["backup_id"], {})[parsed["kind"]] = p
    return out


def assert_azure_complete(env, container, host, database, expect_ids=None):
    """Every set in Azure is whole: manifest, archive and globals, the archive's bytes hash to
    what the manifest (read back from Azure) records. No manifest is there without its archive.
    Returns the ids."""
    cc = container_client(env, container)
    sets = azure_sets(env, container, host, database)
    for bid, blobs in sets.items():
        whole = {"manifest", "archive", "globals"}
        assert set(blobs) == whole, "set %s in Azure is not whole: %s" % (bid, sorted(blobs))
        manifest = json.loads(cc.download_blob(blobs["manifest"].name).readall())
        data = cc.download_blob(blobs["archive"].name).readall()
        assert len(data) == manifest["archive"]["size_bytes"], bid
        assert hashlib.sha256(data).hexdigest() == manifest["archive"]["sha256"], "archive of %s differs" % bid
    if expect_ids is not None:
        assert sorted(sets) == sorted(expect_ids), (sorted(sets), sorted(expect_ids))
    return sorted(sets)


def restored_digest(c, env, folder, backup_id):
    """Restores a local set's archive with pg_restore into a scratch database and returns that
    database's table digest: what the set really holds, read without the code under test."""
    scratch = "faults_check_%s" % uuid.uuid4().hex[:8]
    rig.query("postgres", "CREATE DATABASE %s" % scratch)
    try:
        rig.query(scratch, "CREATE EXTENSION IF NOT EXISTS timescaledb")
        psql = "runuser -u postgres -- psql -qAt -p %s -d %s -c" % (env["PGPORT"], scratch)
        rig.sh(
            c,
            "cd /var/tmp && %s 'SELECT timescaledb_pre_restore()' >/dev/null && "
            "runuser -u postgres -- pg_restore -p %s -d %s --no-owner < %s/%s.dump 2>/dev/null; "
            "%s 'SELECT timescaledb_post_restore()' >/dev/null"
            % (psql, env["PGPORT"], scratch, folder, backup_id, psql),
        )
        return rig.table_digest(scratch)
    finally:
        rig.drop_database(scratch)


LOCAL_DIR = os.environ.get("FAULTS_LOCAL_DIR") or os.path.join(rig.REPO, ".local", "faults")
VENV_PYTHON = "/opt/tsdb-backup/venv/bin/python"


def azurite(action):
    """Stops or starts the suite's own Azurite (by the PID its script recorded)."""
    import subprocess

    env = dict(os.environ, LOCAL_DIR=LOCAL_DIR, AZURITE_PORT=os.environ.get("FAULTS_AZURITE_PORT", "10532"))
    out = subprocess.run(
        [os.path.join(rig.REPO, "tests", "rig", "azurite.sh"), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def module_popen(module, args, python=VENV_PYTHON):
    """Starts insa.timescaledb_backup.<module> on the suite's container through Ansible (the venv
    interpreter), in the background; module_result() reads its result."""
    import subprocess

    env = dict(os.environ)
    env.update(rig.load_env())
    for key in list(env):
        if key.startswith("AZURE_"):
            env.pop(key)
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CONFIG=os.path.join(rig.REPO, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
    )
    argv = [
        os.path.join(rig.REPO, ".venv", "bin", "ansible"),
        "tsdb-local",
        "-i",
        os.path.join(rig.REPO, "inventories", "local"),
        "-e",
        "ansible_python_interpreter=%s" % python,
        "-m",
        "insa.timescaledb_backup." + module,
        "-a",
        json.dumps(args),
    ]
    return subprocess.Popen(argv, cwd=rig.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def module_result(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)["plays"][0]["tasks"][0]["hosts"]["tsdb-local"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("ansible produced no result (rc %s):\n%s\n%s" % (proc.returncode, out, err)) from None


def run_module(module, args, python=VENV_PYTHON, timeout=300):
    return module_result(module_popen(module, args, python), timeout)


class TableLock:
    """A session holding ACCESS EXCLUSIVE on a table in an open transaction: pg_dump (which takes
    ACCESS SHARE on every table before it writes anything) waits on it, a deterministic point
    "pg_dump running" to inject a fault at."""

    def __init__(self, database, table):
        self.conn = rig.connect(database)
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            cur.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % table)

    def release(self):
        try:
            self.conn.rollback()
            self.conn.close()
        except psycopg2.Error:  # the server may have been restarted under it: the session is gone anyway
            self.conn = None


def wait_lock_waiter(database, timeout=60):
    """Waits until a session of database (pg_dump's: the test's own holds the lock) waits on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = rig.query(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (database,),
        )
        if rows[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError("no pg_dump of %s waited on the lock within %d s" % (database, timeout))


class Case:
    """A test's own backup directory and Azure container, and the unit set up to use them."""

    def __init__(self, c, env, db, base="/var/backups/tsdb", azure_port=None, settings=None):
        self.c, self.env, self.db = c, env, db
        self.digest = None  # the database's digest, for the test's own use
        tag = uuid.uuid4().hex[:8]
        self.dir = "%s/faults-%s" % (base, tag)
        self.folder = "%s/%s" % (self.dir, db)
        self.container = "faults-%s" % tag
        rig.sh(c, "install -d -o tsdb-backup -g tsdb-backup -m 0700 %s" % self.dir)
        port = azure_port or azurite_port(env)
        self.unit = Unit(
            c,
            "tsdb-backup.service",
            {
                "TSDB_BACKUP_DATABASES": db,
                "TSDB_BACKUP_DIR": self.dir,
                "AZURE_STORAGE_CONNECTION_STRING": connection_string(env, port),
                "AZURE_STORAGE_CONTAINER": self.container,
                "TSDB_BACKUP_AZURE_MAX_RETRIES": "4",
                "TSDB_BACKUP_AZURE_RETRY_BACKOFF": "0",
                "TSDB_BACKUP_LOCK_WAIT_MINUTES": "2",
                **(settings or {}),
            },
            rw_paths=(base,) if base != "/var/backups/tsdb" else (),
        ).configure()

    def local(self):
        return assert_local_sets_whole(self.c, self.folder)

    def partials(self):
        return [n for n in local_sets(self.c, self.folder) if n.endswith(".partial")]

    def azure(self, expect=None):
        return assert_azure_complete(self.env, self.container, HOST, self.db, expect)

    def next_run_recovers(self, digest, expect_sets):
        """The run after the fault: succeeds, leaves no partial, every local set is in Azure
        whole, and the newest set restores to exactly the database's rows."""
        assert self.unit.run() == "inactive", self.unit.journal()
        assert self.partials() == []
        ids = self.local()
        assert len(ids) == expect_sets, ids
        assert self.azure(expect=ids) == ids
        assert restored_digest(self.c, self.env, self.folder, ids[-1]) == digest
        return ids

    def cleanup(self):
        self.unit.cleanup()
        rig.sh(self.c, "rm -rf %s" % self.dir, check=False)
        cc = container_client(self.env, self.container)
        if cc.exists():
            cc.delete_container()
