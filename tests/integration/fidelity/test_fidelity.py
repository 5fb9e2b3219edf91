"""Fidelity: the hard database of tests/fixtures/fidelity.sql, under a name that needs quoting,
goes through backup.yml to Azurite, is destroyed, and comes back through restore.yml, and again
through the manual procedure of docs/RESTORE.md, with a fingerprint equal to the source's
(schema objects with definitions, data digests per table and chunk, sequences, ACLs, owners,
comments, RLS, large objects, TimescaleDB dimensions and chunk ranges, database properties).

The tests of this file build on each other, in order."""

import datetime
import hashlib
import json
import re
import shlex

import fidelity_helpers as fx
import history_helpers as hh
import pytest
import rig
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from history_helpers import _pg
from psycopg2 import sql

pytestmark = pytest.mark.rig

HOST = "tsdb-local"
STATE = {}


def blob_service(env):
    return BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])


def assert_same(expected, name):
    diffs = fx.fp.diff(expected, fx.fingerprint_of(name))
    assert diffs == [], "%s differs from the source:\n%s" % (name, "\n".join(diffs))


def test_backup_yml_verifies_and_uploads_the_fixture(env, prefix, source):
    rc, out = rig.playbook("backup.yml", {"tsdb_backup_databases": [source["name"]], "tsdb_azure_prefix": prefix})
    assert rc == 0, out[-4000:]
    container = blob_service(env).get_container_client(env["AZURE_STORAGE_CONTAINER"])
    names = sorted(b.name for b in container.list_blobs(name_starts_with="%s/%s/" % (prefix, HOST)))
    # The database's folder is its escaped name; the three files of one set are there.
    folder = "%s/%s/it~20fid~c3~a9lit~c3~a9~20~22db~22~20~f0~9f~9a~80/" % (prefix, HOST)
    parts = sorted(n.rsplit("/", 1)[1].split("Z.", 1)[1] for n in names if n.startswith(folder))
    assert parts == ["dump", "globals.sql", "manifest.json"], names
    STATE["set_url_path"] = next(n for n in names if n.endswith(".manifest.json"))[: -len(".manifest.json")]
    manifest = json.loads(container.download_blob(STATE["set_url_path"] + ".manifest.json").readall())
    assert manifest["database"] == source["name"]
    # Verified at archive level (table of contents by oid, whole archive read) before the upload.
    local = "/var/backups/tsdb/%s/%s.verify.json" % (mf.database_segment(source["name"]), manifest["backup_id"])
    record = json.loads(rig.sh(env["TSDB_CONTAINER"], "cat %s" % shlex.quote(local)))
    assert record["ok"] is True and record["level"] == "archive", record
    refs = {(r["table"], r["name"]) for r in manifest["hypertable_references"]}
    assert ('"Plant A".alarms', "alarm → reading") in refs, refs
    assert manifest["database_properties"]["comment"].startswith("Fidelity fixture")


def test_the_set_verifies_at_restore_level(env, source):
    """What the drill does: a real restore into a scratch database, compared with the manifest;
    the scratch database is gone afterwards."""
    before = rig.databases()
    backup_id = STATE["set_url_path"].rsplit("/", 1)[1]
    pg = {"login_host": "127.0.0.1", "port": int(env["PGPORT"]), "login_password": env["PGPASSWORD"]}
    args = dict(pg, backup_dir="/var/backups/tsdb", database=source["name"], backup_id=backup_id, level="restore")
    res = rig.ansible_module("verify", args)
    assert res.get("failed") is not True and res["ok"] is True, res
    assert rig.databases() == before


def test_restore_yml_from_azure_rebuilds_the_destroyed_database(env, prefix, source):
    rig.drop_database(source["name"])  # the damage: the database is gone
    rc, out = rig.playbook(
        "restore.yml",
        {
            "restore_host": HOST,
            "restore_database": source["name"],
            "restore_confirm": True,
            "tsdb_azure_prefix": prefix,
        },
    )
    assert rc == 0, out[-4000:]
    assert_same(source["fingerprint"], source["name"])


def test_the_nightly_runner_backs_up_the_fixture_too(env, prefix, source):
    """The timer's path: the runner with the role's settings files, the database list as the
    role writes it (JSON), into a prefix of its own."""
    c = env["TSDB_CONTAINER"]
    script = (
        "set -a; . /etc/tsdb-backup/agent.env; . /etc/tsdb-backup/credentials.env; set +a; "
        "export TSDB_BACKUP_DATABASES=%s TSDB_BACKUP_AZURE_PREFIX=%s TSDB_BACKUP_METRICS_DIR=; "
        "runuser -u tsdb-backup -- /opt/tsdb-backup/venv/bin/python /opt/tsdb-backup/lib/tsdb_backup_run.py run"
        % (shlex.quote(json.dumps([source["name"]])), prefix + "-timer")
    )
    rig.sh(c, script)
    container = blob_service(env).get_container_client(env["AZURE_STORAGE_CONTAINER"])
    names = [b.name for b in container.list_blobs(name_starts_with=prefix + "-timer/")]
    manifests = [n for n in names if "/%s/" % mf.database_segment(source["name"]) in n and n.endswith(".json")]
    assert manifests, names
    newest = json.loads(container.download_blob(sorted(manifests)[-1]).readall())
    assert newest["database"] == source["name"] and newest["backup_id"] > STATE["set_url_path"].rsplit("/", 1)[1]
    local = "/var/backups/tsdb/%s/%s.verify.json" % (mf.database_segment(source["name"]), newest["backup_id"])
    assert json.loads(rig.sh(c, "cat %s" % shlex.quote(local)))["ok"] is True


def manual_procedure():
    """The shell block of docs/RESTORE.md section 5, as an operator would copy it."""
    with open(rig.REPO + "/docs/RESTORE.md", encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## 5. Restore without the collection") :]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_manual_procedure_of_the_runbook_gives_the_same_database(env, source):
    target = source["name"] + " manual"
    rig.drop_database(target)
    sas = generate_container_sas(
        env["AZURE_STORAGE_ACCOUNT"],
        env["AZURE_STORAGE_CONTAINER"],
        account_key=env["AZURE_STORAGE_KEY"],
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    url = "%s/%s/%s" % (env["AZURE_STORAGE_BLOB_ENDPOINT"], env["AZURE_STORAGE_CONTAINER"], STATE["set_url_path"])
    script = manual_procedure()
    # Only the three lines the runbook asks the operator to fill in are replaced.
    filled = {"SET_URL": url, "SAS": sas, "DB": target}
    for key, value in filled.items():
        script, n = re.subn(r"(?m)^%s=.*$" % key, "%s=%s" % (key, shlex.quote(value)), script)
        assert n == 1, key
    try:
        rig.sh(
            env["TSDB_CONTAINER"],
            "rm -rf /var/tmp/manual-restore && su postgres -c %s"
            % shlex.quote("export PGPORT=%s; %s" % (env["PGPORT"], script)),
        )
        assert_same(dict(source["fingerprint"]), target)
    finally:
        rig.drop_database(target)
        rig.sh(env["TSDB_CONTAINER"], "rm -rf /var/tmp/manual-restore", check=False)


# --- roles: the globals file is parsed, never run -------------------------------------------


def tampered_copy(env, source, name, globals_text):
    """A copy of the set backup.yml left on the host, its globals file replaced by globals_text
    and its manifest resealed to match: what a writer of the backup storage could produce."""
    c = env["TSDB_CONTAINER"]
    src = "/var/backups/tsdb/" + mf.database_segment(source["name"])
    d = "/var/backups/it/" + name
    seg = d + "/" + mf.database_segment(source["name"])
    rig.sh(c, "rm -rf %s && mkdir -p -m 0700 %s && cp -a %s %s && chown -R root: %s" % (d, d, shlex.quote(src), seg, d))
    manifest_path = rig.sh(c, "ls %s/*.manifest.json | tail -1" % seg).strip()
    manifest = json.loads(rig.sh(c, "cat %s" % manifest_path))
    data = globals_text.encode("utf-8")
    manifest["globals"].update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    rig.write_file(c, manifest_path.replace(".manifest.json", ".globals.sql"), globals_text, mode="0600")
    rig.write_file(c, manifest_path, mf.dumps(manifest).decode("utf-8"), mode="0600")
    return d, manifest["backup_id"]


def role_state(role):
    return rig.query(
        "postgres",
        "SELECT rolsuper, pg_has_role(%s, 'pg_execute_server_program', 'MEMBER') FROM pg_roles WHERE rolname = %s",
        (role, role),
    )[0]


def restore_copy(env, source, backup_dir, backup_id, target):
    pg = {"login_host": "127.0.0.1", "port": int(env["PGPORT"]), "login_password": env["PGPASSWORD"]}
    args = dict(pg, confirm=True, backup_dir=backup_dir, database=source["name"], backup_id=backup_id, target=target)
    return rig.ansible_module("restore", args)


def test_globals_with_a_shell_escape_is_refused_and_nothing_of_it_runs(env, source):
    c = env["TSDB_CONTAINER"]
    rig.sh(c, "rm -f /var/tmp/it-pwned")
    text = (
        "SET client_encoding = 'UTF8';\nCREATE ROLE fidelity_new_role;\n"
        "ALTER ROLE fidelity_reader WITH SUPERUSER;\n\\! touch /var/tmp/it-pwned\n"
    )
    d, backup_id = tampered_copy(env, source, "fidelity-shell", text)
    target = source["name"] + " tampered"
    before = role_state("fidelity_reader")
    try:
        res = restore_copy(env, source, d, backup_id, target)
        assert res.get("failed") is True, res
        assert "line 4" in res["msg"] and "Nothing was changed" in res["msg"], res["msg"]
        assert rig.sh(c, "test -e /var/tmp/it-pwned && echo ran || echo no").strip() == "no"
        assert role_state("fidelity_reader") == before == (False, False)
        assert not rig.query("postgres", "SELECT 1 FROM pg_roles WHERE rolname = 'fidelity_new_role'")
        assert target not in rig.databases()
    finally:
        rig.drop_database(target)
        rig.sh(c, "rm -rf %s /var/tmp/it-pwned" % d)


def test_globals_never_change_an_existing_role(env, source):
    c = env["TSDB_CONTAINER"]
    text = (
        "CREATE ROLE fidelity_reader;\nALTER ROLE fidelity_reader WITH SUPERUSER INHERIT LOGIN BYPASSRLS;\n"
        "GRANT pg_execute_server_program TO fidelity_reader GRANTED BY postgres;\n"
    )
    d, backup_id = tampered_copy(env, source, "fidelity-alter", text)
    target = source["name"] + " roles"
    try:
        res = restore_copy(env, source, d, backup_id, target)
        assert res.get("failed") is not True, res
        left_alone = [w for w in res["warnings_roles"] if "fidelity_reader" in w and "exists" in w]
        assert left_alone and "SUPERUSER" in left_alone[0], res["warnings_roles"]
        assert role_state("fidelity_reader") == (False, False)
        assert target in rig.databases()
    finally:
        rig.drop_database(target)
        rig.sh(c, "rm -rf %s" % d)


# --- history: archive of the fixture's hypertables, restored into an empty database --------

HISTORY_TABLES = ['"Plant A".readings', "public.readings", 'c."a.b"']
REFERENCE = "2026-12-01T00:00:00Z"


@pytest.fixture(scope="module")
def history_args(env, prefix):
    args = {
        "login_host": "127.0.0.1",
        "port": int(env["PGPORT"]),
        "login_password": env["PGPASSWORD"],
        "auth_mode": "connection_string",
        "connection_string": env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": env["AZURE_STORAGE_CONTAINER"],
        "prefix": prefix,
        "max_retries": 1,
        "retry_backoff": 0,
    }
    return args


def time_column(db, table):
    schema, name = _pg.split_qualified(table)
    return rig.query(
        db,
        "SELECT column_name FROM timescaledb_information.dimensions WHERE hypertable_schema = %s "
        "AND hypertable_name = %s AND dimension_number = 1",
        (schema, name),
    )[0][0]


def rows_text(db, table, col, start, end):
    """The rows of [start, end) as text, in order: what the history restore must reproduce."""
    query = sql.SQL("SELECT t::text FROM {} t WHERE {} >= %s AND {} < %s ORDER BY 1").format(
        sql.Identifier(*_pg.split_qualified(table)), sql.Identifier(col), sql.Identifier(col)
    )
    return [r[0] for r in rig.query(db, query, (start, end))]


def test_history_of_the_fixture_restores_into_an_empty_database(env, source, history_args):
    res = hh.run_module(
        "chunk_archive",
        dict(history_args, database=source["name"], hypertables=HISTORY_TABLES, reference_time=REFERENCE),
    )
    assert res.get("failed") is not True, res
    analysis = "it fidélité analysis ü"
    fx.create_database(analysis)
    try:
        for table in HISTORY_TABLES:
            args = dict(history_args, database=analysis, source_database=source["name"], hypertable=table)
            res = hh.run_module(
                "history_restore", dict(args, start="1960-01-01T00:00:00Z", end=REFERENCE, create_table=True)
            )
            assert res.get("failed") is not True, res
            assert res["table_created"] is True and res["rows_inserted"] > 0 and res["ranges"], res
            start, end = res["ranges"][0]["range_start"], res["ranges"][-1]["range_end"]
            col = time_column(source["name"], table)
            want = rows_text(source["name"], table, col, start, end)
            assert rows_text(analysis, table, col, start, end) == want and len(want) == res["rows_archived"], table
            if table == '"Plant A".readings':
                # Its enum, domain and composite types do not exist in the new database.
                assert any("does not exist in database" in w for w in res.get("warnings", [])), res
    finally:
        rig.drop_database(analysis)


def test_retention_names_the_foreign_key_that_keeps_chunks(source, history_args):
    table = '"Plant A".readings'
    chunks = "SELECT count(*) FROM show_chunks('\"Plant A\".readings')"
    before = rig.query(source["name"], chunks)[0][0]
    res = hh.run_module(
        "chunk_retention",
        dict(
            history_args,
            database=source["name"],
            hypertables=[{"name": table, "retention_days": 1}],
            reference_time=REFERENCE,
        ),
    )
    assert res.get("failed") is not True, res
    held = res["held_back"]
    assert held and {h["reason_code"] for h in held} == {"referenced_by_foreign_key"}, held
    assert '"Plant A".alarms' in held[0]["reason"] and '"alarm → reading"' in held[0]["reason"], held[0]
    assert rig.query(source["name"], chunks)[0][0] == before and not res["dropped"]
