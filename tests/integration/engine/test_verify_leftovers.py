"""A set the nightly runner took and a killed run left unverified is verified by the next run
(_runner_guard.verify_leftovers, real pg_restore on the rig's host), so the catch-up can send it;
a set of the dump module is left as the operator left it; a verification that cannot run is
logged and does not stop the run. This checkout's engine is copied into the container."""

import json

import pytest
import rig

ENGINE = "/var/lib/it-leftovers/engine"
WORK = "/var/backups/it/leftovers"
SCRIPT = r"""
import json, logging, sys
sys.path.insert(0, %(engine)r)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _dump, _pg, _runner_guard, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

work, db, port, password, action = sys.argv[1:6]
params = _pg.ConnectionParams(login_host="127.0.0.1", port=int(port), login_password=password)
if action == "dump":
    extra = {"taken_by": _runner_guard.TAKEN_BY} if sys.argv[6] == "runner" else None
    print(json.dumps(_dump.dump(params, db, work, host_label="it-host", extra_manifest=extra)["manifest"]["backup_id"]))
    sys.exit(0)
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
log = logging.getLogger("leftovers")
log.addHandler(Keep())
log.setLevel(logging.INFO)
if action == "unreachable":
    params = _pg.ConnectionParams(login_host="127.0.0.1", port=1, login_password=password)
# At the restore level verify connects (a scratch database): a server it cannot reach raises.
config = {"backup_dir": work, "pg": params, "verify_level": "restore" if action == "unreachable" else "archive"}
done = _runner_guard.verify_leftovers(config, db, log)
recorded = {e["backup_id"]: _verify.read_record(mf.BackupSet.from_manifest(work, e["manifest"]))
            for e in mf.list_local(work, db)}
print(json.dumps({"done": done, "recorded": recorded, "log": records}))
"""


@pytest.fixture
def leftovers(container, env, engine_db):
    rig.sh(container, "rm -rf %s %s && mkdir -p -m 0700 /var/backups/it %s" % (WORK, ENGINE, WORK))
    rig.copy_engine(container, ENGINE)
    rig.write_file(container, ENGINE + "/leftovers.py", SCRIPT % {"engine": ENGINE})

    def run(action, *extra):
        argv = [WORK, engine_db, env["PGPORT"], env["PGPASSWORD"], action] + list(extra)
        out = rig.sh(container, "/usr/bin/python3 %s/leftovers.py %s" % (ENGINE, " ".join(argv)))
        return json.loads(out.strip().splitlines()[-1])

    yield run
    rig.sh(container, "rm -rf %s /var/lib/it-leftovers" % WORK, check=False)


def test_the_runners_unverified_set_is_verified_and_the_dump_modules_is_not(leftovers):
    runner_set = leftovers("dump", "runner")
    module_set = leftovers("dump", "module")
    out = leftovers("verify")
    assert out["done"] == [runner_set], out
    assert out["recorded"][runner_set]["ok"] is True and out["recorded"][runner_set]["level"] == "archive"
    assert out["recorded"][module_set] is None, "a set of the dump module was verified behind the operator's back"
    assert any("left unverified by an interrupted run: archive level ok" in line for line in out["log"]), out
    assert leftovers("verify")["done"] == [], "a verified set is verified again"


def test_a_verification_that_cannot_run_is_logged_and_the_run_goes_on(leftovers):
    runner_set = leftovers("dump", "runner")
    out = leftovers("unreachable")
    assert out["done"] == [] and out["recorded"][runner_set] is None, out
    assert any(runner_set in line and "interrupted run" in line for line in out["log"]), out
