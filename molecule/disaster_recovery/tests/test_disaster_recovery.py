"""Disaster recovery: rebuild host A's database on a fresh host B from Azure alone.

backup.yml backs up A (dr_source) to Azurite; the test records A's tables (row counts, an
md5 of every table's rows in a fixed order, sequences, hypertable chunks and dimensions)
and drops A's database. restore.yml then restores A's latest backup from Azure onto B
(dr_target), which never had A's files. B's database must equal what A had.
"""

import json
import os
import pathlib
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
MOLECULE = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
INVENTORY = MOLECULE["provisioner"]["inventory"]
SETTINGS = INVENTORY["group_vars"]["tsdb_hosts"]
SOURCE = next(p["name"] for p in MOLECULE["platforms"] if "dr_source" in p["groups"])
TARGET = next(p["name"] for p in MOLECULE["platforms"] if "dr_target" in p["groups"])
DATABASE = SETTINGS["tsdb_backup_databases"][0]
BACKUP_DIR = SETTINGS["tsdb_backup_dir"]
USER = GROUP = "tsdb-backup"
TRUST_STORE = "/etc/tsdb-backup/trusted-signers.json"

# User tables: everything but the catalogs (TimescaleDB's chunks live in _timescaledb_*).
USER_TABLES = r"""
SELECT schemaname, tablename FROM pg_tables
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
   AND schemaname NOT LIKE '\_timescaledb%' AND schemaname NOT LIKE 'timescaledb\_%'
 ORDER BY 1, 2
"""


def connect(name, dbname=DATABASE):
    conn = psycopg2.connect(
        host=SETTINGS["tsdb_login_host"],
        port=INVENTORY["host_vars"][name]["tsdb_port"],
        user=SETTINGS["tsdb_login_user"],
        password=SETTINGS["tsdb_login_password"],
        dbname=dbname,
    )
    conn.autocommit = True
    return conn


def databases(name):
    conn = connect(name, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def snapshot(name):
    """What must survive the disaster, read over loopback from the host's database."""
    conn = connect(name)
    try:
        with conn.cursor() as cur:
            # Text forms of timestamps and floats must not depend on the session.
            cur.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET DateStyle = 'ISO, YMD'")
            cur.execute(USER_TABLES)
            tables = {}
            for schema, table in cur.fetchall():
                ident = sql.Identifier(schema, table)
                cur.execute(
                    sql.SQL(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} t"
                    ).format(ident)
                )
                rows, digest = cur.fetchone()
                # Rows stored in the hypertable's parent itself would mean the chunks were lost.
                cur.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(ident))
                tables["%s.%s" % (schema, table)] = {"rows": rows, "md5": digest, "rows_in_parent": cur.fetchone()[0]}
            cur.execute(
                "SELECT hypertable_schema || '.' || hypertable_name, num_chunks, num_dimensions"
                " FROM timescaledb_information.hypertables ORDER BY 1"
            )
            hypertables = {h: {"chunks": c, "dimensions": d} for h, c, d in cur.fetchall()}
            cur.execute(
                "SELECT hypertable_schema || '.' || hypertable_name, column_name, dimension_type, num_partitions,"
                " time_interval::text FROM timescaledb_information.dimensions ORDER BY 1, 2"
            )
            dimensions = cur.fetchall()
            # Chunk boundaries (names may differ after a restore; ranges must not).
            cur.execute(
                "SELECT hypertable_schema || '.' || hypertable_name, range_start::text, range_end::text"
                " FROM timescaledb_information.chunks ORDER BY 1, 2, 3"
            )
            chunks = cur.fetchall()
            cur.execute(
                "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences"
                " WHERE schemaname NOT LIKE '\\_timescaledb%' ORDER BY 1"
            )
            sequences = dict(cur.fetchall())
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            extension = cur.fetchone()
        return {
            "tables": tables,
            "hypertables": hypertables,
            "dimensions": dimensions,
            "chunks": chunks,
            "sequences": sequences,
            "timescaledb": extension[0] if extension else None,
        }
    finally:
        conn.close()


def playbook(name, extra_vars, limit=None):
    """Runs a playbook of the collection on this scenario's inventory; (rc, json output)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    proc = subprocess.run(
        [
            str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(ROOT / "playbooks" / name),
            "-e",
            json.dumps(extra_vars),
        ]
        + (["--limit", limit] if limit else []),
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        pytest.fail("%s printed no json (rc %s): %s" % (name, proc.returncode, (proc.stdout + proc.stderr)[-3000:]))
    return proc.returncode, output


def task_results(output, name):
    """{host: result} of every task called `name` in the json callback's output."""
    found = {}
    for play in output["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == name:
                found.update(task["hosts"])
    return found


def local_sets(host):
    """Backup ids of the complete sets (manifest present) in the host's backup directory."""
    listing = host.run("ls -A %s/%s", BACKUP_DIR, DATABASE).stdout.split()
    return sorted(n[: -len(".manifest.json")] for n in listing if n.endswith(".manifest.json"))


@pytest.fixture(scope="module")
def disaster():
    source, target = (testinfra.get_host("docker://" + n) for n in (SOURCE, TARGET))
    # verify run again after an earlier recovery: B becomes fresh again, A gets its database back.
    leftovers = [d for d in databases(TARGET) if d != "postgres"]
    if leftovers:
        conn = connect(TARGET, "postgres")
        try:
            with conn.cursor() as cur:
                for d in leftovers:
                    cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(d)))
        finally:
            conn.close()
        target.check_output("rm -rf %s/%s", BACKUP_DIR, DATABASE)
    if DATABASE not in databases(SOURCE):
        env = dict(
            os.environ,
            PGHOST=SETTINGS["tsdb_login_host"],
            PGPORT=str(INVENTORY["host_vars"][SOURCE]["tsdb_port"]),
            PGUSER=SETTINGS["tsdb_login_user"],
            PGPASSWORD=SETTINGS["tsdb_login_password"],
        )
        seed = [sys.executable, str(ROOT / "tests" / "rig" / "seed_iot.py"), "--dbname", DATABASE]
        seed += ["--devices", "2", "--days", "3", "--diag-days", "14", "--interval", "600"]
        subprocess.run(seed, env=env, check=True, capture_output=True)

    # 1. Back up A (only A: the target group is dr_source) to Azure.
    backup_rc, backup_out = playbook("backup.yml", {"tsdb_backup_target": "dr_source"})
    record = task_results(backup_out, "Record one summary row per database")
    backup_id = record[SOURCE]["ansible_facts"]["tsdb_backup_results"][-1]["backup_id"] if SOURCE in record else None

    # 2. What A holds, then the disaster: A's database is gone.
    before = snapshot(SOURCE)
    conn = connect(SOURCE, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
    finally:
        conn.close()
    target_sets_before = local_sets(target)
    target_databases_before = databases(TARGET)

    # 3. B trusts A's key only as an operator pins it (docs/SIGNING.md): setup.yml on B alone,
    #    with the key A's setup printed. B never saw A in a play of its own.
    pinned = json.loads(source.file(TRUST_STORE).content_string)[SOURCE]
    setup_rc, setup_out = playbook("setup.yml", {"tsdb_trusted_signers": {SOURCE: pinned}}, limit=TARGET)
    target_trust = json.loads(target.file(TRUST_STORE).content_string)

    # 4. Rebuild on B from A's backups in Azure.
    restore_rc, restore_out = playbook(
        "restore.yml",
        {
            "restore_host": TARGET,
            "restore_source_host": SOURCE,
            "restore_database": DATABASE,
            "restore_confirm": True,
        },
    )
    return {
        "source": source,
        "target": target,
        "backup_rc": backup_rc,
        "backup_out": backup_out,
        "backup_id": backup_id,
        "before": before,
        "source_databases_after": databases(SOURCE),
        "target_sets_before": target_sets_before,
        "target_databases_before": target_databases_before,
        "pinned": pinned,
        "setup_rc": setup_rc,
        "setup_out": setup_out,
        "target_trust": target_trust,
        "restore_rc": restore_rc,
        "restore_out": restore_out,
        "after": snapshot(TARGET) if restore_rc == 0 else None,
    }


def test_b_trusts_a_only_through_the_pinned_key(disaster):
    assert disaster["setup_rc"] == 0, json.dumps(disaster["setup_out"])[-3000:]
    trust = {k: v for k, v in disaster["target_trust"].items() if not k.startswith("_")}
    assert set(trust) == {SOURCE, TARGET}  # B's own key and A's as pinned: no play with A needed
    assert trust[SOURCE] == disaster["pinned"] and len(disaster["pinned"]) == 1
    assert trust[SOURCE] != trust[TARGET]


def test_host_a_was_backed_up_to_azure(disaster):
    assert disaster["backup_rc"] == 0, task_results(disaster["backup_out"], "Show the summary")
    backup_id = disaster["backup_id"]
    assert backup_id
    service = BlobServiceClient.from_connection_string(SETTINGS["tsdb_azure_connection_string"])
    container = service.get_container_client(SETTINGS["tsdb_azure_container"])
    prefix = "%s/%s/%s/" % (SETTINGS["tsdb_azure_prefix"], SOURCE, DATABASE)
    names = {n.rsplit("/", 1)[1] for n in container.list_blob_names(name_starts_with=prefix)}
    assert {backup_id + s for s in (".dump", ".globals.sql", ".manifest.json")} <= names, sorted(names)


def test_host_a_had_iot_data_and_lost_it(disaster):
    before = disaster["before"]
    assert set(before["tables"]) == {"public.devices", "public.esp_telemetry", "public.diagnostic_results"}
    assert all(t["rows"] > 0 for t in before["tables"].values()), before["tables"]
    assert set(before["hypertables"]) == {"public.esp_telemetry", "public.diagnostic_results"}
    assert DATABASE not in disaster["source_databases_after"]


def test_host_b_was_fresh(disaster):
    """B never had A's database nor any of A's backup files: all it gets comes from Azure."""
    assert DATABASE not in disaster["target_databases_before"]
    assert disaster["backup_id"] not in disaster["target_sets_before"]


def test_the_restore_used_azure(disaster):
    assert disaster["restore_rc"] == 0, disaster["restore_out"]["stats"]
    download = task_results(disaster["restore_out"], "Download from Azure the backup of %s/%s" % (SOURCE, DATABASE))
    assert download[TARGET]["backup_id"] == disaster["backup_id"]
    said = task_results(disaster["restore_out"], "Say what was done")[TARGET]["msg"]
    assert said[0].startswith(
        "Restored backup %s of %s/%s as %s on %s" % (disaster["backup_id"], SOURCE, DATABASE, DATABASE, TARGET)
    ), said
    assert said[1].startswith("Source: Azure ("), said


def test_the_downloaded_set_on_b_is_private_and_names_a(disaster):
    """A's set lands in a folder of its own on B (restore-sources/<A>): B's own sets, its prune,
    catch-up and drill never meet it, and a set of B's with the same id (the same second) is not in
    the way."""
    host = disaster["target"]
    folder = "%s/restore-sources/%s/%s/%s" % (BACKUP_DIR, SOURCE, DATABASE, disaster["backup_id"])
    for suffix in (".dump", ".globals.sql", ".manifest.json"):
        f = host.file(folder + suffix)
        assert f.is_file, folder + suffix
        assert (f.user, f.group, f.mode) == (USER, GROUP, 0o600), folder + suffix
    manifest = json.loads(host.file(folder + ".manifest.json").content_string)
    assert (manifest["host"], manifest["database"]) == (SOURCE, DATABASE)
    assert disaster["backup_id"] not in local_sets(host), "A's set among B's own"


def test_row_counts_per_table_are_equal(disaster):
    before, after = disaster["before"], disaster["after"]
    assert after is not None, "restore failed"
    assert {t: v["rows"] for t, v in after["tables"].items()} == {t: v["rows"] for t, v in before["tables"].items()}


def test_contents_per_table_are_equal(disaster):
    before, after = disaster["before"], disaster["after"]
    assert after is not None, "restore failed"
    assert {t: v["md5"] for t, v in after["tables"].items()} == {t: v["md5"] for t, v in before["tables"].items()}


def test_sequences_continue_where_a_stopped(disaster):
    after = disaster["after"]
    assert after is not None, "restore failed"
    assert after["sequences"] == disaster["before"]["sequences"]
    assert after["sequences"]["public.diagnostic_results_id_seq"] > 0


def test_hypertables_have_their_chunks(disaster):
    before, after = disaster["before"], disaster["after"]
    assert after is not None, "restore failed"
    assert after["timescaledb"] == before["timescaledb"]
    assert after["hypertables"] == before["hypertables"]
    assert all(h["chunks"] > 0 for h in after["hypertables"].values()), after["hypertables"]
    assert after["dimensions"] == before["dimensions"]
    assert after["chunks"] == before["chunks"]
    # The rows are in the chunks, none in the parents (a broken restore shows 0 chunks and
    # an empty hypertable although the data files exist).
    for name in after["hypertables"]:
        assert after["tables"][name]["rows_in_parent"] == 0, name
        assert after["tables"][name]["rows"] > 0, name
