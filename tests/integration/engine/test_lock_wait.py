"""The backup (agent_run job=backup, what backup.yml runs) finds the agent's run lock held by a
history run on the rig's host: it waits for it (lock_wait_minutes) and then backs up, or, when
the wait runs out, fails naming the holder. The holder is a real process in the container holding
the real lock, as the history timer's run does. docs/RELIABILITY.md lists these rows."""

import subprocess
import time

import pytest
import rig

STATE = "/var/lib/it-lockwait"
HOLD = (
    "import fcntl, json, os, sys, time; "
    "fd = os.open(%r + '/runner.lock', os.O_CREAT | os.O_RDWR, 0o600); fcntl.flock(fd, fcntl.LOCK_EX); "
    "os.write(fd, (json.dumps({'pid': os.getpid(), 'unit': 'tsdb-history-archive.service', "
    "'job': 'history-archive', 'started_at': '2026-11-27T02:00:03Z'}) + chr(10)).encode()); "
    "print('held', os.getpid(), flush=True); time.sleep(float(sys.argv[1]))" % STATE
)


@pytest.fixture
def holder(container):
    rig.sh(container, "rm -rf %s && mkdir -p -m 0700 %s" % (STATE, STATE))
    procs = []

    def start(seconds):
        proc = subprocess.Popen(
            [rig.DOCKER, "exec", container, "python3", "-c", HOLD, str(seconds)], stdout=subprocess.PIPE, text=True
        )
        said, pid = proc.stdout.readline().split()
        assert said == "held"
        procs.append((proc, int(pid)))
        return proc

    yield start
    for proc, pid in procs:
        rig.sh(container, "kill %d 2>/dev/null || true" % pid, check=False)  # the holder in the container, by PID
        proc.kill()
        proc.wait()
    rig.sh(container, "rm -rf %s" % STATE, check=False)


def backup(pg, engine_db, backup_dir, wait):
    args = dict(
        pg,
        job="backup",
        databases=[engine_db],
        backup_dir=backup_dir,
        upload=False,
        verify_level="checksum",
        state_dir=STATE,
        agent_settings="/nonexistent/agent.env",
        lock_wait_minutes=wait,
    )
    return rig.ansible_module("agent_run", args)


def test_a_backup_waits_for_the_history_run_and_then_backs_up(pg, engine_db, backup_dir, holder):
    holder(8)
    t0 = time.monotonic()
    res = backup(pg, engine_db, backup_dir, wait=1)
    assert res.get("failed") is not True, res
    assert time.monotonic() - t0 > 5 and res["results"][0]["success"] is True and res["results"][0]["backup_id"]


def test_a_wait_that_runs_out_fails_naming_the_holder(container, pg, engine_db, backup_dir, holder):
    holder(600)
    res = backup(pg, engine_db, backup_dir, wait=0)
    assert res["failed"] is True
    assert "held by tsdb-history-archive.service (PID" in res["msg"] and "job history-archive" in res["msg"], res
    assert rig.sh(container, "find %s -name '*.manifest.json' | wc -l" % backup_dir).strip() == "0"
