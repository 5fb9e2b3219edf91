"""A nightly run stopped by systemd (SIGTERM: `systemctl stop`, a unit's timeout) ends through
its cleanup: the step that was writing removes what it wrote and ends its child tool, the run
lock is released, the night is reported as failed (metrics), and the exit status is 128 + 15.
Tested on a real child process that gets a real SIGTERM while its "pg_dump" (a real child of
its own) runs."""

import os
import signal
import subprocess
import sys
import textwrap
import time

COLLECTIONS = os.path.join(os.path.dirname(__file__), "..", "..", "collections")

CHILD = textwrap.dedent(
    """
    import os, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner
    state = sys.argv[2]
    partial = os.path.join(state, "iot.dump.partial")

    def run_backup(config, logger):
        # What _dump does on any BaseException: its child ends, its partial file goes.
        with open(partial, "w") as f:
            f.write("half a dump")
        tool = subprocess.Popen(["sleep", "61.7"])
        try:
            print("dumping", flush=True)
            tool.wait()
        except BaseException:
            tool.kill()
            tool.wait()
            os.unlink(partial)
            raise
        return []

    _runner.run_backup = run_backup
    environ = {
        "TSDB_BACKUP_DATABASES": "iot",
        "TSDB_BACKUP_STATE_DIR": state,
        "TSDB_BACKUP_UPLOAD": "false",
        "TSDB_BACKUP_METRICS_DIR": state,
        "TSDB_BACKUP_HOST_LABEL": "db1",
    }
    sys.exit(_runner.main(["run"], environ=environ))
    """
)


def sleepers():
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", b"61.7"]:
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_sigterm_ends_the_nightly_backup_through_its_cleanup(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, COLLECTIONS, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "dumping"
        assert (tmp_path / "iot.dump.partial").exists()
        child.send_signal(signal.SIGTERM)
        status = child.wait(timeout=30)
        err = child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert status == 128 + signal.SIGTERM, err
    assert "run stopped by SIGTERM" in err and "nothing else changed" in err
    assert not (tmp_path / "iot.dump.partial").exists()  # the step's cleanup ran
    deadline = time.monotonic() + 5
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers() == []  # its tool ended with it
    metrics = (tmp_path / "tsdb_backup_backup.prom").read_text()
    assert 'tsdb_backup_last_run_success{database="iot",host="db1",run_type="backup"} 0.0' in metrics
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner

    lock = _runner.run_lock(str(tmp_path), "backup")
    assert lock.try_acquire()  # released: the next night is not locked out
    lock.release()
