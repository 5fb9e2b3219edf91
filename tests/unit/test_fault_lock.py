"""The nightly backup waits (bounded) for the run lock a long history run holds instead of
skipping the night, and says who held it. The holder is a real process holding the real lock."""

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner, _runner_guard

HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner
    lock = _runner.take_run_lock(sys.argv[1], "history-archive", "tsdb-history-archive.service")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
    """
)

COLLECTIONS = os.path.join(os.path.dirname(__file__), "..", "..", "collections")


@pytest.fixture
def holder(tmp_path):
    procs = []

    def start(seconds):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path), str(seconds), COLLECTIONS], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_the_backup_waits_for_a_history_run_and_then_runs(tmp_path, holder, caplog):
    proc = holder(1.5)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO):
        lock = _runner.take_run_lock(str(tmp_path), "backup", wait_seconds=30, logger=logging.getLogger("t"))
    try:
        assert 1.0 < time.monotonic() - t0 < 20
        assert lock.holder_record()["pid"] == os.getpid()
    finally:
        lock.release()
    said = caplog.text
    assert "held by tsdb-history-archive.service (PID %d" % proc.pid in said and "waiting up to" in said
    assert "taken after waiting for tsdb-history-archive.service" in said


def test_a_wait_that_runs_out_names_the_holder_and_the_wait(tmp_path, holder):
    proc = holder(60)
    lock = _runner.run_lock(str(tmp_path), "backup")
    t0 = time.monotonic()
    held_by = _runner_guard.wait_for_lock(lock, 1.0, poll_seconds=0.2)
    assert 0.9 < time.monotonic() - t0 < 10
    assert "held by tsdb-history-archive.service (PID %d" % proc.pid in held_by
    assert "job history-archive" in held_by and held_by.endswith("waited 1 s for it")


def test_the_runner_waits_the_configured_time_then_exits_locked(tmp_path, holder, capsys):
    proc = holder(60)
    environ = {
        "TSDB_BACKUP_DATABASES": "iot",
        "TSDB_BACKUP_STATE_DIR": str(tmp_path),
        "TSDB_BACKUP_UPLOAD": "false",
        "TSDB_BACKUP_LOCK_WAIT_MINUTES": "0.02",
    }
    t0 = time.monotonic()
    assert _runner.main(["run"], environ=environ) == _runner.EXIT_LOCKED
    assert time.monotonic() - t0 >= 1.0
    logged = capsys.readouterr().err
    assert "waiting up to 1 s" in logged and "PID %d" % proc.pid in logged and "waited 1 s for it" in logged


def test_the_lock_wait_setting_is_read_and_checked():
    base = {"TSDB_BACKUP_DATABASES": "iot"}
    assert _runner.load_config(base)["lock_wait_minutes"] == 30
    assert _runner.load_config(dict(base, TSDB_BACKUP_LOCK_WAIT_MINUTES="0"))["lock_wait_minutes"] == 0
    with pytest.raises(_runner.ConfigError, match="0 minutes or more"):
        _runner.load_config(dict(base, TSDB_BACKUP_LOCK_WAIT_MINUTES="-1"))
    with pytest.raises(_runner.ConfigError, match="must be a number"):
        _runner.load_config(dict(base, TSDB_BACKUP_LOCK_WAIT_MINUTES="soon"))
