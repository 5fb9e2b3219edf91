"""insa.timescaledb_backup.restore: round trips with real contents, swap, failure safety."""

import re

import pytest
import rig

FAKE_BIN = "/opt/it-fake-bin"
# Restores the schema, then dies like a killed process would.
CRASHING_PG_RESTORE = """#!/bin/sh
case "$*" in *--version*) exec %(real)s/pg_restore "$@";; esac
%(real)s/pg_restore --section=pre-data "$@"
echo simulated crash >&2
exit 1
"""


@pytest.fixture(scope="module")
def source(container, pg, engine_db):
    """One backup of the engine database and the digest of its real contents."""
    d = "/var/backups/it/restore-src"
    rig.sh(container, "rm -rf %s && mkdir -p -m 0700 %s" % (d, d))
    res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=d))
    assert res.get("failed") is not True, res
    yield {"dir": d, "id": res["backup_id"], "digest": rig.table_digest(engine_db)}
    rig.sh(container, "rm -rf %s" % d)


def restore_args(pg, source, target, **kw):
    args = dict(pg, confirm=True, backup_dir=source["dir"], database="it_engine", backup_id=source["id"], target=target)
    args.update(kw)
    return args


def cleanup(prefix):
    for name in rig.databases():
        if name.startswith(prefix):
            rig.drop_database(name)


def test_restore_refuses_without_confirm(pg, source):
    before = rig.databases()
    res = rig.ansible_module("restore", dict(restore_args(pg, source, "it_rt_noconfirm"), confirm=False))
    assert res["failed"] is True
    assert "confirm: true" in res["msg"]
    assert rig.databases() == before


def assert_analyzed_and_out_of_restore_mode(db):
    """Every table and chunk has statistics, the hypertables their inherited ones (ANALYZE ran in
    restore mode), and a new session is out of restore mode (post_restore ran after it)."""
    never = rig.query(
        db,
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname IN ('public', '_timescaledb_internal') AND c.reltuples < 0",
    )
    assert never == [], "never analyzed: %s" % never
    for table in ("esp_telemetry", "diagnostic_results"):
        inherited = rig.query(
            db, "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = %s AND inherited", (table,)
        )
        assert inherited[0][0] > 0, "%s has no inherited statistics" % table
    assert rig.query(db, "SELECT current_setting('timescaledb.restoring')")[0][0] == "off"


def test_round_trip_fresh_then_swap(container, pg, source):
    target = "it_rt"
    cleanup(target)
    try:
        before = rig.databases()
        res = rig.ansible_module("restore", restore_args(pg, source, target), check=True)
        assert res.get("failed") is not True, res
        assert res["changed"] is True
        assert rig.databases() == before, "check mode must not create or rename databases"

        since = rig.sh(container, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
        res = rig.ansible_module("restore", restore_args(pg, source, target))
        assert res.get("failed") is not True, res
        assert res["replaced_database"] is None and res["safety_backup"] is None
        # While it runs, a restore reports its progress to the host's journal (module.log); the
        # last line says how much was restored.
        journal = rig.sh(container, "journalctl -t ansible-insa.timescaledb_backup.restore --since '%s' -o cat" % since)
        staging = "%s__restore_%s" % (target, source["id"])
        assert re.search(r"restore %s: finished, [0-9.]+ MiB in [0-9.]+ s" % staging, journal), journal
        assert rig.table_digest(target) == source["digest"]
        assert rig.query(target, "SELECT count(*) FROM show_chunks('esp_telemetry')")[0][0] == 11
        assert_analyzed_and_out_of_restore_mode(target)

        # The live database now gets a row the backup does not have; restoring again swaps it out.
        rig.query(target, "INSERT INTO devices VALUES ('esp-999', 'nueva', 'x', NULL, now(), NULL)")
        res = rig.ansible_module("restore", restore_args(pg, source, target, jobs=2))
        assert res.get("failed") is not True, res
        replaced = "%s__pre_restore_%s" % (target, source["id"])
        assert res["replaced_database"] == replaced
        assert rig.table_digest(target) == source["digest"]
        assert rig.query(replaced, "SELECT count(*) FROM devices WHERE device_id = 'esp-999'")[0][0] == 1
        assert_analyzed_and_out_of_restore_mode(target)  # with jobs=2: ANALYZE on two connections
        safety = res["safety_backup"]
        assert rig.sh(container, "test -s %s && test -s %s && echo ok" % (safety["path"], safety["manifest_path"]))
        assert not [d for d in rig.databases() if d.startswith(target + "__restore_")]
    finally:
        cleanup(target)


def test_failure_midway_leaves_the_original_untouched(container, pg, source):
    """pg_restore dies after the schema: the staging copy goes, the live database stays."""
    target = "it_rt_fail"
    cleanup(target)
    real = "/usr/lib/postgresql/17/bin"
    rig.sh(container, "rm -rf %s && mkdir -p %s" % (FAKE_BIN, FAKE_BIN))
    for tool in ("pg_dump", "pg_dumpall", "psql"):
        rig.sh(container, "ln -s %s/%s %s/%s" % (real, tool, FAKE_BIN, tool))
    rig.write_file(container, FAKE_BIN + "/pg_restore", CRASHING_PG_RESTORE % {"real": real}, mode="0755")
    try:
        res = rig.ansible_module("restore", restore_args(pg, source, target))
        assert res.get("failed") is not True, res
        rig.query(target, "INSERT INTO devices VALUES ('esp-998', 'viva', 'x', NULL, now(), NULL)")
        original = rig.table_digest(target)
        res = rig.ansible_module("restore", restore_args(pg, source, target, pg_bin_dir=FAKE_BIN))
        assert res["failed"] is True
        assert "simulated crash" in res["msg"]
        assert rig.table_digest(target) == original
        assert not [d for d in rig.databases() if d.startswith(target + "__")]
    finally:
        rig.sh(container, "rm -rf %s" % FAKE_BIN)
        cleanup(target)
