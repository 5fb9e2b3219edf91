"""The production path, run as an operator runs it from the control node, and checked on the
real hosts, in the real storage and in what node_exporter and the webhook received.

The operator's runs (through the scenario's inventory: the deploy user, sudo, the site's
least-privilege login), in this order, once (the fixture `site`):

1. backup.yml across the three hosts;
2. the nightly timer on host 2 (`systemctl start tsdb-backup.service` through sudo);
3. drill.yml across the three;
4. restore.yml rebuilding host 3's `iot` from host 1's backups in Azure (restore_source_host);
5. the history guard on every host (its archive, then its retention services);
6. a failure provoked on host 2 (its PostgreSQL stopped under the nightly unit), which must
   reach the webhook, then the unit again with PostgreSQL back;
7. host 3 as a site that moves from one login to a history login of its own: its backup login
   holds the owner's role from before; setup.yml (the site) names it and revokes nothing, and the
   statement it prints revokes it.

The tests then check rows, files, owners and modes, units, metrics, blobs, the lifecycle policy
and the notifications, and that no file of another package (PostgreSQL, node_exporter) changed
its owner: prepare.yml recorded them before the collection arrived. testinfra reads the hosts
as root through docker; nothing the operator runs goes that way.
"""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import psycopg2
import pytest
import testinfra
import yaml
from azure.storage.blob import BlobServiceClient
from psycopg2 import sql

SCENARIO = pathlib.Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
MOLECULE = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
INVENTORY = MOLECULE["provisioner"]["inventory"]
SETTINGS = INVENTORY["group_vars"]["tsdb_hosts"]
HOSTS = [p["name"] for p in MOLECULE["platforms"]]
# Host 1 is the restore's source, host 2 runs the timer and the provoked failure, host 3 is rebuilt.
SOURCE, TIMER, TARGET = HOSTS
PORT = {h: int(v["tsdb_port"]) for h, v in INVENTORY["host_vars"].items()}
DATABASE = SETTINGS["tsdb_backup_databases"][0]
BACKUP_DIR = SETTINGS["tsdb_backup_dir"]
USER = GROUP = SETTINGS["tsdb_backup_user"]
LOGIN = SETTINGS["tsdb_login_user"]
RESTORE_LOGIN = SETTINGS["tsdb_restore_login_user"]
HISTORY_LOGIN = SETTINGS["tsdb_history_login_user"]
# Molecule expands $NAME in molecule.yml, so a "$" of the password is written "$$" there.
PASSWORD = SETTINGS["vault_tsdb_login_password"].replace("$$", "$")
HISTORY_PASSWORD = SETTINGS["vault_tsdb_history_login_password"].replace("$$", "$")
RESTORE_PASSWORD = SETTINGS["vault_tsdb_restore_login_password"].replace("$$", "$")
OWNER = SETTINGS["backup_logins_owner_roles"][0]
CONTAINER = SETTINGS["tsdb_azure_container"]
PREFIX = SETTINGS["tsdb_azure_prefix"]
CONNECTION_STRING = SETTINGS["vault_tsdb_azure_connection_string"]
WEBHOOK_PATH = urllib.parse.urlsplit(SETTINGS["vault_backup_agent_notify_webhook_url"]).path
STATE = ROOT / ".local" / "molecule-production"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
METRICS_DIR = "/var/lib/tsdb-backup-metrics"
CONFIG_DIR = "/etc/tsdb-backup"
OWNERSHIP_BEFORE = "/root/molecule-ownership-before.txt"  # written by prepare.yml
OTHER_PACKAGES = ["/etc/postgresql", "/var/lib/postgresql", "/var/lib/prometheus"]
PG_SERVICE = "postgresql@17-main"
HISTORY_UNITS = ["tsdb-history-archive.service", "tsdb-history-retention.service", "tsdb-history-migrate.service"]
# What each unit reads (EnvironmentFile=, in order): its own secrets file and no other.
UNIT_FILES = dict(
    {"tsdb-backup.service": ["agent.env", "credentials.env"]},
    **{"tsdb-backup-drill.service": ["agent.env", "drill-credentials.env"]},
    **{u: ["agent.env", "history-credentials.env", "history.env"] for u in HISTORY_UNITS},
)
REVOKE_TASK = "Say which owner roles to revoke from the backup login by hand"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z$")
# A line of the summary table (playbooks/templates/backup_summary.j2); SIZE holds a space.
LINE = re.compile(
    r"^(?P<host>\S+) +(?P<database>\S+) +(?P<backup_id>\S+) +(?P<size>.+?) +(?P<seconds>\d+\.\d|-) +"
    r"(?P<verified>\S+) +(?P<uploaded>\S+) ?(?P<error>.*)$"
)
USER_TABLES = r"""
SELECT schemaname, tablename FROM pg_tables
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
   AND schemaname NOT LIKE '\_timescaledb%' AND schemaname NOT LIKE 'timescaledb\_%'
 ORDER BY 1, 2
"""
OLD_TELEMETRY_CHUNKS = (
    "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'esp_telemetry'"
    " AND range_end < now() - interval '30 days'"
)


# --- How the operator runs things: from the control node, through the inventory ------------------


def operator_env():
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return env


def playbook(name, extra_vars=None):
    """ansible-playbook on the scenario's inventory (deploy + sudo); (rc, json output)."""
    argv = [
        str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(ROOT / "playbooks" / name),
    ]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(
        argv, cwd=str(ROOT), env=operator_env(), capture_output=True, text=True, timeout=900, check=False
    )
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        pytest.fail("%s printed no json (rc %s): %s" % (name, proc.returncode, (proc.stdout + proc.stderr)[-3000:]))
    return proc.returncode, output


def sudo(name, command):
    """An ad-hoc command on one host as the operator runs it: `ansible HOST -b -a ...` as deploy.
    Returns (rc, stdout of the command)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    proc = subprocess.run(
        [
            str(pathlib.Path(sys.executable).parent / "ansible"),
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            name,
            "-b",
            "-m",
            "ansible.builtin.command",
            "-a",
            command,
        ],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][name]
    except (ValueError, KeyError, IndexError):
        pytest.fail("ansible %s -a %r: %s" % (name, command, (proc.stdout + proc.stderr)[-3000:]))
    return result.get("rc", 1 if result.get("failed") else 0), (result.get("stdout") or result.get("msg") or "")


def failures(output):
    """{host: msg} of the failed tasks of a run (what an operator reads first)."""
    found = {}
    for play in output["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed") and not result.get("ignore_errors"):
                    found.setdefault(host, []).append("%s: %s" % (task["task"]["name"], result.get("msg")))
    return found


def task_results(output, name):
    """{host: result} of every task called `name` in the json callback's output (a role's task
    is named `<role> : <name>` there)."""
    found = {}
    for play in output["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].split(" : ")[-1] == name:
                found.update(task["hosts"])
    return found


# --- How the test looks (root through docker, the site's login over loopback, the SDK) ----------


def root(name):
    return testinfra.get_host("docker://" + name)


def connect(name, dbname=DATABASE, user=LOGIN, password=PASSWORD):
    conn = psycopg2.connect(host="127.0.0.1", port=PORT[name], user=user, password=password, dbname=dbname)
    conn.autocommit = True
    return conn


def query(name, text, args=None, dbname=DATABASE):
    conn = connect(name, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(text, args)
            return cur.fetchall()
    finally:
        conn.close()


def snapshot(name):
    """Per user table its rows and an md5 of its rows in a fixed order; hypertables and chunk ranges."""
    conn = connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET DateStyle = 'ISO, YMD'")
            cur.execute(USER_TABLES)
            tables = {}
            for schema, table in cur.fetchall():
                cur.execute(
                    sql.SQL(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} t"
                    ).format(sql.Identifier(schema, table))
                )
                rows, digest = cur.fetchone()
                tables["%s.%s" % (schema, table)] = {"rows": rows, "md5": digest}
            cur.execute(
                "SELECT hypertable_schema || '.' || hypertable_name, range_start::text, range_end::text"
                " FROM timescaledb_information.chunks ORDER BY 1, 2, 3"
            )
            chunks = cur.fetchall()
        return {"tables": tables, "chunks": chunks}
    finally:
        conn.close()


def container():
    return BlobServiceClient.from_connection_string(CONNECTION_STRING).get_container_client(CONTAINER)


def ownership(name):
    """{path: 'user:group mode type'} of the other packages' trees, now."""
    out = root(name).check_output("find %s -printf '%%u:%%g %%#m %%y %%p\\n'" % " ".join(OTHER_PACKAGES))
    return parse_ownership(out)


def parse_ownership(text):
    found = {}
    for line in text.splitlines():
        owner, mode, kind, path = line.split(" ", 3)
        found[path] = "%s %s %s" % (owner, mode, kind)
    return found


def as_postgres(name, statement):
    """One statement as PostgreSQL's administrative role on the host (peer, the socket)."""
    return root(name).check_output(
        "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p %s -c %s", str(PORT[name]), statement
    )


def env_values(text):
    """KEY="value" lines of an environment file the roles write, unescaped (the roles' env.j2)."""
    values = {}
    for line in text.splitlines():
        m = re.match(r'^([A-Z_]+)="(.*)"$', line)
        if m:
            values[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
    return values


def environment_files(name, unit):
    text = root(name).check_output("systemctl cat %s", unit)
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("EnvironmentFile=")]


def webhook_events():
    path = STATE / "webhook.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def unit_result(name, unit):
    return root(name).check_output("systemctl show -p Result --value %s", unit).strip()


def local_sets(name):
    listing = root(name).run("ls -A %s/%s", BACKUP_DIR, DATABASE).stdout.split()
    return sorted(n[: -len(".manifest.json")] for n in listing if n.endswith(".manifest.json"))


def summary_rows(output):
    summary = task_results(output, "Show the summary")["localhost"]["msg"]
    rows = {}
    for line in summary.splitlines()[1:]:
        m = LINE.match(line)
        assert m, "a summary line that does not parse: %r" % line
        row = m.groupdict()
        row["error"] = row["error"].strip()
        rows.setdefault(row["host"], []).append(row)
    return rows


# --- The operator's session ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def site():
    s = {"before": {h: parse_ownership(root(h).check_output("cat %s", OWNERSHIP_BEFORE)) for h in HOSTS}}
    t0 = time.monotonic()

    # 1. backup.yml across the site.
    s["backup_rc"], s["backup_out"] = playbook("backup.yml")
    s["backup_rows"] = summary_rows(s["backup_out"])
    s["source_at_backup"] = snapshot(SOURCE)
    s["target_own"] = snapshot(TARGET)

    # 2. The nightly timer, now, on one host.
    s["timer_sets_before"] = local_sets(TIMER)
    s["timer_rc"] = sudo(TIMER, "systemctl start tsdb-backup.service")[0]
    s["timer_result"] = unit_result(TIMER, "tsdb-backup.service")
    s["timer_sets_after"] = local_sets(TIMER)
    s["timer_journal"] = root(TIMER).check_output("journalctl -u tsdb-backup.service --no-pager -o cat -n 60")

    # 3. drill.yml across the site.
    s["drill_rc"], s["drill_out"] = playbook("drill.yml")

    # 4. Host 3 rebuilt from host 1's backups in Azure.
    s["restore_rc"], s["restore_out"] = playbook(
        "restore.yml",
        {"restore_host": TARGET, "restore_source_host": SOURCE, "restore_database": DATABASE, "restore_confirm": True},
    )
    s["target_restored"] = snapshot(TARGET) if s["restore_rc"] == 0 else None
    s["target_databases"] = [r[0] for r in query(TARGET, "SELECT datname FROM pg_database ORDER BY 1")]

    # 5. The history guard on every host: archive, then retention.
    s["history"] = {}
    for h in HOSTS:
        old_before = query(h, OLD_TELEMETRY_CHUNKS)[0][0]
        archive = sudo(h, "systemctl start tsdb-history-archive.service")[0]
        retention = sudo(h, "systemctl start tsdb-history-retention.service")[0]
        s["history"][h] = {
            "old_before": old_before,
            "old_after": query(h, OLD_TELEMETRY_CHUNKS)[0][0],
            "archive_rc": archive,
            "retention_rc": retention,
            "journal": root(h).check_output(
                "journalctl -u tsdb-history-archive.service -u tsdb-history-retention.service --no-pager -o cat -n 80"
            ),
        }

    # 6. A failure: host 2's PostgreSQL is down when its nightly unit runs. Then it runs again.
    events_before = len(webhook_events())
    root(TIMER).check_output("systemctl stop %s", PG_SERVICE)
    try:
        s["failed_rc"] = sudo(TIMER, "systemctl start tsdb-backup.service")[0]
        s["failed_result"] = unit_result(TIMER, "tsdb-backup.service")
        s["failed_metrics"] = root(TIMER).check_output("cat %s/tsdb_backup_backup.prom", TEXTFILE_DIR)
    finally:
        root(TIMER).check_output("systemctl start %s", PG_SERVICE)
        root(TIMER).check_output("pg_isready -q -h 127.0.0.1 -p %s -t 60", str(PORT[TIMER]))
    deadline = time.monotonic() + 60  # the OnFailure= unit runs after the failed one
    while time.monotonic() < deadline:
        s["failure_events"] = webhook_events()[events_before:]
        if len(s["failure_events"]) >= 2:
            break
        time.sleep(1)
    s["recovered_rc"] = sudo(TIMER, "systemctl start tsdb-backup.service")[0]
    s["recovered_result"] = unit_result(TIMER, "tsdb-backup.service")

    # 7. Host 3 as a site moving from one login: its backup login holds the owner's role from
    # before tsdb_history_login_user. setup.yml across the site (a run limited to one host would
    # rewrite what is built from the play's hosts: the trust store, the lifecycle policy) names it
    # on host 3 alone and revokes nothing; then the statement it printed is run as the DBA would.
    as_postgres(TARGET, 'GRANT "%s" TO "%s"' % (OWNER, LOGIN))
    s["move_rc"], s["move_out"] = playbook("setup.yml")
    s["move_member_of"] = role_facts(TARGET, LOGIN)[1]
    s["move_told"] = {h: r.get("msg", "") for h, r in task_results(s["move_out"], REVOKE_TASK).items()}
    said = s["move_told"].get(TARGET, "")
    s["move_said"] = said
    s["move_statements"] = re.findall(r"REVOKE [^;]+;", said)
    for statement in s["move_statements"]:
        as_postgres(TARGET, statement)
    s["moved_member_of"] = role_facts(TARGET, LOGIN)[1]

    s["after"] = {h: ownership(h) for h in HOSTS}
    s["seconds"] = round(time.monotonic() - t0)
    print("the operator's session took %d s" % s["seconds"])
    return s


# --- 1. backup.yml ------------------------------------------------------------------------------


def test_backup_yml_backs_up_every_host(site):
    assert site["backup_rc"] == 0, (failures(site["backup_out"]), task_results(site["backup_out"], "Show the summary"))
    assert sorted(site["backup_rows"]) == sorted(HOSTS)
    for h in HOSTS:
        (row,) = site["backup_rows"][h]
        assert BACKUP_ID.match(row["backup_id"]), row
        assert (row["verified"], row["uploaded"], row["error"]) == ("archive", "1", ""), row
    for h, stats in site["backup_out"]["stats"].items():
        assert stats["failures"] == 0 and stats["unreachable"] == 0, (h, stats)


@pytest.mark.parametrize("name", HOSTS)
def test_each_set_is_private_on_disk_and_matches_its_database(site, name):
    backup_id = site["backup_rows"][name][0]["backup_id"]
    host = root(name)
    folder = "%s/%s/" % (BACKUP_DIR, DATABASE)
    for path in (BACKUP_DIR, folder):
        d = host.file(path)
        assert (d.user, d.group, d.mode) == (USER, GROUP, 0o700), path
    for suffix in (".dump", ".globals.sql", ".manifest.json", ".verify.json"):
        f = host.file(folder + backup_id + suffix)
        assert (f.user, f.group, f.mode) == (USER, GROUP, 0o600), suffix
    manifest = json.loads(host.file(folder + backup_id + ".manifest.json").content_string)
    assert (manifest["backup_id"], manifest["database"], manifest["host"]) == (backup_id, DATABASE, name)
    live = site["source_at_backup"] if name == SOURCE else site["target_own"] if name == TARGET else None
    if live is not None:  # (host 2's is not read here: no snapshot of it)
        rows = {t: v["rows"] for t, v in live["tables"].items()}
        assert {t: v["rows"] for t, v in manifest["tables"].items()} == rows


@pytest.mark.parametrize("name", HOSTS)
def test_each_set_is_in_azure(site, name):
    backup_id = site["backup_rows"][name][0]["backup_id"]
    local_manifest = root(name).file("%s/%s/%s.manifest.json" % (BACKUP_DIR, DATABASE, backup_id)).content
    manifest = json.loads(local_manifest)
    folder = "%s/%s/%s/%s/%s/" % (PREFIX, name, DATABASE, backup_id[:4], backup_id[4:6])
    client = container()
    archive = client.download_blob(folder + backup_id + ".dump").readall()
    assert hashlib.sha256(archive).hexdigest() == manifest["archive"]["sha256"]
    assert client.download_blob(folder + backup_id + ".manifest.json").readall() == local_manifest


# --- 2. the nightly timer -----------------------------------------------------------------------


def test_the_nightly_unit_runs_as_the_backup_user_and_adds_a_set(site):
    assert site["timer_rc"] == 0 and site["timer_result"] == "success", site["timer_journal"][-3000:]
    new = sorted(set(site["timer_sets_after"]) - set(site["timer_sets_before"]))
    assert len(new) == 1, (site["timer_sets_before"], site["timer_sets_after"])
    host = root(TIMER)
    assert host.check_output("systemctl show -p User --value tsdb-backup.service") == USER
    manifest = json.loads(host.file("%s/%s/%s.manifest.json" % (BACKUP_DIR, DATABASE, new[0])).content_string)
    assert manifest["host"] == TIMER
    names = container().list_blob_names(name_starts_with="%s/%s/%s/" % (PREFIX, TIMER, DATABASE))
    assert [n for n in names if n.endswith(new[0] + ".manifest.json")], "the timer's set is not in Azure"


# --- 3. drill.yml -------------------------------------------------------------------------------


def test_drill_yml_restores_every_hosts_latest_set_and_leaves_no_scratch(site):
    assert site["drill_rc"] == 0, failures(site["drill_out"])
    for h in HOSTS:
        metrics = root(h).check_output("cat %s/tsdb_backup_drill.prom", TEXTFILE_DIR)
        assert re.search(r'^tsdb_backup_drill_success\{[^}]*database="%s"[^}]*\} 1\.0$' % DATABASE, metrics, re.M), (
            metrics
        )
    leftovers = [d for d in site["target_databases"] if "drill" in d or "verify" in d]
    assert leftovers == []


# --- 4. restore.yml -----------------------------------------------------------------------------


def test_restore_yml_rebuilt_host3_from_host1s_backup_in_azure(site):
    assert site["restore_rc"] == 0, failures(site["restore_out"])
    download = task_results(site["restore_out"], "Download from Azure the backup of %s/%s" % (SOURCE, DATABASE))
    assert download[TARGET]["backup_id"] == site["backup_rows"][SOURCE][0]["backup_id"]
    said = task_results(site["restore_out"], "Say what was done")[TARGET]["msg"]
    assert said[0].startswith("Restored backup %s of %s/%s" % (download[TARGET]["backup_id"], SOURCE, DATABASE))


def test_host1s_set_lands_apart_from_host3s_own_and_the_safety_backup_at_home(site):
    """Backup ids are times: backup.yml across the site gives the hosts sets of the same name in
    the same second. Host 1's set goes to restore-sources/<host 1> on host 3, its own stay as they
    were, and the safety backup of host 3's database is one of host 3's own sets."""
    host = root(TARGET)
    source_id = site["backup_rows"][SOURCE][0]["backup_id"]
    folder = "%s/restore-sources/%s/%s/%s" % (BACKUP_DIR, SOURCE, DATABASE, source_id)
    for suffix in (".dump", ".globals.sql", ".manifest.json"):
        f = host.file(folder + suffix)
        assert (f.user, f.group, f.mode) == (USER, GROUP, 0o600), folder + suffix
    assert json.loads(host.file(folder + ".manifest.json").content_string)["host"] == SOURCE
    own_id = site["backup_rows"][TARGET][0]["backup_id"]
    own = json.loads(host.file("%s/%s/%s.manifest.json" % (BACKUP_DIR, DATABASE, own_id)).content_string)
    assert own["host"] == TARGET
    restore = "Verify, take a safety backup, restore beside and swap into " + DATABASE
    safety = task_results(site["restore_out"], restore)[TARGET]["safety_backup"]["backup_id"]
    manifest = json.loads(host.file("%s/%s/%s.manifest.json" % (BACKUP_DIR, DATABASE, safety)).content_string)
    assert (manifest["host"], manifest.get("purpose")) == (TARGET, "safety-before-restore")


def test_the_restored_rows_equal_host1s(site):
    before, after = site["source_at_backup"], site["target_restored"]
    assert after is not None, "restore failed"
    assert after["tables"] == before["tables"]
    assert after["chunks"] == before["chunks"]
    assert all(t["rows"] > 0 for t in after["tables"].values()), after["tables"]
    # Host 3 had other data of its own: the restore replaced it, and kept it aside.
    assert site["target_own"]["tables"] != before["tables"]
    kept = [d for d in site["target_databases"] if d.startswith(DATABASE + "__pre_restore_")]
    assert len(kept) == 1, site["target_databases"]
    rows = query(TARGET, "SELECT count(*) FROM devices", dbname=kept[0])[0][0]
    assert rows == site["target_own"]["tables"]["public.devices"]["rows"]


def test_the_restored_database_belongs_to_the_application_not_to_the_backup_login(site):
    owners = query(
        TARGET,
        "SELECT (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()),"
        " array_agg(DISTINCT tableowner::text) FROM pg_tables WHERE schemaname = 'public'",
    )[0]
    assert owners == (OWNER, [OWNER])


# --- 5. the history guard -----------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTS)
def test_the_history_guard_archives_then_drops_only_what_is_archived(site, name):
    h = site["history"][name]
    assert (h["archive_rc"], h["retention_rc"]) == (0, 0), h["journal"][-3000:]
    assert h["old_before"] > 0, "prepare.yml seeds 33 days: chunks older than the 30-day retention"
    assert h["old_after"] == 0, h["journal"][-3000:]
    folder = "%s/history/%s/%s/public.esp_telemetry/" % (PREFIX, name, DATABASE)
    names = list(container().list_blob_names(name_starts_with=folder))
    manifests = [n for n in names if n.endswith(".manifest.json")]
    assert manifests and len(manifests) == len([n for n in names if n.endswith(".parquet")]), names
    # diagnostic_results keeps 90 days: its 14 are all live.
    assert query(name, "SELECT min(time) < now() - interval '13 days' FROM diagnostic_results")[0][0] is True


def test_the_history_metrics_are_published(site):
    for h in HOSTS:
        text = root(h).check_output("cat %s/tsdb_backup_retention.prom", TEXTFILE_DIR)
        assert re.search(r'^tsdb_backup_last_run_success\{[^}]*run_type="retention"[^}]*\} 1\.0$', text, re.M), text


# --- 6. the provoked failure and the notification -----------------------------------------------


def test_the_provoked_failure_fails_the_unit_and_the_metrics_say_so(site):
    assert site["failed_rc"] != 0 and site["failed_result"] != "success"
    assert re.search(
        r'^tsdb_backup_last_run_success\{[^}]*host="%s"[^}]*run_type="backup"[^}]*\} 0\.0$' % TIMER,
        site["failed_metrics"],
        re.M,
    ), site["failed_metrics"]


def test_the_failure_reached_the_webhook_without_secrets(site):
    events = site["failure_events"]
    assert events, "no notification arrived"
    assert all(e["path"] == WEBHOOK_PATH for e in events)
    texts = [e["body"]["text"] for e in events]  # Slack format
    assert any(TIMER in t and "fail" in t.lower() for t in texts), texts
    # The runner's own event and systemd's OnFailure= unit both report it.
    assert any("tsdb-backup.service" in t for t in texts), texts
    blob = json.dumps(events)
    for secret in (PASSWORD, CONNECTION_STRING.split("AccountKey=")[1].split(";")[0], WEBHOOK_PATH.rsplit("-", 1)[1]):
        assert secret not in json.dumps([e["body"] for e in events]), "a secret in a notification"
    assert "127.0.0.1:%d" % PORT[TIMER] in blob or "Connection refused" in blob or "connection" in blob.lower()


def test_a_run_after_the_failure_clears_it(site):
    assert site["recovered_rc"] == 0 and site["recovered_result"] == "success"
    text = root(TIMER).check_output("cat %s/tsdb_backup_backup.prom", TEXTFILE_DIR)
    assert re.search(
        r'^tsdb_backup_last_run_success\{[^}]*host="%s"[^}]*run_type="backup"[^}]*\} 1\.0$' % TIMER, text, re.M
    ), text


# --- The lifecycle policy -----------------------------------------------------------------------


def test_the_lifecycle_policy_was_written_once_with_the_default_schedule(site):
    record = json.loads((STATE / "arm.json").read_text())
    assert record["rejected"] == [], record["rejected"]
    puts = [r["path"] for r in record["requests"] if r["method"] == "PUT"]
    # The policy and the blob service's protection, each written once: idempotence writes nothing.
    assert puts and len(puts) == len(set(puts)), "idempotence wrote again: %s" % puts
    rules = record["policy"]["properties"]["policy"]["rules"]
    prefixes = {p: r for r in rules for p in r["definition"]["filters"]["prefixMatch"]}
    # Dump sets: one prefix per host, the default schedule, never deleted.
    for h in HOSTS:
        actions = prefixes["%s/%s/%s/" % (CONTAINER, PREFIX, h)]["definition"]["actions"]["baseBlob"]
        assert actions["tierToCool"]["daysAfterModificationGreaterThan"] == 30
        assert actions["tierToArchive"]["daysAfterModificationGreaterThan"] == 365
    # History: a rule of its own; no rule of the policy deletes anything.
    assert "%s/%s/history/" % (CONTAINER, PREFIX) in prefixes
    assert all("delete" not in r["definition"]["actions"].get("baseBlob", {}) for r in rules), rules


# --- The login, the deploy user, the files ------------------------------------------------------


def role_facts(name, role):
    ((flags, member_of),) = query(
        name,
        "SELECT ARRAY[rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin],"
        " ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
        "       WHERE m.member = r.oid ORDER BY 1)"
        " FROM pg_roles r WHERE rolname = %s",
        (role,),
        dbname="postgres",
    )
    return dict(zip(["super", "createrole", "createdb", "replication", "bypassrls", "login"], flags)), member_of


LEAST = {
    "super": False,
    "createrole": False,
    "createdb": False,
    "replication": False,
    "bypassrls": False,
    "login": True,
}


@pytest.mark.parametrize("name", HOSTS)
def test_the_backup_login_is_least_privilege(site, name):
    flags, member_of = role_facts(name, LOGIN)
    assert flags == LEAST
    # The history guard has a login of its own: the nightly backup's only reads (host 3's owner
    # role from before was revoked by the statement setup.yml printed, step 7).
    assert member_of == ["pg_read_all_data"]
    host = root(name)
    assert 'PGUSER="%s"' % LOGIN in host.file(CONFIG_DIR + "/agent.env").content_string


@pytest.mark.parametrize("name", HOSTS)
def test_each_unit_reads_only_its_own_secrets_file(site, name):
    for unit, files in UNIT_FILES.items():
        assert environment_files(name, unit) == [CONFIG_DIR + "/" + f for f in files], unit
    host = root(name)
    credentials = host.file(CONFIG_DIR + "/credentials.env").content_string
    # The nightly backup never sees the history or the restore login, not even their names.
    assert env_values(credentials) == {"PGPASSWORD": PASSWORD, "AZURE_STORAGE_CONNECTION_STRING": CONNECTION_STRING}
    for other in (HISTORY_LOGIN, HISTORY_PASSWORD, RESTORE_LOGIN, RESTORE_PASSWORD):
        assert other not in credentials
    history = env_values(host.file(CONFIG_DIR + "/history-credentials.env").content_string)
    assert history == {
        "PGUSER": HISTORY_LOGIN,
        "PGPASSWORD": HISTORY_PASSWORD,
        "AZURE_STORAGE_CONNECTION_STRING": CONNECTION_STRING,
    }
    # The drill restores a local set: its login, and no Azure secret.
    drill = env_values(host.file(CONFIG_DIR + "/drill-credentials.env").content_string)
    assert drill == {"PGUSER": RESTORE_LOGIN, "PGPASSWORD": RESTORE_PASSWORD}


@pytest.mark.parametrize("name", HOSTS)
def test_the_history_login_can_drop_chunks_and_the_backup_login_cannot(site, name):
    flags, member_of = role_facts(name, HISTORY_LOGIN)
    assert flags == LEAST
    assert member_of == sorted(["pg_read_all_data", OWNER])
    # drop_chunks checks the hypertable's owner first; nothing is that old, and it is rolled back.
    statement = "SELECT count(*) FROM drop_chunks('public.esp_telemetry', older_than => interval '100 years')"
    conn = connect(name, user=HISTORY_LOGIN, password=HISTORY_PASSWORD)
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(statement)
            assert cur.fetchone() == (0,)
        conn.rollback()
    finally:
        conn.close()
    conn = connect(name)
    try:
        conn.autocommit = False
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege, match="must be owner"):
            cur.execute(statement)
        conn.rollback()
    finally:
        conn.close()


def test_a_site_moving_to_a_history_login_is_told_what_to_revoke_and_nothing_is_revoked(site):
    assert site["move_rc"] == 0, failures(site["move_out"])
    # setup.yml kept the owner's role the DBA had given (the role never revokes) and said so.
    assert site["move_member_of"] == sorted(["pg_read_all_data", OWNER])
    assert LOGIN in site["move_said"] and "never revokes" in site["move_said"], site["move_said"]
    assert site["move_statements"] == ['REVOKE "%s" FROM "%s";' % (OWNER, LOGIN)], site["move_said"]
    # The hosts whose backup login holds no owner's role are told nothing.
    assert {h: said for h, said in site["move_told"].items() if said} == {TARGET: site["move_said"]}
    # The printed statement, run as the DBA, leaves the backup login reading only.
    assert site["moved_member_of"] == ["pg_read_all_data"]


@pytest.mark.parametrize("name", HOSTS)
def test_only_the_drill_unit_logs_in_as_the_restore_superuser(site, name):
    flags = role_facts(name, RESTORE_LOGIN)[0]
    assert (flags["super"], flags["login"]) == (True, True)
    host = root(name)
    assert environment_files(name, "tsdb-backup-drill.service") == [
        CONFIG_DIR + "/agent.env",
        CONFIG_DIR + "/drill-credentials.env",
    ]
    drill = host.file(CONFIG_DIR + "/drill-credentials.env")
    assert (drill.user, drill.group, drill.mode) == ("root", GROUP, 0o640)
    assert 'PGUSER="%s"' % RESTORE_LOGIN in drill.content_string


@pytest.mark.parametrize("name", HOSTS)
def test_everything_ran_as_deploy_through_sudo(site, name):
    host = root(name)
    deploy = host.user("deploy")
    assert deploy.exists and deploy.uid != 0
    log = host.check_output("journalctl _COMM=sudo --no-pager -o cat")
    for target in ("root", USER, "postgres"):
        assert re.search(r"^\s*deploy : .*USER=%s ;" % re.escape(target), log, re.M), "no sudo to %s" % target
    assert not re.search(r"^\s*root : ", log, re.M), "something ran sudo as root"


@pytest.mark.parametrize("name", HOSTS)
def test_directories_and_secrets_are_private(site, name):
    host = root(name)
    for path in (BACKUP_DIR, "/var/lib/tsdb-backup", "/var/log/tsdb-backup"):
        d = host.file(path)
        assert (d.user, d.group, d.mode) == (USER, GROUP, 0o700), path
    d = host.file(CONFIG_DIR)
    assert (d.user, d.group, d.mode) == ("root", GROUP, 0o750)
    for path in (
        "credentials.env",
        "history-credentials.env",
        "drill-credentials.env",
        "notify.json",
        "agent.env",
        "history.env",
    ):
        f = host.file(CONFIG_DIR + "/" + path)
        assert (f.user, f.group, f.mode) == ("root", GROUP, 0o640), path
    for path in ("credentials.env", "history-credentials.env", "drill-credentials.env"):
        assert host.run("runuser -u nobody -- cat %s/%s", CONFIG_DIR, path).rc != 0, path
    credentials = host.file(CONFIG_DIR + "/credentials.env").content_string
    assert "PGPASSWORD=" in credentials and "AZURE_STORAGE_CONNECTION_STRING=" in credentials


@pytest.mark.parametrize("name", HOSTS)
def test_units_timers_and_processes(site, name):
    host = root(name)
    timers = ("tsdb-backup", "tsdb-backup-drill", "tsdb-history-archive", "tsdb-history-retention")
    for timer in (t + ".timer" for t in timers):
        unit = host.service(timer)
        assert unit.is_enabled and unit.is_running, timer
    assert host.service(PG_SERVICE).is_running
    if host.package("prometheus-node-exporter").is_installed:
        assert host.service("prometheus-node-exporter.service").is_running
    # No job is left running, nothing of the backup user outlives its unit.
    assert host.run("pgrep -u %s", USER).rc == 1


# --- Metrics through node_exporter --------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTS)
def test_metrics_reach_node_exporter_through_links_in_its_own_directory(site, name):
    host = root(name)
    d = host.file(TEXTFILE_DIR)
    # As Debian's package left it (root's, 0755; /var/lib/prometheus is its prometheus user's).
    assert site["before"][name][TEXTFILE_DIR] == "root:root 0755 d"
    assert (d.user, d.group, d.mode) == ("root", "root", 0o755)
    assert host.file("/var/lib/prometheus").user == "prometheus"
    for entry in host.check_output("ls %s", TEXTFILE_DIR).split():
        if entry.startswith("tsdb_backup_"):
            link = host.file(TEXTFILE_DIR + "/" + entry)
            assert link.is_symlink and link.linked_to == METRICS_DIR + "/" + entry, entry
    if not host.package("prometheus-node-exporter").is_installed:
        pytest.skip("apt could not install prometheus-node-exporter: prepare.yml made its directory instead")
    port = PORT[name] + 4000
    scraped = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()  # noqa: S310
    assert re.search(r"^node_textfile_scrape_error 0$", scraped, re.M), "node_exporter could not read a file"
    for run_type in ("backup", "drill", "history", "retention"):
        assert re.search(
            r'^tsdb_backup_last_run_success\{[^}]*host="%s"[^}]*run_type="%s"[^}]*\} 1$' % (name, run_type),
            scraped,
            re.M,
        ), run_type


@pytest.mark.parametrize("name", HOSTS)
def test_the_backup_user_writes_only_its_own_metrics_files(site, name):
    """Issue 12: the metrics directory is not writable by the backup user beyond its own files."""
    host = root(name)
    # node_exporter's directory: no file added, none deleted or replaced (a link, or another
    # collector's file) - the directory is root's 0755, each link root's.
    assert host.run("runuser -u %s -- test -w %s", USER, TEXTFILE_DIR).rc != 0
    assert host.run("runuser -u %s -- sh -c ': > %s/tsdb_probe.prom'", USER, TEXTFILE_DIR).rc != 0
    assert host.run("runuser -u %s -- rm -f %s/tsdb_backup_status.prom", USER, TEXTFILE_DIR).rc != 0
    assert host.file(TEXTFILE_DIR + "/tsdb_backup_status.prom").is_symlink
    assert not host.file(TEXTFILE_DIR + "/tsdb_probe.prom").exists
    # Its write directory holds its own files and nothing else.
    assert host.check_output("find %s -mindepth 1 ! -user %s", METRICS_DIR, USER) == ""


# --- No file of another package changed its owner -----------------------------------------------


@pytest.mark.parametrize("name", HOSTS)
def test_no_file_of_another_package_changed_owner_or_mode(site, name):
    before, after = site["before"][name], site["after"][name]
    changed = {p: (before[p], after[p]) for p in set(before) & set(after) if before[p] != after[p]}
    assert changed == {}
    added = {p: a for p, a in after.items() if p not in before}
    links = {p for p in added if p.startswith(TEXTFILE_DIR + "/tsdb_backup_")}
    assert all(added[p].endswith(" l") for p in links), {p: added[p] for p in links}
    others = {p: a for p, a in added.items() if p not in links}
    # New files of PostgreSQL's (new relations, WAL) are its own.
    assert {p: a for p, a in others.items() if not a.startswith("postgres:postgres ")} == {}
    assert not [p for p, a in after.items() if a.startswith(USER + ":")], "a file of the backup user in their trees"


# --- setup.yml refuses one host label for three hosts ------------------------------------------


def test_setup_refuses_hosts_that_would_share_a_host_label(site):
    """Backup sets and the chunk archive are one folder per host label: three hosts given the
    same label (all with a database iot of other rows) would write into each other's history.
    setup.yml stops in its first role, before writing anything."""
    rc, out = playbook("setup.yml", {"tsdb_backup_host_label": "same-label"})
    assert rc != 0
    refused = failures(out)
    assert sorted(refused) == sorted(HOSTS), refused
    for h in HOSTS:
        (msg,) = refused[h]
        assert "Refuse a host label that another host of the play also uses: %s and " % h in msg, msg
        assert "%s/%s/same-label" % (CONTAINER, PREFIX) in msg, msg
    # Nothing of the refused setting reached a host.
    for h in HOSTS:
        agent_env = root(h).file(CONFIG_DIR + "/agent.env").content_string
        assert 'TSDB_BACKUP_HOST_LABEL="%s"' % h in agent_env
