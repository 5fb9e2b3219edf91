"""The history archive with encryption on (chunk_archive, chunk_retention, history_restore through
Ansible on the rig's TimescaleDB container, against Azurite): every object in the container is
age ciphertext that is no Parquet file, retention still drops only what a verified archive
covers, the rows come back only with the identity - exactly those archived - and rows that
arrive for a dropped range become a new generation the host archives without reading the
encrypted earlier one. The tests build on each other, in order."""

import hashlib
import json
import subprocess

import history_helpers as hh
import pytest
from history_helpers import _history

pytestmark = pytest.mark.rig

DB = "it_history_enc"
ANALYSIS = "it_history_enc_a"
PREFIX = "it-enc"
NOW = "2026-01-20T00:00:00Z"
DROPPED = ("2026-01-04T00:00:00Z", "2026-01-08T00:00:00Z")


def q(db, sql, args=None):
    return hh.rig.query(db, sql, args)


def keypair():
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    recipient = subprocess.run(["age-keygen", "-y"], input=identity, capture_output=True, check=True, text=True)
    return identity, recipient.stdout.strip()


def digest(db, start, end):
    return q(
        db,
        "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ("
        "SELECT time, device_id, power_kw, status FROM esp_telemetry WHERE time >= %s AND time < %s) x",
        (start, end),
    )[0]


@pytest.fixture(scope="module")
def keys():
    return {"ops": keypair(), "other": keypair()}


@pytest.fixture(scope="module")
def db():
    hh.rig.drop_database(DB)
    hh.rig.drop_database(ANALYSIS)
    q("postgres", "CREATE DATABASE %s" % DB)
    conn = hh.rig.connect(DB)
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        cur.execute(
            "CREATE TABLE esp_telemetry (time timestamptz NOT NULL, device_id text NOT NULL, "
            "power_kw double precision, status text)"
        )
        cur.execute("SELECT create_hypertable('esp_telemetry', 'time', chunk_time_interval => interval '1 day')")
        cur.execute(
            "INSERT INTO esp_telemetry SELECT t, 'esp-00' || d, random() * 90, 'running' FROM generate_series("
            "'2026-01-04'::timestamptz, '2026-01-10'::timestamptz - interval '1 second', interval '5 minutes') t "
            "CROSS JOIN generate_series(1, 3) d"
        )
    conn.close()
    yield DB
    hh.rig.drop_database(DB)
    hh.rig.drop_database(ANALYSIS)


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
        "host_label": hh.HOST_LABEL,
    }


@pytest.fixture(scope="module")
def store(env, container):
    return hh.open_store(env, container, PREFIX)


@pytest.fixture(scope="module")
def before(db):
    return digest(db, *DROPPED)


def test_every_object_leaves_the_host_encrypted(db, args, store, keys, before):
    a = dict(args, database=db, reference_time=NOW, encryption_recipients=[keys["ops"][1]])
    res = hh.run_module("chunk_archive", a)
    assert res.get("failed") is not True, res
    assert res["failures"] == [] and len(res["archived"]) == 6 and all(x["verified"] for x in res["archived"])
    for m in hh.manifests(store, db, "esp_telemetry"):
        assert m["format_version"] == 2 and m["object"]["encryption"]["recipients"] == [keys["ops"][1]]
        assert m["verified"]["method"] == "reload+pg-hash before encryption, download+sha256"
        start = _history.parse_time_label(m["range"]["label"].split("_")[0])
        folder = _history.month_folder(
            _history.history_folder(PREFIX, hh.HOST_LABEL, db, "public.esp_telemetry"), start
        )
        name = "%s/%s" % (folder, m["object"]["name"])
        data = store.container_client.get_blob_client(name).download_blob().readall()
        assert data.startswith(b"age-encryption.org/v1\n") and b"PAR1" not in data[:64], name
        assert hashlib.sha256(data).hexdigest() == m["object"]["sha256"] and len(data) == m["object"]["size_bytes"]
        assert m["object"]["encryption"]["plaintext_sha256"] != m["object"]["sha256"]
    again = hh.run_module("chunk_archive", a)
    assert again.get("failed") is not True and again["changed"] is False and again["archived"] == [], again


def test_retention_drops_only_what_the_encrypted_archive_covers(db, args):
    a = dict(args, database=db, reference_time=NOW, hypertables=[{"name": "esp_telemetry", "retention_days": 12}])
    res = hh.run_module("chunk_retention", a)
    assert res.get("failed") is not True, res
    assert res["held_back"] == [] and len(res["dropped"]) == 4, res
    assert digest(db, *DROPPED)[0] == 0


def test_the_rows_come_back_only_with_the_identity(db, args, keys, before):
    q("postgres", "CREATE DATABASE %s" % ANALYSIS)
    a = dict(
        args,
        database=ANALYSIS,
        source_database=db,
        hypertable="esp_telemetry",
        start=DROPPED[0],
        end=DROPPED[1],
        create_table=True,
    )
    res = hh.run_module("history_restore", a)
    assert res.get("failed") is True and "reading its rows needs its identity" in res["msg"], res
    res = hh.run_module("history_restore", dict(a, identity=keys["other"][0]))
    assert res.get("failed") is True and "give the identity of one of those" in res["msg"], res
    assert q(ANALYSIS, "SELECT to_regclass('public.esp_telemetry')")[0][0] is None

    res = hh.run_module("history_restore", dict(a, identity=keys["ops"][0]))
    assert res.get("failed") is not True, res
    assert res["rows_inserted"] == before[0] and all(r["verified"] for r in res["ranges"])
    assert digest(ANALYSIS, *DROPPED) == before
    assert keys["ops"][0].split()[-1] not in json.dumps(res)


def test_rows_that_come_back_after_a_drop_are_a_new_generation(db, args, keys):
    # Late telemetry for a dropped day: the host cannot read the encrypted generation 1 to leave
    # its rows out, so generation 2 holds every live row of the range - these late ones.
    q(db, "INSERT INTO esp_telemetry VALUES ('2026-01-05 12:00:30+00', 'esp-late', 1.5, 'late')")
    a = dict(args, database=db, reference_time=NOW, encryption_recipients=[keys["ops"][1]])
    res = hh.run_module("chunk_archive", a)
    assert res.get("failed") is not True and res["failures"] == [], res
    late = [x for x in res["archived"] if x["reason"] == "new_generation"]
    assert len(late) == 1 and late[0]["generation"] == 2 and late[0]["rows"] == 1, res["archived"]
    r = dict(
        args,
        database=ANALYSIS,
        source_database=db,
        hypertable="esp_telemetry",
        start=DROPPED[0],
        end=DROPPED[1],
        identity=keys["ops"][0],
    )
    res = hh.run_module("history_restore", r)
    assert res.get("failed") is not True and res["rows_inserted"] == 1, res
    assert q(ANALYSIS, "SELECT count(*) FROM esp_telemetry WHERE device_id = 'esp-late'")[0][0] == 1
