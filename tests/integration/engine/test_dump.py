"""insa.timescaledb_backup.dump against the rig's TimescaleDB: real files, real counts."""

import json
import threading
import time

import rig
from conftest import files


def test_check_mode_writes_nothing_then_real_run_writes_a_complete_set(container, pg, engine_db, backup_dir):
    args = dict(pg, database=engine_db, backup_dir=backup_dir)
    res = rig.ansible_module("dump", args, check=True)
    assert res.get("failed") is not True, res
    assert res["changed"] is True
    assert res["preflight"]["server_major"] == 17
    assert files(container, backup_dir) == {}, "check mode must not write"

    res = rig.ansible_module("dump", args)
    assert res.get("failed") is not True, res
    bid = res["backup_id"]
    on_disk = files(container, backup_dir)
    db = engine_db
    assert on_disk == {
        db: "700",
        "%s/.lock" % db: "600",
        "%s/%s.dump" % (db, bid): "600",
        "%s/%s.globals.sql" % (db, bid): "600",
        "%s/%s.manifest.json" % (db, bid): "600",
    }
    manifest = json.loads(rig.sh(container, "cat %s/%s/%s.manifest.json" % (backup_dir, db, bid)))
    # The manifest's numbers are the database's real numbers.
    live = {t: n for t, (n, _d) in rig.table_digest(db).items()}
    assert {t: v["rows"] for t, v in manifest["tables"].items()} == live
    assert (
        manifest["hypertables"]["public.esp_telemetry"]["chunks"]
        == rig.query(db, "SELECT count(*) FROM show_chunks('esp_telemetry')")[0][0]
    )
    assert manifest["server"]["timescaledb_version"].startswith("2.")
    assert manifest["dump"]["compression"] == "zstd:1"
    # sha256 and size in the manifest are those of the file on disk.
    sha, size = rig.sh(
        container,
        "sha256sum %s/%s/%s.dump | cut -d' ' -f1; stat -c %%s %s/%s/%s.dump"
        % (backup_dir, db, bid, backup_dir, db, bid),
    ).split()
    assert manifest["archive"]["sha256"] == sha == res["sha256"]
    assert manifest["archive"]["size_bytes"] == int(size) == res["size_bytes"]
    assert "CREATE ROLE postgres" in rig.sh(container, "cat %s/%s/%s.globals.sql" % (backup_dir, db, bid))


def test_stale_partial_is_removed_and_never_listed(container, pg, engine_db, backup_dir):
    rig.sh(
        container,
        "mkdir -m 0700 %s/%s && echo junk > %s/%s/20200101T000000Z.dump.partial"
        % (backup_dir, engine_db, backup_dir, engine_db),
    )
    res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=backup_dir))
    assert res["stale_partials_removed"] == ["%s/%s/20200101T000000Z.dump.partial" % (backup_dir, engine_db)]
    assert not [f for f in files(container, backup_dir) if f.endswith(".partial")]


def test_directory_format_with_jobs(container, pg, engine_db, backup_dir):
    res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=backup_dir, format="directory", jobs=2))
    assert res.get("failed") is not True, res
    assert res["path"].endswith(".dir")
    ver = rig.ansible_module("verify", dict(pg, backup_dir=backup_dir, database=engine_db, level="checksum"))
    assert ver["ok"] is True, ver


def test_counts_come_from_the_dumps_snapshot_while_rows_arrive(container, pg, engine_db, backup_dir):
    """Telemetry keeps arriving during the dump; the manifest must still equal what the
    archive holds, exactly (checked by a real restore)."""
    stop = threading.Event()
    inserted = [0]

    def ingest():
        conn = rig.connect(engine_db)
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute(
                    "INSERT INTO esp_telemetry (time, device_id, status) SELECT now(), 'esp-001', 'running' "
                    "FROM generate_series(1, 50)"
                )
                cur.execute(
                    "INSERT INTO diagnostic_results (time, device_id, check_name, severity) "
                    "VALUES (now(), 'esp-002', 'vibración', 'info')"
                )
                inserted[0] += 50
                time.sleep(0.01)
        conn.close()

    t = threading.Thread(target=ingest)
    t.start()
    try:
        time.sleep(0.5)
        res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=backup_dir))
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    assert res.get("failed") is not True, res
    live = rig.query(engine_db, "SELECT count(*) FROM esp_telemetry")[0][0]
    assert res["tables"]["public.esp_telemetry"]["rows"] < live, "rows kept arriving after the snapshot"
    ver = rig.ansible_module(
        "verify", dict(pg, backup_dir=backup_dir, database=engine_db, backup_id=res["backup_id"], level="restore")
    )
    assert ver.get("failed") is not True, ver["msg"] if "msg" in ver else ver
    assert [c["check"] for c in ver["checks"] if c["ok"]][-1] == "restore"
    assert not (rig.databases() & {d for d in rig.databases() if "__verify_" in d}), "scratch database left behind"
