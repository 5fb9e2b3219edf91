"""Faults during a restore (the restore module through Ansible on the suite's container, strategy
beside, a real pg_restore) and during a download: kill -9 of pg_restore, kill -9 of the module
itself while pg_restore runs and while it takes the safety backup of the live database, and the
disk filling up while blob_download streams a set from Azurite.

What must hold: the live database keeps its name, accepts connections and its rows are exactly
what they were (table digest, including a row the backup does not have); the next restore
succeeds; a download that ran out of room leaves no partial file and no manifest, and the set
in Azure is untouched."""

import uuid

import faults_helpers as fh
import pytest
from faults_helpers import rig

pytestmark = pytest.mark.rig

DB = "flt_restore"
RESTORING = "^[^ ]*pg_restore .*--dbname="  # anchored: never the polling shell itself


@pytest.fixture(scope="module")
def source(agent, env):
    """A set of flt_restore; then the live database gets a row the set does not have."""
    d = "/var/backups/faults-restore"
    rig.drop_database(DB)
    rig.seed(DB, devices=10, days=10, interval=60)
    rig.sh(agent, "rm -rf %s && mkdir -p -m 0700 %s" % (d, d))
    res = rig.ansible_module("dump", {**pg_args(env), "database": DB, "backup_dir": d})
    assert res.get("failed") is not True, res
    yield {"dir": d, "id": res["backup_id"], "digest": rig.table_digest(DB)}
    rig.sh(agent, "rm -rf %s" % d)
    cleanup()


def pg_args(env):
    return {"login_host": "127.0.0.1", "port": int(env["PGPORT"]), "login_password": env["PGPASSWORD"]}


def cleanup():
    for name in rig.databases():
        if name.startswith(DB):
            rig.drop_database(name)


NEWER = "INSERT INTO devices VALUES ('esp-999', 'nueva', 'x', NULL, now(), NULL) ON CONFLICT DO NOTHING"


@pytest.fixture
def live(source):
    """The live database as the test starts: the set's rows plus one newer row; its digest."""
    for name in rig.databases():
        if name.startswith(DB + "__"):
            rig.drop_database(name)
    rig.query(DB, NEWER)
    digest = rig.table_digest(DB)
    assert digest != source["digest"]
    return digest


def restore_args(env, source, **kw):
    args = {**pg_args(env), "confirm": True, "backup_dir": source["dir"], "database": DB, "backup_id": source["id"]}
    args.update(kw)
    return args


def live_is_untouched(digest):
    """The live database under its name, accepting connections, with exactly its rows."""
    allow = dict(rig.query("postgres", "SELECT datname, datallowconn FROM pg_database WHERE datname = %s", (DB,)))
    assert allow == {DB: True}, allow
    assert rig.table_digest(DB) == digest


def the_next_restore_works(env, source):
    res = fh.run_module("restore", restore_args(env, source), python="/usr/bin/python3")
    assert res.get("failed") is not True, res
    assert rig.table_digest(DB) == source["digest"]
    assert res["replaced_database"] == "%s__pre_restore_%s" % (DB, source["id"])
    return res


def module_pid(c, child):
    """The restore module's process: the parent of its pg_restore / pg_dump (with pipelining its
    command line is just the interpreter's)."""
    ppid = int(rig.sh(c, "ps -o ppid= -p %d" % child).strip())
    assert "python" in rig.sh(c, "ps -o args= -p %d" % ppid), rig.sh(c, "ps -eo pid,ppid,args")
    return ppid


def scratch():
    return sorted(n for n in rig.databases() if n.startswith(DB + "__restore_"))


def test_kill9_of_pg_restore(agent, env, source, live):
    proc = fh.module_popen("restore", restore_args(env, source), python="/usr/bin/python3")
    fh.kill9(agent, fh.wait_pid(agent, RESTORING, timeout=120, exact=False))
    res = fh.module_result(proc)
    assert res.get("failed") is True, res
    live_is_untouched(live)
    assert scratch() == []  # the module saw pg_restore die and dropped its copy
    the_next_restore_works(env, source)


def test_kill9_of_the_restore_module_while_pg_restore_runs(agent, env, source, live):
    proc = fh.module_popen("restore", restore_args(env, source), python="/usr/bin/python3")
    restoring = fh.wait_pid(agent, RESTORING, timeout=120, exact=False)
    fh.kill9(agent, module_pid(agent, restoring))
    proc.communicate(timeout=120)
    rig.sh(agent, "end=$((SECONDS+30)); while pgrep -x pg_restore; do [ $SECONDS -lt $end ] || exit 1; sleep 0.2; done")
    live_is_untouched(live)
    left = scratch()
    assert left, "the killed restore left no copy: the fault was not where the test meant it"
    # The next restore of the same set builds its copy again (the stale one is replaced) and swaps.
    the_next_restore_works(env, source)
    assert scratch() == []


def test_kill9_of_the_restore_module_during_the_safety_backup(agent, env, source, live):
    lock = fh.TableLock(DB, "devices")  # holds the safety backup's pg_dump of the live database
    try:
        proc = fh.module_popen("restore", restore_args(env, source), python="/usr/bin/python3")
        fh.wait_lock_waiter(DB, timeout=180)
        fh.kill9(agent, module_pid(agent, fh.wait_pid(agent, "pg_dump")))
        proc.communicate(timeout=120)
    finally:
        lock.release()
    live_is_untouched(live)
    folder = "%s/%s" % (source["dir"], DB)
    assert [n for n in fh.local_sets(agent, folder) if n.endswith(".partial")], (
        "the killed safety backup left no partial"
    )
    the_next_restore_works(env, source)
    # The next safety backup removed the killed one's partial (under the folder's lock).
    assert not [n for n in fh.local_sets(agent, folder) if n.endswith(".partial")]


def test_disk_full_during_a_download(agent, env, digest_set):
    k, bid, digest = digest_set
    dest = "%s/dl-%s" % (fh.SMALL, uuid.uuid4().hex[:8])
    fill = "%s/fill-%s" % (fh.SMALL, uuid.uuid4().hex[:8])
    # Leave 1 MiB: the 7 MiB archive runs out of room mid-stream.
    rig.sh(
        agent,
        "avail=$(df -k --output=avail %s | tail -1); dd if=/dev/zero of=%s bs=1k count=$((avail - 1024)) "
        "status=none" % (fh.SMALL, fill),
    )
    args = {
        "auth_mode": "connection_string",
        "connection_string": fh.connection_string(env, fh.azurite_port(env)),
        "container": k.container,
        "prefix": fh.PREFIX,
        "dest": dest,
        "database": k.db,
        "host_label": fh.HOST,
        "backup_id": bid,
        "trusted_signers_file": "/etc/tsdb-backup/trusted-signers.json",
    }
    try:
        res = fh.run_module("blob_download", args)
        assert res.get("failed") is True, res
        assert "No space left on device" in res["msg"], res["msg"]
        assert fh.local_sets(agent, "%s/%s" % (dest, k.db)) == {}  # no partial, no archive, no manifest
    finally:
        rig.sh(agent, "rm -f %s" % fill)
    assert k.azure(expect=[bid]) == [bid]  # the set in Azure is untouched
    res = fh.run_module("blob_download", args)
    assert res.get("failed") is not True, res
    got = fh.assert_local_sets_whole(agent, "%s/%s" % (dest, k.db))
    assert got == [bid]
    assert fh.restored_digest(agent, env, "%s/%s" % (dest, k.db), bid) == digest
    rig.sh(agent, "rm -rf %s" % dest)


@pytest.fixture
def digest_set(agent, env, live):
    """A set of the live flt_restore in Azure, taken by the backup unit (signed by the host's key),
    and the live database's digest."""
    k = fh.Case(agent, env, DB)
    try:
        assert k.unit.run() == "inactive", k.unit.journal()
        ids = k.azure()
        assert len(ids) == 1
        yield k, ids[0], live
    finally:
        k.cleanup()
