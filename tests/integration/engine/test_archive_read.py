"""The archive level's full read done while pg_dump writes (_verify.ArchiveRead), with the real
pg_restore 17 of the rig's TimescaleDB host reading a real archive as it grows: an intact
archive is read whole, a truncated one is refused with pg_restore's reason, and a write that
fails leaves no pg_restore running. This checkout's engine is copied into the container."""

import json

import pytest
import rig

ENGINE = "/var/lib/it-archiveread/engine"  # not /tmp: a tmpfs, which docker cp does not see
WORK = "/var/backups/it/archiveread"
SCRIPT = r"""
import hashlib, json, os, sys, threading, time
sys.path.insert(0, %(engine)r)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _follow, _pg, _verify

src, case = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
path = os.path.join(os.path.dirname(src), case + ".partial")
growing = _follow.GrowingFile(path)
pg_restore = _pg.find_tool("pg_restore", 17)[0]
reader = _verify.ArchiveRead(growing, pg_restore, _pg.ConnectionParams()).start()
stop = {"intact": len(data), "truncated": len(data) * 6 // 10, "failed": len(data) // 2}[case]
with open(path, "wb") as f:
    for i in range(0, stop, 256 * 1024):
        f.write(data[i : min(stop, i + 256 * 1024)])
        f.flush()
        growing.grew(min(stop, i + 256 * 1024))
        time.sleep(0.001)
growing.close(case != "failed")
reader.join(120)
print(json.dumps({
    "result": reader.result,
    "error": repr(reader.error),
    "whole": reader.read_whole(hashlib.sha256(data).hexdigest(), len(data)),
}))
"""


@pytest.fixture(scope="module")
def archive(container, pg, engine_db):
    rig.sh(container, "rm -rf %s %s && mkdir -p -m 0700 /var/backups/it %s" % (WORK, ENGINE, WORK))
    res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=WORK))
    assert res.get("failed") is not True, res
    rig.copy_engine(container, ENGINE)
    rig.write_file(container, ENGINE + "/read.py", SCRIPT % {"engine": ENGINE})
    yield "%s/%s/%s.dump" % (WORK, engine_db, res["backup_id"])
    rig.sh(container, "rm -rf %s /var/lib/it-archiveread" % WORK, check=False)


def read(container, archive, case):
    python = "/opt/tsdb-backup/venv/bin/python"
    python = python if rig.sh(container, "test -x %s && echo y || true" % python).strip() else "/usr/bin/python3"
    return json.loads(rig.sh(container, "%s %s/read.py %s %s" % (python, ENGINE, archive, case)).strip())


def test_an_intact_archive_is_read_whole_while_it_is_written(container, archive):
    out = read(container, archive, "intact")
    assert out["result"] is True and out["error"] == "None" and out["whole"] is True, out


def test_a_truncated_archive_is_refused_with_pg_restores_reason(container, archive):
    out = read(container, archive, "truncated")
    assert out["result"] is None and out["whole"] is False, out
    assert "ToolError" in out["error"] and "pg_restore exited with status 1" in out["error"], out


def test_a_failed_write_stops_the_read_and_its_pg_restore(container, archive):
    out = read(container, archive, "failed")
    assert out["result"] is None and "Abandoned" in out["error"] and out["whole"] is False, out
    assert rig.sh(container, "pgrep -x pg_restore || true").strip() == ""
