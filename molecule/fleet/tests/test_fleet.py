"""backup.yml across three database hosts with one of them broken.

The third host's PostgreSQL is stopped for the run (an outage, not a test switch). The run
must fail, its summary must name that host with its error, and the two healthy hosts must
each hold a verified backup set on disk (owner tsdb-backup, mode 0600, checksums as in the
manifest) and the same set in Azurite. Everything is checked on the real hosts and in the
real storage, not only in what the playbook printed.
"""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import psycopg2
import pytest
import testinfra
import yaml
from azure.storage.blob import BlobServiceClient
from psycopg2 import sql

SCENARIO = pathlib.Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
INVENTORY = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"]
SETTINGS = INVENTORY["group_vars"]["tsdb_hosts"]
HOSTS = sorted(INVENTORY["host_vars"])
BROKEN = "insa-molecule-fleet-db3"
HEALTHY = [h for h in HOSTS if h != BROKEN]
DATABASE = SETTINGS["tsdb_backup_databases"][0]
BACKUP_DIR = SETTINGS["tsdb_backup_dir"]
USER = GROUP = "tsdb-backup"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z$")
# A line of the summary table (playbooks/templates/backup_summary.j2); SIZE holds a space.
LINE = re.compile(
    r"^(?P<host>\S+) +(?P<database>\S+) +(?P<backup_id>\S+) +(?P<size>.+?) +(?P<seconds>\d+\.\d|-) +"
    r"(?P<verified>\S+) +(?P<uploaded>\S+) ?(?P<error>.*)$"
)
PG_SERVICE = "postgresql@17-main"


def docker_host(name):
    return testinfra.get_host("docker://" + name)


def container():
    service = BlobServiceClient.from_connection_string(SETTINGS["tsdb_azure_connection_string"])
    return service.get_container_client(SETTINGS["tsdb_azure_container"])


def blob_folder(host):
    return "%s/%s/%s/" % (SETTINGS["tsdb_azure_prefix"], host, DATABASE)


def live_row_counts(name):
    """{schema.table: rows} of the user tables of the host's database, over loopback."""
    conn = psycopg2.connect(
        host=SETTINGS["tsdb_login_host"],
        port=INVENTORY["host_vars"][name]["tsdb_port"],
        user=SETTINGS["tsdb_login_user"],
        password=SETTINGS["tsdb_login_password"],
        dbname=DATABASE,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname"
                " NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE '\\_timescaledb%'"
            )
            counts = {}
            for schema, table in cur.fetchall():
                cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
                counts[schema + "." + table] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def task_results(output, name):
    """{host: result} of every task called `name` in the json callback's output."""
    found = {}
    for play in output["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == name:
                found.update(task["hosts"])
    return found


@pytest.fixture(scope="module")
def run():
    """Runs backup.yml once with the broken host's PostgreSQL stopped; starts it again after."""
    broken = docker_host(BROKEN)
    broken.check_output("systemctl stop %s", PG_SERVICE)
    try:
        assert not broken.service(PG_SERVICE).is_running
        # The json callback alone on stdout: no other callback may print there.
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1")
        env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
        proc = subprocess.run(
            [
                str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                os.environ["MOLECULE_INVENTORY_FILE"],
                str(ROOT / "playbooks" / "backup.yml"),
            ],
            cwd=str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        broken.check_output("systemctl start %s", PG_SERVICE)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        pytest.fail("backup.yml printed no json (rc %s): %s" % (proc.returncode, (proc.stdout + proc.stderr)[-3000:]))
    summary = task_results(output, "Show the summary")["localhost"]["msg"]
    print(summary)
    rows = {}
    for line in summary.splitlines()[1:]:
        m = LINE.match(line)
        assert m, "a summary line that does not parse: %r" % line
        row = m.groupdict()
        row["error"] = row["error"].strip()
        rows.setdefault(row["host"], []).append(row)
    return {"rc": proc.returncode, "output": output, "summary": summary, "rows": rows, "stderr": proc.stderr}


def test_the_run_fails_and_names_only_the_broken_host(run):
    assert run["rc"] == 2, run["stderr"]
    verdict = task_results(run["output"], "Fail when any database was not backed up")["localhost"]
    assert verdict.get("failed")
    assert verdict["msg"].startswith("Backups failed on: %s (" % BROKEN)
    # The broken host's failure is a result of its backup task, not a failed task: the others
    # went on and every host reached the summary.
    stats = run["output"]["stats"]
    for h in HOSTS:
        assert stats[h]["failures"] == 0 and stats[h]["rescued"] == 0, stats[h]
    results = task_results(run["output"], "Back up - dump, verify, upload with catch-up, prune, metrics: " + DATABASE)
    assert results[BROKEN]["results"][0]["error_kind"] == "service", results[BROKEN]
    assert all(results[h]["results"][0]["success"] for h in HEALTHY)


def test_the_summary_has_one_line_per_host_and_database(run):
    header = run["summary"].splitlines()[0].split()
    assert header == ["HOST", "DATABASE", "BACKUP", "ID", "SIZE", "SECONDS", "VERIFIED", "UPLOADED", "ERROR"]
    assert sorted(run["rows"]) == HOSTS
    assert all([r["database"] for r in rows] == [DATABASE] for rows in run["rows"].values())


def test_the_summary_gives_the_broken_hosts_error(run):
    (row,) = run["rows"][BROKEN]
    assert row["backup_id"] == "-", "no backup id for a host whose dump failed"
    assert (row["verified"], row["uploaded"]) == ("no", "no")
    # The failed step and PostgreSQL's own reason, with the address it tried.
    assert row["error"].startswith("dump failed: "), row["error"]
    address = "127.0.0.1:%s" % INVENTORY["host_vars"][BROKEN]["tsdb_port"]
    assert address in row["error"] and "Connection refused" in row["error"], row["error"]


@pytest.mark.parametrize("name", HEALTHY)
def test_the_summary_shows_a_verified_uploaded_backup(run, name):
    (row,) = run["rows"][name]
    assert BACKUP_ID.match(row["backup_id"]), row
    assert (row["verified"], row["uploaded"], row["error"]) == ("archive", "1", ""), row


def backup_id_of(run, name):
    return run["rows"][name][0]["backup_id"]


@pytest.mark.parametrize("name", HEALTHY)
def test_a_verified_backup_set_is_on_disk(run, name):
    host = docker_host(name)
    backup_id = backup_id_of(run, name)
    folder = "%s/%s/" % (BACKUP_DIR, DATABASE)
    d = host.file(folder)
    assert d.is_directory and d.mode == 0o700 and d.user == USER
    files = {s: folder + backup_id + s for s in (".dump", ".globals.sql", ".manifest.json", ".verify.json")}
    for path in files.values():
        f = host.file(path)
        assert f.is_file, path
        assert (f.user, f.group, f.mode) == (USER, GROUP, 0o600), path
    manifest = json.loads(host.file(files[".manifest.json"]).content_string)
    assert (manifest["backup_id"], manifest["database"], manifest["host"]) == (backup_id, DATABASE, name)
    for key, suffix in (("archive", ".dump"), ("globals", ".globals.sql")):
        digest, size = host.check_output("sha256sum %s && stat -c %%s %s", files[suffix], files[suffix]).split()[::2]
        assert (digest, int(size)) == (manifest[key]["sha256"], manifest[key]["size_bytes"]), suffix
    # The set holds the host's own data: the row counts are those of its database (nothing
    # writes to it), and the hypertables have chunks.
    assert {t: v["rows"] for t, v in manifest["tables"].items()} == live_row_counts(name)
    assert {t: v["chunks"] > 0 for t, v in manifest["hypertables"].items()} == {
        "public.esp_telemetry": True,
        "public.diagnostic_results": True,
    }
    record = json.loads(host.file(files[".verify.json"]).content_string)
    assert record["ok"] is True
    assert record["level"] == "archive"
    assert record["archive_sha256"] == manifest["archive"]["sha256"]


@pytest.mark.parametrize("name", HEALTHY)
def test_the_backup_set_is_in_azurite(run, name):
    host = docker_host(name)
    backup_id = backup_id_of(run, name)
    folder = "%s/%s/" % (BACKUP_DIR, DATABASE)
    local_manifest = host.file(folder + backup_id + ".manifest.json").content
    manifest = json.loads(local_manifest)
    blobs = {b.name: b for b in container().list_blobs(name_starts_with=blob_folder(name))}
    by_suffix = {}
    for blob_name in blobs:
        base = blob_name.rsplit("/", 1)[1]
        if base.startswith(backup_id):
            by_suffix[base[len(backup_id) :]] = blob_name
    assert {".dump", ".globals.sql", ".manifest.json"} <= set(by_suffix), sorted(blobs)
    client = container()
    archive = client.download_blob(by_suffix[".dump"]).readall()
    assert len(archive) == manifest["archive"]["size_bytes"]
    assert hashlib.sha256(archive).hexdigest() == manifest["archive"]["sha256"]
    globals_sql = client.download_blob(by_suffix[".globals.sql"]).readall()
    assert hashlib.sha256(globals_sql).hexdigest() == manifest["globals"]["sha256"]
    assert client.download_blob(by_suffix[".manifest.json"]).readall() == local_manifest


def test_the_broken_host_has_no_backup(run):
    host = docker_host(BROKEN)
    listing = host.run("ls -A %s/%s", BACKUP_DIR, DATABASE)
    assert not [n for n in listing.stdout.split() if n.endswith(".manifest.json")]
    assert list(container().list_blob_names(name_starts_with=blob_folder(BROKEN))) == []


def test_the_broken_host_is_healthy_again(run):
    """The outage was the test's own: PostgreSQL runs again (verify can be run again)."""
    host = docker_host(BROKEN)
    assert host.service(PG_SERVICE).is_running
    host.check_output("pg_isready -q -h 127.0.0.1 -p %s -t 30", str(INVENTORY["host_vars"][BROKEN]["tsdb_port"]))
