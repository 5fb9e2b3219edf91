"""Signed history manifests on the rig: host A archives a week with its key (every manifest
signed, its key id in the blob metadata); then forged newer versions of three days go into its
folder - one signed with host B's key, one unsigned, one a genuine manifest edited and re-sealed -
each "covering" the live rows. With the trust store, retention drops none of those three days
and drops the other due days; history_restore refuses the forged days; and a range archived
before signing is archived again, signed (reason signs_unsigned), after which it may be dropped.
The tests of this file build on each other, in order."""

import hashlib
import json
import os
import sys
import uuid

import history_helpers as hh
import pytest
from history_helpers import _history

sys.path.insert(0, os.path.join(hh.REPO, "tests", "rig"))
import seed_iot  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing as sg  # noqa: E402

pytestmark = pytest.mark.rig

DB = "it_sign_iot"
ANALYSIS = "it_sign_analysis"
PREFIX = "signed"
NOW = "2026-01-20T00:00:00Z"
WINDOW = ("2026-01-04T00:00:00Z", "2026-01-10T00:00:00Z")
RETENTION = [{"name": "esp_telemetry", "retention_days": 12}]  # due: the days that end by 2026-01-08
FORGED = {
    "20260104T000000Z_20260105T000000Z": "other-host",
    "20260105T000000Z_20260106T000000Z": "unsigned",
    "20260106T000000Z_20260107T000000Z": "resealed",
}


def q(db, sql, args=None):
    return hh.rig.query(db, sql, args)


def fill(db):
    hh.rig.drop_database(db)
    q("postgres", "CREATE DATABASE %s" % db)
    conn = hh.rig.connect(db)
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(seed_iot.SCHEMA)
        cur.execute(
            "INSERT INTO devices (device_id, name, site, installed_at) VALUES ('esp-1', 'esp-1', 'a', '2024-01-01')"
        )
    conn.close()
    q(
        db,
        "INSERT INTO esp_telemetry (time, device_id, motor_current_a, motor_temperature_c, status) "
        "SELECT t, 'esp-1', 40, 95, 'running' FROM generate_series(%s::timestamptz, "
        "%s::timestamptz - interval '1 second', interval '10 minutes') t",
        WINDOW,
    )


def chunk_count():
    return q(DB, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'esp_telemetry'")[0][0]


@pytest.fixture(scope="module")
def store(env, container):
    return hh.open_store(env, container, PREFIX)


@pytest.fixture(scope="module")
def keys(agent_host, tmp_path_factory):
    """Host A's key on the database host (signing_key module); host B's here, for the forger; the
    trust store on the database host lists each for its own host."""
    folder = "/var/backups/it/history-keys-%s" % uuid.uuid4().hex[:8]
    hh.rig.sh(agent_host, "mkdir -p -m 0700 %s" % folder)
    res = hh.run_module("signing_key", {"path": folder + "/host-a.pem"})
    assert res.get("failed") is not True, res
    other, _created = sg.create_key_file(str(tmp_path_factory.mktemp("keys") / "host-b.pem"), mode=0o600)
    trust = {"host-a": [res["public_key"]], "host-b": [other.public_text]}
    hh.rig.write_file(agent_host, folder + "/trusted-signers.json", json.dumps(trust))
    yield {"a": dict(res, path=folder + "/host-a.pem"), "b": other, "trust": folder + "/trusted-signers.json"}
    hh.rig.sh(agent_host, "rm -rf %s" % folder)


@pytest.fixture(scope="module")
def args(env, container, keys):
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
        "host_label": "host-a",
        "trusted_signers_file": keys["trust"],
    }
    for db in (DB, ANALYSIS):
        hh.rig.drop_database(db)


def folder():
    return _history.history_folder(PREFIX, "host-a", DB, "esp_telemetry")


def test_every_manifest_is_signed_by_the_hosts_key(args, store, keys):
    fill(DB)
    res = hh.run_module(
        "chunk_archive",
        dict(args, database=DB, hypertables=["esp_telemetry"], reference_time=NOW, signing_key_file=keys["a"]["path"]),
    )
    assert res.get("failed") is not True and len(res["archived"]) == 6, res
    for m in hh.manifests(store, DB, "esp_telemetry", "host-a"):
        assert m["signature"]["key_id"] == keys["a"]["key_id"]
    metadata = [p["metadata"] for n, p in hh.blobs(store, folder() + "/").items() if n.endswith(".manifest.json")]
    assert {m.get("signed_by") for m in metadata} == {keys["a"]["key_id"]}


def plant(store, label, how, keys):
    """A forged version 2 of a range, "covering" the live rows: the genuine v1 manifest with version
    2, signed with host B's key (naming v1's object), edited after host A signed it and re-sealed
    (the same), or unsigned - as a range archived before signing looks: with an object of its
    own (a copy of v1's) and no signed_by in its metadata."""
    listing = hh.blobs(store, folder() + "/")
    (name,) = [n for n in listing if label in n and n.endswith(".v1.manifest.json")]
    genuine = hm.parse_history_manifest(store.read_blob(name))
    forged = dict(genuine, version=2)
    meta = dict(listing[name]["metadata"], version="2")
    if how == "other-host":
        body = hm.encode_manifest(forged, sg.Policy(signer=keys["b"]))
    elif how == "unsigned":
        data = name.replace(".manifest.json", ".parquet")
        store.container_client.get_blob_client(data.replace(".v1.", ".v2.")).upload_blob(
            store.read_blob(data), metadata=dict(listing[data]["metadata"], version="2")
        )
        forged.pop("signature")
        forged["object"] = dict(genuine["object"], name=genuine["object"]["name"].replace(".v1.", ".v2."))
        meta.pop("signed_by")
        body = hm.encode_manifest(forged)
    else:
        body = hm.encode_manifest(forged)  # host A's v1 signature kept, over other content
    meta["sha256"] = hashlib.sha256(body).hexdigest()
    store.container_client.get_blob_client(name.replace(".v1.", ".v2.")).upload_blob(body, metadata=meta)


def test_forged_history_manifests_never_allow_a_drop(args, store, keys):
    for label, how in FORGED.items():
        plant(store, label, how, keys)
    before = chunk_count()
    res = hh.run_module("chunk_retention", dict(args, database=DB, hypertables=RETENTION, reference_time=NOW))
    assert res.get("failed") is not True, res
    held = {h["range_start"][:10].replace("-", ""): h for h in res["held_back"]}
    for label, how in FORGED.items():
        h = held[label[:8]]
        assert h["reason_code"] == "archive_refused", h
        assert {"other-host": "trusted for host-b", "unsigned": "unsigned", "resealed": "does not verify"}[how] in h[
            "reason"
        ], h
    # The one due day left (2026-01-07) is covered by host A's own signed archive and goes.
    assert len(res["dropped"]) == 1 and chunk_count() == before - 1
    for label in FORGED:
        start = "%s-%s-%s" % (label[:4], label[4:6], label[6:8])
        rows = q(DB, "SELECT count(*) FROM esp_telemetry WHERE time >= %s AND time < %s::date + 1", (start, start))
        assert rows[0][0] == 144, "rows of a forged day were dropped"


def test_history_restore_refuses_a_forged_manifest(args):
    res = hh.run_module(
        "history_restore",
        dict(
            args,
            database=ANALYSIS,
            source_database=DB,
            hypertable="esp_telemetry",
            target_table="esp_forged",
            start="2026-01-04T00:00:00Z",
            end="2026-01-05T00:00:00Z",
            create_table=True,
        ),
    )
    assert res.get("failed") is True and res.get("error_kind") == "integrity", res
    assert "trusted for host-b" in res["msg"]


def test_a_range_archived_before_signing_is_archived_again_signed(args, store, keys):
    """The unsigned version of 2026-01-05 stands for a range archived before signing: chunk_archive
    with the key archives it again from the live rows (version 3, signed), and retention then drops
    it. The other two forged days stay refused."""
    res = hh.run_module(
        "chunk_archive",
        dict(args, database=DB, hypertables=["esp_telemetry"], reference_time=NOW, signing_key_file=keys["a"]["path"]),
    )
    by_day = {x["range_start"][:10]: x for x in res["archived"]}
    assert by_day["2026-01-05"]["reason"] == "signs_unsigned" and by_day["2026-01-05"]["version"] == 3, res
    assert sorted(f["range_start"][:10] for f in res["failures"]) == ["2026-01-04", "2026-01-06"], res
    res = hh.run_module("chunk_retention", dict(args, database=DB, hypertables=RETENTION, reference_time=NOW))
    assert "2026-01-05" in {x["range_start"][:10] for x in res["dropped"]}, res
