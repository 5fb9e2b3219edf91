"""chunk_archive, chunk_retention and history_restore through Ansible on the rig's TimescaleDB
container (venv interpreter: pyarrow and the Azure SDK), against the rig's Azurite.

Each step: check mode -> the real state is unchanged -> real run -> the real state (blobs in
Azurite, chunks and rows in the database) is what the module said -> re-run -> changed false.
The tests of this file build on each other, in order.
"""

import json
import os
import sys
import uuid

import history_helpers as hh
import pytest
from history_helpers import _history

sys.path.insert(0, os.path.join(hh.REPO, "tests", "rig"))
import seed_iot  # noqa: E402

pytestmark = pytest.mark.rig

DB = "it_history_mod"
ANALYSIS = "it_history_mod_a"
PREFIX = "it"
NOW = "2026-01-20T00:00:00Z"
RETENTION = [{"name": "esp_telemetry", "retention_days": 12}, {"name": "diagnostic_results", "retention_days": 20}]
AUDIT = "/tmp/it-history-audit-%s.jsonl" % uuid.uuid4().hex[:8]


def q(db, sql, args=None):
    return hh.rig.query(db, sql, args)


def slices(db, table, ended_by=None):
    """(range_start, range_end) -> [chunk names] of a hypertable, as the database has them."""
    sql = (
        "SELECT range_start, range_end, array_agg(chunk_name::text ORDER BY chunk_name) "
        "FROM timescaledb_information.chunks WHERE hypertable_name = %s"
    )
    args = [table]
    if ended_by:
        sql += " AND range_end <= %s"
        args.append(ended_by)
    return {(s, e): c for s, e, c in q(db, sql + " GROUP BY 1, 2 ORDER BY 1", args)}


def range_digest(db, table, start, end):
    """Count and md5 of the ordered rows of a range: the real content, independent of the code under test."""
    return q(
        db,
        "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ("
        "SELECT time, device_id, motor_current_a, motor_voltage_v, intake_pressure_kpa, discharge_pressure_kpa, "
        "motor_temperature_c, vibration_x_mm_s, vibration_y_mm_s, frequency_hz, flow_rate_m3_h, power_kw, status "
        "FROM %s WHERE time >= %%s AND time < %%s) x" % table,
        (start, end),
    )[0]


@pytest.fixture(scope="module")
def db():
    hh.rig.drop_database(DB)
    hh.rig.drop_database(ANALYSIS)
    q("postgres", "CREATE DATABASE %s" % DB)
    conn = hh.rig.connect(DB)
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(seed_iot.SCHEMA)
        cur.execute(seed_iot.SPACE_PARTITION)
        cur.execute(
            "INSERT INTO devices (device_id, name, site, installed_at) VALUES "
            "('esp-001', 'Bomba 1', 'Añelo Norte', '2024-01-01'), ('esp-002', 'Bomba 2', 'Río Neuquén', '2024-01-01')"
        )
    conn.close()
    q(
        DB,
        "INSERT INTO esp_telemetry SELECT t, d.device_id, 40 + random(), 2300, 1200 + random(), 9800, 95, 1, 1, 50, "
        "80, 90, CASE WHEN random() < 0.1 THEN 'alarm' ELSE 'running' END "
        "FROM generate_series('2026-01-04'::timestamptz, '2026-01-10'::timestamptz - interval '1 second', "
        "interval '10 minutes') t CROSS JOIN devices d",
    )
    q(
        DB,
        "INSERT INTO diagnostic_results (time, device_id, check_name, severity, score, details) SELECT t, d.device_id, "
        "'vibración', 'info', random(), jsonb_build_object('nota', 'análisis') FROM generate_series("
        "'2025-12-19'::timestamptz, '2026-01-10'::timestamptz - interval '1 second', interval '1 hour') t "
        "CROSS JOIN devices d",
    )
    yield DB
    hh.rig.drop_database(DB)
    hh.rig.drop_database(ANALYSIS)
    hh.rig.sh(hh.rig.load_env()["TSDB_CONTAINER"], "rm -f %s" % AUDIT, check=False)


@pytest.fixture(scope="module")
def store(env, container):
    return hh.open_store(env, container, PREFIX)


@pytest.fixture(scope="module")
def args(env, container):
    return {
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
        "reference_time": NOW,
        "host_label": hh.HOST_LABEL,
    }


def history_blobs(store):
    client = store.container_client
    if not client.exists():
        return {}
    return hh.blobs(store)


def test_chunk_archive(db, args, store):
    expected = {("public.esp_telemetry", s) for s in slices(db, "esp_telemetry")}
    expected |= {("public.diagnostic_results", s) for s in slices(db, "diagnostic_results")}
    a = dict(args, database=db)

    res = hh.run_module("chunk_archive", a, check=True)
    assert res.get("failed") is not True, res
    assert res["changed"] is True
    assert {x["status"] for x in res["archived"]} == {"would_archive"}
    assert len(res["archived"]) == len(expected)
    assert history_blobs(store) == {}, "check mode must not upload"

    res = hh.run_module("chunk_archive", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is True and res["failures"] == [] and res["bytes"] > 0
    assert len(res["archived"]) == len(expected) and all(x["verified"] for x in res["archived"])
    assert res["oldest_unarchived"] is None
    names = set(history_blobs(store))
    for m in [*hh.manifests(store, db, "esp_telemetry"), *hh.manifests(store, db, "diagnostic_results")]:
        start, end = (_history.parse_time_label(x) for x in m["range"]["label"].split("_"))
        assert (m["hypertable"], (start, end)) in expected
        table = m["hypertable"].split(".")[1]
        live = q(db, "SELECT count(*) FROM %s WHERE time >= %%s AND time < %%s" % table, (start, end))[0][0]
        assert m["rows"] == m["covers"]["rows"] == live
        assert m["version"] == m["generation"] == 1 and m["verified"]["rows"] == live
        assert sorted(c["name"] for c in m["chunks"]) == slices(db, table)[(start, end)]
        assert [c["name"] for c in m["columns"]][:2] == ["time", "device_id"] or table == "diagnostic_results"
        assert m["host"] == hh.HOST_LABEL and m["database"] == db
        folder = _history.month_folder(_history.history_folder(PREFIX, hh.HOST_LABEL, db, m["hypertable"]), start)
        assert "%s/%s" % (folder, m["object"]["name"]) in names
        props = store.properties("%s/%s" % (folder, m["object"]["name"]))
        assert props["sha256"] == m["object"]["sha256"] and props["size"] == m["object"]["size_bytes"]
    assert len(names) == 2 * len(expected)

    res = hh.run_module("chunk_archive", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is False and res["bytes"] == 0 and res["archived"] == []
    assert set(history_blobs(store)) == names


def test_chunk_retention(db, args, store):
    env_container = hh.rig.load_env()["TSDB_CONTAINER"]
    due = {("public.esp_telemetry", s): c for s, c in slices(db, "esp_telemetry", "2026-01-08").items()}
    due.update({("public.diagnostic_results", s): c for s, c in slices(db, "diagnostic_results", "2025-12-31").items()})
    assert len(due) == 5
    chunks_before = q(db, "SELECT count(*) FROM timescaledb_information.chunks")[0][0]
    rows_before = {k: range_digest(db, "esp_telemetry", *k[1]) for k in due if k[0] == "public.esp_telemetry"}
    a = dict(args, database=db, hypertables=RETENTION, audit_log=AUDIT)

    res = hh.run_module("chunk_retention", a, check=True, diff=True)
    assert res.get("failed") is not True, res
    assert res["changed"] is True and res["held_back"] == []
    got = {
        (
            x["hypertable"],
            (hh._azure.parse_timestamp(x["range_start"]), hh._azure.parse_timestamp(x["range_end"])),
        ): sorted(x["chunks"])
        for x in res["dropped"]
    }
    assert got == due
    diff = res["diff"]
    assert all(c in diff["before"] for chunks in due.values() for c in chunks) and diff["after"] == ""
    assert q(db, "SELECT count(*) FROM timescaledb_information.chunks")[0][0] == chunks_before
    assert hh.rig.sh(env_container, "test -e %s && echo yes || echo no" % AUDIT).strip() == "no"

    res = hh.run_module("chunk_retention", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is True and len(res["dropped"]) == len(due)
    assert q(db, "SELECT count(*) FROM timescaledb_information.chunks")[0][0] == chunks_before - sum(
        len(c) for c in due.values()
    )
    for table, (start, end) in due:
        assert (
            q(db, "SELECT count(*) FROM %s WHERE time >= %%s AND time < %%s" % table.split(".")[1], (start, end))[0][0]
            == 0
        )
    audit = [json.loads(x) for x in hh.rig.sh(env_container, "cat %s" % AUDIT).splitlines()]
    assert len(audit) == len(due) and {x["event"] for x in audit} == {"chunks_dropped"}
    assert hh.rig.sh(env_container, "stat -c %%a %s" % AUDIT).strip() == "600"

    res = hh.run_module("chunk_retention", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is False and res["dropped"] == []
    test_chunk_retention.rows_before = rows_before


def test_history_restore_into_analysis_database(db, args):
    hh.rig.query("postgres", "CREATE DATABASE %s" % ANALYSIS)
    window = ("2026-01-04T00:00:00Z", "2026-01-08T00:00:00Z")
    a = dict(
        args,
        database=ANALYSIS,
        source_database=db,
        hypertable="esp_telemetry",
        start=window[0],
        end=window[1],
        create_table=True,
    )
    a.pop("reference_time")
    expected = test_chunk_retention.rows_before

    res = hh.run_module("history_restore", a, check=True)
    assert res.get("failed") is not True, res
    assert res["changed"] is True and res["table_created"] is True
    assert res["rows_inserted"] == sum(n for n, _d in expected.values())
    assert q(ANALYSIS, "SELECT to_regclass('public.esp_telemetry')")[0][0] is None

    res = hh.run_module("history_restore", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is True and res["rows_inserted"] == res["rows_archived"] == sum(
        n for n, _d in expected.values()
    )
    assert all(r["verified"] for r in res["ranges"])
    for (_t, (start, end)), digest in expected.items():
        assert range_digest(ANALYSIS, "esp_telemetry", start, end) == digest

    res = hh.run_module("history_restore", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is False and res["rows_inserted"] == 0 and res["rows_present"] == res["rows_archived"]


def test_history_restore_into_live_then_archive_sees_it_covered(db, args):
    day = ("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")
    a = dict(args, database=db, hypertable="esp_telemetry", start=day[0], end=day[1])
    a.pop("reference_time")
    key = ("public.esp_telemetry", tuple(hh._azure.parse_timestamp(x) for x in day))
    res = hh.run_module("history_restore", a, check=True)
    assert res["changed"] is True and res["rows_inserted"] == test_chunk_retention.rows_before[key][0]
    assert range_digest(db, "esp_telemetry", *key[1])[0] == 0

    res = hh.run_module("history_restore", a)
    assert res.get("failed") is not True, res
    assert range_digest(db, "esp_telemetry", *key[1]) == test_chunk_retention.rows_before[key]

    res = hh.run_module("chunk_archive", dict(args, database=db))
    assert res.get("failed") is not True, res
    assert res["changed"] is False and res["bytes"] == 0


def test_damaged_archive_is_held_back_until_archived_again(db, args, store):
    """The day restored above is due again; its object is damaged in Azure (content changed,
    metadata kept): retention keeps the chunk, reverify archives it again, then it goes."""
    folder = _history.month_folder(
        _history.history_folder(PREFIX, hh.HOST_LABEL, db, "esp_telemetry"),
        hh._azure.parse_timestamp("2026-01-05T00:00:00Z"),
    )
    label = "20260105T000000Z_20260106T000000Z"
    entry = _history.list_ranges(store, "%s/%s." % (folder, label))[label]
    blob = store.container_client.get_blob_client(entry["data"][1]["name"])
    meta = blob.get_blob_properties().metadata
    blob.upload_blob(b"not parquet at all", overwrite=True, metadata=meta)
    a = dict(args, database=db, hypertables=RETENTION)

    res = hh.run_module("chunk_retention", a)
    assert res.get("failed") is not True, res
    assert res["changed"] is False and res["dropped"] == []
    assert [(h["range_start"], h["reason_code"]) for h in res["held_back"]] == [
        ("2026-01-05T00:00:00Z", _history.HELD_DAMAGED)
    ]
    assert any("kept" in w for w in res.get("warnings", []))
    assert range_digest(db, "esp_telemetry", *[hh._azure.parse_timestamp(x) for x in label.split("_")])[0] > 0

    res = hh.run_module("chunk_archive", dict(args, database=db, reverify=True))
    assert res.get("failed") is not True, res
    assert [(x["range_start"], x["reason"], x["version"]) for x in res["archived"]] == [
        ("2026-01-05T00:00:00Z", "replaces_damaged", 2)
    ]

    res = hh.run_module("chunk_retention", a)
    assert res.get("failed") is not True, res
    assert [x["range_start"] for x in res["dropped"]] == ["2026-01-05T00:00:00Z"] and res["held_back"] == []


def test_retention_warns_about_a_timescaledb_retention_policy(db, args):
    """The Apache edition cannot create one; a job row like the one add_retention_policy makes
    (not scheduled) stands in for it."""
    q(
        db,
        "INSERT INTO _timescaledb_config.bgw_job (application_name, schedule_interval, max_runtime, max_retries, "
        "retry_period, proc_schema, proc_name, scheduled, hypertable_id, config) SELECT 'Retention Policy [it]', "
        "'1 day', '5 min', -1, '5 min', '_timescaledb_functions', 'policy_retention', false, id, "
        "'{\"drop_after\": \"30 days\"}' FROM _timescaledb_catalog.hypertable WHERE table_name = 'esp_telemetry'",
    )
    res = hh.run_module("chunk_retention", dict(args, database=db, hypertables=RETENTION), check=True)
    assert res.get("failed") is not True, res
    assert [w for w in res.get("warnings", []) if "TimescaleDB retention policy" in w]
    assert res["hypertables"]["public.esp_telemetry"]["retention_policy_jobs"]


def test_bad_input_fails_clearly(db, args):
    res = hh.run_module("chunk_retention", dict(args, database=db, hypertables=[{"name": "nope", "retention_days": 3}]))
    assert res.get("failed") is True and "not a hypertable" in res["msg"]
    res = hh.run_module("chunk_archive", dict(args, database=db, hypertables=["bad name;"]))
    assert res.get("failed") is True and "quote parts with spaces" in res["msg"]
    restore = dict(
        args, database=db, hypertable="esp_telemetry", start="2020-01-01T00:00:00Z", end="2020-01-02T00:00:00Z"
    )
    restore.pop("reference_time")
    res = hh.run_module("history_restore", restore)
    assert res.get("failed") is True and "no archived range" in res["msg"]
    res = hh.run_module("chunk_archive", dict(args, database=db), python="/usr/bin/python3")
    assert res.get("failed") is True and ("azure-storage-blob" in res["msg"] or "pyarrow" in res["msg"])
