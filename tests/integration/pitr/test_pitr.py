"""Point-in-time recovery through pgBackRest, as an operator runs it: setup.yml with the role
pitr on a fresh host starts WAL archiving (its metrics show a segment archived within a minute)
and takes the first full backup; a writer inserts rows continuously and the test notes a target
time between two commits; the host is lost (its container removed); a rebuilt host (the same
name, a fresh cluster) gets setup.yml, which leaves the lost host's stanza alone, then
restore.yml -e restore_method=physical twice: to the end of the archived WAL (what a host loss
costs with archiving on: the RPO, and the RTO of the restore) and to the target time over the
restored cluster - exactly the rows committed up to the target, nothing after, and every
data directory replaced kept aside.

pgBackRest reaches Azurite only over HTTPS: a private Azurite with a self-signed certificate,
which the hosts trust through tsdb_pitr_storage_ca_file. The logical sets (for the comparison
restore.yml makes) go to the rig's shared Azurite, in a container of this suite."""

import json
import os
import re
import subprocess
import threading
import time

import psycopg2
import pytest
import rig
from azure.storage.blob import BlobServiceClient
from azure_helpers import PrivateAzurite, self_signed_certificate
from test_runbook import step_of  # noqa: E402

pytestmark = pytest.mark.rig

HOST = "it-pitr"
PORT = 15732
DB = "it_pitr"
CONTAINER = "it-pitr"
CA = "/etc/ssl/certs/it-pitr-azurite.pem"
METRICS = "/var/lib/tsdb-backup-pitr-metrics/tsdb_backup_pitr.prom"
EXTRA_HOST = os.path.join(rig.REPO, "tests", "rig", "extra-host.sh")
ARCHIVE_TIMEOUT = 20


def runbook_block(step):
    """The shell block of docs/RESTORE.md for a step (test_runbook.step_of), as written."""
    with open(os.path.join(rig.REPO, "docs", "RESTORE.md"), encoding="utf-8") as f:
        found = [b for b in re.findall(r"```sh\n(.*?)```", f.read(), re.S) if step_of(b) == step]
    assert len(found) == 1, (step, found)
    return found[0]


def run_runbook(step, inv, target=None):
    """Runs a runbook block with only the site replaced (inventory, host, the example time)."""
    block = runbook_block(step).replace("inventories/<site>", inv).replace("db01.iot.example.com", HOST)
    if target:
        block = block.replace("2026-12-02T05:00:00Z", target)
    env = dict(os.environ, **rig.load_env())
    env["ANSIBLE_CONFIG"] = os.path.join(rig.REPO, "ansible.cfg")
    env["PATH"] = os.path.join(rig.REPO, ".venv", "bin") + os.pathsep + env["PATH"]
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=rig.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def host(action):
    env = dict(os.environ, **rig.load_env())
    argv = [EXTRA_HOST, action, HOST] + ([str(PORT)] if action in ("up", "fresh") else [])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr


def system_identifier():
    return rig.sh(
        HOST, "su postgres -c \"psql -p %d -XAtc 'SELECT system_identifier FROM pg_control_system()'\"" % PORT
    )


def inventory(path, azurite, env):
    hostvars = {
        "ansible_connection": "community.docker.docker",
        "ansible_host": HOST,
        "ansible_python_interpreter": "/usr/bin/python3",
        "tsdb_login_host": "127.0.0.1",
        "tsdb_port": PORT,
        "tsdb_login_user": "postgres",
        "tsdb_login_password": env["PGPASSWORD"],
        "tsdb_login_db": "postgres",
        "tsdb_backup_databases": [DB],
        "tsdb_backup_host_label": HOST,
        "tsdb_azure_auth_mode": "connection_string",
        "tsdb_azure_connection_string": env["AZURE_STORAGE_CONNECTION_STRING"],
        "tsdb_azure_container": CONTAINER,
        "tsdb_azure_create_container": True,
        # A rebuilt host makes a key of its own; the lost one's would be pinned (docs/SIGNING.md).
        "tsdb_signing": False,
        "tsdb_pitr_enabled": True,
        "tsdb_pitr_azure_host": "127.0.0.1",
        "tsdb_pitr_azure_port": azurite.port,
        "tsdb_pitr_azure_uri_style": "path",
        "tsdb_pitr_storage_ca_file": CA,
        "tsdb_pitr_archive_timeout": ARCHIVE_TIMEOUT,
        "backup_agent_pip_extra_args": ["--no-index", "--find-links", "/opt/tsdb-wheelhouse"],
        "backup_agent_timer_enabled": False,
        "restore_drill_enabled": False,
        # The backups themselves are started by the test, not by a calendar.
        "pitr_full_on_calendar": "2099-01-01",
        "pitr_diff_on_calendar": "2099-01-01",
        "pitr_drill_on_calendar": "2099-01-01",
        # The status every 15 s (minutely by default): the archived segment shows sooner.
        "pitr_status_on_calendar": "*:*:0/15",
    }
    with open(path, "w") as f:
        json.dump({"all": {"children": {"tsdb_hosts": {"hosts": {HOST: hostvars}}}}}, f)
    return path


def playbook(name, extra, inv):
    return rig.playbook(name, extra, timeout=1200, inventory=(inv,))


def connect():
    env = rig.load_env()
    conn = psycopg2.connect(host="127.0.0.1", port=PORT, user="postgres", password=env["PGPASSWORD"], dbname=DB)
    conn.autocommit = True
    return conn


def metric(name, **labels):
    """A value of tsdb_backup_pitr.prom on the host (the file node_exporter reads), or None."""
    for line in rig.sh(HOST, "cat %s 2>/dev/null || true" % METRICS).splitlines():
        found = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if found and found.group(1) == name and all('%s="%s"' % kv in found.group(2) for kv in labels.items()):
            return float(found.group(3))
    return None


class Writer(threading.Thread):
    """Inserts one row every 20 ms, each its own transaction; records what was committed and when
    (the client's clock after COMMIT returned: the same kernel clock as the server's)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.committed = []  # (seq, time after commit)
        self.go = threading.Event()
        self.go.set()
        self.idle = threading.Event()
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = connect()
            cur = conn.cursor()
            seq = 0
            while not self.stop.is_set():
                if not self.go.is_set():
                    self.idle.set()
                    self.go.wait(0.05)
                    continue
                self.idle.clear()
                seq += 1
                cur.execute(
                    "INSERT INTO readings (at, seq, value) VALUES (clock_timestamp(), %s, %s)", (seq, seq * 0.5)
                )
                self.committed.append((seq, time.time()))
                time.sleep(0.02)
        except psycopg2.Error as e:  # the host going away ends the writer
            self.error = e

    def pause(self):
        self.go.clear()
        assert self.idle.wait(5)
        return self.committed[-1][0]


def rows():
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT seq FROM readings ORDER BY seq")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def recap_changed(out):
    found = re.search(r"%s\s*:\s*ok=\d+\s+changed=(\d+)" % re.escape(HOST), out)
    assert found, out[-2000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pitr")
    cert, key = self_signed_certificate(str(folder))
    azurite = PrivateAzurite(str(folder / "azurite"), scheme="https", extra_args=["--cert", cert, "--key", key]).start()
    env = rig.load_env()
    conn = "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=%s;BlobEndpoint=%s;" % (
        env["AZURE_STORAGE_KEY"],
        azurite.endpoint,
    )
    BlobServiceClient.from_connection_string(conn, connection_verify=cert).create_container(CONTAINER)
    host("down")
    host("up")
    host("fresh")  # the data directory in the container's own layer: overlayfs renames only those
    subprocess.run([rig.DOCKER, "cp", cert, "%s:%s" % (HOST, CA)], check=True, timeout=60)
    try:
        yield {"azurite": azurite, "cert": cert, "inventory": inventory(str(folder / "hosts.json"), azurite, env)}
    finally:
        host("down")
        azurite.stop()


def test_a_host_lost_is_restored_to_the_second(site):
    inv = site["inventory"]
    env = rig.load_env()
    admin = psycopg2.connect(
        host="127.0.0.1", port=PORT, user="postgres", password=env["PGPASSWORD"], dbname="postgres"
    )
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE %s" % DB)
    admin.close()
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute("CREATE EXTENSION timescaledb")
        cur.execute("CREATE TABLE readings (at timestamptz NOT NULL, seq int NOT NULL, value float8)")
        cur.execute("SELECT create_hypertable('readings', 'at', chunk_time_interval => interval '1 minute')")
    conn.close()

    # setup.yml on the fresh host: archiving on, the stanza, the first full backup, the timers.
    rc, out = playbook("setup.yml", {}, inv)
    assert rc == 0, out[-4000:]
    assert rig.sh(
        HOST, "stat -c '%a %U:%G' /etc/pgbackrest/pgbackrest.conf /etc/pgbackrest/conf.d/credentials.conf"
    ).split("\n")[:2] == ["640 root:postgres", "640 root:postgres"]
    assert rig.load_env()["AZURE_STORAGE_KEY"] in rig.sh(HOST, "cat /etc/pgbackrest/conf.d/credentials.conf")
    assert rig.load_env()["AZURE_STORAGE_KEY"] not in rig.sh(
        HOST, "cat /etc/pgbackrest/pgbackrest.conf /etc/tsdb-backup/pitr.env"
    )
    assert rig.sh(HOST, "su postgres -c \"psql -p %d -XAtc 'SHOW archive_mode'\"" % PORT).strip() == "on"
    info = json.loads(rig.sh(HOST, "su postgres -c 'pgbackrest --stanza=tsdb info --output=json'"))[0]
    assert [b["type"] for b in info["backup"]] == ["full"], info
    units = ["tsdb-pitr-%s.timer" % j for j in ("full", "diff", "drill", "status")]
    assert rig.sh(HOST, "systemctl is-enabled %s" % " ".join(units)).split() == ["enabled"] * 4

    # Archiving runs: a change now is in the repository, and in the metrics, within a minute.
    before = time.time()
    conn = connect()
    conn.cursor().execute("INSERT INTO readings VALUES (now(), 0, 0)")
    conn.close()
    deadline = before + 60
    while time.time() < deadline and (metric("tsdb_backup_pitr_last_archived_timestamp_seconds") or 0) < before:
        time.sleep(2)
    archived = metric("tsdb_backup_pitr_last_archived_timestamp_seconds")
    assert archived and archived >= before, rig.sh(HOST, "cat %s" % METRICS)
    assert metric("tsdb_backup_pitr_up") == 1.0 and metric("tsdb_backup_pitr_backups") == 1.0
    first_archive_seconds = round(time.time() - before, 1)

    # Run again: nothing changes (no restart, no second stanza, no second full backup).
    rc, out = playbook("setup.yml", {}, inv)
    assert rc == 0, out[-4000:]
    assert recap_changed(out) == 0, out[-6000:]

    # The weekly drill, now: the backup and the archived WAL in a scratch directory, compared, removed.
    rig.sh(HOST, "systemctl start tsdb-pitr-drill.service")
    assert metric("tsdb_backup_pitr_last_run_success", job="drill") == 1.0
    drill_seconds = metric("tsdb_backup_pitr_last_run_duration_seconds", job="drill")
    assert drill_seconds and "drill" not in rig.sh(HOST, "ls /var/lib/tsdb-backup-pitr").split()

    # A logical set too, for the comparison restore.yml makes.
    conn = connect()
    conn.cursor().execute("DELETE FROM readings")
    conn.close()
    rig.sh(HOST, "systemctl start tsdb-backup.service")

    writer = Writer()
    writer.start()
    time.sleep(5)
    last_before_target = writer.pause()
    time.sleep(0.5)
    target = time.time()
    time.sleep(0.5)
    writer.go.set()
    # Writing on until WAL written after the target is archived, then a few seconds more.
    deadline = time.time() + 3 * ARCHIVE_TIMEOUT
    while time.time() < deadline and (metric("tsdb_backup_pitr_last_archived_timestamp_seconds") or 0) < target + 2:
        time.sleep(1)
    assert (metric("tsdb_backup_pitr_last_archived_timestamp_seconds") or 0) > target + 2
    time.sleep(7)
    lost_system_id = system_identifier()
    lost_at = time.time()
    host("down")  # the host is lost, with whatever WAL it had not archived
    writer.stop.set()
    writer.join(10)
    committed = dict(writer.committed)

    # The rebuilt host: a fresh cluster under the same name; setup.yml leaves the stanza alone.
    host("up")
    host("fresh")  # a cluster of its own, as a reinstalled server has (tests/rig/extra-host.sh)
    assert system_identifier() != lost_system_id
    subprocess.run([rig.DOCKER, "cp", site["cert"], "%s:%s" % (HOST, CA)], check=True, timeout=60)
    # The runbook's block for a lost host, as written (docs/RESTORE.md): setup.yml leaves the lost
    # host's stanza alone and says so, then the restore to the end of the archived WAL.
    rc, out = run_runbook("physical-rebuild", inv)
    assert rc == 0, out[-4000:]
    assert "belongs to another cluster" in out and "restore_method=physical" in out
    info = json.loads(rig.sh(HOST, "su postgres -c 'pgbackrest --stanza=tsdb info --output=json'"))[0]
    assert [b["type"] for b in info["backup"]] == ["full"], "a full backup of the fresh cluster was taken"
    recovered = rows()
    assert recovered == list(range(1, len(recovered) + 1)), "a gap in what was recovered"
    assert len(recovered) > last_before_target
    rpo = lost_at - committed[recovered[-1]]
    timings = re.search(r"Timings \(s\): .*?total\W+([0-9.]+)", out)
    assert timings, out[-3000:]
    rto = float(timings.group(1))
    assert rpo <= ARCHIVE_TIMEOUT + 10, rpo
    assert "Compared with the logical sets: %s" % DB in out and "Findings: none" in out, out[-3000:]

    # And to the target, over the restored cluster: exactly the rows committed by then.
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(target)) + (".%06dZ" % int((target % 1) * 1e6))
    rc, out = run_runbook("physical", inv, target=moment)
    assert rc == 0, out[-4000:]
    assert rows() == list(range(1, last_before_target + 1))
    kept = rig.sh(HOST, "ls -d /var/lib/postgresql/17/main.before-restore-*").split()
    assert len(kept) == 2, kept
    # The restored cluster archives again, on its own timeline.
    assert rig.sh(HOST, "su postgres -c \"psql -p %d -XAtc 'SELECT pg_is_in_recovery()'\"" % PORT).strip() == "f"
    assert system_identifier() == lost_system_id
    print(
        "\nPITR figures: first archived segment in the metrics after %.1f s; RPO with archive_timeout=%d s: %.1f s "
        "(%d rows committed, %d recovered); RTO of the latest restore: %.1f s; the drill: %.1f s"
        % (first_archive_seconds, ARCHIVE_TIMEOUT, rpo, len(committed), len(recovered), rto, drill_seconds)
    )


def test_restore_refuses_an_unconfirmed_or_vague_request(site):
    restore = {"restore_method": "physical", "restore_host": HOST, "restore_confirm": True}
    rc, out = playbook("restore.yml", dict(restore, restore_target_time="2099-01-01T00:00:00Z"), site["inventory"])
    assert rc != 0 and "is in the future" in out, out[-2000:]
    rc, out = playbook("restore.yml", {"restore_method": "physical", "restore_host": HOST}, site["inventory"])
    assert rc != 0 and "Nothing was done. A physical restore replaces the whole cluster" in out
    rc, out = playbook(
        "restore.yml", {"restore_method": "sideways", "restore_host": HOST, "restore_confirm": True}, site["inventory"]
    )
    assert rc != 0 and "restore_method=sideways" in out
