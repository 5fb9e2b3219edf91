"""The restore drill must not leave production worse off: it removes only its own leftovers
(exact names, no client on them), checks the room first, and a SIGTERM (systemctl stop, a
unit's timeout) ends it through the cleanup that drops its scratch database - tested on a real
child process that gets a real SIGTERM while its "pg_restore" (a real child of its own) runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _drill, _pg, _restore

BID = "20261127T020000Z"
COLLECTIONS = os.path.join(os.path.dirname(__file__), "..", "..", "collections")


def test_only_the_drills_own_scratch_names_match():
    assert _drill.is_scratch_of("iot__verify_%s" % BID, "iot")
    for other in (
        "iot",
        "iot__restore_%s" % BID,  # a restore's staging copy
        "iot__pre_restore_%s" % BID,  # a kept copy of a restore
        "iot2__verify_%s" % BID,  # another database's
        "iot__verify_%s_x" % BID,
        "iot__verify_latest",
        "iot__verify_20261127T0200Z",
        "x_iot__verify_%s" % BID,
    ):
        assert not _drill.is_scratch_of(other, "iot"), other
    long = "d" * 60
    name = _restore.scratch_name(long, "verify", BID)
    assert len(name.encode()) <= 63 and _drill.is_scratch_of(name, long)
    assert not _drill.is_scratch_of(name, "d" * 59 + "e")  # same beginning, other hash


def test_stale_scratch_is_dropped_only_without_clients(monkeypatch):
    cluster = {
        "iot": True,
        "iot__verify_20261120T020000Z": True,  # left by a killed drill
        "iot__verify_20261121T020000Z": True,  # someone is looking at it
        "iot__verify_notes": True,
        "iot__restore_20261120T020000Z": True,
    }
    clients = {"iot__verify_20261121T020000Z": 1}
    dropped, audited = [], []

    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(_pg, "connect", lambda *a, **k: Conn())
    monkeypatch.setattr(_pg, "rows", lambda conn, q, a=None: [(n,) for n in cluster])
    monkeypatch.setattr(_pg, "allows_connections", lambda conn, n: cluster[n])
    monkeypatch.setattr(_pg, "set_allow_connections", lambda conn, n, allow: cluster.__setitem__(n, allow))
    monkeypatch.setattr(_pg, "scalar", lambda conn, q, a=None: clients.get(a[0], 0))
    monkeypatch.setattr(_pg, "drop_database", lambda conn, n: dropped.append(cluster.pop(n) is not None and n))
    done = _drill.remove_stale_scratch(None, "iot", audit=lambda action, **f: audited.append((action, f["database"])))
    assert done == {"removed": ["iot__verify_20261120T020000Z"], "in_use": ["iot__verify_20261121T020000Z"]}
    assert dropped == ["iot__verify_20261120T020000Z"]
    assert audited == [("drop_database", "iot__verify_20261120T020000Z")]
    assert cluster["iot__verify_20261121T020000Z"] is True  # opened again, untouched
    assert set(cluster) == {"iot", "iot__verify_20261121T020000Z", "iot__verify_notes", "iot__restore_20261120T020000Z"}


def test_a_drill_without_room_refuses_before_creating_anything(monkeypatch):
    made = []
    monkeypatch.setattr(_restore, "data_directory_free", lambda conn: 100 << 20)
    monkeypatch.setattr(_pg, "create_database", lambda *a, **k: made.append(a))
    with pytest.raises(_restore.RestoreError, match="needs about 1.1 GiB free in the data directory, only 100.0 MiB"):
        _restore.check_room(object(), {"database_size_bytes": 1 << 30}, "a restore test of x", "Free space.")
    assert made == []


# The child: a drill whose PostgreSQL is a log of what it was asked, and whose restore runs a real
# process (as pg_restore) for a minute. The verify level restore's own cleanup is the real one.
CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _drill, _pg, _restore, _verify
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
    import logging
    state, log = sys.argv[2], open(sys.argv[3], "a")
    def say(line):
        log.write(line + "\\n"); log.flush()
    class Conn:
        def close(self): pass
    _pg.connect = lambda *a, **k: Conn()
    _pg.rows = lambda conn, q, a=None: []
    _pg.drop_database = lambda conn, name: say("drop " + name)
    _restore.check_room = lambda *a: say("room checked")
    manifest = {"database": "iot", "backup_id": "%(bid)s", "tables": {}}
    def restore_into(params, archive, target, manifest, **kw):
        say("create " + target)
        print("restoring", flush=True)
        _pg.run_tool(["sleep", "61.5"], params)
    _restore.restore_into = restore_into
    class Set: archive = "/nonexistent"
    def verify(params, backup_dir, database, backup_id, level, jobs, progress, signing=None):
        checks = _verify.Checks()
        _verify.verify_restore(params, Set(), manifest, checks)
        return {"ok": checks.ok, "failures": checks.failures()}
    _verify.verify = verify
    mf.list_local = lambda d, db: [{"backup_id": "%(bid)s", "manifest": manifest}]
    config = {"databases": ["iot", "other"], "backup_dir": state, "state_dir": state, "pg": _pg.ConnectionParams()}
    results = _drill.run_drill(config, logging.getLogger("drill"))
    say("results " + json.dumps(results))
    """
    % {"bid": BID}
)


def sleepers():
    """PIDs of the child's 'pg_restore' (sleep 61.5), wherever they are now."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", b"61.5"]:
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_sigterm_ends_a_drill_through_its_cleanup(tmp_path):
    log = tmp_path / "pg.log"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, COLLECTIONS, str(tmp_path), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "restoring"
        deadline = time.monotonic() + 10
        while not sleepers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleepers(), "the child's restore process did not start"
        # Past Popen's start-up: a signal while Popen waits for its exec (under systemd the whole
        # cgroup gets SIGTERM, so such a child ends anyway) is not what this test is about.
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        left = sleepers()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert child.returncode == 0, child.stderr.read()
    assert not left, "the restore's child process outlived the drill"
    lines = log.read_text().splitlines()
    scratch = "iot__verify_%s" % BID
    # Dropped before the restore (a leftover) and again after SIGTERM; the room was checked first.
    assert lines[:4] == ["drop " + scratch, "room checked", "create " + scratch, "drop " + scratch], lines
    results = json.loads(lines[-1][len("results ") :])
    assert [r["database"] for r in results] == ["iot"]  # stopped: no further database
    assert results[0]["success"] is False and "stopped by SIGTERM" in results[0]["error"]
    assert "its scratch database was removed" in results[0]["error"]
    record = json.loads((tmp_path / "last-drill.json").read_text())
    assert record["results"][0]["error"] == results[0]["error"]
