"""Fleet-safe history on the rig: two hosts whose databases share a name archive into one
container and prefix and each restores only its own history; a manifest planted under another
host's folder is refused before any row loads; the layout of the previous release (written by
that release's own code) is migrated by server-side copies and then used by retention.

The second host is simulated honestly on the rig's one PostgreSQL: the database `it_fleet_iot`
is filled with host A's rows and archived with host_label host-a, then dropped, created again
under the same name with host B's rows - other pumps, the same days, so the same chunk ranges -
and archived with host_label host-b. That is exactly what two servers with a database `iot` do to
a shared prefix. The tests of this file build on each other, in order.
"""

import json
import os
import subprocess
import sys
import tempfile

import history_helpers as hh
import pytest
from history_helpers import _history

sys.path.insert(0, os.path.join(hh.REPO, "tests", "rig"))
import seed_iot  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner  # noqa: E402

pytestmark = pytest.mark.rig

DB = "it_fleet_iot"
ANALYSIS = "it_fleet_analysis"
LEGACY_DB = "it_fleet_legacy"
PREFIX = "fleet"
NOW = "2026-01-20T00:00:00Z"
WINDOW = ("2026-01-04T00:00:00Z", "2026-01-10T00:00:00Z")
RETENTION = [{"name": "esp_telemetry", "retention_days": 12}]  # due: the days that end by 2026-01-08
PLANTED_DAY = "2026-01-05T00:00:00Z"
PLANTED_RANGE = "20260105T000000Z_20260106T000000Z"
# The last commit with the history layout without host: its own code writes the legacy layout.
LEGACY_RELEASE = "89a53f0cdc708c5ea21eb0dc2958faaeacf2c1f1"
PUMPS = {"host-a": ["esp-a1", "esp-a2"], "host-b": ["esp-b1", "esp-b2", "esp-b3"], "host-l": ["esp-l1"]}


def q(db, sql, args=None):
    return hh.rig.query(db, sql, args)


def fill(db, host):
    """A database with a week of telemetry (every 10 minutes) of the host's pumps."""
    hh.rig.drop_database(db)
    q("postgres", "CREATE DATABASE %s" % db)
    conn = hh.rig.connect(db)
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(seed_iot.SCHEMA)
        cur.execute(
            "INSERT INTO devices (device_id, name, site, installed_at) SELECT d, d, %s, '2024-01-01' FROM unnest(%s) d",
            (host, PUMPS[host]),
        )
    conn.close()
    q(
        db,
        "INSERT INTO esp_telemetry (time, device_id, motor_current_a, motor_temperature_c, status) "
        "SELECT t, d.device_id, 40 + random(), 95, 'running' FROM generate_series(%s::timestamptz, "
        "%s::timestamptz - interval '1 second', interval '10 minutes') t CROSS JOIN devices d",
        WINDOW,
    )


def digest(db, table="esp_telemetry"):
    """Count, md5 of the ordered rows and pumps of the window: the content, independent of the code under test."""
    return q(
        db,
        "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')), "
        "array_agg(DISTINCT device_id ORDER BY device_id) FROM (SELECT time, device_id, motor_current_a, "
        "motor_temperature_c, status FROM %s WHERE time >= %%s AND time < %%s) x" % table,
        WINDOW,
    )[0]


@pytest.fixture(scope="module")
def store(env, container):
    return hh.open_store(env, container, PREFIX)


@pytest.fixture(scope="module")
def args(env, container):
    yield {
        "login_host": "127.0.0.1",
        "port": int(env["PGPORT"]),
        "login_password": env["PGPASSWORD"],
        "auth_mode": "connection_string",
        "connection_string": env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": container,
        "prefix": PREFIX,
        "create_container": True,
        "max_retries": 1,
        "retry_backoff": 0,
    }
    for db in (DB, ANALYSIS, LEGACY_DB):
        hh.rig.drop_database(db)


def folder(host, db=DB):
    return _history.history_folder(PREFIX, host, db, "esp_telemetry")


def ranges_in(store, prefix):
    return {n.rsplit("/", 1)[1].split(".v")[0] for n in hh.blobs(store, prefix + "/") if n.endswith(".manifest.json")}


def test_two_hosts_with_the_same_database_archive_into_one_container(args, store):
    contents = {}
    for host in ("host-a", "host-b"):
        fill(DB, host)
        contents[host] = digest(DB)
        res = hh.run_module(
            "chunk_archive", dict(args, database=DB, hypertables=["esp_telemetry"], reference_time=NOW, host_label=host)
        )
        assert res.get("failed") is not True, res
        # Host B finds nothing of host A's: every range is new, version 1 (in one folder it would
        # have been a 'changed' version 2 on top of host A's).
        assert {(x["reason"], x["version"]) for x in res["archived"]} == {("new", 1)} and len(res["archived"]) == 6
        assert all(x["object"].startswith(store.url(folder(host))) for x in res["archived"])
    assert contents["host-a"][2] == PUMPS["host-a"] and contents["host-b"][2] == PUMPS["host-b"]
    assert (
        ranges_in(store, folder("host-a")) == ranges_in(store, folder("host-b"))
        and len(ranges_in(store, folder("host-a"))) == 6
    )
    assert {n.split("/")[2] for n in hh.blobs(store)} == {"host-a", "host-b"}
    for host in ("host-a", "host-b"):
        assert {(m["host"], m["database"]) for m in hh.manifests(store, DB, "esp_telemetry", host)} == {(host, DB)}
    test_two_hosts_with_the_same_database_archive_into_one_container.contents = contents


def test_each_host_restores_only_its_own_history(args):
    contents = test_two_hosts_with_the_same_database_archive_into_one_container.contents
    hh.rig.drop_database(ANALYSIS)
    q("postgres", "CREATE DATABASE %s" % ANALYSIS)
    for host in ("host-a", "host-b"):
        table = "esp_%s" % host.replace("-", "_")
        res = hh.run_module(
            "history_restore",
            dict(
                args,
                database=ANALYSIS,
                source_database=DB,
                hypertable="esp_telemetry",
                target_table=table,
                start=WINDOW[0],
                end=WINDOW[1],
                create_table=True,
                host_label=host,
            ),
        )
        assert res.get("failed") is not True, res
        assert res["source_host"] == host and res["rows_inserted"] == contents[host][0]
        assert digest(ANALYSIS, table) == contents[host], "%s got another host's rows" % host


def plant(store, label):
    """Host A's verified version of a day, object and manifest, put where host B's v1 was: the
    same names, the sha256 of every byte right - only the host the manifest records is wrong.
    Copied by Azure, metadata included (host-a)."""
    for ext in ("parquet", "manifest.json"):
        names = ["%s/2026/01/%s.v1.%s" % (folder(h), label, ext) for h in ("host-a", "host-b")]
        target = store.container_client.get_blob_client(names[1])
        target.delete_blob()
        target.start_copy_from_url(store.container_client.get_blob_client(names[0]).url)
        assert target.get_blob_properties().metadata["host"] == "host-a"


def test_a_manifest_planted_under_another_hosts_folder_is_refused(args, store):
    """The live database is host B's. Into host B's folder goes host A's archive of one day."""
    plant(store, PLANTED_RANGE)
    restore = dict(
        args,
        database=ANALYSIS,
        source_database=DB,
        hypertable="esp_telemetry",
        target_table="esp_planted",
        start=WINDOW[0],
        end=WINDOW[1],
        create_table=True,
        host_label="host-b",
    )
    res = hh.run_module("history_restore", restore)
    assert res.get("failed") is True and res.get("error_kind") == "integrity", res
    assert "records host host-a" in res["msg"] and "history of host host-b" in res["msg"], res["msg"]
    assert q(ANALYSIS, "SELECT to_regclass('public.esp_planted')")[0][0] is None, "rows loaded before the refusal"

    # Archive compares the live day with the newest version there: refused, not 'unchanged' nor a new version.
    res = hh.run_module(
        "chunk_archive", dict(args, database=DB, hypertables=["esp_telemetry"], reference_time=NOW, host_label="host-b")
    )
    assert res.get("failed") is True and [f["range_start"] for f in res["failures"]] == [PLANTED_DAY], res
    assert res["failures"][0]["error_kind"] == "integrity" and "host host-a" in res["failures"][0]["error"]
    assert res["archived"] == []

    # Retention holds the day back and drops the other due days, each covered by host B's own archive.
    chunks = q(DB, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'esp_telemetry'")[0][0]
    res = hh.run_module(
        "chunk_retention", dict(args, database=DB, hypertables=RETENTION, reference_time=NOW, host_label="host-b")
    )
    assert res.get("failed") is not True, res
    assert [(h["range_start"], h["reason_code"]) for h in res["held_back"]] == [(PLANTED_DAY, "archive_refused")]
    assert "records host host-a" in res["held_back"][0]["reason"]
    assert len(res["dropped"]) == 3 and all("/history/host-b/" in x["archive_object"] for x in res["dropped"])
    left = q(DB, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'esp_telemetry'")[0][0]
    assert left == chunks - 3
    assert (
        q(
            DB,
            "SELECT count(*) FROM esp_telemetry WHERE time >= %s AND time < %s::timestamptz + interval '1 day'",
            (PLANTED_DAY, PLANTED_DAY),
        )[0][0]
        > 0
    )


OLD_ARCHIVE = """
import json, sys
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _history, _pg
cfg = json.loads(sys.argv[1])
res = _history.archive_history(_pg.ConnectionParams(**cfg["pg"]), cfg["db"], _azure.open_store(cfg["store"]),
                               hypertables=["esp_telemetry"], now=cfg["now"])
print(json.dumps({"archived": len(res["archived"]), "failures": res["failures"]}))
"""


def archive_with_the_previous_release(env, container, db):
    """chunk_archive's core as the previous release has it (its own files, from git), in a
    process of its own: the legacy layout exactly as that release writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = os.path.join(tmp, "ansible_collections", "insa", "timescaledb_backup")
        os.makedirs(dest)
        tar = subprocess.run(
            ["git", "-C", hh.REPO, "archive", LEGACY_RELEASE, "plugins/module_utils"], capture_output=True, check=False
        )
        assert tar.returncode == 0, "the previous release %s is not in this clone: %s" % (LEGACY_RELEASE, tar.stderr)
        subprocess.run(["tar", "-x", "-C", dest], input=tar.stdout, check=True)
        cfg = {
            "pg": {
                "login_host": "127.0.0.1",
                "port": int(env["PGPORT"]),
                "login_user": env["PGUSER"],
                "login_password": env["PGPASSWORD"],
            },
            "db": db,
            "store": hh.store_config(env, container, PREFIX),
            "now": NOW,
        }
        proc = subprocess.run(
            [sys.executable, "-c", OLD_ARCHIVE, json.dumps(cfg)],
            env=dict(os.environ, PYTHONPATH=tmp),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def test_a_legacy_layout_is_migrated_then_used_by_retention(env, container, args, store, params, monkeypatch):
    fill(LEGACY_DB, "host-l")
    before = digest(LEGACY_DB)
    old = archive_with_the_previous_release(env, container, LEGACY_DB)
    assert old == {"archived": 6, "failures": []}
    legacy = _history.legacy_folder(PREFIX, LEGACY_DB, "esp_telemetry")
    legacy_blobs = hh.blobs(store, legacy + "/")
    assert len(legacy_blobs) == 12 and not hh.blobs(store, folder("host-l", LEGACY_DB) + "/")

    # Nobody claimed it: reported, never trusted by retention.
    kept = _history.enforce_retention(params, LEGACY_DB, store, RETENTION, now=NOW, host_label="host-l")
    assert kept["dropped"] == [] and {h["reason_code"] for h in kept["held_back"]} == {"not_archived"}
    assert len(kept["held_back"]) == 4 and all("layout without host" in h["reason"] for h in kept["held_back"])

    # Claimed by its owner, it keeps working: the archive finds every day covered and sends nothing.
    again = _history.archive_history(
        params, LEGACY_DB, store, hypertables=["esp_telemetry"], now=NOW, host_label="host-l", legacy_owner="host-l"
    )
    assert again["archived"] == [] and again["bytes"] == 0 and again["failures"] == []

    # The migration, as the timer's runner does it (tsdb-history-migrate.service runs this command).
    state = tempfile.mkdtemp(prefix="it-fleet-state.")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", env["AZURE_STORAGE_CONNECTION_STRING"])
    monkeypatch.setenv("AZURE_STORAGE_CONTAINER", container)
    environ = {
        "TSDB_BACKUP_DATABASES": LEGACY_DB,
        "TSDB_HISTORY_DATABASE": LEGACY_DB,
        "TSDB_BACKUP_HOST_LABEL": "host-l",
        "TSDB_HISTORY_LEGACY_OWNER": "host-l",
        "TSDB_BACKUP_STATE_DIR": state,
        "TSDB_BACKUP_AZURE_AUTH_MODE": "connection_string",
        "TSDB_BACKUP_AZURE_PREFIX": PREFIX,
        "PGHOST": "127.0.0.1",
        "PGPORT": env["PGPORT"],
        "PGUSER": env["PGUSER"],
        "PGPASSWORD": env["PGPASSWORD"],
    }
    assert _runner.main(["history-migrate"], environ=environ) == 0
    mine = folder("host-l", LEGACY_DB)
    copied = hh.blobs(store, mine + "/")
    assert {n[len(mine) :] for n in copied} == {n[len(legacy) :] for n in legacy_blobs}
    for name, info in copied.items():
        if name.endswith(".parquet"):
            props = store.container_client.get_blob_client(name).get_blob_properties()
            assert props.copy.status == "success" and props.copy.source.split("?")[0].endswith(
                name.replace(mine, legacy)
            ), "not a server-side copy of the legacy object"
            assert info["size"] == legacy_blobs[name.replace(mine, legacy)]["size"]
    assert hh.blobs(store, legacy + "/").keys() == legacy_blobs.keys(), "the legacy objects stay"
    for m in hh.manifests(store, LEGACY_DB, "esp_telemetry", "host-l"):
        assert m["host"] == "host-l" and m["migrated_from"]["manifest"].startswith(legacy + "/")

    second = _history.migrate_legacy(LEGACY_DB, store, host_label="host-l", legacy_owner="host-l")
    assert second["migrated"] == [] and second["already"] == 6 and second["complete"] and not second["changed"]
    assert {n: i["etag"] for n, i in hh.blobs(store, mine + "/").items()} == {n: i["etag"] for n, i in copied.items()}

    # Retention now trusts the host's own folder (no legacy owner needed any more) and drops.
    res = hh.run_module(
        "chunk_retention",
        dict(args, database=LEGACY_DB, hypertables=RETENTION, reference_time=NOW, host_label="host-l"),
    )
    assert res.get("failed") is not True, res
    assert res["held_back"] == [] and len(res["dropped"]) == 4
    assert all(x["archive_object"].startswith(store.url(mine)) for x in res["dropped"])
    # And the dropped days come back from it, the rows the previous release archived.
    res = hh.run_module(
        "history_restore",
        dict(args, database=LEGACY_DB, hypertable="esp_telemetry", start=WINDOW[0], end=WINDOW[1], host_label="host-l"),
    )
    assert res.get("failed") is not True, res
    assert res["rows_inserted"] > 0 and digest(LEGACY_DB) == before
