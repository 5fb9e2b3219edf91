"""The restore drill on the rig's TimescaleDB host, stopped by SIGTERM in the middle of its
pg_restore (what `systemctl stop` and a unit's timeout send): no scratch database may be left in
the live cluster. And a drill removes the scratch databases a killed drill left - only those of
exactly its naming pattern, only when no client is on them.

The drill runs as the runner's own command (``tsdb-backup drill``: _runner.main) inside the
container, with this checkout's engine copied to a folder of its own (the agent installed there
is left alone). docs/RELIABILITY.md lists these rows."""

import json
import subprocess
import time
import uuid

import pytest
import rig

DB = "it_drillfault"
ENGINE = "/var/lib/it-drillfault/engine"  # not /tmp: a tmpfs, which docker cp does not see
STATE = "/var/lib/it-drillfault/state"
RUN = (
    "import sys; sys.path.insert(0, %r); "
    "from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner; "
    "sys.exit(_runner.main(['drill']))" % ENGINE
)


def python(container):
    """An interpreter of the container with psycopg2: the agent's venv, else the system's."""
    return rig.sh(
        container,
        "for p in /opt/tsdb-backup/venv/bin/python /usr/bin/python3; do "
        "$p -c 'import psycopg2' 2>/dev/null && echo $p && break; done",
    ).strip()


@pytest.fixture(scope="module")
def drill_set(container, pg, env):
    """A database with real rows and one verified backup of it; this checkout's engine in the container."""
    rig.drop_database(DB)
    rig.seed(DB, devices=4, days=60, interval=30)  # big enough that pg_restore runs for a while
    d = "/var/backups/it/drillfault"
    rig.sh(
        container,
        "rm -rf %s %s %s && mkdir -p -m 0700 /var/backups/it %s && mkdir -p %s" % (d, ENGINE, STATE, d, STATE),
    )
    res = rig.ansible_module("dump", dict(pg, database=DB, backup_dir=d))
    assert res.get("failed") is not True, res
    rig.copy_engine(container, ENGINE)
    environ = {
        "PGHOST": "127.0.0.1",
        "PGPORT": env["PGPORT"],
        "PGUSER": env["PGUSER"],
        "PGPASSWORD": env["PGPASSWORD"],
        "TSDB_BACKUP_DATABASES": DB,
        "TSDB_BACKUP_DIR": d,
        "TSDB_BACKUP_STATE_DIR": STATE,
        "TSDB_BACKUP_UPLOAD": "false",
    }
    yield {"dir": d, "id": res["backup_id"], "env": environ, "python": python(container)}
    rig.sh(container, "rm -rf %s /var/lib/it-drillfault" % d, check=False)
    for name in scratch_databases():
        rig.drop_database(name)
    rig.drop_database(DB)


def scratch_databases():
    return sorted(n for n in rig.databases() if "__verify_" in n and n.startswith(DB))


def start_drill(container, drill_set):
    pidfile = "/var/lib/it-drillfault/%s.pid" % uuid.uuid4().hex[:8]
    exports = " ".join("%s=%s" % (k, json.dumps(v)) for k, v in drill_set["env"].items())
    script = "echo $$ > %s; exec env %s %s -c %s" % (pidfile, exports, drill_set["python"], json.dumps(RUN))
    proc = subprocess.Popen(
        [rig.DOCKER, "exec", container, "bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, pidfile


def last_drill(container):
    return json.loads(rig.sh(container, "cat %s/last-drill.json" % STATE))["results"][0]


def test_sigterm_during_the_drill_leaves_no_scratch_database(container, drill_set):
    scratch = "%s__verify_%s" % (DB, drill_set["id"])
    proc, pidfile = start_drill(container, drill_set)
    try:
        deadline = time.monotonic() + 120
        # The moment to stop it: the scratch database exists and pg_restore is writing into it.
        while True:
            assert proc.poll() is None, proc.stdout.read()
            running = rig.sh(container, "pgrep -f '[p]g_restore.*%s' || true" % scratch).strip()
            if scratch in rig.databases() and running:
                break
            assert time.monotonic() < deadline, "the drill did not get to its restore"
            time.sleep(0.1)
        rig.sh(container, "kill -TERM $(cat %s)" % pidfile)
        out, _err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert scratch_databases() == [], out
    assert rig.sh(container, "pgrep -f '[p]g_restore.*%s' || true" % scratch).strip() == ""
    r = last_drill(container)
    assert r["success"] is False and "stopped by SIGTERM" in r["error"] and "scratch database was removed" in r["error"]
    assert "stopped by SIGTERM" in out
    # The live database was never touched.
    assert rig.query(DB, "SELECT count(*) FROM devices")[0][0] == 4


def test_a_drill_removes_only_the_stale_scratch_of_its_own_pattern(container, drill_set):
    stale = "%s__verify_20200101T000000Z" % DB  # what a killed drill leaves
    in_use = "%s__verify_20200102T000000Z" % DB  # an operator looks at it
    decoys = ["%s__verify_notes" % DB, "%sx__verify_20200101T000000Z" % DB, "%s__restore_20200101T000000Z" % DB]
    for name in [stale, in_use] + decoys:
        rig.drop_database(name)
        rig.query("postgres", 'CREATE DATABASE "%s"' % name)
    looking = rig.connect(in_use)
    try:
        proc, _pidfile = start_drill(container, drill_set)
        out, _err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        r = last_drill(container)
        assert r["success"] is True and r["stale_scratch_removed"] == [stale], r
        left = rig.databases()
        assert stale not in left and in_use in left and all(d in left for d in decoys)
        assert "removed %s" % stale in out and "%s looks like" % in_use in out
        # The one in use was opened again after the look.
        assert rig.query("postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (in_use,)) == [(True,)]
        assert "%s__verify_%s" % (DB, drill_set["id"]) not in left
    finally:
        looking.close()
        for name in [stale, in_use] + decoys:
            rig.drop_database(name)
